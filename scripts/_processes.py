"""Process chores shared by the scripts that run real servers for the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def log_tail(path: Path, lines: int = 25) -> str:
    """The end of a server's log, for an error message that says why it failed."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process's whole group (a launcher and its JVM), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
