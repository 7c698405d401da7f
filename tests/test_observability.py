"""What operators see: the audit trail, metrics, request ids, limits."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import httpx
import httpx2
import pytest
from fastmcp import Client as FastMCPClient
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from graphgate.auth.dev import mint_dev_token
from graphgate.backends.base import QueryLimits
from graphgate.errors import RateLimited
from graphgate.ratelimit import RateLimiter
from graphgate.server import build_server
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import METRICS_HEADERS, http_settings, make_parts, serve_http


async def seeded_catalog(falkordb_service: FalkorDBService) -> dict[str, str]:
    catalog = {"acme": f"obs_{uuid.uuid4().hex[:8]}"}
    backend = falkordb_service.backend()
    await backend.start()
    await backend.write(
        catalog["acme"],
        "UNWIND range(1, 50) AS i CREATE (:Row {i: i, pad: "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'})",
        None,
        QueryLimits(),
    )
    await backend.close()
    return catalog


async def test_audit_trail_lines(falkordb_service: FalkorDBService, tmp_path: Path) -> None:
    catalog = await seeded_catalog(falkordb_service)
    audit = tmp_path / "audit" / "audit.log"
    parts = make_parts(
        falkordb_service.backend(), tenants=catalog, data_dir=tmp_path, audit_log=str(audit)
    )
    async with FastMCPClient(build_server(parts)) as client:
        await client.call_tool("run_query", {"query": "MATCH (r:Row) RETURN r.i LIMIT 3"})
        await client.call_tool("run_query", {"query": "BROKEN"}, raise_on_error=False)
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [line["outcome"] for line in lines] == ["ok", "query_error"]
    first = lines[0]
    assert first["tool"] == "run_query" and first["databases"] == ["acme"]
    assert first["subject"] == "local" and first["rows"] == 3
    assert first["query"] == "MATCH (r:Row) RETURN r.i LIMIT 3"
    assert len(first["query_sha256"]) == 64 and first["duration_ms"] >= 0
    assert "error" in lines[1]


async def test_audit_without_query_text(
    falkordb_service: FalkorDBService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No query text anywhere, not even quoted back by the database's error message."""
    catalog = await seeded_catalog(falkordb_service)
    audit = tmp_path / "audit.log"
    options = http_settings(
        tenants=catalog, data_dir=tmp_path, audit_log=str(audit), audit_query_text=False
    )
    parts = make_parts(falkordb_service.backend(), **options)
    caplog.set_level(logging.DEBUG)
    secret = "SSN-111-22-3333"
    async with serve_http(parts) as url:
        http = httpx2.AsyncClient(timeout=30)
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            await client.call_tool("run_query", {"query": "MATCH (r:Row) RETURN count(r)"})
            broken = await client.call_tool(
                "run_query", {"query": f"MATCH (r:Row) WHERE r.x = '{secret}' RETURN r.(("}
            )
            assert broken.is_error  # the caller still sees the database's message
        async with httpx.AsyncClient(base_url=url) as plain:
            metrics = (await plain.get("/metrics", headers=METRICS_HEADERS)).text
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert "query" not in lines[0] and "count(r)" not in audit.read_text()
    assert len(lines[0]["query_sha256"]) == 64
    assert lines[1]["outcome"] == "query_error" and "error" not in lines[1]
    assert secret not in audit.read_text()
    assert secret not in metrics
    # graphgate's own lines at any level, everyone's from info up (the SDK's
    # debug lines echo whole requests, which is what debug is for).
    logged = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("graphgate") or record.levelno >= logging.INFO
    ]
    assert not [line for line in logged if secret in line]


