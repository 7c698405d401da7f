"""Discovery: the databases of a backend with ``discover = true`` become tenants.

Every ``discover_interval`` seconds (default 30) each such backend is asked
for its databases (FalkorDB ``GRAPH.LIST``, Neo4j and Memgraph ``SHOW
DATABASES``, never ``system`` or composites); those named with
``discover_prefix`` become tenants of the same name without the prefix. A
call whose token names a tenant not yet known asks for a look now
(`Discovery.rediscover`), at most once every ``min_gap`` seconds whatever the
number of such calls: an unknown name cannot make graphgate hammer its
databases. The HTTP gate asks too, before it refuses a token whose tenants
are all unknown (`graphgate.auth.challenge.BearerGate`), so the first user of
a database created a moment ago is served. ``graphgate_discovery_looks_total``
counts every look.

Why this is safe: discovery only decides which tenants *exist*. A tenant is
served to a caller only when the caller's verified token also grants it
(`graphgate.auth.rights`), so creating a database never opens it to anyone
the identity provider has not given it to, and a token naming a database
that does not exist gets the same answer as one naming a database it may
not use. Explicit ``[tenants]`` entries win over discovered ones, so a
database can never take over a name the settings give to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from graphgate.backends.registry import Backends
from graphgate.catalog import LiveCatalog, discovered_tenants
from graphgate.errors import GraphgateError
from graphgate.observability import Metrics

__all__ = ["Discovery"]

logger = logging.getLogger(__name__)

MIN_GAP = 2.0
"""Seconds between two on-demand looks, whatever the number of calls asking."""
TICK = 1.0
"""Seconds between checks of which backend is due for its periodic look."""


class Discovery:
    """Keeps the discovered part of the live catalog in step with the backends."""

    def __init__(
        self,
        live: LiveCatalog,
        backends: Backends,
        metrics: Metrics,
        *,
        min_gap: float = MIN_GAP,
    ) -> None:
        self._live = live
        self._backends = backends
        self._metrics = metrics
        self._min_gap = min_gap
        self._last_look: dict[str, float] = {}
        self._last_on_demand = float("-inf")
        self._on_demand: asyncio.Task[None] | None = None
        self._loop: asyncio.Task[None] | None = None

    def _discovering(self) -> list[str]:
        return sorted(name for name, t in self._live.current.backends.items() if t.discover)

    async def look(self, name: str) -> None:
        """Ask backend ``name`` for its databases and swap in what changed."""
        target = self._live.current.backends.get(name)
        if target is None or not target.discover:
            return
        self._last_look[name] = time.monotonic()
        self._metrics.discovery_looks.labels(name).inc()
        try:
            databases = await self._backends.get(name).list_databases()
        except GraphgateError as exc:
            # Keep what was found before: a backend that is down keeps its tenants,
            # whose calls then say backend_unavailable rather than "unknown".
            logger.debug("discovery on backend %s failed: %s", name, exc)
            self._metrics.catalog_reloads.labels("discovery", "failed").inc()
            return
        found = discovered_tenants(name, databases, target.discover_prefix)
        current = self._live.current
        if dict(current.discovered.get(name, {})) != found:
            self._live.swap(current.with_discovered(name, found))
            self._metrics.catalog_reloads.labels("discovery", "ok").inc()
            logger.info("discovery on backend %s: %d databases served", name, len(found))

    async def look_everywhere(self) -> None:
        await asyncio.gather(*(self.look(name) for name in self._discovering()))

    async def rediscover(self) -> bool:
        """Look now, unless a look started less than ``min_gap`` seconds ago.

        Callers arriving while a look runs wait for that one instead of starting their own.
        """
        if not self._discovering():
            return False
        if self._on_demand is not None and not self._on_demand.done():
            await asyncio.shield(self._on_demand)
            return True
        now = time.monotonic()
        if now - self._last_on_demand < self._min_gap:
            return False
        self._last_on_demand = now
        self._on_demand = asyncio.get_running_loop().create_task(self.look_everywhere())
        await asyncio.shield(self._on_demand)
        return True

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            due = [
                name
                for name in self._discovering()
                if now - self._last_look.get(name, float("-inf"))
                >= self._live.current.backends[name].discover_interval
            ]
            if due:
                await asyncio.gather(*(self.look(name) for name in due))
            await asyncio.sleep(TICK)

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(
                self._run(), name="graphgate-discovery"
            )

    async def close(self) -> None:
        for task in (self._loop, self._on_demand):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._loop = None
