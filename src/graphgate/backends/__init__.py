"""Graph database backends, and the one place settings choose between them.

Nothing is connected or started here: `create_backend` only builds the
object; the server's lifespan calls ``start()`` and ``close()``.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from graphgate.backends.base import Backend
from graphgate.errors import ConfigError

if TYPE_CHECKING:
    from graphgate.config import Settings

__all__ = ["Backend", "create_backend"]

_FALKORDB_SCHEMES = frozenset({"falkordb", "falkordbs", "redis", "rediss"})
# RESULTSET_SIZE also caps procedure results, among them the db.labels() and
# db.propertyKeys() that the client reads to name labels and properties, so it
# must stay far above any plausible number of property keys.
_RESULT_SET_FLOOR = 100_000
_BOLT_SCHEMES = frozenset({"bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"})


# What the server maps beyond its data and its queries' memory: binaries, the
# module's thread stacks and allocator arenas (about 0.9 GB of address space idle).
_ADDRESS_SPACE_OVERHEAD_MB = 2048


def embedded_address_space(settings: Settings) -> int:
    """The embedded server's hard memory cap in MB: its data, every worker's query, overhead.

    Generous on purpose: it exists to stop allocations no bound of FalkorDB's
    catches (``range(1, 1e11)``), not to police ordinary use.
    """
    workers = (os.cpu_count() or 2) + 2
    return (
        settings.embedded_memory_mb
        + settings.query_memory_mb * workers
        + _ADDRESS_SPACE_OVERHEAD_MB
    )


def create_backend(settings: Settings) -> Backend:
    """The backend ``settings.backend`` names.

    ``embedded`` keeps its FalkorDB files under ``<data_dir>/falkordb``, gives
    the server ``query_timeout`` as its TIMEOUT_MAX, so writes are bounded
    too, a RESULTSET_SIZE above ``row_limit``, so that millions of
    unreturnable rows are never sent, and the per-query memory, total memory
    and queue bounds of ``query_memory_mb``, ``embedded_memory_mb`` and
    ``backend_queue``.
    """
    target = settings.backend
    password = settings.backend_password.get_secret_value() if settings.backend_password else None
    if target == "embedded":
        from graphgate.backends.embedded import EmbeddedBackend, EmbeddedFalkorDB

        server = EmbeddedFalkorDB(
            settings.data_dir / "falkordb",
            query_timeout=settings.query_timeout,
            result_set_size=max(settings.row_limit + 1, _RESULT_SET_FLOOR),
            query_memory_mb=settings.query_memory_mb,
            memory_mb=settings.embedded_memory_mb,
            queue=settings.backend_queue,
            address_space_mb=settings.embedded_address_space_mb or embedded_address_space(settings),
        )
        return EmbeddedBackend(server)
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    if scheme in _FALKORDB_SCHEMES:
        from graphgate.backends.falkordb import FalkorDBBackend

        return FalkorDBBackend.from_url(target, username=settings.backend_user, password=password)
    if scheme in _BOLT_SCHEMES:
        # Plug-in point for Neo4j / Memgraph: graphgate.backends.bolt provides
        # BoltBackend.from_settings(settings) -> Backend.
        try:
            bolt = importlib.import_module("graphgate.backends.bolt")
        except ModuleNotFoundError as exc:
            if exc.name != "graphgate.backends.bolt":
                raise
            raise ConfigError(
                f"{scheme}:// backends (Neo4j, Memgraph) are not available in this build; "
                "use 'embedded' or falkordb://host:port"
            ) from None
        backend: Backend = bolt.BoltBackend.from_settings(settings)
        return backend
    raise ConfigError(
        f"unknown backend {target!r}: use 'embedded', falkordb://host:port or bolt://host:port"
    )
