"""Fair share and the structural bound, as clients see them (issue 12).

graphgate's production HTTP app over the real FalkorDB, real MCP clients on
loopback, dev-issuer tokens:

- a tenant holding its whole share with slow queries gets ``busy`` (nothing
  ran, a retry hint) while another tenant's calls keep succeeding;
- the same per caller, across two tenants;
- ``query_databases`` takes one share per tenant it touches;
- the automatic share is half of the server's workers;
- pathological query texts get ``query_too_complex`` from every tool that
  takes text, while another tenant is served; ordinary nested queries pass.

The in-process part checks what the fair share keeps: nothing for idle names.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from graphgate.auth.dev import mint_dev_token
from graphgate.config import Settings
from graphgate.errors import Busy
from graphgate.fairshare import FairShare
from graphgate.server import Parts
from tests.services.falkordb import FalkorDBService, seed_tagged_tenants
from tests.services.graphgate import METRICS_HEADERS, http_settings, make_parts, serve_http
from tests.services.mcp_results import tool, tool_error

# 9 million rows counted in constant memory: about 1.8 s of one FalkorDB thread
# here, long enough to hold a share while the test looks (0.4 s in), short
# enough for the FalkorDB client's 5 s socket timeout on a loaded machine.
SLOW = "UNWIND range(1, 4000) AS a UNWIND range(1, 4000) AS b RETURN count(*)"
HELD = 16_000_000
POINT = "MATCH (t:Tag) RETURN t.tenant"


async def until_busy(attempt: Callable[[], Awaitable[Any]], is_busy: Callable[[Any], bool]) -> Any:
    """``attempt()`` until its answer is a busy one: the slow calls started before it
    may still be connecting on a loaded machine. At most five seconds."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        answer = await attempt()
        if is_busy(answer) or asyncio.get_running_loop().time() > deadline:
            return answer
        await asyncio.sleep(0.05)


async def seeded_parts(
    falkordb_service: FalkorDBService, data_dir: Path, tenants: list[str], **settings: Any
) -> Parts:
    suffix = uuid.uuid4().hex[:6]
    catalog = {tenant: f"{tenant}_{suffix}" for tenant in tenants}
    await seed_tagged_tenants(falkordb_service, catalog)
    options = http_settings(
        tenants=catalog, auth="dev", data_dir=data_dir, query_timeout=30, **settings
    )
    return make_parts(falkordb_service.backend(), **options)


def client_for(
    url: str, settings: Settings, sub: str, *tenants: str, admin: bool = False
) -> Client:
    bearer = mint_dev_token(settings, sub=sub, tenants=list(tenants), admin=admin, ttl=600)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=60)
    return Client(streamable_http_client(f"{url}/mcp", http_client=http))  # type: ignore[arg-type]


