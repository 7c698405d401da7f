"""The live catalog under attack, with real servers: the embedded FalkorDB and a FalkorDB server.

One graphgate (in process, over real HTTP) serves ``default`` (embedded) and
``ext`` (the session's FalkorDB server, with discovery). Its settings file is
rewritten, broken, deleted, looped, inflated and nested while MCP clients
call; each time the catalog in force stays or the newest valid file wins,
one log line says why, and calls to tenants that stay never fail. Also here:
a token naming only a database created after start is served at once
(the gate asks discovery), a hostile burst of such tokens costs one look,
and a backend that leaves the catalog is closed as soon as its calls return.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from graphgate.auth.dev import mint_dev_token
from graphgate.backends.base import QueryLimits
from graphgate.catalog_watch import MAX_SETTINGS_BYTES, SettingsSource
from graphgate.config import Settings, load_settings
from graphgate.server import build_parts
from tests.services._common import eventually as eventually_within
from tests.services._common import free_port
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import METRICS_HEADERS, METRICS_TOKEN, serve_http
from tests.services.mcp_results import tool, tool_error

RELOAD_BOUND = 3.0
"""Seconds within which a valid file is in force (polled twice a second; a slow CI)."""


@dataclass
class Gateway:
    url: str
    settings: Settings
    path: Path
    base: str
    prefix: str
    service: FalkorDBService

    def token(self, *tenants: str) -> str:
        return mint_dev_token(
            self.settings,
            sub=f"u-{uuid.uuid4().hex[:6]}",
            tenants=list(tenants),
            admin=False,
            ttl=600,
        )

    def write(self, tenants: str, extra: str = "") -> None:
        """Replace the file atomically (a new inode), as configuration tools do."""
        staging = self.path.with_name(f".graphgate.toml.{uuid.uuid4().hex[:6]}")
        staging.write_text(f"{self.base}{extra}\n[tenants]\n{tenants}\n")
        os.replace(staging, self.path)

    async def metrics(self) -> str:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            return (await http.get("/metrics", headers=METRICS_HEADERS)).text


MOVER_GRAPH = f"mover{uuid.uuid4().hex[:6]}"
"""``mover``'s graph on the FalkorDB server (outside the discovery prefix)."""


def tenants(mover_on: str = "default", *more: str) -> str:
    """The base catalog: ``acme`` and ``stays`` never change; ``mover`` goes back and forth."""
    mover = (
        '"mover"' if mover_on == "default" else f'{{ backend = "ext", database = "{MOVER_GRAPH}" }}'
    )
    lines = ['acme = "acme"', 'stays = "stays"', f"mover = {mover}", *more]
    return "\n".join(lines)


@pytest_asyncio.fixture(scope="module")
async def gateway(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    root = tmp_path_factory.mktemp("hostile")
    secret = root / "ext-password"
    secret.write_text(f"{falkordb_service.password or ''}\n")
    prefix = f"hst{uuid.uuid4().hex[:6]}_"
    base = f"""\
host = "127.0.0.1"
port = {free_port()}
auth = "dev"
data_dir = "{root / "data"}"
allow_writes = true
metrics_token = "{METRICS_TOKEN}"
embedded_memory_mb = 256

[backends.default]
url = "embedded"

[backends.ext]
url = "{falkordb_service.url}"
password_file = "{secret}"
discover = true
discover_prefix = "{prefix}"
discover_interval = 3600
"""
    path = root / "graphgate.toml"
    path.write_text(f"{base}\n[tenants]\n{tenants()}\n")
    settings = load_settings(path)
    gateway = Gateway("", settings, path, base, prefix, falkordb_service)
    parts = build_parts(settings, SettingsSource(path))
    external = falkordb_service.backend()
    await external.start()
    try:
        await external.write(MOVER_GRAPH, "MERGE (:Where {at: 'ext'})", None, QueryLimits())
        async with serve_http(parts) as url:
            gateway.url = url
            async with connected(
                gateway, gateway.token("acme:write", "stays:write", "mover:write")
            ) as client:
                for graph in ("acme", "stays"):
                    await tool(client, "run_write_query", database=graph, query="MERGE (:Ok)")
                await tool(
                    client,
                    "run_write_query",
                    database="mover",
                    query="MERGE (:Where {at: 'default'})",
                )
            yield gateway
    finally:
        await external.close()


@asynccontextmanager
async def connected(gateway: Gateway, bearer: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=60)
    async with Client(
        streamable_http_client(f"{gateway.url}/mcp", http_client=http), mode="legacy"
    ) as client:  # type: ignore[arg-type]
        yield client


async def eventually(check: Callable[[], Awaitable[object]], bound: float = RELOAD_BOUND) -> float:
    """`tests.services._common.eventually`, within a catalog reload unless told otherwise."""
    return await eventually_within(check, bound)


async def where_is_mover(client: Client) -> str:
    answer = await tool(client, "run_query", database="mover", query="MATCH (w:Where) RETURN w.at")
    return str(answer["rows"][0][0])


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if "failed, the catalog in force stays" in r.getMessage()
        or "cannot be read" in r.getMessage()
    ]


