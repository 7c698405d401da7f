"""registration = proxy against a small fake issuer: no Keycloak, every step in-process.

The fake issuer (real HTTP on loopback) has discovery, JWKS, an authorization
endpoint that signs the user in at once, a token endpoint with PKCE, refresh
and revocation. graphgate runs in-process through ASGI; the proxy talks to the
fake issuer over the network, as it would to Keycloak. The Keycloak version of
all this is tests/test_e2e_keycloak.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from graphgate.auth import AuthSetup
from graphgate.auth.discovery import authorization_server_metadata_paths
from graphgate.auth.proxy import KEY_FILE, proxy_signing_key, redirect_patterns
from graphgate.auth.tokens import describe
from graphgate.config import Settings
from graphgate.errors import ConfigError
from tests.auth._app import MCP_HEADERS, gated_app, running, tool_call, tool_result
from tests.auth._support import SigningKey, claims_for, serve
from tests.auth.conftest import make_settings
from tests.services.redis import RedisService

# The MCP SDK serves OAuth endpoints over https only, or http on loopback (RFC 8414 §2).
PUBLIC_URL = "http://127.0.0.1:8300"
REALM = "/realms/upstream"
CLIENT = "graphgate-mcp"
REDIRECT = "http://127.0.0.1:47111/callback"
RESOURCE = f"{PUBLIC_URL}/mcp"

USERS: dict[str, dict[str, Any]] = {
    "alice": {"tenants": ["acme"]},
    "dana": {"realm_access": {"roles": ["graphgate-admin"]}},
    "erin": {},
}


# -- the fake issuer --------------------------------------------------------------------


@dataclass
class Upstream:
    """State of the fake issuer; tests read and change it while it serves."""

    key: SigningKey
    issuer: str = ""
    user: str = "alice"
    ttl: int = 300
    down: bool = False
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh: dict[str, str] = field(default_factory=dict)  # refresh token -> user
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    metadata_requests: int = 0

    def access_token(self, user: str) -> str:
        return self.key.sign(
            claims_for(self.issuer, RESOURCE, ttl=self.ttl, sub=user, azp=CLIENT, **_claims(user))
        )

    def end_sessions(self) -> None:
        self.refresh.clear()


def _claims(user: str) -> dict[str, Any]:
    extra = dict(USERS[user])
    extra.setdefault("tenants", None)
    return extra


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def upstream_app(state: Upstream) -> Starlette:
    async def metadata(request: Request) -> Response:
        state.metadata_requests += 1
        if state.down:
            return PlainTextResponse("down", status_code=503)
        base = state.issuer
        return JSONResponse(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/auth",
                "token_endpoint": f"{base}/token",
                "revocation_endpoint": f"{base}/revoke",
                "jwks_uri": f"{base}/certs",
                "response_types_supported": ["code"],
                "scopes_supported": ["openid", "mcp:tools", "offline_access"],
                "authorization_response_iss_parameter_supported": True,
            }
        )

    async def certs(request: Request) -> Response:
        return JSONResponse({"keys": [state.key.public_jwk()]})

    async def authorize(request: Request) -> Response:
        query = dict(request.query_params)
        state.authorize_requests.append(query)
        code = secrets.token_urlsafe(16)
        state.codes[code] = {**query, "user": state.user}
        target = f"{query['redirect_uri']}?" + urlencode(
            {"code": code, "state": query["state"], "iss": state.issuer}
        )
        return RedirectResponse(target, status_code=302)

    async def token(request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        state.token_requests.append(form)
        if form.get("client_id") != CLIENT:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form["grant_type"] == "authorization_code":
            grant = state.codes.pop(form.get("code", ""), None)
            if (
                grant is None
                or grant["redirect_uri"] != form.get("redirect_uri")
                or _s256(form.get("code_verifier", "")) != grant["code_challenge"]
            ):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            user = str(grant["user"])
        elif form["grant_type"] == "refresh_token":
            found = state.refresh.pop(form.get("refresh_token", ""), None)
            if found is None:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Session not active"},
                    status_code=400,
                )
            user = found
        else:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        refresh = secrets.token_urlsafe(24)
        state.refresh[refresh] = user
        return JSONResponse(
            {
                "access_token": state.access_token(user),
                "token_type": "Bearer",
                "expires_in": state.ttl,
                "refresh_token": refresh,
                "refresh_expires_in": 1800,
                "scope": "mcp:tools profile",
            }
        )

    async def revoke(request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route(f"{REALM}/.well-known/openid-configuration", metadata),
            Route(f"{REALM}/certs", certs),
            Route(f"{REALM}/auth", authorize),
            Route(f"{REALM}/token", token, methods=["POST"]),
            Route(f"{REALM}/revoke", revoke, methods=["POST"]),
        ]
    )


@pytest.fixture(scope="module")
def upstream_server(keys: dict[str, SigningKey]) -> Iterator[Upstream]:
    state = Upstream(keys["rsa"])
    with serve(upstream_app(state)) as base:
        state.issuer = base + REALM
        yield state


@pytest.fixture
def upstream(upstream_server: Upstream) -> Iterator[Upstream]:
    upstream_server.user = "alice"
    upstream_server.ttl = 300
    upstream_server.down = False
    yield upstream_server
    upstream_server.down = False


def proxy_settings(tmp_path: Path, upstream: Upstream, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth": "oidc",
        "issuer": upstream.issuer,
        "registration": "proxy",
        "static_client_id": CLIENT,
        "clock_leeway": 0,
        "public_url": PUBLIC_URL,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


@dataclass
class Gateway:
    """graphgate in proxy mode, in-process, with a client that keeps its cookies."""

    client: httpx.AsyncClient
    setup: AuthSetup
    settings: Settings


@pytest.fixture
async def gateway(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Gateway]:
    async with httpx.AsyncClient(timeout=10) as http:
        settings = proxy_settings(tmp_path, upstream)
        app, setup = gated_app(settings, http)
        async with running(app), asgi_client(app) as client:
            yield Gateway(client, setup, settings)


def asgi_client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL, timeout=10
    )


# -- the client side --------------------------------------------------------------------


class _ConsentForm(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "input" and attributes.get("name"):
            self.fields[attributes["name"]] = attributes.get("value", "")


async def register(client: httpx.AsyncClient, *uris: str) -> httpx.Response:
    return await client.post(
        "/register",
        json={
            "redirect_uris": list(uris or [REDIRECT]),
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": "mcp:tools",
            "client_name": "unit",
        },
    )


@dataclass
class Flow:
    client_id: str
    verifier: str
    redirect: str  # where graphgate finally sent the browser


async def authorize(
    gateway: Gateway, *, scope: str = "mcp:tools", replica: httpx.AsyncClient | None = None
) -> Flow:
    """Register, authorize, approve consent, pass the fake issuer, land on the callback.

    ``replica`` (another graphgate sharing the state store) handles the callback.
    """
    client = gateway.client
    registered = await register(client)
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]
    verifier = secrets.token_urlsafe(48)
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "state": "client-state",
        "code_challenge": _s256(verifier),
        "code_challenge_method": "S256",
        "scope": scope,
        "resource": RESOURCE,
    }
    started = await client.get("/authorize", params=query)
    assert started.status_code == 302, started.text
    location = started.headers["location"]
    if location.startswith(REDIRECT):  # refused before any consent
        return Flow(client_id, verifier, location)
    page = await client.get(location)
    assert page.status_code == 200
    form = _ConsentForm()
    form.feed(page.text)
    approved = await client.post(
        "/consent", data={**form.fields, "action": "approve"}, follow_redirects=False
    )
    assert approved.status_code == 302, approved.text
    async with httpx.AsyncClient(timeout=10) as browser:
        at_issuer = await browser.get(approved.headers["location"])
    assert at_issuer.status_code == 302
    callback = at_issuer.headers["location"]
    assert callback.startswith(f"{PUBLIC_URL}/auth/callback?")
    path = callback.removeprefix(PUBLIC_URL)
    handler = replica or client
    if replica is not None:  # the browser carries its cookies to whichever replica answers
        replica.cookies = client.cookies
    landed = await handler.get(path)
    assert landed.status_code == 302, landed.text
    return Flow(client_id, verifier, landed.headers["location"])


async def sign_in(gateway: Gateway, replica: httpx.AsyncClient | None = None) -> dict[str, Any]:
    flow = await authorize(gateway, replica=replica)
    answer = parse_qs(urlsplit(flow.redirect).query)
    assert answer["state"] == ["client-state"]
    assert answer["iss"] == [PUBLIC_URL]  # RFC 9207, exactly the metadata's issuer
    response = await gateway.client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": answer["code"][0],
            "redirect_uri": REDIRECT,
            "client_id": flow.client_id,
            "code_verifier": flow.verifier,
            "resource": RESOURCE,
        },
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    tokens["client_id"] = flow.client_id
    return tokens


async def whoami(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(
        "/mcp", json=tool_call(), headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    )


def payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# -- discovery and registration ---------------------------------------------------------


async def test_metadata_names_public_url_exactly(gateway: Gateway) -> None:
    prm = (await gateway.client.get("/.well-known/oauth-protected-resource/mcp")).json()
    assert prm["authorization_servers"] == [PUBLIC_URL]
    assert prm["resource"] == RESOURCE
    for path in authorization_server_metadata_paths(gateway.settings):
        response = await gateway.client.get(path)
        assert response.status_code == 200, path
        metadata = response.json()
        # No trailing slash: clients compare with PRM's value byte for byte (RFC 8414 §3.3).
        assert metadata["issuer"] == PUBLIC_URL
        assert metadata["authorization_endpoint"] == f"{PUBLIC_URL}/authorize"
        assert metadata["token_endpoint"] == f"{PUBLIC_URL}/token"
        assert metadata["registration_endpoint"] == f"{PUBLIC_URL}/register"
        assert metadata["authorization_response_iss_parameter_supported"] is True
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert metadata["scopes_supported"] == ["mcp:tools"]


async def test_no_network_until_needed(tmp_path: Path, upstream: Upstream) -> None:
    """Building the proxy fetches nothing: graphgate starts while the issuer is down."""
    upstream.down = True
    before = upstream.metadata_requests
    async with httpx.AsyncClient(timeout=10) as http:
        app, _ = gated_app(proxy_settings(tmp_path, upstream), http)
        assert upstream.metadata_requests == before
        async with running(app), asgi_client(app) as client:
            registered = await register(client)
            flow_client = registered.json()["client_id"]
            started = await client.get(
                "/authorize",
                params={
                    "response_type": "code",
                    "client_id": flow_client,
                    "redirect_uri": REDIRECT,
                    "state": "s",
                    "code_challenge": _s256("v" * 50),
                    "code_challenge_method": "S256",
                    "scope": "mcp:tools",
                },
            )
    answer = parse_qs(urlsplit(started.headers["location"]).query)
    assert answer["error"] == ["temporarily_unavailable"]


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("http://127.0.0.1:5000/callback", True),
        ("http://localhost:7/cb", True),
        ("http://[::1]:9/cb", True),
        ("https://vscode.dev/redirect", True),  # in the allowlist below
        ("https://vscode.dev/other", False),
        ("https://evil.example/cb", False),
        ("http://evil.example/cb", False),
        ("http://127.0.0.1@evil.example/cb", False),
        ("javascript:alert(1)", False),
    ],
)
async def test_registration_admits_loopback_and_the_allowlist(
    tmp_path: Path, upstream: Upstream, uri: str, allowed: bool
) -> None:
    settings = proxy_settings(
        tmp_path, upstream, redirect_uri_allowlist="https://vscode.dev/redirect"
    )
    assert redirect_patterns(settings)[-1] == "https://vscode.dev/redirect"
    async with httpx.AsyncClient(timeout=10) as http:
        app, _ = gated_app(settings, http)
        async with running(app), asgi_client(app) as client:
            response = await register(client, uri)
    assert (response.status_code == 201) is allowed, response.text
    if not allowed:
        assert response.json()["error"] in {"invalid_redirect_uri", "invalid_client_metadata"}


CLIENT_CALLBACKS = {
    # What these clients register today (docs/clients.md): every URI must pass.
    "vscode": [
        "https://insiders.vscode.dev/redirect",
        "https://vscode.dev/redirect",
        "http://127.0.0.1/",
        "http://127.0.0.1:33418/",
    ],
    "cursor": [
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "https://www.cursor.com/agents/mcp/oauth/callback",
        "http://localhost:8787/callback",
    ],
    "mcp-remote": ["http://localhost:3335/oauth/callback"],
    "claude-code": ["http://localhost:54321/callback"],
}
DOCUMENTED_ALLOWLIST = [
    "https://vscode.dev/redirect",
    "https://insiders.vscode.dev/redirect",
    "cursor://anysphere.cursor-mcp/oauth/callback",
    "https://www.cursor.com/agents/mcp/oauth/callback",
]


@pytest.mark.parametrize("client", sorted(CLIENT_CALLBACKS))
async def test_the_documented_allowlist_admits_real_clients(
    tmp_path: Path, upstream: Upstream, client: str
) -> None:
    uris = CLIENT_CALLBACKS[client]
    loopback_only = all(uri.startswith(("http://127.0.0.1", "http://localhost")) for uri in uris)
    async with httpx.AsyncClient(timeout=10) as http:
        for allowlist, expected in (([], loopback_only), (DOCUMENTED_ALLOWLIST, True)):
            settings = proxy_settings(tmp_path, upstream, redirect_uri_allowlist=allowlist)
            app, _ = gated_app(settings, http)
            async with running(app), asgi_client(app) as gateway:
                response = await register(gateway, *uris)
            assert (response.status_code == 201) is expected, (allowlist, response.text)


# -- tokens -----------------------------------------------------------------------------


async def test_rights_come_from_the_upstream_token(gateway: Gateway, upstream: Upstream) -> None:
    tokens = await sign_in(gateway)
    claims = payload(tokens["access_token"])
    assert claims["iss"] == PUBLIC_URL and claims["aud"] == RESOURCE
    assert "tenants" not in claims and "sub" not in claims  # a reference, not the identity
    response = await whoami(gateway.client, tokens["access_token"])
    assert response.status_code == 200, response.text
    assert tool_result(response) == {
        "issuer": upstream.issuer,
        "subject": "alice",
        "client_id": tokens["client_id"],
        "tenants": {"acme": "read"},
        "admin": False,
    }
    # Keycloak's side: one client, PKCE of the proxy's own, graphgate's callback.
    sent = upstream.authorize_requests[-1]
    assert sent["client_id"] == CLIENT
    assert sent["redirect_uri"] == f"{PUBLIC_URL}/auth/callback"
    assert sent["code_challenge_method"] == "S256"
    assert sent["scope"] == "mcp:tools"


async def test_admin_and_tenantless_users(gateway: Gateway, upstream: Upstream) -> None:
    upstream.user = "dana"
    dana = await sign_in(gateway)
    result = tool_result(await whoami(gateway.client, dana["access_token"]))
    assert result["admin"] is True and result["tenants"] == {"acme": "read", "globex": "read"}
    upstream.user = "erin"
    erin = await sign_in(gateway)
    refused = await whoami(gateway.client, erin["access_token"])
    assert refused.status_code == 403
    assert 'error="access_denied"' in refused.headers["www-authenticate"]


async def test_refresh_rotates_and_follows_the_upstream_session(
    gateway: Gateway, upstream: Upstream
) -> None:
    tokens = await sign_in(gateway)

    async def refresh(token: str) -> httpx.Response:
        return await gateway.client.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": token,
                "client_id": tokens["client_id"],
            },
        )

    renewed = await refresh(tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    fresh = renewed.json()
    assert fresh["access_token"] != tokens["access_token"]
    assert (await whoami(gateway.client, fresh["access_token"])).status_code == 200
    assert upstream.token_requests[-1]["grant_type"] == "refresh_token"
    # The old refresh token was rotated out.
    reused = await refresh(tokens["refresh_token"])
    assert reused.status_code == 401 and reused.json()["error"] == "invalid_grant"
    # The issuer ends the session: graphgate's refresh token dies with it.
    upstream.end_sessions()
    ended = await refresh(fresh["refresh_token"])
    assert ended.status_code == 401 and ended.json()["error"] == "invalid_grant"


async def test_graphgate_tokens_that_must_not_pass(gateway: Gateway, upstream: Upstream) -> None:
    tokens = await sign_in(gateway)
    key = proxy_signing_key(gateway.settings)  # what the proxy signs its tokens with
    good = tokens["access_token"]
    claims = payload(good)

    def forge(key: bytes | str, **changes: Any) -> str:
        return jwt.encode({**claims, **changes}, key, algorithm="HS256")

    cases = {
        "wrong key": forge(secrets.token_urlsafe(32)),
        "expired": forge(key, iat=claims["iat"] - 120, exp=claims["iat"] - 60),
        "refresh token as access token": tokens["refresh_token"],
        "unknown jti": forge(key, jti="no-such-jti"),
        "other audience": forge(key, aud="http://elsewhere.example/mcp"),
        "another HS256 issuer": forge(key, iss="http://elsewhere.example"),
        "alg none": jwt.encode(claims, "", algorithm="none"),
    }
    for name, token in cases.items():
        response = await whoami(gateway.client, token)
        assert response.status_code == 401, name
        assert 'error="invalid_token"' in response.headers["www-authenticate"], name
    expired = await whoami(gateway.client, cases["expired"])
    assert expired.json()["error_description"] == "The access token has expired."
    assert (await whoami(gateway.client, good)).status_code == 200


async def test_issuer_tokens_are_accepted_as_in_direct_mode(
    gateway: Gateway, upstream: Upstream
) -> None:
    """A service account's token straight from the issuer still works (and is checked)."""
    ok = await whoami(gateway.client, upstream.access_token("alice"))
    assert ok.status_code == 200 and tool_result(ok)["client_id"] == CLIENT
    foreign = upstream.key.sign(claims_for(upstream.issuer, "http://elsewhere.example/mcp"))
    assert (await whoami(gateway.client, foreign)).status_code == 401


