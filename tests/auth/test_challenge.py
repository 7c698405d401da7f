"""The exact WWW-Authenticate shapes, and the gate's behaviour around the edges."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from graphgate.auth import build_auth, mint_dev_token
from graphgate.auth.challenge import Challenge
from tests.auth.conftest import make_settings

PRM = "https://gg.example/.well-known/oauth-protected-resource/mcp"


def test_challenge_without_token() -> None:
    assert Challenge(PRM, ["mcp:tools"]).header() == (
        f'Bearer resource_metadata="{PRM}", scope="mcp:tools"'
    )


def test_challenge_with_error() -> None:
    header = Challenge(PRM, ["mcp:tools", "b"]).header("invalid_token", 'bad "quoted" \\ tökén')
    assert header == (
        f'Bearer resource_metadata="{PRM}", scope="mcp:tools b", error="invalid_token", '
        'error_description="bad  quoted    t k n"'
    )


def test_never_an_empty_scope() -> None:
    assert Challenge(PRM, []).header() == f'Bearer resource_metadata="{PRM}"'
    assert "scope" not in Challenge(PRM, []).header("invalid_token")


def plain_app(tmp_path: Path, hook: object = None) -> tuple[Starlette, str]:
    """The gate in front of a plain Starlette app (no FastMCP)."""
    settings = make_settings(tmp_path, auth="dev")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"hello {request.user.display_name}")

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("in")
        await websocket.close()

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    setup = build_auth(settings, httpx.AsyncClient(), on_failure=hook)  # type: ignore[arg-type]
    assert setup.provider is not None
    app = Starlette(
        routes=[
            *setup.routes,
            Route("/hello", hello),
            Route("/healthz", health),
            WebSocketRoute("/ws", socket),
        ],
        middleware=[setup.provider.gate_middleware()],
    )
    return app, mint_dev_token(settings, "alice", ["acme"], False, 60)


def test_gate_on_plain_starlette(tmp_path: Path) -> None:
    app, token = plain_app(tmp_path)
    with TestClient(app) as client:
        assert client.get("/healthz").text == "ok"
        assert client.get("/hello").status_code == 401
        response = client.get("/hello", headers={"Authorization": f"Bearer {token}"})
        assert response.text == "hello graphgate-cli"


def test_websocket_without_token_is_refused(tmp_path: Path) -> None:
    app, token = plain_app(tmp_path)
    with TestClient(app) as client:
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws"):
            pass
        assert closed.value.code == 1008
        with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
            assert ws.receive_text() == "in"


def test_a_failing_metrics_hook_never_turns_401_into_500(tmp_path: Path) -> None:
    def hook(reason: str) -> None:
        raise RuntimeError("metrics down")

    app, _ = plain_app(tmp_path, hook)
    with TestClient(app) as client:
        assert client.get("/hello").status_code == 401
