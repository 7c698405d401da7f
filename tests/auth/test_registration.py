"""The RFC 7591 /register shim: one static public client, redirect URIs checked.

Requests go to the production assembly (`build_parts` + `build_http_app`) in
process; /register needs neither the backend nor the MCP session manager.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.auth.utils import create_client_registration_request, handle_registration_response
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

from graphgate.config import Settings
from graphgate.server import build_http_app, build_parts
from tests.auth._support import IssuerState
from tests.auth.conftest import PUBLIC_URL, make_settings

CLIENT_ID = "graphgate-mcp"


def production_client(settings: Settings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_http_app(build_parts(settings)))
    return httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL)


@pytest.fixture
async def client(tmp_path: Path, issuer: IssuerState) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        tmp_path,
        auth="oidc",
        issuer=issuer.issuer,
        registration="shim",
        static_client_id=CLIENT_ID,
        redirect_uri_allowlist=(
            "cursor://anysphere.cursor-retrieval/oauth/callback,"
            "https://app.example.com/oauth/callback"
        ),
    )
    async with production_client(settings) as asgi:
        yield asgi


def metadata(*uris: str, **extra: Any) -> dict[str, Any]:
    return {"redirect_uris": list(uris), **extra}


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:33418/callback",
        "http://127.0.0.1/callback",
        "http://[::1]:8080/cb",
        "http://localhost:6274/oauth/callback",
        "https://app.example.com/oauth/callback",
        "cursor://anysphere.cursor-retrieval/oauth/callback",
    ],
)
async def test_acceptable_redirect_uris(uri: str, client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/register",
        json=metadata(
            uri, client_name="Claude", grant_types=["authorization_code", "refresh_token"]
        ),
    )
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["client_id"] == CLIENT_ID
    assert "client_secret" not in info
    assert info["token_endpoint_auth_method"] == "none"
    assert info["redirect_uris"] == [uri]
    assert info["client_name"] == "Claude"
    assert info["grant_types"] == ["authorization_code", "refresh_token"]
    assert info["response_types"] == ["code"]
    assert response.headers["cache-control"] == "no-store"
    OAuthClientInformationFull.model_validate(info)


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/callback",
        "http://127.0.0.1.evil.example/cb",
        "http://127.0.0.1@evil.example/cb",
        "http://evil.example@127.0.0.1/cb",
        "https://app.example.com/cb#fragment",
        "https://evil.example/oauth/callback",  # https, but not in the allowlist
        "https://app.example.com/oauth/callback/other",
        "javascript:alert(1)",
        "cursor://other/callback",
        "file:///etc/passwd",
        "http://127.0.0.1:99999/cb",
        "http:///nohost",
        "",
        "x" * 3000,
        "http://127.0.0.1/ cb",
    ],
)
async def test_refused_redirect_uris(uri: str, client: httpx.AsyncClient) -> None:
    response = await client.post("/register", json=metadata("http://127.0.0.1/ok", uri))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"


async def test_without_an_allowlist_any_https_callback_registers(
    tmp_path: Path, issuer: IssuerState
) -> None:
    settings = make_settings(
        tmp_path, auth="oidc", issuer=issuer.issuer, registration="shim", static_client_id=CLIENT_ID
    )
    async with production_client(settings) as asgi:
        ok = await asgi.post("/register", json=metadata("https://web.example/cb"))
        custom = await asgi.post("/register", json=metadata("cursor://x/cb"))
    assert ok.status_code == 201
    assert custom.status_code == 400


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "invalid_redirect_uri"),
        ({"redirect_uris": "http://127.0.0.1/cb"}, "invalid_redirect_uri"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"redirect_uris": [1]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://127.0.0.1/cb"] * 11}, "invalid_redirect_uri"),
        (metadata("http://127.0.0.1/cb", client_name=5), "invalid_client_metadata"),
        (metadata("http://127.0.0.1/cb", client_name="x" * 2000), "invalid_client_metadata"),
        (
            metadata("http://127.0.0.1/cb", grant_types="authorization_code"),
            "invalid_client_metadata",
        ),
        (metadata("http://127.0.0.1/cb", response_types=["token"]), "invalid_client_metadata"),
        (metadata("http://127.0.0.1/cb", contacts="a@b"), "invalid_client_metadata"),
    ],
)
async def test_invalid_metadata(body: Any, error: str, client: httpx.AsyncClient) -> None:
    response = await client.post("/register", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == error


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"text"', "application/json"),
        (b"[" * 100_00, "application/json"),
        (b'{"redirect_uris": ["http://127.0.0.1/cb"]}', "text/plain"),
        (b'{"redirect_uris": ["http://127.0.0.1/cb"]}', ""),
        (b'{"client_name": "' + b"x" * 20_000 + b'"}', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
    ],
)
async def test_malformed_bodies(
    content: bytes, content_type: str, client: httpx.AsyncClient
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/register", content=content, headers=headers)
    # RFC 7591 error bodies; an oversized one is 413 (RFC 9110 §15.5.14).
    assert response.status_code == (413 if len(content) > 16 * 1024 else 400)
    assert response.json()["error"] == "invalid_client_metadata"


async def test_unsupported_grants_are_replaced(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/register",
        json=metadata(
            "http://127.0.0.1/cb",
            grant_types=["client_credentials", "implicit"],
            token_endpoint_auth_method="client_secret_basic",
            extra="ignored",
        ),
    )
    assert response.status_code == 201
    info = response.json()
    assert info["grant_types"] == ["authorization_code"]
    assert info["token_endpoint_auth_method"] == "none"
    assert "extra" not in info


async def test_preflight(client: httpx.AsyncClient) -> None:
    response = await client.options("/register")
    assert response.status_code == 204
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_the_mcp_client_registers(client: httpx.AsyncClient) -> None:
    """The request the MCP Python client builds, and its parser for our answer."""
    client_metadata = OAuthClientMetadata(
        redirect_uris=["http://localhost:3030/callback"],  # type: ignore[list-item]
        client_name="mcp-python",
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope="mcp:tools",
    )
    request = create_client_registration_request(None, client_metadata, PUBLIC_URL)
    # the SDK speaks httpx2; carry its request over and our answer back
    response = await client.request(
        request.method, str(request.url), content=request.content, headers=dict(request.headers)
    )
    info = await handle_registration_response(
        httpx2.Response(
            response.status_code, content=response.content, headers=dict(response.headers)
        )
    )
    assert info.client_id == CLIENT_ID
    assert info.client_secret is None
    assert info.scope == "mcp:tools"
