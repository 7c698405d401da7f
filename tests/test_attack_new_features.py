"""A hostile tenant and a hostile client against the model-side features and the live catalog.

One graphgate over real HTTP (``auth = dev`` on loopback, so the dev
authorization server too) whose only backend is the session's FalkorDB
server with discovery on. Its tenants live in graphs whose physical names
differ from the tenant names (``acme`` is ``<prefix>acme_phys``), so any
physical name reaching a user is seen. The attacks:

* resources and prompts: another tenant's ``graph://{tenant}/schema`` by URI
  tricks, physical names, no or expired token, the rate limit and audit line;
* explain_query: writes without write rights or on a read-only server,
  foreign tenants, physical names in plans and errors, files, procedures,
  huge texts and deeply nested parameters;
* write confirmation on 2026-07-28: a forged, re-targeted, borrowed, expired
  or replayed ``input_required`` state;
* discovery: a tenant's physical database discovered as a second tenant;
* the dev authorization server: a cross-site sign-in post, more redirect URIs,
  a foreign ``resource`` at /token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import jwt
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import encode_header_value

from graphgate.auth.dev import DEV_ALGORITHM, DevKeys, mint_dev_token
from graphgate.backends.base import QueryLimits
from graphgate.config import Settings
from graphgate.server import build_parts
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.mcp_results import tool, tool_error
from tests.services.raw_mcp import META, tool_call_body, tool_call_headers

pytestmark = pytest.mark.falkordb

RATE_LIMIT = 60
"""Calls per minute per subject; every test but the flood uses subjects of its own."""


@dataclass
class Gate:
    url: str
    settings: Settings
    prefix: str
    audit: Path

    @property
    def physical(self) -> list[str]:
        """Strings no user may ever see: graph names (all carry the prefix), the address."""
        host = urlsplit(self.settings.backends["default"].url).netloc
        return [self.prefix, host]

    def token(self, *tenants: str, sub: str | None = None, admin: bool = False) -> str:
        return mint_dev_token(
            self.settings,
            sub=sub or f"atk-{uuid.uuid4().hex[:8]}",
            tenants=list(tenants),
            admin=admin,
            ttl=600,
        )

    def client(self, bearer: str, mode: str = "legacy") -> Client:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
        return Client(
            streamable_http_client(f"{self.url}/mcp", http_client=http),  # type: ignore[arg-type]
            mode=mode,  # type: ignore[arg-type]
        )

    def assert_no_physical(self, text: str) -> None:
        for secret in self.physical:
            assert secret not in text, f"{secret!r} leaked: {text[:300]}"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def gate(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gate]:
    root = tmp_path_factory.mktemp("attack")
    secret = root / "falkordb-password"
    secret.write_text(f"{falkordb_service.password}\n")
    prefix = f"atk{uuid.uuid4().hex[:6]}_"
    physical = {name: f"{prefix}{name}_phys" for name in ("acme", "globex", "careful")}
    seeding = falkordb_service.backend()
    await seeding.start()
    try:
        for tenant, graph in physical.items():
            await seeding.write(
                graph,
                "CREATE (:Person {name: $t})-[:KNOWS]->(:Person)",
                {"t": tenant},
                QueryLimits(),
            )
        await seeding.write(f"{prefix}newbie", "CREATE (:Fresh)", None, QueryLimits())
    finally:
        await seeding.close()
    audit = root / "audit.jsonl"
    options = http_settings(
        auth="dev",
        data_dir=root,
        allow_writes=True,
        confirm_writes="when_supported",
        confirm_timeout=3,
        rate_limit=RATE_LIMIT,
        audit_log=str(audit),
        backends={
            "default": {
                "url": falkordb_service.url,
                "password_file": str(secret),
                "discover": True,
                "discover_prefix": prefix,
                "discover_interval": 3600,
            }
        },
        tenants={
            "acme": physical["acme"],
            "globex": physical["globex"],
            "careful": {"database": physical["careful"], "confirm_writes": "always"},
            "vacant": f"{prefix}vacant_phys",  # no graph: nothing written yet
        },
    )
    parts = build_parts(Settings(**options))
    async with serve_http(parts) as url:
        gate = Gate(url, parts.settings, prefix, audit)
        # Discovery's first look runs at start; wait for the graph it serves as "newbie".
        async with gate.client(gate.token("newbie")) as client:
            for _ in range(100):
                result = await client.call_tool("list_databases", {})
                if not result.is_error and "newbie" in result.content[0].text:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("discovery did not serve the newbie graph")
        yield gate


# -- resources and prompts ------------------------------------------------------------------


HOSTILE_URIS = [
    "graph://globex/schema",
    "graph://GLOBEX/schema",
    "graph://gl%6Fbex/schema",
    "graph://glоbex/schema",  # a Cyrillic о
    "graph://globex%00/schema",
    "graph://acme%2F..%2Fglobex/schema",
    "graph://..%2Fglobex/schema",
    "graph://%2e%2e/schema",
    "graph://globex/schema/",
    "graph://acme/../globex/schema",
    "graph://globex/schema?tenant=acme",
    "graph://globex",
    "GRAPH://globex/schema",
    "file:///etc/passwd",
    "graph://" + "g" * 20_000 + "/schema",
    "graph://nope/schema",
]


async def _read(http: httpx.AsyncClient, bearer: str, uri: str) -> tuple[int, Any]:
    """``resources/read`` of ``uri`` as sent, byte for byte (no client-side URL parsing)."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "resources/read",
        "params": {"uri": uri, "_meta": META},
    }
    headers = {
        **tool_call_headers(""),
        "mcp-method": "resources/read",
        "mcp-name": encode_header_value(uri),
        "authorization": f"Bearer {bearer}",
    }
    answer = await http.post("/mcp", json=body, headers=headers)
    try:
        return answer.status_code, answer.json()
    except ValueError:
        return answer.status_code, answer.text


