"""The demo signs people in through the browser: the dev issuer as an authorization server.

A real graphgate (``demo``, so ``auth = dev`` on loopback, the demo data
seeded) and the `mcp` SDK's OAuth client: 401 → PRM → the dev issuer's
metadata → ``/register`` → ``/authorize`` → the sign-in page, where the test
plays the browser and picks a demo user → callback → ``/token`` → tool calls
that see exactly that user's tenants. Then the protocol's edges, attacked
over raw HTTP: foreign redirect URIs, codes used twice, with the wrong
verifier or by another client, refresh tokens rotated, registration bodies
oversized or malformed, the sign-in page's one-time requests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import pytest_asyncio

from graphgate.auth.dev import mint_dev_token
from graphgate.config import Settings
from tests.services.dev_sign_in import open_sign_in_page, parse_sign_in_page, pick_user
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.mcp_oauth import INITIALIZE, MCP_HEADERS, OAuthMcpUser
from tests.services.mcp_results import tool, tool_error

pytestmark = [pytest.mark.falkordb]


@dataclass
class Demo:
    url: str
    settings: Settings


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def demo(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Demo]:
    """``graphgate serve --demo --allow-writes`` on a loopback port, the demo data seeded."""
    suffix = uuid.uuid4().hex[:6]
    catalog = {"acme": f"signin_acme_{suffix}", "globex": f"signin_globex_{suffix}"}
    options = http_settings(
        demo=True,
        tenants=catalog,
        allow_writes=True,
        data_dir=tmp_path_factory.mktemp("gg-demo-sign-in"),
        registration_rate_limit=0,  # the hostile tests register many clients from one address
    )
    parts = make_parts(falkordb_service.backend(), **options)
    assert parts.settings.auth == "dev"
    async with serve_http(parts) as url:
        yield Demo(url, parts.settings)


class DevBrowser:
    """The `SignsIn` of the SDK client: the sign-in page, answered by `pick_user`."""

    async def sign_in(self, url: str, username: str, redirect_uri: str) -> str:
        return await pick_user(url, username)


@contextlib.asynccontextmanager
async def signed_in(demo: Demo, username: str) -> AsyncIterator[OAuthMcpUser]:
    person = OAuthMcpUser(demo, username, DevBrowser())
    try:
        yield person
    finally:
        await person.aclose()


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# -- a client at the HTTP level, for the hostile cases -------------------------------------


def loopback_callback() -> str:
    return f"http://127.0.0.1:{secrets.randbelow(20000) + 30000}/callback"


@dataclass
class RawClient:
    """A registered public client doing the authorization code flow by hand."""

    url: str
    client_id: str
    redirect_uri: str
    verifier: str = ""

    @classmethod
    async def register(cls, http: httpx.AsyncClient, url: str, **extra: Any) -> RawClient:
        redirect_uri = loopback_callback()
        body = {
            "redirect_uris": [redirect_uri],
            "client_name": "raw test client",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            **extra,
        }
        answer = await http.post(f"{url}/register", json=body)
        assert answer.status_code == 201, answer.text
        return cls(url, answer.json()["client_id"], redirect_uri)

    def authorization_url(self, state: str = "st-1", **overrides: str) -> str:
        self.verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
            "scope": "mcp:tools",
            "resource": f"{self.url}/mcp",
            **overrides,
        }
        return f"{self.url}/authorize?{urlencode(query)}"

    async def code_for(self, username: str) -> str:
        back = await pick_user(self.authorization_url(), username)
        assert back.startswith(self.redirect_uri + "?"), back
        query = parse_qs(urlsplit(back).query)
        assert query["state"] == ["st-1"]
        return query["code"][0]

    async def exchange(
        self, http: httpx.AsyncClient, code: str, *, verifier: str | None = None
    ) -> httpx.Response:
        return await http.post(
            f"{self.url}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "client_id": self.client_id,
                "code_verifier": verifier or self.verifier,
            },
        )

    async def refresh(self, http: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
        return await http.post(
            f"{self.url}/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": self.client_id,
            },
        )


async def list_databases_with(url: str, access_token: str) -> Any:
    """One ``list_databases`` call with a bearer token, through the SDK's client."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {access_token}"}, timeout=30)
    async with http, Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        return await tool(client, "list_databases")


