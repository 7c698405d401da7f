"""The adversarial review's hostile requests, kept as regression tests.

Each runs against the production assembly (`build_parts` + `build_http_app`,
the real tools, the dev issuer's tokens) over real HTTP on loopback. Every
attempt must end in a clean refusal: an MCP tool error, a JSON-RPC error or
the right HTTP status; never a 500, never another tenant's data, and the
server keeps serving afterwards.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from graphgate.auth.dev import mint_dev_token
from graphgate.config import Settings
from tests.services.falkordb import FalkorDBService, seed_tagged_tenants
from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.raw_mcp import tool_call_body, tool_call_headers

# Names that must never reach another tenant's data: case, spacing, look-alikes,
# paths, wildcards, the physical name, control characters, overlong ones.
FOREIGN_NAMES = [
    "globex",
    "GLOBEX",
    "Globex",
    "globex ",
    " globex",
    "globex\t",
    "glоbex",  # Cyrillic o
    "globex\u200b",
    "ｇｌｏｂｅｘ",  # full width
    "acme/../globex",
    "../globex",
    "acme,globex",
    "acme globex",
    "*",
    "%",
    "globex%00",
    "globex\x00",
    "system",
    "neo4j",
    "default",
    "",
    "g" * 300,
    "acme:write",
    "globex:read",
]


@pytest_asyncio.fixture(loop_scope="session")
async def hostile_server(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Settings, dict[str, str]]]:
    suffix = uuid.uuid4().hex[:6]
    catalog = {tenant: f"{tenant}_{suffix}" for tenant in ("acme", "globex")}
    await seed_tagged_tenants(falkordb_service, catalog)
    options = http_settings(
        tenants=catalog,
        auth="dev",
        data_dir=tmp_path_factory.mktemp("hostile-http"),
        allow_writes=True,
    )
    parts = make_parts(falkordb_service.backend(), **options)
    async with serve_http(parts) as url:
        yield url, parts.settings, catalog


def bearer(settings: Settings, sub: str, *tenants: str) -> dict[str, str]:
    """Headers of a client speaking the default (sessionless) protocol as ``sub``."""
    value = mint_dev_token(settings, sub=sub, tenants=list(tenants), admin=False, ttl=600)
    headers = {"authorization": f"Bearer {value}", **tool_call_headers("")}
    del headers["mcp-name"]  # named per call, by tool_answer
    return headers


async def tool_answer(http: httpx.AsyncClient, headers: dict[str, str], body: Any) -> Any:
    headers = {**headers, "mcp-name": body["params"]["name"]}
    response = await http.post("/mcp", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def still_serving(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    body = await tool_answer(
        http, headers, tool_call_body("run_query", {"query": "RETURN 1 AS one"})
    )
    assert body["result"]["isError"] is False, body


def arguments_naming(tool: str, name: str) -> dict[str, Any]:
    query = "MATCH (t:Tag) RETURN t.tenant"
    if tool == "use_database":
        return {"name": name}
    if tool == "query_databases":
        return {"query": query, "databases": [name]}
    if tool == "get_schema":
        return {"database": name}
    if tool == "run_write_query":
        return {"query": "CREATE (:Leak {by: 'mallory'}) RETURN 1", "database": name}
    return {"query": query, "database": name}


@pytest.mark.parametrize(
    "tool", ["run_query", "run_write_query", "get_schema", "use_database", "query_databases"]
)
async def test_no_database_name_form_reaches_another_tenant(
    hostile_server: tuple[str, Settings, dict[str, str]], tool: str
) -> None:
    url, settings, catalog = hostile_server
    names = [*FOREIGN_NAMES, catalog["globex"], catalog["acme"]]
    headers = bearer(settings, "mallory", "acme:write")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for name in names:
            body = await tool_answer(
                http, headers, tool_call_body(tool, arguments_naming(tool, name))
            )
            result = body["result"]
            if tool != "query_databases" or result["isError"]:
                assert result["isError"] is True, (name, body)
                continue
            # Fanned out: only mallory's own tenant answers with rows ("*" means hers).
            answers = json.loads(result["content"][0]["text"])["results"]
            for tenant, answer in answers.items():
                assert "error" in answer or (tenant, answer["rows"]) == ("acme", [["acme"]])
        await still_serving(http, headers)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("CREATE (:Leak)", "read_only"),
        ("MATCH (t:Tag) SET t.tenant = 'x'", "read_only"),
        ("MATCH (t:Tag) DETACH DELETE t", "read_only"),
        ("MERGE (:Leak {a: 1})", "read_only"),
        ("CREATE INDEX FOR (n:Leak) ON (n.a)", "read_only"),
        ("LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row", "query_refused"),
        ("LOAD CSV FROM 'http://127.0.0.1:1/x.csv' AS row RETURN row", "query_refused"),
        ("CALL { CREATE (:Leak) } RETURN 1", "read_only"),
    ],
)
async def test_run_query_neither_writes_nor_reads_files(
    hostile_server: tuple[str, Settings, dict[str, str]], query: str, expected: str
) -> None:
    url, settings, _ = hostile_server
    headers = bearer(settings, "mallory", "acme:write")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        body = await tool_answer(http, headers, tool_call_body("run_query", {"query": query}))
        assert body["result"]["isError"] is True
        assert body["result"]["content"][0]["text"].startswith(expected), body
        count = await tool_answer(
            http, headers, tool_call_body("run_query", {"query": "MATCH (n:Leak) RETURN count(n)"})
        )
        assert json.loads(count["result"]["content"][0]["text"])["rows"] == [[0]]


@pytest.mark.parametrize(
    "extra",
    [
        {"host": "evil.example"},
        {"host": "127.0.0.1.evil.example"},
        {"host": "localhost.evil.example:8000"},
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1.evil.example"},
    ],
)
async def test_host_and_origin_tricks_are_refused(
    hostile_server: tuple[str, Settings, dict[str, str]], extra: dict[str, str]
) -> None:
    url, settings, _ = hostile_server
    headers = {**bearer(settings, "alice", "acme"), **extra}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.post(
            "/mcp", json=tool_call_body("list_databases", {}), headers=headers
        )
        assert response.status_code in {400, 403, 421}, response.text
        assert "acme" not in response.text


async def test_malformed_bodies_are_refused_cleanly(
    hostile_server: tuple[str, Settings, dict[str, str]],
) -> None:
    url, settings, _ = hostile_server
    headers = {**bearer(settings, "alice", "acme"), "content-type": "application/json"}
    deep = "[" * 100_000 + "]" * 100_000
    deep_params = (
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run_query",'
        '"arguments":{"query":"RETURN 1","params":{"x":' + deep + "}}}}"
    )
    batch = json.dumps([tool_call_body("list_databases", {}, i) for i in range(10_000)])
    bodies: list[bytes] = [
        deep.encode(),
        deep_params.encode(),
        batch.encode(),
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\xff\xfe"}}',
        b"\xff\xfe\xfd",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run_query",'
        b'"arguments":{"query":"RETURN \\ud800"}}}',
        b"",
        b"null",
        b'"just a string"',
    ]
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for content in bodies:
            response = await http.post("/mcp", content=content, headers=headers)
            assert response.status_code < 500, (content[:40], response.status_code)
            assert "Traceback" not in response.text
            if response.status_code == 200:
                assert "error" in response.text
        await still_serving(http, bearer(settings, "alice", "acme"))


async def test_a_huge_body_is_refused_without_being_kept(
    hostile_server: tuple[str, Settings, dict[str, str]],
) -> None:
    url, settings, _ = hostile_server
    headers = {**bearer(settings, "alice", "acme"), "content-type": "application/json"}
    chunk = b" " * (1024 * 1024)

    async def hundred_megabytes() -> AsyncIterator[bytes]:
        yield b'{"jsonrpc":"2.0","id":1,"method":"ping","padding":"'
        for _ in range(100):
            yield chunk
        yield b'"}'

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        try:
            response = await http.post("/mcp", content=hundred_megabytes(), headers=headers)
        except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
            pass  # the server stopped reading and closed: refused without keeping it
        else:
            assert response.status_code == 413, response.status_code
        await still_serving(http, bearer(settings, "alice", "acme"))


async def test_many_concurrent_connections_are_each_answered(
    hostile_server: tuple[str, Settings, dict[str, str]],
) -> None:
    url, settings, _ = hostile_server
    headers = {**bearer(settings, "alice", "acme"), "mcp-name": "list_databases"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)

    async def one(http: httpx.AsyncClient) -> int:
        response = await http.post(
            "/mcp", json=tool_call_body("list_databases", {}), headers=headers
        )
        return response.status_code

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        statuses = await asyncio.gather(*(one(http) for _ in range(500)))
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        assert statuses.count(200) >= 1
        await still_serving(http, headers)


@pytest.mark.parametrize(
    ("tool", "arguments", "names"),
    [
        ("run_query", {}, ["query"]),
        ("run_query", {"query": 5}, ["query"]),
        ("run_query", {"query": "RETURN 1", "params": "x"}, ["params"]),
        ("run_query", {"query": "x" * 100_001}, ["query"]),
        ("use_database", {"name": ["acme"]}, ["name"]),
        ("query_databases", {"query": "RETURN 1", "databases": "acme"}, ["databases"]),
    ],
)
async def test_argument_errors_name_the_argument_and_nothing_else(
    hostile_server: tuple[str, Settings, dict[str, str]],
    tool: str,
    arguments: dict[str, Any],
    names: list[str],
) -> None:
    url, settings, _ = hostile_server
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        body = await tool_answer(
            http, bearer(settings, "alice", "acme"), tool_call_body(tool, arguments)
        )
    result = body.get("result") or {}
    text = result["content"][0]["text"] if result else json.dumps(body["error"])
    assert result.get("isError", True), body
    assert "http" not in text and "pydantic" not in text, text
    assert "x" * 200 not in text  # the input is not echoed back
    for name in names:
        assert name in text, text


async def test_an_unknown_tool_is_a_json_rpc_error(
    hostile_server: tuple[str, Settings, dict[str, str]],
) -> None:
    """The MCP spec: calling a tool that does not exist is a protocol error (-32602)."""
    url, settings, _ = hostile_server
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for name in ["no_such_tool", "run_write_query_", "RUN_QUERY", ""]:
            headers = {**bearer(settings, "alice", "acme"), "mcp-name": name}
            response = await http.post("/mcp", json=tool_call_body(name, {}), headers=headers)
            assert response.status_code in {200, 400}, response.text
            body = response.json()
            assert "result" not in body, body
            assert body["error"]["code"] == -32602, body
            assert name in body["error"]["message"] or not name
