"""End to end: the MCP TypeScript SDK's OAuth client against graphgate and a real Keycloak.

`@modelcontextprotocol/sdk` (pinned in tests/e2e_ts/package.json) is the client
library Claude Code and many other MCP clients build on. tests/e2e_ts/client.mjs
is a minimal app on it: its `OAuthClientProvider` prints the authorization URL
as a JSON line and reads back, on stdin, the URL the browser was sent to. This
test runs it with node, plays the browser (`Browser`: graphgate's consent page
in proxy mode, then Keycloak's login and consent forms via `browser_login`) and
checks every step the client reports: 401 → protected resource metadata →
authorization server metadata → registration → authorization URL → login →
callback with the code → token → tool calls routed to the user's tenant. In all
three registration modes.

What the TypeScript client (1.32.2) does differently from the Python SDK:

* It does not compare the metadata's ``issuer`` with the authorization server
  URL from PRM, and it has no RFC 9207 check: `finishAuth` takes the code
  alone, so an ``iss`` in the callback is never looked at.
* Hence ``registration = shim`` works with Keycloak as configured by default:
  Keycloak's callback carries ``iss`` = Keycloak while the metadata the client
  read names graphgate (the Python SDK stops there with "Authorization response
  iss mismatch" unless ``exclude.issuer.from.auth.response`` is on). The shim
  run below leaves that setting off on purpose and asserts the mismatch that
  the TypeScript client accepts.
* It asks for the ``scope`` of graphgate's ``WWW-Authenticate`` challenge
  (``mcp:tools``) and adds no ``offline_access`` (nor ``prompt=consent``):
  Keycloak's refresh token is then an ordinary, session-bound one, not an
  offline token.
* It discovers Keycloak's metadata at the RFC 8414 path first
  (``/.well-known/oauth-authorization-server/realms/graphgate``), which
  Keycloak 26 serves.

With a ``clientMetadataUrl`` (client.mjs ``--client-metadata-url``) the
TypeScript SDK uses Client ID Metadata Documents like the Python one: in
direct mode, against the session's Keycloak (``--features=cimd``, and the
CIMD client policy of tests/services/cimd.py for the test's duration), it
skips registration and sends the document's https URL as ``client_id``;
Keycloak fetches the document and signs the user in.

graphgate serves at a port of this module's own (the session's Keycloak test
may still hold ``keycloak.public_url``); Keycloak's audience mapper is pointed
at it for the module's duration and restored afterwards.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from tests.services._common import free_port, origin, service_unavailable
from tests.services.cimd import CimdRealm, client_metadata
from tests.services.falkordb import FalkorDBService, seed_tagged_tenants
from tests.services.graphgate import make_parts, serve_http
from tests.services.keycloak import AdminToken, KeycloakService, demo_password
from tests.services.keycloak_login import browser_login
from tests.services.mcp_oauth import request_flow
from tests.services.oidc_provider import (
    TS_CLIENT_PROJECT,
    Browser,
    NodeUnavailable,
    npm_install,
)

pytestmark = [pytest.mark.keycloak, pytest.mark.falkordb]

MODES = ("direct", "shim", "proxy")
STATIC_CLIENT = "graphgate-mcp"
EXCLUDE_ISS = "exclude.issuer.from.auth.response"
AUDIENCE_MAPPER = "graphgate audience"
AUDIENCE_KEY = "included.custom.audience"
TAG_QUERY = "MATCH (t:Tag) RETURN t.tenant"
CLIENT_TIMEOUT = 90.0  # one run of client.mjs, sign-in included


# -- Keycloak administration ------------------------------------------------------------


class KeycloakAdmin:
    """The few admin REST calls this module needs (master realm's admin-cli)."""

    def __init__(self, keycloak: KeycloakService, http: httpx.AsyncClient) -> None:
        self.keycloak = keycloak
        self.http = http
        self.token = AdminToken(keycloak, http)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = await self.token.headers()
        url = f"{self.keycloak.admin_url()}{path}"
        response = await self.http.request(method, url, json=body, headers=headers)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        return response.json() if response.content else None

    async def audience_mapper(self) -> tuple[str, dict[str, Any]]:
        scopes = await self.call("GET", "/client-scopes")
        scope_id = next(scope["id"] for scope in scopes if scope["name"] == "mcp:tools")
        path = f"/client-scopes/{scope_id}/protocol-mappers/models"
        mapper = next(m for m in await self.call("GET", path) if m["name"] == AUDIENCE_MAPPER)
        return f"{path}/{mapper['id']}", mapper

    async def set_audience(self, audience: str) -> str:
        """Point the realm's audience mapper at ``audience``; returns the previous value."""
        path, mapper = await self.audience_mapper()
        before = str(mapper["config"][AUDIENCE_KEY])
        mapper["config"][AUDIENCE_KEY] = audience
        await self.call("PUT", path, mapper)
        return before

    async def client(self, client_id: str) -> dict[str, Any]:
        found = await self.call("GET", f"/clients?clientId={client_id}")
        assert found, f"no client {client_id}"
        client: dict[str, Any] = found[0]
        return client

    async def set_client_attribute(self, client_id: str, name: str, value: str | None) -> None:
        client = await self.client(client_id)
        attributes = client.setdefault("attributes", {})
        if value is None:
            attributes.pop(name, None)
        else:
            attributes[name] = value
        await self.call("PUT", f"/clients/{client['id']}", client)


# -- running client.mjs -----------------------------------------------------------------


@dataclass
class TsRun:
    """What one run of client.mjs reported, and the browser's side of it."""

    events: list[dict[str, Any]]
    returncode: int | None
    stderr: str
    pages: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of(kind)
        assert len(found) == 1, f"{len(found)} {kind!r} events in {self.describe()}"
        return found[0]

    def tool(self, name: str, index: int = 0) -> dict[str, Any]:
        return [event for event in self.of("tool") if event["name"] == name][index]

    def tool_json(self, name: str, index: int = 0) -> Any:
        event = self.tool(name, index)
        assert not event["is_error"], event["text"]
        return json.loads(event["text"])

    def flow(self, keycloak_origin: str) -> list[str]:
        """The client's HTTP requests as ``kind@host`` (``kc`` or ``gg``), repeats collapsed."""
        return request_flow(
            ((event["method"], event["url"]) for event in self.of("http")), keycloak_origin, "kc"
        )

    def describe(self) -> str:
        return f"exit {self.returncode}; events {self.events}; stderr {self.stderr[-2000:]}"


async def run_ts_client(
    script: str,
    gateway: Gateway,
    username: str,
    calls: list[dict[str, Any]],
    *,
    client_metadata_url: str | None = None,
) -> TsRun:
    """Run client.mjs for ``username``; sign in when it asks; collect its JSON lines."""
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    browser = gateway.browser()
    extra = ["--client-metadata-url", client_metadata_url] if client_metadata_url else []
    process = await asyncio.create_subprocess_exec(
        "node",
        script,
        "--server",
        f"{gateway.url}/mcp",
        "--user",
        username,
        "--redirect-uri",
        redirect_uri,
        *extra,
        "--calls",
        json.dumps(calls),
        "--timeout",
        str(CLIENT_TIMEOUT - 10),
        cwd=TS_CLIENT_PROJECT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLIENT_TIMEOUT
    try:
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), deadline - loop.time())
            if not line:
                break
            event = json.loads(line)
            events.append(event)
            if event["event"] == "authorize":
                landed = await browser.sign_in(event["url"], username, redirect_uri)
                process.stdin.write(json.dumps({"callback": landed}).encode() + b"\n")
                await process.stdin.drain()
        returncode = await asyncio.wait_for(process.wait(), max(deadline - loop.time(), 1))
        stderr = (await asyncio.wait_for(process.stderr.read(), 5)).decode(errors="replace")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return TsRun(events, returncode, stderr, browser.pages)


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ts_client() -> str:
    """client.mjs, with the pinned SDK installed into tests/e2e_ts/node_modules."""
    try:
        npm_install(TS_CLIENT_PROJECT)
    except NodeUnavailable as exc:
        service_unavailable(f"the TypeScript MCP client (node): {exc}")
    return str(TS_CLIENT_PROJECT / "client.mjs")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def admin(keycloak: KeycloakService) -> AsyncIterator[KeycloakAdmin]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield KeycloakAdmin(keycloak, http)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def public_url(admin: KeycloakAdmin) -> AsyncIterator[str]:
    """This module's graphgate URL, made the audience of Keycloak's tokens meanwhile."""
    url = f"http://127.0.0.1:{free_port()}"
    before = await admin.set_audience(f"{url}/mcp")
    try:
        yield url
    finally:
        await admin.set_audience(before)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def catalog(falkordb_service: FalkorDBService) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    tenants = {"acme": f"ts_acme_{suffix}", "globex": f"ts_globex_{suffix}"}
    await seed_tagged_tenants(falkordb_service, tenants)
    return tenants


