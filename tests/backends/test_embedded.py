"""The embedded FalkorDB process: lifecycle, persistence, sharing, no orphans.

The graphgate side runs in child Python processes here, so that the tests can
SIGTERM, SIGINT and SIGKILL "graphgate" and check by pid what is left.
"""

from __future__ import annotations

import asyncio
import json
import logging
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

# The "graphgate" process: starts (or joins) the server, reports pids, then acts out `mode`.
CHILD = """
import asyncio, json, signal, sys, time
from pathlib import Path
from graphgate.backends import embedded
from graphgate.backends.base import QueryLimits

data_dir, mode = Path(sys.argv[1]), sys.argv[2]
# A shell without job control starts background jobs with SIGINT ignored; the
# real CLI gets Ctrl-C as KeyboardInterrupt, so restore that.
signal.signal(signal.SIGINT, signal.default_int_handler)

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
    print(json.dumps({"pid": server.pid, "keeper": server.keeper_pid,
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


def servers_in(data_dir: Path) -> list[int]:
    """Pids of live redis-server processes working in ``data_dir``.

    redis-server rewrites its command line, so the working directory tells.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = (entry / "exe").resolve().name
            cwd = (entry / "cwd").resolve()
        except OSError:
            continue
        if exe == "redis-server" and cwd == data_dir.resolve() and not gone(int(entry.name)):
            found.append(int(entry.name))
    return found


