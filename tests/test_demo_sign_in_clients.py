"""Third-party MCP clients sign in to the demo through the browser, as a newcomer's would.

The real demo server (``demo``, the dev issuer on loopback) and, as real
processes started from npm packages pinned in tests/mcp_remote,
tests/claude_code and tests/inspector (``make services`` installs them):

* mcp-remote, the stdio bridge Claude Desktop uses (tests/services/mcp_remote.py):
  started with no token, it registers and opens the authorization URL in "the
  browser"; the test picks a user on the sign-in page, delivers the redirect
  to mcp-remote's callback server, then speaks MCP over its stdin/stdout.
* Claude Code's CLI: ``claude mcp add --transport http graphgate URL`` with no
  header, ``claude mcp list`` (needs authentication), ``claude mcp login``
  in a pseudo-terminal with ``--no-browser`` (the test pastes the redirect
  URL back, as a user on SSH would), ``claude mcp list`` (connected). Claude
  Code cannot call a tool without an Anthropic login; "connected" is where it
  has fetched graphgate's tools with the token it got.
* the MCP Inspector's CLI (tests/services/inspector.py), as docs/clients.md
  shows it: with a token from ``graphgate token`` pasted as a header, and with
  no header, signing in through the browser itself; it lists the tools and
  calls ``list_databases`` and ``run_query`` on the demo data.

Without node/npm (or the packages) the tests skip locally and fail in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from graphgate.auth.dev import record_dev_issuer
from tests.services.dev_sign_in import pick_user
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.inspector import Inspector, bearer
from tests.services.mcp_remote import running_mcp_remote
from tests.services.node_client import deliver, node_command_or_unavailable
from tests.services.oidc_provider import CLAUDE_CODE_PROJECT

pytestmark = [pytest.mark.falkordb]

STEP_TIMEOUT = 60.0
AUTHORIZE_URL = re.compile(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)")
# OSC 8 hyperlinks and CSI sequences Claude Code draws its terminal output with.
TERMINAL_CODES = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-9;?]*[A-Za-z]")
GRAPHGATE = str(Path(sys.executable).with_name("graphgate"))


@dataclass
class Demo:
    url: str
    data_dir: Path


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def demo(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Demo]:
    suffix = uuid.uuid4().hex[:6]
    data_dir = tmp_path_factory.mktemp("gg-demo-clients")
    options = http_settings(
        demo=True,
        tenants={"acme": f"clients_acme_{suffix}", "globex": f"clients_globex_{suffix}"},
        data_dir=data_dir,
    )
    parts = make_parts(falkordb_service.backend(), **options)
    async with serve_http(parts) as url:
        record_dev_issuer(parts.settings)  # what `graphgate serve` does, for `graphgate token`
        yield Demo(url, data_dir)


def isolated_env(home: Path) -> dict[str, str]:
    """A fresh HOME (client configs and tokens), no browser, nothing of graphgate's."""
    home.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPHGATE_", "MCP_"))}
    return {
        **kept,
        "HOME": str(home),
        "BROWSER": "/bin/true",  # what "opens" the authorization URL: nothing
        "NO_COLOR": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


async def read_until(
    read: Callable[[], Any], seen: list[str], wanted: Callable[[str], bool], what: str
) -> str:
    """Accumulate output from ``read`` (one chunk per call) until ``wanted`` holds."""
    async with asyncio.timeout(STEP_TIMEOUT):
        while not wanted("".join(seen)):
            chunk = await read()
            if not chunk:
                raise AssertionError(f"the client ended before {what}: {''.join(seen)[-2000:]}")
            seen.append(chunk if isinstance(chunk, str) else chunk.decode(errors="replace"))
    return "".join(seen)


# -- mcp-remote ----------------------------------------------------------------------------


async def test_mcp_remote_signs_in_through_the_browser(demo: Demo, tmp_path: Path) -> None:
    async with running_mcp_remote(f"{demo.url}/mcp", tmp_path) as bridge:
        authorization_url = await bridge.authorization_url()
        back = await pick_user(authorization_url, "carol")
        assert back.startswith(bridge.redirect_uri)  # mcp-remote's own callback server
        delivered = await bridge.deliver(back)
        assert delivered.status_code == 200, delivered.text

        initialized = await bridge.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "e2e-mcp-remote", "version": "1"},
            },
        )
        await bridge.notify("notifications/initialized")
        called = await bridge.request("tools/call", {"name": "list_databases", "arguments": {}})

    assert AUTHORIZE_URL.fullmatch(authorization_url)
    assert initialized["result"]["serverInfo"]["name"] == "graphgate"
    result = called["result"]
    assert not result.get("isError"), result
    assert json.loads(result["content"][0]["text"]) == [
        {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"},
        {"name": "globex", "access": "read", "current": False, "dialect": "FalkorDB"},
    ]
    stored = list((tmp_path / "mcp-auth").rglob("*_tokens.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["refresh_token"]


# -- Claude Code ---------------------------------------------------------------------------


def claude_command() -> list[str]:
    """Claude Code's CLI; its JS wrapper finds the platform binary npm installed.

    The install runs with ``--ignore-scripts``, so the postinstall that would
    copy the native binary over ``bin/claude.exe`` did not run; the wrapper is
    the package's documented fallback.
    """
    return node_command_or_unavailable(
        CLAUDE_CODE_PROJECT, Path("@anthropic-ai") / "claude-code" / "cli-wrapper.cjs"
    )


async def claude(command: list[str], env: dict[str, str], cwd: Path, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), STEP_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the native binary the wrapper started
        await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return text


async def claude_login_in_a_terminal(
    command: list[str], env: dict[str, str], cwd: Path, name: str, username: str
) -> str:
    """``claude mcp login NAME --no-browser`` on a pseudo-terminal, the user pasting back."""
    import pty

    leader, follower = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        *command,
        "mcp",
        "login",
        name,
        "--no-browser",
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        cwd=cwd,
        # The node wrapper runs the native binary as a child: stop them as one group.
        start_new_session=True,
    )
    os.close(follower)
    loop = asyncio.get_running_loop()

    async def read() -> str:
        chunk = await loop.run_in_executor(None, _read_terminal, leader)
        # A chunk of drawing codes only is still output, not the end.
        return TERMINAL_CODES.sub("", chunk) or (" " if chunk else "")

    seen: list[str] = []
    try:
        text = await read_until(
            read, seen, lambda s: "paste the redirect URL" in s, "asking for the redirect URL"
        )
        authorization_url = AUTHORIZE_URL.search(text).group(1)  # type: ignore[union-attr]
        back = await pick_user(authorization_url, username)
        os.write(leader, back.encode() + b"\r")
        return await read_until(read, seen, lambda s: "Authenticated" in s, "signing in")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        os.close(leader)


def _read_terminal(fd: int) -> str:
    import select

    ready, _, _ = select.select([fd], [], [], 1.0)
    if not ready:
        return " "  # nothing yet; keep waiting (an empty string would mean the end)
    try:
        return os.read(fd, 4096).decode(errors="replace")
    except OSError:
        return ""  # the terminal closed: the process ended


async def test_claude_code_adds_the_demo_without_a_header_and_signs_in(
    demo: Demo, tmp_path: Path
) -> None:
    command = claude_command()
    env = isolated_env(tmp_path / "home")
    project = tmp_path / "project"
    project.mkdir()
    url = f"{demo.url}/mcp"

    added = await claude(
        command, env, project, "mcp", "add", "--transport", "http", "graphgate", url
    )
    before = await claude(command, env, project, "mcp", "list")
    login = await claude_login_in_a_terminal(command, env, project, "graphgate", "alice")
    after = await claude(command, env, project, "mcp", "list")

    assert "Added HTTP MCP server graphgate" in added
    assert f"graphgate: {url} (HTTP) - ! Needs authentication" in before
    assert 'Authenticated with "graphgate"' in login
    assert f"graphgate: {url} (HTTP) - ✔ Connected" in after


# -- the MCP Inspector's CLI -----------------------------------------------------------------

ROCKET_SKATES_TEAM = (
    "MATCH (p:Person)-[w:WORKS_ON]->(:Project {name: 'Rocket Skates'}) "
    "RETURN p.name, w.role ORDER BY p.name"
)
CALL_LIST_DATABASES = ("--method", "tools/call", "--tool-name", "list_databases")


def graphgate_token(data_dir: Path, *args: str) -> str:
    """``graphgate token ... --data-dir DIR``, as docs/clients.md has the user run it."""
    minted = subprocess.run(
        [GRAPHGATE, "token", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("GRAPHGATE_")},
        timeout=STEP_TIMEOUT,
        check=True,
    )
    return minted.stdout.strip()


def run_query_arguments(query: str, *more: str) -> tuple[str, ...]:
    return (
        "--method",
        "tools/call",
        "--tool-name",
        "run_query",
        "--tool-arg",
        f"query={query}",
        *more,
    )


async def test_inspector_cli_lists_and_calls_tools_with_a_pasted_token(
    demo: Demo, tmp_path: Path
) -> None:
    token = graphgate_token(demo.data_dir, "--sub", "alice", "--tenants", "acme")
    inspector = Inspector(tmp_path)
    url = f"{demo.url}/mcp"

    listed = await inspector.run(url, "--method", "tools/list", *bearer(token))
    databases = await inspector.run(url, *CALL_LIST_DATABASES, *bearer(token))
    team = await inspector.run(url, *run_query_arguments(ROCKET_SKATES_TEAM), *bearer(token))
    elsewhere = await inspector.run(
        url, *run_query_arguments("MATCH (n) RETURN count(n)", "database=globex"), *bearer(token)
    )
    forged = await inspector.run(
        url, "--method", "tools/list", "--stored-auth-only", *bearer(token[:-6] + "AAAAAA")
    )

    assert [tool["name"] for tool in listed.result()["tools"]] == [
        "list_databases",
        "use_database",
        "run_query",
        "get_schema",
        "query_databases",
        "explain_query",
    ]
    assert databases.result()["isError"] is False
    assert databases.tool_result() == [
        {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]
    rows = team.tool_result()
    assert team.result()["isError"] is False
    assert rows["database"] == "acme"
    assert rows["rows"] == [["Alice Johnson", "lead"], ["Bob Smith", "developer"]]
    # A tenant alice lacks: a tool error the Inspector shows, exit code 5.
    assert elsewhere.returncode == 5
    assert json.loads(elsewhere.stdout)["isError"] is True
    assert "'globex' is not available to you" in json.loads(elsewhere.stdout)["content"][0]["text"]
    # A token whose signature does not verify gets graphgate's 401; told not to start a
    # sign-in of its own, the Inspector stops there (exit 3) and lists nothing.
    assert forged.returncode == 3 and forged.stdout == ""
    assert forged.error()["code"] == "auth_required"
    assert not inspector.browser.log.exists()


async def test_inspector_cli_signs_in_through_the_browser(demo: Demo, tmp_path: Path) -> None:
    """No header: the Inspector registers, bob picks himself on the page, then calls tools.

    Its second invocation uses the sign-in it stored: no browser again.
    """
    inspector = Inspector(tmp_path)
    url = f"{demo.url}/mcp"
    async with inspector.running(url, *CALL_LIST_DATABASES) as first:
        authorization_url = await first.authorization_url()
        back = await pick_user(authorization_url, "bob")
        assert back.startswith(inspector.redirect_uri)
        delivered = await deliver(back)
        assert delivered.status_code == 200, delivered.text
        databases = await first.answer()
    orders = await inspector.run(
        url, *run_query_arguments("MATCH (o:Order) RETURN o.number ORDER BY o.number")
    )

    assert AUTHORIZE_URL.fullmatch(authorization_url)
    assert databases.tool_result() == [
        {"name": "globex", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]
    assert orders.tool_result()["rows"] == [[1001], [1002], [1003]]
    assert inspector.browser.log.read_text().split() == [authorization_url]  # one sign-in
