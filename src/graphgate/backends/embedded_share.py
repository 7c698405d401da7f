"""How several graphgate processes share the one FalkorDB server of a data directory.

Two MCP clients configured with the same stdio command, or one beside
``make run``, start two graphgates on one data directory. They must use one
database server: two servers writing one append-only file would corrupt it.
The files of the data directory decide, with ``flock`` locks that the kernel
drops when their holder dies (kill -9 included), so no lock can go stale:

``graphgate.lock``
    The coordination lock, exclusive and held only for moments: joining,
    leaving, (re)starting the server, and the keeper's check whether anyone
    still uses it. Whoever holds it may read and change the record.
``holders.lock``
    Each graphgate using the server holds a *shared* lock on it for as long
    as it does. Under the coordination lock, an exclusive lock that can be
    taken proves that nobody else uses the server.
``server.json`` (0600)
    The running server: its pid and start time (a reused pid is not
    mistaken for it), its keeper's, its port and password, and the bounds it
    was started with.
``server-exit.json``
    How the last server ended ("signal 9"), written by its keeper, which as
    its parent is the only process that can know.
``server.lock``
    Held by the keeper and, inherited, by the server for as long as either
    runs, and naming both. The last word on "never two servers": a server
    that no record names (its starter was killed between starting it and
    recording it) still holds it, and is stopped before another starts.

The server's lifetime is the group's, not its starter's: the starter may
exit while others still use it. The last graphgate to leave stops it; a group
whose last member crashed leaves it to the keeper (`embedded_keeper`), which
checks twice a second and stops a server nobody holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from graphgate.backends.embedded_keeper import write_private
from graphgate.errors import BackendUnavailable

__all__ = ["DataDirShare", "ProcessRef", "ServerRecord"]

COORDINATION_FILE = "graphgate.lock"
HOLDERS_FILE = "holders.lock"
RECORD_FILE = "server.json"
EXIT_FILE = "server-exit.json"
SERVER_LOCK_FILE = "server.lock"

_LOCK_POLL = 0.02
"""Seconds between attempts at the coordination lock (never a blocking flock on the loop)."""


def _start_time(pid: int) -> str:
    """When ``pid`` started, in clock ticks since boot ("" where /proc cannot tell).

    With the pid it names one process for good: a pid the kernel hands out
    again gets a different start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if fields[0] not in {"Z", "X"} else ""