class Child:
    def __init__(self, data_dir: Path, mode: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data_dir), mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def report(self, seconds: float = 30.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.process.kill()
            _, err = self.process.communicate()
            raise AssertionError(f"child reported nothing: {err.decode()[-2000:]}")
        report: dict[str, Any] = json.loads(line)
        return report

    def finish(self, seconds: float = 30.0) -> int:
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


async def read_kept(data_dir: Path) -> list[list[Any]]:
    backend = EmbeddedBackend(EmbeddedFalkorDB(data_dir, query_timeout=5))
    await backend.start()
    try:
        return (
            await backend.read("kept", "MATCH (k:Kept) RETURN k.v ORDER BY k.v", None, LIMITS)
        ).rows
    finally:
        await backend.close()


# -- lifecycle --------------------------------------------------------------------------------


async def test_clean_stop_then_restart_keeps_data(tmp_path: Path, children: list[Child]) -> None:
    data_dir = tmp_path / "data"
    writer = Child(data_dir, "write-stop")
    children.append(writer)
    info = writer.report()
    assert writer.finish() == 0
    # The last one out stopped the server itself: gone when graphgate is, keeper too.
    assert gone(info["pid"]) and wait_gone(info["keeper"])
    assert (data_dir / "dump.rdb").exists() or (data_dir / "appendonlydir").exists()
    assert not (data_dir / "server.json").exists()

    reader = Child(data_dir, "read")
    children.append(reader)
    assert reader.report() == {"rows": [["write-stop"]]}
    assert reader.finish() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
async def test_no_orphan_when_the_only_graphgate_dies(
    tmp_path: Path, children: list[Child], sig: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    child = Child(data_dir, "hold")
    children.append(child)
    info = child.report()
    try:
        assert servers_in(data_dir) == [info["pid"]]
        child.process.send_signal(sig)
        child.finish()
        # SIGKILL leaves it to the keeper, which looks twice a second.
        assert wait_gone(info["pid"]), f"redis-server {info['pid']} outlived graphgate ({sig!r})"
        assert wait_gone(info["keeper"])
    finally:
        kill_quietly(info["pid"])
        kill_quietly(info["keeper"])
    # The server was stopped with SIGTERM and saved: the data survives.
    assert await read_kept(data_dir) == [["hold"]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
async def test_the_server_dies_with_its_keeper(tmp_path: Path, children: list[Child]) -> None:
    """Nothing outlives the keeper: killing it stops the server (graphgate restarts both)."""
    child = Child(tmp_path / "data", "hold")
    children.append(child)
    info = child.report()
    try:
        os.kill(info["keeper"], signal.SIGKILL)
        assert wait_gone(info["pid"])
    finally:
        kill_quietly(info["pid"])


# -- sharing ------------------------------------------------------------------------------------


async def test_a_second_graphgate_uses_the_first_ones_server(
    tmp_path: Path, children: list[Child]
) -> None:
    """Joins instead of starting another; keeps serving after the starter dies; the last
    one out stops it; the data is there for the next start."""
    data_dir = tmp_path / "data"
    first = Child(data_dir, "hold")
    children.append(first)
    info = first.report()
    second = EmbeddedBackend(EmbeddedFalkorDB(data_dir, query_timeout=5))
    try:
        await second.start()
        assert second.pid == info["pid"] and servers_in(data_dir) == [info["pid"]]
        assert (await second.read("kept", "MATCH (k:Kept) RETURN k.v", None, LIMITS)).rows == [
            ["hold"]
        ]
        # The starter is killed: the server is not its child and keeps serving.
        first.process.kill()
        first.finish()
        await asyncio.sleep(1.5)  # three of the keeper's looks
        await second.write("kept", "CREATE (:Kept {v: 'second'})", None, LIMITS)
        assert servers_in(data_dir) == [info["pid"]]
    finally:
        await second.close()
    assert gone(info["pid"]), "the last one out stops the server"
    assert wait_gone(info["keeper"])
    assert await read_kept(data_dir) == [["hold"], ["second"]]


async def test_three_graphgates_started_at_once_run_one_server(
    tmp_path: Path, children: list[Child]
) -> None:
    data_dir = tmp_path / "data"
    trio = [Child(data_dir, "hold") for _ in range(3)]
    children.extend(trio)
    reports = [child.report() for child in trio]
    pids = {report["pid"] for report in reports}
    try:
        assert len(pids) == 1 and servers_in(data_dir) == list(pids)
        for child in trio:
            child.process.kill()
            child.finish()
        assert wait_gone(reports[0]["pid"]) and wait_gone(reports[0]["keeper"])
    finally:
        kill_quietly(reports[0]["pid"])
    assert await read_kept(data_dir) == [["hold"]] * 3


async def test_a_start_right_after_kill_9_of_the_last_graphgate(
    tmp_path: Path, children: list[Child]
) -> None:
    """No stale lock refuses it, and there are never two servers: the new one either
    takes over the old server before the keeper stops it, or starts after."""
    data_dir = tmp_path / "data"
    for attempt in range(3):
        holder = Child(data_dir, "hold")
        children.append(holder)
        info = holder.report()
        holder.process.kill()
        holder.finish()
        await asyncio.sleep(0.25 * attempt)  # before, around and after the keeper's look
        backend = EmbeddedBackend(EmbeddedFalkorDB(data_dir, query_timeout=5))
        await backend.start()
        try:
            assert servers_in(data_dir) == [backend.pid]
            kept = await backend.read("kept", "MATCH (k:Kept) RETURN k.v", None, LIMITS)
            assert kept.rows == [["hold"]] * (attempt + 1)
        finally:
            await backend.close()
        assert servers_in(data_dir) == []
        kill_quietly(info["pid"])
    assert await read_kept(data_dir) == [["hold"]] * 3


async def test_the_first_graphgates_bounds_apply_and_a_second_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="graphgate.backends.embedded")
    first = EmbeddedFalkorDB(tmp_path / "data", query_timeout=5)
    second = EmbeddedFalkorDB(tmp_path / "data", query_timeout=9, queue=7)
    await first.start()
    try:
        await second.start()
        assert second.pid == first.pid
        client: Any = redis.Redis(
            host=second.host, port=second.port, password=second.password, decode_responses=True
        )
        try:
            timeout_max = await client.execute_command("GRAPH.CONFIG", "GET", "TIMEOUT_MAX")
        finally:
            await client.aclose()
        assert timeout_max == ["TIMEOUT_MAX", 5000]
        lines = [r.getMessage() for r in caplog.records if "keeps the bounds" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "query_timeout 5 (not 9)" in lines[0] and "queue unset (not 7)" in lines[0]
        assert second.password not in lines[0]
    finally:
        await second.stop()
        await first.stop()
    assert first.pid is None


# -- in process -------------------------------------------------------------------------------


async def test_server_is_private_bounded_and_persistent(tmp_path: Path) -> None:
    server = EmbeddedFalkorDB(tmp_path / "data", query_timeout=7.5)
    await server.start()
    try:
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
        for private in ("falkordb.conf", "server.json"):
            assert (tmp_path / "data" / private).stat().st_mode & 0o777 == 0o600
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


async def test_start_failure_is_clear_and_releases_everything(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedFalkorDB(tmp_path / "data", port=port, startup_timeout=5)
        with pytest.raises(BackendUnavailable, match="log tail") as caught:
            await server.start()
    assert "Address already in use" in str(caught.value)
    assert server.pid is None and server.keeper_pid is None
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


async def test_a_server_no_record_names_is_stopped_before_another_starts(tmp_path: Path) -> None:
    """Its starter was killed between starting it and recording it: the next start
    finds it through the server lock and stops it (letting it save) rather than run a
    second server on the directory."""
    data_dir = tmp_path / "data"
    lost = EmbeddedBackend(EmbeddedFalkorDB(data_dir, query_timeout=5))
    await lost.start()
    await lost.write("kept", "CREATE (:Kept {v: 'lost'})", None, LIMITS)
    lost_pid = lost.pid
    assert lost_pid is not None
    (data_dir / "server.json").unlink()  # what a start cut short leaves: no record
    fresh = EmbeddedBackend(EmbeddedFalkorDB(data_dir, query_timeout=5))
    try:
        await fresh.start()
        assert fresh.pid != lost_pid and gone(lost_pid)
        assert servers_in(data_dir) == [fresh.pid]
        kept = await fresh.read("kept", "MATCH (k:Kept) RETURN k.v", None, LIMITS)
        assert kept.rows == [["lost"]]
    finally:
        await fresh.close()
        await lost.close()
    assert servers_in(data_dir) == []


@pytest.mark.parametrize("record", ["", "{", '{"server": 1}', "\x00" * 64])
async def test_a_damaged_record_costs_a_restart_never_a_second_server(
    tmp_path: Path, record: str
) -> None:
    data_dir = tmp_path / "data"
    first = EmbeddedBackend(EmbeddedFalkorDB(data_dir, query_timeout=5))
    await first.start()
    await first.write("kept", "CREATE (:Kept {v: 'first'})", None, LIMITS)
    (data_dir / "server.json").write_text(record)
    second = EmbeddedBackend(EmbeddedFalkorDB(data_dir, query_timeout=5))
    try:
        await second.start()
        assert servers_in(data_dir) == [second.pid]
        # The first one finds the new server as a restart would.
        assert first.pid is None
        await first.restart()
        assert first.pid == second.pid
        kept = await first.read("kept", "MATCH (k:Kept) RETURN k.v", None, LIMITS)
        assert kept.rows == [["first"]]
    finally:
        await second.close()
        await first.close()
    assert servers_in(data_dir) == []
