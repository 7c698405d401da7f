"""Fair share: no tenant, and no caller, holds all of the backend's workers.

A graph database runs a fixed number of queries at once (FalkorDB's
THREAD_COUNT, a Bolt driver's pool); the rest queue behind them. One tenant
sending slow queries at full concurrency would otherwise fill every worker,
and every other tenant's point read would wait behind it. Each call takes one
share of its caller (issuer and subject) and one of its tenant before it
reaches the backend, waits at most ``busy_wait`` seconds for them, and
otherwise fails with `Busy` having run nothing.

Only names with queries in flight or waiting have an entry: an idle tenant or
caller costs nothing, so the memory used is bounded by the calls in progress,
whatever number of names clients make up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, NoReturn, Protocol, runtime_checkable

from graphgate.errors import Busy, GraphgateError

__all__ = ["FairShare", "KnowsWorkers", "ShareKind"]

logger = logging.getLogger(__name__)

ShareKind = Literal["tenant", "subject"]

FALLBACK_WORKERS = 8
"""Assumed when the backend cannot say how many queries it runs at once."""


@runtime_checkable
class KnowsWorkers(Protocol):
    """A backend that can say how many queries it runs at once."""

    async def workers(self) -> int:
        """That number, or 0 when the server does not say."""


@dataclass(slots=True)
class _Gate:
    """One name's queries in flight and the calls waiting, first come first served."""

    in_flight: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class _Gates:
    """Bounded concurrency per name, with a deadline on the wait."""

    def __init__(self) -> None:
        self._gates: dict[str, _Gate] = {}

    def __len__(self) -> int:
        return len(self._gates)

    def try_acquire(self, name: str, limit: int) -> bool:
        """Take one of ``name``'s ``limit`` slots if one is free and nobody waits."""
        gate = self._gates.get(name)
        if gate is None:
            self._gates[name] = _Gate(in_flight=1)
            return True
        if gate.in_flight < limit and not gate.waiting:
            gate.in_flight += 1
            return True
        return False

    async def acquire(self, name: str, limit: int, deadline: float) -> bool:
        """Take one of ``name``'s ``limit`` slots; False if none came by ``deadline``."""
        if self.try_acquire(name, limit):
            return True
        gate = self._gates[name]
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate.waiting.append(turn)
        try:
            async with asyncio.timeout_at(deadline):
                await turn
            return True
        except TimeoutError:
            # A release may have handed this call the slot as the wait ran out.
            if turn.done() and not turn.cancelled():
                return True
            self._forget(name, gate, turn)
            return False
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.release(name)
            else:
                self._forget(name, gate, turn)
            raise

    def release(self, name: str) -> None:
        """Hand the slot to the longest waiting call, or give it back."""
        gate = self._gates[name]
        while gate.waiting:
            turn = gate.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        gate.in_flight -= 1
        if gate.in_flight == 0:
            del self._gates[name]

    def _forget(self, name: str, gate: _Gate, turn: asyncio.Future[None]) -> None:
        if turn in gate.waiting:
            gate.waiting.remove(turn)
        if gate.in_flight == 0 and not gate.waiting:
            self._gates.pop(name, None)


