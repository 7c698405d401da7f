"""Connections are timed out and bounded (issue 13.3), over real sockets on loopback.

graphgate runs as in production: `build_parts`, `build_http_app`, and uvicorn
with `connection_limits` (the arguments `graphgate.server.run` passes). The
timeouts are set to one second so the tests stay short; each bound asserted
below is that timeout plus a generous margin, never a lower bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from graphgate.auth.dev import mint_dev_token
from graphgate.header_timeout import HeaderTimeoutProtocol, header_timeout_protocol
from graphgate.http_limits import connection_limits
from graphgate.server import Parts, build_http_app
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import http_settings, make_parts

pytestmark = pytest.mark.falkordb

TIMEOUT = 1.0
MARGIN = 5.0  # "closed within the timeout plus this", on two busy cores
IDLE_SOCKETS = 200


@contextlib.asynccontextmanager
async def serve(parts: Parts) -> AsyncIterator[tuple[str, int]]:
    """The production app and connection limits on a loopback port; yields (host, port)."""
    settings = parts.settings
    config = uvicorn.Config(
        build_http_app(parts),
        host="127.0.0.1",
        port=settings.port,
        loop="none",
        lifespan="on",
        log_config=None,  # records reach the test's log capture
        access_log=False,
        **connection_limits(settings),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "graphgate did not start"
    try:
        yield "127.0.0.1", settings.port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def limited_parts(falkordb: FalkorDBService, data_dir: Path, **overrides: Any) -> Parts:
    limits = {"header_timeout": TIMEOUT, "body_timeout": TIMEOUT, "keepalive_timeout": 1}
    options = http_settings(
        auth="dev", tenants={"acme": "acme"}, data_dir=data_dir, **{**limits, **overrides}
    )
    return make_parts(falkordb.backend(), **options)


@pytest.fixture
def quiet_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at debug level; afterwards, none may be an error or carry a traceback."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [f"{r.name}: {r.getMessage()}" for r in loud]


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the server sent before closing; fails if it keeps the connection longer."""
    received = b""
    async with asyncio.timeout(within):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def keep_serving(base: str, stop: asyncio.Event) -> int:
    """Normal requests, one after another, until ``stop``; each must succeed."""
    served = 0
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        while not stop.is_set():
            response = await http.get("/healthz")
            assert response.status_code == 200
            served += 1
            await asyncio.sleep(0.1)
    return served