async def test_resource_uri_tricks_reach_only_the_callers_own_schema(
    gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="graphgate")
    bearer = gate.token("acme")
    async with httpx.AsyncClient(base_url=gate.url, timeout=30) as http:
        for uri in [*HOSTILE_URIS, f"graph://{gate.prefix}globex_phys/schema"]:
            status, answer = await _read(http, bearer, uri)
            # The caller's own words come back (shortened); nothing else may name a graph.
            shown = json.dumps(answer).replace(f"{gate.prefix}globex_phys", "NAME")
            assert status < 500, (uri[:80], status, shown[:300])
            assert "Person" not in shown and len(shown) < 2000, (uri[:80], shown[:300])
            gate.assert_no_physical(shown)
            if status == 200:
                assert "error" in answer, f"{uri[:80]} was read: {shown[:300]}"
                error = answer["error"]["message"]
                assert "not available to you" in error or "Unknown resource" in error, error
        # The caller's own, with a query or a fragment added, or percent-encoded: still acme.
        for uri in [
            "graph://acme/schema",
            "graph://acme/schema?tenant=globex",
            "graph://a%63me/schema#x",
        ]:
            status, answer = await _read(http, bearer, uri)
            assert status == 200, answer
            text = answer["result"]["contents"][0]["text"]
            assert json.loads(text)["database"] == "acme", uri
            gate.assert_no_physical(text)
    # Hostile URIs are the client's mistake: no error (and no traceback) in the server's log.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_listings_and_prompts_name_tenants_only(gate: Gate) -> None:
    async with (
        gate.client(gate.token("acme")) as alice,
        gate.client(gate.token(admin=True)) as root,
    ):
        for client in (alice, root):
            listed = [str(r.uri) for r in (await client.list_resources()).resources]
            templates = (await client.list_resource_templates()).resource_templates
            prompts = (await client.list_prompts()).prompts
            shown = json.dumps(
                [listed, [t.model_dump() for t in templates], [p.model_dump() for p in prompts]]
            )
            gate.assert_no_physical(shown)
        assert [str(r.uri) for r in (await alice.list_resources()).resources] == [
            "graph://acme/schema"
        ]
        got = await root.get_prompt("explore_database", {"database": "globex"})
        gate.assert_no_physical(got.messages[0].content.text)  # type: ignore[union-attr]
        refusals = []
        for name in ["globex", "nope", f"{gate.prefix}acme_phys", "acme_phys", "ACME"]:
            for prompt, arguments in [
                ("explore_database", {"database": name}),
                ("safe_update", {"database": name, "change": "x"}),
            ]:
                with pytest.raises(MCPError) as refused:
                    await alice.get_prompt(prompt, arguments)
                text = str(refused.value)
                assert "is not available to you" in text, text
                refusals.append(text.replace(repr(name), "NAME"))
        with pytest.raises(MCPError) as unknown:
            await alice.get_prompt("no_such_prompt", {})
        assert "internal_error" not in str(unknown.value), str(unknown.value)
        # Unknown, not-yours and physical names read the same (the physical one: as given).
        assert len({r for r in refusals if gate.prefix not in r}) == 1, set(refusals)


