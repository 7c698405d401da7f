"""Keeping the backend's availability truthful, and bringing the backend back.

`SupervisedBackend` stands between the tools and a `Backend` and owns one fact,
the backend's `BackendStatus`, which /readyz reports and tool calls obey:

* ``starting`` → ``ready`` once it connected. A remote server that cannot be
  reached at start is not a start-up error: graphgate serves, reports
  ``unreachable`` and keeps connecting in the background.
* ``ready`` → ``unreachable`` when a call fails with `BackendUnavailable` and
  a ping confirms it, or when the /readyz ping fails; ``ready`` again when a
  ping is answered. Calls still go to the client meanwhile: its pool replaces
  broken connections by itself (redis-py checks each one it hands out, the
  Neo4j driver drops a dead server's connections), and a ping that failed
  because the server was merely saturated must not turn into refusals or a
  torn-down pool that would abort everyone's queries.
* ``ready`` → ``restarting`` when a `SelfHosted` backend's process exits
  (OOM kill, abort, kill -9): noticed through its pid at once, logged once,
  counted, and restarted on the same data directory with a new client, as
  every pooled socket led to the dead process. Graphgates sharing the
  directory all notice; one restarts it, the others connect to the new one.

Attempts back off from a fifth of a second to five seconds, so a crash is
repaired within a second and a database that stays away costs one attempt
every five seconds. While there is no client to try (the remote server was
never reached, the embedded one is restarting) every call fails at once with
`BackendUnavailable` and a retry hint, without reaching the backend.

What clients and the unauthenticated /readyz see never names a host, port,
URL or database (issue 13): those go to the log only, so backend errors are
restated here in graphgate's own words.

Start-up: an embedded database that cannot start (corrupt files, missing
binary, a data directory another graphgate keeps locked while it hangs)
stays a start-up error, because no retry repairs it. Refused credentials of a remote server are
retried like an unreachable one: databases and their secrets are often
provisioned alongside graphgate (a Neo4j whose password an init job sets),
and the log line says which it is. A URL that can never work (bad scheme, no
host) is refused earlier, when the settings are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar, runtime_checkable

from graphgate.backends.base import (
    Backend,
    Explains,
    QueryLimits,
    QueryPlan,
    QueryResult,
    Schema,
)
from graphgate.errors import UNKNOWN_OUTCOME_HINT, BackendUnavailable, QueryRefused

__all__ = [
    "BackendState",
    "BackendStatus",
    "ReportsMissingBounds",
    "SelfHosted",
    "SupervisedBackend",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

FIRST_RETRY = 0.2
"""Seconds before the second attempt; each failed attempt doubles the wait."""
MAX_RETRY = 5.0
"""The longest wait between attempts."""
_MIN_RETRY_HINT = 1.0
"""The retry hint given to clients, at least: an attempt in progress takes this long."""


class BackendState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    UNREACHABLE = "unreachable"
    RESTARTING = "restarting"


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """Where the backend is, and why, in words fit for an unauthenticated reader."""

    state: BackendState
    reason: str = ""
    retry_after: float | None = None

    @property
    def ready(self) -> bool:
        return self.state is BackendState.READY


@runtime_checkable
class SelfHosted(Protocol):
    """A backend that runs its own database process (shared with other graphgates, maybe)."""

    async def wait_exited(self) -> str:
        """Return once the database process exits, saying how ("signal 9")."""

    async def restart(self) -> None:
        """Start the database again on the same data, with a new client."""


@runtime_checkable
class ReportsMissingBounds(Protocol):
    """A backend that knows which of the server's resource bounds are not set."""

    def missing_bounds(self) -> Iterable[str]:
        """Names of the bounds the server lacks (empty when all are set)."""


def _ignore(*_args: Any) -> None:
    return None