async def test_idle_and_slow_header_connections_are_closed(
    falkordb_service: FalkorDBService, tmp_path: Path, quiet_log: pytest.LogCaptureFixture
) -> None:
    parts = limited_parts(falkordb_service, tmp_path)
    async with serve(parts) as (host, port):
        stop = asyncio.Event()
        serving = asyncio.create_task(keep_serving(f"http://{host}:{port}", stop))
        idle = [await asyncio.open_connection(host, port) for _ in range(IDLE_SOCKETS)]
        slow = [await asyncio.open_connection(host, port) for _ in range(3)]
        for _, writer in slow:
            writer.write(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")

        async def drip(writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while not writer.is_closing():
                    writer.write(b"a")
                    await writer.drain()
                    await asyncio.sleep(0.2)

        drips = [asyncio.create_task(drip(writer)) for _, writer in slow]
        try:
            answers = await asyncio.gather(
                *(closed_by_server(reader, TIMEOUT + MARGIN) for reader, _ in idle + slow)
            )
        finally:
            for task in drips:
                task.cancel()
            for _, writer in idle + slow:
                writer.close()
        assert answers == [b""] * (IDLE_SOCKETS + 3)  # closed, nothing sent
        stop.set()
        assert await serving > 0
        # Still serving once they are gone.
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
    closing = [r for r in quiet_log.records if "no complete request headers" in r.getMessage()]
    assert len(closing) >= IDLE_SOCKETS + 3
    assert all(r.levelno == logging.DEBUG for r in closing)


async def test_slow_and_abandoned_bodies_are_dropped_quietly(
    falkordb_service: FalkorDBService, tmp_path: Path, quiet_log: pytest.LogCaptureFixture
) -> None:
    parts = limited_parts(falkordb_service, tmp_path)
    bearer = mint_dev_token(parts.settings, sub="slow", tenants=["acme"], admin=False, ttl=600)
    head = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Accept: application/json, text/event-stream\r\n"
        f"Authorization: Bearer {bearer}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    async with serve(parts) as (host, port):
        stop = asyncio.Event()
        serving = asyncio.create_task(keep_serving(f"http://{host}:{port}", stop))
        slow = [await asyncio.open_connection(host, port) for _ in range(3)]
        for _, writer in slow:
            writer.write(head + b'{"jsonrpc": "2.0", ')
        leaving = [await asyncio.open_connection(host, port) for _ in range(3)]
        for _, writer in leaving:
            writer.write(head + b'{"jsonrpc": ')
            await writer.drain()
        await asyncio.sleep(0.3)
        for _, writer in leaving:
            writer.close()
        answers = await asyncio.gather(
            *(closed_by_server(reader, TIMEOUT + MARGIN) for reader, _ in slow)
        )
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b"request_timeout" in answer
        for _, writer in slow:
            writer.close()
        stop.set()
        assert await serving > 0
    messages = [r.getMessage() for r in quiet_log.records]
    assert sum("its body took longer than" in m for m in messages) == 3
    assert sum("left during its request body" in m for m in messages) == 3


async def test_idle_keep_alive_connections_are_closed(
    falkordb_service: FalkorDBService, tmp_path: Path, quiet_log: pytest.LogCaptureFixture
) -> None:
    parts = limited_parts(falkordb_service, tmp_path)
    async with serve(parts) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await closed_by_server(reader, 1 + MARGIN)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_connections_past_the_limit_get_503(
    falkordb_service: FalkorDBService, tmp_path: Path
) -> None:
    parts = limited_parts(falkordb_service, tmp_path, max_connections=20, header_timeout=30)
    async with serve(parts) as (host, port):
        base = f"http://{host}:{port}"
        held = [await asyncio.open_connection(host, port) for _ in range(25)]
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                assert (await http.get("/healthz")).status_code == 503
        finally:
            for _, writer in held:
                writer.close()
        await asyncio.sleep(0.2)  # the server notices the closed sockets
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200


def test_settings_reach_uvicorn(tmp_path: Path) -> None:
    from graphgate.config import Settings

    settings = Settings(
        tenants="acme", header_timeout=7, body_timeout=9, keepalive_timeout=11, max_connections=13
    )
    config = uvicorn.Config(lambda *_: None, **connection_limits(settings))
    config.load()
    assert issubclass(config.http_protocol_class, HeaderTimeoutProtocol)
    assert config.http_protocol_class.header_timeout == 7  # type: ignore[attr-defined]
    assert (config.timeout_keep_alive, config.limit_concurrency) == (11, 13)
    defaults = Settings(tenants="acme")
    assert (defaults.header_timeout, defaults.body_timeout) == (10.0, 30.0)
    assert (defaults.keepalive_timeout, defaults.max_connections) == (5, 1000)


def test_uvicorn_contract() -> None:
    """What graphgate.header_timeout relies on in uvicorn; fails when uvicorn changes it."""
    assert uvicorn.__version__.startswith("0.54."), (
        f"uvicorn {uvicorn.__version__}: re-check graphgate/header_timeout.py against its "
        "httptools_impl, then move the pin in pyproject.toml and this test"
    )
    init = inspect.signature(HttpToolsProtocol.__init__).parameters
    assert list(init)[:4] == ["self", "config", "server_state", "app_state"]
    assert "_loop" in init
    for name, params in {
        "connection_made": ["self", "transport"],
        "on_message_begin": ["self"],
        "on_headers_complete": ["self"],
        "connection_lost": ["self", "exc"],
    }.items():
        method = getattr(HttpToolsProtocol, name)
        assert list(inspect.signature(method).parameters) == params, name
    source = inspect.getsource(HttpToolsProtocol)
    # The attributes the subclass reads, set where uvicorn sets them.
    for attribute in ("self.loop =", "self.transport = transport", "self.client ="):
        assert attribute in source, attribute
    # The data_received cancels uvicorn's keep-alive timer before parsing, so that a
    # request's first byte is the moment on_message_begin arms the header deadline.
    data_received = inspect.getsource(HttpToolsProtocol.data_received)
    assert data_received.index("_unset_keepalive_if_required") < data_received.index("feed_data")
    assert header_timeout_protocol(3).header_timeout == 3
