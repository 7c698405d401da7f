"""The catalog: which tenants exist, and on which backend and database each lives.

A `Catalog` is an immutable snapshot. `LiveCatalog` holds the one in force
and replaces it whole (`LiveCatalog.swap`): readers take ``live.current``
once, without a lock, and a tool call keeps the snapshot it started with, so
a reload never shows a call half of one catalog and half of the next.

Two sources feed it: the settings file (`graphgate.catalog_watch`, on
change and on SIGHUP) and discovery (`graphgate.backends.discovery`), which
lists the databases of backends with ``discover = true``. Explicit
``[tenants]`` entries win over discovered ones, and a discovered tenant is
only served to a token that grants it, like any other: discovery decides
what *exists*, the token what a caller *may use*.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType

from graphgate.config import BackendTarget, Placement, Settings, validate_tenant_name
from graphgate.errors import ConfigError

__all__ = ["Catalog", "LiveCatalog", "Placement", "TenantNames", "discovered_tenants"]

logger = logging.getLogger(__name__)

SYSTEM_DATABASES = frozenset({"system"})
"""Never a tenant, whatever discovery lists (Neo4j's and Memgraph's own)."""


def _frozen(mapping: Mapping[str, Placement]) -> Mapping[str, Placement]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Catalog:
    """One consistent view: the backends' targets and every tenant's placement.

    ``explicit`` comes from ``[tenants]``; ``discovered`` holds, per backend,
    what discovery found there. `tenants` merges them, explicit first.
    """

    backends: Mapping[str, BackendTarget]
    explicit: Mapping[str, Placement]
    discovered: Mapping[str, Mapping[str, Placement]] = field(default_factory=dict)
    tenants: Mapping[str, Placement] = field(init=False)

    def __post_init__(self) -> None:
        for tenant, placement in self.explicit.items():
            if placement.backend not in self.backends:
                raise ConfigError(
                    f"tenant {tenant!r} is placed on backend {placement.backend!r}, "
                    "which is not configured"
                )
        # A database an explicit tenant lives in is that tenant's only: discovered
        # under its own name too, it would show users the physical name and be a
        # second way in, around the tenant's own rules (its confirm_writes).
        placed = {(where.backend, where.database) for where in self.explicit.values()}
        merged: dict[str, Placement] = {}
        for backend in sorted(self.discovered):
            if backend not in self.backends or not self.backends[backend].discover:
                continue
            for tenant, placement in self.discovered[backend].items():
                if (placement.backend, placement.database) not in placed:
                    merged.setdefault(tenant, placement)
        merged.update(self.explicit)
        object.__setattr__(self, "tenants", _frozen(merged))

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        """The catalog the settings describe (nothing discovered yet)."""
        return cls(
            backends=MappingProxyType(dict(settings.backend_targets)),
            explicit=_frozen(settings.placements),
        )

    def with_discovered(self, backend: str, databases: Mapping[str, Placement]) -> Catalog:
        """This catalog with ``backend``'s discovered tenants replaced by ``databases``."""
        found = dict(self.discovered)
        found[backend] = _frozen(databases)
        return Catalog(self.backends, self.explicit, MappingProxyType(found))

    def reloaded(self, settings: Settings) -> Catalog:
        """The catalog of ``settings``, keeping what discovery found on backends still there."""
        fresh = Catalog.from_settings(settings)
        kept = {
            name: tenants
            for name, tenants in self.discovered.items()
            if name in fresh.backends and fresh.backends[name] == self.backends.get(name)
        }
        return Catalog(fresh.backends, fresh.explicit, MappingProxyType(kept))

    def placement(self, tenant: str) -> Placement | None:
        return self.tenants.get(tenant)

    def tenants_on(self, backend: str) -> list[str]:
        return sorted(name for name, where in self.tenants.items() if where.backend == backend)


def discovered_tenants(backend: str, databases: list[str], prefix: str) -> dict[str, Placement]:
    """Tenants for the databases a backend lists: ``prefix`` stripped, ``system`` never.

    A database whose name is not a valid tenant name (`validate_tenant_name`)
    is skipped: discovery must not widen what a tenant name can be.
    """
    found: dict[str, Placement] = {}
    for database in databases:
        if database.lower() in SYSTEM_DATABASES or not database.startswith(prefix):
            continue
        name = database[len(prefix) :]
        try:
            validate_tenant_name(name)
        except ValueError:
            logger.debug("discovery skipped database %r: not a valid tenant name", database)
            continue
        found[name] = Placement(backend, database)
    return found


class TenantNames(Set[str]):
    """The live catalog's tenant names, as a set that always reads the current snapshot.

    `graphgate.auth.rights` intersects a token's tenants with it when the
    token is verified.
    """

    def __init__(self, live: LiveCatalog) -> None:
        self._live = live

    def __contains__(self, name: object) -> bool:
        return name in self._live.current.tenants

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._live.current.tenants))

    def __len__(self) -> int:
        return len(self._live.current.tenants)


Listener = Callable[[Catalog, Catalog], None]
"""Hears every swap: (old, new)."""


class LiveCatalog:
    """The catalog in force; replaced whole, read without locks."""

    def __init__(self, initial: Catalog) -> None:
        self.current = initial
        self.names = TenantNames(self)
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def swap(self, new: Catalog) -> None:
        """Make ``new`` the catalog; listeners hear of it (backends opened, caches cleared)."""
        old, self.current = self.current, new
        if old.tenants == new.tenants and old.backends == new.backends:
            return
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:  # one listener's bug must not keep the others unaware
                logger.exception("catalog listener failed")
