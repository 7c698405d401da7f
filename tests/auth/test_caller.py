"""current_caller: rights from the token of each request, and the local user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import FastMCP

from graphgate.auth import current_caller, mint_dev_token
from graphgate.errors import AuthError
from tests.auth._app import MCP_HEADERS, gated_app, running, tool_call, tool_result
from tests.auth.conftest import make_settings


def initialize() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }


async def test_rights_follow_each_requests_token(tmp_path: Path) -> None:
    """One stateful MCP session, two tokens: each call sees its own token's rights."""
    settings = make_settings(tmp_path, auth="dev", allow_writes=True)
    narrow = mint_dev_token(settings, "alice", ["acme"], False, 300)
    wide = mint_dev_token(settings, "alice", ["acme:write", "globex"], False, 300)
    async with httpx.AsyncClient() as http:
        setup_app, _ = gated_app(settings, http)
        # a stateful app, to prove nothing sticks to the session
        mcp = FastMCP("s", auth=setup_app.state.fastmcp_auth)

        @mcp.tool
        def whoami() -> dict[str, Any]:
            caller = current_caller(settings)
            return {"tenants": dict(caller.rights.tenants), "client_id": caller.client_id}

        app = mcp.http_app(path="/mcp", json_response=True)
        transport = httpx.ASGITransport(app=app)
        async with (
            running(app),
            httpx.AsyncClient(transport=transport, base_url=settings.public_url or "") as client,
        ):
            headers = {**MCP_HEADERS, "Authorization": f"Bearer {narrow}"}
            response = await client.post("/mcp", json=initialize(), headers=headers)
            assert response.status_code == 200, response.text
            headers["mcp-session-id"] = response.headers["mcp-session-id"]
            await client.post(
                "/mcp",
                json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers=headers,
            )
            first = tool_result(await client.post("/mcp", json=tool_call(), headers=headers))
            headers["Authorization"] = f"Bearer {wide}"
            second = tool_result(
                await client.post("/mcp", json=tool_call(request_id=2), headers=headers)
            )
            headers["Authorization"] = f"Bearer {narrow}"
            third = tool_result(
                await client.post("/mcp", json=tool_call(request_id=3), headers=headers)
            )
    assert first["tenants"] == {"acme": "read"}
    assert second["tenants"] == {"acme": "write", "globex": "read"}
    assert third["tenants"] == {"acme": "read"}
    assert first["client_id"] == "graphgate-cli"


def test_local_user_without_auth(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tenants="acme,globex")
    caller = current_caller(settings)
    assert (caller.issuer, caller.subject, caller.client_id) == ("local", "local", "local")
    assert caller.rights.admin
    assert set(caller.rights.tenants) == {"acme", "globex"}


def test_no_token_outside_a_request_is_an_auth_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth="dev")
    with pytest.raises(AuthError):
        current_caller(settings)
