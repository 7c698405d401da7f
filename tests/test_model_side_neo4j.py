"""The model's side (issue 17) on a real Neo4j, over real HTTP, with both SDK clients.

Neo4j Community has one user database: the tenant ``acme`` maps to it, seeded
with the demo's people graph (MERGE: idempotent, shared with other tests).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from graphgate.config import Settings
from graphgate.demo import seed_demo
from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.mcp_results import tool, tool_error
from tests.services.neo4j import make_backend
from tests.test_model_side import check_ts_view, client_for, run_ts, token, ts_model_side

pytestmark = pytest.mark.neo4j

__all__ = ["ts_model_side"]  # the fixture, used here


@pytest_asyncio.fixture(loop_scope="session")
async def neo4j_server(
    neo4j_service: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Settings]]:
    catalog = {"acme": "neo4j", "ghost": "ghost" + uuid.uuid4().hex[:6]}
    seeding = make_backend(neo4j_service)
    await seeding.start()
    try:
        await seed_demo(seeding, {"acme": "neo4j"})
    finally:
        await seeding.close()
    options = http_settings(
        tenants=catalog,
        auth="dev",
        data_dir=tmp_path_factory.mktemp("model-neo4j"),
        allow_writes=True,
        confirm_writes="when_supported",
        json_response=False,
    )
    parts = make_parts(make_backend(neo4j_service), **options)
    async with serve_http(parts) as url:
        yield url, parts.settings


async def test_dialect_and_explain_on_neo4j(neo4j_server: tuple[str, Settings]) -> None:
    url, settings = neo4j_server
    reader, _ = client_for(url, token(settings, "r", "acme"), "auto")
    async with reader:
        listed = await tool(reader, "list_databases")
        assert listed[0]["dialect"] == "Neo4j 5"
        schema = await tool(reader, "get_schema")
        assert "SHOW INDEXES" in schema["dialect_notes"]
        plan = await tool(
            reader,
            "explain_query",
            query="MATCH (p:Person)-[:WORKS_AT]->(c:Company {name: $c}) RETURN p.name",
            params={"c": "Acme Corp"},
        )
        assert plan["writes"] is False and plan["labels"] == ["Person", "Company"]
        assert plan["relationship_types"] == ["WORKS_AT"]
        assert plan["plan"][0].startswith("ProduceResults")
        write = "MATCH (p:Person {name: $n}) SET p.x = 1"
        refused = await tool_error(reader, "explain_query", query=write, params={"n": "a"})
        assert "writes_not_allowed" in refused
        assert "query_refused" in await tool_error(
            reader, "explain_query", query="USE system SHOW USERS"
        )
        assert "not available to you" in await tool_error(
            reader, "explain_query", query="RETURN 1", database="ghost"
        )
        error = await tool_error(reader, "run_query", query="CALL db.indexes()")
        assert "SHOW INDEXES" in error, error
    writer, _ = client_for(url, token(settings, "w", "acme:write"), "auto")
    async with writer:
        plan = await tool(writer, "explain_query", query=write, params={"n": "a"})
        assert plan["writes"] is True and any("SetProperty" in w for w in plan["write_operations"])


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("answer", ["accept", "decline", "cancel"])
async def test_confirmed_writes_on_neo4j(
    neo4j_server: tuple[str, Settings], mode: str, answer: str
) -> None:
    url, settings = neo4j_server
    label = f"T_{uuid.uuid4().hex[:10]}"
    client, asked = client_for(url, token(settings, "w", "acme:write"), mode, answer)
    async with client:
        result = await client.call_tool(
            "run_write_query", {"query": f"CREATE (:{label} {{name: 'x'}})"}
        )
        counted = await tool(client, "run_query", query=f"MATCH (n:{label}) RETURN count(n)")
    assert len(asked) == 1 and f"Labels: {label}" in asked[0] and "Create" in asked[0]
    text = result.content[0].text  # type: ignore[union-attr]
    if answer == "accept":
        assert not result.is_error and json.loads(text)["stats"]["nodes_created"] == 1
        assert counted["rows"] == [[1]]
    else:
        assert result.is_error and "nothing ran" in text and counted["rows"] == [[0]]


async def test_resources_and_typescript_client_on_neo4j(
    neo4j_server: tuple[str, Settings], ts_model_side: str
) -> None:
    url, settings = neo4j_server
    label = f"T_{uuid.uuid4().hex[:10]}"
    seen = await run_ts(
        ts_model_side,
        url,
        token(settings, "ts", "acme:write"),
        "acme",
        answer="accept",
        write=f"CREATE (:{label})",
        read="MATCH (p:Person) RETURN p.name ORDER BY p.name",
    )
    check_ts_view(seen, "acme", "Neo4j 5")
    assert seen["calls"]["run_write_query"]["structured"]["stats"]["nodes_created"] == 1
    assert {e["label"] for e in seen["schema"]["node_labels"]} >= {"Person", "Company"}
