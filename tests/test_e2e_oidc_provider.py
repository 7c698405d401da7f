"""End to end against a second, independent OpenID Connect server: nothing Keycloak-specific.

The same sequence as tests/test_e2e_keycloak.py, with the `mcp` SDK's OAuth
client, against npm's certified `oidc-provider` (tests/oidc_provider/server.mjs,
started by tests/services/oidc_provider.py): 401 → protected resource metadata
→ authorization server metadata → registration → authorization URL → the
provider's own login and consent pages, filled in over HTTP as a browser would
(in proxy mode graphgate's consent page first) → callback with the code →
token → tool calls routed to the user's tenant. In ``direct`` and ``proxy``
modes.

The provider's tokens look nothing like Keycloak's: ES256 JWT access tokens
(``typ: at+jwt``, RFC 9068) with ``aud`` from the RFC 8707 resource indicator,
opaque subjects, tenants in a top-level claim named by a URL
(``https://graphgate.example/groups``, entries prefixed ``graphgate-``), the
admin flag in a single string claim ``roles`` and the starting tenant in a
nested ``org.home``. graphgate reads them through settings alone
(`GRAPHGATE_SETTINGS`): ``tenants_claim``, ``tenant_prefix``,
``default_tenant_claim``, ``admin_claim``, ``admin_value``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from graphgate.auth.rights import rights_from_claims
from graphgate.config import Settings, claims_rules
from tests.services._common import origin
from tests.services.falkordb import FalkorDBService, seed_tagged_tenants
from tests.services.graphgate import make_parts, serve_http
from tests.services.mcp_oauth import (
    INITIALIZE,
    MCP_HEADERS,
    OAuthMcpUser,
)
from tests.services.mcp_results import challenge_error, tool, tool_error
from tests.services.oidc_provider import (
    Browser,
    OidcProviderService,
    provider_login,
    provider_password,
)

pytestmark = [pytest.mark.falkordb]

MODES = ("direct", "proxy")
TAG_QUERY = "MATCH (t:Tag) RETURN t.tenant"


def decode_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# -- the MCP client ---------------------------------------------------------------------


class McpUser(OAuthMcpUser):
    """One user's MCP client, with the flow of requests it made named for this suite."""

    def flow(self) -> list[str]:
        """The requests the SDK made, as ``kind@host`` (host ``op``: the provider, ``gg``)."""
        return self.flow_between(origin(self.gateway.provider.issuer), "op")


# -- fixtures ---------------------------------------------------------------------------


@dataclass
class Gateway:
    mode: str
    url: str
    settings: Settings
    provider: OidcProviderService

    @property
    def authorization_server(self) -> str:
        """The issuer PRM names: the provider itself only in direct mode."""
        return self.provider.issuer if self.mode == "direct" else self.url


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def catalog(falkordb_service: FalkorDBService) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    tenants = {"acme": f"op_acme_{suffix}", "globex": f"op_globex_{suffix}"}
    await seed_tagged_tenants(falkordb_service, tenants)
    return tenants


@pytest_asyncio.fixture(loop_scope="session", scope="module", params=MODES)
async def gateway(
    request: pytest.FixtureRequest,
    oidc_provider: OidcProviderService,
    falkordb_service: FalkorDBService,
    catalog: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Gateway]:
    """graphgate in one registration mode at ``oidc_provider.public_url``, one mode at a time."""
    mode: str = request.param
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": urlsplit(oidc_provider.public_url).port,
        "public_url": oidc_provider.public_url,
        "auth": "oidc",
        "issuer": oidc_provider.issuer,
        "metrics_token": "e2e-metrics-token",
        "registration": mode,
        "tenants": catalog,
        "allow_writes": True,
        "data_dir": tmp_path_factory.mktemp(f"gg-op-{mode}"),
        **oidc_provider.settings,  # the provider's claim shapes: settings, nothing else
    }
    if mode == "proxy":
        options["static_client_id"] = oidc_provider.proxy_client_id
    parts = make_parts(falkordb_service.backend(), **options)
    try:
        async with serve_http(parts) as url:
            assert url == oidc_provider.public_url
            yield Gateway(mode, url, parts.settings, oidc_provider)
    finally:
        await parts.auth.aclose()


@pytest.fixture
def browser(oidc_provider: OidcProviderService) -> Browser:
    async def login(url: str, username: str) -> str:
        return await provider_login(url, username, provider_password(username))

    return Browser(origin(oidc_provider.issuer), login)


@contextlib.asynccontextmanager
async def user(gateway: Gateway, browser: Browser, username: str) -> AsyncIterator[McpUser]:
    person = McpUser(gateway, username, browser)
    try:
        yield person
    finally:
        await person.aclose()


# -- tests ------------------------------------------------------------------------------


