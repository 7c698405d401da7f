"""BoltBackend against a real Neo4j Community server (tests/services/neo4j.py).

Nothing here is mocked: every refusal is checked against what the server
would have done, and every "nothing happened" is checked on the server
through a separate admin driver that bypasses graphgate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
from neo4j import AsyncGraphDatabase
from pydantic import SecretStr
from scripts.neo4j_server import Neo4jInstance

from graphgate.backends import create_backend
from graphgate.backends.base import Backend, QueryLimits
from graphgate.backends.bolt import BoltBackend
from graphgate.backends.procedures import ProcedurePolicy
from graphgate.config import Settings
from graphgate.errors import (
    BackendUnavailable,
    ConfigError,
    QueryError,
    QueryRefused,
    QueryTimeout,
    ReadOnlyViolation,
)
from tests.services.neo4j import make_backend

pytestmark = pytest.mark.neo4j

DB = "neo4j"
LIMITS = QueryLimits(row_limit=100, timeout=10.0)
FILES = QueryLimits(row_limit=100, timeout=10.0, allow_file_access=True)


async def admin_rows(
    service: Neo4jInstance, query: str, database: str = DB, **params: Any
) -> list[dict[str, Any]]:
    """Straight to the server with the admin account, bypassing the code under test."""
    async with AsyncGraphDatabase.driver(service.uri, auth=(service.user, service.password)) as d:
        records, _, _ = await d.execute_query(query, params, database_=database)
        return [record.data() for record in records]


async def count(service: Neo4jInstance, label: str) -> int:
    rows = await admin_rows(service, f"MATCH (n:`{label}`) RETURN count(n) AS c")
    return int(rows[0]["c"])


# -- connecting ---------------------------------------------------------------------------


async def test_dialect_comes_from_the_server_agent(neo4j_backend: BoltBackend) -> None:
    assert isinstance(neo4j_backend, Backend)
    assert neo4j_backend.dialect == "neo4j"
    assert neo4j_backend.name == "neo4j"
    assert neo4j_backend.agent.startswith("Neo4j/5.26")
    await neo4j_backend.ping()


async def test_create_backend_builds_it_from_settings(neo4j_service: Neo4jInstance) -> None:
    settings = Settings(
        backend=neo4j_service.uri,
        backend_user=neo4j_service.user,
        backend_password=SecretStr(neo4j_service.password),
        backend_dialect="neo4j",
        tenants={"acme": DB},
        deny_procedures=["db.info"],
    )
    backend = create_backend(settings.backend_target)
    assert isinstance(backend, BoltBackend)
    await backend.start()
    try:
        result = await backend.read(DB, "RETURN 1 AS one", None, LIMITS)
        assert result.rows == [[1]]
        with pytest.raises(QueryRefused, match="deny_procedures"):
            await backend.read(DB, "CALL db.info()", None, LIMITS)
    finally:
        await backend.close()
        await backend.close()  # safe twice


async def test_wrong_password_and_closed_port_are_backend_unavailable(
    neo4j_service: Neo4jInstance,
) -> None:
    wrong = BoltBackend(neo4j_service.uri, user="neo4j", password="not-the-password")
    with pytest.raises(BackendUnavailable, match="credentials"):
        await wrong.start()
    closed = BoltBackend("bolt://127.0.0.1:1", user="neo4j", password="x", connect_timeout=1.0)
    with pytest.raises(BackendUnavailable):
        await closed.start()
    with pytest.raises(BackendUnavailable, match="not started"):
        await closed.read(DB, "RETURN 1", None, LIMITS)


def test_bad_urls_are_config_errors() -> None:
    for url in ("http://x:7687", "bolt://", "bolt://host:99999", "bolt://host:7687/otherdb"):
        with pytest.raises(ConfigError):
            BoltBackend(url)
    backend = BoltBackend("neo4j+s://bob:s%40cret@db.example.com")
    assert backend.uri == "neo4j+s://db.example.com:7687"
    assert backend.user == "bob"


# -- reads, writes, shapes -------------------------------------------------------------------


async def test_round_trip_shapes_and_stats(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance, neo4j_label: str
) -> None:
    created = await neo4j_backend.write(
        DB,
        f"CREATE (a:`{neo4j_label}` {{name: 'Ann', born: date('1990-01-02'), "
        "seen: datetime('2024-01-02T03:04:05.123Z'), at: localtime('10:11:12'), "
        "spot: point({latitude: 1.5, longitude: 2.5}), xy: point({x: 1, y: 2, z: 3}), "
        "wait: duration('P1Y2M3DT4H5M6.5S'), tags: ['x', 'y'], score: 0.5}) "
        f"-[:KNOWS {{since: 2020}}]->(b:`{neo4j_label}` {{name: 'Bo'}}) RETURN a.name AS n",
        None,
        LIMITS,
    )
    assert created.rows == [["Ann"]]
    assert created.stats["nodes_created"] == 2
    assert created.stats["relationships_created"] == 1
    assert created.stats["labels_added"] == 2
    assert created.stats["properties_set"] == 11
    result = await neo4j_backend.read(
        DB,
        f"MATCH p = (a:`{neo4j_label}`)-[r:KNOWS]->(b) "
        "RETURN a, r, p, a.born, a.seen, a.at, a.spot, a.xy, a.wait",
        None,
        LIMITS,
    )
    assert result.columns == ["a", "r", "p", "a.born", "a.seen", "a.at", "a.spot", "a.xy", "a.wait"]
    assert result.stats == {}
    node, rel, path, born, seen, at, spot, xy, wait = result.rows[0]
    assert set(node) == {"id", "labels", "properties"}
    assert node["labels"] == [neo4j_label]
    assert node["properties"]["tags"] == ["x", "y"]
    assert node["properties"]["score"] == 0.5
    assert set(rel) == {"id", "type", "start", "end", "properties"}
    assert (
        rel["type"] == "KNOWS"
        and rel["start"] == node["id"]
        and rel["properties"] == {"since": 2020}
    )
    assert [n["properties"]["name"] for n in path["nodes"]] == ["Ann", "Bo"]
    assert path["relationships"] == [rel]
    assert born == "1990-01-02"
    assert seen == "2024-01-02T03:04:05.123000+00:00"
    assert at == "10:11:12"
    assert spot == {"latitude": 1.5, "longitude": 2.5}
    assert xy == {"x": 1.0, "y": 2.0, "z": 3.0}
    assert wait == "P1Y2M3DT4H5M6.5S"
    deleted = await neo4j_backend.write(
        DB, f"MATCH (n:`{neo4j_label}`) DETACH DELETE n", None, LIMITS
    )
    assert deleted.stats["nodes_deleted"] == 2 and deleted.stats["relationships_deleted"] == 1
    assert await count(neo4j_service, neo4j_label) == 0


async def test_parameters_row_limit_and_truncation(neo4j_backend: BoltBackend) -> None:
    result = await neo4j_backend.read(
        DB,
        "UNWIND range(1, $n) AS x RETURN x",
        {"n": 50},
        QueryLimits(row_limit=10, timeout=10.0),
    )
    assert result.rows == [[x] for x in range(1, 11)]
    assert result.truncated is True
    exact = await neo4j_backend.read(
        DB, "UNWIND range(1, 10) AS x RETURN x", None, QueryLimits(row_limit=10)
    )
    assert exact.truncated is False and exact.row_count == 10


async def test_trailing_semicolon_explain_profile_and_cypher_version(
    neo4j_backend: BoltBackend,
) -> None:
    assert (await neo4j_backend.read(DB, "RETURN 1 AS x;  // done", None, LIMITS)).rows == [[1]]
    plan_only = await neo4j_backend.read(DB, "EXPLAIN MATCH (n) RETURN n", None, LIMITS)
    assert plan_only.rows == []
    profiled = await neo4j_backend.read(DB, "PROFILE RETURN 1 AS x", None, LIMITS)
    assert profiled.rows == [[1]]
    pinned = await neo4j_backend.read(DB, "CYPHER 5 RETURN 1 AS x", None, LIMITS)
    assert pinned.rows == [[1]]
    with pytest.raises(ReadOnlyViolation):
        await neo4j_backend.read(DB, "PROFILE CREATE (:Never)", None, LIMITS)


# -- the read path -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        "CREATE (n:{label})",
        "MERGE (n:{label} {{id: 1}}) RETURN n",
        "MATCH (n) WITH n LIMIT 1 CREATE (:{label})",
        "FOREACH (x IN [1, 2] | CREATE (:{label}))",
        "MATCH (n) CALL (n) {{ CREATE (:{label}) }} RETURN count(*)",
        "UNWIND [1] AS x CALL db.createLabel('{label}') RETURN x",
        "CREATE INDEX {label}_idx FOR (n:{label}) ON (n.x)",
        "cReAtE (n:{label}) // lower and mixed case",
        "/* MATCH (n) RETURN n */ CREATE (:{label})",
    ],
)
async def test_read_refuses_every_kind_of_write(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance, neo4j_label: str, write: str
) -> None:
    await neo4j_backend.write(DB, "CREATE (:Seed)", None, LIMITS)
    with pytest.raises(ReadOnlyViolation):
        await neo4j_backend.read(DB, write.format(label=neo4j_label), None, LIMITS)
    assert await count(neo4j_service, neo4j_label) == 0
    indexes = await admin_rows(neo4j_service, "SHOW INDEXES YIELD name RETURN name")
    assert f"{neo4j_label}_idx" not in {row["name"] for row in indexes}
    labels = await admin_rows(neo4j_service, "CALL db.labels()")
    assert neo4j_label not in {row["label"] for row in labels}


@pytest.mark.parametrize(
    "write",
    [
        "CREATE (:{label})",
        "MERGE (:{label} {{k: 1}})",
        "UNWIND [1] AS x CALL db.createLabel('{label}') RETURN x",
        "CREATE INDEX {label}_idx FOR (n:{label}) ON (n.x)",
    ],
)
async def test_the_server_refuses_writes_on_the_read_path_even_when_the_planner_check_is_fooled(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance, neo4j_label: str, write: str
) -> None:
    """Read-only is the database's: with the plan check defeated, Neo4j still says no."""
    from graphgate.backends.dialects import PlanFacts

    text = write.format(label=neo4j_label)
    # Poison the plan cache with the facts of a pure read for this write's text
    # (private on purpose: no public surface can make the planner check lie).
    neo4j_backend._plans[("neo4j", DB, text)] = PlanFacts(operators=["ProduceResults@neo4j"])
    with pytest.raises(ReadOnlyViolation) as refused:
        await neo4j_backend.read(DB, text, None, LIMITS)
    assert "read access mode" in str(refused.value)
    assert await count(neo4j_service, neo4j_label) == 0
    labels = await admin_rows(neo4j_service, "CALL db.labels()")
    assert neo4j_label not in {row["label"] for row in labels}
    indexes = await admin_rows(neo4j_service, "SHOW INDEXES YIELD name RETURN name")
    assert f"{neo4j_label}_idx" not in {row["name"] for row in indexes}


