"""In-process microbenchmarks: result conversion, token verification and routing.

These run graphgate's own functions (some private) on real inputs: a real
FalkorDB reply for conversion, real dev-issuer tokens for verification. Each
figure is the median of several timed repeats, in microseconds per operation.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from graphgate.auth import build_auth, caller_from_token
from graphgate.auth.challenge import BearerGate
from graphgate.auth.dev import mint_dev_token
from graphgate.backends.base import QueryLimits, QueryResult
from graphgate.backends.falkordb import FalkorDBBackend
from graphgate.backends.supervision import SupervisedBackend
from graphgate.config import Settings
from graphgate.replies import bounded_rows, reply
from graphgate.server import build_parts
from graphgate.tenancy import Router, Target
from graphgate.tools import _result_dict

CONVERT_QUERY = "MATCH (p:Person) RETURN p LIMIT 1000"


def _median_us(samples: list[float], per: int) -> float:
    return statistics.median(samples) / per * 1e6


async def timed_async(fn: Callable[[], Awaitable[Any]], inner: int, repeats: int) -> float:
    """Median over ``repeats`` of the time of ``inner`` awaited calls, in µs per call."""
    for _ in range(min(inner, 50)):
        await fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(inner):
            await fn()
        samples.append(time.perf_counter() - started)
    return _median_us(samples, inner)


def timed(fn: Callable[[], Any], inner: int, repeats: int) -> float:
    for _ in range(min(inner, 50)):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append(time.perf_counter() - started)
    return _median_us(samples, inner)


async def conversion(
    host: str, port: int, password: str, graph_name: str, repeats: int
) -> dict[str, Any]:
    """A 1,000-node reply: the falkordb client's parse against graphgate's convert + encode.

    * ``client_parse``: ``falkordb.asyncio.query_result.QueryResult.parse`` of the
      raw reply, what ``graph.ro_query`` does after the round trip;
    * ``convert``: graphgate's `Converter` over the parsed rows (node → dict);
    * ``serialise``: `_result_dict` + `bounded_rows` (one pydantic-core JSON
      encode) + `reply` (the tool result), as `run_query` does;
    * ``graphgate_parse``: `FalkorDBBackend._parse` on the same reply (the client's
      per-cell parse and the conversion, as graphgate runs them).
    """
    from falkordb.asyncio.query_result import QueryResult as ClientResult

    backend = FalkorDBBackend(host, port, password=password)
    await backend.start()
    try:
        graph = backend._graph(graph_name)
        raw = await graph.execute_command("GRAPH.RO_QUERY", graph_name, CONVERT_QUERY, "--compact")
        rows_in_reply = len(raw[1])

        async def client_parse() -> Any:
            parsed = ClientResult(graph)
            await parsed.parse(raw)
            return parsed

        parsed = await client_parse()
        convert = backend._convert
        records = parsed.result_set

        def convert_rows() -> list[list[Any]]:
            return [convert.row(record) for record in records]

        converted = convert_rows()
        target = Target("bench", graph_name, SupervisedBackend(backend))
        max_bytes = Settings().max_result_bytes

        def serialise() -> Any:
            result = QueryResult(columns=["p"], rows=converted)
            answer, encoded = bounded_rows(
                _result_dict(target, result, with_stats=False), max_bytes
            )
            return reply(encoded, answer)

        async def graphgate_parse() -> Any:
            return await backend._parse(graph, raw, QueryLimits(row_limit=1000), read_only=True)

        inner = 1
        parse_us = await timed_async(client_parse, inner, repeats)
        convert_us = timed(convert_rows, inner, repeats)
        serialise_us = timed(serialise, inner, repeats)
        gg_parse_us = await timed_async(graphgate_parse, inner, repeats)
        _, encoded = bounded_rows(
            _result_dict(target, QueryResult(columns=["p"], rows=converted), False), max_bytes
        )
    finally:
        await backend.close()
    return {
        "rows": rows_in_reply,
        "json_bytes": len(encoded),
        "client_parse_ms": parse_us / 1000,
        "convert_ms": convert_us / 1000,
        "serialise_ms": serialise_us / 1000,
        "graphgate_parse_ms": gg_parse_us / 1000,
        "ratio": (convert_us + serialise_us) / parse_us,
        "ratio_with_graphgate_parse": (gg_parse_us - parse_us + serialise_us) / parse_us,
    }


async def auth_and_routing(
    data_dir: Path, public_url: str, catalog: dict[str, str], repeats: int
) -> dict[str, Any]:
    """Server-side CPU of token verification and routing for one call, in µs.

    ``gate_cached``: graphgate's bearer gate on a request whose token is in
    the verified-token cache (every call after a client's first);
    ``gate_uncached``: the same with the cache emptied first (signature check);
    ``caller``: `caller_from_token` (rights from claims), which every tool
    call runs; ``resolve``: `Router.resolve` to the starting database.
    """
    settings = Settings(
        auth="dev", data_dir=data_dir, public_url=public_url, tenants=catalog, log_level="warning"
    )
    async with httpx.AsyncClient() as http:
        setup = build_auth(settings, http)
        assert setup.provider is not None and setup.verifier is not None
        verifier = setup.verifier
        tenant = sorted(catalog)[0]
        token = mint_dev_token(settings, sub="micro", tenants=[tenant], admin=False, ttl=3600)
        middleware = setup.provider.gate_middleware()

        async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
            return None

        gate = BearerGate(inner_app, **middleware.kwargs)
        scope_headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"accept", b"application/json, text/event-stream"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
        ]

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(_message: Any) -> None:
            return None

        async def through_gate() -> None:
            scope: dict[str, Any] = {
                "type": "http",
                "path": "/mcp",
                "method": "POST",
                "headers": scope_headers,
                "query_string": b"",
            }
            await gate(scope, receive, send)
            assert "user" in scope

        async def through_gate_uncached() -> None:
            verifier._cache.clear()
            await through_gate()

        access = await verifier.verify(token)
        parts = build_parts(settings)  # constructed, never opened: routing needs no database
        router = Router(parts.catalog, parts.backends, parts.store, ttl=settings.session_ttl)
        caller = caller_from_token(access, settings)

        async def resolve() -> None:
            await router.resolve(caller, None, None)

        result = {
            "gate_cached_us": await timed_async(through_gate, 200, repeats),
            "gate_uncached_us": await timed_async(through_gate_uncached, 20, repeats),
            "verify_cached_us": await timed_async(lambda: verifier.verify(token), 200, repeats),
            "caller_us": timed(lambda: caller_from_token(access, settings), 200, repeats),
            "resolve_us": await timed_async(resolve, 200, repeats),
        }
    result["per_call_us"] = result["gate_cached_us"] + result["caller_us"] + result["resolve_us"]
    return result
