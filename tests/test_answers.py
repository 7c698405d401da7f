"""What a model reads back: answers sized for its context, errors in the tools' terms.

Through the production assembly over real HTTP with the MCP SDK client.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
import pytest_asyncio
import redis.asyncio as redis
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from graphgate.auth.dev import mint_dev_token
from graphgate.config import Settings
from tests.services.falkordb import FalkorDBService, seed_tagged_tenants
from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.mcp_results import tool, tool_error


@pytest_asyncio.fixture(loop_scope="session")
async def answers_server(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Settings, dict[str, str]]]:
    suffix = uuid.uuid4().hex[:6]
    catalog = {
        "acme": f"acme_{suffix}",
        # Mapped to a physical name no user should ever read, and never written to.
        "initech": f"initech_prod_internal_{suffix}",
        # A physical key that holds no graph (another application's), so errors name it.
        "hooli": f"hooli_prod_internal_{suffix}",
    }
    await seed_tagged_tenants(falkordb_service, {"acme": catalog["acme"]})
    raw: Any = redis.Redis(
        host=falkordb_service.host, port=falkordb_service.port, password=falkordb_service.password
    )
    try:
        await raw.set(catalog["hooli"], "not a graph")
    finally:
        await raw.aclose()
    options = http_settings(
        tenants=catalog,
        auth="dev",
        data_dir=tmp_path_factory.mktemp("answers"),
        allow_writes=True,
    )
    parts = make_parts(falkordb_service.backend(), **options)
    async with serve_http(parts) as url:
        yield url, parts.settings, catalog


def client_for(url: str, settings: Settings, *tenants: str) -> Client:
    bearer = mint_dev_token(settings, sub="ada", tenants=list(tenants), admin=False, ttl=600)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=60)
    return Client(streamable_http_client(f"{url}/mcp", http_client=http))


async def test_long_values_are_elided_with_their_length(
    answers_server: tuple[str, Settings, dict[str, str]],
) -> None:
    url, settings, _ = answers_server
    async with client_for(url, settings, "acme") as client:
        answer: dict[str, Any] = await tool(
            client,
            "run_query",
            query="RETURN range(1, 1536) AS embedding, $text AS text, [1, 2, 3] AS small",
            params={"text": "x" * 5000},
        )
    embedding, text, small = answer["rows"][0]
    assert len(embedding) == 101 and embedding[:3] == [1, 2, 3]
    assert embedding[-1] == "… [elided: 1536 items in all]"
    assert text.startswith("x" * 2000) and text.endswith("[elided: 5000 characters in all]")
    assert small == [1, 2, 3]
    assert answer["values_elided"] == 2


async def test_rows_are_cut_to_the_budget_and_the_answer_says_how_to_page(
    answers_server: tuple[str, Settings, dict[str, str]],
) -> None:
    url, settings, _ = answers_server
    async with client_for(url, settings, "acme") as client:
        answer: dict[str, Any] = await tool(
            client,
            "run_query",
            query="UNWIND range(1, 900) AS i RETURN i, reduce(s = '', k IN range(1, 200) | s + 'y')",
        )
    # Measured as sent: compact JSON (the default separators add a byte per comma).
    encoded = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
    assert len(encoded.encode()) <= 100_000
    assert answer["truncated"] is True
    assert 0 < answer["row_count"] < 900
    assert answer["row_count"] + answer.get("rows_cut", 0) < 900
    assert f"SKIP {answer['row_count']}" in answer["hint"] and "LIMIT" in answer["hint"]


async def test_errors_name_the_tenant_never_its_physical_database(
    answers_server: tuple[str, Settings, dict[str, str]],
) -> None:
    url, settings, catalog = answers_server
    async with client_for(url, settings, "hooli") as client:
        errors = [
            await tool_error(client, "run_query", query="MATCH (n) RETURN count(n)"),
            await tool_error(client, "run_query", query="MATCH (n RETURN n"),
        ]
    for error in errors:
        assert catalog["hooli"] not in error and "internal" not in error, error
    assert "'hooli'" in errors[0]


async def test_a_tenant_nothing_was_written_to_answers_as_an_empty_database(
    answers_server: tuple[str, Settings, dict[str, str]], falkordb_service: FalkorDBService
) -> None:
    """`RETURN 1` gives its row, `MATCH` none, the schema is empty, and reading it
    creates nothing: the tenant's graph still does not exist afterwards."""
    url, settings, catalog = answers_server
    async with client_for(url, settings, "initech", "acme") as client:
        one = await tool(client, "run_query", query="RETURN 1 AS one", database="initech")
        nodes = await tool(client, "run_query", query="MATCH (n) RETURN n", database="initech")
        schema = await tool(client, "get_schema", database="initech")
        both = await tool(
            client,
            "query_databases",
            query="MATCH (n) RETURN count(n) AS n",
            databases=["acme", "initech"],
        )
    assert one["database"] == "initech" and one["rows"] == [[1]] and not one["truncated"]
    assert nodes["rows"] == [] and nodes["columns"] == ["n"]
    assert schema["database"] == "initech" and schema["node_labels"] == []
    assert schema["relationship_types"] == [] and schema["indexes"] == []
    assert both["results"]["initech"]["rows"] == [[0]]
    assert both["results"]["acme"]["rows"] == [[1]]
    raw: Any = redis.Redis(
        host=falkordb_service.host,
        port=falkordb_service.port,
        password=falkordb_service.password,
        decode_responses=True,
    )
    try:
        assert catalog["initech"] not in await raw.execute_command("GRAPH.LIST")
        assert not await raw.exists(catalog["initech"])
    finally:
        await raw.aclose()


