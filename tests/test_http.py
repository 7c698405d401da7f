"""The streamable HTTP transport through the `mcp` SDK client, with dev-issuer tokens.

Several users and tenants at once over real HTTP on loopback; isolation between
them, sessions and their ids, DNS-rebinding protection and the open endpoints.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from graphgate.auth.dev import mint_dev_token
from graphgate.config import Settings
from graphgate.server import Parts
from tests.services.falkordb import FalkorDBService, seed_tagged_tenants
from tests.services.graphgate import METRICS_HEADERS, http_settings, make_parts, serve_http
from tests.services.mcp_results import tool, tool_error


async def seeded_parts(
    falkordb_service: FalkorDBService, data_dir: Path, tenants: list[str], **settings: Any
) -> Parts:
    """Dev-issuer parts over fresh graphs, one per tenant, each tagged with its tenant."""
    suffix = uuid.uuid4().hex[:6]
    catalog = {tenant: f"{tenant}_{suffix}" for tenant in tenants}
    await seed_tagged_tenants(falkordb_service, catalog)
    options = http_settings(tenants=catalog, auth="dev", data_dir=data_dir, **settings)
    return make_parts(falkordb_service.backend(), **options)


@pytest_asyncio.fixture(loop_scope="session")
async def server(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Settings]]:
    data_dir = tmp_path_factory.mktemp("http")
    tenants = ["acme", "globex", "initech"]
    parts = await seeded_parts(falkordb_service, data_dir, tenants, allow_writes=True)
    async with serve_http(parts) as url:
        yield url, parts.settings


def token(settings: Settings, sub: str, *tenants: str, admin: bool = False) -> str:
    return mint_dev_token(settings, sub=sub, tenants=list(tenants), admin=admin, ttl=600)


def client_for(url: str, bearer: str, mode: str = "auto") -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
    return Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_users_see_only_their_tenant(server: tuple[str, Settings], mode: str) -> None:
    url, settings = server
    alice = client_for(url, token(settings, "alice", "acme"), mode)
    bob = client_for(url, token(settings, "bob", "globex"), mode)
    root = client_for(url, token(settings, "root", admin=True), mode)
    async with alice, bob, root:
        a, b, r = await asyncio.gather(
            tool(alice, "run_query", query="MATCH (t:Tag) RETURN t.tenant"),
            tool(bob, "run_query", query="MATCH (t:Tag) RETURN t.tenant"),
            tool(root, "query_databases", query="MATCH (t:Tag) RETURN t.tenant"),
        )
        assert a["rows"] == [["acme"]] and a["database"] == "acme"
        assert b["rows"] == [["globex"]]
        assert {db: res["rows"] for db, res in r["results"].items()} == {
            "acme": [["acme"]],
            "globex": [["globex"]],
            "initech": [["initech"]],
        }
        assert [d["name"] for d in await tool(alice, "list_databases")] == ["acme"]
        for name in ["globex", "GLOBEX", "globex ", "glоbex", "acme/../globex", "*"]:
            assert "not available to you" in await tool_error(
                alice, "run_query", query="MATCH (t:Tag) RETURN t", database=name
            )
        assert "not available" in await tool_error(alice, "use_database", name="globex")
        # Query text cannot name another tenant's graph: FalkorDB has no
        # cross-graph syntax, and graph-level statements are not Cypher.
        for text in [
            "USE globex MATCH (t:Tag) RETURN t.tenant",
            f"USE {settings.catalog['globex']} MATCH (t:Tag) RETURN t.tenant",
            "GRAPH.QUERY globex 'MATCH (t) RETURN t'",
            "MATCH (t:Tag) RETURN t.tenant // globex",
            "CALL db.labels() YIELD label RETURN label",
        ]:
            result = await alice.call_tool("run_query", {"query": text})
            body = result.content[0].text  # type: ignore[union-attr]
            if not result.is_error:
                rows = json.dumps(json.loads(body)["rows"])
                assert "globex" not in rows and "initech" not in rows, body
        assert "not available" in await tool_error(
            alice, "query_databases", query="RETURN 1", databases=["globex"]
        )


async def test_use_database_sticks_per_user_in_session_protocol(
    server: tuple[str, Settings],
) -> None:
    url, settings = server
    carol = client_for(url, token(settings, "carol", "acme", "globex"), "legacy")
    async with carol:
        assert await tool(carol, "use_database", name="globex") == {"current": "globex"}
        result = await tool(carol, "run_query", query="MATCH (t:Tag) RETURN t.tenant")
        assert result["rows"] == [["globex"]]


async def test_use_database_sticks_without_sessions(server: tuple[str, Settings]) -> None:
    """Protocol 2026-07-28: every request stands alone; the choice is keyed per user."""
    url, settings = server
    dave = client_for(url, token(settings, "dave", "acme", "globex"), "auto")
    async with dave:
        await tool(dave, "use_database", name="globex")
        assert (await tool(dave, "run_query", query="MATCH (t:Tag) RETURN t.tenant"))["rows"] == [
            ["globex"]
        ]
    other = client_for(url, token(settings, "erin", "acme", "globex"), "auto")
    async with other:
        assert (await tool(other, "run_query", query="MATCH (t:Tag) RETURN t.tenant"))["rows"] == [
            ["acme"]
        ]


async def test_someone_elses_session_id_gives_nothing(server: tuple[str, Settings]) -> None:
    url, settings = server
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        alice = {
            **headers,
            "authorization": f"Bearer {token(settings, 'alice2', 'acme', 'globex')}",
        }
        response = await http.post("/mcp", json=init, headers=alice)
        session = response.headers["mcp-session-id"]
        alice["mcp-session-id"] = session
        await http.post(
            "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=alice
        )
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "use_database", "arguments": {"name": "globex"}},
        }
        assert (await http.post("/mcp", json=call, headers=alice)).status_code == 200
        mallory = {
            **headers,
            "mcp-session-id": session,
            "authorization": f"Bearer {token(settings, 'mallory', 'acme', 'globex')}",
        }
        query = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {
                "name": "run_query",
                "arguments": {"query": "MATCH (t:Tag) RETURN t.tenant"},
            },
        }
        response = await http.post("/mcp", json=query, headers=mallory)
        if response.status_code == 200:
            body = response.json()
            assert "globex" not in json.dumps(body), body
        else:
            assert response.status_code in {400, 401, 403, 404}


async def test_open_endpoints_and_dns_rebinding(server: tuple[str, Settings]) -> None:
    url, settings = server
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert (await http.get("/metrics", headers=METRICS_HEADERS)).status_code == 200
        assert (await http.get("/metrics")).status_code == 401  # sign-in on: its own secret
        bearer = {
            "authorization": f"Bearer {token(settings, 'alice', 'acme')}",
            "accept": "application/json, text/event-stream",
        }
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        evil_host = await http.post("/mcp", json=body, headers={**bearer, "host": "evil.example"})
        assert evil_host.status_code in {400, 403, 421}
        evil_origin = await http.post(
            "/mcp", json=body, headers={**bearer, "origin": "http://evil.example"}
        )
        assert evil_origin.status_code in {400, 403}


async def test_no_token_is_401_with_challenge(server: tuple[str, Settings]) -> None:
    url, settings = server
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert (
        f'resource_metadata="{settings.public_url}/.well-known/oauth-protected-resource/mcp"'
        in challenge
    )
    assert "error=" not in challenge


async def test_writes_need_write_right(server: tuple[str, Settings]) -> None:
    url, settings = server
    reader = client_for(url, token(settings, "r", "acme"))
    writer = client_for(url, token(settings, "w", "acme:write"))
    async with reader, writer:
        assert "read-only access" in await tool_error(
            reader, "run_write_query", query="CREATE (:X)"
        )
        created = await tool(writer, "run_write_query", query="CREATE (:Y) RETURN 1")
        assert created["stats"]["nodes_created"] == 1
        await tool(writer, "run_write_query", query="MATCH (y:Y) DELETE y")


async def test_refreshed_token_with_fewer_rights_applies_at_once(
    server: tuple[str, Settings], tmp_path: Path
) -> None:
    url, settings = server
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        headers = {"accept": "application/json, text/event-stream"}
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        first = {**headers, "authorization": f"Bearer {token(settings, 'fay', 'acme', 'globex')}"}
        response = await http.post("/mcp", json=init, headers=first)
        session = response.headers["mcp-session-id"]
        later = {
            **headers,
            "mcp-session-id": session,
            "authorization": f"Bearer {token(settings, 'fay', 'acme')}",
        }
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {
                "name": "run_query",
                "arguments": {"query": "RETURN 1", "database": "globex"},
            },
        }
        response = await http.post("/mcp", json=call, headers=later)
        assert response.status_code == 200
        assert response.json()["result"]["isError"] is True


async def test_paths_answer_ip_hosts_but_no_foreign_name(server: tuple[str, Settings]) -> None:
    """Kubelet probes and Prometheus send the pod IP as Host; a name must be graphgate's.

    DNS rebinding needs a name, so an IP-literal Host is admitted on every path
    (its Origin still checked); a foreign name is refused on the open paths too.
    """
    url, _ = server
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            response = await http.get(path, headers={"host": "10.1.2.3:8000", **METRICS_HEADERS})
            assert response.status_code == 200, path
            rebound = await http.get(path, headers={"host": "rebind.evil.example:8000"})
            assert rebound.status_code == 421, path
            assert "tenant" not in rebound.text and "127.0.0.1" not in rebound.text
            foreign = await http.get(
                path, headers={"host": "10.1.2.3:8000", "origin": "http://evil.example"}
            )
            assert foreign.status_code == 403, path
        by_address = await http.post("/mcp", json={}, headers={"host": "10.1.2.3:8000"})
        assert by_address.status_code == 401  # past the guard, at the bearer gate
        guarded = await http.post("/mcp", json={}, headers={"host": "rebind.evil.example"})
        assert guarded.status_code == 421


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_query_databases_progress_reaches_the_client(
    falkordb_service: FalkorDBService,
    tmp_path_factory: pytest.TempPathFactory,
    mode: str,
) -> None:
    """Progress notifications over HTTP, which needs a response stream (SSE), not JSON."""
    data_dir = tmp_path_factory.mktemp("progress")
    parts = await seeded_parts(falkordb_service, data_dir, ["acme", "globex"], json_response=False)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    admin = token(parts.settings, "root", admin=True)
    async with serve_http(parts) as url, client_for(url, admin, mode) as root:
        result = await root.call_tool(
            "query_databases",
            {"query": "MATCH (t:Tag) RETURN t.tenant"},
            progress_callback=on_progress,
        )
    assert not result.is_error
    answer = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert set(answer["results"]) == {"acme", "globex"}
    assert sorted(progress for progress, _, _ in seen) == [1, 2]
    assert {message for _, _, message in seen} == {"acme done", "globex done"}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_what_is_advertised(server: tuple[str, Settings], mode: str) -> None:
    """Tools, and the caller's schema resources and prompts (issue 17): nothing unused
    such as completions or logging (issue 16)."""
    url, settings = server
    async with client_for(url, token(settings, "caps", "acme"), mode) as client:
        capabilities = client.server_capabilities
    assert capabilities.tools is not None
    assert capabilities.prompts is not None and capabilities.resources is not None
    assert capabilities.completions is None