class SupervisedBackend:
    """A `Backend` whose availability is watched, reported and repaired.

    ``on_change`` hears every change of `status` and ``on_restart`` every
    exit of a self-hosted database, each of which starts a restart (for metrics).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        on_change: Callable[[BackendStatus], None] = _ignore,
        on_restart: Callable[[], None] = _ignore,
        first_retry: float = FIRST_RETRY,
        max_retry: float = MAX_RETRY,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        """The backend's kind; a Bolt backend knows its dialect once connected."""
        self._on_change = on_change
        self._on_restart = on_restart
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._state = BackendState.STOPPED
        self._connected = False
        """Whether the backend has a started client that calls can try."""
        self._reason = "graphgate has not started the database connection"
        self._attempt = 0
        self._next_attempt_at = 0.0
        self._down_since = 0.0
        self._recovery: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- what operators and probes see ----------------------------------------------------
    @property
    def status(self) -> BackendStatus:
        if self._state is BackendState.READY:
            return BackendStatus(self._state)
        reason = self._reason
        if self._attempt:
            reason = f"{reason}, attempt {self._attempt}"
        wait = max(_MIN_RETRY_HINT, self._next_attempt_at - time.monotonic())
        return BackendStatus(self._state, reason, round(wait, 1))

    def missing_bounds(self) -> list[str]:
        """The bounds the backend reports missing on its server, if it can tell."""
        if isinstance(self.backend, ReportsMissingBounds):
            return sorted(self.backend.missing_bounds())
        return []

    async def readiness(self) -> Mapping[str, Any]:
        """The /readyz body's ``backend`` part, after a ping whenever there is a client.

        The ping decides: a failure marks the backend unreachable, an answer
        makes an unreachable one ready without waiting for the next attempt.
        """
        if self._connected:
            try:
                await self.backend.ping()
            except BackendUnavailable as exc:
                self._lost_contact(exc)
            else:
                if self._state is BackendState.UNREACHABLE and self._connected:
                    if self._recovery is not None:
                        self._recovery.cancel()
                    self._back()
        status = self.status
        body: dict[str, Any] = {"kind": self.name, "state": str(status.state)}
        if not status.ready:
            body["reason"] = status.reason
            body["retry_after"] = status.retry_after
        missing = self.missing_bounds()
        if missing:
            body["missing_bounds"] = missing
        return body

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (or start the embedded database); a remote one may come later."""
        if self._state is not BackendState.STOPPED:
            return
        self._set(BackendState.STARTING, "connecting to the database")
        try:
            await self.backend.start()
        except BackendUnavailable as exc:
            if isinstance(self.backend, SelfHosted):
                self._set(BackendState.STOPPED, "the database did not start")
                raise
            logger.warning(
                "the %s backend cannot be reached at start (%s); serving anyway, "
                "not ready, and connecting in the background",
                self.name,
                exc,
            )
            self._down_since = time.monotonic()
            self._lose(BackendState.UNREACHABLE, "cannot connect to the database server")
            return
        except BaseException:
            self._set(BackendState.STOPPED, "the database did not start")
            raise
        self._connected = True
        self._become_ready()

    @property
    def in_flight(self) -> int:
        """Calls started on this backend that have not returned yet."""
        return self._in_flight

    async def drained(self, bound: float) -> bool:
        """Wait until no call is in flight, at most ``bound`` seconds; True if none is left.

        A backend that left the catalog receives no new calls, so this ends as
        soon as the calls it was already running do (`graphgate.backends.registry`).
        """
        try:
            await asyncio.wait_for(self._idle.wait(), bound)
        except TimeoutError:
            return False
        return True

    async def wait_ready(self) -> None:
        """Return once the backend is ready (for work that needs it, such as demo data)."""
        while self._state is not BackendState.READY:
            if self._state is BackendState.STOPPED:
                raise BackendUnavailable("the database connection was closed")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        """Stop watching and reconnecting, then release the backend."""
        self._connected = False
        self._set(BackendState.STOPPED, "graphgate is stopping")
        tasks = [t for t in (self._recovery, self._watcher, self._probe) if t is not None]
        self._recovery = self._watcher = self._probe = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.backend.close()

    # -- the Backend protocol -------------------------------------------------------------
    async def ping(self) -> None:
        await self._call(self.backend.ping)

    async def read(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryResult:
        return await self._call(lambda: self.backend.read(database, query, params, limits))

    async def write(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryResult:
        return await self._call(lambda: self.backend.write(database, query, params, limits))

    async def schema(self, database: str, limits: QueryLimits) -> Schema:
        return await self._call(lambda: self.backend.schema(database, limits))

    async def list_databases(self) -> list[str]:
        return await self._call(self.backend.list_databases)

    @property
    def dialect(self) -> str | None:
        """The Cypher dialect the database speaks, None until it was reached."""
        return self.backend.dialect if isinstance(self.backend, Explains) else None

    async def explain(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryPlan:
        backend = self.backend
        if not isinstance(backend, Explains):
            raise QueryRefused(f"the {self.name} backend cannot show query plans")
        return await self._call(lambda: backend.explain(database, query, params, limits))

    async def workers(self) -> int:
        """How many queries the database runs at once (0: it does not say), for the fair share."""
        workers = getattr(self.backend, "workers", None)
        if workers is None:
            return 0
        count: int = await self._call(workers)
        return count

    # -- internals ------------------------------------------------------------------------
    async def _call(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        if not self._connected:
            status = self.status
            raise BackendUnavailable(
                f"the database is not available: {status.reason}", status.retry_after
            )
        self._in_flight += 1
        self._idle.clear()
        try:
            return await operation()
        except BackendUnavailable as exc:
            # The backend's words may name its address: they go to the log only.
            logger.debug("a %s call failed: %s", self.name, exc)
            self._confirm_in_background()
            hint = f"; {UNKNOWN_OUTCOME_HINT}" if UNKNOWN_OUTCOME_HINT in str(exc) else ""
            raise BackendUnavailable(
                f"the database server did not answer{hint}",
                exc.retry_after or _MIN_RETRY_HINT,
            ) from exc
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    def _confirm_in_background(self) -> None:
        """Ping once (one at a time); only a failed ping marks the backend unreachable."""
        if self._state is not BackendState.READY:
            return
        if self._probe is not None and not self._probe.done():
            return
        self._probe = asyncio.create_task(self._confirm(), name="graphgate-backend-probe")

    async def _confirm(self) -> None:
        try:
            await self.backend.ping()
        except BackendUnavailable as exc:
            self._lost_contact(exc)

    def _lost_contact(self, exc: BaseException) -> None:
        if self._state is not BackendState.READY:
            return
        logger.warning(
            "the %s backend stopped answering (%s); not ready until it answers again",
            self.name,
            exc,
        )
        self._down_since = time.monotonic()
        self._lose(BackendState.UNREACHABLE, "the database server stopped answering")

    async def _watch_process(self, backend: SelfHosted) -> None:
        how = await backend.wait_exited()
        if self._state is BackendState.STOPPED:
            return  # graphgate stopped it
        logger.error(
            "the embedded %s database exited (%s); restarting it on the same data directory",
            self.name,
            how,
        )
        if self._state is BackendState.READY:
            self._down_since = time.monotonic()
        self._on_restart()
        self._connected = False
        self._lose(BackendState.RESTARTING, f"the embedded database exited ({how}); restarting")

    def _lose(self, state: BackendState, reason: str) -> None:
        self._set(state, reason)
        if self._recovery is not None and not self._recovery.done():
            if state is not BackendState.RESTARTING:
                return
            # A process that exited is restarted now, not after a ping's backoff.
            self._recovery.cancel()
        self._attempt = 0
        self._recovery = asyncio.create_task(self._recover(), name="graphgate-backend-recovery")

    async def _recover(self) -> None:
        delay = self._first_retry
        while True:
            self._attempt += 1
            self._next_attempt_at = time.monotonic()
            self._changed()
            try:
                await self._reconnect()
            except Exception as exc:  # a background loop must outlive any one failure
                # The loss itself was logged once; a restart that fails says why, once.
                first_restart = self._attempt == 1 and self._state is BackendState.RESTARTING
                log = logger.warning if first_restart else logger.debug
                log("%s backend attempt %d failed: %s", self.name, self._attempt, exc)
                self._next_attempt_at = time.monotonic() + delay
                self._changed()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry)
                continue
            self._back()
            return

    def _back(self) -> None:
        down_for = time.monotonic() - self._down_since
        logger.info("the %s backend is ready again after %.1f s", self.name, down_for)
        self._become_ready()

    async def _reconnect(self) -> None:
        if self._connected:
            await self.backend.ping()
        elif isinstance(self.backend, SelfHosted):
            await self.backend.restart()
        else:
            await self.backend.start()
        self._connected = True

    def _become_ready(self) -> None:
        self.name = self.backend.name
        self._attempt = 0
        self._set(BackendState.READY, "")
        if isinstance(self.backend, SelfHosted):
            # Watch the process that runs now: a watcher of the previous one
            # could otherwise report its exit after the restart it caused.
            if self._watcher is not None:
                self._watcher.cancel()
            self._watcher = asyncio.create_task(
                self._watch_process(self.backend), name="graphgate-backend-watcher"
            )

    def _set(self, state: BackendState, reason: str) -> None:
        self._state = state
        self._reason = reason
        self._changed()

    def _changed(self) -> None:
        self._on_change(self.status)