async def busy_count(url: str, reason: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        text = (await http.get("/metrics", headers=METRICS_HEADERS)).text
    for line in text.splitlines():
        if line.startswith(f'graphgate_busy_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
async def two_tenants(
    falkordb_service: FalkorDBService, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[str, Settings]]:
    """graphgate over tenants acme and globex, with the settings the test names."""
    options: dict[str, Any] = getattr(request, "param", {})
    parts = await seeded_parts(falkordb_service, tmp_path, ["acme", "globex"], **options)
    async with serve_http(parts) as url:
        yield url, parts.settings


async def error_or_answer(client: Client, name: str, /, **arguments: Any) -> str:
    """The tool's text, error or not."""
    result = await client.call_tool(name, arguments)
    return str(result.content[0].text)  # type: ignore[union-attr]


def is_busy_text(text: str) -> bool:
    return text.startswith("busy:")


def with_settings(**settings: Any) -> pytest.MarkDecorator:
    """Run the test against a `two_tenants` server with these settings."""
    return pytest.mark.parametrize("two_tenants", [settings], indirect=True, ids=[""])


@with_settings(tenant_concurrency=1, busy_wait=0.2)
async def test_a_tenant_holding_its_share_is_busy_while_another_is_served(
    two_tenants: tuple[str, Settings],
) -> None:
    url, settings = two_tenants
    alice = client_for(url, settings, "alice", "acme")
    carol = client_for(url, settings, "carol", "acme")
    bob = client_for(url, settings, "bob", "globex")
    async with alice, carol, bob:
        slow = asyncio.create_task(tool(alice, "run_query", query=SLOW))
        refused = await until_busy(
            lambda: error_or_answer(carol, "run_query", query=POINT), is_busy_text
        )
        assert not slow.done(), "the slow query should still hold acme's share"
        assert refused.startswith("busy: Database 'acme' already has 1 queries in flight")
        assert "Nothing ran; retry in" in refused
        served = [await tool(bob, "run_query", query=POINT) for _ in range(5)]
        assert all(answer["rows"] == [["globex"]] for answer in served)
        assert (await slow)["rows"] == [[HELD]]
        # The share is back: acme is served again.
        assert (await tool(carol, "run_query", query=POINT))["rows"] == [["acme"]]
    assert await busy_count(url, "tenant") == 1
    assert await busy_count(url, "subject") == 0


@with_settings(tenant_concurrency=4, subject_concurrency=1, busy_wait=0.2)
async def test_a_caller_holding_its_share_is_busy_in_every_tenant(
    two_tenants: tuple[str, Settings],
) -> None:
    url, settings = two_tenants
    alice = client_for(url, settings, "alice", "acme", "globex")
    bob = client_for(url, settings, "bob", "globex")
    async with alice, bob:
        slow = asyncio.create_task(tool(alice, "run_query", query=SLOW, database="acme"))
        refused = await until_busy(
            lambda: error_or_answer(alice, "run_query", query=POINT, database="globex"),
            is_busy_text,
        )
        assert not slow.done()
        assert refused.startswith("busy: You already have 1 queries in flight.")
        assert (await tool(bob, "run_query", query=POINT))["rows"] == [["globex"]]
        await slow
    assert await busy_count(url, "subject") == 1


@with_settings(tenant_concurrency=1, busy_wait=0.2)
async def test_query_databases_takes_a_share_of_each_tenant_it_touches(
    two_tenants: tuple[str, Settings],
) -> None:
    url, settings = two_tenants
    alice = client_for(url, settings, "alice", "acme")
    root = client_for(url, settings, "root", admin=True)
    async with alice, root:
        slow = asyncio.create_task(tool(alice, "run_query", query=SLOW))
        answer = await until_busy(
            lambda: tool(root, "query_databases", query=POINT),
            lambda answer: "error" in answer["results"]["acme"],
        )
        assert not slow.done()
        results = answer["results"]
        assert results["acme"]["error"].startswith("busy: Database 'acme' already has")
        assert results["globex"]["rows"] == [["globex"]]
        await slow
        answer = await tool(root, "query_databases", query=POINT)
        assert answer["results"]["acme"]["rows"] == [["acme"]]


@with_settings(subject_concurrency=1, busy_wait=0.2)
async def test_query_databases_is_one_call_of_its_caller(
    two_tenants: tuple[str, Settings],
) -> None:
    url, settings = two_tenants
    root = client_for(url, settings, "root", admin=True)
    async with root:
        answer = await tool(root, "query_databases", query=POINT)
    assert {name: result["rows"] for name, result in answer["results"].items()} == {
        "acme": [["acme"]],
        "globex": [["globex"]],
    }


@with_settings(busy_wait=0.2)
async def test_by_default_a_tenant_gets_half_of_the_servers_workers(
    two_tenants: tuple[str, Settings], falkordb_service: FalkorDBService
) -> None:
    url, settings = two_tenants
    backend = falkordb_service.backend()
    await backend.start()
    try:
        workers = await backend.workers()
    finally:
        await backend.close()
    share = max(1, workers // 2)
    callers = [client_for(url, settings, f"user{i}", "acme") for i in range(share + 1)]
    bob = client_for(url, settings, "bob", "globex")
    async with bob, contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client) for client in callers]
        slow = [asyncio.create_task(tool(c, "run_query", query=SLOW)) for c in clients[:share]]
        refused = await until_busy(
            lambda: error_or_answer(clients[share], "run_query", query=POINT), is_busy_text
        )
        assert not any(task.done() for task in slow)
        assert refused.startswith(f"busy: Database 'acme' already has {share} queries")
        assert (await tool(bob, "run_query", query=POINT))["rows"] == [["globex"]]
        await asyncio.gather(*slow)


HOSTILE = [
    "RETURN " + "(" * 30 + "1" + ")" * 30,
    "RETURN " + "[" * 20 + "1" + "]" * 20,
    "RETURN " + "-" * 20 + "1",
    "RETURN " + "NOT " * 16 + "true",
    "RETURN " + "+".join(["(" * 12 + "1" + ")" * 12] * 100),
    "RETURN size([" + ",".join(["1"] * 40_000) + "])",
]


@with_settings(allow_writes=True)
async def test_pathological_texts_are_refused_while_another_tenant_is_served(
    two_tenants: tuple[str, Settings],
) -> None:
    url, settings = two_tenants
    mallory = client_for(url, settings, "mallory", "acme")
    root = client_for(url, settings, "root", admin=True)
    bob = client_for(url, settings, "bob", "globex")
    async with mallory, root, bob:
        attacks = [
            tool_error(mallory, name, query=text)
            for text in HOSTILE
            for name in ("run_query", "run_write_query")
        ]
        attacks += [tool_error(root, "query_databases", query=text) for text in HOSTILE]
        served = [tool(bob, "run_query", query=POINT) for _ in range(10)]
        outcomes = await asyncio.gather(*attacks, *served)
    refusals, answers = outcomes[: len(attacks)], outcomes[len(attacks) :]
    for refusal in refusals:
        assert refusal.startswith("query_too_complex: "), refusal[:200]
        assert "nest less deeply" in refusal
        assert "Traceback" not in refusal and "127.0.0.1" not in refusal
    assert all(answer["rows"] == [["globex"]] for answer in answers)


async def test_ordinary_nested_queries_still_run(two_tenants: tuple[str, Settings]) -> None:
    url, settings = two_tenants
    alice = client_for(url, settings, "alice", "acme")
    async with alice:
        answer = await tool(
            alice,
            "run_query",
            query="RETURN [x IN range(1, 2) | [y IN range(1, x) | {v: (x * (y + 1))}]] AS m, "
            "((((((((((((1)))))))))))) AS twelve_deep, - - 3 AS twice_negated, "
            "'((((((((((((((((((((' AS in_a_string // ((((((((((((((((",
        )
        assert answer["rows"] == [[[[{"v": 2}], [{"v": 4}, {"v": 6}]], 1, 3, "(" * 20]]
        answer = await tool(
            alice,
            "run_query",
            query="MATCH (t:Tag) WHERE (t.tenant = 'acme' OR (t.tenant STARTS WITH 'a' "
            "AND NOT (t.tenant = 'b'))) AND NOT (t)-->() RETURN t.tenant",
        )
        assert answer["rows"] == [["acme"]]


# -- what the fair share keeps -------------------------------------------------------------


async def test_no_state_is_kept_for_idle_names() -> None:
    fair = FairShare(tenant_limit=1, subject_limit=1, wait=0.01)

    async def call(index: int) -> None:
        async with fair.share(f"tenant-{index % 100}", f"subject-{index}"):
            await asyncio.sleep(0)

    outcomes = await asyncio.gather(*(call(i) for i in range(10_000)), return_exceptions=True)
    assert all(outcome is None or isinstance(outcome, Busy) for outcome in outcomes)
    assert fair.names_held == 0


async def test_waiting_calls_are_served_in_order_and_a_cancelled_one_gives_its_turn_back() -> None:
    fair = FairShare(tenant_limit=1, subject_limit=5, wait=5)
    order: list[str] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with fair.share("acme", "a"):
            await release.wait()

    async def call(name: str) -> None:
        async with fair.share("acme", name):
            order.append(name)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    first = asyncio.create_task(call("first"))
    cancelled = asyncio.create_task(call("cancelled"))
    second = asyncio.create_task(call("second"))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    release.set()
    await asyncio.gather(holder, first, second)
    assert order == ["first", "second"]
    assert fair.names_held == 0


async def test_a_call_cancelled_while_waiting_for_its_tenant_gives_back_its_caller_share() -> None:
    fair = FairShare(tenant_limit=1, subject_limit=1, wait=5)
    release = asyncio.Event()

    async def hold() -> None:
        async with fair.share("acme", "someone else"):
            await release.wait()

    async def call() -> None:
        async with fair.share("acme", "alice"):
            pass

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(call())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    # alice's own share is free again: she is served in another tenant at once.
    async with fair.share("globex", "alice"):
        pass
    release.set()
    await holder
    assert fair.names_held == 0