@dataclass
class Gateway:
    mode: str
    url: str
    keycloak: KeycloakService

    @property
    def keycloak_origin(self) -> str:
        return origin(self.keycloak.base_url)

    @property
    def authorization_server(self) -> str:
        return self.keycloak.issuer if self.mode == "direct" else self.url

    def browser(self) -> Browser:
        async def keycloak_login(url: str, username: str) -> str:
            async with httpx.AsyncClient(timeout=30) as http:
                return await browser_login(url, username, demo_password(username), http)

        return Browser(self.keycloak_origin, keycloak_login)


@pytest_asyncio.fixture(loop_scope="session", scope="module", params=MODES)
async def gateway(
    request: pytest.FixtureRequest,
    keycloak: KeycloakService,
    admin: KeycloakAdmin,
    public_url: str,
    falkordb_service: FalkorDBService,
    catalog: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Gateway]:
    """graphgate in one registration mode, one mode at a time."""
    mode: str = request.param
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": urlsplit(public_url).port,
        "public_url": public_url,
        "auth": "oidc",
        "issuer": keycloak.issuer,
        "metrics_token": "e2e-metrics-token",
        "registration": mode,
        "tenants": catalog,
        "allow_writes": True,
        "data_dir": tmp_path_factory.mktemp(f"gg-ts-{mode}"),
    }
    if mode != "direct":
        options["static_client_id"] = STATIC_CLIENT
    previous: str | None = None
    if mode == "shim":
        # Keycloak as it comes: its callback names Keycloak in `iss` (see module doc).
        previous = (await admin.client(STATIC_CLIENT)).get("attributes", {}).get(EXCLUDE_ISS)
        await admin.set_client_attribute(STATIC_CLIENT, EXCLUDE_ISS, "false")
    parts = make_parts(falkordb_service.backend(), **options)
    try:
        async with serve_http(parts) as url:
            assert url == public_url
            yield Gateway(mode, url, keycloak)
    finally:
        await parts.auth.aclose()
        if mode == "shim":
            await admin.set_client_attribute(STATIC_CLIENT, EXCLUDE_ISS, previous)


