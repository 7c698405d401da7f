"""Issue 12 on Neo4j as a client sees it: real MCP clients, real HTTP, the production assembly.

graphgate is built from its settings (``build_parts(Settings(backend="bolt://..."))``,
then ``build_http_app``) against the shared Neo4j test server, which runs with
per-transaction memory limits. Community has one user database, so the two
tenants map to it; what is under test is that one tenant's hostile call ends
in a clear tool error while the other's calls keep working.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr
from scripts.neo4j_server import Neo4jInstance

from graphgate.auth.dev import mint_dev_token
from graphgate.config import Settings
from graphgate.server import build_parts
from tests.services.graphgate import http_settings, serve_http
from tests.services.mcp_results import tool, tool_error

pytestmark = pytest.mark.neo4j

MEMORY_BOMB = "UNWIND range(1, 20000000) AS x WITH collect(x) AS c RETURN size(c) AS n"
SPIN = "UNWIND range(1, 1000000000) AS a WITH a WHERE a < 0"


@pytest_asyncio.fixture(loop_scope="session")
async def graphgate(
    neo4j_service: Neo4jInstance, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Settings]]:
    settings = Settings(
        **http_settings(
            backend=neo4j_service.uri,
            backend_user=neo4j_service.user,
            backend_password=SecretStr(neo4j_service.password),
            tenants={"acme": "neo4j", "globex": "neo4j"},
            auth="dev",
            data_dir=tmp_path_factory.mktemp("bolt-http"),
            allow_writes=True,
            query_timeout=2,
        )
    )
    parts = build_parts(settings)
    async with serve_http(parts) as url:
        yield url, settings


def client_for(url: str, settings: Settings, sub: str, tenant: str) -> Client:
    bearer = mint_dev_token(settings, sub=sub, tenants=[tenant], admin=False, ttl=600)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=60)
    return Client(streamable_http_client(f"{url}/mcp", http_client=http))  # type: ignore[arg-type]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


async def test_a_memory_bomb_is_a_clear_error_and_the_other_tenant_keeps_working(
    graphgate: tuple[str, Settings],
) -> None:
    url, settings = graphgate
    async with (
        client_for(url, settings, "mallory", "acme") as attacker,
        client_for(url, settings, "bob", "globex") as other,
    ):

        async def bomb() -> str:
            return await tool_error(attacker, "run_query", query=MEMORY_BOMB)

        async def point_reads() -> list[object]:
            return [
                (await tool(other, "run_query", query="RETURN 1 AS one"))["rows"] for _ in range(5)
            ]

        refused, answers = await asyncio.gather(bomb(), point_reads())
        assert refused.startswith("memory_limit:"), refused
        assert "LIMIT" in refused and "Traceback" not in refused
        assert answers == [[[1]]] * 5
        assert (await tool(other, "run_query", query="RETURN 2 AS two"))["rows"] == [[2]]


async def test_long_calls_are_timeouts_and_a_timed_out_write_says_it_was_rolled_back(
    graphgate: tuple[str, Settings],
) -> None:
    url, settings = graphgate
    async with client_for(url, settings, "mallory", "acme:write") as attacker:
        read = await tool_error(attacker, "run_query", query=f"{SPIN} RETURN count(*) AS c")
        assert read.startswith("timeout:") and "server stopped it" in read, read
        write = await tool_error(
            attacker,
            "run_write_query",
            query=f"CREATE (:HttpNever) WITH 1 AS one {SPIN} RETURN count(*) AS c",
        )
        assert write.startswith("timeout:") and "rolled it back" in write, write
        left = await tool(attacker, "run_query", query="MATCH (n:HttpNever) RETURN count(n) AS c")
        assert left["rows"] == [[0]]


async def test_one_huge_value_is_a_bounded_truncated_answer(
    graphgate: tuple[str, Settings],
) -> None:
    url, settings = graphgate
    async with client_for(url, settings, "mallory", "acme:write") as attacker:
        Path("/proc/self/clear_refs").write_text("5")  # a new peak-RSS measurement
        before = peak_rss_mb()
        answer = await tool(attacker, "run_query", query="RETURN range(1, 5000000) AS r")
        grown = peak_rss_mb() - before
    assert answer["truncated"] is True and answer["rows"] == []
    assert grown < 400, f"graphgate grew by {grown:.0f} MB"
