"""The two ways to set Keycloak up for graphgate, checked against a real Keycloak.

1. Import ``deploy/keycloak/realm.json`` (the session fixture does, templated
   with the resource URL under test): tokens from the authorization code +
   PKCE flow carry what `graphgate.auth.rights` reads, for the first-party
   client and for clients registered anonymously through RFC 7591.
2. ``graphgate keycloak configure`` on an existing, empty realm reaches the
   same state, and a second run changes nothing. With
   ``--cimd-trusted-domains`` it also adds the client profile and policy for
   Client ID Metadata Documents (the session's Keycloak runs with
   ``--features=cimd``; tests/test_e2e_keycloak.py signs users in with them).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from typer.testing import CliRunner

from graphgate.auth.rights import rights_from_claims
from graphgate.cli import app
from graphgate.config import Settings, claims_rules
from graphgate.keycloak import (
    ADMIN_ROLE,
    CIMD_POLICY,
    CIMD_PROFILE,
    CLIENT_ID,
    MCP_SCOPE,
    REDIRECTS_POLICY,
    REDIRECTS_PROFILE,
    SHIM_CLIENT_ID,
    Change,
    KeycloakAdminError,
    cimd_policy,
    cimd_profile,
    configure_keycloak,
    tenants_attribute,
    validate_cimd_domains,
)
from graphgate.keycloak.realm import POLICY_TYPE
from tests.services._common import free_port
from tests.services.keycloak import KeycloakService, demo_password
from tests.services.keycloak_login import (
    LoginError,
    Pkce,
    authorization_url,
    browser_login,
    login_for_tokens,
)

# -- helpers -----------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


@pytest.fixture
def sync_http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


def _settings() -> Settings:
    return Settings(tenants={"acme": "acme", "globex": "globex"}, allow_writes=True)


async def _admin_headers(keycloak: KeycloakService, http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.post(
        f"{keycloak.base_url}/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": keycloak.admin_user,
            "password": keycloak.admin_password,
        },
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _verified(
    keycloak: KeycloakService, http: httpx.AsyncClient, token: str, *, issuer: str | None = None
) -> dict[str, Any]:
    """Claims of an access token whose signature, issuer and audience check out."""
    issuer = issuer or keycloak.issuer
    jwks = (await http.get(f"{issuer}/protocol/openid-connect/certs")).json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(key for key in jwt.PyJWKSet.from_dict(jwks).keys if key.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=keycloak.resource_url, issuer=issuer
    )
    return claims


async def _login(
    keycloak: KeycloakService,
    http: httpx.AsyncClient,
    username: str,
    *,
    client_id: str = CLIENT_ID,
    redirect_uri: str = "http://127.0.0.1:33418/callback",
    scope: str = "openid mcp:tools",
    issuer: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    tokens = await login_for_tokens(
        issuer=issuer or keycloak.issuer,
        client_id=client_id,
        username=username,
        password=password or demo_password(username),
        client=http,
        redirect_uri=redirect_uri,
        scope=scope,
        resource=keycloak.resource_url,
    )
    return tokens


async def _register(
    keycloak: KeycloakService, http: httpx.AsyncClient, **metadata: Any
) -> httpx.Response:
    body = {
        "client_name": "graphgate test MCP client",
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        **metadata,
    }
    return await http.post(keycloak.registration_endpoint, json=body)


# -- the imported realm ------------------------------------------------------------------


async def test_discovery_advertises_pkce_and_registration(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    document = (await http.get(keycloak.discovery_url)).json()
    assert document["issuer"] == keycloak.issuer
    assert "S256" in document["code_challenge_methods_supported"]
    assert document["registration_endpoint"] == keycloak.registration_endpoint
    assert MCP_SCOPE in document["scopes_supported"]
    assert document["authorization_response_iss_parameter_supported"] is True


@pytest.mark.parametrize(
    ("username", "tenants", "admin", "rights"),
    [
        ("alice", ["acme"], False, {"acme": "read"}),
        ("bob", ["globex"], False, {"globex": "read"}),
        ("carol", ["acme:write"], False, {"acme": "write"}),
        ("dana", None, True, {"acme": "write", "globex": "write"}),
        ("erin", None, False, {}),
        ("frank", ["initech"], False, {}),
    ],
)
async def test_demo_user_token_carries_what_rights_read(
    keycloak: KeycloakService,
    http: httpx.AsyncClient,
    username: str,
    tenants: list[str] | None,
    admin: bool,
    rights: dict[str, str],
) -> None:
    tokens = await _login(keycloak, http, username)
    claims = await _verified(keycloak, http, tokens["access_token"])

    assert claims["aud"] == keycloak.resource_url
    assert claims["azp"] == CLIENT_ID
    assert MCP_SCOPE in claims["scope"].split()
    assert claims.get("tenants") == tenants
    roles = claims["realm_access"]["roles"]
    assert (ADMIN_ROLE in roles) is admin
    # Full scope is off: no client roles, so no audience beyond graphgate's.
    assert "resource_access" not in claims
    granted = rights_from_claims(claims, claims_rules(_settings()))
    assert dict(granted.tenants) == rights
    assert granted.admin is admin


async def test_localhost_redirect_on_any_port(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    port = free_port()
    tokens = await _login(keycloak, http, "bob", redirect_uri=f"http://localhost:{port}/cb")
    claims = await _verified(keycloak, http, tokens["access_token"])
    assert claims["tenants"] == ["globex"]


async def test_refreshed_token_keeps_the_claims(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    tokens = await _login(keycloak, http, "carol")
    response = await http.post(
        keycloak.token_endpoint,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": CLIENT_ID,
        },
    )
    claims = await _verified(keycloak, http, response.json()["access_token"])
    assert claims["tenants"] == ["acme:write"]
    assert MCP_SCOPE in claims["scope"].split()


async def test_authorization_without_pkce_is_refused(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    url = authorization_url(
        keycloak.issuer,
        client_id=CLIENT_ID,
        redirect_uri="http://127.0.0.1:33418/callback",
        state="s1",
    )
    landed = await browser_login(url, "alice", demo_password("alice"), http)
    query = parse_qs(urlsplit(landed).query)
    assert query["error"] == ["invalid_request"]
    assert "code" not in query


async def test_password_grant_is_refused(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        keycloak.token_endpoint,
        data={
            "grant_type": "password",
            "client_id": CLIENT_ID,
            "username": "alice",
            "password": demo_password("alice"),
        },
    )
    assert response.status_code in {400, 401}
    assert response.json()["error"] == "unauthorized_client"


async def test_foreign_redirect_uri_is_refused(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    url = authorization_url(
        keycloak.issuer,
        client_id=CLIENT_ID,
        redirect_uri="https://attacker.example/callback",
        state="s2",
        pkce=Pkce.new(),
    )
    with pytest.raises(LoginError, match="redirect_uri"):
        await browser_login(url, "alice", demo_password("alice"), http)


async def test_wrong_password_is_refused_without_echoing_it(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    wrong = "not-" + secrets.token_hex(8)
    with pytest.raises(LoginError) as caught:
        await _login(keycloak, http, "alice", password=wrong)
    assert "Invalid username or password" in str(caught.value)
    assert wrong not in str(caught.value)


async def test_anonymous_loopback_registration_gets_graphgate_tokens(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    registered = await _register(keycloak, http, scope=MCP_SCOPE)
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]

    # Anonymous clients need the user's consent; browser_login gives it.
    alice = await _login(keycloak, http, "alice", client_id=client_id, scope=MCP_SCOPE)
    claims = await _verified(keycloak, http, alice["access_token"])
    assert claims["azp"] == client_id
    assert claims["tenants"] == ["acme"]
    assert MCP_SCOPE in claims["scope"].split()

    # "Full scope disabled" for such clients: the admin role still arrives.
    dana = await _login(keycloak, http, "dana", client_id=client_id, scope=MCP_SCOPE)
    dana_claims = await _verified(keycloak, http, dana["access_token"])
    assert ADMIN_ROLE in dana_claims["realm_access"]["roles"]

    admin = await _admin_headers(keycloak, http)
    found = (
        await http.get(f"{keycloak.admin_url()}/clients?clientId={client_id}", headers=admin)
    ).json()[0]
    assert found["publicClient"] is True
    assert found["consentRequired"] is True
    assert found["fullScopeAllowed"] is False
    user = (
        await http.get(f"{keycloak.admin_url()}/users?username=alice&exact=true", headers=admin)
    ).json()[0]
    consents = (
        await http.get(f"{keycloak.admin_url()}/users/{user['id']}/consents", headers=admin)
    ).json()
    assert client_id in {consent["clientId"] for consent in consents}


async def test_anonymously_registered_clients_must_use_pkce(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    registered = await _register(keycloak, http)
    assert registered.status_code == 201, registered.text
    url = authorization_url(
        keycloak.issuer,
        client_id=registered.json()["client_id"],
        redirect_uri="http://127.0.0.1:33418/callback",
        state="s3",
    )
    landed = await browser_login(url, "alice", demo_password("alice"), http)
    assert parse_qs(urlsplit(landed).query)["error"] == ["invalid_request"]


async def test_registration_without_scope_gets_the_realm_default_scope(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    redirect = "http://localhost:41234/callback"
    registered = await _register(keycloak, http, redirect_uris=[redirect])
    assert registered.status_code == 201, registered.text
    tokens = await _login(
        keycloak,
        http,
        "bob",
        client_id=registered.json()["client_id"],
        redirect_uri=redirect,
        scope="openid",
    )
    claims = await _verified(keycloak, http, tokens["access_token"])
    assert MCP_SCOPE in claims["scope"].split()
    assert claims["tenants"] == ["globex"]


async def test_portless_loopback_registration_accepts_any_port(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    registered = await _register(keycloak, http, redirect_uris=["http://127.0.0.1/callback"])
    assert registered.status_code == 201, registered.text
    tokens = await _login(
        keycloak,
        http,
        "alice",
        client_id=registered.json()["client_id"],
        redirect_uri=f"http://127.0.0.1:{free_port()}/callback",
        scope=MCP_SCOPE,
    )
    assert tokens["access_token"]


# What MCP clients send when they register (redirect URIs and the client_uri
# Keycloak's Trusted Hosts policy used to refuse): all admitted.
REAL_CLIENT_REGISTRATIONS = {
    "mcp-remote": {
        "redirect_uris": ["http://localhost:14823/oauth/callback"],
        "client_uri": "https://github.com/modelcontextprotocol/mcp-cli",
        "software_id": "2e6dc280-f3c3-4e01-99a7-8181dbd1d23d",
        "software_version": "0.15.1",
        "client_name": "MCP CLI Proxy",
    },
    "claude-code": {"redirect_uris": ["http://localhost:53127/callback"]},
    "vscode-loopback": {"redirect_uris": ["http://127.0.0.1:33418/", "http://127.0.0.1/"]},
    "sdk-ipv6": {"redirect_uris": ["http://[::1]:8765/callback"]},
}


@pytest.mark.parametrize("client", sorted(REAL_CLIENT_REGISTRATIONS))
async def test_anonymous_registration_admits_what_mcp_clients_send(
    keycloak: KeycloakService, http: httpx.AsyncClient, client: str
) -> None:
    registered = await _register(keycloak, http, **REAL_CLIENT_REGISTRATIONS[client])
    assert registered.status_code == 201, registered.text


@pytest.mark.parametrize(
    "metadata",
    [
        {"redirect_uris": ["https://attacker.example/callback"]},
        {"redirect_uris": ["http://192.0.2.7:8080/callback"]},
        {"redirect_uris": ["http://127.0.0.1/callback", "https://evil.example/cb"]},
        {"redirect_uris": ["http://localhost.evil.example/cb"]},
        {"redirect_uris": ["http://localhost@evil.example/cb"]},
        {"redirect_uris": ["http://localhost*"]},  # Keycloak's wildcard: a prefix match
        {"redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"]},
        # VS Code's relay forwards the code wherever its state says: not by default.
        {"redirect_uris": ["http://127.0.0.1/", "https://vscode.dev/redirect"]},
        {"post_logout_redirect_uris": ["https://evil.example/"]},
        {"backchannel_logout_uri": "https://evil.example/logout"},
        {"jwks_uri": "http://10.0.0.1/jwks"},
    ],
    ids=lambda metadata: str(metadata)[:60],
)
async def test_anonymous_registration_refuses_non_loopback_urls(
    keycloak: KeycloakService, http: httpx.AsyncClient, metadata: dict[str, Any]
) -> None:
    registered = await _register(keycloak, http, **metadata)
    assert registered.status_code == 403, registered.text
    assert registered.json()["error_description"] == "invalid_client_metadata"


async def test_registered_client_cannot_swap_in_a_foreign_redirect(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    """RFC 7592: the registration access token cannot move the redirect off loopback."""
    registered = await _register(keycloak, http)
    assert registered.status_code == 201, registered.text
    body = registered.json()
    token = {"Authorization": f"Bearer {body['registration_access_token']}"}
    moved = {**body, "redirect_uris": ["https://evil.example/cb"]}
    refused = await http.put(body["registration_client_uri"], json=moved, headers=token)
    assert refused.status_code == 403, refused.text
    kept = await http.get(body["registration_client_uri"], headers=token)
    assert kept.json()["redirect_uris"] == ["http://127.0.0.1:33418/callback"]


async def test_keycloak_own_registration_api_is_held_to_loopback_too(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    """Keycloak's ``default`` provider takes a client representation: rootUrl + relative URI."""
    registered = await http.post(
        f"{keycloak.issuer}/clients-registrations/default",
        json={
            "clientId": f"rooted-{secrets.token_hex(4)}",
            "publicClient": True,
            "rootUrl": "https://evil.example",
            "redirectUris": ["/callback"],
        },
    )
    assert registered.status_code == 403, registered.text


