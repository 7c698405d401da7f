"""Graph database backends, and the one place a backend target chooses between them.

Nothing is connected or started here: `create_backend` only builds the
object; the server's lifespan calls ``start()`` and ``close()``.
"""

from __future__ import annotations

import importlib

from graphgate.backends.base import Backend
from graphgate.config import BackendTarget
from graphgate.errors import ConfigError

__all__ = ["Backend", "create_backend"]

# RESULTSET_SIZE also caps procedure results, among them the db.labels() and
# db.propertyKeys() that the client reads to name labels and properties, so it
# must stay far above any plausible number of property keys.
_RESULT_SET_FLOOR = 100_000


def create_backend(target: BackendTarget) -> Backend:
    """The backend ``target`` names (its kind was read from the URL in `graphgate.config`).

    ``embedded`` keeps its FalkorDB files under ``<data_dir>/falkordb``, gives
    the server ``query_timeout`` as its TIMEOUT_MAX, so writes are bounded
    too, a RESULTSET_SIZE above ``row_limit``, so that millions of
    unreturnable rows are never sent, and the per-query memory, total memory
    and queue bounds of ``query_memory_mb``, ``embedded_memory_mb`` and
    ``backend_queue``.
    """
    if target.kind == "embedded":
        from graphgate.backends.embedded import EmbeddedBackend, EmbeddedFalkorDB

        bounds = target.embedded
        if bounds is None:
            raise ConfigError("the embedded backend needs a data directory (data_dir)")
        server = EmbeddedFalkorDB(
            bounds.data_dir,
            query_timeout=target.query_timeout,
            result_set_size=max(target.row_limit + 1, _RESULT_SET_FLOOR),
            query_memory_mb=target.query_memory_mb,
            memory_mb=bounds.memory_mb,
            queue=bounds.queue,
            address_space_mb=bounds.address_space_mb,
        )
        return EmbeddedBackend(server)
    if target.kind == "falkordb":
        from graphgate.backends.falkordb import FalkorDBBackend

        return FalkorDBBackend.from_url(target.url, username=target.user, password=target.secret)
    # Plug-in point for Neo4j / Memgraph: graphgate.backends.bolt provides
    # BoltBackend.from_target(target) -> Backend.
    try:
        bolt = importlib.import_module("graphgate.backends.bolt")
    except ModuleNotFoundError as exc:
        if exc.name != "graphgate.backends.bolt":
            raise
        raise ConfigError(
            f"{target.url.split('://', 1)[0]}:// backends (Neo4j, Memgraph) are not available "
            "in this build; use 'embedded' or falkordb://host:port"
        ) from None
    backend: Backend = bolt.BoltBackend.from_target(target)
    return backend
