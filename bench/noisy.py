"""Noisy neighbour (issue 12): one tenant's heavy reads beside another's point reads.

Tenant A (``noisy``, a few hundred thousand Person nodes) runs an aggregation
over all of them at full concurrency; tenant B (``quiet``, the usual 200
Person nodes) runs point reads at concurrency 4. B's latency is measured
three ways, each phase bounded in time:

1. B alone;
2. B beside A, fair share on (graphgate's defaults: a tenant may hold half of
   FalkorDB's THREAD_COUNT);
3. B beside A, fair share off (``tenant_concurrency`` and
   ``subject_concurrency`` far above A's concurrency).

Target: B's p50 within 2x and p99 within 3x of B alone, and no call of B's
fails. A's calls are counted apart: served, ``busy``, other errors. Both load
generators are the lean one (bench/wire.py), one connection per worker, in
this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import load
from wire import WireClient

NOISY_PERSONS = 200_000
HEAVY_QUERY = (
    "MATCH (p:Person) RETURN p.city AS city, count(p) AS people, avg(p.age) AS age "
    "ORDER BY people DESC"
)
NOISY_CONCURRENCY = 32
QUIET_CONCURRENCY = 4
FAIR_OFF = {"GRAPHGATE_TENANT_CONCURRENCY": "10000", "GRAPHGATE_SUBJECT_CONCURRENCY": "10000"}


@dataclass
class NoisyCounts:
    """What tenant A's calls got while B was measured."""

    served: int = 0
    busy: int = 0
    other_errors: int = 0
    first_other_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "served": self.served,
            "busy": self.busy,
            "other_errors": self.other_errors,
            "first_other_error": self.first_other_error,
        }


async def seed_noisy(db: Any, graph_name: str, persons: int = NOISY_PERSONS) -> None:
    """``persons`` Person nodes in batches (one huge UNWIND would take one long query)."""
    graph = db.select_graph(graph_name)
    batch = 50_000
    for start in range(1, persons + 1, batch):
        await graph.query(
            "UNWIND range($first, $last) AS i CREATE (:Person {pid: i, age: 20 + i % 50, "
            "city: 'c' + toString(i % 17)})",
            {"first": start, "last": min(persons, start + batch - 1)},
        )


@contextlib.asynccontextmanager
async def wire_clients(url: str, tokens: list[str]) -> AsyncIterator[list[WireClient]]:
    clients = [WireClient(url, token) for token in tokens]
    try:
        for client in clients:
            await client.connect()
        yield clients
    finally:
        for client in clients:
            await client.close()


def quiet_calls(clients: list[WireClient], seed: int) -> list[load.Call]:
    """B's point reads; each raises unless it succeeded with rows."""
    calls: list[load.Call] = []
    for index, client in enumerate(clients):
        rng = random.Random(seed * 1000 + index)

        def make(client: WireClient = client, rng: random.Random = rng) -> load.Call:
            async def call() -> None:
                query, params = load.query_args("point", rng)
                result = await client.call_tool("run_query", {"query": query, "params": params})
                if '"rows"' not in result["content"][0]["text"]:
                    raise load.CallFailed(json.dumps(result)[:300])

            return call

        calls.append(make())
    return calls


@contextlib.asynccontextmanager
async def noisy_load(clients: list[WireClient]) -> AsyncIterator[NoisyCounts]:
    """A's heavy reads, every worker calling back to back until the block ends."""
    counts = NoisyCounts()
    stop = asyncio.Event()

    async def worker(client: WireClient) -> None:
        while not stop.is_set():
            try:
                result = await client.request(
                    "tools/call",
                    {"name": "run_query", "arguments": {"query": HEAVY_QUERY}},
                    mcp_name="run_query",
                )
            except Exception as exc:
                counts.other_errors += 1
                counts.first_other_error = counts.first_other_error or str(exc)[:300]
                await asyncio.sleep(0.05)
                continue
            text = str((result.get("content") or [{}])[0].get("text", ""))
            if result.get("isError") is False:
                counts.served += 1
            elif text.startswith("busy:"):
                counts.busy += 1
            else:
                counts.other_errors += 1
                counts.first_other_error = counts.first_other_error or text[:300]

    tasks = [asyncio.create_task(worker(client)) for client in clients]
    try:
        yield counts
    finally:
        stop.set()
        _, pending = await asyncio.wait(tasks, timeout=60)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def heavy_alone_ms(client: WireClient, repeats: int = 5) -> float:
    """The median time of one heavy read with nothing else running."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await client.call_tool("run_query", {"query": HEAVY_QUERY})
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def verdict(alone: load.Result, beside: load.Result) -> dict[str, Any]:
    p50 = beside.p50_ms / alone.p50_ms if alone.p50_ms else None
    p99 = beside.p99_ms / alone.p99_ms if alone.p99_ms else None
    return {
        "p50_ratio": p50,
        "p99_ratio": p99,
        "quiet_errors": beside.errors,
        "pass": bool(p50 is not None and p99 is not None)
        and p50 <= 2
        and p99 <= 3
        and beside.errors == 0,
    }


def render(section: dict[str, Any]) -> str:
    """The Markdown table of the noisy-neighbour part."""
    lines = [
        f"Tenant A: `{HEAVY_QUERY}` over {section['persons']:,} nodes "
        f"({section['heavy_alone_ms']:.0f} ms alone), {section['noisy_concurrency']} "
        f"workers; tenant B: point read, {section['quiet_concurrency']} workers; "
        f"{section['phase_seconds']:g} s per phase.",
        "",
        "| fair share | B alone p50 / p99 ms | B beside A p50 / p99 ms | ratio p50 / p99 "
        "| B's failed calls | A served / busy / other errors | load average after | verdict |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for label, run in section["runs"].items():
        alone, beside, noisy, judged = run["alone"], run["beside"], run["noisy"], run["verdict"]
        lines.append(
            f"| {label} | {alone['p50_ms']:.1f} / {alone['p99_ms']:.1f} "
            f"| {beside['p50_ms']:.1f} / {beside['p99_ms']:.1f} "
            f"| {judged['p50_ratio']:.2f} / {judged['p99_ratio']:.2f} "
            f"| {beside['errors']} of {beside['calls'] + beside['errors']} "
            f"| {noisy['served']} / {noisy['busy']} / {noisy['other_errors']} "
            f"| {', '.join(str(v) for v in run.get('load_average', []))} "
            f"| {'PASS' if judged['pass'] else 'MISS'} |"
        )
    return "\n".join(lines)