async def test_hostile_files_keep_the_catalog_in_force(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="graphgate.catalog_watch")
    gateway.write(tenants("default", 'fresh = "fresh"'))
    async with connected(
        gateway, gateway.token("acme", "stays", "mover", "fresh", "evil")
    ) as client:
        await eventually(lambda: tool(client, "run_query", database="fresh", query="RETURN 1"))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        async def unchanged() -> None:
            assert (await tool(client, "run_query", database="acme", query="RETURN 1"))["rows"]
            assert "evil" in await tool_error(
                client, "run_query", database="evil", query="RETURN 1"
            )

        # 50 MB: refused by its size, never read.
        evil = tenants("default", 'evil = "evil"')
        huge = f"{gateway.base}\n[tenants]\n{evil}\n"
        with gateway.path.open("w") as file:
            file.write(huge)
            for _ in range(50 * 1024):  # in 1 kB lines: the test itself holds no 50 MB
                file.write("# " + "x" * 1021 + "\n")
        started = time.monotonic()
        await eventually(lambda: _said(caplog, f"over the {MAX_SETTINGS_BYTES} bytes"))
        print(f"50 MB file refused {time.monotonic() - started:.2f} s after it was written")
        await unchanged()
        grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert grown_kb < 40 * 1024, f"peak memory grew {grown_kb} kB on a 50 MB file"

        # Nested 100,000 deep: a parser's recursion, one line.
        deep = f"{huge}nest = {'[' * 100_000}{']' * 100_000}\n"
        gateway.path.write_text(deep)
        await eventually(lambda: _said(caplog, "nests tables or arrays too deeply"))
        await unchanged()

        # A symlink loop, then the file deleted: said once each, the catalog stays.
        gateway.path.unlink()
        loop = gateway.path.with_name("loop")
        loop.symlink_to(gateway.path.name)
        gateway.path.symlink_to(loop.name)
        await eventually(lambda: _said(caplog, "Too many levels of symbolic links"))
        gateway.path.unlink()
        loop.unlink()
        await asyncio.sleep(1.5)
        await unchanged()
        assert (await tool(client, "run_query", database="fresh", query="RETURN 1"))["rows"]

        # Back: the newest valid file is in force.
        gateway.write(tenants())
        await eventually(lambda: _refused(client, "fresh"))
        lines = failures(caplog)
        print("\n".join(lines))
        assert len(lines) == 3, (
            lines
        )  # too large, too deep, unreadable (one line for its whole absence)
        assert all("Traceback" not in line for line in lines)
        assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"
    metrics = await gateway.metrics()
    assert 'graphgate_catalog_reloads_total{outcome="failed",source="file"} 2.0' in metrics


async def _said(caplog: pytest.LogCaptureFixture, text: str) -> None:
    assert any(text in r.getMessage() for r in caplog.records), text


async def _refused(client: Client, tenant: str) -> None:
    result = await client.call_tool("run_query", {"database": tenant, "query": "RETURN 1"})
    assert result.is_error


async def test_fifty_rapid_rewrites_while_calls_run(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="graphgate.catalog_watch")
    bearer = gateway.token("acme", "stays", "mover", *(f"flicker{i}" for i in range(50)))
    calls = failed = 0
    stop = asyncio.Event()
    places: set[str] = set()

    async def keep_calling(client: Client) -> None:
        nonlocal calls, failed
        while not stop.is_set():
            for tenant in ("acme", "stays", "mover"):
                result = await client.call_tool(
                    "run_query", {"database": tenant, "query": "MATCH (n) RETURN count(n)"}
                )
                calls += 1
                if result.is_error:
                    failed += 1
                    print(tenant, result.content[0].text)  # type: ignore[union-attr]
            places.add(await where_is_mover(client))

    async with connected(gateway, bearer) as first, connected(gateway, bearer) as second:
        callers = [asyncio.create_task(keep_calling(c)) for c in (first, second)]
        started = time.monotonic()
        for i in range(50):
            on = "ext" if i % 2 else "default"
            gateway.write(tenants(on, f'flicker{i} = "flicker{i}"'))
            await asyncio.sleep(0.03)
        took = time.monotonic() - started
        # The last file: mover on ext (i = 49), flicker49 only.

        async def final() -> None:
            assert await where_is_mover(first) == "ext"
            assert (await tool(first, "run_query", database="flicker49", query="RETURN 1"))["rows"]
            assert "flicker48" in await tool_error(
                first, "run_query", database="flicker48", query="RETURN 1"
            )

        settled = await eventually(final)
        stop.set()
        await asyncio.gather(*callers)
    reloads = sum("catalog reloaded (file)" in r.getMessage() for r in caplog.records)
    print(
        f"50 rewrites in {took:.2f} s: {reloads} reloads, {calls} calls, {failed} failed, "
        f"settled {settled:.2f} s after the last write"
    )
    assert failed == 0 and calls > 0
    assert places <= {"default", "ext"}
    assert not failures(caplog)