async def test_reads_allow_what_is_purely_a_read(neo4j_backend: BoltBackend) -> None:
    for query in (
        "CALL db.labels() YIELD label RETURN count(label) AS c",
        "SHOW INDEXES YIELD name RETURN count(name) AS c",
        "SHOW PROCEDURES YIELD name WHERE name = 'db.labels' RETURN count(name) AS c",
        "MATCH (n) RETURN count(n) AS c",
        "RETURN 'CREATE (:X)' AS c",
    ):
        assert len((await neo4j_backend.read(DB, query, None, LIMITS)).rows) == 1


# -- leaving the database -------------------------------------------------------------------

ESCAPES = [
    "USE system SHOW USERS",
    "USE system CALL dbms.components() YIELD name RETURN name",
    "USE neo4j MATCH (n) RETURN count(n)",
    "use SYSTEM show users",
    "/* hello */ USE system SHOW DATABASES",
    "CALL { USE system MATCH (n) RETURN n } RETURN n",
    "EXPLAIN USE system SHOW USERS",
    "USE\u00a0system SHOW USERS",
    "SHOW DATABASES",
    "SHOW DATABASE neo4j",
    "CREATE DATABASE graphgate_escape",
    "DROP DATABASE neo4j",
    "STOP DATABASE neo4j",
    "SHOW USERS",
    "SHOW CURRENT USER",
    "CREATE USER graphgate_escape SET PASSWORD 'secret-secret'",
    "ALTER CURRENT USER SET PASSWORD FROM 'a' TO 'b'",
    "GRANT ROLE admin TO neo4j",
    "SHOW PRIVILEGES",
    "SHOW SETTINGS",
    "SHOW TRANSACTIONS",
    "TERMINATE TRANSACTIONS 'neo4j-transaction-1'",
    "CALL dbms.components()",
    "CALL dbms.listConfig()",
    "CALL dbms.security.createUser('graphgate_escape', 'secret-secret', false)",
    "RETURN 1; SHOW USERS",
    "MATCH (n) RETURN n;CREATE USER graphgate_escape SET PASSWORD 'secret-secret'",
]


