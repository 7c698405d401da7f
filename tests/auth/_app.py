"""A FastMCP app guarded by graphgate's auth, with one tool that reports the caller."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastmcp import FastMCP
from starlette.applications import Starlette

from graphgate.auth import AuthSetup, build_auth, current_caller
from graphgate.config import Settings

MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def gated_app(
    settings: Settings, http_client: httpx.AsyncClient, **options: Any
) -> tuple[Starlette, AuthSetup]:
    setup = build_auth(settings, http_client, **options)
    mcp = FastMCP("t", auth=setup.provider)

    @mcp.tool
    def whoami() -> dict[str, Any]:
        caller = current_caller(settings)
        return {
            "issuer": caller.issuer,
            "subject": caller.subject,
            "client_id": caller.client_id,
            "tenants": dict(caller.rights.tenants),
            "admin": caller.rights.admin,
        }

    app = mcp.http_app(path="/mcp", stateless_http=True, json_response=True)
    return app, setup


def tool_call(name: str = "whoami", request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": {}},
    }


def tool_result(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert "result" in body, body
    result: dict[str, Any] = json.loads(body["result"]["content"][0]["text"])
    return result


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Starlette]:
    """Run the app's lifespan in a task of its own.

    The lifespan holds an anyio task group, which must be exited by the task
    that entered it; pytest-asyncio may tear a fixture down in another task.
    """
    started = asyncio.Event()
    stop = asyncio.Event()

    async def hold() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        waiter.cancel()
        await task  # re-raises the start-up error
        raise RuntimeError("the app did not start")
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
