"""The model's side (issue 17) over real HTTP, through the MCP Python SDK client.

Dialect notes, explain_query, confirmation of writes by elicitation (both
protocol eras: a server-initiated request on handshake-era sessions, an
``input_required`` round on 2026-07-28), schema resources and prompts listed
per caller, and structured output the SDK client validates against each
tool's declared schema (it refuses a result that does not match).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx2
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import ElicitRequestParams, ElicitResult

from graphgate.auth.dev import mint_dev_token
from graphgate.config import Settings
from graphgate.demo import seed_demo
from tests.services._common import service_unavailable
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.mcp_results import tool, tool_error
from tests.services.oidc_provider import TS_CLIENT_PROJECT, NodeUnavailable, npm_install

pytestmark = pytest.mark.falkordb

Answer = str  # "accept", "decline", "cancel", or "untick"


@pytest_asyncio.fixture(loop_scope="session")
async def server(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Settings]]:
    """acme (people) and globex (shop) demo data; writes confirmed always on acme."""
    async with serving(falkordb_service, tmp_path_factory, json_response=True) as served:
        yield served


@pytest_asyncio.fixture(loop_scope="session")
async def sse_server(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Settings]]:
    """The same, answering with SSE streams: handshake-era sessions can be asked there."""
    async with serving(falkordb_service, tmp_path_factory, json_response=False) as served:
        yield served


@contextlib.asynccontextmanager
async def serving(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory, **extra: Any
) -> AsyncIterator[tuple[str, Settings]]:
    suffix = uuid.uuid4().hex[:6]
    catalog = {"acme": f"acme_{suffix}", "globex": f"globex_{suffix}", "empty": f"e_{suffix}"}
    backend = falkordb_service.backend()
    await backend.start()
    try:
        await seed_demo(backend, catalog)
    finally:
        await backend.close()
    options = http_settings(
        # acme's own confirm_writes, from the catalog, overrides the server's.
        tenants={**catalog, "acme": {"database": catalog["acme"], "confirm_writes": "always"}},
        auth="dev",
        data_dir=tmp_path_factory.mktemp("model"),
        allow_writes=True,
        confirm_writes="when_supported",
        confirm_timeout=5,
        **extra,
    )
    parts = make_parts(falkordb_service.backend(), **options)
    async with serve_http(parts) as url:
        yield url, parts.settings


def token(settings: Settings, sub: str, *tenants: str) -> str:
    return mint_dev_token(settings, sub=sub, tenants=list(tenants), admin=False, ttl=600)


def client_for(
    url: str, bearer: str, mode: str = "legacy", answer: Answer | None = None
) -> tuple[Client, list[str]]:
    """A client, and the questions it was asked (when it answers elicitations)."""
    asked: list[str] = []

    async def elicit(_context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        if answer == "accept":
            return ElicitResult(action="accept", content={"value": True})
        if answer == "untick":
            return ElicitResult(action="accept", content={"value": False})
        return ElicitResult(action=answer)  # type: ignore[arg-type]

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
    client = Client(
        streamable_http_client(f"{url}/mcp", http_client=http),  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        elicitation_callback=elicit if answer is not None else None,
    )
    return client, asked


async def count_named(client: Client, database: str, name: str) -> int:
    answer = await tool(
        client,
        "run_query",
        database=database,
        query="MATCH (n {name: $name}) RETURN count(n)",
        params={"name": name},
    )
    return int(answer["rows"][0][0])


# -- tools: annotations, schemas, dialect ---------------------------------------------------


async def test_tools_declare_hints_and_schemas(server: tuple[str, Settings]) -> None:
    url, settings = server
    client, _ = client_for(url, token(settings, "ann", "acme:write"))
    async with client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name, t in tools.items():
            assert t.output_schema is not None and t.output_schema["type"] == "object", name
        hints = {name: t.annotations for name, t in tools.items()}
        assert hints["run_write_query"].destructive_hint is True  # type: ignore[union-attr]
        assert hints["run_write_query"].idempotent_hint is False  # type: ignore[union-attr]
        for name in ["run_query", "get_schema", "list_databases", "explain_query"]:
            assert hints[name].read_only_hint is True, name  # type: ignore[union-attr]
        assert hints["use_database"].idempotent_hint is True  # type: ignore[union-attr]
        # Every answer validated by the SDK client against its schema; text == structured.
        for name, arguments in [
            ("list_databases", {}),
            ("use_database", {"name": "acme"}),
            ("run_query", {"query": "MATCH (p:Person) RETURN p.name ORDER BY p.name"}),
            ("get_schema", {}),
            ("explain_query", {"query": "MATCH (p:Person) RETURN p"}),
            ("query_databases", {"query": "RETURN 1 AS one"}),
        ]:
            result = await client.call_tool(name, arguments)
            assert not result.is_error, result
            text = json.loads(result.content[0].text)  # type: ignore[union-attr]
            structured = result.structured_content
            assert structured == (text if isinstance(text, dict) else {"result": text}), name


async def test_cut_rows_stay_consistent(server: tuple[str, Settings]) -> None:
    """The byte budget cuts rows in both forms alike (issue 16 item 4 untouched)."""
    url, settings = server
    client, _ = client_for(url, token(settings, "big", "acme"))
    async with client:
        result = await client.call_tool(
            "run_query",
            {
                "query": "UNWIND range(1, 20000) AS i RETURN i, $pad AS s",
                "params": {"pad": "x" * 300},
            },
        )
    text = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert text["truncated"] is True and text["rows_cut"] > 0 and text["row_count"] > 100
    assert len(text["rows"]) == text["row_count"]
    assert result.structured_content == text
    assert len(result.content[0].text) <= settings.max_result_bytes  # type: ignore[union-attr]


async def test_dialect_in_listing_schema_and_errors(server: tuple[str, Settings]) -> None:
    url, settings = server
    client, _ = client_for(url, token(settings, "dia", "acme", "globex"))
    async with client:
        listed = await tool(client, "list_databases")
        assert {d["dialect"] for d in listed} == {"FalkorDB"}
        schema = await tool(client, "get_schema", database="globex")
        assert schema["dialect"] == "FalkorDB" and "datetime()" in schema["dialect_notes"]
        error = await tool_error(client, "run_query", query="RETURN datetime() AS now")
        assert "Unknown function" in error and "hint: FalkorDB: date()" in error
        error = await tool_error(client, "run_query", query="SHOW INDEXES")
        assert "CALL db.indexes()" in error, error
        # Errors about anything else carry no note.
        error = await tool_error(client, "run_query", query="MATCH (n RETURN n")
        assert "hint:" not in error


# -- explain_query --------------------------------------------------------------------------


async def test_explain_reads_and_writes_with_the_run_tools_rights(
    server: tuple[str, Settings],
) -> None:
    url, settings = server
    reader, _ = client_for(url, token(settings, "reader", "acme"))
    writer, _ = client_for(url, token(settings, "writer", "acme:write"))
    async with reader, writer:
        plan = await tool(
            reader,
            "explain_query",
            query="MATCH (p:Person)-[:WORKS_AT]->(c:Company {name: $c}) RETURN p.name",
            params={"c": "Acme Corp"},
        )
        assert plan["writes"] is False and plan["write_operations"] == []
        assert plan["labels"] == ["Person", "Company"]
        assert plan["relationship_types"] == ["WORKS_AT"]
        assert any("Scan" in step for step in plan["plan"])
        write = "MATCH (p:Person {name: $n}) SET p.title = 'x' CREATE (p)-[:KNOWS]->(:Person)"
        refused = await tool_error(reader, "explain_query", query=write, params={"n": "a"})
        assert "writes_not_allowed" in refused and "read-only access" in refused
        plan = await tool(writer, "explain_query", query=write, params={"n": "a"})
        assert plan["writes"] is True
        assert {"Create", "Update"} <= {op.split()[0] for op in plan["write_operations"]}
        # Nothing ran.
        assert await count_named(writer, "acme", "a") == 0
        # Tenant isolation as strict as run_query: unknown and not-yours alike.
        for name in ["globex", "nope", "GLOBEX"]:
            error = await tool_error(
                reader, "explain_query", query="MATCH (n) RETURN n", database=name
            )
            assert f"Database {name!r} is not available to you" in error
        # Text bounds apply before any database sees the text.
        deep = "RETURN " + "[" * 5000 + "]" * 5000
        assert "query_too_complex" in await tool_error(reader, "explain_query", query=deep)


async def test_explain_output_is_bounded(server: tuple[str, Settings]) -> None:
    url, settings = server
    client, _ = client_for(url, token(settings, "wide", "acme"))
    query = " UNION ALL ".join(
        f"MATCH (n:Person) WHERE n.born > {i} RETURN n.name AS x" for i in range(150)
    )
    async with client:
        plan = await tool(client, "explain_query", query=query)
    assert plan["truncated"] is True and len(plan["plan"]) == 200


async def test_explain_does_not_create_a_graph(server: tuple[str, Settings]) -> None:
    url, settings = server
    client, _ = client_for(url, token(settings, "empty", "empty:write"))
    async with client:
        error = await tool_error(client, "explain_query", query="CREATE (:X)")
        assert "holds no graph yet" in error
        # An empty tenant answers reads as an empty database does...
        answered = await client.call_tool("run_query", {"query": "RETURN 1"})
        assert answered.structured_content["rows"] == [[1]]
        # ...and neither that read nor the plan created its graph.
        error = await tool_error(client, "explain_query", query="CREATE (:X)")
        assert "holds no graph yet" in error


# -- confirmation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("served", "mode"), [("json", "auto"), ("sse", "legacy"), ("sse", "auto")])
@pytest.mark.parametrize("answer", ["accept", "decline", "cancel", "untick"])
async def test_writes_are_confirmed(
    server: tuple[str, Settings],
    sse_server: tuple[str, Settings],
    served: str,
    mode: str,
    answer: str,
) -> None:
    """2026-07-28 clients are asked in an input_required round; handshake-era ones by a
    server request on the call's SSE stream."""
    url, settings = server if served == "json" else sse_server
    name = f"confirm-{uuid.uuid4().hex[:8]}"
    client, asked = client_for(url, token(settings, "w", "globex:write"), mode, answer)
    async with client:
        result = await client.call_tool(
            "run_write_query",
            {"query": "CREATE (:Customer {name: $name})", "params": {"name": name}},
        )
        created = await count_named(client, "globex", name)
    assert len(asked) == 1
    assert "'globex'" in asked[0] and "CREATE (:Customer {name: $name})" in asked[0]
    assert "The plan: Create" in asked[0] and "Labels: Customer" in asked[0]
    text = result.content[0].text  # type: ignore[union-attr]
    if answer == "accept":
        assert not result.is_error, text
        assert json.loads(text)["stats"]["nodes_created"] == 1 and created == 1
    else:
        assert result.is_error and text.startswith("write_not_confirmed:"), text
        assert "nothing ran" in text and created == 0


