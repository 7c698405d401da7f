"""Issue 12 on Bolt: honest deadlines, memory bounds, bounded results, recovery, a full pool.

Against real Neo4j servers: the shared session server (started with
per-transaction memory limits, `scripts/neo4j_server.py`) and, for what
needs a server of its own, one private server that is killed and started
again on the same port. What a test claims about the server is checked on
the server through a separate admin driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from scripts.neo4j_server import Neo4jInstance, Neo4jUnavailable, running_neo4j

from graphgate.backends.base import QueryLimits
from graphgate.backends.bolt import BoltBackend
from graphgate.errors import (
    UNKNOWN_OUTCOME_HINT,
    BackendUnavailable,
    Busy,
    MemoryLimitExceeded,
    QueryError,
    QueryRefused,
    QueryTimeout,
    WriteOutcomeUnknown,
)
from tests.backends.test_bolt_neo4j import admin_rows, count, through_a_proxy
from tests.services._common import service_unavailable
from tests.services.neo4j import make_backend

pytestmark = pytest.mark.neo4j

DB = "neo4j"
LIMITS = QueryLimits(row_limit=100, timeout=10.0)
SPIN = "UNWIND range(1, 1000000000) AS a WITH a WHERE a < 0"
SLOW_READ = f"{SPIN} RETURN count(*) AS c"
MEMORY_BOMB = "UNWIND range(1, 20000000) AS x WITH collect(x) AS c RETURN size(c) AS n"


async def graphgate_transactions(service: Neo4jInstance) -> list[dict[str, Any]]:
    """graphgate's transactions running on the server now, as the admin sees them."""
    return await admin_rows(
        service,
        "SHOW TRANSACTIONS YIELD transactionId, metaData, currentQuery "
        "WHERE metaData.app = 'graphgate' RETURN transactionId, metaData, currentQuery",
    )