async def test_tenants_attribute_is_declared_and_validated(
    keycloak: KeycloakService, http: httpx.AsyncClient
) -> None:
    admin = await _admin_headers(keycloak, http)
    username = f"user-{secrets.token_hex(4)}"
    user = {
        "username": username,
        "enabled": True,
        "email": f"{username}@example.com",
        "firstName": "Test",
        "lastName": "User",
        "attributes": {"tenants": ["acme", "globex:write"]},
    }
    created = await http.post(f"{keycloak.admin_url()}/users", json=user, headers=admin)
    assert created.status_code == 201, created.text
    stored = (
        await http.get(
            f"{keycloak.admin_url()}/users?username={username}&exact=true", headers=admin
        )
    ).json()[0]
    assert stored["attributes"]["tenants"] == ["acme", "globex:write"]

    bad = {
        **user,
        "username": username + "-bad",
        "email": f"bad-{username}@example.com",
        "attributes": {"tenants": ["acme write"]},
    }
    refused = await http.post(f"{keycloak.admin_url()}/users", json=bad, headers=admin)
    assert refused.status_code == 400


# -- graphgate keycloak configure --------------------------------------------------------


def _configure(
    keycloak: KeycloakService, realm: str, client: httpx.Client, **extra: Any
) -> list[Change]:
    return configure_keycloak(
        base_url=keycloak.base_url,
        realm=realm,
        admin_user=keycloak.admin_user,
        admin_password=keycloak.admin_password,
        public_url=extra.pop("public_url", keycloak.public_url),
        client=client,
        **extra,
    )