@pytest.mark.parametrize("query", ESCAPES)
async def test_queries_never_leave_the_database(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance, query: str
) -> None:
    for path in (neo4j_backend.read, neo4j_backend.write):
        with pytest.raises(QueryRefused):
            await path(DB, query, None, FILES)
    users = await admin_rows(neo4j_service, "SHOW USERS YIELD user RETURN user", "system")
    assert [row["user"] for row in users] == ["neo4j"]
    databases = await admin_rows(
        neo4j_service,
        "SHOW DATABASES YIELD name, currentStatus RETURN name, currentStatus",
        "system",
    )
    assert sorted((row["name"], row["currentStatus"]) for row in databases) == [
        ("neo4j", "online"),
        ("system", "online"),
    ]


async def test_the_system_database_is_no_tenant(neo4j_backend: BoltBackend) -> None:
    for database in ("system", "SYSTEM"):
        with pytest.raises(QueryRefused, match="system database"):
            await neo4j_backend.read(database, "SHOW USERS", None, LIMITS)
        with pytest.raises(QueryRefused, match="system database"):
            await neo4j_backend.schema(database, LIMITS)


async def test_the_session_database_is_the_one_used(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance
) -> None:
    """Community has one user database: routing is shown by a missing one failing clearly."""
    for call in (
        neo4j_backend.read("tenant_missing", "RETURN 1", None, LIMITS),
        neo4j_backend.write("tenant_missing", "CREATE (:X)", None, LIMITS),
        neo4j_backend.schema("tenant_missing", LIMITS),
    ):
        with pytest.raises(QueryError, match="database does not exist on the server") as missing:
            await call
        assert "tenant_missing" not in str(missing.value)  # physical names stay in the log
    assert await neo4j_backend.list_databases() == ["neo4j"]
    databases = await admin_rows(neo4j_service, "SHOW DATABASES YIELD name RETURN name", "system")
    assert "tenant_missing" not in {row["name"] for row in databases}


