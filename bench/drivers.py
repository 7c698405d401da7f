"""The neo4j package's two drivers, reading the benchmark's queries in this process.

The driver is the floor under any Bolt-speaking MCP server in Python: this
measures what a read costs the client process (``time.process_time``, all
threads) with each, used as graphgate uses it: a session per call in read
access mode, an auto-commit statement, ``fetch`` then ``consume``; the
blocking driver through ``run_in_executor`` on a thread pool, as a server on
an event loop would have to. 8 concurrent readers, on the benchmark's event
loop (uvloop). The asyncio driver wraps each socket read in a task with a
timer while the server's receive-timeout hint is set (Neo4j sends one), two
reads per record; the blocking driver makes two ``recv`` system calls per
record instead, and pays for thread switches. graphgate uses the asyncio
driver as shipped (the first row): the driver offers no public way to leave
out the hint's timer.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from load import POINT_QUERY, ROWS_QUERY

READERS = 8


async def compare(
    url: str, user: str, password: str, calls: dict[str, int]
) -> list[dict[str, Any]]:
    """CPU ms and wall ms per read for each driver and query; ``calls`` per query kind."""
    from neo4j import AsyncGraphDatabase, GraphDatabase

    queries = {"point": (POINT_QUERY, {"pid": 7}), "rows100": (ROWS_QUERY, None)}
    async_driver = AsyncGraphDatabase.driver(url, auth=(user, password))
    sync_driver = GraphDatabase.driver(url, auth=(user, password))
    threads = ThreadPoolExecutor(32)
    loop = asyncio.get_running_loop()
    out: list[dict[str, Any]] = []
    try:
        for kind, (text, params) in queries.items():

            async def via_asyncio(
                text: str = text, params: Any = params, driver: Any = async_driver
            ) -> None:
                async with driver.session(database="neo4j", default_access_mode="READ") as s:
                    cursor = await s.run(text, params)
                    await cursor.fetch(1001)
                    await cursor.consume()

            def blocking(text: str = text, params: Any = params) -> None:
                with sync_driver.session(database="neo4j", default_access_mode="READ") as s:
                    cursor = s.run(text, params)
                    cursor.fetch(1001)
                    cursor.consume()

            async def via_thread(blocking: Any = blocking) -> None:
                await loop.run_in_executor(threads, blocking)

            for name, read in (
                ("asyncio driver", via_asyncio),
                ("blocking driver on a thread", via_thread),
            ):
                total = calls[kind]
                for _ in range(50):  # warm: connections, plans
                    await read()
                cpu, wall = time.process_time(), time.perf_counter()

                async def reader(read: Any = read, count: int = total // READERS) -> None:
                    for _ in range(count):
                        await read()

                await asyncio.gather(*(reader() for _ in range(READERS)))
                done = total // READERS * READERS
                out.append(
                    {
                        "query": kind,
                        "driver": name,
                        "reads": done,
                        "cpu_ms": round((time.process_time() - cpu) * 1000 / done, 3),
                        "wall_ms": round((time.perf_counter() - wall) * 1000 / done, 3),
                    }
                )
                print(f"drivers: {kind} {name}: {out[-1]['cpu_ms']} ms CPU per read", flush=True)
    finally:
        await async_driver.close()
        sync_driver.close()
        threads.shutdown()
    return out
