"""End to end: the `mcp` SDK's OAuth client against graphgate and a real Keycloak.

Every registration mode (``direct``, ``shim``, ``proxy``) runs the whole
sequence a real MCP client does: 401 → protected resource metadata →
authorization server metadata → registration → authorization URL → Keycloak's
login form, filled in and submitted over HTTP as a browser would (and, in
proxy mode, graphgate's consent page first) → callback with the code → token
→ tool calls routed to the user's tenant. Then several users at once, refresh
of an expired access token, a session ended at Keycloak, and what graphgate
refuses: tokens of another realm or audience, tokens without ``mcp:tools``,
users without a catalogued tenant, scopes a client was not granted.

Today's Python client checks the metadata ``issuer`` against the authorization
server named in PRM (RFC 8414 §3.3) and the RFC 9207 ``iss`` of the
authorization response against that metadata. Per mode:

* direct: everything names Keycloak; it works as configured.
* proxy: everything names graphgate's ``public_url``; it works as configured.
* shim: the metadata names graphgate, so Keycloak's ``iss`` (naming
  Keycloak) would stop the client with "Authorization response iss mismatch"
  (asserted, with ``exclude.issuer.from.auth.response`` turned off for the
  test). The realm as shipped has a static client for this mode,
  ``graphgate-shim``, which leaves ``iss`` out, and the flow works with the
  realm exactly as imported.

Client ID Metadata Documents (CIMD), direct mode only: the session's Keycloak
runs with ``--features=cimd`` and, for those tests, a client policy that sends
``https://127.0.0.1/...`` client ids to its CIMD executor
(tests/services/cimd.py). The SDK, given a ``client_metadata_url``, sees
``client_id_metadata_document_supported`` in Keycloak's metadata and skips
registration; Keycloak fetches the document from the test's HTTPS server when
the user arrives, makes a client of it and signs the user in. A missing
document or one whose ``client_id`` is not its URL is refused on Keycloak's
error page (asserted word for word).

Keycloak is started once per session (tests/services/keycloak.py); graphgate
serves each mode in turn at the one URL the realm's audience names.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest
import pytest_asyncio
from mcp.client.auth import OAuthFlowError

from graphgate.config import Settings
from tests.services._common import origin, service_unavailable
from tests.services.cimd import (
    CACHE_EXPIRY_ATTRIBUTE,
    ERR_CLIENT_ID_MISMATCH,
    ERR_DOMAIN_NOT_ALLOWED,
    ERR_FETCH_FAILED,
    LOOPBACK_REDIRECT,
    CimdRealm,
    client_metadata,
)
from tests.services.falkordb import FalkorDBService, seed_tagged_tenants
from tests.services.graphgate import make_parts, serve_http
from tests.services.inspector import Inspector, bearer
from tests.services.keycloak import AdminToken, KeycloakService, demo_password
from tests.services.keycloak_login import LoginError, browser_login, login_for_tokens
from tests.services.mcp_oauth import (
    INITIALIZE,
    MCP_HEADERS,
    OAuthMcpUser,
)
from tests.services.mcp_remote import install as install_mcp_remote
from tests.services.mcp_remote import running_mcp_remote
from tests.services.mcp_results import challenge_error, tool, tool_error
from tests.services.node_client import deliver
from tests.services.oidc_provider import NodeUnavailable

pytestmark = [pytest.mark.keycloak, pytest.mark.falkordb]

MODES = ("direct", "shim", "proxy")
STATIC_CLIENT = "graphgate-mcp"
SHIM_CLIENT = "graphgate-shim"  # the realm's client for registration = shim (no iss)
EXCLUDE_ISS = "exclude.issuer.from.auth.response"
UNGRANTED_SCOPE = "graphgate:everything"
SHORT_LIFESPAN = 5


# -- Keycloak administration ------------------------------------------------------------


class KeycloakAdmin:
    """The few admin REST calls the tests need (master realm's admin-cli, password grant)."""

    def __init__(self, keycloak: KeycloakService, http: httpx.AsyncClient) -> None:
        self.keycloak = keycloak
        self.http = http
        self.token = AdminToken(keycloak, http)

    async def _headers(self) -> dict[str, str]:
        return await self.token.headers()

    async def call(
        self, method: str, path: str, body: Any = None, *, realm: str | None = None
    ) -> Any:
        url = f"{self.keycloak.admin_url(realm)}{path}" if path else self.keycloak.admin_url(realm)
        response = await self.http.request(method, url, json=body, headers=await self._headers())
        if response.status_code >= 400:
            raise AssertionError(f"{method} {url}: HTTP {response.status_code} {response.text}")
        return response.json() if response.content else None

    async def create_realm(self, name: str) -> None:
        response = await self.http.post(
            f"{self.keycloak.base_url}/admin/realms",
            json={"realm": name, "enabled": True},
            headers=await self._headers(),
        )
        assert response.status_code in {201, 409}, response.text

    async def client(self, client_id: str, realm: str | None = None) -> dict[str, Any]:
        found = await self.call("GET", f"/clients?clientId={client_id}", realm=realm)
        assert found, f"no client {client_id}"
        client: dict[str, Any] = found[0]
        return client

    async def set_client_attribute(self, client_id: str, name: str, value: str) -> None:
        client = await self.client(client_id)
        client.setdefault("attributes", {})[name] = value
        await self.call("PUT", f"/clients/{client['id']}", client)

    async def user_id(self, username: str) -> str:
        found = await self.call("GET", f"/users?username={username}&exact=true")
        return str(found[0]["id"])

    async def end_sessions(self, username: str) -> None:
        """What "Sign out" on the user's admin page does: every session of theirs ends."""
        await self.call("POST", f"/users/{await self.user_id(username)}/logout")

    async def sessions(self, username: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.call(
            "GET", f"/users/{await self.user_id(username)}/sessions"
        )
        return result

    async def client_ids(self) -> set[str]:
        return {client["clientId"] for client in await self.call("GET", "/clients")}

    async def service_client(
        self,
        client_id: str,
        *,
        audience: str,
        realm: str | None = None,
        default_scopes: list[str] | None = None,
    ) -> str:
        """A confidential client whose service-account tokens carry ``audience`` and tenants acme.

        Returns its secret. Idempotent: an existing client is reused.
        """
        secret = "s-" + hashlib.sha256(client_id.encode()).hexdigest()[:24]
        existing = await self.call("GET", f"/clients?clientId={client_id}", realm=realm)
        if not existing:
            mappers = [
                {
                    "name": "audience",
                    "protocol": "openid-connect",
                    "protocolMapper": "oidc-audience-mapper",
                    "config": {
                        "included.custom.audience": audience,
                        "access.token.claim": "true",
                        "id.token.claim": "false",
                    },
                },
                {
                    "name": "tenants",
                    "protocol": "openid-connect",
                    "protocolMapper": "oidc-hardcoded-claim-mapper",
                    "config": {
                        "claim.name": "tenants",
                        "claim.value": '["acme"]',
                        "jsonType.label": "JSON",
                        "access.token.claim": "true",
                        "id.token.claim": "false",
                    },
                },
            ]
            await self.call(
                "POST",
                "/clients",
                {
                    "clientId": client_id,
                    "enabled": True,
                    "publicClient": False,
                    "secret": secret,
                    "serviceAccountsEnabled": True,
                    "standardFlowEnabled": False,
                    "directAccessGrantsEnabled": False,
                    "protocolMappers": mappers,
                    "defaultClientScopes": default_scopes or ["basic", "profile"],
                    "optionalClientScopes": [],
                },
                realm=realm,
            )
        return secret

    async def client_credentials(self, client_id: str, secret: str, realm: str) -> str:
        response = await self.http.post(
            f"{self.keycloak.base_url}/realms/{realm}/protocol/openid-connect/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])


# -- the browser ------------------------------------------------------------------------


class _Forms(HTMLParser):
    """The inputs and submit buttons of a page's first form (graphgate's consent page)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.buttons: dict[str, list[str]] = {}
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form" and self.action is None:
            self.action = attributes.get("action", "")
            self._in_form = True
        elif self._in_form and tag == "input" and attributes.get("name"):
            self.fields[attributes["name"]] = attributes.get("value", "")
        elif self._in_form and tag == "button" and attributes.get("name"):
            self.buttons.setdefault(attributes["name"], []).append(attributes.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


@dataclass
class Browser:
    """Plays the user's browser between the MCP client and its loopback callback.

    graphgate's pages (proxy mode's consent screen and callback) are handled
    here with a cookie jar of their own, since the consent approval is bound to
    the browser by a cookie; Keycloak's login and consent pages by
    `browser_login`. Stops at the first redirect to the client's redirect URI.
    """

    http: httpx.AsyncClient
    keycloak_origin: str
    pages: list[str] = field(default_factory=list)
    consents: int = 0

    async def sign_in(self, url: str, username: str, redirect_uri: str) -> str:
        jar: dict[str, str] = {}
        for _ in range(12):
            if url.startswith(redirect_uri):
                return url
            if origin(url) == self.keycloak_origin:
                self.pages.append("keycloak-login")
                url = await browser_login(url, username, demo_password(username), self.http)
                continue
            response = await self._send("GET", url, jar)
            if response.is_redirect:
                url = urljoin(url, response.headers["location"])
                continue
            url = await self._consent(url, response, jar)
        raise AssertionError(f"no redirect to {redirect_uri} after 12 steps")

    async def _consent(self, url: str, page: httpx.Response, jar: dict[str, str]) -> str:
        forms = _Forms()
        forms.feed(page.text)
        assert page.status_code == 200 and "approve" in forms.buttons.get("action", []), (
            f"unexpected page at {url}: HTTP {page.status_code} {page.text[:300]}"
        )
        self.pages.append("graphgate-consent")
        self.consents += 1
        data = {**forms.fields, "action": "approve"}
        target = urljoin(url, forms.action or urlsplit(url).path)
        response = await self._send("POST", target, jar, data=data)
        assert response.is_redirect, f"consent not accepted: HTTP {response.status_code}"
        return urljoin(target, response.headers["location"])

    async def _send(
        self, method: str, url: str, jar: dict[str, str], data: dict[str, str] | None = None
    ) -> httpx.Response:
        headers = {"Accept": "text/html"}
        if jar:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in jar.items())
        response = await self.http.request(
            method, url, data=data, headers=headers, follow_redirects=False
        )
        for header in response.headers.get_list("set-cookie"):
            cookie: SimpleCookie = SimpleCookie()
            with contextlib.suppress(CookieError):
                cookie.load(header)
            for name, morsel in cookie.items():
                if morsel.value and morsel["max-age"] != "0":
                    jar[name] = morsel.value
                else:
                    jar.pop(name, None)
        return response


# -- the MCP client ---------------------------------------------------------------------


class McpUser(OAuthMcpUser):
    """One user's MCP client, with the flow of requests it made named for this suite."""

    def flow(self) -> list[str]:
        """The requests the SDK made, as ``kind@host`` (host ``kc``: Keycloak, ``gg``)."""
        return self.flow_between(self.browser.keycloak_origin, "kc")


def flatten(error: BaseException) -> list[BaseException]:
    """The leaves of an exception group (anyio task groups wrap the client's errors)."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in flatten(inner)]
    return [error, *([error.__cause__] if error.__cause__ else [])]


# -- fixtures ---------------------------------------------------------------------------


@dataclass
class Gateway:
    mode: str
    url: str
    settings: Settings
    keycloak: KeycloakService
    admin: KeycloakAdmin

    @property
    def authorization_server(self) -> str:
        """The issuer PRM names: Keycloak itself only in direct mode."""
        return self.keycloak.issuer if self.mode == "direct" else self.url


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def admin(keycloak: KeycloakService) -> AsyncIterator[KeycloakAdmin]:
    async with httpx.AsyncClient(timeout=30) as http:
        admin = KeycloakAdmin(keycloak, http)
        # A scope that exists in the realm but that no client was granted.
        scopes = await admin.call("GET", "/client-scopes")
        if UNGRANTED_SCOPE not in {scope["name"] for scope in scopes}:
            await admin.call(
                "POST",
                "/client-scopes",
                {
                    "name": UNGRANTED_SCOPE,
                    "protocol": "openid-connect",
                    "attributes": {"include.in.token.scope": "true"},
                },
            )
        yield admin


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def catalog(falkordb_service: FalkorDBService) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    tenants = {"acme": f"e2e_acme_{suffix}", "globex": f"e2e_globex_{suffix}"}
    await seed_tagged_tenants(falkordb_service, tenants)
    return tenants


@pytest_asyncio.fixture(loop_scope="session", scope="session", params=MODES)
async def gateway(
    request: pytest.FixtureRequest,
    keycloak: KeycloakService,
    admin: KeycloakAdmin,
    falkordb_service: FalkorDBService,
    catalog: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Gateway]:
    """graphgate in one registration mode at ``keycloak.public_url``, one mode at a time."""
    mode: str = request.param
    port = urlsplit(keycloak.public_url).port
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "public_url": keycloak.public_url,
        "auth": "oidc",
        "issuer": keycloak.issuer,
        "metrics_token": "e2e-metrics-token",
        "registration": mode,
        "tenants": catalog,
        "allow_writes": True,
        "clock_leeway": 0,  # expiry is tested to the second
        "data_dir": tmp_path_factory.mktemp(f"gg-{mode}"),
    }
    if mode != "direct":
        options["static_client_id"] = SHIM_CLIENT if mode == "shim" else STATIC_CLIENT
    parts = make_parts(falkordb_service.backend(), **options)
    try:
        async with serve_http(parts) as url:
            assert url == keycloak.public_url
            yield Gateway(mode, url, parts.settings, keycloak, admin)
    finally:
        await parts.auth.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def browser(keycloak: KeycloakService) -> AsyncIterator[Browser]:
    async with httpx.AsyncClient(timeout=60) as http:
        yield Browser(http, origin(keycloak.base_url))


@contextlib.asynccontextmanager
async def user(
    gateway: Gateway, browser: Browser, username: str, *, client_metadata_url: str | None = None
) -> AsyncIterator[McpUser]:
    person = McpUser(gateway, username, browser, client_metadata_url=client_metadata_url)
    try:
        yield person
    finally:
        await person.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def short_tokens(admin: KeycloakAdmin) -> AsyncIterator[int]:
    """Access tokens that live ``SHORT_LIFESPAN`` seconds, for the length of one test."""
    realm = await admin.call("GET", "")
    before = realm["accessTokenLifespan"]
    await admin.call("PUT", "", {"accessTokenLifespan": SHORT_LIFESPAN})
    try:
        yield SHORT_LIFESPAN
    finally:
        await admin.call("PUT", "", {"accessTokenLifespan": before})


@dataclass(frozen=True)
class ForeignTokens:
    other_realm: str
    other_audience: str
    without_scope: str


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def foreign_tokens(keycloak: KeycloakService, admin: KeycloakAdmin) -> ForeignTokens:
    """Service-account tokens that are valid Keycloak tokens, each wrong for graphgate in one way.

    Each carries tenants ["acme"] so that only the fault under test can refuse it.
    """
    elsewhere = "graphgate-elsewhere"
    await admin.create_realm(elsewhere)
    scopes = await admin.call("GET", "/client-scopes", realm=elsewhere)
    if "mcp:tools" not in {scope["name"] for scope in scopes}:
        await admin.call(
            "POST",
            "/client-scopes",
            {
                "name": "mcp:tools",
                "protocol": "openid-connect",
                "attributes": {"include.in.token.scope": "true"},
            },
            realm=elsewhere,
        )
    secret = await admin.service_client(
        "intruder", audience=keycloak.resource_url, realm=elsewhere, default_scopes=["mcp:tools"]
    )
    other_realm = await admin.client_credentials("intruder", secret, elsewhere)
    secret = await admin.service_client(
        "other-service", audience="http://other-service.example/mcp"
    )
    other_audience = await admin.client_credentials("other-service", secret, keycloak.realm)
    secret = await admin.service_client("no-tools", audience=keycloak.resource_url)
    without_scope = await admin.client_credentials("no-tools", secret, keycloak.realm)
    return ForeignTokens(other_realm, other_audience, without_scope)


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


async def raw_call(gateway: Gateway, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{gateway.url}/mcp",
            json=INITIALIZE,
            headers={**MCP_HEADERS, "authorization": f"Bearer {token}"},
        )


# -- discovery --------------------------------------------------------------------------


async def test_discovery_names_one_issuer_end_to_end(gateway: Gateway) -> None:
    """401 → PRM → AS metadata, each naming the issuer the client will compare byte for byte."""
    async with httpx.AsyncClient(timeout=30) as http:
        unauthorized = await http.post(f"{gateway.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        assert unauthorized.status_code == 401
        prm_url = f"{gateway.url}/.well-known/oauth-protected-resource/mcp"
        assert f'resource_metadata="{prm_url}"' in unauthorized.headers["www-authenticate"]
        prm = (await http.get(prm_url)).json()
        assert prm["resource"] == f"{gateway.url}/mcp"
        assert prm["authorization_servers"] == [gateway.authorization_server]
        if gateway.mode == "direct":
            metadata_url = f"{gateway.keycloak.issuer}/.well-known/openid-configuration"
        else:
            metadata_url = f"{gateway.url}/.well-known/oauth-authorization-server"
        metadata = (await http.get(metadata_url)).json()
    assert metadata["issuer"] == gateway.authorization_server
    keycloak = gateway.keycloak
    if gateway.mode == "direct":
        assert metadata["registration_endpoint"] == keycloak.registration_endpoint
        assert metadata["authorization_response_iss_parameter_supported"] is True
        # Keycloak started with --features=cimd says so (and adds "none" for public clients).
        assert metadata["client_id_metadata_document_supported"] is True
        assert "none" in metadata["token_endpoint_auth_methods_supported"]
    elif gateway.mode == "shim":
        assert metadata["registration_endpoint"] == f"{gateway.url}/register"
        assert metadata["authorization_endpoint"] == keycloak.authorization_endpoint
        assert metadata["token_endpoint"] == keycloak.token_endpoint
        assert "authorization_response_iss_parameter_supported" not in metadata
        # Everyone goes through the static client: the mirror hides Keycloak's CIMD.
        assert "client_id_metadata_document_supported" not in metadata
    else:
        for endpoint in ("authorization", "token", "registration"):
            path = {"registration": "register"}.get(endpoint, endpoint.replace("ization", "ize"))
            assert metadata[f"{endpoint}_endpoint"] == f"{gateway.url}/{path}"
        assert metadata["authorization_response_iss_parameter_supported"] is True
        assert metadata["scopes_supported"] == ["mcp:tools"]
        # FastMCP's proxy has CIMD of its own (graphgate would fetch the documents, and
        # refuses loopback and private addresses, so it is not exercised here).
        assert metadata["client_id_metadata_document_supported"] is True


# -- signing in -------------------------------------------------------------------------


async def test_sign_in_and_call_tools(gateway: Gateway, browser: Browser) -> None:
    """The whole flow for alice (tenant acme, read), step by step, then tools on her tenant."""
    clients_before = await gateway.admin.client_ids()
    async with user(gateway, browser, "alice") as alice:
        async with alice.session() as client:
            databases = await tool(client, "list_databases")
            rows = await tool(client, "run_query", query="MATCH (t:Tag) RETURN t.tenant")
            refused = await tool_error(client, "run_query", query="RETURN 1", database="globex")
            write = await tool_error(client, "run_write_query", query="CREATE (:X)")

        assert databases == [
            {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"}
        ]
        assert rows["database"] == "acme" and rows["rows"] == [["acme"]]
        assert "not available to you" in refused
        assert "read-only access" in write

        register_at = "kc" if gateway.mode == "direct" else "gg"
        token_at = "gg" if gateway.mode == "proxy" else "kc"
        assert alice.flow()[:6] == [
            "mcp@gg",  # 401 with resource_metadata
            "prm@gg",
            f"asm@{'kc' if gateway.mode == 'direct' else 'gg'}",
            f"register@{register_at}",
            f"token@{token_at}",
            "mcp@gg",  # the same request again, now with the bearer token
        ]
        assert alice.logins == 1
        authorization_url = alice.authorization_urls[0]
        expected_origin = gateway.url if gateway.mode == "proxy" else gateway.keycloak.base_url
        assert origin(authorization_url) == origin(expected_origin)
        query = parse_qs(urlsplit(authorization_url).query)
        assert query["code_challenge_method"] == ["S256"]
        assert query["resource"] == [f"{gateway.url}/mcp"]
        # SEP-2207: the SDK adds offline_access when the metadata lists it (Keycloak's
        # does, and shim mirrors it); graphgate's proxy offers mcp:tools only.
        expected_scope = "mcp:tools" if gateway.mode == "proxy" else "mcp:tools offline_access"
        assert query["scope"] == [expected_scope]

        callback = parse_qs(urlsplit(alice.callbacks[0]).query)
        client_info = alice.storage.client_info
        assert client_info is not None
        token_claims = claims_of(alice.access_token)
        if gateway.mode == "direct":
            # Keycloak registered the client anonymously (its policies: loopback, consent).
            assert client_info.client_id not in clients_before
            assert client_info.client_id in await gateway.admin.client_ids()
            assert browser.pages[-1:] == ["keycloak-login"]
            assert callback["iss"] == [gateway.keycloak.issuer]
            assert token_claims["azp"] == client_info.client_id
        elif gateway.mode == "shim":
            assert client_info.client_id == SHIM_CLIENT
            assert "iss" not in callback  # the realm's exclude.issuer.from.auth.response
            assert token_claims["iss"] == gateway.keycloak.issuer
        else:
            # The client registered at graphgate; Keycloak saw only the static client.
            assert client_info.client_id != STATIC_CLIENT
            assert await gateway.admin.client_ids() == clients_before
            assert browser.pages[-2:] == ["graphgate-consent", "keycloak-login"]
            assert callback["iss"] == [gateway.url]
            assert token_claims["iss"] == gateway.url
            assert token_claims["aud"] == f"{gateway.url}/mcp"
            assert token_claims["client_id"] == client_info.client_id
            assert "tenants" not in token_claims  # rights come from the upstream token
            sessions = await gateway.admin.sessions("alice")
            seen = {name for session in sessions for name in session["clients"].values()}
            # (alice's Keycloak session may still hold the shim run's client too)
            assert STATIC_CLIENT in seen and seen <= {STATIC_CLIENT, SHIM_CLIENT}


@pytest.mark.parametrize("gateway", ["shim"], indirect=True)
async def test_shim_strict_client_refuses_keycloak_iss(gateway: Gateway, browser: Browser) -> None:
    """Without exclude.issuer.from.auth.response the SDK client stops at Keycloak's ``iss``.

    (The other modes name one issuer throughout, so there is nothing to refuse.)
    """
    await gateway.admin.set_client_attribute(SHIM_CLIENT, EXCLUDE_ISS, "false")
    try:
        async with user(gateway, browser, "alice") as alice:
            with pytest.raises(BaseException) as raised:
                async with alice.session():
                    pass
            leaves = [leaf for leaf in flatten(raised.value) if isinstance(leaf, OAuthFlowError)]
            assert [str(leaf) for leaf in leaves] == [
                f"Authorization response iss mismatch: {gateway.keycloak.issuer} != {gateway.url}"
            ]
            assert alice.logins == 1  # the user did sign in; the client refused the answer
            assert alice.storage.tokens is None
    finally:
        await gateway.admin.set_client_attribute(SHIM_CLIENT, EXCLUDE_ISS, "true")


async def test_users_in_parallel_see_only_their_rights(gateway: Gateway, browser: Browser) -> None:
    """Four users sign in and work at once; each token allows what its claims say, no more."""

    async def work(username: str) -> dict[str, Any]:
        async with user(gateway, browser, username) as person, person.session() as client:
            seen: dict[str, Any] = {
                "databases": await tool(client, "list_databases"),
                "rows": (await tool(client, "run_query", query="MATCH (t:Tag) RETURN t.tenant"))[
                    "rows"
                ],
            }
            if username == "dana":
                answer = await tool(
                    client, "query_databases", query="MATCH (t:Tag) RETURN t.tenant"
                )
                seen["all"] = {db: result["rows"] for db, result in answer["results"].items()}
            else:
                other = "globex" if username != "bob" else "acme"
                seen["other"] = await tool_error(
                    client, "run_query", query="RETURN 1", database=other
                )
            if username == "carol":
                created = await tool(client, "run_write_query", query="CREATE (:Note) RETURN 1")
                seen["created"] = created["stats"]["nodes_created"]
                await tool(client, "run_write_query", query="MATCH (n:Note) DELETE n")
            return seen

    alice, bob, carol, dana = await asyncio.gather(
        *(work(n) for n in ("alice", "bob", "carol", "dana"))
    )
    assert alice["databases"] == [
        {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]
    assert alice["rows"] == [["acme"]] and "not available" in alice["other"]
    assert bob["databases"] == [
        {"name": "globex", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]
    assert bob["rows"] == [["globex"]] and "not available" in bob["other"]
    assert carol["databases"] == [
        {"name": "acme", "access": "write", "current": True, "dialect": "FalkorDB"}
    ]
    assert carol["created"] == 1
    assert [d["name"] for d in dana["databases"]] == ["acme", "globex"]
    assert dana["all"] == {"acme": [["acme"]], "globex": [["globex"]]}


# -- mcp-remote, Claude Desktop's bridge -----------------------------------------------


@pytest.fixture(scope="module")
def mcp_remote_installed() -> None:
    try:
        install_mcp_remote()
    except NodeUnavailable as exc:
        service_unavailable(f"mcp-remote (node): {exc}")


@pytest.mark.parametrize("gateway", ["direct", "proxy"], indirect=True)
async def test_mcp_remote_signs_in_and_calls_a_tool(
    gateway: Gateway, browser: Browser, mcp_remote_installed: None, tmp_path: Path
) -> None:
    """Claude Desktop's way in: mcp-remote registers, alice signs in, a tool answers over stdio.

    In direct mode mcp-remote registers at Keycloak itself, with its GitHub page
    as ``client_uri``: the registration the realm's former Trusted Hosts policy
    refused with 403. In proxy mode it registers at graphgate, and Keycloak
    sees only the static client.
    """
    clients_before = await gateway.admin.client_ids()
    async with running_mcp_remote(f"{gateway.url}/mcp", tmp_path) as bridge:
        opened = await bridge.authorization_url()
        landed = await browser.sign_in(opened, "alice", bridge.redirect_uri)
        delivered = await bridge.deliver(landed)
        assert delivered.status_code == 200, delivered.text
        initialized = await bridge.request("initialize", INITIALIZE["params"])
        assert "tools" in initialized["result"]["capabilities"], initialized
        await bridge.notify("notifications/initialized")
        called = await bridge.request(
            "tools/call",
            {"name": "run_query", "arguments": {"query": "MATCH (t:Tag) RETURN t.tenant"}},
        )
        listed = await bridge.request("tools/call", {"name": "list_databases", "arguments": {}})

    for answer in (called, listed):
        assert not answer["result"].get("isError"), answer
    rows = json.loads(called["result"]["content"][0]["text"])
    assert rows["database"] == "acme" and rows["rows"] == [["acme"]]
    assert json.loads(listed["result"]["content"][0]["text"]) == [
        {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]
    assert parse_qs(urlsplit(opened).query)["redirect_uri"] == [bridge.redirect_uri]
    registered = await gateway.admin.client_ids() - clients_before
    if gateway.mode == "direct":
        assert origin(opened) == origin(gateway.keycloak.base_url)
        assert browser.pages == ["keycloak-login"]
        (client_id,) = registered
        client = await gateway.admin.client(client_id)
        assert client["baseUrl"].startswith("https://github.com/")  # its client_uri
        assert client["redirectUris"] == [bridge.redirect_uri]
    else:
        assert origin(opened) == origin(gateway.url)
        assert browser.pages == ["graphgate-consent", "keycloak-login"]
        assert registered == set()


# -- the MCP Inspector's CLI ---------------------------------------------------------------


@pytest.mark.parametrize("gateway", ["direct"], indirect=True)
async def test_inspector_cli_signs_in_at_keycloak_or_takes_a_pasted_token(
    gateway: Gateway, browser: Browser, tmp_path: Path
) -> None:
    """The Inspector's CLI as docs/keycloak.md has a newcomer try the shipped realm.

    With no header it registers at Keycloak itself (direct mode), alice signs in
    and it runs a query; a token bob got through Keycloak's login form for the
    realm's public client, pasted as a header, lists his databases.
    """
    url = f"{gateway.url}/mcp"
    inspector = Inspector(tmp_path / "alice")
    query = ("--tool-name", "run_query", "--tool-arg", "query=MATCH (t:Tag) RETURN t.tenant")
    async with inspector.running(url, "--method", "tools/call", *query) as signing_in:
        opened = await signing_in.authorization_url()
        landed = await browser.sign_in(opened, "alice", inspector.redirect_uri)
        delivered = await deliver(landed)
        assert delivered.status_code == 200, delivered.text
        called = await signing_in.answer()
    async with httpx.AsyncClient(timeout=30) as http:
        tokens = await login_for_tokens(
            issuer=gateway.keycloak.issuer,
            client_id=STATIC_CLIENT,
            username="bob",
            password=demo_password("bob"),
            client=http,
            resource=gateway.keycloak.resource_url,
        )
    pasted = await Inspector(tmp_path / "bob").run(
        url,
        *("--method", "tools/call", "--tool-name", "list_databases"),
        *bearer(tokens["access_token"]),
    )

    assert origin(opened) == origin(gateway.keycloak.base_url)
    assert parse_qs(urlsplit(opened).query)["redirect_uri"] == [inspector.redirect_uri]
    assert browser.pages == ["keycloak-login"]
    rows = called.tool_result()
    assert rows["database"] == "acme" and rows["rows"] == [["acme"]]
    assert pasted.tool_result() == [
        {"name": "globex", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]


# -- lifetimes --------------------------------------------------------------------------


async def test_refresh_then_ended_session_then_fresh_login(
    gateway: Gateway, browser: Browser, short_tokens: int
) -> None:
    """An expired access token is refreshed without the user; a session Keycloak ended is not.

    Ending a user's sessions in Keycloak's admin API also sets a "not before"
    for the user, so every refresh token issued earlier is refused ("Stale
    token"), the offline ones the SDK gets in direct and shim modes (it asks
    for ``offline_access`` because Keycloak lists it) included. The
    not-before has one-second resolution, hence the pause before it.
    """
    async with user(gateway, browser, "alice") as alice, alice.session() as client:
        assert (await tool(client, "run_query", query="RETURN 1"))["rows"] == [[1]]
        first = alice.access_token
        assert alice.storage.tokens is not None and alice.storage.tokens.refresh_token
        assert alice.storage.tokens.expires_in is not None
        assert alice.storage.tokens.expires_in <= short_tokens

        await asyncio.sleep(short_tokens + 1.5)
        expired = await raw_call(gateway, first)
        assert expired.status_code == 401 and challenge_error(expired) == "invalid_token"
        assert "expired" in expired.json()["error_description"]

        assert (await tool(client, "run_query", query="RETURN 2"))["rows"] == [[2]]
        assert alice.logins == 1  # refreshed, no second sign-in
        refreshed = alice.access_token
        assert refreshed != first
        assert (await raw_call(gateway, refreshed)).status_code == 200

        # An admin ends alice's sessions. The access token in hand lives out its
        # lifetime (graphgate verifies signatures, it does not ask Keycloak).
        await asyncio.sleep(1.1)
        await gateway.admin.end_sessions("alice")
        assert (await raw_call(gateway, refreshed)).status_code == 200
        await asyncio.sleep(short_tokens + 1.5)
        assert (await raw_call(gateway, refreshed)).status_code == 401
        assert (await tool(client, "run_query", query="RETURN 3"))["rows"] == [[3]]
        assert alice.logins == 2  # refresh refused → 401 → a fresh sign-in
        assert (await raw_call(gateway, alice.access_token)).status_code == 200


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["erin", "frank"])
async def test_users_without_a_catalogued_tenant_get_403(
    gateway: Gateway, browser: Browser, username: str
) -> None:
    """erin has no tenants, frank only one the catalog lacks: signed in, and refused."""
    async with user(gateway, browser, username) as person:
        response = await person.post_initialize()
        assert person.logins == 1
        assert response.status_code == 403
        assert challenge_error(response) == "access_denied"  # not insufficient_scope: no step-up
        assert "grants no tenant" in response.json()["error_description"]
        assert person.flow()[-1] == "mcp@gg" and person.logins == 1


async def test_foreign_tokens_are_refused(gateway: Gateway, foreign_tokens: ForeignTokens) -> None:
    """Genuine Keycloak tokens, wrong for graphgate: another realm, audience, or no mcp:tools."""
    other_realm = await raw_call(gateway, foreign_tokens.other_realm)
    assert other_realm.status_code == 401 and challenge_error(other_realm) == "invalid_token"

    other_audience = await raw_call(gateway, foreign_tokens.other_audience)
    assert other_audience.status_code == 401
    assert challenge_error(other_audience) == "invalid_token"
    assert other_audience.json()["error_description"] == (
        "The access token was not issued for this resource."
    )

    without_scope = await raw_call(gateway, foreign_tokens.without_scope)
    assert "mcp:tools" not in claims_of(foreign_tokens.without_scope).get("scope", "").split()
    assert without_scope.status_code == 403
    assert challenge_error(without_scope) == "insufficient_scope"
    assert 'scope="mcp:tools"' in without_scope.headers["www-authenticate"]


async def test_a_scope_the_client_was_not_granted_is_refused(
    gateway: Gateway, browser: Browser
) -> None:
    """After signing in normally, the same client asks for a scope it was never granted."""
    async with user(gateway, browser, "alice") as alice:
        assert (await alice.post_initialize()).status_code == 200
        metadata = alice.provider.context.oauth_metadata
        client_info = alice.storage.client_info
        assert metadata is not None and client_info is not None
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = {
            "response_type": "code",
            "client_id": client_info.client_id,
            "redirect_uri": alice.redirect_uri,
            "state": "s1",
            "code_challenge": challenge.decode().rstrip("="),
            "code_challenge_method": "S256",
            "scope": f"mcp:tools {UNGRANTED_SCOPE}",
            "resource": f"{gateway.url}/mcp",
        }
        url = f"{metadata.authorization_endpoint}?{urlencode(query)}"
        answer = parse_qs(urlsplit(await browser.sign_in(url, "alice", alice.redirect_uri)).query)
    assert answer["error"] == ["invalid_scope"]
    assert "code" not in answer


@pytest.mark.parametrize("gateway", ["proxy"], indirect=True)
async def test_forged_and_misused_graphgate_tokens(gateway: Gateway, browser: Browser) -> None:
    """graphgate issues tokens in proxy mode: good only signed by it and as access tokens."""
    async with user(gateway, browser, "alice") as alice:
        assert (await alice.post_initialize()).status_code == 200
        tokens = alice.storage.tokens
        assert tokens is not None and tokens.refresh_token
        header, _payload, signature = alice.access_token.split(".")
        claims = claims_of(alice.access_token)
        forged_payload = base64.urlsafe_b64encode(
            json.dumps({**claims, "client_id": "someone-else"}).encode()
        ).rstrip(b"=")
        forged = f"{header}.{forged_payload.decode()}.{signature}"
        for token in (forged, tokens.refresh_token):
            refused = await raw_call(gateway, token)
            assert refused.status_code == 401 and challenge_error(refused) == "invalid_token"
        assert (await raw_call(gateway, alice.access_token)).status_code == 200


# -- Client ID Metadata Documents (direct mode) -----------------------------------------


TAG_QUERY = "MATCH (t:Tag) RETURN t.tenant"


@pytest.mark.parametrize("gateway", ["direct"], indirect=True)
async def test_cimd_client_signs_in_without_registering(
    gateway: Gateway, browser: Browser, cimd_realm: CimdRealm
) -> None:
    """The SDK's client_id is its document's URL; Keycloak fetches it and signs alice in.

    Then bob with the same client id (Keycloak uses the client it made, no
    second fetch) and carol through ordinary registration, at once: the CIMD
    policy leaves other clients alone.
    """
    documents = cimd_realm.documents
    client_id = documents.new_client_id("mcp-app")
    documents.publish(client_id, client_metadata(client_id, client_name="graphgate e2e app"))
    assert await cimd_realm.client(client_id) is None

    async with user(gateway, browser, "alice", client_metadata_url=client_id) as alice:
        async with alice.session() as client:
            databases = await tool(client, "list_databases")
            rows = await tool(client, "run_query", query=TAG_QUERY)
            refused = await tool_error(client, "run_query", query="RETURN 1", database="globex")
        assert databases == [
            {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"}
        ]
        assert rows["database"] == "acme" and rows["rows"] == [["acme"]]
        assert "not available to you" in refused

        assert alice.flow()[:5] == [
            "mcp@gg",  # 401 with resource_metadata
            "prm@gg",
            "asm@kc",  # client_id_metadata_document_supported: no registration follows
            "token@kc",
            "mcp@gg",
        ]
        assert not any("register" in step for step in alice.flow())
        client_info = alice.storage.client_info
        assert client_info is not None and client_info.client_id == client_id
        assert client_info.token_endpoint_auth_method == "none"
        query = parse_qs(urlsplit(alice.authorization_urls[0]).query)
        assert query["client_id"] == [client_id]
        assert query["redirect_uri"] == [alice.redirect_uri]  # a port the document never named
        assert query["code_challenge_method"] == ["S256"]
        assert browser.pages[-1:] == ["keycloak-login"]
        assert parse_qs(urlsplit(alice.callbacks[0]).query)["iss"] == [gateway.keycloak.issuer]
        claims = claims_of(alice.access_token)
        assert claims["azp"] == client_id
        assert claims["aud"] == gateway.keycloak.resource_url
        assert claims["tenants"] == ["acme"]

    # Keycloak fetched the document once, itself, while alice was at its login page...
    [fetch] = documents.fetched(client_id)
    assert fetch.status == 200 and fetch.user_agent.startswith("Apache-HttpClient/")
    # ...and keeps a public client made from it, with the realm's rules for strangers.
    made = await cimd_realm.client(client_id)
    assert made is not None
    assert made["name"] == "graphgate e2e app"
    assert made["publicClient"] is True
    assert made["redirectUris"] == [LOOPBACK_REDIRECT]
    assert made["consentRequired"] is True and made["fullScopeAllowed"] is False
    assert made["attributes"]["pkce.code.challenge.method"] == "S256"  # graphgate-pkce policy
    assert int(made["attributes"][CACHE_EXPIRY_ATTRIBUTE]) > time.time()
    assert "mcp:tools" in made["defaultClientScopes"]

    async def work(username: str, metadata_url: str | None) -> tuple[McpUser, Any]:
        async with (
            user(gateway, browser, username, client_metadata_url=metadata_url) as person,
            person.session() as session,
        ):
            return person, await tool(session, "list_databases")

    (bob, bob_sees), (carol, carol_sees) = await asyncio.gather(
        work("bob", client_id), work("carol", None)
    )
    assert bob_sees == [
        {"name": "globex", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]
    assert claims_of(bob.access_token)["azp"] == client_id
    assert len(documents.fetched(client_id)) == 1  # cached: max-age 300, Keycloak's minimum
    assert carol_sees == [
        {"name": "acme", "access": "write", "current": True, "dialect": "FalkorDB"}
    ]
    assert "register@kc" in carol.flow()
    assert carol.storage.client_info is not None
    assert carol.storage.client_info.client_id != client_id


@pytest.mark.parametrize("gateway", ["direct"], indirect=True)
@pytest.mark.parametrize(
    ("fault", "fetches", "message"),
    [
        ("missing", [404], ERR_FETCH_FAILED),
        ("foreign-client-id", [200], ERR_CLIENT_ID_MISMATCH),
        ("untrusted-redirect-host", [200], ERR_DOMAIN_NOT_ALLOWED),
        ("untrusted-client-host", [], "Client not found."),
    ],
    ids=["missing", "foreign-client-id", "untrusted-redirect-host", "untrusted-client-host"],
)
async def test_cimd_bad_documents_are_refused(
    gateway: Gateway,
    browser: Browser,
    cimd_realm: CimdRealm,
    fault: str,
    fetches: list[int],
    message: str,
) -> None:
    """Keycloak's error page, and no login, for a client id it must not accept.

    No document at the URL; a document naming another ``client_id``; one whose
    redirect URIs include a host outside the trusted domains; a client id on a
    host the policy does not cover (``localhost``: the policy trusts
    ``127.0.0.1`` only), which Keycloak then treats as an unknown client,
    without fetching anything.
    """
    documents = cimd_realm.documents
    client_id = documents.new_client_id(fault)
    if fault == "foreign-client-id":
        documents.publish(client_id, client_metadata(documents.new_client_id("someone-else")))
    elif fault == "untrusted-redirect-host":
        redirects = [LOOPBACK_REDIRECT, "https://elsewhere.example/callback"]
        documents.publish(client_id, client_metadata(client_id, redirects))
    elif fault == "untrusted-client-host":
        client_id = client_id.replace("//127.0.0.1:", "//localhost:")
        documents.publish(client_id, client_metadata(client_id))
    async with user(gateway, browser, "alice", client_metadata_url=client_id) as alice:
        with pytest.raises(BaseException) as raised:
            async with alice.session():
                pass
        assert alice.storage.tokens is None
        assert alice.flow() == ["mcp@gg", "prm@gg", "asm@kc"]  # no registration, no token
    leaves = [leaf for leaf in flatten(raised.value) if isinstance(leaf, LoginError)]
    assert [str(leaf) for leaf in leaves] == [
        f"unexpected page from the authorization server (HTTP 400): {message}"
    ]
    assert [fetch.status for fetch in documents.fetched(client_id)] == fetches
    assert await cimd_realm.client(client_id) is None
