"""Load generation: N concurrent workers calling for a fixed time, and what it cost.

A worker is an async function that makes one call and raises if the call
failed. `drive` runs the workers through a warm-up and a measured window;
only calls that start and end inside the window count, and the server's CPU
is read from ``/proc`` at both edges of the window, so CPU per call is the
server process's own time (the load generator's is reported apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from procs import cpu_seconds
from wire import WireClient

Call = Callable[[], Awaitable[None]]

POINT_QUERY = "MATCH (p:Person {pid: $pid}) RETURN p.pid AS pid, p.name AS name, p.age AS age"
ROWS_QUERY = (
    "MATCH (p:Person) RETURN p.pid AS pid, p.name AS name, p.email AS email, p.age AS age LIMIT 100"
)
QUERIES = {"point": POINT_QUERY, "rows100": ROWS_QUERY}
PERSONS = 200
"""Person nodes per tenant graph (the point read picks one of them at random)."""


class CallFailed(RuntimeError):
    """A call that returned an error (a tool error, a bad status)."""


def query_args(kind: str, rng: random.Random) -> tuple[str, dict[str, Any] | None]:
    """The query text and parameters of one call of ``kind``."""
    if kind == "point":
        return POINT_QUERY, {"pid": rng.randint(1, PERSONS)}
    return ROWS_QUERY, None


def literal_query(kind: str, rng: random.Random) -> str:
    """The same query with its parameter written into the text (servers without params)."""
    if kind == "point":
        pid = rng.randint(1, PERSONS)
        return POINT_QUERY.replace("$pid", str(pid))
    return ROWS_QUERY


@dataclass
class Result:
    """One measured scenario."""

    name: str
    system: str
    mode: str
    query: str
    concurrency: int
    calls: int
    errors: int
    seconds: float
    throughput: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    server_cpu_ms: float | None
    db_cpu_ms: float | None
    client_cpu_ms: float
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def drive(
    name: str,
    workers: Sequence[Call],
    *,
    duration: float,
    warmup: float,
    max_calls: int,
    server_pid: int | None,
    db_pid: int | None,
    system: str,
    mode: str,
    query: str,
) -> Result:
    """Run ``workers`` concurrently: ``warmup`` seconds, then a measured window.

    The window ends after ``duration`` seconds or ``max_calls`` counted calls,
    whichever comes first.
    """
    phase = "warmup"
    window_start = 0.0
    window_end = float("inf")
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    enough = asyncio.Event()

    async def loop(call: Call) -> None:
        nonlocal errors, first_error
        while phase != "stop":
            started = time.perf_counter()
            measuring = phase == "measure"
            try:
                await call()
            except Exception as exc:
                if measuring:
                    errors += 1
                if first_error is None:
                    first_error = f"{type(exc).__name__}: {exc}"[:300]
                if errors > 50 and errors > len(latencies):
                    enough.set()
                    return
                await asyncio.sleep(0.01)
                continue
            ended = time.perf_counter()
            if measuring and ended <= window_end:
                latencies.append(ended - started)
                if len(latencies) >= max_calls:
                    enough.set()

    tasks = [asyncio.create_task(loop(call)) for call in workers]
    try:
        await asyncio.sleep(warmup)
        server_cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
        db_cpu0 = cpu_seconds(db_pid) if db_pid else 0.0
        client_cpu0 = cpu_seconds(os.getpid())
        window_start = time.perf_counter()
        phase = "measure"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), duration)
        window_end = time.perf_counter()
        server_cpu1 = cpu_seconds(server_pid) if server_pid else 0.0
        db_cpu1 = cpu_seconds(db_pid) if db_pid else 0.0
        client_cpu1 = cpu_seconds(os.getpid())
        phase = "stop"
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    seconds = window_end - window_start
    counted = sorted(latencies)
    calls = len(counted)
    per_call = 1000 / calls if calls else float("nan")
    return Result(
        name=name,
        system=system,
        mode=mode,
        query=query,
        concurrency=len(workers),
        calls=calls,
        errors=errors,
        seconds=round(seconds, 3),
        throughput=calls / seconds if seconds > 0 else 0.0,
        p50_ms=percentile(counted, 0.50) * 1000,
        p99_ms=percentile(counted, 0.99) * 1000,
        mean_ms=(sum(counted) / calls * 1000) if calls else float("nan"),
        server_cpu_ms=(server_cpu1 - server_cpu0) * per_call if server_pid else None,
        db_cpu_ms=(db_cpu1 - db_cpu0) * per_call if db_pid else None,
        client_cpu_ms=(client_cpu1 - client_cpu0) * per_call,
        first_error=first_error,
    )


# -- MCP workers ------------------------------------------------------------------------


def tool_text(result: Any) -> str:
    content = getattr(result, "content", None) or []
    return str(getattr(content[0], "text", "")) if content else ""


@dataclass
class Conn:
    """A connected MCP client and the HTTP client under it (whose headers carry the token)."""

    client: Client
    http: httpx2.AsyncClient

    def use_token(self, token: str) -> None:
        self.http.headers["Authorization"] = f"Bearer {token}"


@contextlib.asynccontextmanager
async def mcp_client(url: str, mode: str, token: str | None) -> AsyncIterator[Conn]:
    """One connected MCP client (an initialized session in legacy mode)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=60)
    async with http:
        client = Client(
            streamable_http_client(url, http_client=http),  # type: ignore[arg-type]
            mode=mode,  # type: ignore[arg-type]
        )
        async with client:
            yield Conn(client, http)


