"""Issue 15's benchmark: routing cost with many tenants and backends, and a live reload.

    PYTHONPATH=src .venv/bin/python bench/catalog.py

1. Routing: `Router.resolve` (what every tool call does to find its tenant's
   database and backend) with 1 backend / 1 tenant, and with 3 backends /
   1,000 tenants. Issue 15: within 5 %.
2. Reload under load: 32 tasks resolve tenants of a 10,000-tenant catalog
   without pause while the settings file is rewritten (one tenant added, one
   moved) and reloaded through `CatalogReloader`, as the file watcher does.
   Issue 15: no failed call, p99 during the reload within 2x of before; the
   reload's own time is reported.

Routing needs no database: the backends are constructed, never opened.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from graphgate.auth.rights import Caller, Rights
from graphgate.catalog_watch import SettingsSource
from graphgate.config import load_settings
from graphgate.server import build_parts
from graphgate.tenancy import Router


def catalog_file(path: Path, tenants: int, backends: int, *, extra: str = "") -> None:
    lines = []
    for index in range(backends):
        lines += [f"[backends.b{index}]", f'url = "falkordb://127.0.0.1:{7000 + index}"', ""]
    lines.append("[tenants]")
    for index in range(tenants):
        lines.append(f't{index} = {{ backend = "b{index % backends}", database = "db{index}" }}')
    path.write_text("\n".join(lines) + "\n" + extra)


def router_for(path: Path) -> tuple[Router, Any]:
    settings = load_settings(path)
    parts = build_parts(settings, SettingsSource(path))
    router = Router(parts.catalog, parts.backends, parts.store, ttl=60)
    return router, parts


def caller_of(tenants: list[str]) -> Caller:
    return Caller(
        "bench", "bench", "bench", Rights(dict.fromkeys(tenants, "read"), False, tenants[0])
    )


async def resolve_cost(path: Path, tenants: list[str], rounds: int = 20_000) -> float:
    router, _parts = router_for(path)
    caller = caller_of(tenants)
    names = [tenants[i % len(tenants)] for i in range(rounds)]
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        for name in names:
            await router.resolve(caller, name, None)
        best = min(best, (time.perf_counter() - started) / rounds * 1e6)
    return best


async def reload_under_load(root: Path) -> dict[str, Any]:
    path = root / "big.toml"
    catalog_file(path, 10_000, 3)
    router, parts = router_for(path)
    assert parts.reloader is not None
    tenants = [f"t{i}" for i in range(10_000)]
    caller = caller_of([*tenants, "t_new"])
    latencies: list[tuple[float, float]] = []
    failures = 0
    stop = asyncio.Event()

    async def load(worker: int) -> None:
        nonlocal failures
        index = worker
        while not stop.is_set():
            started = time.perf_counter()
            try:
                await router.resolve(caller, tenants[index % 10_000], None)
            except Exception:
                failures += 1
            latencies.append((started, time.perf_counter() - started))
            index += 32
            await asyncio.sleep(0)

    workers = [asyncio.create_task(load(n)) for n in range(32)]
    await asyncio.sleep(1.0)
    catalog_file(path, 10_000, 3, extra='t_new = { backend = "b1", database = "new" }\n')
    text = path.read_text().replace('t5 = { backend = "b2"', 't5 = { backend = "b0"')
    path.write_text(text)
    began = time.perf_counter()
    ok = await parts.reloader.reload("bench")
    ended = time.perf_counter()
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*workers)
    assert ok
    moved = await router.resolve(caller, "t5", None)
    added = await router.resolve(caller, "t_new", None)
    before = sorted(d for s, d in latencies if s < began)
    during = sorted(d for s, d in latencies if began <= s <= ended)
    p99 = lambda values: values[int(len(values) * 0.99)] * 1e6 if values else 0.0  # noqa: E731
    return {
        "reload_ms": round((ended - began) * 1000, 1),
        "calls": len(latencies),
        "failed_calls": failures,
        "p99_before_us": round(p99(before), 1),
        "p99_during_us": round(p99(during), 1),
        "calls_during": len(during),
        "median_before_us": round(statistics.median(before) * 1e6, 1),
        "moved_to": moved.backend_name,
        "added_served": added.tenant == "t_new",
    }


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        one = root / "one.toml"
        many = root / "many.toml"
        catalog_file(one, 1, 1)
        catalog_file(many, 1000, 3)
        single = await resolve_cost(one, ["t0"])
        spread = await resolve_cost(many, [f"t{i}" for i in range(1000)])
        result: dict[str, Any] = {
            "resolve_1_backend_1_tenant_us": round(single, 3),
            "resolve_3_backends_1000_tenants_us": round(spread, 3),
            "overhead_pct": round((spread / single - 1) * 100, 1),
        }
        result["reload_10000_under_load"] = await reload_under_load(root)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    asyncio.run(main())