async def test_result_byte_cap_keeps_valid_json(
    falkordb_service: FalkorDBService, tmp_path: Path
) -> None:
    catalog = await seeded_catalog(falkordb_service)
    parts = make_parts(
        falkordb_service.backend(), tenants=catalog, data_dir=tmp_path, max_result_bytes=2048
    )
    async with FastMCPClient(build_server(parts)) as client:
        result = await client.call_tool("run_query", {"query": "MATCH (r:Row) RETURN r"})
    text = result.content[0].text  # type: ignore[union-attr]
    answer = json.loads(text)
    assert len(text.encode()) <= 2048
    assert answer["truncated"] is True and 0 < answer["row_count"] < 50
    assert answer["row_count"] == len(answer["rows"])


async def test_rate_limit_is_a_tool_error_with_retry_hint(
    falkordb_service: FalkorDBService, tmp_path: Path
) -> None:
    catalog = await seeded_catalog(falkordb_service)
    parts = make_parts(falkordb_service.backend(), tenants=catalog, data_dir=tmp_path, rate_limit=2)
    async with FastMCPClient(build_server(parts)) as client:
        for _ in range(2):
            assert not (await client.call_tool("list_databases", {})).is_error
        refused = await client.call_tool("list_databases", {}, raise_on_error=False)
    assert refused.is_error
    assert "retry in" in refused.content[0].text  # type: ignore[union-attr]


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(per_minute=60)
    for _ in range(60):
        limiter.check("alice", now=0.0)
    with pytest.raises(RateLimited) as info:
        limiter.check("alice", now=0.0)
    assert 0 < info.value.retry_after <= 1.0
    limiter.check("bob", now=0.0)  # budgets are per subject
    limiter.check("alice", now=1.01)  # one second refills one call


def test_rate_limiter_forgets_the_least_recent_beyond_its_bound() -> None:
    limiter = RateLimiter(per_minute=1, max_subjects=10)
    for index in range(100):
        limiter.check(f"user{index}", now=0.0)
    limiter.check("user0", now=0.0)  # forgotten: a full bucket again, which errs on serving
    with pytest.raises(RateLimited):
        limiter.check("user99", now=0.0)  # among the ten most recent: still spent


async def test_metrics_request_ids_and_no_token_in_logs(
    falkordb_service: FalkorDBService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = await seeded_catalog(falkordb_service)
    audit = tmp_path / "audit.log"
    options = http_settings(
        tenants=catalog, auth="dev", data_dir=tmp_path, audit_log=str(audit), metrics_token="s3cret"
    )
    parts = make_parts(falkordb_service.backend(), **options)
    settings = parts.settings
    bearer = mint_dev_token(settings, sub="alice", tenants=["acme"], admin=False, ttl=600)
    caplog.set_level(logging.DEBUG)
    async with serve_http(parts) as url:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            await client.call_tool("run_query", {"query": "MATCH (r:Row) RETURN count(r)"})
        async with httpx.AsyncClient(base_url=url) as plain:
            refused = await plain.post("/mcp", json={}, headers={"authorization": "Bearer nope"})
            assert refused.status_code == 401
            assert len(refused.headers["x-request-id"]) >= 16
            echoed = await plain.get("/healthz", headers={"x-request-id": "abc-123"})
            assert echoed.headers["x-request-id"] == "abc-123"
            injected = await plain.get("/healthz", headers={"x-request-id": 'a"b c'})
            assert injected.headers["x-request-id"] != 'a"b c'
            assert (await plain.get("/metrics")).status_code == 401
            metrics = await plain.get("/metrics", headers={"authorization": "Bearer s3cret"})
    text = metrics.text
    assert 'graphgate_tool_calls_total{outcome="ok",tenant="acme",tool="run_query"} 1.0' in text
    assert "graphgate_auth_failures_total" in text
    assert "graphgate_tool_call_seconds_bucket" in text
    assert "graphgate_jwks_refreshes_total 0.0" in text  # dev mode: local keys, no fetches
    assert bearer not in text
    assert bearer not in audit.read_text()
    assert bearer not in caplog.text
    assert json.loads(audit.read_text().splitlines()[0])["request_id"]