# -- tests ------------------------------------------------------------------------------


async def test_ts_client_signs_in_and_calls_tools(gateway: Gateway, ts_client: str) -> None:
    """alice (tenant acme, read): every step of the TypeScript SDK's flow, then tools."""
    run = await run_ts_client(
        ts_client,
        gateway,
        "alice",
        [
            {"name": "list_databases"},
            {"name": "run_query", "arguments": {"query": TAG_QUERY}},
            {"name": "run_query", "arguments": {"query": "RETURN 1", "database": "globex"}},
        ],
    )
    assert run.returncode == 0, run.describe()
    assert run.one("done")["authorizations"] == 1

    at = "kc" if gateway.mode == "direct" else "gg"
    token_at = "gg" if gateway.mode == "proxy" else "kc"
    assert run.flow(gateway.keycloak_origin) == [
        "mcp@gg",  # 401 with resource_metadata
        "prm@gg",
        f"asm@{at}",
        f"register@{at}",
        f"token@{token_at}",
        "mcp@gg",  # initialize again with the bearer token, then everything else
    ], run.describe()
    assert run.of("http")[0]["status"] == 401

    discovered = run.of("discovered")[0]
    assert discovered["authorization_server"] == gateway.authorization_server
    assert discovered["resource"] == f"{gateway.url}/mcp"
    assert discovered["issuer"] == gateway.authorization_server

    registered = run.one("registered")
    if gateway.mode == "shim":
        assert registered["client_id"] == STATIC_CLIENT  # graphgate's /register hands it out
    else:
        assert registered["client_id"] != STATIC_CLIENT

    url = run.one("authorize")["url"]
    expected_origin = gateway.url if gateway.mode == "proxy" else gateway.keycloak.base_url
    assert origin(url) == origin(expected_origin)
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == [registered["client_id"]]
    assert query["code_challenge_method"] == ["S256"]
    assert query["resource"] == [f"{gateway.url}/mcp"]
    assert query["scope"] == ["mcp:tools"]  # the challenge's scope; no offline_access
    assert "prompt" not in query
    assert run.pages == (
        ["graphgate-consent", "idp-login"] if gateway.mode == "proxy" else ["idp-login"]
    )

    callback = run.one("callback")
    assert callback["code"] and callback["state_matches"] and callback["error"] is None
    if gateway.mode == "proxy":
        assert callback["iss"] == gateway.url
    else:
        assert callback["iss"] == gateway.keycloak.issuer
    if gateway.mode == "shim":
        # The metadata the client read names graphgate; the callback names Keycloak.
        # The TypeScript SDK never compares them (the Python SDK refuses this answer).
        assert callback["iss"] != discovered["issuer"]

    tokens = run.one("tokens")
    claims = tokens["claims"]
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["refresh_token"] is True  # Keycloak's (session-bound), or graphgate's
    assert claims["aud"] == f"{gateway.url}/mcp"
    assert "mcp:tools" in tokens["scope"].split()
    if gateway.mode == "proxy":
        assert claims["iss"] == gateway.url
        assert claims["client_id"] == registered["client_id"]
    else:
        assert claims["iss"] == gateway.keycloak.issuer
        assert claims["azp"] == registered["client_id"]
        assert claims["tenants"] == ["acme"]

    assert "list_databases" in run.one("tools")["names"]
    assert run.tool_json("list_databases") == [
        {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]
    rows = run.tool_json("run_query", 0)
    assert rows["database"] == "acme" and rows["rows"] == [["acme"]]
    refused = run.tool("run_query", 1)
    assert refused["is_error"] and "not available to you" in refused["text"]


async def test_ts_client_admin_reaches_every_tenant(gateway: Gateway, ts_client: str) -> None:
    """dana (realm role graphgate-admin) queries both tenants in one call."""
    run = await run_ts_client(
        ts_client,
        gateway,
        "dana",
        [
            {"name": "list_databases"},
            {"name": "query_databases", "arguments": {"query": TAG_QUERY}},
        ],
    )
    assert run.returncode == 0, run.describe()
    assert [d["name"] for d in run.tool_json("list_databases")] == ["acme", "globex"]
    results = run.tool_json("query_databases")["results"]
    assert {db: result["rows"] for db, result in results.items()} == {
        "acme": [["acme"]],
        "globex": [["globex"]],
    }


async def test_ts_client_user_without_tenants_gets_403(gateway: Gateway, ts_client: str) -> None:
    """erin signs in, gets a token, and graphgate's 403 ends the client's connection."""
    run = await run_ts_client(ts_client, gateway, "erin", [{"name": "list_databases"}])
    assert run.returncode == 1, run.describe()
    assert run.one("tokens")["claims"]["aud"] == f"{gateway.url}/mcp"
    error = run.one("error")
    assert error["stage"] == "reconnect"
    assert error["name"] == "StreamableHTTPError" and error["code"] == 403
    assert '"error":"access_denied"' in error["message"]
    assert "grants no tenant" in error["message"]
    assert run.of("http")[-1]["status"] == 403
    assert not run.of("tool")


@pytest.mark.parametrize("gateway", ["direct"], indirect=True)
async def test_ts_client_with_a_client_id_metadata_document(
    gateway: Gateway, ts_client: str, cimd_realm: CimdRealm
) -> None:
    """clientMetadataUrl: no registration; Keycloak fetches the document and signs alice in."""
    documents = cimd_realm.documents
    client_id = documents.new_client_id("ts-app")
    documents.publish(client_id, client_metadata(client_id, client_name="graphgate e2e ts app"))
    run = await run_ts_client(
        ts_client,
        gateway,
        "alice",
        [
            {"name": "list_databases"},
            {"name": "run_query", "arguments": {"query": TAG_QUERY}},
        ],
        client_metadata_url=client_id,
    )
    assert run.returncode == 0, run.describe()
    assert run.flow(gateway.keycloak_origin) == [
        "mcp@gg",
        "prm@gg",
        "asm@kc",  # client_id_metadata_document_supported: no registration follows
        "token@kc",
        "mcp@gg",
    ], run.describe()
    assert run.one("registered")["client_id"] == client_id  # saved, not registered
    query = parse_qs(urlsplit(run.one("authorize")["url"]).query)
    assert query["client_id"] == [client_id]
    assert query["code_challenge_method"] == ["S256"]
    assert run.pages == ["idp-login"]
    assert run.one("callback")["iss"] == gateway.keycloak.issuer
    claims = run.one("tokens")["claims"]
    assert claims["azp"] == client_id
    assert claims["aud"] == f"{gateway.url}/mcp"
    assert claims["tenants"] == ["acme"]
    assert run.tool_json("list_databases") == [
        {"name": "acme", "access": "read", "current": True, "dialect": "FalkorDB"}
    ]
    assert run.tool_json("run_query")["rows"] == [["acme"]]

    [fetch] = documents.fetched(client_id)
    assert fetch.status == 200 and fetch.user_agent.startswith("Apache-HttpClient/")
    made = await cimd_realm.client(client_id)
    assert made is not None and made["name"] == "graphgate e2e ts app"
