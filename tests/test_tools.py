"""Every tool through FastMCP's in-memory client, on a real FalkorDB server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fastmcp import Client
from fastmcp.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from graphgate.server import build_server
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import make_parts


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(loop_scope="session")
async def tenants(falkordb_service: FalkorDBService) -> AsyncIterator[dict[str, str]]:
    """Two fresh tenants mapped to fresh graphs, seeded with different data."""
    catalog = {"acme": unique("acme"), "globex": unique("globex")}
    backend = falkordb_service.backend()
    await backend.start()
    try:
        from graphgate.backends.base import QueryLimits

        limits = QueryLimits()
        await backend.write(
            catalog["acme"],
            "CREATE (:Person {name:'Ada', born: 1815})"
            "-[:WORKS_AT {since: 1840}]->(:Company {name:'Acme'})",
            None,
            limits,
        )
        await backend.write(
            catalog["globex"],
            "UNWIND range(1, 30) AS i CREATE (:Product {sku: i, title: 'p' + toString(i)})",
            None,
            limits,
        )
        yield catalog
    finally:
        await backend.close()


def server_client(
    falkordb_service: FalkorDBService, catalog: dict[str, str], tmp_path: Path, **settings: Any
) -> Client[Any]:
    parts = make_parts(
        falkordb_service.backend(),
        tenants=catalog,
        data_dir=tmp_path,
        **settings,
    )
    return Client(build_server(parts))


async def call(client: Client[Any], tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    if result.structured_content is not None:
        data = result.structured_content
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


async def test_tools_are_listed_with_annotations(falkordb_service, tenants, tmp_path) -> None:
    async with server_client(falkordb_service, tenants, tmp_path) as client:
        tools = {tool.name: tool for tool in await client.list_tools()}
    assert set(tools) == {
        "list_databases",
        "use_database",
        "run_query",
        "get_schema",
        "query_databases",
        "explain_query",
    }
    assert tools["run_query"].annotations.read_only_hint is True
    assert tools["run_query"].annotations.destructive_hint is False
    assert "read-only" in (tools["run_query"].description or "")
    assert set(tools["run_query"].input_schema["properties"]) == {"query", "params", "database"}
    # Self-contained schemas: nothing for FastMCP's $ref inlining to do (server.py).
    assert not any("$ref" in json.dumps(tool.input_schema) for tool in tools.values())


async def test_write_tool_only_when_writes_allowed(falkordb_service, tenants, tmp_path) -> None:
    async with server_client(falkordb_service, tenants, tmp_path, allow_writes=True) as client:
        tools = {tool.name: tool for tool in await client.list_tools()}
    assert tools["run_write_query"].annotations.destructive_hint is True
    assert tools["run_write_query"].annotations.read_only_hint is False


async def test_list_and_use_database(falkordb_service, tenants, tmp_path) -> None:
    async with server_client(falkordb_service, tenants, tmp_path) as client:
        listed = await call(client, "list_databases")
        assert listed == [
            {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"},
            {"name": "globex", "access": "read", "current": False, "dialect": "FalkorDB"},
        ]
        assert await call(client, "use_database", name="globex") == {"current": "globex"}
        listed = await call(client, "list_databases")
        assert [d["name"] for d in listed if d["current"]] == ["globex"]
        result = await call(client, "run_query", query="MATCH (p:Product) RETURN count(p) AS n")
        assert result["database"] == "globex"
        assert result["rows"] == [[30]]


async def test_run_query_shapes(falkordb_service, tenants, tmp_path) -> None:
    async with server_client(falkordb_service, tenants, tmp_path) as client:
        result = await call(
            client,
            "run_query",
            query="MATCH (p:Person)-[r:WORKS_AT]->(c) WHERE p.name = $name RETURN p, r, c.name",
            params={"name": "Ada"},
        )
    assert result["database"] == "acme"
    assert result["columns"] == ["p", "r", "c.name"]
    assert result["row_count"] == 1 and result["truncated"] is False
    node, rel, name = result["rows"][0]
    assert node["labels"] == ["Person"] and node["properties"] == {"name": "Ada", "born": 1815}
    assert rel["type"] == "WORKS_AT" and rel["properties"] == {"since": 1840}
    assert name == "Acme"
    assert result["elapsed_ms"] >= 0


async def test_row_limit_truncates(falkordb_service, tenants, tmp_path) -> None:
    async with server_client(falkordb_service, tenants, tmp_path, row_limit=7) as client:
        result = await call(
            client,
            "run_query",
            database="globex",
            query="MATCH (p:Product) RETURN p.sku ORDER BY p.sku",
        )
    assert result["row_count"] == 7 and result["truncated"] is True
    assert result["rows"][0] == [1]


async def test_write_through_run_query_is_refused_by_the_database(
    falkordb_service, tenants, tmp_path
) -> None:
    async with server_client(falkordb_service, tenants, tmp_path, allow_writes=True) as client:
        with pytest.raises(ToolError, match="read_only"):
            await call(client, "run_query", query="CREATE (:Intruder)")
        count = await call(client, "run_query", query="MATCH (n:Intruder) RETURN count(n)")
    assert count["rows"] == [[0]]


async def test_write_query_returns_stats(falkordb_service, tenants, tmp_path) -> None:
    async with server_client(falkordb_service, tenants, tmp_path, allow_writes=True) as client:
        result = await call(
            client,
            "run_write_query",
            database="acme",
            query="CREATE (n:Note {text: $t}) RETURN n.text",
            params={"t": "hi"},
        )
        assert result["rows"] == [["hi"]]
        assert result["stats"]["nodes_created"] == 1
        assert result["stats"]["properties_set"] == 1
        deleted = await call(client, "run_write_query", query="MATCH (n:Note) DELETE n")
        assert deleted["stats"]["nodes_deleted"] == 1


async def test_writes_refused_when_server_disallows(falkordb_service, tenants, tmp_path) -> None:
    async with server_client(falkordb_service, tenants, tmp_path) as client:
        with pytest.raises(MCPError) as unknown:  # not offered at all: a protocol error
            await client.call_tool("run_write_query", {"query": "CREATE (:X)"})
        assert unknown.value.code == INVALID_PARAMS


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"query": "MATCH (n RETURN n"}, "query_error"),
        ({"query": "MATCH (n) RETURN n", "database": "nosuch"}, "not available to you"),
        ({"query": "MATCH (n) RETURN n", "database": "ACME"}, "not available to you"),
        ({"query": ""}, ""),
        ({"query": "RETURN $x", "params": {"x": {"nested": [1, {"deep": True}]}}}, None),
        ({"query": "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row"}, "LOAD CSV"),
    ],
)
async def test_bad_input_is_a_tool_error_and_the_server_keeps_serving(
    falkordb_service, tenants, tmp_path, arguments: dict[str, Any], fragment: str | None
) -> None:
    async with server_client(falkordb_service, tenants, tmp_path) as client:
        result = await client.call_tool("run_query", arguments, raise_on_error=False)
        if fragment is None:
            assert not result.is_error
        else:
            assert result.is_error
            text = result.content[0].text  # type: ignore[union-attr]
            assert fragment in text
            assert "Traceback" not in text
        after = await call(client, "run_query", query="RETURN 1 AS one")
        assert after["rows"] == [[1]]


async def test_timeout_is_a_tool_error(falkordb_service, tenants, tmp_path) -> None:
    async with server_client(falkordb_service, tenants, tmp_path, query_timeout=0.2) as client:
        result = await client.call_tool(
            "run_query",
            {
                "query": "UNWIND range(1, 3000) AS a UNWIND range(1, 3000) AS b "
                "WITH a, b WHERE a * b % 7 = 3 RETURN count(*)"
            },
            raise_on_error=False,
        )
        assert result.is_error
        assert "timeout" in result.content[0].text.lower()  # type: ignore[union-attr]
        assert (await call(client, "run_query", query="RETURN 2"))["rows"] == [[2]]


async def test_get_schema_and_pattern(falkordb_service, tenants, tmp_path) -> None:
    async with server_client(falkordb_service, tenants, tmp_path) as client:
        schema = await call(client, "get_schema")
        assert schema["database"] == "acme"
        labels = {entry["label"]: entry for entry in schema["node_labels"]}
        assert set(labels) == {"Person", "Company"}
        props = {p["name"]: p["types"] for p in labels["Person"]["properties"]}
        assert set(props) == {"name", "born"}
        assert [t["type"] for t in schema["relationship_types"]] == ["WORKS_AT"]
        narrowed = await call(client, "get_schema", pattern="PERS")
        assert [entry["label"] for entry in narrowed["node_labels"]] == ["Person"]
        # The relationship that joins the matched label stays, with its direction.
        [works_at] = narrowed["relationship_types"]
        assert works_at["type"] == "WORKS_AT"
        assert works_at["endpoints"] == [{"start": "Person", "end": "Company"}]
        by_property = await call(client, "get_schema", pattern="since")
        assert [t["type"] for t in by_property["relationship_types"]] == ["WORKS_AT"]
        around = await call(client, "get_schema", label="Company")
        assert [entry["label"] for entry in around["node_labels"]] == ["Person", "Company"]
        person = next(e for e in around["node_labels"] if e["label"] == "Person")
        assert person["properties"] == []  # a neighbour: its name, not its properties
        assert [t["type"] for t in around["relationship_types"]] == ["WORKS_AT"]
        unrelated = await call(client, "get_schema", pattern="zzz")
        assert unrelated["node_labels"] == [] and unrelated["relationship_types"] == []


async def test_query_databases_runs_everywhere_and_isolates_failures(
    falkordb_service, tenants, tmp_path
) -> None:
    async with server_client(falkordb_service, tenants, tmp_path) as client:
        result = await call(client, "query_databases", query="MATCH (n) RETURN count(n) AS n")
        assert result["results"]["acme"]["rows"] == [[2]]
        assert result["results"]["globex"]["rows"] == [[30]]
        partial = await call(
            client,
            "query_databases",
            databases=["acme", "globex"],
            query="MATCH (p:Product) RETURN p.sku / (p.sku - 1) LIMIT 1",
        )
        assert set(partial["results"]) == {"acme", "globex"}
        with pytest.raises(ToolError, match="not available"):
            await call(client, "query_databases", query="RETURN 1", databases=["acme", "nope"])


async def test_read_of_a_missing_graph_never_creates_it(falkordb_service, tmp_path) -> None:
    catalog = {"ghost": unique("ghost")}
    async with server_client(falkordb_service, catalog, tmp_path) as client:
        result = await client.call_tool(
            "run_query", {"query": "MATCH (n) RETURN n"}, raise_on_error=False
        )
        schema = await client.call_tool("get_schema", {}, raise_on_error=False)
    backend = falkordb_service.backend()
    await backend.start()
    try:
        assert catalog["ghost"] not in await backend.list_databases()
    finally:
        await backend.close()
    if not result.is_error:
        assert json.loads(result.content[0].text)["rows"] == []  # type: ignore[union-attr]
    assert schema is not None


async def test_query_databases_reports_progress(falkordb_service, tenants, tmp_path) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with server_client(falkordb_service, tenants, tmp_path) as client:
        await client.call_tool(
            "query_databases", {"query": "RETURN 1"}, progress_handler=on_progress
        )
    assert sorted(p for p, _, _ in seen) == [1, 2]
    assert all(total == 2 for _, total, _ in seen)
    assert {m for _, _, m in seen} == {"acme done", "globex done"}
