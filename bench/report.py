"""Markdown for a results document: tables, ratios, targets with PASS/MISS, profiles."""

from __future__ import annotations

import math
import statistics
from typing import Any

import noisy
from load import Result

CPU_AUTO_MS = 1.2
CPU_LEGACY_MS = 1.8
AUTH_SHARE = 0.05
MEMGRAPH_FACTOR = 2.0
SCALE_TOLERANCE = 0.10
MEMORY_TOLERANCE = 0.10
CROSS_FACTOR = 2.0
CONVERT_FACTOR = 2.0
# The Neo4j comparison runs under two load generators; the target's verdict is the lean
# one's, where the servers rather than the client use up the two CPUs.
MEMGRAPH_GENERATORS = {
    "wire": "lean load generator bench/wire.py",
    "auto": "mcp SDK client, information",
}


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def result_line(result: Result) -> str:
    server = f" server {result.server_cpu_ms:.3f} ms/call" if result.server_cpu_ms else ""
    errors = f" ERRORS {result.errors}: {result.first_error}" if result.errors else ""
    return (
        f"{result.name:48s} {result.calls:7d} calls {result.throughput:9.1f}/s "
        f"p50 {result.p50_ms:7.2f} ms p99 {result.p99_ms:7.2f} ms{server}"
        f" client {result.client_cpu_ms:.3f} ms/call{errors}"
    )


