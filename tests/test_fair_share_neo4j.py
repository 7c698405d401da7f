"""Fair share on Neo4j: one tenant cannot exhaust the Bolt pool (issue 12).

The automatic share on Bolt is half of the driver's pool; a tenant holding
all of it gets ``busy`` while another tenant's calls still find connections.
Both tenants map to Neo4j Community's one database: the share is the tenant's,
whatever database it names.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.mcp_results import tool, tool_error
from tests.services.neo4j import make_backend
from tests.test_fair_share import client_for

pytestmark = pytest.mark.neo4j

POOL = 8
# 25 million rows counted in constant memory: seconds of Neo4j's work per query.
SLOW = "UNWIND range(1, 5000) AS a UNWIND range(1, 5000) AS b RETURN count(*)"


async def test_a_tenant_cannot_take_the_whole_bolt_pool(neo4j_service: Any, tmp_path: Path) -> None:
    parts = make_parts(
        make_backend(neo4j_service, max_connections=POOL),
        **http_settings(
            tenants={"acme": "neo4j", "globex": "neo4j"},
            auth="dev",
            data_dir=tmp_path,
            busy_wait=0.2,
        ),
    )
    share = POOL // 2
    async with serve_http(parts) as url:
        settings = parts.settings
        heavy = [client_for(url, settings, f"a{i}", "acme") for i in range(share + 1)]
        bob = client_for(url, settings, "bob", "globex")
        async with bob, contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(client) for client in heavy]
            slow = [asyncio.create_task(tool(c, "run_query", query=SLOW)) for c in clients[:share]]
            await asyncio.sleep(0.3)
            refused = await tool_error(clients[share], "run_query", query="RETURN 1")
            assert not any(task.done() for task in slow)
            assert refused.startswith(f"busy: Database 'acme' already has {share} queries")
            assert (await tool(bob, "run_query", query="RETURN 2 AS two"))["rows"] == [[2]]
            for answer in await asyncio.gather(*slow):
                assert answer["rows"] == [[25_000_000]]