async def _new_empty_realm(keycloak: KeycloakService, http: httpx.AsyncClient) -> str:
    realm = f"cfg-{secrets.token_hex(4)}"
    created = await http.post(
        f"{keycloak.base_url}/admin/realms",
        json={"realm": realm, "enabled": True},
        headers=await _admin_headers(keycloak, http),
    )
    assert created.status_code == 201, created.text
    return realm


async def _add_user(
    keycloak: KeycloakService,
    http: httpx.AsyncClient,
    realm: str,
    username: str,
    tenants: list[str],
) -> str:
    admin = await _admin_headers(keycloak, http)
    password = secrets.token_urlsafe(12)
    user = {
        "username": username,
        "enabled": True,
        "email": f"{username}@example.com",
        "emailVerified": True,
        "firstName": username.title(),
        "lastName": "Tester",
        "attributes": {"tenants": tenants},
        "credentials": [{"type": "password", "value": password, "temporary": False}],
    }
    created = await http.post(f"{keycloak.admin_url(realm)}/users", json=user, headers=admin)
    assert created.status_code == 201, created.text
    return password


async def test_configure_brings_an_empty_realm_to_graphgate_and_is_idempotent(
    keycloak: KeycloakService, http: httpx.AsyncClient, sync_http: httpx.Client
) -> None:
    realm = await _new_empty_realm(keycloak, http)

    first = _configure(keycloak, realm, sync_http, tenants=["acme", "globex"])
    described = {str(change) for change in first}
    assert f"create client scope {MCP_SCOPE}" in described
    assert f"create client {CLIENT_ID}" in described
    assert f"create realm role {ADMIN_ROLE}" in described
    assert "create user profile attribute tenants: multivalued" in described
    assert "create client policy graphgate-pkce-for-registered-clients" in described
    assert f"create client {SHIM_CLIENT_ID}" in described
    assert f"create client profile {REDIRECTS_PROFILE}" in described
    assert f"create client policy {REDIRECTS_POLICY}" in described
    # Keycloak's default Trusted Hosts refused every anonymous registration.
    assert (
        "delete anonymous registration policy 'Trusted Hosts': redirect URIs are checked "
        f"by client profile {REDIRECTS_PROFILE}"
    ) in described
    assert _configure(keycloak, realm, sync_http, tenants=["acme", "globex"]) == []

    registration = f"{keycloak.base_url}/realms/{realm}/clients-registrations/openid-connect"
    for metadata, status in (
        (REAL_CLIENT_REGISTRATIONS["mcp-remote"], 201),
        ({"redirect_uris": ["https://evil.example/cb"]}, 403),
    ):
        answer = await http.post(
            registration, json={"token_endpoint_auth_method": "none", **metadata}
        )
        assert answer.status_code == status, answer.text

    password = await _add_user(keycloak, http, realm, "grace", ["globex", "acme:write"])
    issuer = f"{keycloak.base_url}/realms/{realm}"
    tokens = await _login(keycloak, http, "grace", issuer=issuer, password=password)
    claims = await _verified(keycloak, http, tokens["access_token"], issuer=issuer)
    assert claims["tenants"] == ["globex", "acme:write"]
    assert MCP_SCOPE in claims["scope"].split()
    granted = rights_from_claims(claims, claims_rules(_settings()))
    assert dict(granted.tenants) == {"globex": "read", "acme": "write"}

    # The pick list from --tenants refuses names outside the catalog.
    admin = await _admin_headers(keycloak, http)
    refused = await http.post(
        f"{keycloak.admin_url(realm)}/users",
        json={
            "username": "mallory",
            "email": "m@example.com",
            "firstName": "M",
            "lastName": "M",
            "attributes": {"tenants": ["initech"]},
        },
        headers=admin,
    )
    assert refused.status_code == 400