async def test_resources_without_a_good_token_are_refused_at_the_door(gate: Gate) -> None:
    keys = DevKeys.load_or_create(gate.settings.data_dir)
    now = int(time.time())
    claims = {
        "iss": gate.settings.dev_issuer,
        "aud": gate.settings.token_audience,
        "sub": "late",
        "iat": now - 7200,
        "nbf": now - 7200,
        "exp": now - 3600,
        "azp": "graphgate-cli",
        "scope": " ".join(gate.settings.required_scopes),
        "tenants": ["globex"],
    }
    expired = jwt.encode(claims, keys.private_key, algorithm=DEV_ALGORITHM)
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "resources/read",
        "params": {"uri": "graph://globex/schema", "_meta": META},
    }
    headers = {**tool_call_headers(""), "mcp-method": "resources/read"}
    del headers["mcp-name"]
    async with httpx.AsyncClient(base_url=gate.url, timeout=30) as http:
        for bearer in [None, expired, "not-a-jwt", gate.token("globex") + "x"]:
            sent = dict(headers)
            if bearer is not None:
                sent["authorization"] = f"Bearer {bearer}"
            answer = await http.post("/mcp", json=body, headers=sent)
            assert answer.status_code == 401, (bearer, answer.text)
            assert "Person" not in answer.text
            gate.assert_no_physical(answer.text)


async def test_resource_reads_and_prompts_are_rate_limited_and_audited(gate: Gate) -> None:
    subject = f"flood-{uuid.uuid4().hex[:6]}"
    async with gate.client(gate.token("acme", sub=subject)) as flood:
        limited = None
        for i in range(RATE_LIMIT * 2):
            try:
                if i % 2:
                    await flood.read_resource("graph://acme/schema")
                else:
                    await flood.get_prompt("explore_database", {"database": "acme"})
            except MCPError as refused:
                limited = str(refused)
                break
        assert limited is not None and "rate_limited" in limited, limited
    lines = [json.loads(line) for line in gate.audit.read_text().splitlines()]
    mine = [line for line in lines if line["subject"] == subject]
    assert {line["tool"] for line in mine} == {"resources/read", "prompts/get"}
    assert all(line["databases"] in (["acme"], []) for line in mine)
    assert mine[-1]["outcome"] == "rate_limited"
    gate.assert_no_physical(json.dumps(mine))


# -- explain_query --------------------------------------------------------------------------


async def test_explain_never_leaks_physical_names_or_files(gate: Gate) -> None:
    async with gate.client(gate.token("acme", "vacant:write")) as client:
        plan = await tool(client, "explain_query", query="MATCH (p:Person) RETURN p.name")
        assert plan["database"] == "acme"
        gate.assert_no_physical(json.dumps(plan))
        # A tenant without a graph: the error names the tenant, never its graph.
        error = await tool_error(client, "explain_query", query="CREATE (:X)", database="vacant")
        assert "'vacant' holds no graph yet" in error, error
        gate.assert_no_physical(error)
        # Planning a file read reads no file.
        result = await client.call_tool(
            "explain_query",
            {"query": "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row"},
        )
        text = result.content[0].text  # type: ignore[union-attr]
        assert "root:" not in text
        gate.assert_no_physical(text)
        # Planning a procedure that creates an index creates none.
        await client.call_tool(
            "explain_query", {"query": "CALL db.idx.fulltext.createNodeIndex('Person', 'name')"}
        )
        indexes = await tool(client, "run_query", query="CALL db.indexes()")
        assert "FULLTEXT" not in json.dumps(indexes).upper(), indexes
        # Huge and broken texts: a clear error, nothing leaked.
        for query in ["RETURN 1 " + "// x\n" * 40_000, "MATCH (n:" + "A" * 90_000, "EXPLAIN "]:
            result = await client.call_tool("explain_query", {"query": query})
            text = result.content[0].text  # type: ignore[union-attr]
            assert result.is_error and ":" in text[:40], text[:200]
            gate.assert_no_physical(text)
        # Foreign tenants: the same answer as an unknown one.
        answers = set()
        for name in ["globex", "nope", f"{gate.prefix}globex_phys"]:
            error = await tool_error(
                client, "explain_query", query="MATCH (n) RETURN n", database=name
            )
            answers.add(error.replace(repr(name), "NAME"))
        assert len(answers) == 1, answers


