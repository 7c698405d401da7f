"""The embedded FalkorDB process: lifecycle, persistence, exclusivity, no orphans.

The graphgate side runs in child Python processes here, so that the tests can
SIGTERM, SIGINT and SIGKILL "graphgate" and check by pid what is left.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from graphgate.backends.base import Backend, QueryLimits
from graphgate.backends.embedded import EmbeddedBackend, EmbeddedFalkorDB
from graphgate.errors import BackendUnavailable, ConfigError

pytestmark = pytest.mark.falkordb

LIMITS = QueryLimits(timeout=5.0)
ROOT = Path(__file__).resolve().parents[2]

# The "graphgate" process: starts the server, reports pids, then acts out `mode`.
CHILD = """
import asyncio, json, signal, sys, time
from pathlib import Path
from graphgate.backends import embedded
from graphgate.backends.base import QueryLimits

data_dir, mode = Path(sys.argv[1]), sys.argv[2]
# A shell without job control starts background jobs with SIGINT ignored; the
# real CLI gets Ctrl-C as KeyboardInterrupt, so restore that.
signal.signal(signal.SIGINT, signal.default_int_handler)
if mode == "hold-no-pdeathsig":
    embedded._die_with_parent = lambda parent: None  # leave only the watchdog

async def main():
    backend = embedded.EmbeddedBackend(embedded.EmbeddedFalkorDB(data_dir, query_timeout=5))
    await backend.start()
    server = backend.server
    limits = QueryLimits(timeout=5)
    if mode == "read":
        result = await backend.read("kept", "MATCH (k:Kept) RETURN k.v ORDER BY k.v", None, limits)
        print(json.dumps({"rows": result.rows}), flush=True)
        await backend.close()
        return
    await backend.write("kept", "CREATE (:Kept {v: $v})", {"v": mode}, limits)
    print(json.dumps({"pid": server.pid, "watchdog": server.watchdog_pid,
                      "port": server.port, "password": server.password}), flush=True)
    if mode == "write-stop":
        await backend.close()
        return
    while True:
        await asyncio.sleep(0.1)

