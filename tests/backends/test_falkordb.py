"""FalkorDBBackend against a real FalkorDB server (tests/services/falkordb.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as redis
from pydantic import SecretStr

from graphgate.backends import create_backend
from graphgate.backends.base import Backend, QueryLimits
from graphgate.backends.embedded import EmbeddedBackend
from graphgate.backends.falkordb import EMPTY_GRAPH, FalkorDBBackend
from graphgate.config import Settings
from graphgate.errors import (
    BackendUnavailable,
    ConfigError,
    QueryError,
    QueryRefused,
    QueryTimeout,
    ReadOnlyViolation,
)
from tests.services._common import free_port
from tests.services.falkordb import BackendFactory, FalkorDBService

pytestmark = pytest.mark.falkordb

LIMITS = QueryLimits(row_limit=100, timeout=10.0)
EXPENSIVE = "UNWIND range(1, 100000) AS a UNWIND range(1, 100000) AS b RETURN count(*)"


async def graphs(service: FalkorDBService) -> list[str]:
    """GRAPH.LIST straight from the server, bypassing the code under test."""
    client: Any = redis.Redis(
        host=service.host, port=service.port, password=service.password, decode_responses=True
    )
    try:
        return sorted(await client.execute_command("GRAPH.LIST"))
    finally:
        await client.aclose()


async def seed(backend: FalkorDBBackend, graph: str) -> None:
    await backend.write(
        graph,
        "CREATE (a:Person {name: 'Ann', age: 41})-[:KNOWS {since: 2020}]->"
        "(b:Person {name: 'Bo', age: 33}), (a)-[:WORKS_AT]->(:Company {name: 'Acme'})",
        None,
        LIMITS,
    )


# -- reads and writes ----------------------------------------------------------------------


async def test_write_reports_stats_as_ints(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    result = await falkordb_backend.write(
        graph_name,
        "CREATE (a:A {x: 1})-[:R {w: 2}]->(b:B:C {y: 'z'}) RETURN a.x AS x",
        None,
        LIMITS,
    )
    assert result.columns == ["x"]
    assert result.rows == [[1]]
    assert result.stats["nodes_created"] == 2
    assert result.stats["relationships_created"] == 1
    assert result.stats["properties_set"] == 3
    assert result.stats["labels_added"] == 3
    assert all(type(value) is int for value in result.stats.values())

    deleted = await falkordb_backend.write(graph_name, "MATCH (n:A) DETACH DELETE n", None, LIMITS)
    assert deleted.stats["nodes_deleted"] == 1
    assert deleted.stats["relationships_deleted"] == 1
    assert deleted.columns == [] and deleted.rows == []

    index = await falkordb_backend.write(
        graph_name, "CREATE INDEX FOR (n:B) ON (n.y)", None, LIMITS
    )
    assert index.stats["indexes_created"] == 1


async def test_read_returns_columns_rows_and_timing(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    await seed(falkordb_backend, graph_name)
    result = await falkordb_backend.read(
        graph_name,
        "MATCH (p:Person) RETURN p.name AS name, p.age AS age ORDER BY name",
        None,
        LIMITS,
    )
    assert result.columns == ["name", "age"]
    assert result.rows == [["Ann", 41], ["Bo", 33]]
    assert result.truncated is False
    assert result.stats == {}
    assert result.elapsed_ms > 0


async def test_read_of_missing_graph_answers_as_empty_and_does_not_create_it(
    falkordb_backend: FalkorDBBackend, falkordb_service: FalkorDBService, graph_name: str
) -> None:
    before = set(await graphs(falkordb_service)) - {EMPTY_GRAPH}
    answers = {
        "RETURN 1": [[1]],
        "MATCH (n) RETURN n": [],
        "MATCH (n) RETURN count(n)": [[0]],
        "CALL db.labels()": [],
        "MATCH (n) WHERE n.x = $x RETURN n": [],
    }
    for query, rows in answers.items():
        result = await falkordb_backend.read(graph_name, query, {"x": 1}, LIMITS)
        assert result.rows == rows, query
    # The LOAD CSV check (EXPLAIN) must not create it either, nor must writes via read;
    # and neither reaches graphgate's empty graph.
    for write in ("CREATE (n)", "CALL db.idx.fulltext.createNodeIndex('L', 'p')"):
        with pytest.raises(ReadOnlyViolation):
            await falkordb_backend.read(graph_name, write, None, LIMITS)
    with pytest.raises(QueryRefused, match="LOAD CSV"):
        await falkordb_backend.read(
            graph_name, "LOAD CSV FROM 'file:///etc/passwd' AS r RETURN r", None, LIMITS
        )
    result = await falkordb_backend.read(
        graph_name, "MATCH (n) RETURN n", None, QueryLimits(allow_file_access=True)
    )
    assert result.rows == []
    schema = await falkordb_backend.schema(graph_name, LIMITS)
    assert schema.node_labels == [] and schema.indexes == []
    after = await graphs(falkordb_service)
    assert graph_name not in after
    assert set(after) - {EMPTY_GRAPH} == before
    # graphgate's empty graph is nobody's database, and stays empty.
    assert EMPTY_GRAPH not in await falkordb_backend.list_databases()
    with pytest.raises(QueryError, match="reserved"):
        await falkordb_backend.write(EMPTY_GRAPH, "CREATE (:Leak)", None, LIMITS)
    with pytest.raises(QueryError, match="reserved"):
        await falkordb_backend.read(EMPTY_GRAPH, "RETURN 1", None, LIMITS)
    await falkordb_backend.write(graph_name, "CREATE (:Now)", None, LIMITS)
    result = await falkordb_backend.read(graph_name, "MATCH (n) RETURN labels(n)", None, LIMITS)
    assert result.rows == [[["Now"]]]
    other = f"{graph_name}-still-empty"
    assert (await falkordb_backend.read(other, "MATCH (n) RETURN n", None, LIMITS)).rows == []


async def test_without_rights_to_create_the_empty_graph_a_missing_graph_says_so(
    falkordb_service: FalkorDBService, graph_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An account that may not run GRAPH.QUERY (read-only) cannot have the empty graph
    made for it: the read answers that the database holds no graph yet, and the log
    says why once, not on every read."""
    admin: Any = redis.Redis(
        host=falkordb_service.host, port=falkordb_service.port, password=falkordb_service.password
    )
    user = f"reader_{graph_name}"
    await admin.execute_command(
        "ACL", "SETUSER", user, "on", ">reader-pw", "allkeys", "allcommands", "-graph.query"
    )
    reader = FalkorDBBackend(
        falkordb_service.host, falkordb_service.port, username=user, password="reader-pw"
    )
    try:
        await reader.start()
        for _ in range(3):
            with pytest.raises(QueryError, match="holds no graph yet"):
                await reader.read(graph_name, "RETURN 1", None, LIMITS)
        assert graph_name not in await graphs(falkordb_service)
        warnings = [r for r in caplog.records if "cannot create the empty graph" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await reader.close()
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_write_through_read_is_refused_by_the_database(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    await seed(falkordb_backend, graph_name)
    writes = [
        "CREATE (:Person {name: 'Mallory'})",
        "MERGE (:Person {name: 'Mallory'})",
        "MATCH (p:Person) SET p.age = 0",
        "MATCH (p:Person) DETACH DELETE p",
        "MATCH (p:Person) REMOVE p.age",
        "CREATE INDEX FOR (p:Person) ON (p.age)",
        "CALL db.idx.fulltext.createNodeIndex('Person', 'name')",
    ]
    for query in writes:
        with pytest.raises(ReadOnlyViolation) as caught:
            await falkordb_backend.read(graph_name, query, None, LIMITS)
        assert "RO_QUERY is to be executed only on read-only queries" in str(caught.value)
    after = await falkordb_backend.read(
        graph_name, "MATCH (p:Person) RETURN p.name, p.age ORDER BY p.name", None, LIMITS
    )
    assert after.rows == [["Ann", 41], ["Bo", 33]]
    schema = await falkordb_backend.schema(graph_name, LIMITS)
    assert schema.indexes == []


async def test_invalid_cypher_is_a_query_error_with_the_server_message(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    await seed(falkordb_backend, graph_name)
    cases = {
        "MATCH (n RETURN n": "Invalid input",
        "RETURN nosuchfunction(1)": "Unknown function 'nosuchfunction'",
        "RETURN 1 / 0": "Division by zero",
        "RETURN $missing": "Missing parameters",
    }
    for query, message in cases.items():
        for run in (falkordb_backend.read, falkordb_backend.write):
            with pytest.raises(QueryError, match=message) as caught:
                await run(graph_name, query, None, LIMITS)
            assert type(caught.value) is QueryError


async def test_timeout_then_backend_still_serves(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    await seed(falkordb_backend, graph_name)
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        await falkordb_backend.read(graph_name, EXPENSIVE, None, QueryLimits(timeout=0.5))
    assert time.monotonic() - started < 3.0
    result = await falkordb_backend.read(graph_name, "RETURN 1 AS one", None, LIMITS)
    assert result.rows == [[1]]


async def test_write_timeout_is_enforced_by_the_server_setting(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    # The session server runs with TIMEOUT_MAX set, which is what makes
    # FalkorDB honour per-query timeouts for writes at all.
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        await falkordb_backend.write(
            graph_name,
            "UNWIND range(1, 5000) AS a UNWIND range(1, 5000) AS b CREATE (:T {a: a})",
            None,
            QueryLimits(timeout=0.3),
        )
    # The server checks the limit between batches of work; the client gives up
    # one grace second after the limit at the latest.
    assert time.monotonic() - started < 2.5
    count = await falkordb_backend.read(graph_name, "MATCH (t:T) RETURN count(t)", None, LIMITS)
    assert count.rows == [[0]]


async def test_timeout_above_server_maximum_is_clamped(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    await seed(falkordb_backend, graph_name)
    result = await falkordb_backend.read(
        graph_name, "RETURN 2 AS two", None, QueryLimits(timeout=3600)
    )
    assert result.rows == [[2]]


async def test_row_limit_truncates(falkordb_backend: FalkorDBBackend, graph_name: str) -> None:
    await seed(falkordb_backend, graph_name)
    query = "UNWIND range(1, 10) AS x RETURN x"
    cut = await falkordb_backend.read(graph_name, query, None, QueryLimits(row_limit=3))
    assert cut.rows == [[1], [2], [3]]
    assert cut.truncated is True
    exact = await falkordb_backend.read(graph_name, query, None, QueryLimits(row_limit=10))
    assert len(exact.rows) == 10 and exact.truncated is False
    written = await falkordb_backend.write(
        graph_name,
        "UNWIND range(1, 5) AS x CREATE (n:N {x: x}) RETURN n.x",
        None,
        QueryLimits(row_limit=2),
    )
    assert written.rows == [[1], [2]] and written.truncated is True
    assert written.stats["nodes_created"] == 5


# -- LOAD CSV --------------------------------------------------------------------------------


async def test_load_csv_is_refused_unless_allowed(
    falkordb_backend: FalkorDBBackend, falkordb_service: FalkorDBService, graph_name: str
) -> None:
    await seed(falkordb_backend, graph_name)
    queries = [
        "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row",
        "load csv with headers from 'https://example.com/x.csv' AS row RETURN row.a",
        "CALL { LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row } RETURN row",
        "LOAD CSV FROM $url AS row CREATE (:Leak {line: row})",
    ]
    for query in queries:
        for run in (falkordb_backend.read, falkordb_backend.write):
            with pytest.raises(QueryRefused, match="LOAD CSV"):
                await run(graph_name, query, {"url": "file:///etc/passwd"}, LIMITS)
    # A write to a graph that does not exist yet is planned too.
    other = graph_name + "_new"
    with pytest.raises(QueryRefused):
        await falkordb_backend.write(other, queries[3], {"url": "file:///x"}, LIMITS)
    assert "Leak" not in str(await graphs(falkordb_service))
    # With file access allowed the database itself decides (no such file here).
    with pytest.raises(QueryError) as caught:
        await falkordb_backend.read(
            graph_name, queries[0], None, QueryLimits(allow_file_access=True)
        )
    assert not isinstance(caught.value, QueryRefused)
    assert "CSV" in str(caught.value)


async def test_load_csv_text_in_a_string_is_not_refused(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    """The planner decides, not a regex: the words in a literal are harmless."""
    await seed(falkordb_backend, graph_name)
    result = await falkordb_backend.read(
        graph_name, "RETURN 'LOAD CSV FROM x AS y' AS s // LOAD CSV", None, LIMITS
    )
    assert result.rows == [["LOAD CSV FROM x AS y"]]


# -- parameters ------------------------------------------------------------------------------


async def test_params_round_trip(falkordb_backend: FalkorDBBackend, graph_name: str) -> None:
    await seed(falkordb_backend, graph_name)
    params: dict[str, Any] = {
        "s": "quote \" backslash \\ apostrophe ' newline \n unicode ü 😀",
        "i": -(2**63),
        "f": 1.5e-07,
        "t": True,
        "n": None,
        "l": [1, "two", [3.0], {"k": False}],
        "m": {"a b": 1, "nested": {"x": [None]}},
        "injection": "'}) MATCH (n) DETACH DELETE n //",
    }
    query = "RETURN " + ", ".join(f"${name} AS {name}" for name in params)
    result = await falkordb_backend.read(graph_name, query, params, LIMITS)
    assert result.rows == [list(params.values())]
    people = await falkordb_backend.read(
        graph_name, "MATCH (p:Person {name: $name}) RETURN p.age", {"name": "Ann"}, LIMITS
    )
    assert people.rows == [[41]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"x": float("nan")}, "not a finite number"),
        ({"x": float("inf")}, "not a finite number"),
        ({"x": 2**64}, "64 bits"),
        ({"x": object()}, "not supported"),
        ({"x": {1, 2}}, "not supported"),
        ({"bad`name": 1}, "backticks"),
        ({"": 1}, "non-empty"),
        ({"x": {"k`": 1}}, "backticks"),
    ],
)
async def test_unsupported_params_are_refused(
    falkordb_backend: FalkorDBBackend, graph_name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(QueryError, match=message):
        await falkordb_backend.read(graph_name, "RETURN 1", params, LIMITS)


# -- schema ----------------------------------------------------------------------------------


async def test_schema_of_a_seeded_graph(falkordb_backend: FalkorDBBackend, graph_name: str) -> None:
    await seed(falkordb_backend, graph_name)
    for query in (
        "CREATE INDEX FOR (p:Person) ON (p.name)",
        "CREATE FULLTEXT INDEX FOR (c:Company) ON (c.name)",
        "CREATE INDEX FOR ()-[k:KNOWS]-() ON (k.since)",
        "MATCH (p:Person {name: 'Ann'}) SET p.born = date('1983-05-01'), p.tags = ['a']",
    ):
        await falkordb_backend.write(graph_name, query, None, LIMITS)
    client = falkordb_backend._db.connection  # the server's own constraint command
    await client.execute_command(
        "GRAPH.CONSTRAINT",
        "CREATE",
        graph_name,
        "UNIQUE",
        "NODE",
        "Person",
        "PROPERTIES",
        "1",
        "name",
    )
    await asyncio.sleep(0.2)  # constraints are built asynchronously

    schema = await falkordb_backend.schema(graph_name, LIMITS)
    labels = {label.name: label for label in schema.node_labels}
    assert set(labels) == {"Person", "Company"}
    assert labels["Person"].count == 2
    person_props = {p.name: p.types for p in labels["Person"].properties}
    assert person_props == {
        "name": ["String"],
        "age": ["Integer"],
        "born": ["Date"],
        "tags": ["List"],
    }
    types = {t.name: t for t in schema.relationship_types}
    assert set(types) == {"KNOWS", "WORKS_AT"}
    assert types["KNOWS"].count == 1
    assert types["KNOWS"].endpoints == [("Person", "Person")]
    assert types["WORKS_AT"].endpoints == [("Person", "Company")]
    assert {p.name: p.types for p in types["KNOWS"].properties} == {"since": ["Integer"]}
    indexes = {(i.label, tuple(i.properties), i.kind, i.entity) for i in schema.indexes}
    assert ("Person", ("name",), "range", "node") in indexes
    assert ("Company", ("name",), "fulltext", "node") in indexes
    assert ("KNOWS", ("since",), "range", "relationship") in indexes
    constraints = {(c.label, tuple(c.properties), c.kind, c.entity) for c in schema.constraints}
    assert constraints == {("Person", ("name",), "unique", "node")}


# -- server-level calls and failures ------------------------------------------------------------


async def test_list_databases_and_ping(
    falkordb_backend: FalkorDBBackend, falkordb_service: FalkorDBService, graph_name: str
) -> None:
    await falkordb_backend.ping()
    assert graph_name not in await falkordb_backend.list_databases()
    await seed(falkordb_backend, graph_name)
    names = await falkordb_backend.list_databases()
    assert graph_name in names
    assert names == [name for name in await graphs(falkordb_service) if name != EMPTY_GRAPH]


async def test_a_key_that_is_not_a_graph(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    await falkordb_backend._db.connection.set(graph_name, "plain string")
    with pytest.raises(QueryError, match="is not a graph"):
        await falkordb_backend.read(graph_name, "RETURN 1", None, LIMITS)


async def test_concurrent_queries_share_one_pool(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    await seed(falkordb_backend, graph_name)
    results = await asyncio.gather(
        *(falkordb_backend.read(graph_name, "RETURN $i AS i", {"i": i}, LIMITS) for i in range(50))
    )
    assert [r.rows[0][0] for r in results] == list(range(50))


async def test_a_burst_waits_for_a_connection_instead_of_failing(
    falkordb_service: FalkorDBService, graph_name: str
) -> None:
    """Thirty calls at once on two connections: they queue, none fails, no third is opened."""
    backend = FalkorDBBackend(
        falkordb_service.host,
        falkordb_service.port,
        password=falkordb_service.password,
        max_connections=2,
    )
    await backend.start()
    try:
        await seed(backend, graph_name)
        slow = "UNWIND range(1, 20000) AS x WITH x WHERE x % 7 = $i RETURN count(x) AS n"
        results = await asyncio.gather(
            *(backend.read(graph_name, slow, {"i": i % 7}, LIMITS) for i in range(30))
        )
        assert all(r.rows[0][0] in (2857, 2858) for r in results)
        pool: Any = backend._pool
        opened = len(pool._available_connections) + len(pool._in_use_connections)
        assert 1 <= opened <= 2
    finally:
        await backend.close()


async def test_clients_share_one_server(
    falkordb_backend: FalkorDBBackend,
    falkordb_backend_factory: BackendFactory,
    graph_name: str,
) -> None:
    other = await falkordb_backend_factory()
    await other.write(graph_name, "CREATE (:Shared {v: 1})", None, LIMITS)
    seen = await falkordb_backend.read(graph_name, "MATCH (s:Shared) RETURN s.v", None, LIMITS)
    assert seen.rows == [[1]]
    await other.close()
    with pytest.raises(BackendUnavailable, match="not started"):
        await other.read(graph_name, "RETURN 1", None, LIMITS)


async def test_unreachable_server_is_backend_unavailable() -> None:
    backend = FalkorDBBackend("127.0.0.1", free_port(), connect_timeout=1.0)
    with pytest.raises(BackendUnavailable):
        await backend.start()
    with pytest.raises(BackendUnavailable):
        await backend.read("g", "RETURN 1", None, LIMITS)


async def test_wrong_password_is_backend_unavailable(falkordb_service: FalkorDBService) -> None:
    backend = FalkorDBBackend(falkordb_service.host, falkordb_service.port, password="wrong")
    with pytest.raises(BackendUnavailable):
        await backend.start()
    anonymous = FalkorDBBackend(falkordb_service.host, falkordb_service.port)
    with pytest.raises(BackendUnavailable):
        await anonymous.start()


async def test_server_gone_after_start_is_backend_unavailable(
    falkordb_service: FalkorDBService, tmp_path: Any
) -> None:
    from graphgate.backends.embedded import EmbeddedFalkorDB

    server = EmbeddedFalkorDB(tmp_path / "gone", query_timeout=5)
    await server.start()
    backend = server.backend()
    await backend.start()
    await server.stop()
    with pytest.raises(BackendUnavailable):
        await backend.read("g", "RETURN 1", None, LIMITS)
    with pytest.raises(BackendUnavailable):
        await backend.ping()
    await backend.close()
    await backend.close()


# -- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("falkordb://localhost:6380", ("localhost", 6380, None, None, False)),
        ("falkordb://db.example", ("db.example", 6379, None, None, False)),
        ("redis://u:p%40ss@10.0.0.1:7000", ("10.0.0.1", 7000, "u", "p@ss", False)),
        ("falkordbs://:secret@host:1", ("host", 1, None, "secret", True)),
        ("rediss://host", ("host", 6379, None, None, True)),
    ],
)
def test_from_url(url: str, expected: tuple[Any, ...]) -> None:
    backend = FalkorDBBackend.from_url(url)
    assert (
        backend.host,
        backend.port,
        backend.username,
        backend._password,
        backend.ssl,
    ) == expected


def test_from_url_arguments_win_over_the_url() -> None:
    backend = FalkorDBBackend.from_url("falkordb://a:b@h:1", username="x", password="y")
    assert (backend.username, backend._password) == ("x", "y")


@pytest.mark.parametrize(
    "url", ["bolt://h:7687", "falkordb://", "falkordb://h:99999", "http://h", "h:6379"]
)
def test_from_url_refuses(url: str) -> None:
    with pytest.raises(ConfigError):
        FalkorDBBackend.from_url(url)


def test_create_backend_chooses_by_url(tmp_path: Any) -> None:
    embedded = create_backend(Settings(tenants={"acme": "acme"}, data_dir=tmp_path).backend_target)
    assert isinstance(embedded, EmbeddedBackend)
    assert embedded.server.data_dir == tmp_path / "falkordb"
    assert embedded.server.query_timeout == 30.0
    assert embedded.server.result_set_size == 100_000
    big = create_backend(
        Settings(tenants={"acme": "acme"}, data_dir=tmp_path, row_limit=500_000).backend_target
    )
    assert isinstance(big, EmbeddedBackend)
    assert big.server.result_set_size == 500_001
    remote = create_backend(
        Settings(
            tenants={"acme": "acme"},
            backend="falkordb://u@db:6380",
            backend_password=SecretStr("pw"),
        ).backend_target
    )
    assert isinstance(remote, FalkorDBBackend)
    assert (remote.host, remote.port, remote.username, remote._password) == ("db", 6380, "u", "pw")
    for backend in (embedded, remote):
        assert isinstance(backend, Backend)


def test_create_backend_hands_bolt_urls_to_the_bolt_backend() -> None:
    settings = Settings(tenants={"acme": "acme"}, backend="bolt://localhost:7687")
    try:
        from graphgate.backends import bolt
    except ModuleNotFoundError:
        with pytest.raises(ConfigError, match="not available"):
            create_backend(settings.backend_target)
        return
    backend = create_backend(settings.backend_target)
    assert isinstance(backend, bolt.BoltBackend)
    assert isinstance(backend, Backend)