async def test_deeply_nested_params_cost_what_they_are(gate: Gate) -> None:
    """FalkorDB reads params as a ``CYPHER x=...`` header, but not with the query parser's
    backtracking: 18 levels took 1 ms as params against 0.85 s as text (measured). So the
    text's depth bound need not apply to them; this keeps that true."""
    depth = gate.settings.max_query_depth + 6
    nested: Any = 1
    for _ in range(depth):
        nested = [nested]
    as_text = "RETURN " + "[" * depth + "1" + "]" * depth
    async with gate.client(gate.token("acme")) as client:
        written = await tool_error(client, "run_query", query=as_text)
        assert written.startswith("query_too_complex:"), written
        for name in ["run_query", "explain_query"]:
            started = time.monotonic()
            result = await client.call_tool(name, {"query": "RETURN $x", "params": {"x": nested}})
            assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
            assert time.monotonic() - started < 2, name


async def test_explain_of_a_write_on_a_read_only_server(
    falkordb_service: FalkorDBService, tmp_path: Path
) -> None:
    graph = f"ro_{uuid.uuid4().hex[:6]}"
    seeding = falkordb_service.backend()
    await seeding.start()
    try:
        await seeding.write(graph, "CREATE (:Seed)", None, QueryLimits())
    finally:
        await seeding.close()
    options = http_settings(tenants={"acme": graph}, auth="dev", data_dir=tmp_path)
    parts = make_parts(falkordb_service.backend(), **options)
    async with serve_http(parts) as url:
        bearer = mint_dev_token(
            parts.settings, sub="w", tenants=["acme:write"], admin=False, ttl=60
        )
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
        async with Client(
            streamable_http_client(f"{url}/mcp", http_client=http),  # type: ignore[arg-type]
            mode="legacy",
        ) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "run_write_query" not in names
            error = await tool_error(client, "explain_query", query="CREATE (:X) RETURN 1")
            assert "writes_not_allowed" in error and "allow_writes is off" in error, error
            assert graph not in error
            # Nothing was created by planning it.
            answer = await tool(client, "run_query", query="MATCH (n) RETURN count(n)")
            assert answer["rows"] == [[1]]


# -- write confirmation on 2026-07-28 -------------------------------------------------------


def _headers(bearer: str) -> dict[str, str]:
    return {**tool_call_headers("run_write_query"), "authorization": f"Bearer {bearer}"}


def _write_call(
    query: str,
    params: dict[str, Any],
    database: str = "careful",
    state: str | None = None,
    accept: bool = False,
) -> dict[str, Any]:
    body = tool_call_body(
        "run_write_query", {"query": query, "params": params, "database": database}
    )
    body["params"]["_meta"] = {
        **META,
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    }
    if state is not None:
        body["params"]["requestState"] = state
    if accept:
        body["params"]["inputResponses"] = {
            "confirm_write": {"action": "accept", "content": {"value": True}}
        }
    return body