async def test_configure_finds_nothing_to_change_in_the_imported_realm(
    keycloak: KeycloakService, sync_http: httpx.Client
) -> None:
    """realm.json and `configure` describe the same state."""
    assert _configure(keycloak, keycloak.realm, sync_http) == []


async def test_configure_creates_a_missing_realm_and_honours_dry_run(
    keycloak: KeycloakService, http: httpx.AsyncClient, sync_http: httpx.Client
) -> None:
    realm = f"new-{secrets.token_hex(4)}"
    planned = _configure(keycloak, realm, sync_http, dry_run=True)
    assert [str(change) for change in planned] == [f"create realm {realm}"]
    admin = await _admin_headers(keycloak, http)
    assert (await http.get(keycloak.admin_url(realm), headers=admin)).status_code == 404

    made = _configure(keycloak, realm, sync_http)
    assert made[0] == Change("create", f"realm {realm}")
    assert _configure(keycloak, realm, sync_http) == []


async def test_configure_repairs_drift_and_reports_only_that(
    keycloak: KeycloakService, http: httpx.AsyncClient, sync_http: httpx.Client
) -> None:
    realm = await _new_empty_realm(keycloak, http)
    _configure(keycloak, realm, sync_http)
    admin = await _admin_headers(keycloak, http)
    base = keycloak.admin_url(realm)
    client = (await http.get(f"{base}/clients?clientId={CLIENT_ID}", headers=admin)).json()[0]
    client["directAccessGrantsEnabled"] = True
    client["redirectUris"] = [*client["redirectUris"], "https://app.example/callback"]
    updated = await http.put(f"{base}/clients/{client['id']}", json=client, headers=admin)
    assert updated.status_code == 204

    repaired = _configure(keycloak, realm, sync_http)
    assert [str(change) for change in repaired] == [
        f"update client {CLIENT_ID}: directAccessGrantsEnabled"
    ]
    client = (await http.get(f"{base}/clients?clientId={CLIENT_ID}", headers=admin)).json()[0]
    assert client["directAccessGrantsEnabled"] is False
    assert "https://app.example/callback" in client["redirectUris"]  # an operator's addition

    moved = _configure(keycloak, realm, sync_http, public_url="https://graphgate.example.com")
    assert sorted(str(change) for change in moved) == [
        f"update client {CLIENT_ID}: redirectUris",  # the proxy-mode callback
        f"update mapper graphgate audience of {MCP_SCOPE}: included.custom.audience",
    ]
    client = (await http.get(f"{base}/clients?clientId={CLIENT_ID}", headers=admin)).json()[0]
    assert "https://graphgate.example.com/auth/callback" in client["redirectUris"]
    again = _configure(keycloak, realm, sync_http, public_url="https://graphgate.example.com")
    assert again == []