@pytest.mark.parametrize(
    ("tenants", "advice"),
    [
        (["acme:write"], "run_write_query"),
        (["acme"], "read-only access"),
    ],
)
async def test_a_write_through_run_query_says_what_to_do(
    answers_server: tuple[str, Settings, dict[str, str]], tenants: list[str], advice: str
) -> None:
    url, settings, _ = answers_server
    async with client_for(url, settings, *tenants) as client:
        error = await tool_error(client, "run_query", query="CREATE (:Leak)")
    assert error.startswith("read_only: run_query only reads"), error
    assert advice in error


async def test_a_missing_parameter_is_named_with_how_to_pass_it(
    answers_server: tuple[str, Settings, dict[str, str]],
) -> None:
    url, settings, _ = answers_server
    async with client_for(url, settings, "acme") as client:
        error = await tool_error(
            client, "run_query", query="MATCH (t:Tag) WHERE t.tenant = $who RETURN t", params={}
        )
        both = await tool_error(
            client, "run_query", query="RETURN $a + $b, '$notone'", params={"c": 1}
        )
    assert "$who" in error and 'params={"who": …}' in error, error
    assert "$a, $b" in both and "notone" not in both.split("(the database said")[0], both


async def test_a_larger_schema_sample_finds_a_rare_property(
    answers_server: tuple[str, Settings, dict[str, str]],
) -> None:
    url, settings, _ = answers_server
    async with client_for(url, settings, "acme:write") as client:
        await tool(
            client,
            "run_write_query",
            query="UNWIND range(1, 150) AS i CREATE (:Rare {i: i}) WITH count(*) AS made "
            "CREATE (:Rare {i: 0, seldom: 'x'})",
        )
        default = await tool(client, "get_schema", label="Rare")
        wide = await tool(client, "get_schema", label="Rare", sample_size=1000)
        refused = await tool_error(client, "get_schema", sample_size=0)

    def properties(schema: dict[str, Any]) -> set[str]:
        [rare] = [entry for entry in schema["node_labels"] if entry["label"] == "Rare"]
        return {p["name"] for p in rare["properties"]}

    assert properties(default) == {"i"}  # the first 100 of 151 never have it
    assert properties(wide) == {"i", "seldom"}
    assert "sample_size" in refused