async def test_graphgate_token_expires_with_the_upstream_one(
    gateway: Gateway, upstream: Upstream
) -> None:
    """graphgate's token lives as long as the issuer's; the client then refreshes."""
    upstream.ttl = 1
    tokens = await sign_in(gateway)
    upstream.ttl = 300
    assert tokens["expires_in"] == 1
    await asyncio.sleep(2.1)
    refused = await whoami(gateway.client, tokens["access_token"])
    assert refused.status_code == 401
    assert refused.json()["error_description"] == "The access token has expired."


async def test_a_scope_not_registered_is_refused_before_the_issuer(
    gateway: Gateway, upstream: Upstream
) -> None:
    before = len(upstream.authorize_requests)
    flow = await authorize(gateway, scope="mcp:tools graphgate:everything")
    answer = parse_qs(urlsplit(flow.redirect).query)
    assert answer["error"] == ["invalid_scope"]
    assert len(upstream.authorize_requests) == before


# Each defect, once in a token of the issuer and once in a token of graphgate's proxy.
DEFECTS: dict[str, tuple[str, Any]] = {
    "expired": ("expired", lambda now: {"iat": now - 120, "exp": now - 60}),
    "not yet valid": ("not_yet_valid", lambda now: {"nbf": now + 3600}),
    "issued in the future": ("issued_in_future", lambda now: {"iat": now + 3600}),
    "another audience": ("wrong_audience", lambda now: {"aud": "http://elsewhere.example/mcp"}),
    "no exp": ("missing_claim", lambda now: {"exp": None}),
    "exp as a string": ("bad_claim_type", lambda now: {"exp": str(now + 60)}),
    "lifetime past max_token_lifetime": ("lifetime_too_long", lambda now: {"exp": now + 2 * 86400}),
}