def find(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    for result in data.get("results", []):
        if result["name"] == name:
            return dict(result)
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "not measured"
    return "**PASS**" if ok else "**MISS**"


def _within(ok: bool | None, miss: str = "over") -> str:
    """The verdict of a figure shown for information beside a target."""
    if ok is None:
        return "not measured"
    return "within" if ok else miss


LOAD_HEADER = (
    "| scenario | calls | errors | calls/s | p50 ms | p99 ms | server CPU ms/call "
    "| DB CPU ms/call | client CPU ms/call |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|"
)


def _load_row(result: dict[str, Any]) -> str:
    return (
        f"| {result['name']} | {result['calls']:,} | {result['errors']} "
        f"| {_num(result['throughput'], 1)} | {_num(result['p50_ms'])} | {_num(result['p99_ms'])} "
        f"| {_num(result['server_cpu_ms'], 3)} | {_num(result['db_cpu_ms'], 3)} "
        f"| {_num(result['client_cpu_ms'], 3)} |"
    )


def _table(results: list[dict[str, Any]]) -> str:
    return "\n".join([LOAD_HEADER, *(_load_row(r) for r in results)])


def point_cpu(data: dict[str, Any], mode: str) -> tuple[float | None, str]:
    """graphgate's server CPU per call, point read, c8, in ``mode``: the median window.

    One 8-second window varies by 10-15% from run to run on this machine, so
    every window of the same configuration in the run counts: the matrix's
    (graphgate/<mode>/point/c8) and the auth part's auth=dev rounds (the same
    settings, another instance). Returns the median and how it came about.
    """
    matrix = find(data, f"graphgate/{mode}/point/c8")
    windows = [matrix["server_cpu_ms"]] if matrix and matrix["server_cpu_ms"] else []
    rounds = list((data.get("auth_e2e") or {}).get(mode, {}).get("dev") or [])
    windows += rounds
    if not windows:
        return None, "–"
    median = statistics.median(windows)
    if len(windows) == 1:
        return median, f"{median:.3f} ms"
    parts = [f"{windows[0]:.3f} matrix"] if matrix else []
    parts += [f"{value:.3f}" for value in rounds]
    return median, f"{median:.3f} ms (median of {len(windows)} windows: {', '.join(parts)})"


def targets(data: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, limit, verdict) rows."""
    rows: list[tuple[str, str, str, str]] = []
    for mode, limit, label in (
        ("auto", CPU_AUTO_MS, 'default protocol 2026-07-28 (`mode="auto"`)'),
        ("legacy", CPU_LEGACY_MS, 'session protocol 2025-11-25 (`mode="legacy"`)'),
    ):
        for kind in ("point", "rows100"):
            what = "point read" if kind == "point" else "100-row read (information)"
            if kind == "point":
                cpu, shown = point_cpu(data, mode)
            else:
                result = find(data, f"graphgate/{mode}/{kind}/c8")
                cpu = result["server_cpu_ms"] if result else None
                shown = f"{_num(cpu, 3)} ms"
            ok = None if cpu is None else cpu <= limit
            rows.append(
                (
                    f"server CPU per call, {label}, {what}, c8",
                    shown,
                    f"≤ {limit} ms",
                    _verdict(ok) if kind == "point" else ("within" if ok else "over"),
                )
            )
    auth = data.get("auth_micro")
    per_call, _ = point_cpu(data, "auto")
    if auth and per_call:
        share = auth["per_call_us"] / 1000 / per_call
        rows.append(
            (
                "auth + routing share of a call's server CPU (microbenchmark: cached-token "
                "gate + caller rights + Router.resolve, over graphgate's auto point c8 "
                "server CPU per call above)",
                f"{share:.1%} ({auth['per_call_us']:.0f} µs of {per_call * 1000:.0f} µs)",
                f"≤ {AUTH_SHARE:.0%}",
                _verdict(share <= AUTH_SHARE),
            )
        )
    for mode, pair in (data.get("auth_e2e") or {}).items():
        if not pair.get("dev") or not pair.get("none"):
            continue
        with_auth, without = statistics.median(pair["dev"]), statistics.median(pair["none"])
        delta = 1 - without / with_auth
        rows.append(
            (
                f"auth share end to end, {mode} (1 − median CPU per call of auth=none ÷ "
                f"auth=dev over {len(pair['dev'])} alternating rounds, point, c8; information: "
                "the rounds' spread is of the same size)",
                f"{delta:.1%} ({without:.3f} vs {with_auth:.3f} ms; dev "
                f"{', '.join(f'{v:.2f}' for v in pair['dev'])}; none "
                f"{', '.join(f'{v:.2f}' for v in pair['none'])})",
                f"≤ {AUTH_SHARE:.0%}",
                "within" if delta <= AUTH_SHARE else "over",
            )
        )
    measured = [r["concurrency"] for r in data.get("results", []) if r["system"] == "mcp-memgraph"]
    top = 32 if not measured or 32 in measured else max(measured)
    for mode, how in MEMGRAPH_GENERATORS.items():
        for kind in ("point", "rows100"):
            gg = find(data, f"graphgate-neo4j/{mode}/{kind}/c{top}")
            up = find(data, f"mcp-memgraph/{mode}/{kind}/c{top}")
            ratio = _ratio(gg and gg["throughput"], up and up["throughput"])
            if gg and up and (up["errors"] or gg["errors"] or not up["calls"]):
                ratio = None
            passed = None if ratio is None else ratio >= MEMGRAPH_FACTOR
            rows.append(
                (
                    f"throughput vs mcp-memgraph 0.4.1 at c{top} ({kind}, both on Neo4j; {how})",
                    f"{_num(ratio)}x" if ratio is not None else _memgraph_reason(data),
                    f"≥ {MEMGRAPH_FACTOR:g}x",
                    _verdict(passed) if mode == "wire" else _within(passed, "below"),
                )
            )
    scale = data.get("scale")
    if scale:
        runs = scale["runs"]
        one, many = runs.get("1"), runs.get(str(scale["tenants"]))
        if one and many:
            tput = _ratio(many["throughput"], one["throughput"])
            cpu = _ratio(many["server_cpu_ms"], one["server_cpu_ms"])
            rows.append(
                (
                    f"{scale['tenants']:,} tenants vs 1: throughput",
                    f"{_num(tput, 3)}x",
                    f"≥ {1 - SCALE_TOLERANCE:.2f}x",
                    _verdict(tput is not None and tput >= 1 - SCALE_TOLERANCE),
                )
            )
            rows.append(
                (
                    f"{scale['tenants']:,} tenants vs 1: server CPU per call",
                    f"{_num(cpu, 3)}x",
                    f"≤ {1 + SCALE_TOLERANCE:.2f}x",
                    _verdict(cpu is not None and cpu <= 1 + SCALE_TOLERANCE),
                )
            )
    sessions = data.get("sessions")
    if sessions:
        rows.append(
            (
                f"RSS after {sessions['completed']:,} sessions vs before",
                f"{sessions['ratio']:.3f}x ({sessions['rss_before_kib'] / 1024:.1f} → "
                f"{sessions['rss_after_kib'] / 1024:.1f} MiB)",
                f"≤ {1 + MEMORY_TOLERANCE:.2f}x",
                _verdict(sessions["ratio"] <= 1 + MEMORY_TOLERANCE and not sessions["failures"]),
            )
        )
    cross = data.get("cross")
    if cross and cross.get("rounds"):
        single = statistics.median(r["single"]["p50_ms"] for r in cross["rounds"])
        many = statistics.median(r["cross"]["p50_ms"] for r in cross["rounds"])
        ratio = _ratio(many, single)
        cpu = _ratio(
            statistics.median(r["cross"]["server_cpu_ms"] or 0 for r in cross["rounds"]),
            statistics.median(r["single"]["server_cpu_ms"] or 0 for r in cross["rounds"]),
        )
        rows.append(
            (
                f"query_databases over {cross['databases']} databases vs one run_query "
                f"(median p50 of {len(cross['rounds'])} alternating rounds, c1)",
                f"{_num(ratio)}x ({many:.2f} vs {single:.2f} ms; server CPU per call {_num(cpu)}x)",
                f"≤ {CROSS_FACTOR:g}x",
                _verdict(ratio is not None and ratio <= CROSS_FACTOR),
            )
        )
    convert = data.get("convert")
    if convert:
        rows.append(
            (
                "1,000 nodes: graphgate convert + serialise vs the falkordb client's parse",
                f"{convert['ratio']:.2f}x ({convert['convert_ms'] + convert['serialise_ms']:.2f}"
                f" ms vs {convert['client_parse_ms']:.2f} ms)",
                f"≤ {CONVERT_FACTOR:g}x",
                _verdict(convert["ratio"] <= CONVERT_FACTOR),
            )
        )
    return rows


def _memgraph_reason(data: dict[str, Any]) -> str:
    section = data.get("memgraph") or {}
    if "not_run" in section:
        return "not run: " + section["not_run"]
    failed = (data.get("failed_parts") or {}).get("memgraph")
    if failed:
        return "failed: " + failed
    return "not measured"


def _issue2(data: dict[str, Any]) -> str:
    lines = [
        "| protocol | query | concurrency | graphgate calls/s | raw client calls/s "
        "| throughput ratio | graphgate p50 / p99 ms | raw p50 / p99 ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    any_row = False
    for mode in ("auto", "legacy"):
        for kind in ("point", "rows100"):
            for conc in (1, 8, 32):
                gg = find(data, f"graphgate/{mode}/{kind}/c{conc}")
                raw = find(data, f"falkordb-client/{kind}/c{conc}")
                if not gg or not raw:
                    continue
                any_row = True
                ratio = _ratio(gg["throughput"], raw["throughput"])
                lines.append(
                    f"| {mode} | {kind} | {conc} | {_num(gg['throughput'], 1)} "
                    f"| {_num(raw['throughput'], 1)} | {_num(ratio, 3)} "
                    f"| {_num(gg['p50_ms'])} / {_num(gg['p99_ms'])} "
                    f"| {_num(raw['p50_ms'])} / {_num(raw['p99_ms'])} |"
                )
    return "\n".join(lines) if any_row else ""


def _floor(data: dict[str, Any]) -> str:
    lines = [
        "| protocol | query | concurrency | graphgate calls/s | bare FastMCP calls/s "
        "| graphgate server CPU ms/call | bare server CPU ms/call |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    any_row = False
    for mode in ("auto", "legacy"):
        for kind in ("point", "rows100"):
            for conc in (1, 8, 32):
                gg = find(data, f"graphgate/{mode}/{kind}/c{conc}")
                bare = find(data, f"bare-fastmcp/{mode}/{kind}/c{conc}")
                if not gg or not bare:
                    continue
                any_row = True
                lines.append(
                    f"| {mode} | {kind} | {conc} | {_num(gg['throughput'], 1)} "
                    f"| {_num(bare['throughput'], 1)} | {_num(gg['server_cpu_ms'], 3)} "
                    f"| {_num(bare['server_cpu_ms'], 3)} |"
                )
    return "\n".join(lines) if any_row else ""


def _neo4j(data: dict[str, Any]) -> str:
    lines = [
        "| load generator | query | concurrency | graphgate calls/s | mcp-memgraph calls/s "
        "| ratio | neo4j driver calls/s | graphgate / mcp-memgraph server CPU ms/call "
        "| Neo4j CPU ms/call (graphgate / mcp-memgraph) "
        "| load generator CPU ms/call (graphgate / mcp-memgraph) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    any_row = False
    for mode, how in MEMGRAPH_GENERATORS.items():
        for kind in ("point", "rows100"):
            for conc in (1, 8, 32):
                gg = find(data, f"graphgate-neo4j/{mode}/{kind}/c{conc}")
                up = find(data, f"mcp-memgraph/{mode}/{kind}/c{conc}")
                raw = find(data, f"neo4j-driver/{kind}/c{conc}")
                if not gg or not up:
                    continue
                any_row = True
                lines.append(
                    f"| {how.split(',')[0]} | {kind} | {conc} | {_num(gg['throughput'], 1)} "
                    f"| {_num(up['throughput'], 1)} "
                    f"| {_num(_ratio(gg['throughput'], up['throughput']))} "
                    f"| {_num(raw['throughput'], 1) if raw else '–'} "
                    f"| {_num(gg['server_cpu_ms'], 3)} / {_num(up['server_cpu_ms'], 3)} "
                    f"| {_num(gg['db_cpu_ms'], 3)} / {_num(up['db_cpu_ms'], 3)} "
                    f"| {_num(gg['client_cpu_ms'], 3)} / {_num(up['client_cpu_ms'], 3)} |"
                )
    return "\n".join(lines) if any_row else ""


def _whatif(data: dict[str, Any]) -> str:
    return _variants(data.get("whatif") or {}, "as-is")


def _revision(data: dict[str, Any]) -> str:
    section = data.get("revision") or {}
    return _variants(section.get("runs") or {}, section.get("against", ""))


def _variants(runs_by_key: dict[str, Any], base_variant: str) -> str:
    """Variants measured in alternating rounds: each round's server CPU, the median, the change."""
    if not runs_by_key:
        return ""
    lines = [
        "| variant | query | server CPU ms/call (each round) | median | vs "
        f"{base_variant} | DB CPU ms/call | calls/s (each round) |",
        "|---|---|---|--:|--:|--:|---|",
    ]
    cpus = {
        key: [r["server_cpu_ms"] for r in runs if r["server_cpu_ms"]]
        for key, runs in runs_by_key.items()
    }
    middles = {key: statistics.median(c) if c else float("nan") for key, c in cpus.items()}
    for key, runs in runs_by_key.items():
        variant, kind = key.rsplit("/", 1)
        change = _ratio(middles[key], middles.get(f"{base_variant}/{kind}"))
        db = [r["db_cpu_ms"] for r in runs if r["db_cpu_ms"]]
        lines.append(
            f"| {variant} | {kind} | {' / '.join(_num(c, 3) for c in cpus[key])} "
            f"| {_num(middles[key], 3)} "
            f"| {(f'{change - 1:+.0%}' if change is not None else '–')} "
            f"| {_num(statistics.median(db) if db else None, 3)} "
            f"| {' / '.join(_num(r['throughput'], 1) for r in runs)} |"
        )
    return "\n".join(lines)


def _profile(data: dict[str, Any]) -> str:
    profile = dict(data.get("profile") or {})
    for kind, entries in ((data.get("memgraph") or {}).get("profiles") or {}).items():
        profile[f"graphgate on Neo4j, auto, {kind}"] = entries
    bare = data.get("bare_profile")
    if bare:
        profile["bare FastMCP server (the floor), auto"] = bare
    if not profile:
        return ""
    out = []
    for mode, entries in profile.items():
        if "error" in entries:
            out.append(f"**{mode}**: not recorded: {entries['error']}\n")
            continue
        query = "100-row read" if entries.get("query") == "rows100" else "point read"
        out.append(
            f"**{mode}** ({query}, c8; {entries['samples']:,} samples, "
            f"{entries.get('idle', 0):,} idle ones dropped, "
            f"{entries.get('calls', 0):,} calls, {_num(entries.get('throughput'), 1)} calls/s, "
            f"{_num(entries.get('server_cpu_ms'), 3)} ms server CPU per call under the "
            "profiler)\n"
        )
        if entries.get("packages"):
            out.append(
                "By package (each sample charged to its innermost non-stdlib frame): "
                + ", ".join(f"{p['function']} {p['pct']}%" for p in entries["packages"][:12])
                + "\n"
            )
        out.append(
            "| self % | function | | inclusive % (below the event loop) | function "
            "| | graphgate's own, inclusive % | function |\n|--:|---|---|--:|---|---|--:|---|"
        )
        columns = [
            entries["self"][:20],
            entries["inclusive"][:20],
            entries.get("graphgate_inclusive", [])[:20],
        ]
        for index in range(max(len(column) for column in columns)):
            cells = []
            for column in columns:
                if index < len(column):
                    cells.append(f"{column[index]['pct']} | `{column[index]['function']}`")
                else:
                    cells.append(" | ")
            out.append("| " + " | | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    m = meta["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in m["packages"].items())
    out = [
        f"### Run of {meta['started']} ({'quick' if meta['quick'] else 'full'}, "
        f"{meta['seconds']:.0f} s)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Linux "
        f"{m['kernel']}, Python {m['python']}; load average at start "
        f"{', '.join(str(v) for v in m['load_average_at_start'])}  ",
        f"Packages: {packages}  ",
        f"Sizes: {meta['sizes']}",
        "",
    ]
    failed = data.get("failed_parts")
    if failed:
        out += ["**Failed parts:** " + "; ".join(f"{k}: {v}" for k, v in failed.items()), ""]
    out += ["#### Targets", "", "| target | measured | limit | verdict |", "|---|---|---|---|"]
    for target, measured, limit, verdict in targets(data):
        out.append(f"| {target} | {measured} | {limit} | {verdict} |")
    out.append("")
    issue2 = _issue2(data)
    if issue2:
        out += ["#### graphgate beside the raw falkordb client (issue 2)", "", issue2, ""]
    floor = _floor(data)
    if floor:
        out += ["#### graphgate beside the bare FastMCP server (the framework's floor)", ""]
        out += [floor, ""]
    results = data.get("results", [])
    if results:
        out += ["#### Every measured scenario", "", _table(results), ""]
    auth = data.get("auth_micro")
    if auth:
        out += [
            "#### Auth and routing microbenchmark (µs per call, median)",
            "",
            "| bearer gate, cached token | bearer gate, uncached (signature) | verify, cached "
            "| caller_from_token | Router.resolve | per call (gate cached + caller + resolve) |",
            "|--:|--:|--:|--:|--:|--:|",
            f"| {auth['gate_cached_us']:.1f} | {auth['gate_uncached_us']:.1f} "
            f"| {auth['verify_cached_us']:.1f} | {auth['caller_us']:.1f} "
            f"| {auth['resolve_us']:.1f} | {auth['per_call_us']:.1f} |",
            "",
        ]
    convert = data.get("convert")
    if convert:
        out += [
            "#### 1,000-node result: conversion and serialisation (ms, median)",
            "",
            "| rows | JSON bytes | falkordb client parse | graphgate convert | serialise "
            "| graphgate `_parse` (client parse + convert) |",
            "|--:|--:|--:|--:|--:|--:|",
            f"| {convert['rows']:,} | {convert['json_bytes']:,} | "
            f"{convert['client_parse_ms']:.2f} | {convert['convert_ms']:.2f} | "
            f"{convert['serialise_ms']:.2f} | {convert['graphgate_parse_ms']:.2f} |",
            "",
        ]
    sessions = data.get("sessions")
    if sessions:
        out += [
            "#### Sessions",
            "",
            f"{sessions['completed']:,} of {sessions['sessions']:,} sessions (session protocol "
            "2025-11-25 over plain HTTP: initialize, notifications/initialized, "
            "tools/call use_database, DELETE; 8 at a time) in "
            f"{sessions['seconds']} s ({_num(sessions['sessions_per_s'], 1)}/s), "
            f"{_num(sessions['server_cpu_ms_per_session'], 2)} ms server CPU each, "
            f"{sessions['failures']} failures"
            + (f" (first: {sessions['first_error']})" if sessions["first_error"] else "")
            + f". RSS {sessions['rss_before_kib']:,} KiB before (after "
            f"{sessions['warmup_sessions']} warm-up sessions), {sessions['rss_after_kib']:,} KiB "
            f"after ({data['meta']['sizes'].get('settle', 5):g} s later)"
            + (
                f"; open sessions {sessions['open_sessions_before']} → "
                f"{sessions['open_sessions_after']}."
                if sessions.get("open_sessions_before") is not None
                else "."
            ),
            "",
        ]
    memgraph = data.get("memgraph")
    if memgraph:
        out += ["#### mcp-memgraph " + memgraph.get("version", ""), ""]
        if "not_run" in memgraph:
            out += [f"Not run: {memgraph['not_run']}", ""]
        if "neo4j" in memgraph:
            out += [f"Neo4j: {memgraph['neo4j']['url']} (from {memgraph['neo4j']['source']})", ""]
        neo4j = _neo4j(data)
        if neo4j:
            out += [
                "Both servers on the same Neo4j, the same token, the default protocol "
                "(2026-07-28, which both speak), the same query texts (the point read's value "
                "written into the text, since `run_cypher_query` takes no parameters); each "
                "scenario with the lean load generator and with the mcp SDK client:",
                "",
                neo4j,
                "",
            ]
        if memgraph.get("drivers"):
            out += [
                "The neo4j package's two drivers in one process on that Neo4j (bench/drivers.py; "
                "CPU of the process per read, 8 concurrent readers): the floor under any "
                "Python server on Bolt. graphgate uses the asyncio one as shipped, with the "
                "timer of the server's receive-timeout hint (no public way to leave it out):",
                "",
                "| query | driver | reads | CPU ms per read | wall ms per read |",
                "|---|---|--:|--:|--:|",
            ]
            for row in memgraph["drivers"]:
                out.append(
                    f"| {row['query']} | {row['driver']} | {row['reads']:,} "
                    f"| {_num(row['cpu_ms'], 3)} | {_num(row['wall_ms'], 3)} |"
                )
            out.append("")
        if memgraph.get("tools"):
            out += [
                "Each tool of mcp-memgraph, called once against that Neo4j:",
                "",
                "| tool | ran on Neo4j | answer (start) |",
                "|---|---|---|",
            ]
            for tool in memgraph["tools"]:
                answer = tool["answer"].replace("|", "\\|").replace("\n", " ")
                out.append(f"| {tool['tool']} | {'yes' if tool['ok'] else 'no'} | {answer} |")
            out.append("")
    whatif = _whatif(data)
    if whatif:
        out += [
            "#### What-if: graphgate with experimental patches (bench/whatif_serve.py)",
            "",
            "auto, c8; each variant restarted per round, rounds alternate variants.",
            "",
            whatif,
            "",
        ]
    revision = _revision(data)
    if revision:
        section = data["revision"]
        out += [
            f"#### graphgate as it is beside revision {section['against']} "
            f"({section['commit'][:12]})",
            "",
            "All running at once (the bare FastMCP server beside them), point read, c8, both "
            "protocols; the rounds alternate which goes first.",
            "",
            revision,
            "",
        ]
    if data.get("noisy"):
        out += ["#### Noisy neighbour (issue 12)", "", noisy.render(data["noisy"]), ""]
    profile = _profile(data)
    if profile:
        out += ["#### Profile of the graphgate server (py-spy, top entries)", "", profile]
    return "\n".join(out).rstrip() + "\n"