# -- files, URLs, procedures ---------------------------------------------------------------------


async def test_load_csv_needs_allow_file_access(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance
) -> None:
    imports = neo4j_service.home / "import"
    imports.mkdir(exist_ok=True)
    (imports / "people.csv").write_text("name\nAnn\nBo\n")
    query = "LOAD CSV WITH HEADERS FROM 'file:///people.csv' AS row RETURN row.name AS name"
    hidden = "CALL { LOAD CSV FROM 'file:///people.csv' AS row RETURN row } RETURN count(*) AS c"
    for text in (query, hidden, "load csv from 'https://example.com/x.csv' as r return r"):
        for path in (neo4j_backend.read, neo4j_backend.write):
            with pytest.raises(QueryRefused, match="allow_file_access"):
                await path(DB, text, None, LIMITS)
    allowed = await neo4j_backend.read(DB, query, None, FILES)
    assert allowed.rows == [["Ann"], ["Bo"]]


async def test_procedure_lists_apply_to_reads_and_writes(neo4j_service: Neo4jInstance) -> None:
    backend = make_backend(
        neo4j_service,
        policy=ProcedurePolicy.from_lists(["db.labels", "db.createLabel"], ["db.createLabel"]),
    )
    await backend.start()
    try:
        await backend.read(DB, "CALL db.labels()", None, LIMITS)
        with pytest.raises(QueryRefused, match="allow_procedures"):
            await backend.read(DB, "CALL db.propertyKeys()", None, LIMITS)
        with pytest.raises(QueryRefused, match="deny_procedures"):
            await backend.write(DB, "CALL db.createLabel('Nope')", None, LIMITS)
        with pytest.raises(QueryRefused, match="refused for everyone"):
            await backend.read(DB, "CALL `dbms`.`components`()", None, LIMITS)
    finally:
        await backend.close()