async def test_configure_replaces_trusted_hosts_keeping_the_hosts_it_trusted(
    keycloak: KeycloakService, http: httpx.AsyncClient, sync_http: httpx.Client
) -> None:
    """A realm set up the old way, with VS Code's relay trusted: it stays trusted, for redirects."""
    realm = await _new_empty_realm(keycloak, http)
    _configure(keycloak, realm, sync_http)
    admin = await _admin_headers(keycloak, http)
    base = keycloak.admin_url(realm)
    realm_id = (await http.get(base, headers=admin)).json()["id"]
    old_policy = {
        "name": "Trusted Hosts",
        "providerId": "trusted-hosts",
        "providerType": POLICY_TYPE,
        "parentId": realm_id,
        "subType": "anonymous",
        "config": {
            "trusted-hosts": ["127.0.0.1", "localhost", "vscode.dev", "*.vscode.dev"],
            "host-sending-registration-request-must-match": ["false"],
            "client-uris-must-match": ["true"],
        },
    }
    created = await http.post(f"{base}/components", json=old_policy, headers=admin)
    assert created.status_code == 201, created.text

    changes = [str(change) for change in _configure(keycloak, realm, sync_http)]
    assert changes == [
        f"update client profile {REDIRECTS_PROFILE}: executors",
        "delete anonymous registration policy 'Trusted Hosts': redirect URIs are checked "
        f"by client profile {REDIRECTS_PROFILE}",
    ]
    registration = f"{keycloak.base_url}/realms/{realm}/clients-registrations/openid-connect"
    vscode = {
        "redirect_uris": [
            "http://127.0.0.1:33418/",
            "https://vscode.dev/redirect",
            "https://insiders.vscode.dev/redirect",
        ],
        "client_uri": "https://code.visualstudio.com",
        "token_endpoint_auth_method": "none",
    }
    for metadata, status in (
        (vscode, 201),
        (REAL_CLIENT_REGISTRATIONS["mcp-remote"], 201),
        ({"redirect_uris": ["https://vscode.dev.evil.example/redirect"]}, 403),
        ({"redirect_uris": ["http://vscode.dev/redirect"]}, 403),  # https only
    ):
        answer = await http.post(registration, json=metadata)
        assert answer.status_code == status, (metadata, answer.text)

    # A pattern the operator adds to the profile is theirs: kept by later runs.
    profiles = (await http.get(f"{base}/client-policies/profiles", headers=admin)).json()
    profile = next(p for p in profiles["profiles"] if p["name"] == REDIRECTS_PROFILE)
    patterns = profile["executors"][0]["configuration"]["allowed-patterns"]
    patterns.append(r"^https://tools\.example\.com/callback$")
    updated = await http.put(f"{base}/client-policies/profiles", json=profiles, headers=admin)
    assert updated.status_code == 204, updated.text
    assert _configure(keycloak, realm, sync_http) == []