async def test_both_paths_refuse_a_defect_for_the_same_reason(
    tmp_path: Path, upstream: Upstream
) -> None:
    """The issuer's tokens and the proxy's go through one decode: one defect, one reason."""
    reasons: list[str] = []
    async with httpx.AsyncClient(timeout=10) as http:
        settings = proxy_settings(tmp_path, upstream)
        app, setup = gated_app(settings, http, on_failure=reasons.append)
        async with running(app), asgi_client(app) as client:
            gateway = Gateway(client, setup, settings)
            proxy_claims = payload((await sign_in(gateway))["access_token"])
            key = proxy_signing_key(settings)
            now = proxy_claims["iat"]
            for name, (reason, change) in DEFECTS.items():
                issuer_claims = claims_for(upstream.issuer, RESOURCE, sub="alice", azp=CLIENT)
                tokens = {
                    "issuer": upstream.key.sign(
                        {k: v for k, v in {**issuer_claims, **change(now)}.items() if v is not None}
                    ),
                    "proxy": jwt.encode(
                        {k: v for k, v in {**proxy_claims, **change(now)}.items() if v is not None},
                        key,
                        algorithm="HS256",
                    ),
                }
                for path, token in tokens.items():
                    reasons.clear()
                    response = await whoami(client, token)
                    assert response.status_code == 401, (name, path, response.text)
                    assert reasons == [reason], (name, path)
                    assert response.json()["error_description"] == describe(reason), (name, path)