@dataclass
class WireConn:
    """A `WireClient` where the call builders expect a `Conn`."""

    client: WireClient


async def call_checked(client: Client | WireClient, tool: str, arguments: dict[str, Any]) -> str:
    """The text of a successful tool call, through either load generator."""
    if isinstance(client, WireClient):
        content = (await client.call_tool(tool, arguments)).get("content") or [{}]
        return str(content[0].get("text", ""))
    result = await client.call_tool(tool, arguments)
    text = tool_text(result)
    if result.is_error:
        raise CallFailed(text[:300])
    return text


@contextlib.asynccontextmanager
async def mcp_workers(
    url: str,
    mode: str,
    tokens: Sequence[str | None],
    make_call: Callable[[Conn, int], Call],
) -> AsyncIterator[list[Call]]:
    """One client per worker (one token each); ``make_call(client, index)`` builds its call."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for token in tokens:
            clients.append(await stack.enter_async_context(mcp_client(url, mode, token)))
        yield [make_call(client, index) for index, client in enumerate(clients)]


@contextlib.asynccontextmanager
async def wire_workers(
    url: str,
    tokens: Sequence[str | None],
    make_call: Callable[[Any, int], Call],
) -> AsyncIterator[list[Call]]:
    """`mcp_workers` with the lean load generator (bench/wire.py): one connection each."""
    clients = [WireClient(url, token) for token in tokens]
    try:
        for client in clients:
            await client.connect()
        yield [make_call(WireConn(client), index) for index, client in enumerate(clients)]
    finally:
        for client in clients:
            await client.close()


def graphgate_call(kind: str, seed: int) -> Callable[[Conn, int], Call]:
    """graphgate's ``run_query`` on the token's (single) tenant."""

    def make(conn: Conn, index: int) -> Call:
        rng = random.Random(seed * 1000 + index)

        async def call() -> None:
            query, params = query_args(kind, rng)
            arguments: dict[str, Any] = {"query": query}
            if params:
                arguments["params"] = params
            text = await call_checked(conn.client, "run_query", arguments)
            if '"rows"' not in text:
                raise CallFailed(f"unexpected answer {text[:200]}")

        return call

    return make


def bare_call(kind: str, seed: int, tenants: Sequence[str]) -> Callable[[Conn, int], Call]:
    """The bare FastMCP server's ``run_query``; the database is an argument (no auth)."""

    def make(conn: Conn, index: int) -> Call:
        rng = random.Random(seed * 1000 + index)
        database = tenants[index % len(tenants)]

        async def call() -> None:
            query, params = query_args(kind, rng)
            arguments: dict[str, Any] = {"query": query, "database": database}
            if params:
                arguments["params"] = params
            await call_checked(conn.client, "run_query", arguments)

        return call

    return make


def memgraph_call(kind: str, seed: int) -> Callable[[Conn, int], Call]:
    """mcp-memgraph's ``run_cypher_query`` (no parameters: the value goes into the text)."""

    def make(conn: Conn, index: int) -> Call:
        rng = random.Random(seed * 1000 + index)

        async def call() -> None:
            text = await call_checked(
                conn.client, "run_cypher_query", {"query": literal_query(kind, rng)}
            )
            if '"error"' in text[:200]:
                raise CallFailed(text[:300])

        return call

    return make