async def test_always_refuses_a_client_that_cannot_ask(server: tuple[str, Settings]) -> None:
    url, settings = server
    name = f"blind-{uuid.uuid4().hex[:8]}"
    client, _ = client_for(url, token(settings, "blind", "acme:write", "globex:write"))
    async with client:
        error = await tool_error(
            client, "run_write_query", query="CREATE (:Person {name: $n})", params={"n": name}
        )
        assert error.startswith("write_not_confirmed:") and "elicitation" in error
        assert await count_named(client, "acme", name) == 0
        # when_supported: this client cannot ask, so globex's write runs unasked.
        done = await tool(
            client,
            "run_write_query",
            database="globex",
            query="CREATE (:Customer {name: $n})",
            params={"n": name},
        )
        assert done["stats"]["nodes_created"] == 1


async def test_json_answers_cannot_carry_a_question(server: tuple[str, Settings]) -> None:
    """A handshake-era client of a json_response server cannot be asked: said so."""
    url, settings = server
    client, asked = client_for(url, token(settings, "j", "acme:write"), "legacy", "accept")
    async with client:
        error = await tool_error(client, "run_write_query", query="CREATE (:Person {name: 'j'})")
    assert asked == [] and "json_response" in error and "nothing ran" in error


async def test_unanswered_confirmation_times_out(sse_server: tuple[str, Settings]) -> None:
    url, settings = sse_server
    name = f"slow-{uuid.uuid4().hex[:8]}"
    asked: list[str] = []

    async def never(_context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        import anyio

        await anyio.sleep(settings.confirm_timeout + 2)
        return ElicitResult(action="accept", content={"value": True})

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token(settings, 'slow', 'acme:write')}"}, timeout=30
    )
    client = Client(
        streamable_http_client(f"{url}/mcp", http_client=http),  # type: ignore[arg-type]
        mode="legacy",
        elicitation_callback=never,
    )
    async with client:
        error = await tool_error(
            client, "run_write_query", query="CREATE (:Person {name: $n})", params={"n": name}
        )
        assert "no answer" in error and "nothing ran" in error
        assert await count_named(client, "acme", name) == 0


