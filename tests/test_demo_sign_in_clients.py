"""Third-party MCP clients sign in to the demo through the browser, as a newcomer's would.

The real demo server (``demo``, the dev issuer on loopback) and, as real
processes started from npm packages pinned in tests/mcp_remote and
tests/claude_code (``make services`` installs them):

* mcp-remote, the stdio bridge Claude Desktop uses: started with no token, it
  registers, prints the authorization URL it would open in a browser; the test
  picks a user on the sign-in page, delivers the redirect to mcp-remote's
  callback server, then speaks MCP over its stdin/stdout.
* Claude Code's CLI: ``claude mcp add --transport http graphgate URL`` with no
  header, ``claude mcp list`` (needs authentication), ``claude mcp login``
  in a pseudo-terminal with ``--no-browser`` (the test pastes the redirect
  URL back, as a user on SSH would), ``claude mcp list`` (connected). Claude
  Code cannot call a tool without an Anthropic login; "connected" is where it
  has fetched graphgate's tools with the token it got.

Without node/npm (or the packages) the tests skip locally and fail in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.services._common import service_unavailable
from tests.services.dev_sign_in import pick_user
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.oidc_provider import (
    CLAUDE_CODE_PROJECT,
    MCP_REMOTE_PROJECT,
    NodeUnavailable,
    npm_install,
)

pytestmark = [pytest.mark.falkordb]

STEP_TIMEOUT = 60.0
AUTHORIZE_URL = re.compile(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)")
# OSC 8 hyperlinks and CSI sequences Claude Code draws its terminal output with.
TERMINAL_CODES = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Demo:
    url: str


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def demo(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Demo]:
    suffix = uuid.uuid4().hex[:6]
    options = http_settings(
        demo=True,
        tenants={"acme": f"clients_acme_{suffix}", "globex": f"clients_globex_{suffix}"},
        data_dir=tmp_path_factory.mktemp("gg-demo-clients"),
    )
    parts = make_parts(falkordb_service.backend(), **options)
    async with serve_http(parts) as url:
        yield Demo(url)


def installed(project: Path) -> Path:
    node = shutil.which("node")
    if node is None:
        service_unavailable("node is not on PATH")
    try:
        return npm_install(project)
    except NodeUnavailable as exc:
        service_unavailable(str(exc))
        raise  # unreachable: service_unavailable skips or fails


def isolated_env(home: Path) -> dict[str, str]:
    """A fresh HOME (client configs and tokens), no browser, nothing of graphgate's."""
    home.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPHGATE_", "MCP_"))}
    return {
        **kept,
        "HOME": str(home),
        "BROWSER": "/bin/true",  # what "opens" the authorization URL: nothing
        "MCP_REMOTE_CONFIG_DIR": str(home / "mcp-auth"),
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


@contextlib.asynccontextmanager
async def mcp_remote(url: str, home: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    modules = installed(MCP_REMOTE_PROJECT)
    process = await asyncio.create_subprocess_exec(
        "node",
        str(modules / "mcp-remote" / "dist" / "proxy.js"),
        f"{url}/mcp",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=isolated_env(home),
        cwd=home,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def rpc(process: asyncio.subprocess.Process, message: dict[str, Any]) -> dict[str, Any]:
    """Send one JSON-RPC message over stdio; its answer (notifications have none)."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(message).encode() + b"\n")
    await process.stdin.drain()
    if "id" not in message:
        return {}
    async with asyncio.timeout(STEP_TIMEOUT):
        while True:
            line = await process.stdout.readline()
            if not line:
                raise AssertionError("mcp-remote closed its stdout")
            answer: dict[str, Any] = json.loads(line)
            if answer.get("id") == message["id"]:
                return answer


async def test_mcp_remote_signs_in_through_the_browser(demo: Demo, tmp_path: Path) -> None:
    async with mcp_remote(demo.url, tmp_path / "home") as process:
        assert process.stderr is not None
        log: list[str] = []
        text = await read_until(
            lambda: process.stderr.read(4096),  # type: ignore[union-attr]
            log,
            lambda seen: AUTHORIZE_URL.search(seen) is not None,
            "printing the authorization URL",
        )
        authorization_url = AUTHORIZE_URL.search(text).group(1)  # type: ignore[union-attr]
        back = await pick_user(authorization_url, "carol")
        assert back.startswith("http://localhost:")  # mcp-remote's own callback server
        async with httpx.AsyncClient(timeout=30) as http:
            delivered = await http.get(back)
        assert delivered.status_code == 200, delivered.text

        initialized = await rpc(
            process,
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "e2e-mcp-remote", "version": "1"},
                },
            },
        )
        await rpc(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        called = await rpc(
            process,
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "list_databases", "arguments": {}},
            },
        )

    assert initialized["result"]["serverInfo"]["name"] == "graphgate"
    result = called["result"]
    assert not result.get("isError"), result
    assert json.loads(result["content"][0]["text"]) == [
        {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"},
        {"name": "globex", "access": "read", "current": False, "dialect": "FalkorDB"},
    ]
    stored = list((tmp_path / "home" / "mcp-auth").rglob("*_tokens.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["refresh_token"]


# -- Claude Code ---------------------------------------------------------------------------


def claude_command() -> list[str]:
    """Claude Code's CLI; its JS wrapper finds the platform binary npm installed.

    The install runs with ``--ignore-scripts``, so the postinstall that would
    copy the native binary over ``bin/claude.exe`` did not run; the wrapper is
    the package's documented fallback.
    """
    modules = installed(CLAUDE_CODE_PROJECT)
    return ["node", str(modules / "@anthropic-ai" / "claude-code" / "cli-wrapper.cjs")]


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