class FairShare:
    """Per-tenant and per-caller limits on queries in flight.

    ``tenant_limit`` and ``subject_limit`` of 0 mean "choose": a tenant may
    use half of the backend's workers (at least one), so another tenant always
    finds one free; a caller may use a tenant's share. ``workers`` asks the
    backend how many it has; it is asked once, when the first call needs it
    (the backend is started by then). With several backends, ``backend_of``
    names a tenant's backend and how to ask it: each backend's tenants get
    half of *its* workers.
    """

    def __init__(
        self,
        *,
        tenant_limit: int,
        subject_limit: int,
        wait: float,
        workers: Callable[[], Awaitable[int]] | None = None,
        backend_of: Callable[[str], tuple[str, Callable[[], Awaitable[int]]]] | None = None,
        on_busy: Callable[[ShareKind], None] = lambda kind: None,
    ) -> None:
        self._tenant_setting = tenant_limit
        self._subject_setting = subject_limit
        self._wait = wait
        self._workers = workers
        self._backend_of = backend_of
        self._on_busy = on_busy
        self._auto_limits: dict[str, int] = {}
        self._tenants = _Gates()
        self._subjects = _Gates()

    @property
    def names_held(self) -> int:
        """Tenants and callers with a query in flight or waiting (the state kept)."""
        return len(self._tenants) + len(self._subjects)

    async def limits(self, tenant: str | None = None) -> tuple[int, int]:
        """The tenant and the subject limit in force (for ``tenant``'s backend)."""
        if self._tenant_setting:
            limit = self._tenant_setting
        elif tenant is None and self._backend_of is not None:
            # A caller's share alone (query_databases): the widest backend's tenant share.
            limit = max(self._auto_limits.values(), default=max(1, FALLBACK_WORKERS // 2))
        else:
            limit = await self._auto(tenant)
        return limit, self._subject_setting or limit

    async def _auto(self, tenant: str | None) -> int:
        key, ask = "", self._workers
        if self._backend_of is not None and tenant is not None:
            key, ask = self._backend_of(tenant)
        known = self._auto_limits.get(key)
        if known:
            return known
        workers = 0
        if ask is not None:
            try:
                workers = await ask()
            except GraphgateError as exc:
                # Not cached: the backend may only be down for now.
                logger.debug("backend did not say its worker count: %s", exc)
                return max(1, FALLBACK_WORKERS // 2)
        if workers <= 0:
            workers = FALLBACK_WORKERS
            logger.info(
                "backend does not say how many queries it runs at once; assuming %d", workers
            )
        limit = self._auto_limits[key] = max(1, workers // 2)
        return limit

    def share(self, tenant: str, subject: str) -> AbstractAsyncContextManager[None]:
        """Hold one of ``subject``'s and one of ``tenant``'s shares while the body runs.

        Both must come within one ``busy_wait``; otherwise `Busy` (nothing ran).
        """
        return _Holding(self, tenant, subject)

    def caller_share(self, subject: str) -> AbstractAsyncContextManager[None]:
        """One of ``subject``'s shares alone, for a call that takes tenant shares itself."""
        return _Holding(self, None, subject)

    def tenant_share(self, tenant: str) -> AbstractAsyncContextManager[None]:
        """One of ``tenant``'s shares alone, within the caller's share already held."""
        return _Holding(self, tenant, None)

    async def _enter(self, tenant: str | None, subject: str | None) -> None:
        tenant_limit, subject_limit = await self.limits(tenant)
        deadline = asyncio.get_running_loop().time() + self._wait
        if subject is not None and not (
            self._subjects.try_acquire(subject, subject_limit)
            or await self._subjects.acquire(subject, subject_limit, deadline)
        ):
            self._busy("subject", f"You already have {subject_limit} queries in flight.")
        if tenant is None:
            return
        try:
            held = self._tenants.try_acquire(tenant, tenant_limit) or await self._tenants.acquire(
                tenant, tenant_limit, deadline
            )
        except BaseException:  # cancelled while waiting: the caller's share goes back
            if subject is not None:
                self._subjects.release(subject)
            raise
        if not held:
            if subject is not None:
                self._subjects.release(subject)
            self._busy(
                "tenant", f"Database {tenant!r} already has {tenant_limit} queries in flight."
            )

    def _exit(self, tenant: str | None, subject: str | None) -> None:
        if tenant is not None:
            self._tenants.release(tenant)
        if subject is not None:
            self._subjects.release(subject)

    def _busy(self, kind: ShareKind, message: str) -> NoReturn:
        self._on_busy(kind)
        raise Busy(message, retry_after=max(1.0, self._wait))


class _Holding:
    """The shares one call holds; a class rather than a generator, for the hot path."""

    __slots__ = ("_fair", "_subject", "_tenant")

    def __init__(self, fair: FairShare, tenant: str | None, subject: str | None) -> None:
        self._fair = fair
        self._tenant = tenant
        self._subject = subject

    async def __aenter__(self) -> None:
        await self._fair._enter(self._tenant, self._subject)

    async def __aexit__(self, *exc_info: object) -> None:
        self._fair._exit(self._tenant, self._subject)
