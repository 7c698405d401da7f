"""The keeper of a shared embedded FalkorDB server (run as a script; standard library only).

The server of a data directory must outlive the graphgate that started it
while other graphgates use it, so it cannot be that graphgate's child that
dies with it. It is this keeper's child instead, and the keeper exists so
that no server is ever left behind:

* the server asks the kernel for SIGTERM when the keeper dies
  (``PR_SET_PDEATHSIG``, Linux): killing the keeper stops the server, and the
  graphgates using it start a new one;
* twice a second the keeper takes the data directory's coordination lock, if
  free, and checks whether any graphgate still holds its shared lock on the
  holders file. When none does (the last one crashed: a clean last one stops
  the server itself), it stops the server, letting it save, and exits;
* when the server exits on its own (OOM kill, abort, kill -9), it writes how
  to ``server-exit.json``, which only the parent can know, and exits: the
  graphgate that restarts the server starts a new keeper with it.

It starts in its own session, so a terminal's Ctrl-C goes to graphgate, which
decides the order of shutdown. It prints the server's pid on stdout, then
closes it. Arguments: server binary, config file, data directory,
coordination lock, holders lock, record file, exit file, server lock, stop
timeout (seconds), address-space cap (bytes, 0 for none).

The server lock is held by the keeper and, inherited, by the server for as
long as either runs; it names both. While it is taken no other server may
start on the directory, whatever the record says.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
_CHECK_EVERY = 0.5


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _preexec(address_space: int) -> Callable[[], None]:
    """Runs in the server between fork and exec: tie it to the keeper, cap its memory.

    ``prctl`` is looked up here, in the keeper: loading a library between
    fork and exec could deadlock. The keeper is single-threaded, and
    PDEATHSIG follows the thread that forked, which lives as long as it.
    The address-space cap holds from the first instruction of the server, so
    an allocation no FalkorDB bound catches (``range(1, 1e11)``) fails at once.
    """
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The keeper may have died before prctl took effect: then do not start.
        if os.getppid() != parent:
            os._exit(1)
        if address_space:
            with contextlib.suppress(OSError, ValueError):
                resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return preexec


def write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically: a reader sees the old text or the new one.

    Also how `graphgate.backends.embedded_share` writes its server record;
    it lives here because this script can import nothing of graphgate.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


def _how(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def _stop(server: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM is redis' SHUTDOWN (it saves); SIGKILL bounds a server that hangs."""
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(grace)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _stop_if_unused(
    server: subprocess.Popen[bytes],
    coordination: Path,
    holders: Path,
    record: Path,
    grace: float,
) -> bool:
    """Stop the server if no graphgate holds it; never waits for a lock."""
    with coordination.open("a") as coordinating:
        try:
            fcntl.flock(coordinating.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # someone is joining, leaving or restarting: look again later
        with holders.open("a") as probe:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # in use
            _stop(server, grace)
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                if json.loads(record.read_text())["server"]["pid"] == server.pid:
                    record.unlink()
            return True


def main(argv: list[str]) -> int:
    guard_path = argv[7]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Held by the keeper and, inherited, by the server (and its save children) for as
    # long as any of them runs: while it is taken, a server may be writing the directory.
    with Path(guard_path).open("a+") as guard:
        try:
            fcntl.flock(guard.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another FalkorDB server runs in this directory", file=sys.stderr)
            return 3
        return _keep(argv, guard)


def _keep(argv: list[str], guard: IO[str]) -> int:
    binary, config, data_dir, coordination, holders, record, exit_note = argv[:7]
    grace, address_space = float(argv[8]), int(argv[9])
    server = subprocess.Popen(
        [binary, config],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=data_dir,
        preexec_fn=_preexec(address_space),
        pass_fds=(guard.fileno(),),
    )
    started = _start_time(server.pid)
    guard.truncate(0)
    guard.write(
        json.dumps(
            {
                "keeper": {"pid": os.getpid(), "started": _start_time(os.getpid())},
                "server": {"pid": server.pid, "started": started},
            }
        )
    )
    guard.flush()
    print(server.pid, flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nobody reads stdout again; graphgate's pipe sees EOF
    os.close(devnull)
    while True:
        try:
            code = server.wait(_CHECK_EVERY)
        except subprocess.TimeoutExpired:
            if _stop_if_unused(server, Path(coordination), Path(holders), Path(record), grace):
                return 0
            continue
        note = {"pid": server.pid, "started": started, "how": _how(code)}
        with contextlib.suppress(OSError):
            write_private(Path(exit_note), json.dumps(note))
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