# -- resources and prompts ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_schema_resources_per_caller(server: tuple[str, Settings], mode: str) -> None:
    url, settings = server
    alice, _ = client_for(url, token(settings, "alice", "acme"), mode)
    carol, _ = client_for(url, token(settings, "carol", "acme", "globex"), mode)
    async with alice, carol:
        assert alice.server_capabilities.resources is not None
        assert alice.server_capabilities.prompts is not None
        mine = [str(r.uri) for r in (await alice.list_resources()).resources]
        assert mine == ["graph://acme/schema"]
        theirs = [str(r.uri) for r in (await carol.list_resources()).resources]
        assert theirs == ["graph://acme/schema", "graph://globex/schema"]
        templates = (await alice.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["graph://{tenant}/schema"]
        read = await alice.read_resource("graph://acme/schema")
        schema = json.loads(read.contents[0].text)  # type: ignore[union-attr]
        assert schema["database"] == "acme" and schema["dialect"] == "FalkorDB"
        assert {entry["label"] for entry in schema["node_labels"]} >= {"Person", "Company"}
        answers = []
        for name in ["globex", "nope", "Globex", "acme%2F..%2Fglobex"]:
            with pytest.raises(MCPError) as refused:
                await alice.read_resource(f"graph://{name}/schema")
            answers.append(str(refused.value).replace(unquote(name), "NAME"))
        assert all("is not available to you" in a for a in answers), answers
        assert len(set(answers)) == 1  # unknown and not-yours read the same


async def test_prompts(server: tuple[str, Settings]) -> None:
    url, settings = server
    client, _ = client_for(url, token(settings, "p", "acme"))
    async with client:
        names = {p.name for p in (await client.list_prompts()).prompts}
        assert names == {"explore_database", "safe_update"}
        got = await client.get_prompt("explore_database", {"database": "acme"})
        text = got.messages[0].content.text  # type: ignore[union-attr]
        assert "'acme'" in text and "FalkorDB" in text and "graph://acme/schema" in text
        got = await client.get_prompt("safe_update", {"database": "acme", "change": "rename Bob"})
        assert "explain_query" in got.messages[0].content.text  # type: ignore[union-attr]
        for name in ["globex", "nope"]:
            with pytest.raises(MCPError) as refused:
                await client.get_prompt("explore_database", {"database": name})
            assert "is not available to you" in str(refused.value)


async def test_no_tenants_no_resources(falkordb_service: FalkorDBService, tmp_path: Path) -> None:
    """A caller who may read nothing is offered neither resources nor prompts."""
    options = http_settings(tenants={"acme": "acme_x"}, data_dir=tmp_path, auth="none")
    parts = make_parts(falkordb_service.backend(), **options)
    # The local user has the whole catalog; an empty catalog is the only way to no tenants.
    async with serve_http(parts) as url:
        client = Client(streamable_http_client(f"{url}/mcp"), mode="legacy")  # type: ignore[arg-type]
        async with client:
            assert client.server_capabilities.resources is not None
            listed = [str(r.uri) for r in (await client.list_resources()).resources]
            assert listed == ["graph://acme/schema"]


# -- the TypeScript SDK client --------------------------------------------------------------


@pytest.fixture(scope="session")
def ts_model_side() -> str:
    try:
        npm_install(TS_CLIENT_PROJECT)
    except NodeUnavailable as exc:
        service_unavailable(f"the TypeScript MCP client (node): {exc}")
    return str(TS_CLIENT_PROJECT / "model_side.mjs")


async def run_ts(script: str, url: str, bearer: str, database: str, **options: str) -> Any:
    """What the TypeScript SDK client saw; its own schema validation failing fails the run."""
    args = ["--server", f"{url}/mcp", "--token", bearer, "--database", database]
    for name, value in options.items():
        args += [f"--{name}", value]
    process = await asyncio.create_subprocess_exec(
        "node", script, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert process.returncode == 0 and "failure" not in seen, (seen, err.decode()[-2000:])
    return seen


def check_ts_view(seen: Any, database: str, dialect: str) -> None:
    assert {"prompts", "resources", "tools"} <= set(seen["capabilities"])
    assert seen["tools"]["run_write_query"]["annotations"]["destructiveHint"] is True
    assert seen["tools"]["run_query"]["annotations"]["readOnlyHint"] is True
    assert all(t["hasOutputSchema"] for t in seen["tools"].values())
    for name, call in seen["calls"].items():
        if call["isError"]:
            continue
        text = json.loads(call["text"])
        assert call["structured"] == (text if isinstance(text, dict) else {"result": text}), name
    assert seen["calls"]["list_databases"]["structured"]["result"][0]["dialect"] == dialect
    assert seen["resources"] == [f"graph://{database}/schema"]
    assert seen["templates"] == ["graph://{tenant}/schema"]
    assert seen["schema"]["database"] == database
    assert "is not available to you" in seen["foreignResource"]
    assert seen["prompts"] == ["explore_database", "safe_update"]
    assert dialect in seen["prompt"]


@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_typescript_client(
    sse_server: tuple[str, Settings], ts_model_side: str, answer: str
) -> None:
    url, settings = sse_server
    name = f"ts-{uuid.uuid4().hex[:8]}"
    seen = await run_ts(
        ts_model_side,
        url,
        token(settings, "ts", "globex:write"),
        "globex",
        answer=answer,
        write=f"CREATE (:Customer {{name: '{name}'}})",
    )
    check_ts_view(seen, "globex", "FalkorDB")
    assert len(seen["asked"]) == 1 and name in seen["asked"][0]
    write = seen["calls"]["run_write_query"]
    if answer == "accept":
        assert not write["isError"] and write["structured"]["stats"]["nodes_created"] == 1
    else:
        assert write["isError"] and write["text"].startswith("write_not_confirmed:")
