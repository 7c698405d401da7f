"""Building graphgate servers for tests: in memory, or over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from graphgate.backends.base import Backend
from graphgate.config import Settings
from graphgate.server import Parts, build_http_app, build_parts, supervised
from tests.services._common import free_port


def make_parts(backend: Backend, **settings: Any) -> Parts:
    """Parts for ``settings`` whose backend is ``backend`` (owned by the server).

    The backend is supervised as in production: /readyz and tool errors
    report its state the same way.
    """
    parts = build_parts(Settings(**settings))
    parts.backend = supervised(backend, parts.observability.metrics)
    return parts


@contextlib.asynccontextmanager
async def serve_http(parts: Parts) -> AsyncIterator[str]:
    """Run the HTTP app on a free loopback port; yields the base URL."""
    settings = parts.settings
    app = build_http_app(parts)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=settings.port,
        loop="none",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    if not server.started:
        task.cancel()
        raise RuntimeError("graphgate test server did not start")
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


METRICS_TOKEN = "test-metrics-token"
METRICS_HEADERS = {"authorization": f"Bearer {METRICS_TOKEN}"}
"""What a Prometheus scrape of a test server sends (auth on keeps /metrics closed without it)."""


def http_settings(**overrides: Any) -> dict[str, Any]:
    """Settings for an HTTP test server on a fresh loopback port, with a metrics token."""
    port = free_port()
    return {"host": "127.0.0.1", "port": port, "metrics_token": METRICS_TOKEN, **overrides}