async def test_writes_may_change_the_schema(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance, neo4j_label: str
) -> None:
    index = f"{neo4j_label}_name"
    made = await neo4j_backend.write(
        DB, f"CREATE INDEX {index} IF NOT EXISTS FOR (n:`{neo4j_label}`) ON (n.name)", None, LIMITS
    )
    assert made.stats["indexes_created"] == 1
    constraint = await neo4j_backend.write(
        DB,
        f"CREATE CONSTRAINT {neo4j_label}_id FOR (n:`{neo4j_label}`) REQUIRE n.id IS UNIQUE",
        None,
        LIMITS,
    )
    assert constraint.stats["constraints_created"] == 1
    await neo4j_backend.write(
        DB,
        f"CREATE (:`{neo4j_label}` {{id: 1, name: 'x'}})-[:LINK {{w: 1}}]->(:Other_{neo4j_label})",
        None,
        LIMITS,
    )
    schema = await neo4j_backend.schema(DB, LIMITS)
    label = next(info for info in schema.node_labels if info.name == neo4j_label)
    assert label.count == 1
    assert {(p.name, tuple(p.types)) for p in label.properties} == {
        ("id", ("Long",)),
        ("name", ("String",)),
    }
    link = next(info for info in schema.relationship_types if info.name == "LINK")
    assert (neo4j_label, f"Other_{neo4j_label}") in link.endpoints
    assert any(
        i.label == neo4j_label and i.properties == ["name"] and i.kind == "range"
        for i in schema.indexes
    )
    assert any(
        c.label == neo4j_label and c.properties == ["id"] and c.kind == "unique"
        for c in schema.constraints
    )
    await neo4j_backend.write(DB, f"DROP CONSTRAINT {neo4j_label}_id", None, LIMITS)
    dropped = await neo4j_backend.write(DB, f"DROP INDEX {index}", None, LIMITS)
    assert dropped.stats["indexes_deleted"] == 1
    await neo4j_backend.write(
        DB,
        f"MATCH (n) WHERE n:`{neo4j_label}` OR n:Other_{neo4j_label} DETACH DELETE n",
        None,
        LIMITS,
    )


# -- time, connections, failures ------------------------------------------------------------------

SLOW = "UNWIND range(1, 1000000000) AS a WITH a WHERE a < 0 RETURN count(*)"


async def test_timeouts_are_enforced_by_the_server(neo4j_backend: BoltBackend) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(QueryTimeout):
        await neo4j_backend.read(DB, SLOW, None, QueryLimits(timeout=1.0))
    with pytest.raises(QueryTimeout):
        await neo4j_backend.write(
            DB, SLOW.replace("RETURN count(*)", "CREATE (:Never)"), None, QueryLimits(timeout=1.0)
        )
    assert asyncio.get_running_loop().time() - started < 6.0
    assert (await neo4j_backend.read(DB, "RETURN 1 AS x", None, LIMITS)).rows == [[1]]


async def test_one_pool_for_all_tenants(neo4j_service: Neo4jInstance) -> None:
    """Many concurrent calls, across databases, never open more than the pool's connections."""
    backend = BoltBackend(
        neo4j_service.uri,
        user=neo4j_service.user,
        password=neo4j_service.password,
        max_connections=2,
        user_agent="graphgate-pool-test",
    )
    await backend.start()
    try:
        calls = []
        for i in range(24):
            database = DB if i % 3 else f"tenant_{i}"
            calls.append(backend.read(database, "RETURN 1 AS x", None, LIMITS))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert sum(not isinstance(o, BaseException) for o in outcomes) == 16
        assert all(isinstance(o, QueryError) for o in outcomes if isinstance(o, BaseException))
        connections = await admin_rows(
            neo4j_service,
            "CALL dbms.listConnections() YIELD userAgent RETURN userAgent",
        )
        mine = [row for row in connections if row["userAgent"] == "graphgate-pool-test"]
        assert 1 <= len(mine) <= 2
    finally:
        await backend.close()


# A Bolt COMMIT message as sent: a two-byte chunk (empty struct, signature 0x12), then the end.
_COMMIT = b"\x00\x02\xb0\x12\x00\x00"