async def test_discovery_names_one_issuer(gateway: Gateway) -> None:
    """401 → PRM → the provider's OIDC discovery (direct) or graphgate's metadata (proxy)."""
    async with httpx.AsyncClient(timeout=30) as http:
        unauthorized = await http.post(f"{gateway.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        assert unauthorized.status_code == 401
        prm_url = f"{gateway.url}/.well-known/oauth-protected-resource/mcp"
        assert f'resource_metadata="{prm_url}"' in unauthorized.headers["www-authenticate"]
        prm = (await http.get(prm_url)).json()
        assert prm["resource"] == f"{gateway.url}/mcp"
        assert prm["authorization_servers"] == [gateway.authorization_server]
        if gateway.mode == "direct":
            metadata_url = gateway.provider.discovery_url
        else:
            metadata_url = f"{gateway.url}/.well-known/oauth-authorization-server"
        metadata = (await http.get(metadata_url)).json()
    assert metadata["issuer"] == gateway.authorization_server
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert "S256" in metadata["code_challenge_methods_supported"]
    if gateway.mode == "direct":
        assert metadata["registration_endpoint"] == gateway.provider.registration_endpoint
    else:
        assert metadata["registration_endpoint"] == f"{gateway.url}/register"
        assert metadata["authorization_endpoint"] == f"{gateway.url}/authorize"
        assert metadata["token_endpoint"] == f"{gateway.url}/token"


async def test_sign_in_lands_in_the_users_tenant(gateway: Gateway, browser: Browser) -> None:
    """ann (groups graphgate-acme, staff): the whole flow, then her tenant and nothing else."""
    async with user(gateway, browser, "ann") as ann:
        async with ann.session() as client:
            databases = await tool(client, "list_databases")
            rows = await tool(client, "run_query", query=TAG_QUERY)
            refused = await tool_error(client, "run_query", query="RETURN 1", database="globex")
            write = await tool_error(client, "run_write_query", query="CREATE (:X)")

        assert databases == [
            {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"}
        ]
        assert rows["database"] == "acme" and rows["rows"] == [["acme"]]
        assert "not available to you" in refused
        assert "read-only access" in write

        at = "op" if gateway.mode == "direct" else "gg"
        assert ann.flow() == [
            "mcp@gg",  # 401 with resource_metadata
            "prm@gg",
            f"asm@{at}",
            f"register@{at}",
            f"token@{at}",
            "mcp@gg",  # the same request again with the bearer token, then the tool calls
        ]
        assert ann.logins == 1
        query = parse_qs(urlsplit(ann.authorization_urls[0]).query)
        assert origin(ann.authorization_urls[0]) == origin(
            gateway.provider.issuer if gateway.mode == "direct" else gateway.url
        )
        assert query["code_challenge_method"] == ["S256"]
        assert query["resource"] == [f"{gateway.url}/mcp"]
        callback = parse_qs(urlsplit(ann.callbacks[0]).query)
        assert callback["iss"] == [gateway.authorization_server]  # RFC 9207, checked by the SDK

        client_info = ann.storage.client_info
        assert client_info is not None
        token = ann.access_token
        claims = decode_part(token, 1)
        if gateway.mode == "direct":
            assert query["scope"] == ["mcp:tools offline_access"]  # SEP-2207: the AS lists it
            assert ann.browser.pages == ["idp-login"]
            assert decode_part(token, 0)["alg"] == "ES256"
            assert decode_part(token, 0)["typ"] == "at+jwt"
            assert claims["iss"] == gateway.provider.issuer
            assert claims["aud"] == f"{gateway.url}/mcp"
            assert claims["client_id"] == client_info.client_id
            assert claims["scope"] == "mcp:tools"
            assert claims["https://graphgate.example/groups"] == ["graphgate-acme", "staff"]
            assert claims["sub"].startswith("acct-")
            # The settings are what makes these claims mean something: graphgate's
            # defaults (Keycloak's shapes) find no tenant in the very same token.
            defaults = Settings(tenants=gateway.settings.tenants)
            assert dict(rights_from_claims(claims, claims_rules(defaults)).tenants) == {}
            assert dict(rights_from_claims(claims, claims_rules(gateway.settings)).tenants) == {
                "acme": "read"
            }
        else:
            # The client registered at graphgate; the provider saw only the static client.
            assert query["scope"] == ["mcp:tools"]
            assert client_info.client_id != gateway.provider.proxy_client_id
            assert ann.browser.pages == ["graphgate-consent", "idp-login"]
            assert claims["iss"] == gateway.url
            assert claims["aud"] == f"{gateway.url}/mcp"
            assert "https://graphgate.example/groups" not in claims  # rights come from upstream


async def test_claim_shapes_mapped_by_settings(gateway: Gateway, browser: Browser) -> None:
    """ben: a prefixed ``:write`` entry, a second tenant, and a nested starting tenant."""
    async with user(gateway, browser, "ben") as ben, ben.session() as client:
        databases = await tool(client, "list_databases")
        created = await tool(client, "run_write_query", query="CREATE (:Note) RETURN 1")
        await tool(client, "run_write_query", query="MATCH (n:Note) DELETE n")
        refused = await tool_error(
            client, "run_write_query", query="CREATE (:Note)", database="acme"
        )
    assert databases == [
        {"name": "acme", "access": "read", "current": False, "dialect": "FalkorDB"},
        {"name": "globex", "access": "write", "current": True, "dialect": "FalkorDB"},  # org.home
    ]
    assert created["database"] == "globex" and created["stats"]["nodes_created"] == 1
    assert "read-only access" in refused


async def test_admin_reaches_every_tenant(gateway: Gateway, browser: Browser) -> None:
    """ops holds ``roles: "graphgate-operator"`` (one string, no tenants): every tenant."""
    async with user(gateway, browser, "ops") as ops, ops.session() as client:
        databases = await tool(client, "list_databases")
        answer = await tool(client, "query_databases", query=TAG_QUERY)
    assert [(d["name"], d["access"]) for d in databases] == [
        ("acme", "write"),
        ("globex", "write"),
    ]
    assert {db: result["rows"] for db, result in answer["results"].items()} == {
        "acme": [["acme"]],
        "globex": [["globex"]],
    }


@pytest.mark.parametrize("username", ["nel", "ivy"])
async def test_users_without_a_catalogued_tenant_get_403(
    gateway: Gateway, browser: Browser, username: str
) -> None:
    """nel has only unprefixed groups, ivy only a tenant the catalog lacks: signed in, refused."""
    async with user(gateway, browser, username) as person:
        response = await person.post_initialize()
        assert person.logins == 1
        assert response.status_code == 403
        assert challenge_error(response) == "access_denied"  # not insufficient_scope: no step-up
        assert "grants no tenant" in response.json()["error_description"]
