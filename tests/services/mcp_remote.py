"""mcp-remote, Claude Desktop's bridge to remote MCP servers, run as a real subprocess.

Claude Desktop starts ``npx mcp-remote <url>`` and speaks MCP to it over
stdio; mcp-remote forwards to the remote server over streamable HTTP and does
the OAuth flow itself: discovery, dynamic registration (redirect URI
``http://localhost:<port>/oauth/callback``, ``client_uri`` its GitHub page),
a browser opened on the authorization URL, a loopback server on that port
for the callback, the token request. `running_mcp_remote` starts the pinned
version (tests/mcp_remote/package.json) the same way, with its state in a
temporary ``MCP_REMOTE_CONFIG_DIR`` and ``HOME``.

The browser is `RecordingBrowser` (tests/services/node_client.py): the test
learns the URL mcp-remote opened, plays the browser (tests/services/dev_sign_in.py
on the demo, the Keycloak suite's `Browser`) and delivers the final redirect to
mcp-remote's callback server.

Then the stdio side: JSON-RPC lines written to mcp-remote's stdin, answers
read from its stdout, as Claude Desktop does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services._common import free_port
from tests.services.node_client import (
    RecordingBrowser,
    client_env,
    deliver,
    node_command,
    node_command_or_unavailable,
    stop,
)
from tests.services.oidc_provider import MCP_REMOTE_PROJECT

PROXY_SCRIPT = Path("mcp-remote") / "dist" / "proxy.js"
ANSWER_TIMEOUT = 60.0


def install() -> list[str]:
    """The command that starts the pinned mcp-remote; `NodeUnavailable` without node/npm."""
    return node_command(MCP_REMOTE_PROJECT, PROXY_SCRIPT)


@dataclass
class McpRemote:
    """One running mcp-remote: its browser, its callback and its stdio."""

    process: asyncio.subprocess.Process
    callback_port: int
    browser: RecordingBrowser
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

    async def authorization_url(self) -> str:
        """The URL mcp-remote opened "the browser" on."""
        return await self.browser.opened(self.process, self._failed)

    async def deliver(self, callback_url: str) -> httpx.Response:
        """The browser following the authorization server's redirect to mcp-remote."""
        return await deliver(callback_url)

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
    tokens, as ``~/.mcp-auth`` would), the browser script and log, and its
    stderr log. Without node/npm the test skips (locally) or fails (CI).
    """
    command = node_command_or_unavailable(MCP_REMOTE_PROJECT, PROXY_SCRIPT)
    browser = RecordingBrowser.in_dir(workdir)
    stderr_log = workdir / "mcp-remote.log"
    env = client_env(workdir, browser, MCP_REMOTE_CONFIG_DIR=str(workdir / "mcp-auth"))
    port = free_port()
    with stderr_log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command,
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
            yield McpRemote(process, port, browser, stderr_log)
        finally:
            await stop(process)