async def test_a_token_naming_only_a_new_database_is_served_and_a_burst_costs_one_look(
    gateway: Gateway,
) -> None:
    name = f"late{uuid.uuid4().hex[:6]}"
    backend = gateway.service.backend()
    await backend.start()
    try:
        await backend.write(
            f"{gateway.prefix}{name}", "CREATE (:Marker {at: 'late'})", None, QueryLimits()
        )
        # The first request of a token granting only the new database: no 403, no wait.
        started = time.monotonic()
        async with connected(gateway, gateway.token(name)) as client:
            answer = await tool(client, "run_query", query="MATCH (m:Marker) RETURN m.at")
        print(f"new database served to its first user in {time.monotonic() - started:.2f} s")
        assert answer["rows"] == [["late"]]

        await asyncio.sleep(2.1)  # a fresh rate-limit window for the burst
        looks_before = _looks(await gateway.metrics())
        bearers = [gateway.token(f"nosuch{uuid.uuid4().hex[:8]}") for _ in range(200)]
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "burst", "version": "1"},
            },
        }
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60, limits=limits) as http:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/mcp",
                        json=initialize,
                        headers={
                            "authorization": f"Bearer {bearer}",
                            "accept": "application/json, text/event-stream",
                        },
                    )
                    for bearer in bearers
                )
            )
            burst = time.monotonic() - started
        looks = _looks(await gateway.metrics()) - looks_before
        print(f"200 tokens naming unknown tenants in {burst:.2f} s: {looks} discovery looks")
        assert {a.status_code for a in answers} == {403}
        assert len({a.text for a in answers}) == 1, {a.text for a in answers}
        assert len({a.headers["www-authenticate"] for a in answers}) == 1
        assert "nosuch" not in answers[0].text
        assert 1 <= looks <= 1 + int(burst // 2.0), looks
    finally:
        await backend.write(f"{gateway.prefix}{name}", "MATCH (n) DELETE n", None, QueryLimits())
        await backend.close()


def _looks(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('graphgate_discovery_looks_total{backend="ext"}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_removed_backend_is_closed_as_soon_as_its_slow_call_returns(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="graphgate.backends.registry")
    slow_backend = f"""
[backends.slow]
url = "{gateway.service.url}"
password_file = "{gateway.path.with_name("ext-password")}"
query_timeout = 60
"""
    graph = f"slow{uuid.uuid4().hex[:6]}"
    gateway.write(
        tenants("default", f'slowpoke = {{ backend = "slow", database = "{graph}" }}'), slow_backend
    )
    async with connected(gateway, gateway.token("acme", "slowpoke")) as client:
        await eventually(lambda: tool(client, "run_query", database="slowpoke", query="RETURN 1"))
        inner = 400
        while True:  # a read that takes about 3 s on this machine
            started = time.monotonic()
            await tool(client, "run_query", database="slowpoke", query=_slow(inner))
            took = time.monotonic() - started
            if took > 0.5 or inner > 20_000:
                break
            inner *= 2
        inner = int(inner * (3.0 / took) ** 0.5)

        slow = asyncio.create_task(
            tool(client, "run_query", database="slowpoke", query=_slow(inner))
        )
        await asyncio.sleep(0.3)
        removed_at = time.monotonic()
        gateway.write(tenants())
        await eventually(lambda: _said(caplog, "backend slow left the catalog"))
        refused = await tool_error(client, "run_query", database="slowpoke", query="RETURN 1")
        assert "slowpoke" in refused  # refused at once, as a name never known
        assert not slow.done(), "the slow call should still run when the backend leaves"
        answer = await slow
        returned = time.monotonic()
        assert answer["row_count"] == 1
        await eventually(lambda: _said(caplog, "backend slow closed"), 5.0)
        closed = next(r for r in caplog.records if "backend slow closed" in r.getMessage())
        lag = closed.created - (time.time() - (time.monotonic() - returned))
        print(
            f"slow call returned {returned - removed_at:.2f} s after the removal; "
            f"backend closed {lag:+.2f} s after it returned ({closed.getMessage()})"
        )
        assert "no call was cut short" in closed.getMessage()
        assert lag < 1.0  # not query_timeout (60 s) + 2 s


def _slow(inner: int) -> str:
    return (
        f"UNWIND range(1, {inner}) AS a UNWIND range(1, {inner}) AS b "
        "WITH a, b WHERE (a * b) % 7 = 3 RETURN count(a) AS n"
    )
