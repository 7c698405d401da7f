"""Soak: 64 sessions over 8 tenants for several minutes against one graphgate.

Each tenant's data is tagged with its name; every answer is checked for rows of
another tenant. The server's resident memory is sampled every 10 seconds.
Pass: zero errors, zero foreign rows, memory at the end within 10% of minute one.

    .venv/bin/python bench/soak.py --minutes 5        # the recorded run
    .venv/bin/python bench/soak.py --minutes 0.5      # a quick check

Loopback only; every loop is bounded by the deadline; the server is stopped at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
GRAPHGATE = str(Path(sys.executable).with_name("graphgate"))
TENANTS = [f"t{index}" for index in range(8)]
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def mint(data_dir: Path, port: int, sub: str, tenants: str) -> str:
    result = subprocess.run(
        [
            GRAPHGATE,
            "token",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--sub",
            sub,
            "--tenants",
            tenants,
            "--ttl",
            "7200",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("GRAPHGATE_")},
    )
    return result.stdout.strip().splitlines()[-1]


class Tally:
    def __init__(self) -> None:
        self.calls = 0
        self.errors: list[str] = []
        self.foreign_rows = 0


async def session(
    url: str, bearer: str, tenant: str, deadline: float, tally: Tally, legacy: bool
) -> None:
    """One user's session: reads of their tenant, a few writes, a use_database."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=60)
    mode = "legacy" if legacy else "auto"
    rng = random.Random(f"{tenant}{bearer[-8:]}")
    async with Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as c:  # type: ignore[arg-type]
        await c.call_tool("use_database", {"name": tenant})
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.8:
                name, args = "run_query", {"query": "MATCH (n:Item) RETURN n.tenant LIMIT 20"}
            elif roll < 0.9:
                name, args = (
                    "run_write_query",
                    {
                        "query": "CREATE (:Item {tenant: $t, at: timestamp()})",
                        "params": {"t": tenant},
                    },
                )
            else:
                name, args = "get_schema", {}
            result = await c.call_tool(name, args)
            tally.calls += 1
            text = result.content[0].text  # type: ignore[union-attr]
            if result.is_error:
                tally.errors.append(f"{name}: {text[:200]}")
                continue
            if name == "run_query":
                rows = json.loads(text)["rows"]
                tally.foreign_rows += sum(1 for row in rows if row[0] != tenant)


async def main(minutes: float, sessions: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="graphgate-soak-") as tmp:
        data_dir = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHGATE_")}
        env.update(GRAPHGATE_LOG_LEVEL="warning", GRAPHGATE_AUTH="dev")
        server = subprocess.Popen(
            [
                GRAPHGATE,
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--tenants",
                ",".join(TENANTS),
                "--allow-writes",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise SystemExit(f"graphgate exited: {server.stderr.read()}")  # type: ignore[union-attr]
                time.sleep(0.2)
            writers = [mint(data_dir, port, f"seed-{t}", f"{t}:write") for t in TENANTS]
            for tenant, bearer in zip(TENANTS, writers, strict=True):
                http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"})
                async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as c:
                    await c.call_tool(
                        "run_write_query",
                        {
                            "query": "UNWIND range(1, 50) AS i CREATE (:Item {tenant: $t, i: i})",
                            "params": {"t": tenant},
                        },
                    )
            users = [
                (
                    mint(data_dir, port, f"user{index}", f"{TENANTS[index % 8]}:write"),
                    TENANTS[index % 8],
                )
                for index in range(sessions)
            ]
            tally = Tally()
            started = time.monotonic()
            deadline = started + minutes * 60
            samples: list[tuple[float, float]] = [(0.0, rss_mb(server.pid))]

            async def sample() -> None:
                while time.monotonic() < deadline:
                    await asyncio.sleep(min(10.0, max(0.1, deadline - time.monotonic())))
                    samples.append((time.monotonic() - started, rss_mb(server.pid)))

            await asyncio.gather(
                sample(),
                *(
                    session(url, bearer, tenant, deadline, tally, legacy=index % 2 == 0)
                    for index, (bearer, tenant) in enumerate(users)
                ),
            )
            elapsed = time.monotonic() - started
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
    minute_one = next((mb for at, mb in samples if at >= 60), samples[-1][1])
    end = samples[-1][1]
    report = {
        "sessions": sessions,
        "tenants": len(TENANTS),
        "seconds": round(elapsed, 1),
        "calls": tally.calls,
        "calls_per_second": round(tally.calls / elapsed, 1),
        "errors": len(tally.errors),
        "first_errors": tally.errors[:5],
        "foreign_rows": tally.foreign_rows,
        "rss_mb_samples": [(round(at), round(mb, 1)) for at, mb in samples],
        "rss_mb_minute_one": round(minute_one, 1),
        "rss_mb_end": round(end, 1),
        "memory_growth_pct": round((end - minute_one) / minute_one * 100, 1),
    }
    report["pass"] = (
        report["errors"] == 0
        and report["foreign_rows"] == 0
        and abs(report["memory_growth_pct"]) <= 10
    )
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=64)
    options = parser.parse_args()
    result = asyncio.run(main(options.minutes, options.sessions))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["pass"] else 1)