def test_configure_reports_a_bad_admin_password(
    keycloak: KeycloakService, sync_http: httpx.Client
) -> None:
    with pytest.raises(KeycloakAdminError, match="cannot log in"):
        configure_keycloak(
            base_url=keycloak.base_url,
            realm=keycloak.realm,
            admin_user=keycloak.admin_user,
            admin_password="wrong-password",
            public_url=keycloak.public_url,
            client=sync_http,
        )


def test_cli_configure(keycloak: KeycloakService) -> None:
    runner = CliRunner()
    args = [
        "keycloak",
        "configure",
        "--url",
        keycloak.base_url,
        "--realm",
        keycloak.realm,
        "--admin-user",
        keycloak.admin_user,
        "--public-url",
        keycloak.public_url,
    ]
    result = runner.invoke(
        app, args, env={"GRAPHGATE_KEYCLOAK_ADMIN_PASSWORD": keycloak.admin_password}
    )
    assert result.exit_code == 0, result.output
    assert "already configured" in result.output

    refused = runner.invoke(app, args, env={"GRAPHGATE_KEYCLOAK_ADMIN_PASSWORD": "wrong-password"})
    assert refused.exit_code == 2
    assert "cannot log in" in refused.output
    assert "wrong-password" not in refused.output


async def test_configure_adds_client_id_metadata_documents_on_request(
    keycloak: KeycloakService, http: httpx.AsyncClient, sync_http: httpx.Client
) -> None:
    """--cimd-trusted-domains: Keycloak (with --features=cimd) takes the profile and policy."""
    assert "cimd" in keycloak.features
    realm = await _new_empty_realm(keycloak, http)
    _configure(keycloak, realm, sync_http)
    args = ["keycloak", "configure", "--url", keycloak.base_url, "--realm", realm]
    args += [
        "--public-url",
        keycloak.public_url,
        "--cimd-trusted-domains",
        "*.example.org, Tools.Example.com",
    ]
    result = CliRunner().invoke(
        app, args, env={"GRAPHGATE_KEYCLOAK_ADMIN_PASSWORD": keycloak.admin_password}
    )
    assert result.exit_code == 0, result.output
    # Keycloak 26.7 would run the loopback redirect policy on the clients CIMD
    # creates and refuse them, so it goes off and Trusted Hosts comes back.
    assert result.output.splitlines() == [
        f"  create client profile {CIMD_PROFILE}",
        f"  create client policy {CIMD_POLICY}",
        f"  update client policy {REDIRECTS_POLICY}: enabled",
        "  create anonymous registration policy 'Trusted Hosts': Client ID Metadata "
        "Documents are on",
        f"realm {realm}: 4 changed",
    ]
    domains = ["*.example.org", "tools.example.com"]
    assert _configure(keycloak, realm, sync_http, cimd_trusted_domains=domains) == []
    # Without the option nothing is taken away; with other domains both are updated.
    assert _configure(keycloak, realm, sync_http) == []
    moved = _configure(keycloak, realm, sync_http, cimd_trusted_domains=["tools.example.net"])
    assert [str(change) for change in moved] == [
        f"update client profile {CIMD_PROFILE}: executors",
        f"update client policy {CIMD_POLICY}: conditions",
    ]

    admin = await _admin_headers(keycloak, http)
    base = keycloak.admin_url(realm)
    profiles = (await http.get(f"{base}/client-policies/profiles", headers=admin)).json()
    [executor] = next(p for p in profiles["profiles"] if p["name"] == CIMD_PROFILE)["executors"]
    assert executor["executor"] == "client-id-metadata-document"
    # Client ids on the trusted domains; redirect URIs there or on loopback (RFC 8252).
    assert executor["configuration"]["cimd-allow-permitted-domains"] == [
        "tools.example.net",
        "127.0.0.1",
        "localhost",
    ]
    assert executor["configuration"]["cimd-allow-http-scheme"] is False
    policies = (await http.get(f"{base}/client-policies/policies", headers=admin)).json()
    policy = next(p for p in policies["policies"] if p["name"] == CIMD_POLICY)
    assert policy["enabled"] is True and policy["profiles"] == [CIMD_PROFILE]
    assert policy["conditions"] == cimd_policy(["tools.example.net"])["conditions"]


