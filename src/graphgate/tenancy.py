"""Which database a tool call uses.

The choice made with ``use_database`` is only a preference: it is stored under
the caller's identity (issuer, subject, client, plus the MCP session id when
the transport has one) and re-checked against the rights of the *current*
token on every call, so stored state can never widen what a token allows.

Where a tenant lives comes from the live catalog (`graphgate.catalog`): each
resolution reads the snapshot in force once, so a reload between two calls
sends the second one to the tenant's new place, and a tenant that left the
catalog is refused like one that never was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from graphgate.auth.rights import Caller
from graphgate.backends.registry import Backends
from graphgate.backends.supervision import SupervisedBackend
from graphgate.catalog import LiveCatalog
from graphgate.config import ConfirmMode
from graphgate.errors import BackendUnavailable, DatabaseNotPermitted, ForbiddenError
from graphgate.state import StateStore

Rediscover = Callable[[], Awaitable[bool]]
"""Asks discovery to look again now (rate-limited); True if it did."""


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved call target: the public tenant, its database, and the backend it is on.

    ``database`` and ``backend_name`` never reach users (issue 13).
    """

    tenant: str
    database: str
    backend: SupervisedBackend
    backend_name: str = "default"
    confirm_writes: ConfirmMode | None = None
    """The tenant's own ``confirm_writes`` from the catalog; None: the server's."""


class Router:
    """Resolves the database and backend of every tool call from the caller's rights."""

    def __init__(
        self,
        catalog: LiveCatalog,
        backends: Backends,
        store: StateStore,
        *,
        ttl: float,
        rediscover: Rediscover | None = None,
    ) -> None:
        """A choice is kept for ``ttl`` seconds; ``rediscover`` serves tenants created since."""
        self._live = catalog
        self._backends = backends
        self._ttl = ttl
        self._store = store
        self._rediscover = rediscover

    @staticmethod
    def _state_key(caller: Caller, session_id: str | None) -> str:
        return f"graphgate:current:{caller.key}\x1f{session_id or ''}"

    def target(self, caller: Caller, tenant: str) -> Target:
        """The target for an explicitly named tenant, if the caller may use it.

        The same error for "unknown" and "not yours": the catalog cannot be
        enumerated by probing names.
        """
        placement = self._live.current.tenants.get(tenant)
        if placement is None or not (
            caller.rights.permits(tenant) or tenant in caller.rights.unknown
        ):
            raise DatabaseNotPermitted(tenant)
        backend = self._backends.get(placement.backend)
        return Target(
            tenant, placement.database, backend, placement.backend, placement.confirm_writes
        )

    def listed(self, caller: Caller) -> list[tuple[str, SupervisedBackend | None]]:
        """Every tenant the caller may use that the catalog in force holds, by name,
        with its backend (None while that backend is not open)."""
        current = self._live.current.tenants
        listed: list[tuple[str, SupervisedBackend | None]] = []
        for name in caller.rights.sorted_tenants:
            placement = current.get(name)
            if placement is None:
                continue
            try:
                listed.append((name, self._backends.get(placement.backend)))
            except BackendUnavailable:
                listed.append((name, None))
        return listed

    async def _found(self, caller: Caller, tenant: str) -> Target:
        """`target`, after asking discovery once when the token names a tenant not yet known."""
        if (
            self._rediscover is not None
            and tenant in caller.rights.unknown
            and tenant not in self._live.current.tenants
        ):
            await self._rediscover()
        return self.target(caller, tenant)

    def backend_label(self, tenants: Iterable[str]) -> str:
        """The backend of the first of ``tenants`` that is catalogued, for metrics labels."""
        current = self._live.current.tenants
        for tenant in tenants:
            placement = current.get(tenant)
            if placement is not None:
                return placement.backend
        return ""

    def fair_share_key(self, tenant: str) -> tuple[str, Callable[[], Awaitable[int]]]:
        """The backend ``tenant`` lives on, and how to ask how many workers it has."""
        placement = self._live.current.tenants.get(tenant)
        name = placement.backend if placement is not None else ""

        async def workers() -> int:
            return await self._backends.workers_of(name)

        return name, workers

    async def current(self, caller: Caller, session_id: str | None) -> str | None:
        """The stored choice, if the current token still permits it."""
        try:
            chosen = await self._store.get(self._state_key(caller, session_id))
        except BackendUnavailable:
            # Degrade to stateless routing: argument or starting database,
            # never anything that belongs to someone else.
            chosen = None
        if (
            chosen is not None
            and caller.rights.permits(chosen)
            and chosen in self._live.current.tenants
        ):
            return chosen
        return None

    async def resolve(
        self, caller: Caller, requested: str | None, session_id: str | None
    ) -> Target:
        """The ``database`` argument, else the session's choice, else the start."""
        if requested is not None:
            return await self._found(caller, requested)
        tenant = await self.current(caller, session_id) or caller.rights.starting
        if tenant is None:
            raise ForbiddenError("Your token grants no database on this server.")
        return self.target(caller, tenant)

    async def choose(self, caller: Caller, tenant: str, session_id: str | None) -> Target:
        """Remember ``tenant`` as the caller's current database (``use_database``)."""
        target = await self._found(caller, tenant)
        await self._store.set(self._state_key(caller, session_id), target.tenant, self._ttl)
        return target

    def resolve_many(self, caller: Caller, requested: list[str] | None) -> list[Target]:
        """Targets for a cross-tenant call: ``None`` or ``["*"]`` means all permitted."""
        if requested is None or requested == ["*"]:
            current = self._live.current.tenants
            names = [name for name in caller.rights.sorted_tenants if name in current]
        else:
            names = list(dict.fromkeys(requested))
        if not names:
            raise ForbiddenError("Your token grants no database on this server.")
        return [self.target(caller, name) for name in names]