async def _post(http: httpx.AsyncClient, bearer: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await http.post("/mcp", json=body, headers=_headers(bearer))
    assert answer.status_code < 500, answer.text  # a refused state may be a 4xx JSON-RPC error
    return dict(answer.json())


async def _count(gate: Gate, name: str, database: str = "careful") -> int:
    async with gate.client(gate.token(database, sub="counter")) as client:
        answer = await tool(
            client,
            "run_query",
            database=database,
            query="MATCH (n {name: $n}) RETURN count(n)",
            params={"n": name},
        )
    return int(answer["rows"][0][0])


def _refused(answer: dict[str, Any]) -> str:
    """The refusal's text, whichever layer refused (the SDK's seal, or graphgate)."""
    if "error" in answer:
        return str(answer["error"]["message"])
    result = answer["result"]
    assert result.get("isError") is True, result
    return str(result["content"][0]["text"])


async def test_confirmation_state_cannot_be_forged_moved_lent_or_kept(gate: Gate) -> None:
    name = f"c-{uuid.uuid4().hex[:8]}"
    query, params = "CREATE (:Person {name: $n})", {"n": name}
    owner, other = gate.token("careful:write", "acme:write"), gate.token("careful:write")
    async with httpx.AsyncClient(base_url=gate.url, timeout=30) as http:
        asked = (await _post(http, owner, _write_call(query, params)))["result"]
        assert asked["resultType"] == "input_required", asked
        state = asked["requestState"]
        gate.assert_no_physical(json.dumps(asked))

        # Forged: graphgate's own plaintext shape, a far deadline, any binding.
        forged = f"9999999999:{hashlib.sha256(b'x').hexdigest()}"
        tampered = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
        for bogus in [forged, tampered, "", base64.urlsafe_b64encode(b"{}").decode()]:
            _refused(await _post(http, owner, _write_call(query, params, state=bogus, accept=True)))
        # Moved to another query, other parameters, another tenant; lent to another user.
        moves = [
            (
                owner,
                _write_call(
                    "CREATE (:Person {name: $n, evil: true})", params, state=state, accept=True
                ),
            ),
            (owner, _write_call(query, {"n": name + "-2"}, state=state, accept=True)),
            (owner, _write_call(query, params, database="acme", state=state, accept=True)),
            (other, _write_call(query, params, state=state, accept=True)),
        ]
        for bearer, body in moves:
            _refused(await _post(http, bearer, body))
        assert await _count(gate, name) == 0
        assert await _count(gate, name + "-2") == 0
        assert await _count(gate, name, "acme") == 0

        # The right answer runs the write once; the same answer again runs nothing.
        done = await _post(http, owner, _write_call(query, params, state=state, accept=True))
        assert done["result"].get("isError") is not True, done
        replayed = await _post(http, owner, _write_call(query, params, state=state, accept=True))
        text = _refused(replayed)
        assert "nothing ran" in text or "requestState" in text, text
        assert await _count(gate, name) == 1

        # Kept past confirm_timeout: nothing runs.
        late = f"late-{uuid.uuid4().hex[:8]}"
        asked = (await _post(http, owner, _write_call(query, {"n": late})))["result"]
        await asyncio.sleep(gate.settings.confirm_timeout + 1.5)
        text = _refused(
            await _post(
                http,
                owner,
                _write_call(query, {"n": late}, state=asked["requestState"], accept=True),
            )
        )
        assert "later than" in text or "requestState" in text, text
        assert await _count(gate, late) == 0


async def test_a_client_claiming_elicitation_that_never_answers_holds_nothing(gate: Gate) -> None:
    """2026-07-28: the server asks and returns; nothing waits, nothing runs."""
    name = f"mute-{uuid.uuid4().hex[:8]}"
    bearer = gate.token("careful:write")
    async with httpx.AsyncClient(base_url=gate.url, timeout=30) as http:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(
                _post(http, bearer, _write_call("CREATE (:Person {name: $n})", {"n": name}))
                for _ in range(20)
            )
        )
        assert time.monotonic() - started < 10
    assert all(a["result"]["resultType"] == "input_required" for a in answers)
    assert await _count(gate, name) == 0


# -- discovery ------------------------------------------------------------------------------


async def test_a_placed_database_is_not_discovered_as_a_second_tenant(gate: Gate) -> None:
    """``acme`` lives in ``<prefix>acme_phys`` on a discovering backend: no tenant
    ``acme_phys`` may appear beside it (its physical name, and a way around acme's rules)."""
    async with gate.client(gate.token(admin=True)) as root:
        listed = await tool(root, "list_databases")
        names = {entry["name"] for entry in listed}
    assert {"acme", "globex", "careful", "vacant", "newbie"} <= names
    assert not {"acme_phys", "globex_phys", "careful_phys"} & names, names
    name = f"alias-{uuid.uuid4().hex[:8]}"
    async with gate.client(gate.token("globex", "careful_phys:write", "acme_phys")) as sneaky:
        for tenant in ["careful_phys", "acme_phys", f"{gate.prefix}acme_phys"]:
            error = await tool_error(sneaky, "run_query", query="RETURN 1", database=tenant)
            assert "is not available to you" in error, error
        # careful's confirm_writes = "always" cannot be sidestepped through the alias.
        error = await tool_error(
            sneaky,
            "run_write_query",
            query="CREATE (:Person {name: $n})",
            params={"n": name},
            database="careful_phys",
        )
        assert "is not available to you" in error, error
    assert await _count(gate, name) == 0


async def test_graphgate_internal_graphs_never_become_tenants(gate: Gate) -> None:
    async with gate.client(gate.token("empty", "graphgate", admin=True)) as root:
        # A read of vacant makes graphgate create its internal empty graph.
        await tool(root, "run_query", query="RETURN 1", database="vacant")
        listed = {entry["name"] for entry in await tool(root, "list_databases")}
    assert not any("graphgate" in name or "empty" in name for name in listed), listed