def graphgate_literal_call(kind: str, seed: int) -> Callable[[Conn, int], Call]:
    """graphgate's ``run_query`` with the literal query text mcp-memgraph gets."""

    def make(conn: Conn, index: int) -> Call:
        rng = random.Random(seed * 1000 + index)

        async def call() -> None:
            await call_checked(conn.client, "run_query", {"query": literal_query(kind, rng)})

        return call

    return make


# -- sessions over plain HTTP ---------------------------------------------------------

SESSION_PROTOCOL = "2025-11-25"
_JSON_HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
}


async def session_round(http: httpx2.AsyncClient, url: str, tenant: str, request_id: int) -> None:
    """One whole session of the session protocol, as an MCP client runs it.

    ``initialize``, ``notifications/initialized``, one ``tools/call``
    (``use_database``, so the server keeps per-session state) and ``DELETE``.
    Plain HTTP requests, the same ones the SDK client sends, without its
    machinery (and without the optional GET stream), so the load generator
    stays light.
    """
    init = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": SESSION_PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "graphgate-bench", "version": "1"},
        },
    }
    response = await http.post(url, json=init, headers=_JSON_HEADERS)
    session = response.headers.get("mcp-session-id")
    if response.status_code != 200 or not session:
        raise CallFailed(f"initialize: HTTP {response.status_code} {response.text[:200]}")
    headers = {
        **_JSON_HEADERS,
        "mcp-session-id": session,
        "mcp-protocol-version": SESSION_PROTOCOL,
    }
    try:
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        response = await http.post(url, json=note, headers=headers)
        if response.status_code >= 300:
            raise CallFailed(f"initialized: HTTP {response.status_code}")
        call = {
            "jsonrpc": "2.0",
            "id": request_id + 1,
            "method": "tools/call",
            "params": {"name": "use_database", "arguments": {"name": tenant}},
        }
        response = await http.post(url, json=call, headers=headers)
        body = response.json() if response.status_code == 200 else {}
        if body.get("result", {}).get("isError") is not False:
            raise CallFailed(f"use_database: HTTP {response.status_code} {response.text[:200]}")
    finally:
        response = await http.delete(url, headers=headers)
        if response.status_code >= 300:
            raise CallFailed(f"DELETE: HTTP {response.status_code}")


# -- raw FalkorDB -----------------------------------------------------------------------


def falkordb_client(host: str, port: int, password: str, max_connections: int = 64) -> Any:
    from falkordb.asyncio import FalkorDB
    from redis.asyncio import BlockingConnectionPool

    pool = BlockingConnectionPool(
        host=host,
        port=port,
        password=password,
        max_connections=max_connections,
        timeout=None,
        decode_responses=True,
    )
    return FalkorDB(connection_pool=pool)


def raw_falkordb_workers(
    db: Any, kind: str, tenants: Sequence[str], concurrency: int, seed: int
) -> list[Call]:
    """The falkordb async client running the same query (``ro_query``, parsed result)."""
    workers: list[Call] = []
    for index in range(concurrency):
        graph = db.select_graph(tenants[index % len(tenants)])
        rng = random.Random(seed * 1000 + index)

        def make(graph: Any = graph, rng: random.Random = rng) -> Call:
            async def call() -> None:
                query, params = query_args(kind, rng)
                result = await graph.ro_query(query, params)
                if not result.result_set:
                    raise CallFailed("empty result")

            return call

        workers.append(make())
    return workers


def raw_neo4j_workers(driver: Any, kind: str, concurrency: int, seed: int) -> list[Call]:
    """The neo4j async driver running the same query on the ``neo4j`` database."""
    workers: list[Call] = []
    for index in range(concurrency):
        rng = random.Random(seed * 1000 + index)

        def make(rng: random.Random = rng) -> Call:
            async def call() -> None:
                query, params = query_args(kind, rng)
                records, _, _ = await driver.execute_query(
                    query, params or {}, database_="neo4j", routing_="r"
                )
                if not records:
                    raise CallFailed("empty result")

            return call

        workers.append(make())
    return workers


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