class CuttableProxy:
    """A loopback TCP relay to the server whose open connections can be cut.

    `cut_on_next_request` cuts the connection that next carries a request,
    as it arrives: the client has sent it, so it cannot have noticed anything
    beforehand and quietly taken a fresh connection instead.
    `swallow_next_request` drops the next request and keeps the connection
    open: a peer that has gone silent without closing anything. The
    ``_commit`` variants wait for the request that carries a Bolt ``COMMIT``
    (everything before it goes through): a write whose commit was sent, as
    far as the client can tell, and never answered.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.armed = False
        self.swallow = False
        self.at_commit: Literal["cut", "swallow"] | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        both: tuple[asyncio.StreamWriter, asyncio.StreamWriter] | None = None,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if both is not None and self.at_commit is not None and _COMMIT in data:
                    action, self.at_commit = self.at_commit, None
                    if action == "swallow":
                        continue
                    for end in both:
                        end.transport.abort()
                    return
                if both is not None and self.armed:
                    self.armed = False
                    for end in both:
                        end.transport.abort()
                    return
                if both is not None and self.swallow:
                    self.swallow = False
                    continue
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer, both=(writer, up_writer)), self._pipe(up_reader, writer)
        )

    def cut_on_next_request(self) -> None:
        self.armed = True

    def swallow_next_request(self) -> None:
        self.swallow = True

    def cut_on_next_commit(self) -> None:
        self.at_commit = "cut"

    def swallow_next_commit(self) -> None:
        self.at_commit = "swallow"

    def cut(self) -> None:
        for writer in self.writers:
            transport = writer.transport
            transport.abort()
        self.writers.clear()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttableProxy]:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self.cut()
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), 5.0)


@contextlib.asynccontextmanager
async def through_a_proxy(
    service: Neo4jInstance, *, max_connections: int = 1
) -> AsyncIterator[tuple[CuttableProxy, BoltBackend]]:
    """A started backend that reaches ``service`` through a `CuttableProxy`."""
    async with CuttableProxy(service.port).running() as proxy:
        backend = BoltBackend(
            f"bolt://127.0.0.1:{proxy.port}",
            user=service.user,
            password=service.password,
            max_connections=max_connections,
        )
        await backend.start()
        try:
            yield proxy, backend
        finally:
            await backend.close()


async def test_dropped_connections_retry_reads_once_and_writes_never(
    neo4j_service: Neo4jInstance, neo4j_label: str
) -> None:
    async with through_a_proxy(neo4j_service) as (proxy, backend):
        assert (await backend.read(DB, "RETURN 1 AS x", None, LIMITS)).rows == [[1]]
        before = proxy.accepted
        proxy.cut_on_next_request()
        assert (await backend.read(DB, "RETURN 2 AS x", None, LIMITS)).rows == [[2]]
        assert not proxy.armed  # the read's request was cut ...
        assert proxy.accepted == before + 1  # ... and went again on a fresh connection
        proxy.cut_on_next_request()
        with pytest.raises(BackendUnavailable, match="not retried"):
            await backend.write(DB, f"CREATE (:`{neo4j_label}`)", None, LIMITS)
        assert not proxy.armed
        assert await count(neo4j_service, neo4j_label) == 0
        # A connection dropped while idle is noticed or not; either way nothing doubles.
        proxy.cut()
        try:
            await backend.write(DB, f"CREATE (:`{neo4j_label}`)", None, LIMITS)
        except BackendUnavailable as exc:
            assert "not retried" in str(exc)
            assert await count(neo4j_service, neo4j_label) == 0
        else:
            assert await count(neo4j_service, neo4j_label) == 1


async def test_a_silent_server_is_given_up_at_graphgates_deadline(
    neo4j_service: Neo4jInstance,
) -> None:
    async with through_a_proxy(neo4j_service) as (proxy, backend):
        assert (await backend.read(DB, "RETURN 1 AS x", None, LIMITS)).rows == [[1]]
        proxy.swallow_next_request()
        started = asyncio.get_running_loop().time()
        with pytest.raises(QueryTimeout, match="stopped waiting"):
            await backend.read(DB, "RETURN 2 AS x", None, QueryLimits(timeout=1.0))
        # The deadline: the 1 s timeout, a 1 s pool wait, the 3 s grace.
        assert 4.5 < asyncio.get_running_loop().time() - started < 8.0
        assert not proxy.swallow
        # The abandoned connection is not handed out again.
        assert (await backend.read(DB, "RETURN 3 AS x", None, LIMITS)).rows == [[3]]


def test_the_service_runs_on_loopback(neo4j_service: Neo4jInstance) -> None:
    assert neo4j_service.host == "127.0.0.1"
    assert Path(neo4j_service.home).is_dir()