@dataclass(frozen=True, slots=True)
class ProcessRef:
    """One process, not just a pid: signalled and watched only while it is that process."""

    pid: int
    started: str = ""

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid, _start_time(pid))

    def alive(self) -> bool:
        """Running (an exited process waiting to be reaped counts as gone)."""
        if sys.platform.startswith("linux"):
            return _start_time(self.pid) == self.started != ""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal(self, sig: signal.Signals) -> bool:
        """Send ``sig`` if this is still the process; a pidfd closes the reuse race."""
        pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(self.pid)
        try:
            if not self.alive():
                return False
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            if pidfd is not None:
                os.close(pidfd)

    async def exited(self) -> None:
        """Return once the process has exited, without blocking the loop.

        A pidfd (Linux 5.3+, for any process, not only children) makes the
        exit an event on the loop; elsewhere the process is polled ten times a
        second.
        """
        pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(self.pid)
        try:
            if pidfd is not None and self.alive():
                loop = asyncio.get_running_loop()
                readable: asyncio.Future[None] = loop.create_future()

                def exited() -> None:
                    if not readable.done():
                        readable.set_result(None)

                loop.add_reader(pidfd, exited)
                try:
                    await readable
                finally:
                    loop.remove_reader(pidfd)
            while self.alive():  # noqa: ASYNC110 - another process's exit is no asyncio event
                await asyncio.sleep(0.1)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    async def wait_gone(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ProcessRef:
        return cls(int(value["pid"]), str(value.get("started", "")))


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """What a graphgate needs to use the server another one started."""

    server: ProcessRef
    keeper: ProcessRef
    port: int
    password: str
    bounds: Mapping[str, Any] = field(default_factory=dict)
    started_by: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "server": self.server.to_json(),
                "keeper": self.keeper.to_json(),
                "port": self.port,
                "password": self.password,
                "bounds": dict(self.bounds),
                "started_by": self.started_by,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ServerRecord:
        data = json.loads(text)
        return cls(
            server=ProcessRef.from_json(data["server"]),
            keeper=ProcessRef.from_json(data["keeper"]),
            port=int(data["port"]),
            password=str(data["password"]),
            bounds=dict(data.get("bounds", {})),
            started_by=int(data.get("started_by", 0)),
        )


class DataDirShare:
    """This graphgate's membership in the group that uses one data directory's server.

    ``wait`` bounds how long `coordination` waits for another graphgate that
    is starting or stopping the server (both bounded by their own timeouts).
    """

    def __init__(self, directory: Path, *, wait: float) -> None:
        self.directory = directory
        self.coordination_path = directory / COORDINATION_FILE
        self.holders_path = directory / HOLDERS_FILE
        self.record_path = directory / RECORD_FILE
        self.exit_path = directory / EXIT_FILE
        self.server_lock_path = directory / SERVER_LOCK_FILE
        self._wait = wait
        self._held: IO[str] | None = None

    @property
    def holding(self) -> bool:
        """Whether this graphgate is registered as using the server."""
        return self._held is not None

    @contextlib.asynccontextmanager
    async def coordination(self) -> AsyncIterator[None]:
        """Hold the coordination lock; the loop keeps running while another holds it."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = self.coordination_path.open("a+", encoding="utf-8")
        try:
            deadline = time.monotonic() + self._wait
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "unknown"
                        raise BackendUnavailable(
                            f"the data directory {self.directory} has been locked by process "
                            f"{holder} for {self._wait:.0f} s while it starts or stops the "
                            "embedded database; if that process hangs, stop it"
                        ) from None
                    await asyncio.sleep(_LOCK_POLL)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.close()  # releases the lock

    # -- membership: call these under `coordination` ------------------------------------------
    def sole_user(self) -> bool:
        """Whether no other graphgate uses the server (call under `coordination`).

        Nobody takes a holder's lock without the coordination lock, so the
        answer holds until it is released.
        """
        if self._held is None:
            with self.holders_path.open("a", encoding="utf-8") as probe:
                try:
                    fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True
        try:
            fcntl.flock(self._held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            # Linux drops the shared lock of a conversion that failed: take it again.
            alone = False
        fcntl.flock(self._held.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        return alone

    def join(self) -> None:
        """Register as a user of the server, until `leave` or this process ends."""
        if self._held is not None:
            return
        handle = self.holders_path.open("a", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise BackendUnavailable(
                f"the embedded database of {self.directory} is being stopped; try again"
            ) from None
        self._held = handle

    def leave(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    # -- any server at all ---------------------------------------------------------------------
    def server_runs(self) -> bool:
        """Whether a keeper or server of this directory still runs, recorded or not."""
        with self.server_lock_path.open("a", encoding="utf-8") as probe:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    def unrecorded(self) -> tuple[ProcessRef, ProcessRef] | None:
        """The keeper and server the server lock names (to stop them), if it names any."""
        try:
            data = json.loads(self.server_lock_path.read_text(encoding="utf-8"))
            return ProcessRef.from_json(data["keeper"]), ProcessRef.from_json(data["server"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- the record ---------------------------------------------------------------------------
    def read_record(self) -> ServerRecord | None:
        try:
            return ServerRecord.from_json(self.record_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: as if no server were recorded

    def write_record(self, record: ServerRecord) -> None:
        write_private(self.record_path, record.to_json())

    def forget_record(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.record_path.unlink()

    async def how_it_ended(self, server: ProcessRef, seconds: float = 1.0) -> str:
        """The keeper's account of how ``server`` ended, once it has written it."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                note = json.loads(self.exit_path.read_text(encoding="utf-8"))
                same = int(note["pid"]) == server.pid
                if same and note.get("started", server.started) == server.started:
                    return str(note["how"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
            if time.monotonic() >= deadline:
                return "exited"
            await asyncio.sleep(0.02)
