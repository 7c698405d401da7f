"""Which database a tool call uses, and where a user's choice of database lives.

The choice made with ``use_database`` is only a preference: it is stored under
the caller's identity (issuer, subject, client, plus the MCP session id when
the transport has one) and re-checked against the rights of the *current*
token on every call, so stored state can never widen what a token allows.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from graphgate.auth.rights import Caller
from graphgate.config import Settings
from graphgate.errors import BackendUnavailable, DatabaseNotPermitted, ForbiddenError


class StateStore(Protocol):
    """Small expiring key-value storage shared by every replica.

    In memory by default; Redis when replicas must agree (``state_url``).
    Implementations must tolerate being unreachable by raising
    `graphgate.errors.BackendUnavailable`, which routing treats as "no choice".
    """

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemoryStateStore:
    """Per-process store with expiry and a hard bound on entries.

    The bound keeps memory flat when thousands of sessions come and go: the
    least recently written entries are dropped first.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at <= time.monotonic():
            del self._entries[key]
            return None
        return value

    async def set(self, key: str, value: str, ttl: float) -> None:
        self._entries[key] = (value, time.monotonic() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def close(self) -> None:
        self._entries.clear()


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved call target: the public tenant name and its backend database."""

    tenant: str
    database: str


class Router:
    """Resolves the database of every tool call from the caller's rights."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self._catalog = settings.catalog
        self._ttl = settings.session_ttl
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
