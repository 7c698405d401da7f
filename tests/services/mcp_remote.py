"""mcp-remote, Claude Desktop's bridge to remote MCP servers, run as a real subprocess.

Claude Desktop starts ``npx mcp-remote <url>`` and speaks MCP to it over
stdio; mcp-remote forwards to the remote server over streamable HTTP and does
the OAuth flow itself: discovery, dynamic registration (redirect URI
``http://localhost:<port>/oauth/callback``, ``client_uri`` its GitHub page),
a browser opened on the authorization URL, a loopback server on that port
for the callback, the token request. `running_mcp_remote` starts the pinned
version (tests/mcp_remote/package.json) the same way, with its state in a
temporary ``MCP_REMOTE_CONFIG_DIR`` and ``HOME``.

The browser: mcp-remote opens the authorization URL with the ``open``
package, which on Linux runs ``xdg-open``; with no desktop session
(``DISPLAY`` and friends are left out of the environment) ``xdg-open`` runs
the command in ``BROWSER``. That command is a small script here that writes
the URL to a file, so the test learns the URL exactly as a browser would
receive it and no real browser starts. The test then plays the browser
(tests/services/oidc_provider.py `Browser`, or the Keycloak suite's own) and
delivers the final redirect to mcp-remote's callback server with a GET,
which is what the user's browser does. On other platforms ``open`` ignores
``BROWSER``; these tests run on Linux.

Then the stdio side: JSON-RPC lines written to mcp-remote's stdin, answers
read from its stdout, as Claude Desktop does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services._common import free_port
from tests.services.oidc_provider import MCP_REMOTE_PROJECT, NodeUnavailable, npm_install

PROXY_SCRIPT = Path("node_modules") / "mcp-remote" / "dist" / "proxy.js"
AUTHORIZE_TIMEOUT = 60.0  # mcp-remote start, discovery and registration
ANSWER_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
_RECORDER = """#!/bin/sh
# The "browser" mcp-remote opens: records the URL instead of showing it.
printf '%s\\n' "$1" >> "$GRAPHGATE_TEST_BROWSER_LOG"
"""


def install() -> Path:
    """The pinned mcp-remote's entry point; `NodeUnavailable` without node/npm."""
    npm_install(MCP_REMOTE_PROJECT)
    return MCP_REMOTE_PROJECT / PROXY_SCRIPT


@dataclass
class McpRemote:
    """One running mcp-remote: its browser, its callback and its stdio."""

    process: asyncio.subprocess.Process
    callback_port: int
    browser_log: Path
    stderr_log: Path
    _next_id: int = 1
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def redirect_uri(self) -> str:
        """What mcp-remote registers and listens on (its default host is ``localhost``)."""
        return f"http://localhost:{self.callback_port}/oauth/callback"

    def stderr(self) -> str:
        return self.stderr_log.read_text(errors="replace")

    def _failed(self, what: str) -> AssertionError:
        exit_state = (
            "running" if self.process.returncode is None else f"exit {self.process.returncode}"
        )
        return AssertionError(
            f"mcp-remote {what} ({exit_state}); its log:\n{self.stderr()[-3000:]}"
        )

    async def authorization_url(self, timeout: float = AUTHORIZE_TIMEOUT) -> str:
        """The URL mcp-remote opened "the browser" on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.browser_log.exists():
                lines = self.browser_log.read_text().split()
                if lines:
                    return lines[-1]
            if self.process.returncode is not None:
                raise self._failed("exited before opening a browser")
            await asyncio.sleep(0.1)
        raise self._failed(f"opened no browser in {timeout:.0f} s")

    async def deliver(self, callback_url: str) -> httpx.Response:
        """The browser following the authorization server's redirect to mcp-remote."""
        async with httpx.AsyncClient(timeout=ANSWER_TIMEOUT) as http:
            return await http.get(callback_url)

    async def _write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        await self._write({"jsonrpc": "2.0", "method": method, "params": params or {}})

    async def request(
        self, method: str, params: dict[str, Any], timeout: float = ANSWER_TIMEOUT
    ) -> dict[str, Any]:
        """One JSON-RPC request over stdio; its response (``result`` or ``error``)."""
        request_id = self._next_id
        self._next_id += 1
        await self._write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                line = await asyncio.wait_for(
                    self.process.stdout.readline(), max(deadline - loop.time(), 0.01)
                )
            except TimeoutError:
                raise self._failed(f"did not answer {method} in {timeout:.0f} s") from None
            if not line:
                raise self._failed(f"closed stdout before answering {method}")
            message: dict[str, Any] = json.loads(line)
            self.seen.append(message)
            if message.get("id") == request_id and "method" not in message:
                return message


@contextlib.asynccontextmanager
async def running_mcp_remote(
    server_url: str, workdir: Path, *arguments: str
) -> AsyncIterator[McpRemote]:
    """``node proxy.js <server_url> <port> --auth-timeout 120 ...``; stopped on exit.

    ``workdir`` holds its HOME, its ``MCP_REMOTE_CONFIG_DIR`` (registration,
    tokens), the browser script and log, and its stderr log.
    """
    entry = install()
    node = shutil.which("node")
    if node is None:
        raise NodeUnavailable("node is not on PATH")
    browser = workdir / "browser.sh"
    browser.write_text(_RECORDER)
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    browser_log = workdir / "browser.log"
    stderr_log = workdir / "mcp-remote.log"
    config_dir = workdir / "mcp-auth"
    # No desktop session, so xdg-open falls back to BROWSER (see module doc).
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "MCP_REMOTE_CONFIG_DIR": str(config_dir),
        "BROWSER": str(browser),
        "GRAPHGATE_TEST_BROWSER_LOG": str(browser_log),
    }
    port = free_port()
    with stderr_log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            node,
            str(entry),
            server_url,
            str(port),
            "--auth-timeout",
            "120",
            *arguments,
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            yield McpRemote(process, port, browser_log, stderr_log)
        finally:
            await _stop(process)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Close stdin (mcp-remote then shuts down, as when Claude Desktop quits), then insist."""
    if process.returncode is None and process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        return
    except TimeoutError:
        pass
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
