"""Which database a tool call uses.

The choice made with ``use_database`` is only a preference: it is stored under
the caller's identity (issuer, subject, client, plus the MCP session id when
the transport has one) and re-checked against the rights of the *current*
token on every call, so stored state can never widen what a token allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from graphgate.auth.rights import Caller
from graphgate.errors import BackendUnavailable, DatabaseNotPermitted, ForbiddenError
from graphgate.state import StateStore


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved call target: the public tenant name and its backend database."""

    tenant: str
    database: str


class Router:
    """Resolves the database of every tool call from the caller's rights."""

    def __init__(self, catalog: Mapping[str, str], store: StateStore, *, ttl: float) -> None:
        """``catalog`` maps tenant names to databases; a choice is kept for ``ttl`` seconds."""
        self._catalog = dict(catalog)
        self._ttl = ttl
        self._store = store

    @staticmethod
    def _state_key(caller: Caller, session_id: str | None) -> str:
        return f"graphgate:current:{caller.key}\x1f{session_id or ''}"

    def target(self, caller: Caller, tenant: str) -> Target:
        """The target for an explicitly named tenant, if the caller may use it.

        The same error for "unknown" and "not yours": the catalog cannot be
        enumerated by probing names.
        """
        if not caller.rights.permits(tenant) or tenant not in self._catalog:
            raise DatabaseNotPermitted(tenant)
        return Target(tenant=tenant, database=self._catalog[tenant])

    async def current(self, caller: Caller, session_id: str | None) -> str | None:
        """The stored choice, if the current token still permits it."""
        try:
            chosen = await self._store.get(self._state_key(caller, session_id))
        except BackendUnavailable:
            # Degrade to stateless routing: argument or starting database,
            # never anything that belongs to someone else.
            chosen = None
        if chosen is not None and caller.rights.permits(chosen):
            return chosen
        return None

    async def resolve(
        self, caller: Caller, requested: str | None, session_id: str | None
    ) -> Target:
        """The ``database`` argument, else the session's choice, else the start."""
        if requested is not None:
            return self.target(caller, requested)
        tenant = await self.current(caller, session_id) or caller.rights.starting
        if tenant is None:
            raise ForbiddenError("Your token grants no database on this server.")
        return self.target(caller, tenant)

    async def choose(self, caller: Caller, tenant: str, session_id: str | None) -> Target:
        """Remember ``tenant`` as the caller's current database (``use_database``)."""
        target = self.target(caller, tenant)
        await self._store.set(self._state_key(caller, session_id), target.tenant, self._ttl)
        return target

    def resolve_many(self, caller: Caller, requested: list[str] | None) -> list[Target]:
        """Targets for a cross-tenant call: ``None`` or ``["*"]`` means all permitted."""
        if requested is None or requested == ["*"]:
            names = caller.rights.sorted_tenants
        else:
            names = list(dict.fromkeys(requested))
        if not names:
            raise ForbiddenError("Your token grants no database on this server.")
        return [self.target(caller, name) for name in names]
