"""The MCP Inspector's CLI (``npx @modelcontextprotocol/inspector --cli``) as a real subprocess.

One invocation is one MCP session: it connects to the URL over streamable
HTTP, initializes, sends one request (``--method tools/list``,
``--method tools/call --tool-name NAME --tool-arg key=value``), prints the
result as JSON on stdout and exits: 0 when it got a result, 5 when the tool
answered ``isError``, 3 when it needed a sign-in it could not do (its JSON
error envelope then goes to stderr). Those are the pinned version's
(tests/inspector/package.json) codes, asserted by the tests that use them.

Signed in two ways, as a user would:

* ``--header "Authorization: Bearer <token>"``: the token is sent as given.
* No header: on graphgate's 401 it does the OAuth flow itself (discovery,
  registration, PKCE, the browser opened on the authorization URL, a callback
  server at ``--callback-url``, the token request). It does that only on a
  terminal, or with ``MCP_AUTO_OPEN_ENABLED=true``, which `Inspector` sets;
  the browser is `RecordingBrowser` (tests/services/node_client.py), and the
  callback a free port instead of the fixed default 6276, so tests can run in
  parallel. It keeps the tokens in the OS keychain, and in a container with
  none in memory only; `Inspector` sets ``MCP_INSPECTOR_SECRET_STORE=file``
  (``<HOME>/.mcp-inspector/secrets.json``), so the next invocation of the
  same user uses the stored sign-in, as on a desktop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.services._common import free_port
from tests.services.node_client import (
    RecordingBrowser,
    client_env,
    node_command_or_unavailable,
    stop,
)
from tests.services.oidc_provider import INSPECTOR_PROJECT

LAUNCHER = Path("@modelcontextprotocol") / "inspector" / "clients" / "launcher" / "build"
ANSWER_TIMEOUT = 60.0


@dataclass(frozen=True)
class Answer:
    """What one invocation printed, and how it exited."""

    returncode: int
    stdout: str
    stderr: str

    def result(self) -> dict[str, Any]:
        """The JSON result on stdout of a successful invocation."""
        assert self.returncode == 0, f"the Inspector exited {self.returncode}: {self.stderr}"
        parsed: dict[str, Any] = json.loads(self.stdout)
        return parsed

    def tool_result(self) -> Any:
        """The JSON a ``tools/call`` answered with (its first text content), error or not."""
        answer: dict[str, Any] = json.loads(self.stdout)
        return json.loads(answer["content"][0]["text"])

    def error(self) -> dict[str, Any]:
        """The error envelope on stderr's last line (``{"error": {"code", "message"}}``)."""
        envelope: dict[str, dict[str, Any]] = json.loads(self.stderr.strip().splitlines()[-1])
        return envelope["error"]


@dataclass
class Running:
    """An invocation under way: waiting, perhaps, for the user's browser."""

    process: asyncio.subprocess.Process
    browser: RecordingBrowser
    stdout_log: Path
    stderr_log: Path

    def _failed(self, what: str) -> AssertionError:
        exit_state = (
            "running" if self.process.returncode is None else f"exit {self.process.returncode}"
        )
        stderr = self.stderr_log.read_text(errors="replace")[-3000:]
        return AssertionError(f"the Inspector {what} ({exit_state}); its stderr:\n{stderr}")

    async def authorization_url(self) -> str:
        """The URL the Inspector opened "the browser" on."""
        return await self.browser.opened(self.process, self._failed)

    async def answer(self, timeout: float = ANSWER_TIMEOUT) -> Answer:
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise self._failed(f"did not finish in {timeout:.0f} s") from None
        assert self.process.returncode is not None
        return Answer(
            self.process.returncode,
            self.stdout_log.read_text(errors="replace"),
            self.stderr_log.read_text(errors="replace"),
        )


class Inspector:
    """One user's Inspector CLI: a HOME of its own (its stored sign-ins) and a recording browser.

    Without node/npm (or the package) the test skips locally and fails in CI.
    """

    def __init__(self, workdir: Path) -> None:
        self.command = node_command_or_unavailable(INSPECTOR_PROJECT, LAUNCHER / "index.js")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.browser = RecordingBrowser.in_dir(workdir)
        self.callback_port = free_port()
        self._runs = itertools.count(1)

    @property
    def redirect_uri(self) -> str:
        """Where its OAuth callback server listens, and what it registers."""
        return f"http://127.0.0.1:{self.callback_port}/oauth/callback"

    @contextlib.asynccontextmanager
    async def running(self, server_url: str, *arguments: str) -> AsyncIterator[Running]:
        """``--cli <server_url> --transport http --callback-url ... <arguments>``; stopped on exit."""
        run = next(self._runs)
        stdout_log = self.workdir / f"inspector-{run}.out"
        stderr_log = self.workdir / f"inspector-{run}.err"
        env = client_env(
            self.workdir,
            self.browser,
            MCP_AUTO_OPEN_ENABLED="true",
            MCP_INSPECTOR_SECRET_STORE="file",
        )
        with stdout_log.open("wb") as stdout, stderr_log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                "--cli",
                server_url,
                "--transport",
                "http",
                "--callback-url",
                self.redirect_uri,
                *arguments,
                cwd=self.workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
            try:
                yield Running(process, self.browser, stdout_log, stderr_log)
            finally:
                await stop(process)

    async def run(self, server_url: str, *arguments: str) -> Answer:
        """One invocation to its end (no sign-in expected on the way)."""
        async with self.running(server_url, *arguments) as running:
            return await running.answer()


def bearer(token: str) -> tuple[str, str]:
    """The arguments that send ``token``, as a user pastes them."""
    return ("--header", f"Authorization: Bearer {token}")