async def test_sign_in_works_once_an_issuer_down_at_start_is_back(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Registered while the issuer was down, signed in once it is back: one shared store."""
    upstream.down = True
    async with httpx.AsyncClient(timeout=10) as http:
        settings = proxy_settings(tmp_path, upstream)
        app, setup = gated_app(settings, http, retry_after=0.0)
        async with running(app), asgi_client(app) as client:
            registered = await register(client)
            assert registered.status_code == 201, registered.text
            upstream.down = False
            tokens = await sign_in(Gateway(client, setup, settings))
            assert (await whoami(client, tokens["access_token"])).status_code == 200


async def test_steps_that_need_the_issuer_show_a_page_while_it_is_down(
    tmp_path: Path, upstream: Upstream
) -> None:
    """The consent approval and the callback are browser steps: a page a person can read."""
    upstream.down = True
    async with httpx.AsyncClient(timeout=10) as http:
        app, _ = gated_app(proxy_settings(tmp_path, upstream), http)
        async with running(app), asgi_client(app) as client:
            answers = [
                await client.get("/auth/callback", params={"code": "c", "state": "s"}),
                await client.post("/consent", data={"action": "approve", "txn_id": "t"}),
            ]
            shown = await client.get("/consent", params={"txn_id": "t"})
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["retry-after"] == "5"
        assert answer.headers["cache-control"] == "no-store"
        assert "Sign-in unavailable" in answer.text
        assert "try again shortly" in answer.text
    # Showing the consent page needs no issuer: FastMCP answers (here: no such transaction).
    assert shown.status_code != 503


# -- keys and state ---------------------------------------------------------------------


def test_signing_key_file_and_secret(tmp_path: Path, upstream: Upstream) -> None:
    settings = proxy_settings(tmp_path, upstream)
    key = proxy_signing_key(settings)
    path = settings.data_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert proxy_signing_key(settings) == key  # stable across restarts
    confidential = proxy_settings(tmp_path, upstream, static_client_secret="s" * 32)
    derived = proxy_signing_key(confidential)
    assert derived == proxy_signing_key(confidential) and derived != key
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="delete it"):
        proxy_signing_key(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"issuer": PUBLIC_URL}, "identity provider"),
        ({"public_url": "http://graphgate.example.com"}, "https"),
    ],
)
def test_settings_proxy_mode_refuses(
    tmp_path: Path, upstream: Upstream, overrides: dict[str, str], message: str
) -> None:
    from graphgate.auth import build_auth

    settings = proxy_settings(tmp_path, upstream, **overrides)
    with pytest.raises(ConfigError, match=message):
        build_auth(settings, httpx.AsyncClient())


@pytest.mark.falkordb
async def test_replicas_share_state_through_redis(
    tmp_path: Path, upstream: Upstream, redis_service: RedisService
) -> None:
    """One replica starts the flow, another takes the callback, tokens work on both.

    The values in Redis are encrypted: the upstream tokens never sit there readable.
    """
    import redis.asyncio as redis

    settings = proxy_settings(tmp_path, upstream, state_url=redis_service.url)
    async with httpx.AsyncClient(timeout=10) as http:
        app_a, setup_a = gated_app(settings, http)
        app_b, setup_b = gated_app(settings, http)
        async with (
            running(app_a),
            running(app_b),
            asgi_client(app_a) as a,
            asgi_client(app_b) as b,
        ):
            tokens = await sign_in(Gateway(a, setup_a, settings), replica=b)
            assert (await whoami(b, tokens["access_token"])).status_code == 200
            assert (await whoami(a, tokens["access_token"])).status_code == 200
        await setup_a.aclose()
        await setup_b.aclose()
    raw = redis.Redis.from_url(redis_service.url, decode_responses=True)
    try:
        keys = [key async for key in raw.scan_iter("graphgate-oauth*")]
        assert keys
        values = [await raw.get(key) for key in keys]
        dumped = json.dumps(values)
        assert "refresh_token" not in dumped and upstream.issuer not in dumped
    finally:
        await raw.aclose()