# -- the flow, with the SDK's client ----------------------------------------------------------


async def test_metadata_offers_the_authorization_code_flow(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        unauthorized = await http.post(f"{demo.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        prm = (await http.get(f"{demo.url}/.well-known/oauth-protected-resource/mcp")).json()
        metadata = (await http.get(f"{demo.url}/.well-known/oauth-authorization-server")).json()
        oidc = (await http.get(f"{demo.url}/.well-known/openid-configuration")).json()
    assert unauthorized.status_code == 401
    assert prm["authorization_servers"] == [demo.url]
    assert metadata == oidc
    assert metadata["issuer"] == demo.url
    assert metadata["authorization_endpoint"] == f"{demo.url}/authorize"
    assert metadata["token_endpoint"] == f"{demo.url}/token"
    assert metadata["registration_endpoint"] == f"{demo.url}/register"
    assert "revocation_endpoint" not in metadata  # the SDK's handler refuses public clients
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["response_types_supported"] == ["code"]
    assert set(metadata["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    assert metadata["jwks_uri"] == f"{demo.url}/.well-known/jwks.json"
    assert "authorization_response_iss_parameter_supported" not in metadata


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("alice", [{"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"}]),
        ("bob", [{"name": "globex", "access": "write", "current": True, "dialect": "FalkorDB"}]),
        (
            "carol",
            [
                {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"},
                {"name": "globex", "access": "read", "current": False, "dialect": "FalkorDB"},
            ],
        ),
    ],
)
async def test_sdk_client_signs_in_as_the_picked_user(
    demo: Demo, username: str, expected: list[dict[str, Any]]
) -> None:
    """No token given: the SDK registers, the test picks a user, the calls are that user's."""
    async with signed_in(demo, username) as person:
        async with person.session() as client:
            databases = await tool(client, "list_databases")
            people = await tool(client, "run_query", query="MATCH (p:Person) RETURN count(p)")
        claims = claims_of(person.access_token)
        flow = person.flow_between("http://nowhere.invalid", "none")

    assert databases == expected
    if username == "bob":  # globex holds the shop, not the people
        assert people["rows"] == [[0]]
    else:
        assert people["rows"] == [[5]]
    assert person.logins == 1
    assert flow[:5] == ["mcp@gg", "prm@gg", "asm@gg", "register@gg", "token@gg"]
    assert claims["sub"] == username
    assert claims["iss"] == demo.url and claims["aud"] == f"{demo.url}/mcp"
    assert claims["azp"] == person.storage.client_info.client_id  # type: ignore[union-attr]
    assert claims["exp"] - claims["iat"] == 3600
    assert person.storage.tokens is not None and person.storage.tokens.refresh_token


async def test_admin_sees_every_tenant_and_writes_where_bob_may(demo: Demo) -> None:
    async with signed_in(demo, "admin") as admin, admin.session() as client:
        databases = await tool(client, "list_databases")
    assert [entry["name"] for entry in databases] == ["acme", "globex"]
    assert {entry["access"] for entry in databases} == {"write"}

    async with signed_in(demo, "bob") as bob, bob.session() as client:
        wrote = await tool(
            client, "run_write_query", query="MERGE (:Visitor {name: 'bob'}) RETURN 1"
        )
        refused = await tool_error(client, "run_query", query="RETURN 1", database="acme")
    assert wrote["database"] == "globex"
    assert "acme" in refused


async def test_sign_in_page_lists_each_user_with_tenants_and_access(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await RawClient.register(
            http, demo.url, client_name="<script>alert(1)</script> & co"
        )
        response = await open_sign_in_page(http, client.authorization_url())
    page = parse_sign_in_page(response.text)
    assert response.status_code == 200
    assert page.users == {
        "alice": "acme: read",
        "bob": "globex: read, write",
        "carol": "acme: read; globex: read",
        "admin": "every tenant: read, write, admin",
    }
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in response.text
    assert client.redirect_uri in response.text
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


async def test_pasted_tokens_keep_working_beside_the_sign_in(demo: Demo) -> None:
    """`graphgate token` / the demo banner's headers: the same issuer, the same verifier."""
    token = mint_dev_token(demo.settings, sub="pasted", tenants=["globex"], admin=False, ttl=60)
    assert await list_databases_with(demo.url, token) == [
        {"name": "globex", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]


# -- refresh ------------------------------------------------------------------------------------


async def test_refresh_tokens_rotate_and_the_old_one_is_spent(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await RawClient.register(http, demo.url)
        first = (await client.exchange(http, await client.code_for("alice"))).json()
        renewed = await client.refresh(http, first["refresh_token"])
        again = await client.refresh(http, first["refresh_token"])
        stranger = await RawClient.register(http, demo.url)
        stolen = await stranger.refresh(http, renewed.json()["refresh_token"])
        still_good = await client.refresh(http, renewed.json()["refresh_token"])

    assert renewed.status_code == 200, renewed.text
    tokens = renewed.json()
    assert tokens["refresh_token"] != first["refresh_token"]
    assert claims_of(tokens["access_token"])["sub"] == "alice"
    assert await list_databases_with(demo.url, tokens["access_token"]) == [
        {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert still_good.status_code == 200, still_good.text


# -- hostile ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        "http://evil.example/callback",
        "http://127.0.0.1.evil.example/callback",
        "http://127.0.0.1@evil.example/callback",
        "http://localhost:8000/callback#fragment",
        "https://127.0.0.1:8443/callback",
        "javascript:alert(1)",
        "vscode://callback",
    ],
)
async def test_registration_refuses_redirects_off_this_machine(
    demo: Demo, redirect_uri: str
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"{demo.url}/register",
            json={"redirect_uris": ["http://127.0.0.1:9/ok", redirect_uri], "client_name": "x"},
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_redirect_uri"
    assert answer.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://[::1]:45678/cb", "http://localhost:1/callback", "http://127.0.0.1:65535/x?y=1"],
)
async def test_registration_accepts_every_loopback_spelling(demo: Demo, redirect_uri: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"{demo.url}/register", json={"redirect_uris": [redirect_uri], "client_name": "x"}
        )
    assert answer.status_code == 201, answer.text


async def test_authorize_refuses_a_redirect_uri_that_was_not_registered(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await RawClient.register(http, demo.url)
        for foreign in ("https://evil.example/callback", client.redirect_uri + "/other"):
            answer = await http.get(client.authorization_url(redirect_uri=foreign))
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"] == "invalid_request"
            assert "location" not in answer.headers
        unknown = await http.get(client.authorization_url(client_id="no-such-client"))
        assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_request"


async def test_authorize_requires_pkce_s256_and_this_resource(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await RawClient.register(http, demo.url)
        plain = await http.get(client.authorization_url(code_challenge_method="plain"))
        missing = await http.get(client.authorization_url(code_challenge=""))
        elsewhere = await http.get(client.authorization_url(resource="https://other.example/mcp"))
    for answer, error in ((plain, "invalid_request"), (elsewhere, "invalid_target")):
        # Errors after the client and redirect URI are known go back to the client (RFC 6749).
        assert answer.status_code == 302, answer.text
        back = parse_qs(urlsplit(answer.headers["location"]).query)
        assert answer.headers["location"].startswith(client.redirect_uri)
        assert back["error"] == [error] and back["state"] == ["st-1"]
    assert missing.status_code in {302, 400}
    assert "code=" not in missing.headers.get("location", "")


async def test_a_code_works_once_and_its_reuse_revokes_the_refresh_token(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await RawClient.register(http, demo.url)
        code = await client.code_for("alice")
        first = await client.exchange(http, code)
        second = await client.exchange(http, code)
        refresh = await client.refresh(http, first.json()["refresh_token"])
    assert first.status_code == 200, first.text
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"


async def test_a_code_raced_by_concurrent_exchanges_is_granted_once(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await RawClient.register(http, demo.url)
        code = await client.code_for("carol")
        answers = await asyncio.gather(*(client.exchange(http, code) for _ in range(12)))
    assert sorted(answer.status_code for answer in answers) == [200] + [400] * 11


async def test_a_flood_of_authorizations_keeps_a_bounded_number_waiting(demo: Demo) -> None:
    """1,100 parked sign-ins: the oldest are forgotten (MAX_PENDING = 1000), the newest work."""
    async with httpx.AsyncClient(timeout=60) as http:
        client = await RawClient.register(http, demo.url)
        url = client.authorization_url()
        locations: list[str] = []
        for _ in range(11):
            batch = await asyncio.gather(*(http.get(url) for _ in range(100)))
            assert {answer.status_code for answer in batch} == {302}
            locations += [answer.headers["location"] for answer in batch]
        oldest = await http.get(locations[0])
        newest = await http.get(locations[-1])
    assert oldest.status_code == 400 and "expired or was already used" in oldest.text
    assert newest.status_code == 200


async def test_a_wrong_verifier_is_refused_and_spends_the_code(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await RawClient.register(http, demo.url)
        code = await client.code_for("admin")
        wrong = await client.exchange(http, code, verifier=secrets.token_urlsafe(48))
        right = await client.exchange(http, code)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert "code_verifier" in wrong.json()["error_description"]
    assert right.status_code == 400 and right.json()["error"] == "invalid_grant"


async def test_a_code_is_useless_to_another_client(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        owner = await RawClient.register(http, demo.url)
        thief = await RawClient.register(http, demo.url)
        code = await owner.code_for("admin")
        thief.verifier = owner.verifier  # even with the verifier
        thief.redirect_uri = owner.redirect_uri
        stolen = await thief.exchange(http, code)
        legit = await owner.exchange(http, code)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert legit.status_code == 200, legit.text


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"{" + b" " * 20_000 + b"}", "application/json", 413, "invalid_client_metadata"),
        (b"{not json", "application/json", 400, "invalid_client_metadata"),
        (b"[1, 2]", "application/json", 400, "invalid_client_metadata"),
        (b"redirect_uris=x", "application/x-www-form-urlencoded", 400, "invalid_client_metadata"),
        (
            json.dumps({"redirect_uris": ["http://127.0.0.1:1/cb"], "client_name": "n" * 5000}),
            "application/json",
            400,
            "invalid_client_metadata",
        ),
        (
            json.dumps({"redirect_uris": [f"http://127.0.0.1:{p}/cb" for p in range(1, 40)]}),
            "application/json",
            400,
            "invalid_redirect_uri",
        ),
        (json.dumps({"redirect_uris": []}), "application/json", 400, "invalid_redirect_uri"),
        (
            json.dumps({"redirect_uris": ["http://127.0.0.1:1/cb"], "response_types": ["token"]}),
            "application/json",
            400,
            "invalid_client_metadata",
        ),
    ],
)
async def test_bad_registrations_get_rfc7591_errors(
    demo: Demo, body: bytes | str, content_type: str, status: int, error: str
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"{demo.url}/register", content=body, headers={"content-type": content_type}
        )
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert answer.json()["error_description"]


async def test_the_sign_in_page_is_one_time_and_knows_its_users(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await RawClient.register(http, demo.url)
        page = await open_sign_in_page(http, client.authorization_url())
        request_id = parse_sign_in_page(page.text).hidden["request"]
        sign_in = f"{demo.url}/sign-in"
        nobody = await http.post(sign_in, data={"request": request_id, "user": "mallory"})
        forged = await http.post(sign_in, data={"request": "guessed", "user": "admin"})
        chosen = await http.post(sign_in, data={"request": request_id, "user": "alice"})
        replayed = await http.post(sign_in, data={"request": request_id, "user": "admin"})
        stale_page = await http.get(f"{sign_in}?request={request_id}")
        huge = await http.post(sign_in, data={"request": "x" * 10_000, "user": "admin"})

    assert nobody.status_code == 400 and "Pick one of the listed users" in nobody.text
    assert forged.status_code == 400 and "expired or was already used" in forged.text
    assert chosen.status_code == 303
    assert chosen.headers["location"].startswith(client.redirect_uri + "?code=")
    assert replayed.status_code == 400 and "expired or was already used" in replayed.text
    assert stale_page.status_code == 400
    assert huge.status_code == 413


async def test_cancel_sends_access_denied_back(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await RawClient.register(http, demo.url)
    back = await pick_user(client.authorization_url(state="s-9"), "", deny=True)
    query = parse_qs(urlsplit(back).query)
    assert back.startswith(client.redirect_uri)
    assert query == {"error": ["access_denied"], "state": ["s-9"]}


async def test_registrations_survive_a_restart(
    falkordb_service: FalkorDBService, tmp_path: Path
) -> None:
    """A client that registered keeps its client_id across `serve --demo` restarts."""
    options = http_settings(demo=True, data_dir=tmp_path / "data")
    first = make_parts(falkordb_service.backend(), **options)
    async with serve_http(first) as url, httpx.AsyncClient(timeout=30) as http:
        client = await RawClient.register(http, url)
    again = make_parts(falkordb_service.backend(), **options)
    async with serve_http(again) as url:
        code = await client.code_for("carol")
        async with httpx.AsyncClient(timeout=30) as http:
            tokens = await client.exchange(http, code)
    assert tokens.status_code == 200, tokens.text
    assert (tmp_path / "data" / "dev-clients.json").stat().st_mode & 0o077 == 0


async def test_registrations_are_rate_limited_per_address(
    falkordb_service: FalkorDBService, tmp_path: Path
) -> None:
    options = http_settings(demo=True, data_dir=tmp_path / "data", registration_rate_limit=2)
    parts = make_parts(falkordb_service.backend(), **options)
    body = {"redirect_uris": ["http://127.0.0.1:1/cb"]}
    async with serve_http(parts) as url, httpx.AsyncClient(timeout=30) as http:
        answers = [await http.post(f"{url}/register", json=body) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [201, 201, 429]
    assert answers[2].json()["error"] == "temporarily_unavailable"
    assert int(answers[2].headers["retry-after"]) >= 1


async def test_no_sign_in_off_loopback(falkordb_service: FalkorDBService, tmp_path: Path) -> None:
    """Bound to every interface, the dev issuer serves token metadata only, as before."""
    options = http_settings(
        demo=True,
        host="0.0.0.0",
        public_url="https://graphgate.example",
        data_dir=tmp_path / "data",
    )
    parts = make_parts(falkordb_service.backend(), **options)
    async with serve_http(parts) as url, httpx.AsyncClient(timeout=30) as http:
        headers = {"host": "graphgate.example"}
        metadata = await http.get(f"{url}/.well-known/oauth-authorization-server", headers=headers)
        register = await http.post(
            f"{url}/register", json={"redirect_uris": ["http://127.0.0.1:1/cb"]}, headers=headers
        )
        authorize = await http.get(f"{url}/authorize?client_id=x", headers=headers)
    assert metadata.status_code == 200, metadata.text
    assert "authorization_endpoint" not in metadata.json()
    assert metadata.json()["grant_types_supported"] == []
    assert register.status_code == 401
    assert authorize.status_code == 401
