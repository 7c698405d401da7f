"""Third-party MCP clients from npm as real subprocesses: install, browser, environment, stop.

mcp-remote (tests/services/mcp_remote.py) and the MCP Inspector's CLI
(tests/services/inspector.py) are run the same way: the pinned package
(tests/<project>/package.json, installed by `npm_install`) started with
``node``, in a working directory of its own that is also its ``HOME`` (its
stored registrations and tokens), with an environment that carries nothing
of the developer's.

The browser: both open the authorization URL with the ``open`` package,
which on Linux runs ``xdg-open``; with no desktop session (``DISPLAY`` and
friends are left out of the environment) ``xdg-open`` runs the command in
``BROWSER``. `RecordingBrowser` is a small script that writes the URL to a
file, so the test learns the URL exactly as a browser would receive it and no
real browser starts. The test then plays the browser (the dev issuer's page:
tests/services/dev_sign_in.py; Keycloak's: the e2e suite's `Browser`) and
delivers the final redirect to the client's callback server with a GET, which
is what the user's browser does. On other platforms ``open`` ignores
``BROWSER``; these tests run on Linux.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.services._common import service_unavailable
from tests.services.oidc_provider import NodeUnavailable, npm_install

OPEN_TIMEOUT = 60.0  # the client's start, discovery and registration
DELIVER_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
_RECORDER = """#!/bin/sh
# The "browser" an MCP client opens: records the URL instead of showing it.
printf '%s\\n' "$1" >> "$GRAPHGATE_TEST_BROWSER_LOG"
"""


def node_command(project: Path, entry: Path) -> list[str]:
    """``node <project>/node_modules/<entry>``, installed first; `NodeUnavailable` without node."""
    modules = npm_install(project)
    node = shutil.which("node")
    if node is None:
        raise NodeUnavailable("node is not on PATH")
    return [node, str(modules / entry)]


def node_command_or_unavailable(project: Path, entry: Path) -> list[str]:
    """`node_command`, or the test skips (locally) or fails (CI) saying why not."""
    try:
        return node_command(project, entry)
    except NodeUnavailable as exc:
        service_unavailable(f"{project.name} (node): {exc}")
        raise  # unreachable: service_unavailable skips or fails


@dataclass(frozen=True)
class RecordingBrowser:
    """The ``BROWSER`` command of one client: appends each URL it is asked to open to ``log``."""

    script: Path
    log: Path

    @classmethod
    def in_dir(cls, workdir: Path) -> RecordingBrowser:
        script = workdir / "browser.sh"
        script.write_text(_RECORDER)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return cls(script, workdir / "browser.log")

    def env(self) -> dict[str, str]:
        # No desktop session, so xdg-open falls back to BROWSER (see module doc).
        return {"BROWSER": str(self.script), "GRAPHGATE_TEST_BROWSER_LOG": str(self.log)}

    async def opened(
        self,
        process: asyncio.subprocess.Process,
        failed: Callable[[str], AssertionError],
        timeout: float = OPEN_TIMEOUT,
    ) -> str:
        """The last URL the client opened; ``failed(what)`` if it exits or opens none in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.log.exists():
                lines = self.log.read_text().split()
                if lines:
                    return lines[-1]
            if process.returncode is not None:
                raise failed("exited before opening a browser")
            await asyncio.sleep(0.1)
        raise failed(f"opened no browser in {timeout:.0f} s")


async def deliver(callback_url: str) -> httpx.Response:
    """The browser following the authorization server's redirect to the client's callback."""
    async with httpx.AsyncClient(timeout=DELIVER_TIMEOUT) as http:
        return await http.get(callback_url)


def client_env(workdir: Path, browser: RecordingBrowser, **extra: str) -> dict[str, str]:
    """PATH, a ``HOME`` of its own, the recording browser and ``extra``; nothing else."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        **browser.env(),
        **extra,
    }


async def stop(process: asyncio.subprocess.Process) -> None:
    """Close stdin (a stdio client then shuts down, as when its host quits), then insist."""
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
