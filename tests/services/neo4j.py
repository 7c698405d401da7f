"""Session fixtures: one real Neo4j Community server, started from Maven Central's jars.

`scripts/neo4j_server.py` resolves the server into ``~/.m2`` (once), then
starts it on a free loopback port with a throw-away store and a random
password. Tests share the server; Community has a single user database
(``neo4j``), so tests keep apart by labels of their own (`neo4j_label`) and
clean up after themselves. `second_neo4j` is a second server of a module's
own, which the module may stop and start (several backends behind one graphgate).
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from scripts.neo4j_server import Neo4jInstance, Neo4jUnavailable, running_neo4j

from graphgate.backends.bolt import BoltBackend
from graphgate.backends.procedures import ProcedurePolicy
from graphgate.errors import GraphgateError
from tests.services._common import free_port, service_unavailable


@pytest.fixture(scope="session")
def neo4j_service() -> Iterator[Neo4jInstance]:
    with contextlib.ExitStack() as stack:
        try:
            instance = stack.enter_context(running_neo4j())
        except (Neo4jUnavailable, OSError) as exc:
            service_unavailable(f"Neo4j did not start: {exc}")
        yield instance


def make_backend(
    service: Neo4jInstance,
    *,
    policy: ProcedurePolicy | None = None,
    max_connections: int = 8,
    query_timeout: float = 30.0,
) -> BoltBackend:
    """A new, not yet started backend for this server."""
    return BoltBackend(
        service.uri,
        user=service.user,
        password=service.password,
        policy=policy,
        max_connections=max_connections,
        query_timeout=query_timeout,
    )


@pytest_asyncio.fixture(scope="session")
async def neo4j_backend(neo4j_service: Neo4jInstance) -> AsyncIterator[BoltBackend]:
    """One started backend shared by the session, as graphgate shares one driver."""
    backend = make_backend(neo4j_service)
    try:
        await backend.start()
    except GraphgateError as exc:
        service_unavailable(f"Neo4j started but graphgate cannot connect: {exc}")
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def neo4j_label() -> str:
    """A node label no other test uses."""
    return f"T_{uuid.uuid4().hex[:12]}"


class RestartableNeo4j:
    """A second Neo4j of a test's own, which the test may stop and start again.

    Same loopback port and password each time (another throw-away store,
    under the same 512 MB heap bound), so that a graphgate pointed at it sees
    the same server leave and come back.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.password = secrets.token_hex(18)
        self._stack: contextlib.ExitStack | None = None
        self.instance: Neo4jInstance | None = None

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    def start(self) -> Neo4jInstance:
        stack = contextlib.ExitStack()
        try:
            self.instance = stack.enter_context(
                running_neo4j(port=self.port, password=self.password)
            )
        except (Neo4jUnavailable, OSError) as exc:
            stack.close()
            service_unavailable(f"the second Neo4j did not start: {exc}")
        self._stack = stack
        return self.instance

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack, self.instance = None, None


@pytest.fixture(scope="module")
def second_neo4j() -> Iterator[RestartableNeo4j]:
    """Another Neo4j Community server beside `neo4j_service`, on its own port and store."""
    server = RestartableNeo4j()
    server.start()
    try:
        yield server
    finally:
        server.stop()
