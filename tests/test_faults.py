"""Faults under load, bounded in time, loopback only.

- An external database is killed and restarted: calls fail with clear tool
  errors while it is down and succeed again within 5 seconds of its return,
  with no restart of graphgate (the embedded one, restarted by graphgate
  itself, is in test_supervision.py).
- SIGTERM during load: in-flight calls finish, the embedded database stops
  cleanly, and every write acknowledged before the signal is there after restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import httpx2
from fastmcp import Client as FastMCPClient
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from graphgate.backends.embedded import EmbeddedFalkorDB
from graphgate.server import build_server
from tests.services._common import free_port
from tests.services.graphgate import make_parts

GRAPHGATE = str(Path(sys.executable).with_name("graphgate"))


async def test_database_killed_and_restarted_under_load(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedFalkorDB(tmp_path / "db", port=port, password="pw")
    await server.start()
    parts = make_parts(
        server.backend(),
        tenants="acme",
        data_dir=tmp_path / "gg",
        allow_writes=True,
        query_timeout=2,
    )
    outcomes: list[tuple[float, bool, str]] = []
    stop = asyncio.Event()
    try:
        async with FastMCPClient(build_server(parts)) as client:
            await client.call_tool("run_write_query", {"query": "CREATE (:Alive)"})

            async def load() -> None:
                while not stop.is_set():
                    result = await client.call_tool(
                        "run_query",
                        {"query": "MATCH (n:Alive) RETURN count(n)"},
                        raise_on_error=False,
                    )
                    text = result.content[0].text  # type: ignore[union-attr]
                    outcomes.append((time.monotonic(), not result.is_error, text))
                    await asyncio.sleep(0.02)

            workers = [asyncio.create_task(load()) for _ in range(4)]
            await asyncio.sleep(0.5)
            assert server.pid is not None
            os.kill(server.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            await asyncio.sleep(1.5)
            await server.start()  # reaps the dead server, starts one on the same dir and port
            back_at = time.monotonic()
            deadline = back_at + 5
            while time.monotonic() < deadline:
                if any(ok and at > back_at for at, ok, _ in outcomes):
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        await server.stop()
    down = [text for at, ok, text in outcomes if not ok and killed_at < at < back_at]
    assert down, "calls while the database was down should have failed"
    assert all(text.startswith(("backend_unavailable", "timeout")) for text in down), down[:3]
    assert all("Traceback" not in text for text in down)
    recovered = [at for at, ok, _ in outcomes if ok and at > back_at]
    assert recovered and recovered[0] - back_at < 5.0


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GRAPHGATE_")}


def wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("graphgate did not become ready")


async def test_sigterm_during_load_keeps_acknowledged_writes(tmp_path: Path) -> None:
    port = str(free_port())
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    command = [
        GRAPHGATE,
        "serve",
        "--port",
        port,
        "--data-dir",
        str(data_dir),
        "--tenants",
        "acme",
        "--allow-writes",
        "--auth",
        "none",
    ]
    process = subprocess.Popen(
        command, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    acknowledged: list[int] = []
    failed_after_signal = 0
    try:
        wait_ready(url, process)

        async def writer(worker: int) -> None:
            nonlocal failed_after_signal
            http = httpx2.AsyncClient(timeout=30)
            try:
                async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as c:
                    for step in range(10_000):
                        key = worker * 100_000 + step
                        result = await c.call_tool(
                            "run_write_query",
                            {"query": "CREATE (:Ack {key: $k})", "params": {"k": key}},
                        )
                        if result.is_error:
                            failed_after_signal += 1
                            return
                        acknowledged.append(key)
            except Exception:
                return

        tasks = [asyncio.create_task(writer(worker)) for worker in range(4)]
        await asyncio.sleep(2.0)
        assert acknowledged, "writes should be flowing before the signal"
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert process.wait(60) in (0, 130, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    again = subprocess.Popen(
        command, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_ready(url, again)
        http = httpx2.AsyncClient(timeout=30)
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as c:
            result = await c.call_tool(
                "run_query", {"query": "MATCH (a:Ack) RETURN a.key AS k ORDER BY k", "params": {}}
            )
            answer: dict[str, Any] = json.loads(result.content[0].text)  # type: ignore[union-attr]
        # row_limit would cut at 1000: count instead when there are more.
        async with Client(
            streamable_http_client(f"{url}/mcp", http_client=httpx2.AsyncClient(timeout=30))
        ) as c:
            counted = json.loads(
                (
                    await c.call_tool(
                        "run_query",
                        {
                            "query": "MATCH (a:Ack) WHERE a.key IN $keys RETURN count(a)",
                            "params": {"keys": acknowledged},
                        },
                    )
                )
                .content[0]
                .text
            )  # type: ignore[union-attr]
        assert counted["rows"] == [[len(acknowledged)]], (len(acknowledged), answer["row_count"])
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(60)
