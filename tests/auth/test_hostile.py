"""Hostile tokens and requests against graphgate as deployed.

Every variant goes over real HTTP to the production assembly (`build_parts`
+ `build_http_app`, the real tools, `auth = oidc` against a local issuer) and
must end in 401 or 403 with the RFC 6750 / RFC 9728 challenge, never a 500
and never a tool result; the operator's /metrics counts it under its reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from graphgate.server import build_http_app, build_parts
from tests.auth._app import gated_app, running
from tests.auth._support import (
    IssuerState,
    SigningKey,
    b64json,
    b64url,
    claims_for,
    serve,
)
from tests.auth.conftest import PUBLIC_URL, make_settings
from tests.services.falkordb import FalkorDBService
from tests.services.raw_mcp import tool_call_body, tool_call_headers

PRM = f"{PUBLIC_URL}/.well-known/oauth-protected-resource/mcp"
CHALLENGE = f'Bearer resource_metadata="{PRM}", scope="mcp:tools"'
AUDIENCE = f"{PUBLIC_URL}/mcp"
METRICS_TOKEN = "hostile-suite-metrics"
# The default (sessionless) protocol's headers for a tools/call of list_databases.
MCP_HEADERS = tool_call_headers("list_databases")

Headers = list[tuple[str | bytes, str | bytes]]


@dataclass
class Case:
    """One hostile request: how to build it and what must come back."""

    name: str
    build: Callable[[Ctx], Headers]
    status: int = 401
    error: str | None = "invalid_token"
    query: str = ""
    reason: str | None = None


@dataclass
class Ctx:
    issuer: str
    keys: dict[str, SigningKey]

    def claims(self, **extra: Any) -> dict[str, Any]:
        return claims_for(self.issuer, AUDIENCE, **extra)

    def token(self, key: str = "rsa", headers: dict[str, Any] | None = None, **claims: Any) -> str:
        return self.keys[key].sign(self.claims(**claims), **(headers or {}))

    def raw(self, header: Any, payload: Any, signature: str = "c2ln") -> str:
        return f"{b64json(header)}.{b64json(payload)}.{signature}"


def as_bytes(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [
        (
            name.encode() if isinstance(name, str) else name,
            value.encode("latin-1") if isinstance(value, str) else value,
        )
        for name, value in headers
    ]


def bearer(token: str) -> Headers:
    return [("Authorization", f"Bearer {token}")]


def _hs256_with_public_key(ctx: Ctx) -> Headers:
    public = ctx.keys["rsa"].private.public_key()
    secret = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64json({'alg': 'HS256', 'kid': 'rsa-1'})}.{b64json(ctx.claims())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return bearer(f"{signing_input}.{b64url(signature)}")


def _tampered_payload(ctx: Ctx) -> Headers:
    header, _, signature = ctx.token().split(".")
    return bearer(f"{header}.{b64json(ctx.claims(sub='root', tenants=['globex']))}.{signature}")


def _tampered_header(ctx: Ctx) -> Headers:
    _, payload, signature = ctx.token().split(".")
    forged = b64json({"alg": "RS256", "kid": "rsa-1", "typ": "at+jwt"})
    return bearer(f"{forged}.{payload}.{signature}")


def _attacker_jwk(ctx: Ctx) -> dict[str, Any]:
    return ctx.keys["attacker"].public_jwk()


CASES: list[Case] = [
    Case("no token", lambda ctx: [], error=None, reason="missing_token"),
    Case("empty authorization header", lambda ctx: [("Authorization", "")], error=None),
    Case("basic scheme", lambda ctx: [("Authorization", "Basic dXNlcjpwdw==")], error=None),
    Case("bearer without token", lambda ctx: [("Authorization", "Bearer")]),
    Case("bearer with two words", lambda ctx: bearer("abc def")),
    Case("expired", lambda ctx: bearer(ctx.token(ttl=-3600)), reason="expired"),
    Case(
        "not yet valid",
        lambda ctx: bearer(ctx.token(nbf=claims_for("", "")["iat"] + 3600)),
        reason="not_yet_valid",
    ),
    Case(
        "iat in the future",
        lambda ctx: bearer(ctx.token(iat=claims_for("", "")["iat"] + 3600)),
        reason="issued_in_future",
    ),
    Case(
        "wrong issuer",
        lambda ctx: bearer(ctx.token(iss="https://evil.example")),
        reason="wrong_issuer",
    ),
    Case(
        "issuer with trailing slash",
        lambda ctx: bearer(ctx.token(iss=ctx.issuer + "/")),
        reason="wrong_issuer",
    ),
    Case("missing issuer", lambda ctx: bearer(ctx.token(iss=None)), reason="missing_claim"),
    Case(
        "wrong audience",
        lambda ctx: bearer(ctx.token(aud="https://other.example/mcp")),
        reason="wrong_audience",
    ),
    Case(
        "audience list without ours",
        lambda ctx: bearer(ctx.token(aud=["https://a.example/mcp", AUDIENCE + "/"])),
        reason="wrong_audience",
    ),
    Case("missing audience", lambda ctx: bearer(ctx.token(aud=None)), reason="missing_claim"),
    Case(
        "alg none, empty signature",
        lambda ctx: bearer(ctx.raw({"alg": "none"}, ctx.claims(), signature="")),
        reason="malformed",
    ),
    Case(
        "alg none with a signature",
        lambda ctx: bearer(ctx.raw({"alg": "none", "kid": "rsa-1"}, ctx.claims())),
        reason="alg_not_allowed",
    ),
    Case(
        "alg NONE",
        lambda ctx: bearer(ctx.raw({"alg": "NONE", "kid": "rsa-1"}, ctx.claims())),
        reason="alg_not_allowed",
    ),
    Case("HS256 signed with the public key", _hs256_with_public_key, reason="alg_not_allowed"),
    Case(
        "alg with trailing space",
        lambda ctx: bearer(ctx.raw({"alg": "RS256 ", "kid": "rsa-1"}, ctx.claims())),
        reason="alg_not_allowed",
    ),
    Case(
        "ES256 header on an RSA key",
        lambda ctx: bearer(ctx.token(key="ec", headers={"kid": "rsa-1"})),
        reason="key_mismatch",
    ),
    Case("unknown kid", lambda ctx: bearer(ctx.token(key="attacker")), reason="unknown_kid"),
    Case(
        "kid of a key not in the JWKS",
        lambda ctx: bearer(ctx.token(key="rsa2")),
        reason="unknown_kid",
    ),
    Case(
        "attacker key under our kid",
        lambda ctx: bearer(ctx.token(key="attacker", headers={"kid": "rsa-1"})),
        reason="bad_signature",
    ),
    Case(
        "kid as a number",
        lambda ctx: bearer(ctx.raw({"alg": "RS256", "kid": 7}, ctx.claims())),
        reason="bad_header",
    ),
    Case(
        "overlong kid",
        lambda ctx: bearer(ctx.raw({"alg": "RS256", "kid": "k" * 300}, ctx.claims())),
        reason="bad_header",
    ),
    Case("tampered payload", _tampered_payload, reason="bad_signature"),
    Case("tampered header", _tampered_header, reason="bad_signature"),
    Case("truncated signature", lambda ctx: bearer(ctx.token()[:-12])),
    Case(
        "truncated to two segments",
        lambda ctx: bearer(".".join(ctx.token().split(".")[:2])),
        reason="malformed",
    ),
    Case("oversized", lambda ctx: bearer(ctx.token(pad="x" * 20_000)), reason="oversized"),
    Case("garbage base64", lambda ctx: bearer("%%%.$$$.@@@"), reason="malformed"),
    Case("two dots only", lambda ctx: bearer(".."), reason="malformed"),
    Case("four segments", lambda ctx: bearer(ctx.token() + ".AAAA"), reason="malformed"),
    Case(
        "non-JSON header",
        lambda ctx: bearer(f"{b64url(b'hello')}.{b64json(ctx.claims())}.c2ln"),
        reason="malformed",
    ),
    Case(
        "header is a JSON array",
        lambda ctx: bearer(ctx.raw(["RS256"], ctx.claims())),
        reason="bad_header",
    ),
    Case(
        "deeply nested header",
        lambda ctx: bearer(f"{b64url(b'[' * 1500)}.{b64json(ctx.claims())}.c2ln"),
        reason="malformed",
    ),
    Case(
        "jku pointing at attacker keys",
        lambda ctx: bearer(
            ctx.token(key="attacker", headers={"jku": "https://evil.example/jwks.json"})
        ),
        reason="unknown_kid",
    ),
    Case(
        "jku with our kid",
        lambda ctx: bearer(
            ctx.token(
                key="attacker", headers={"kid": "rsa-1", "jku": "https://evil.example/jwks.json"}
            )
        ),
        reason="bad_signature",
    ),
    Case(
        "x5u pointing at attacker certificate",
        lambda ctx: bearer(
            ctx.token(
                key="attacker", headers={"kid": "rsa-1", "x5u": "https://evil.example/cert.pem"}
            )
        ),
        reason="bad_signature",
    ),
    Case(
        "embedded jwk of the attacker",
        lambda ctx: bearer(
            ctx.token(key="attacker", headers={"kid": "rsa-1", "jwk": _attacker_jwk(ctx)})
        ),
        reason="bad_signature",
    ),
    Case(
        "embedded jwk without kid",
        lambda ctx: bearer(
            ctx.token(key="attacker", headers={"kid": None, "jwk": _attacker_jwk(ctx)})
        ),
        reason="unknown_kid",
    ),
    Case(
        "crit header",
        lambda ctx: bearer(ctx.token(headers={"crit": ["exp"], "exp": 1})),
        reason="crit_header",
    ),
    Case(
        "b64 false header",
        lambda ctx: bearer(ctx.raw({"alg": "RS256", "kid": "rsa-1", "b64": False}, ctx.claims())),
        reason="crit_header",
    ),
    Case("exp as string", lambda ctx: bearer(ctx.token(exp="9999999999")), reason="bad_claim_type"),
    Case("exp infinite", lambda ctx: bearer(ctx.token(exp=float("inf"))), reason="malformed"),
    Case("exp as boolean", lambda ctx: bearer(ctx.token(exp=True))),
    Case("exp 1e308", lambda ctx: bearer(ctx.token(exp=1e308)), reason="lifetime_too_long"),
    Case(
        "lifetime past max_token_lifetime",
        lambda ctx: bearer(ctx.token(ttl=2 * 86400)),
        reason="lifetime_too_long",
    ),
    Case(
        "iat backdated a year, exp in an hour",
        lambda ctx: bearer(ctx.token(iat=claims_for("", "")["iat"] - 366 * 86400)),
        reason="lifetime_too_long",
    ),
    Case(
        "scope as a JSON list (RFC 8693 says a string)",
        lambda ctx: bearer(ctx.token(scope=["openid", "mcp:tools"])),
        reason="bad_claim_type",
    ),
    Case(
        "scope as list of ints",
        lambda ctx: bearer(ctx.token(scope=[1, 2])),
        reason="bad_claim_type",
    ),
    Case(
        "scope as object",
        lambda ctx: bearer(ctx.token(scope={"mcp:tools": True})),
        reason="bad_claim_type",
    ),
    Case("missing sub", lambda ctx: bearer(ctx.token(sub=None)), reason="missing_claim"),
    Case("empty sub", lambda ctx: bearer(ctx.token(sub="")), reason="missing_claim"),
    Case("sub as number", lambda ctx: bearer(ctx.token(sub=42)), reason="bad_claim_type"),
    Case("missing exp", lambda ctx: bearer(ctx.token(exp=None)), reason="missing_claim"),
    Case("missing iat", lambda ctx: bearer(ctx.token(iat=None)), reason="missing_claim"),
    Case(
        "non-ASCII in the token",
        lambda ctx: [(b"Authorization", "Bearer tök.en.x".encode("latin-1"))],
        reason="malformed",
    ),
    Case(
        "token in the query string",
        lambda ctx: [],
        query="access_token=x.y.z",
        error="invalid_request",
        reason="query_token",
    ),
    Case(
        "percent-encoded query token",
        lambda ctx: [],
        query="access%5Ftoken=x",
        error="invalid_request",
        reason="query_token",
    ),
    Case(
        "token in query and header",
        lambda ctx: bearer(ctx.token()),
        query="access_token=x.y.z",
        error="invalid_request",
        reason="query_token",
    ),
    Case(
        "two Authorization headers",
        lambda ctx: bearer(ctx.token()) + bearer(ctx.token(sub="bob")),
        error="invalid_request",
        reason="multiple_headers",
    ),
    Case(
        "missing scope",
        lambda ctx: bearer(ctx.token(scope="openid profile")),
        status=403,
        error="insufficient_scope",
        reason="insufficient_scope",
    ),
    Case(
        "no scope claim at all",
        lambda ctx: bearer(ctx.token(scope=None)),
        status=403,
        error="insufficient_scope",
    ),
    Case(
        "tenants as int",
        lambda ctx: bearer(ctx.token(tenants=7)),
        status=403,
        error="access_denied",
        reason="no_tenants",
    ),
    Case(
        "tenants as dict",
        lambda ctx: bearer(ctx.token(tenants={"acme": "write"})),
        status=403,
        error="access_denied",
    ),
    Case(
        "tenants absent",
        lambda ctx: bearer(ctx.token(tenants=None)),
        status=403,
        error="access_denied",
    ),
    Case(
        "tenant in other case",
        lambda ctx: bearer(ctx.token(tenants=["ACME"])),
        status=403,
        error="access_denied",
    ),
    Case(
        "tenant look-alike (Cyrillic a)",
        lambda ctx: bearer(ctx.token(tenants=["\u0430cme"])),
        status=403,
        error="access_denied",
    ),
    Case(
        "tenant with zero-width space",
        lambda ctx: bearer(ctx.token(tenants=["acme\u200b"])),
        status=403,
        error="access_denied",
    ),
    Case(
        "tenant not in catalog",
        lambda ctx: bearer(ctx.token(tenants=["initech:write"])),
        status=403,
        error="access_denied",
    ),
    Case(
        "admin role under a literal dotted claim name",
        lambda ctx: bearer(ctx.token(tenants=None, **{"realm_access.roles": ["graphgate-admin"]})),
        status=403,
        error="access_denied",
    ),
    Case(
        "tenant padded with a no-break space",
        lambda ctx: bearer(ctx.token(tenants=["\u00a0acme\u2003"])),
        status=403,
        error="access_denied",
    ),
    Case(
        "admin claim of the wrong shape",
        lambda ctx: bearer(ctx.token(tenants=None, realm_access={"roles": {"graphgate-admin": 1}})),
        status=403,
        error="access_denied",
    ),
]


@pytest.fixture(scope="module")
def production(
    issuer_server: tuple[str, IssuerState],
    tmp_path_factory: pytest.TempPathFactory,
    falkordb_service: FalkorDBService,
) -> Iterator[str]:
    """graphgate as deployed (`build_parts` + `build_http_app`, the real tools), over HTTP."""
    _, state = issuer_server
    settings = make_settings(
        tmp_path_factory.mktemp("hostile"),
        auth="oidc",
        issuer=state.issuer,
        metrics_token=METRICS_TOKEN,
    )
    parts = build_parts(settings)
    parts.backend = falkordb_service.backend()
    with serve(build_http_app(parts)) as base:
        yield base


@pytest.fixture
async def client(production: str, issuer: IssuerState) -> AsyncIterator[httpx.AsyncClient]:
    # The Host a client of PUBLIC_URL sends; the server itself listens on loopback.
    host = {"host": PUBLIC_URL.split("://", 1)[1]}
    async with httpx.AsyncClient(base_url=production, headers=host, timeout=30) as http:
        yield http


async def auth_failures(client: httpx.AsyncClient) -> Counter[str]:
    """Refusals by reason, as the operator's /metrics shows them."""
    response = await client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    counts: Counter[str] = Counter()
    for line in response.text.splitlines():
        if line.startswith("graphgate_auth_failures_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def tool_call(name: str = "list_databases", request_id: int = 1) -> dict[str, Any]:
    return tool_call_body(name, {}, request_id)


def listed_tenants(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert "result" in body and not body["result"]["isError"], body
    listing = json.loads(body["result"]["content"][0]["text"])
    return {entry["name"]: entry["access"] for entry in listing}


def assert_challenge(response: httpx.Response, case: Case) -> None:
    assert response.status_code == case.status, (case.name, response.text)
    header = response.headers["www-authenticate"]
    assert header.startswith(CHALLENGE), header
    if case.error is None:
        assert header == CHALLENGE
        assert "error" not in response.json()
    else:
        assert f'error="{case.error}"' in header
        assert response.json()["error"] == case.error
    assert 'scope=""' not in header
    assert "result" not in response.text


def test_there_are_enough_variants() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_hostile_request_gets_the_challenge(
    case: Case,
    client: httpx.AsyncClient,
    issuer: IssuerState,
    keys: dict[str, SigningKey],
) -> None:
    before = await auth_failures(client)
    headers = case.build(Ctx(issuer.issuer, keys)) + list(MCP_HEADERS.items())
    url = f"/mcp?{case.query}" if case.query else "/mcp"
    response = await client.post(url, json=tool_call(), headers=as_bytes(headers))
    assert_challenge(response, case)
    counted = await auth_failures(client) - before
    assert sum(counted.values()) == 1, counted
    if case.reason is not None:
        assert list(counted) == [case.reason]
    for name, value in headers:
        if name.lower() in ("authorization", b"authorization"):
            shown = value.decode("latin-1") if isinstance(value, bytes) else value
            token = shown.partition(" ")[2]
            if len(token) > 8:
                assert token not in response.text
                assert token not in response.headers["www-authenticate"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_scheme_is_case_insensitive(
    scheme: str, client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    token = Ctx(issuer.issuer, keys).token(tenants=["acme", "globex:write"])
    response = await client.post(
        "/mcp",
        json=tool_call(),
        headers={**MCP_HEADERS, "Authorization": f"{scheme} {token}"},
    )
    assert response.status_code == 200, response.text
    assert listed_tenants(response) == {"acme": "read", "globex": "read"}  # allow_writes is off


async def test_every_other_path_needs_a_token(client: httpx.AsyncClient) -> None:
    for path in ("/mcp", "/mcp/", "/admin", "/register", "/auth/callback"):
        response = await client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == CHALLENGE
    metrics = await client.get("/metrics")
    assert metrics.status_code == 401  # its own secret, not an MCP token
    assert "graphgate_" not in metrics.text


async def test_open_paths_stay_open(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/oauth-protected-resource/mcp")
    assert response.status_code == 200
    response = await client.get("/healthz")
    assert response.status_code == 200


async def test_issuer_outage_gives_503_then_recovers(
    tmp_path: Path, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    settings = make_settings(tmp_path, auth="oidc", issuer=issuer.issuer)
    issuer.down = True
    async with httpx.AsyncClient() as http:
        app, _ = gated_app(settings, http, retry_after=0.0)
        transport = httpx.ASGITransport(app=app)
        async with (
            running(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            token = Ctx(issuer.issuer, keys).token()
            headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
            response = await client.post("/mcp", json=tool_call(), headers=headers)
            assert response.status_code in (502, 503)
            assert response.json()["error"] in ("temporarily_unavailable", "server_error")
            assert "retry-after" in response.headers
            issuer.down = False
            response = await client.post("/mcp", json=tool_call(), headers=headers)
            assert response.status_code == 200, response.text


async def test_good_token_of_another_key_type(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    token = Ctx(issuer.issuer, keys).token(key="ec", tenants=["/globex"])
    response = await client.post(
        "/mcp", json=tool_call(), headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    assert listed_tenants(response) == {"globex": "read"}


def test_case_table_is_json_safe() -> None:
    # the descriptions in challenges are ASCII without quotes (RFC 6750 §3)
    from graphgate.auth.tokens import describe

    for reason in ("expired", "bad_signature", "wrong_audience", "anything"):
        text = describe(reason)
        assert text.isascii() and '"' not in text and "\\" not in text
        json.dumps(text)


async def test_audiences_that_are_not_urls_are_checked_exactly(
    issuer: IssuerState,
    keys: dict[str, SigningKey],
    tmp_path: Path,
    falkordb_service: FalkorDBService,
) -> None:
    """Entra ID, authentik and Zitadel put a client id, GUID or api:// name in ``aud``."""
    guid = "6e1c1a39-0f3b-4d6e-9a61-2b8e1d7c5f42"
    settings = make_settings(
        tmp_path, auth="oidc", issuer=issuer.issuer, audience=f"{guid},api://graphgate"
    )
    parts = build_parts(settings)
    parts.backend = falkordb_service.backend()
    ctx = Ctx(issuer.issuer, keys)
    host = {"host": PUBLIC_URL.split("://", 1)[1]}
    with serve(build_http_app(parts)) as base:
        async with httpx.AsyncClient(base_url=base, headers=host, timeout=30) as http:
            for aud, status in [
                (guid, 200),
                ("api://graphgate", 200),
                ([guid, "other"], 200),
                (guid.upper(), 401),
                ("api://graphgate/", 401),
                (AUDIENCE, 401),  # the default no longer applies once audience is set
            ]:
                token = ctx.token(aud=aud)
                response = await http.post(
                    "/mcp",
                    json=tool_call(),
                    headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"},
                )
                assert response.status_code == status, (aud, response.text)