@contextlib.asynccontextmanager
async def started(backend: BoltBackend) -> Any:
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def peak_rss_reset() -> None:
    """Start a new peak-RSS measurement for this process (Linux ``clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


# -- deadlines on the shared server ----------------------------------------------------------


async def test_a_long_read_is_a_timeout_the_server_enforced(neo4j_backend: BoltBackend) -> None:
    with pytest.raises(QueryTimeout) as timed_out:
        await neo4j_backend.read(DB, SLOW_READ, None, QueryLimits(timeout=1.0))
    assert not isinstance(timed_out.value, WriteOutcomeUnknown)
    assert "the server stopped it" in str(timed_out.value)


async def test_a_long_write_is_rolled_back_and_says_so(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance, neo4j_label: str
) -> None:
    write = f"CREATE (:`{neo4j_label}`) WITH 1 AS one {SPIN} RETURN count(*) AS c"
    with pytest.raises(QueryTimeout) as timed_out:
        await neo4j_backend.write(DB, write, None, QueryLimits(timeout=1.0))
    assert not isinstance(timed_out.value, WriteOutcomeUnknown)
    assert "rolled it back" in str(timed_out.value)
    assert UNKNOWN_OUTCOME_HINT not in str(timed_out.value)
    assert await count(neo4j_service, neo4j_label) == 0


def batched(label: str, rows: str, size: int, value: str = "i") -> str:
    return (
        f"UNWIND {rows} AS i CALL (i) {{ CREATE (:`{label}` {{v: {value}}}) }} "
        f"IN TRANSACTIONS OF {size} ROWS"
    )


async def test_call_in_transactions_runs_as_auto_commit_through_write_only(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance, neo4j_label: str
) -> None:
    done = await neo4j_backend.write(DB, batched(neo4j_label, "range(1, 20)", 10), None, LIMITS)
    assert done.stats["nodes_created"] == 20
    assert await count(neo4j_service, neo4j_label) == 20
    with pytest.raises(QueryRefused, match="batches"):
        await neo4j_backend.read(DB, batched(neo4j_label, "range(1, 20)", 10), None, LIMITS)
    assert await count(neo4j_service, neo4j_label) == 20
    await neo4j_backend.write(DB, f"MATCH (n:`{neo4j_label}`) DELETE n", None, LIMITS)


async def test_call_in_transactions_cut_by_its_timeout_is_outcome_unknown(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance, neo4j_label: str
) -> None:
    """The timeout bounds the whole statement; the batches before it stay committed.

    Measured on Neo4j 5.26: batches of 1,000 rows cut by a 2 s timeout left
    97,000 rows committed.
    """
    huge = batched(neo4j_label, "range(1, 100000000)", 100)
    with pytest.raises(WriteOutcomeUnknown) as cut:
        await neo4j_backend.write(DB, huge, None, QueryLimits(timeout=1.0))
    assert "batches that ran before that stay committed" in str(cut.value)
    assert UNKNOWN_OUTCOME_HINT in str(cut.value)
    assert 0 < await count(neo4j_service, neo4j_label) < 100000000
    await neo4j_backend.write(
        DB,
        f"MATCH (n:`{neo4j_label}`) CALL (n) {{ DELETE n }} IN TRANSACTIONS OF 10000 ROWS",
        None,
        LIMITS,
    )


async def test_call_in_transactions_failing_halfway_keeps_earlier_batches_and_says_so(
    neo4j_backend: BoltBackend, neo4j_service: Neo4jInstance, neo4j_label: str
) -> None:
    failing = batched(neo4j_label, "[1, 2, 0, 4]", 1, value="1 / i")
    with pytest.raises(QueryError) as failed:
        await neo4j_backend.write(DB, failing, None, LIMITS)
    assert UNKNOWN_OUTCOME_HINT in str(failed.value)
    assert await count(neo4j_service, neo4j_label) == 2  # the two batches before 1 / 0
    await neo4j_backend.write(DB, f"MATCH (n:`{neo4j_label}`) DELETE n", None, LIMITS)


# -- memory ------------------------------------------------------------------------------------


async def test_a_memory_bomb_is_a_memory_limit_and_the_server_keeps_serving(
    neo4j_backend: BoltBackend,
) -> None:
    for path in (neo4j_backend.read, neo4j_backend.write):
        with pytest.raises(MemoryLimitExceeded) as refused:
            await path(DB, MEMORY_BOMB, None, LIMITS)
        assert "db.memory.transaction.max" in str(refused.value)
        assert "LIMIT" in str(refused.value)  # advice on what to do
    assert (await neo4j_backend.read(DB, "RETURN 1 AS x", None, LIMITS)).rows == [[1]]


async def test_rows_stop_at_the_byte_budget(neo4j_backend: BoltBackend) -> None:
    padding = "x" * 1000
    result = await neo4j_backend.read(
        DB,
        "UNWIND range(1, 100000) AS i RETURN i, $padding AS p",
        {"padding": padding},
        QueryLimits(row_limit=1000, timeout=10.0, max_bytes=20_000),
    )
    assert result.truncated is True
    assert 10 <= result.row_count < 20  # each row is over 1,000 bytes of JSON
    assert result.rows[0] == [1, padding]


async def test_one_huge_value_ends_truncated_with_bounded_memory(
    neo4j_backend: BoltBackend,
) -> None:
    """``range(1, 5000000)`` is one value: the driver builds it whole, the budget drops it.

    Neo4j streams ``range()`` lazily, so its memory limit does not see it;
    what graphgate holds is the driver's list (about 44 bytes an element).
    """
    peak_rss_reset()
    before = peak_rss_mb()
    result = await neo4j_backend.read(
        DB,
        "RETURN range(1, 5000000) AS r",
        None,
        QueryLimits(row_limit=1000, timeout=30.0, max_bytes=8 * 1024 * 1024),
    )
    grown = peak_rss_mb() - before
    assert result.truncated is True and result.rows == []
    assert grown < 400, f"graphgate grew by {grown:.0f} MB for one 5,000,000-element value"


# -- connections: a full pool, a dropped commit ----------------------------------------------


async def test_a_full_pool_is_busy_well_before_the_callers_deadline(
    neo4j_service: Neo4jInstance,
) -> None:
    backend = make_backend(neo4j_service, max_connections=2)
    backend.pool_wait = 0.5
    async with started(backend):
        hogs = [
            asyncio.ensure_future(backend.read(DB, SLOW_READ, None, QueryLimits(timeout=4.0)))
            for _ in range(2)
        ]
        await asyncio.sleep(1.0)  # both connections are now running the slow reads
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        with pytest.raises(Busy) as busy:
            await backend.read(DB, "RETURN 1 AS x", None, QueryLimits(timeout=10.0))
        assert loop.time() - started_at < 10.0  # its own deadline: it did not hang until then
        assert busy.value.retry_after > 0
        assert "connections to the database server are in use" in str(busy.value)
        for outcome in await asyncio.gather(*hogs, return_exceptions=True):
            assert isinstance(outcome, QueryTimeout)
        assert (await backend.read(DB, "RETURN 1 AS x", None, LIMITS)).rows == [[1]]


async def test_a_commit_never_answered_or_cut_is_outcome_unknown(
    neo4j_service: Neo4jInstance, neo4j_label: str
) -> None:
    async with through_a_proxy(neo4j_service, max_connections=2) as (proxy, backend):
        write = f"CREATE (:`{neo4j_label}`)"
        proxy.swallow_next_commit()
        with pytest.raises(WriteOutcomeUnknown) as unknown:
            await backend.write(DB, write, None, QueryLimits(timeout=1.0))
        assert UNKNOWN_OUTCOME_HINT in str(unknown.value)
        assert proxy.at_commit is None  # it was the commit that went unanswered
        proxy.cut_on_next_commit()
        with pytest.raises(BackendUnavailable) as broken:
            await backend.write(DB, write, None, LIMITS)
        assert UNKNOWN_OUTCOME_HINT in str(broken.value)
        assert proxy.at_commit is None
        await backend.abandoned_work_done()
        # Neither commit reached the server: "unknown" was the honest answer, not "failed".
        assert await count(neo4j_service, neo4j_label) == 0
        assert (await backend.write(DB, write, None, LIMITS)).stats["nodes_created"] == 1
        assert await count(neo4j_service, neo4j_label) == 1
        await backend.write(DB, f"MATCH (n:`{neo4j_label}`) DELETE n", None, LIMITS)


# -- a server of its own: late timeouts, a kill and a restart ---------------------------------


class PrivateNeo4j:
    """A Neo4j of this module's own, on a fixed port, that can be killed and started again.

    Its transaction monitor looks for timed-out transactions once a minute
    (``db.transaction.monitor.check.interval``; 2 s by default), so a query
    outlives its timeout on the server: what a server too busy to stop
    queries on time looks like to graphgate.
    """

    SETTINGS: Final = {"db.transaction.monitor.check.interval": "60s"}

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.instance = self._start(None, None)

    def _start(self, port: int | None, password: str | None) -> Neo4jInstance:
        return self._stack.enter_context(
            running_neo4j(port=port, password=password, settings=self.SETTINGS)
        )

    def kill(self) -> None:
        os.kill(self.instance.pid, signal.SIGKILL)

    def start_again(self) -> None:
        self.instance = self._start(self.instance.port, self.instance.password)

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def private_neo4j() -> Iterator[PrivateNeo4j]:
    try:
        server = PrivateNeo4j()
    except (Neo4jUnavailable, OSError) as exc:
        service_unavailable(f"Neo4j did not start: {exc}")
    try:
        yield server
    finally:
        server.close()


async def test_an_abandoned_query_is_terminated_on_the_server(
    private_neo4j: PrivateNeo4j, neo4j_label: str
) -> None:
    service = private_neo4j.instance
    backend = make_backend(service)
    async with started(backend):
        seen: list[list[dict[str, Any]]] = []

        async def watch() -> None:
            await asyncio.sleep(1.5)
            seen.append(await graphgate_transactions(service))

        watcher = asyncio.ensure_future(watch())
        with pytest.raises(QueryTimeout, match="stopped waiting") as read_out:
            await backend.read(DB, SLOW_READ, None, QueryLimits(timeout=1.0))
        await watcher
        assert not isinstance(read_out.value, WriteOutcomeUnknown)
        # Past its 1 s timeout the read was still running: the server had not stopped it ...
        assert [row["currentQuery"] for row in seen[0]] == [SLOW_READ]
        await backend.abandoned_work_done()
        # ... graphgate did, well before the server's minute-long monitor would have.
        assert await graphgate_transactions(service) == []

        write = f"CREATE (:`{neo4j_label}`) WITH 1 AS one {SPIN} RETURN count(*) AS c"
        with pytest.raises(QueryTimeout, match="before the write was committed") as write_out:
            await backend.write(DB, write, None, QueryLimits(timeout=1.0))
        assert not isinstance(write_out.value, WriteOutcomeUnknown)
        await backend.abandoned_work_done()
        assert await graphgate_transactions(service) == []
        assert await count(service, neo4j_label) == 0


async def test_a_killed_server_is_unavailable_quickly_then_serves_again(
    private_neo4j: PrivateNeo4j, neo4j_label: str
) -> None:
    """The same backend object throughout: no graphgate restart."""
    backend = make_backend(private_neo4j.instance)
    loop = asyncio.get_running_loop()
    async with started(backend):
        await backend.write(DB, f"CREATE (:`{neo4j_label}`)", None, LIMITS)
        private_neo4j.kill()
        for call in (
            backend.read(DB, "RETURN 1 AS x", None, LIMITS),
            backend.write(DB, f"CREATE (:`{neo4j_label}`)", None, LIMITS),
            backend.ping(),
        ):
            started_at = loop.time()
            with pytest.raises(BackendUnavailable) as down:
                await call
            assert loop.time() - started_at < 5.0  # refused at once, not after a hang
            assert str(private_neo4j.instance.port) not in str(down.value)  # no address
        private_neo4j.start_again()
        await backend.ping()
        assert (await backend.read(DB, "RETURN 1 AS x", None, LIMITS)).rows == [[1]]
        created = await backend.write(DB, f"CREATE (:`{neo4j_label}`)", None, LIMITS)
        assert created.stats["nodes_created"] == 1