asyncio.run(main())
"""


def gone(pid: int) -> bool:
    """Exited (a zombie left for a non-reaping init counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


class Child:
    def __init__(self, data_dir: Path, mode: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data_dir), mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def report(self, seconds: float = 20.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.process.kill()
            _, err = self.process.communicate()
            raise AssertionError(f"child reported nothing: {err.decode()[-2000:]}")
        report: dict[str, Any] = json.loads(line)
        return report

    def finish(self, seconds: float = 20.0) -> int:
        return self.process.wait(seconds)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait()


def kill_quietly(pid: int | None) -> None:
    if pid is not None and not gone(pid):
        os.kill(pid, signal.SIGKILL)


# -- lifecycle --------------------------------------------------------------------------------


async def test_clean_stop_then_restart_keeps_data(tmp_path: Path, children: list[Child]) -> None:
    data_dir = tmp_path / "data"
    writer = Child(data_dir, "write-stop")
    children.append(writer)
    info = writer.report()
    assert writer.finish() == 0
    assert gone(info["pid"]) and wait_gone(info["watchdog"])
    assert (data_dir / "dump.rdb").exists() or (data_dir / "appendonlydir").exists()

    reader = Child(data_dir, "read")
    children.append(reader)
    assert reader.report() == {"rows": [["write-stop"]]}
    assert reader.finish() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
async def test_no_orphan_when_graphgate_dies(
    tmp_path: Path, children: list[Child], sig: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    child = Child(data_dir, "hold")
    children.append(child)
    info = child.report()
    try:
        assert not gone(info["pid"])
        # While it runs, the data directory is taken.
        second = EmbeddedFalkorDB(data_dir)
        with pytest.raises(
            ConfigError, match=rf"in use by another graphgate \(pid {child.process.pid}\)"
        ):
            await second.start()
        assert second.pid is None

        child.process.send_signal(sig)
        child.finish()
        assert wait_gone(info["pid"]), f"redis-server {info['pid']} outlived graphgate ({sig!r})"
        assert wait_gone(info["watchdog"])
    finally:
        kill_quietly(info["pid"])
        kill_quietly(info["watchdog"])

    # The dying server saved (SIGTERM from the kernel or the watchdog): data survives.
    server = EmbeddedFalkorDB(data_dir, query_timeout=5)
    await server.start()
    backend = server.backend()
    try:
        await backend.start()
        result = await backend.read("kept", "MATCH (k:Kept) RETURN k.v", None, LIMITS)
        assert result.rows == [["hold"]]
    finally:
        await backend.close()
        await server.stop()


async def test_watchdog_alone_stops_the_server(tmp_path: Path, children: list[Child]) -> None:
    """The fallback for platforms without PR_SET_PDEATHSIG."""
    child = Child(tmp_path / "data", "hold-no-pdeathsig")
    children.append(child)
    info = child.report()
    try:
        child.process.kill()
        child.finish()
        assert wait_gone(info["pid"])
        assert wait_gone(info["watchdog"])
    finally:
        kill_quietly(info["pid"])
        kill_quietly(info["watchdog"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
async def test_pdeathsig_alone_stops_the_server(tmp_path: Path, children: list[Child]) -> None:
    child = Child(tmp_path / "data", "hold")
    children.append(child)
    info = child.report()
    try:
        os.kill(info["watchdog"], signal.SIGKILL)
        assert wait_gone(info["watchdog"])
        assert not gone(info["pid"])
        child.process.kill()
        child.finish()
        assert wait_gone(info["pid"])
    finally:
        kill_quietly(info["pid"])


# -- in process -------------------------------------------------------------------------------


async def test_server_is_private_bounded_and_persistent(tmp_path: Path) -> None:
    server = EmbeddedFalkorDB(tmp_path / "data", query_timeout=7.5)
    await server.start()
    try:
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
        config = tmp_path / "data" / "falkordb.conf"
        assert config.stat().st_mode & 0o777 == 0o600
        anonymous: Any = redis.Redis(
            host=server.host, port=server.port, retry=Retry(NoBackoff(), 0)
        )
        try:
            with pytest.raises(Exception, match=r"NOAUTH|Authentication required|authenticated"):
                await anonymous.ping()
        finally:
            await anonymous.aclose()
        client: Any = redis.Redis(
            host=server.host, port=server.port, password=server.password, decode_responses=True
        )
        try:
            assert await client.config_get("bind") == {"bind": "127.0.0.1"}
            assert await client.config_get("protected-mode") == {"protected-mode": "yes"}
            assert await client.config_get("appendonly") == {"appendonly": "yes"}
            assert (await client.config_get("save"))["save"] != ""
            for name in ("TIMEOUT_MAX", "TIMEOUT_DEFAULT"):
                assert await client.execute_command("GRAPH.CONFIG", "GET", name) == [name, 7500]
        finally:
            await client.aclose()
        # The password is not on the command line, which every local user can read.
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert server.password.encode() not in cmdline
    finally:
        await server.stop()
    assert server.pid is None


async def test_second_instance_in_the_same_process_is_refused(tmp_path: Path) -> None:
    first = EmbeddedFalkorDB(tmp_path / "data", query_timeout=5)
    await first.start()
    try:
        with pytest.raises(ConfigError, match="in use by another graphgate"):
            await EmbeddedFalkorDB(tmp_path / "data").start()
    finally:
        await first.stop()
    # Released on stop: the directory can be used again.
    again = EmbeddedFalkorDB(tmp_path / "data", query_timeout=5)
    await again.start()
    await again.stop()


async def test_start_failure_is_clear_and_releases_everything(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedFalkorDB(tmp_path / "data", port=port, startup_timeout=5)
        with pytest.raises(BackendUnavailable, match="log tail") as caught:
            await server.start()
    assert "Address already in use" in str(caught.value)
    assert server.pid is None and server.watchdog_pid is None
    # The lock was released with the failure.
    retry = EmbeddedFalkorDB(tmp_path / "data", query_timeout=5)
    await retry.start()
    await retry.stop()


async def test_embedded_backend_is_a_backend(tmp_path: Path) -> None:
    backend = EmbeddedBackend(EmbeddedFalkorDB(tmp_path / "data", query_timeout=5))
    assert isinstance(backend, Backend)
    with pytest.raises(BackendUnavailable):
        await backend.ping()
    await backend.start()
    await backend.start()
    pid = backend.server.pid
    assert pid is not None
    try:
        await backend.ping()
        await backend.write("g", "CREATE (:X {v: 1})", None, LIMITS)
        assert (await backend.read("g", "MATCH (x:X) RETURN x.v", None, LIMITS)).rows == [[1]]
        assert await backend.list_databases() == ["g"]
        assert [label.name for label in (await backend.schema("g", LIMITS)).node_labels] == ["X"]
    finally:
        await backend.close()
        await backend.close()
    assert wait_gone(pid)


@pytest.mark.parametrize(
    "kwargs", [{"query_timeout": 0}, {"startup_timeout": 0}, {"stop_timeout": -1}]
)
def test_constructor_validates(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        EmbeddedFalkorDB(tmp_path, **kwargs)


async def test_result_set_size_caps_what_the_server_sends(tmp_path: Path) -> None:
    server = EmbeddedFalkorDB(tmp_path / "data", query_timeout=5, result_set_size=5)
    await server.start()
    backend = server.backend()
    try:
        await backend.start()
        # Writes are not cut short by the cap, only their returned rows.
        written = await backend.write(
            "g", "UNWIND range(1, 20) AS x CREATE (n:N {x: x}) RETURN n.x", None, LIMITS
        )
        assert written.stats["nodes_created"] == 20 and written.truncated
        query = "UNWIND range(1, $n) AS x RETURN x"
        capped = await backend.read("g", query, {"n": 1000}, QueryLimits(row_limit=100))
        assert capped.rows == [[1], [2], [3], [4], [5]] and capped.truncated
        cut = await backend.read("g", query, {"n": 1000}, QueryLimits(row_limit=3))
        assert len(cut.rows) == 3 and cut.truncated
        exact = await backend.read("g", query, {"n": 4}, QueryLimits(row_limit=100))
        assert len(exact.rows) == 4 and not exact.truncated
    finally:
        await backend.close()
        await server.stop()
