"""PRM (RFC 9728), the shim's authorization server metadata (RFC 8414), dev discovery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.auth import OAuthFlowError
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    validate_authorization_response_iss,
    validate_metadata_issuer,
)
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from starlette.applications import Starlette

from graphgate.auth import build_auth
from graphgate.auth.dev import DevKeys, dev_verifier, mint_dev_token
from graphgate.auth.discovery import (
    authorization_server_metadata_paths,
    discovery_routes,
    shim_metadata,
)
from graphgate.auth.issuer_documents import IssuerMetadata
from graphgate.config import Settings
from tests.auth._support import IssuerState, closed_port_url
from tests.auth.conftest import PUBLIC_URL, make_settings

PRM_PATHS = ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]


def routes_app(settings: Settings, http: httpx.AsyncClient, **options: Any) -> Starlette:
    setup = build_auth(settings, http, **options)
    return Starlette(routes=setup.routes)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def asgi(app: Starlette, host: str = "graphgate.test:8000") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


async def fetch_prm(app: Starlette, host: str = "graphgate.test:8000") -> list[dict[str, Any]]:
    async with asgi(app, host) as client:
        documents = []
        for path in PRM_PATHS:
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["access-control-allow-origin"] == "*"
            documents.append(response.json())
        return documents


async def test_prm_direct_names_the_issuer(
    tmp_path: Path, issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    settings = make_settings(tmp_path, auth="oidc", issuer=issuer.issuer)
    for document in await fetch_prm(routes_app(settings, http)):
        assert document["resource"] == f"{PUBLIC_URL}/mcp"
        assert document["authorization_servers"] == [issuer.issuer]
        assert document["bearer_methods_supported"] == ["header"]
        assert document["scopes_supported"] == ["mcp:tools"]
        ProtectedResourceMetadata.model_validate(document)
    # byte-equal to the issuer the client will find in that server's metadata
    response = await http.get(f"{issuer.issuer}/.well-known/openid-configuration")
    assert response.json()["issuer"] == document["authorization_servers"][0]


async def test_prm_shim_names_graphgate(
    tmp_path: Path, issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    settings = make_settings(
        tmp_path, auth="oidc", issuer=issuer.issuer, registration="shim", static_client_id="mcp"
    )
    for document in await fetch_prm(routes_app(settings, http)):
        assert document["authorization_servers"] == [PUBLIC_URL]
        assert document["resource"] == settings.resource_url


async def test_prm_dev_names_the_dev_issuer(tmp_path: Path, http: httpx.AsyncClient) -> None:
    settings = make_settings(tmp_path, auth="dev")
    for document in await fetch_prm(routes_app(settings, http)):
        assert document["authorization_servers"] == [settings.dev_issuer]


async def test_urls_never_come_from_the_host_header(
    tmp_path: Path, issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    settings = make_settings(
        tmp_path, auth="oidc", issuer=issuer.issuer, registration="shim", static_client_id="mcp"
    )
    app = routes_app(settings, http)
    documents = await fetch_prm(app, host="evil.example")
    assert all("evil" not in str(document) for document in documents)
    async with asgi(app, host="evil.example") as client:
        response = await client.get(
            "/.well-known/oauth-authorization-server",
            headers={"X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"},
        )
    assert "evil" not in response.text


async def test_no_routes_without_auth(tmp_path: Path, http: httpx.AsyncClient) -> None:
    settings = make_settings(tmp_path)
    assert build_auth(settings, http).provider is None
    assert discovery_routes(settings) == []


async def test_direct_mode_serves_no_authorization_server_metadata(
    tmp_path: Path, issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    settings = make_settings(tmp_path, auth="oidc", issuer=issuer.issuer)
    async with asgi(routes_app(settings, http)) as client:
        assert (await client.get("/.well-known/oauth-authorization-server")).status_code == 404
        assert (await client.post("/register", json={})).status_code == 404


# -- shim ------------------------------------------------------------------------------------


def shim_settings(tmp_path: Path, issuer: str, **extra: Any) -> Settings:
    return make_settings(
        tmp_path,
        auth="oidc",
        issuer=issuer,
        registration="shim",
        static_client_id="graphgate-mcp",
        **extra,
    )


async def test_shim_metadata_at_every_probed_path(
    tmp_path: Path, issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    settings = shim_settings(tmp_path, issuer.issuer)
    paths = authorization_server_metadata_paths(settings)
    for expected in (
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/mcp",
        "/.well-known/openid-configuration/mcp",
        "/mcp/.well-known/openid-configuration",
    ):
        assert expected in paths
    async with asgi(routes_app(settings, http)) as client:
        for path in paths:
            response = await client.get(path)
            assert response.status_code == 200, path
            document = response.json()
            assert document["issuer"] == PUBLIC_URL
            assert document["registration_endpoint"] == f"{PUBLIC_URL}/register"
            assert document["authorization_endpoint"] == issuer.metadata()["authorization_endpoint"]
            assert document["token_endpoint"] == issuer.metadata()["token_endpoint"]
            assert document["jwks_uri"] == issuer.metadata()["jwks_uri"]
            assert "authorization_response_iss_parameter_supported" not in document
    assert issuer.hits["metadata"] == 1  # cached


def test_shim_metadata_leaves_out_client_id_metadata_documents(tmp_path: Path) -> None:
    """Shim mode stands for one static client: no CIMD past it, even if the issuer has it."""
    settings = shim_settings(tmp_path, "https://sso.example.com/realms/graphgate")
    upstream = {
        "issuer": "https://sso.example.com/realms/graphgate",
        "authorization_endpoint": "https://sso.example.com/realms/graphgate/auth",
        "client_id_metadata_document_supported": True,
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
    }
    served = shim_metadata(upstream, settings)
    assert "client_id_metadata_document_supported" not in served
    assert served["authorization_endpoint"] == upstream["authorization_endpoint"]
    assert served["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]
    assert upstream["client_id_metadata_document_supported"] is True  # the input is not changed


async def test_mcp_client_discovery_finds_the_shim(
    tmp_path: Path, issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    """What the MCP Python client does: PRM, then RFC 8414 metadata with issuer checks."""
    settings = shim_settings(tmp_path, issuer.issuer)
    async with asgi(routes_app(settings, http)) as client:
        for url in build_protected_resource_metadata_discovery_urls(None, settings.resource_url):
            assert (await client.get(url)).status_code == 200, url
        prm = ProtectedResourceMetadata.model_validate((await client.get(PRM_PATHS[0])).json())
        auth_server = str(prm.authorization_servers[0])
        urls = build_oauth_authorization_server_metadata_discovery_urls(
            auth_server, settings.resource_url
        )
        response = await client.get(urls[0])
    assert response.status_code == 200
    metadata = OAuthMetadata.model_validate(response.json())
    # RFC 8414 §3.3 issuer equality, as the client checks it: passes.
    validate_metadata_issuer(metadata, auth_server)
    assert str(metadata.registration_endpoint) == f"{PUBLIC_URL}/register"


async def test_strict_clients_in_shim_mode_and_rfc9207_iss(
    tmp_path: Path, issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    """The documented shim limitation, pinned down.

    The real issuer redirects back with its own ``iss`` (RFC 9207); the client
    compares it with the shim's ``issuer`` (``public_url``) and aborts. A
    response without ``iss`` passes, because the shim does not advertise
    ``authorization_response_iss_parameter_supported``.
    """
    settings = shim_settings(tmp_path, issuer.issuer)
    async with asgi(routes_app(settings, http)) as client:
        served = (await client.get("/.well-known/oauth-authorization-server")).json()
    metadata = OAuthMetadata.model_validate(served)
    with pytest.raises(OAuthFlowError, match="iss mismatch"):
        validate_authorization_response_iss(issuer.issuer, metadata)
    validate_authorization_response_iss(None, metadata)
    validate_authorization_response_iss(PUBLIC_URL, metadata)


async def test_shim_issuer_unreachable_then_retry(
    tmp_path: Path, issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    settings = shim_settings(tmp_path, issuer.issuer)
    issuer.down = True
    async with asgi(routes_app(settings, http, retry_after=0.0)) as client:
        response = await client.get("/.well-known/oauth-authorization-server")
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        assert response.headers["retry-after"]
        issuer.down = False
        response = await client.get("/.well-known/oauth-authorization-server")
        assert response.status_code == 200
        assert response.json()["issuer"] == PUBLIC_URL


async def test_shim_issuer_connection_refused_is_503(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    settings = shim_settings(tmp_path, closed_port_url() + "/realms/x")
    async with asgi(routes_app(settings, http)) as client:
        response = await client.get("/.well-known/openid-configuration")
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"


async def test_shim_issuer_with_wrong_metadata_is_502(
    tmp_path: Path, issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    issuer.metadata_extra = {"issuer": "https://impostor.example"}
    settings = shim_settings(tmp_path, issuer.issuer)
    async with asgi(routes_app(settings, http)) as client:
        response = await client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 502
    assert response.json()["error"] == "server_error"


async def test_issuer_metadata_serves_last_good_document_during_outage(
    issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    now = [0.0]
    metadata = IssuerMetadata(http, issuer.issuer, ttl=10, retry_after=5, clock=lambda: now[0])
    first = await metadata.get()
    issuer.down = True
    now[0] = 11
    assert await metadata.get() == first
    assert issuer.hits["metadata"] == 2
    now[0] = 12
    assert await metadata.get() == first
    assert issuer.hits["metadata"] == 2  # within retry_after: no request
    issuer.down = False
    now[0] = 17
    await metadata.get()
    assert issuer.hits["metadata"] == 3


async def test_prm_with_a_path_in_public_url(
    tmp_path: Path, issuer: IssuerState, http: httpx.AsyncClient
) -> None:
    settings = make_settings(
        tmp_path, auth="oidc", issuer=issuer.issuer, public_url="https://gw.example/graphgate"
    )
    app = routes_app(settings, http)
    async with asgi(app) as client:
        for path in (
            "/.well-known/oauth-protected-resource/mcp",
            "/.well-known/oauth-protected-resource/graphgate/mcp",
        ):
            response = await client.get(path)
            assert response.json()["resource"] == "https://gw.example/graphgate/mcp", path


# -- dev ---------------------------------------------------------------------------------------


async def test_dev_discovery_and_jwks(tmp_path: Path, http: httpx.AsyncClient) -> None:
    settings = make_settings(tmp_path, auth="dev")
    async with asgi(routes_app(settings, http)) as client:
        for path in (
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server/mcp",
        ):
            document = (await client.get(path)).json()
            assert document["issuer"] == settings.dev_issuer
            assert document["jwks_uri"] == f"{settings.dev_issuer}/.well-known/jwks.json"
            assert document["scopes_supported"] == ["mcp:tools"]
            assert "response_types_supported" in document
            assert "grant_types_supported" in document
        jwks = (await client.get("/.well-known/jwks.json")).json()
        options = await client.options("/.well-known/jwks.json")
        assert options.status_code == 204
    assert jwks == DevKeys.load_or_create(settings.data_dir).jwks
    assert "d" not in jwks["keys"][0]
    token = mint_dev_token(settings, "dana", ["acme"], False, 60)
    assert (await dev_verifier(settings).verify(token)).subject == "dana"