# -- the dev authorization server -----------------------------------------------------------


CALLBACK = "http://127.0.0.1:9/callback"


@dataclass
class Parked:
    """An /authorize request parked at the sign-in page, and what finishing it needs."""

    request_id: str
    client_id: str
    verifier: str
    redirect: str = CALLBACK


async def _pending_sign_in(http: httpx.AsyncClient) -> Parked:
    redirect = CALLBACK
    registered = await http.post(
        "/register",
        json={
            "redirect_uris": [redirect],
            "client_name": "attack",
            "token_endpoint_auth_method": "none",
        },
    )
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    )
    parked = await http.get(
        "/authorize",
        params={
            "client_id": client_id,
            "redirect_uri": redirect,
            "response_type": "code",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s",
        },
    )
    assert parked.status_code in (302, 303, 307), parked.text
    request_id = parse_qs(urlsplit(parked.headers["location"]).query)["request"][0]
    return Parked(request_id, client_id, verifier)


async def test_a_cross_site_sign_in_post_is_refused(gate: Gate) -> None:
    async with httpx.AsyncClient(base_url=gate.url, timeout=30) as http:
        parked = await _pending_sign_in(http)
        for origin in ["https://evil.example", "null", "http://127.0.0.1.evil.example"]:
            posted = await http.post(
                "/sign-in",
                data={"request": parked.request_id, "user": "admin"},
                headers={"origin": origin},
            )
            assert posted.status_code == 403, (origin, posted.status_code, posted.text)
            assert "location" not in posted.headers
        # The request is still the user's own to finish (or cancel), from the page itself.
        posted = await http.post(
            "/sign-in",
            data={"request": parked.request_id, "deny": "1"},
            headers={"origin": gate.url},
        )
        assert posted.status_code == 303
        assert posted.headers["location"].startswith(parked.redirect + "?error=")


async def test_signed_in_tokens_are_for_this_server_only(gate: Gate) -> None:
    """A code exchanged with a foreign ``resource`` still gets no foreign audience."""
    async with httpx.AsyncClient(base_url=gate.url, timeout=30) as http:
        parked = await _pending_sign_in(http)
        page = await http.get("/sign-in", params={"request": parked.request_id})
        user = page.text.split('name="user" value="', 1)[1].split('"', 1)[0]  # the first listed
        posted = await http.post("/sign-in", data={"request": parked.request_id, "user": user})
        code = parse_qs(urlsplit(posted.headers["location"]).query)["code"][0]
        exchanged = await http.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": parked.redirect,
                "client_id": parked.client_id,
                "code_verifier": parked.verifier,
                "resource": "https://evil.example/mcp",
            },
        )
    if exchanged.status_code == 200:
        access = exchanged.json()["access_token"]
        claims = jwt.decode(access, options={"verify_signature": False})
        assert claims["iss"] == gate.settings.dev_issuer
        assert claims["aud"] == gate.settings.token_audience
        assert "evil" not in json.dumps(claims)
    else:
        assert exchanged.status_code == 400, exchanged.text
        assert "evil" not in exchanged.text or "invalid" in exchanged.json()["error"]


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.1/cb",
        "http://0x7f000001/cb",
        "http://2130706433/cb",
        "http://[::ffff:127.0.0.1]/cb",
        "http://localhost./cb",
        "http://localhost.evil.example/cb",
        "http:/\\evil.example/cb",
        "http://127.0.0.1:80\\@evil.example/cb",
        "http://127.0.0.1%2F@evil.example/cb",
        "HTTP://EVIL.EXAMPLE/cb",
        "http://127.0.0.1:99999/cb",
        "data:text/html,<script>alert(1)</script>",
    ],
)
async def test_dev_registration_keeps_codes_on_this_machine(gate: Gate, redirect_uri: str) -> None:
    """Refused, or registered only as the loopback URI it normalizes to (``127.1`` is
    ``127.0.0.1``; a backslash before ``@`` is a path): codes never leave the machine."""
    async with httpx.AsyncClient(base_url=gate.url, timeout=30) as http:
        answer = await http.post(
            "/register", json={"redirect_uris": [redirect_uri], "client_name": "x"}
        )
    if answer.status_code == 201:
        for registered in answer.json()["redirect_uris"]:
            parts = urlsplit(registered)
            assert parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost")
            assert "@" not in parts.netloc and "\\" not in registered, registered
    else:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")
