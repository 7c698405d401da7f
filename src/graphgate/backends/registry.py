"""The backends registry: one supervised backend per name the catalog holds.

Each named backend has its own client and pool, dialect, bounds and health
(`SupervisedBackend`): one that is down fails its own tenants' calls with
``backend_unavailable`` and nobody else's.

When the catalog changes (`graphgate.catalog_watch`), `Backends.open_for`
opens the backends the new catalog adds *before* it is swapped in, so the
first call to a new tenant finds its backend; `Backends.retire_missing` then
drains the ones it dropped or replaced: the catalog in force no longer leads
to them, so no new call starts there, and each is closed as soon as the calls
it was running have returned (`SupervisedBackend.drained`). Every call is
bounded by its backend's ``query_timeout``, so the wait is too: at most that
plus `DRAIN_GRACE`, after which the backend is closed anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from graphgate.backends.supervision import SupervisedBackend
from graphgate.catalog import Catalog, LiveCatalog
from graphgate.config import BackendTarget
from graphgate.errors import BackendUnavailable

__all__ = ["Backends", "SupervisedFactory"]

logger = logging.getLogger(__name__)

SupervisedFactory = Callable[[BackendTarget], SupervisedBackend]
"""Builds (never starts) the supervised backend of one target."""

DRAIN_GRACE = 2.0
"""Seconds past a retired backend's query timeout after which it is closed whatever runs."""


class Backends:
    """The open backends by name, kept in step with the live catalog."""

    def __init__(
        self,
        live: LiveCatalog,
        factory: SupervisedFactory,
        *,
        readiness: Literal["any", "all"] = "any",
        on_removed: Callable[[str], None] = lambda name: None,
    ) -> None:
        self._live = live
        self._factory = factory
        self._readiness = readiness
        self._on_removed = on_removed
        self._open: dict[str, tuple[BackendTarget, SupervisedBackend]] = {
            name: (target, factory(target)) for name, target in live.current.backends.items()
        }
        self._started = False
        self._draining: set[asyncio.Task[None]] = set()
        self._workers: dict[str, int] = {}

    # -- lookup (the hot path) ------------------------------------------------------------
    def get(self, name: str) -> SupervisedBackend:
        """The backend called ``name``; `BackendUnavailable` if there is none."""
        entry = self._open.get(name)
        if entry is None:
            raise BackendUnavailable("this database's server is not configured right now")
        return entry[1]

    def names(self) -> list[str]:
        return sorted(self._open)

    def replace(self, name: str, backend: SupervisedBackend) -> None:
        """Serve ``name`` with ``backend`` (tests hand in a backend of their own)."""
        target = self._open[name][0] if name in self._open else self._live.current.backends[name]
        self._open[name] = (target, backend)

    async def workers_of(self, name: str) -> int:
        """How many queries backend ``name`` runs at once (0: it does not say)."""
        cached = self._workers.get(name)
        if cached is not None:
            return cached
        workers = await self.get(name).workers()
        if workers > 0:
            self._workers[name] = workers
        return workers

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start every backend; a remote one that is down keeps connecting in the background."""
        self._started = True
        for _target, backend in list(self._open.values()):
            await backend.start()

    async def close(self) -> None:
        for task in list(self._draining):
            task.cancel()
        for _target, backend in list(self._open.values()):
            await backend.close()
        self._open.clear()

    async def open_for(self, catalog: Catalog) -> list[str]:
        """Open the backends of ``catalog`` that are new or whose target changed.

        Called before the catalog is swapped in. Returns their names.
        """
        opened: list[str] = []
        for name, target in catalog.backends.items():
            current = self._open.get(name)
            if current is not None and current[0] == target:
                continue
            backend = self._factory(target)
            if self._started:
                await backend.start()
            if current is not None:
                self._retire(name, current)
            self._open[name] = (target, backend)
            self._workers.pop(name, None)
            opened.append(name)
        return opened

    def retire_missing(self, catalog: Catalog) -> list[str]:
        """Drain and close the backends ``catalog`` no longer names; returns their names."""
        gone = [name for name in self._open if name not in catalog.backends]
        for name in gone:
            self._retire(name, self._open.pop(name))
            self._workers.pop(name, None)
            self._on_removed(name)
        return gone

    def _retire(self, name: str, entry: tuple[BackendTarget, SupervisedBackend]) -> None:
        target, backend = entry
        task = asyncio.get_running_loop().create_task(
            self._drain(name, backend, target.query_timeout + DRAIN_GRACE),
            name=f"graphgate-drain-{name}",
        )
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    @staticmethod
    async def _drain(name: str, backend: SupervisedBackend, bound: float) -> None:
        started = time.monotonic()
        running = backend.in_flight
        logger.info(
            "backend %s left the catalog: closing it once its %d calls in flight return "
            "(at most %.0f s)",
            name,
            running,
            bound,
        )
        try:
            idle = await backend.drained(bound)
        finally:
            with contextlib.suppress(Exception):
                await backend.close()
        if idle:
            logger.info(
                "backend %s closed %.2f s after it left the catalog; no call was cut short",
                name,
                time.monotonic() - started,
            )
        else:
            logger.warning(
                "backend %s closed after %.0f s with %d calls still running (past its "
                "query_timeout); they fail with backend_unavailable",
                name,
                bound,
                backend.in_flight,
            )

    # -- health -------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether /readyz says ready, and its body: each backend's state, never an address."""
        names = sorted(self._open)
        states = await asyncio.gather(*(self._open[name][1].readiness() for name in names))
        bodies: dict[str, Mapping[str, Any]] = dict(zip(names, states, strict=True))
        up = [body["state"] == "ready" for body in bodies.values()]
        ready = bool(up) and (all(up) if self._readiness == "all" else any(up))
        body: dict[str, Any] = {"status": "ready" if ready else "unavailable"}
        if "default" in bodies:
            body["backend"] = bodies["default"]
        body["backends"] = bodies
        body["require"] = self._readiness
        return ready, body