# -- without a server --------------------------------------------------------------------


def test_cimd_trusted_domains_are_host_names() -> None:
    assert validate_cimd_domains([" *.Example.org", "127.0.0.1", "", "127.0.0.1"]) == [
        "*.example.org",
        "127.0.0.1",
    ]
    for bad in ("https://example.org", "example.org/path", "*", "a..b", "*.*.example.org"):
        with pytest.raises(ValueError, match="not a host name"):
            validate_cimd_domains([bad])
    with pytest.raises(ValueError, match="not a host name"):
        cimd_profile(["example.org:8443"])


def test_tenants_attribute_pick_list_offers_read_and_write() -> None:
    attribute = tenants_attribute(["acme", "globex"])
    assert attribute["multivalued"] is True
    assert attribute["permissions"]["edit"] == ["admin"]
    assert attribute["validations"]["options"]["options"] == [
        "acme",
        "acme:write",
        "globex",
        "globex:write",
    ]
    assert "options" not in tenants_attribute()["validations"]


def test_tenants_attribute_refuses_bad_tenant_names() -> None:
    with pytest.raises(ValueError, match="may use only ASCII"):
        tenants_attribute(["acme corp"])


def test_public_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="not an http"):
        configure_keycloak(
            base_url="http://127.0.0.1:9",
            realm="graphgate",
            admin_user="admin",
            admin_password="x",
            public_url="ftp://graphgate.example.com",
        )


def test_proxy_callback_is_a_redirect_for_public_deployments() -> None:
    """Keycloak must accept graphgate's own /auth/callback (registration = proxy)."""
    import httpx

    from graphgate.keycloak import LOOPBACK_REDIRECTS, KeycloakConfigurator

    def configurator(public_url: str) -> KeycloakConfigurator:
        return KeycloakConfigurator(
            httpx.Client(),
            base_url="http://kc",
            realm="r",
            admin_user="a",
            admin_password="p",
            public_url=public_url,
        )

    public = configurator("https://graphgate.example.com/")
    assert public._redirects == [*LOOPBACK_REDIRECTS, "https://graphgate.example.com/auth/callback"]
    assert configurator("http://127.0.0.1:8000")._redirects == list(LOOPBACK_REDIRECTS)
