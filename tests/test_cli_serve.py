"""`graphgate serve` as a user runs it: a real process, the embedded FalkorDB, real clients."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.services._common import free_port

GRAPHGATE = str(Path(sys.executable).with_name("graphgate"))


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GRAPHGATE_")}


def processes_using(path: Path) -> list[int]:
    """Pids of redis-server processes working in ``path`` (the embedded data dir).

    redis-server rewrites its command line, so the working directory tells; the
    executable tells it from its keeper, which works there too.
    """
    found = []
    target = (path / "falkordb").resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            executable = (entry / "exe").resolve().name
            status = (entry / "status").read_text()
            cwd = (entry / "cwd").resolve()
        except OSError:
            continue
        if "State:\tZ" in status:
            continue
        if cwd == target and executable == "redis-server":
            found.append(int(entry.name))
    return found


def wait_ready(url: str, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"graphgate exited early: {process.stderr.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("graphgate did not become ready")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[str, Path, list[subprocess.Popen[str]]]]:
    started: list[subprocess.Popen[str]] = []
    yield str(free_port()), tmp_path / "data", started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def start(port: str, data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            GRAPHGATE,
            "serve",
            "--demo",
            "--port",
            port,
            "--data-dir",
            str(data_dir),
            "--allow-writes",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )


def mint(data_dir: Path, port: str, *args: str) -> str:
    result = subprocess.run(
        [GRAPHGATE, "token", "--data-dir", str(data_dir), "--port", port, *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


async def call(url: str, bearer: str, tool: str, **arguments: object) -> dict:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
    async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


async def test_demo_serve_restart_and_clean_stop(serve) -> None:
    port, data_dir, started = serve
    url = f"http://127.0.0.1:{port}"
    process = start(port, data_dir)
    started.append(process)
    wait_ready(url, process)
    assert processes_using(data_dir), "the embedded FalkorDB should be running"
    admin = mint(data_dir, port, "--sub", "root", "--admin")
    counts = await call(url, admin, "query_databases", query="MATCH (n) RETURN count(n)")
    first = {db: r["rows"][0][0] for db, r in counts["results"].items()}
    assert set(first) == {"acme", "globex"} and all(n > 0 for n in first.values())
    await call(
        url,
        admin,
        "run_write_query",
        database="acme",
        query="CREATE (:Marker {at: 'before-restart'})",
    )

    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0 or process.returncode in (0, -signal.SIGTERM, 130)
    _, stderr = process.communicate()
    # stderr is a pipe here, the log stream a supervisor keeps: no token in it;
    # the client commands are in a private file of the data dir instead.
    assert "Bearer ey" not in stderr and "eyJ" not in stderr
    tokens_file = data_dir / "demo-tokens.txt"
    assert str(tokens_file) in stderr
    assert tokens_file.stat().st_mode & 0o777 == 0o600
    assert "Bearer ey" in tokens_file.read_text()
    time.sleep(0.5)
    assert processes_using(data_dir) == [], "no orphan FalkorDB after SIGTERM"

    again = start(port, data_dir)
    started.append(again)
    wait_ready(url, again)
    counts = await call(url, admin, "query_databases", query="MATCH (n) RETURN count(n)")
    second = {db: r["rows"][0][0] for db, r in counts["results"].items()}
    assert second == {"acme": first["acme"] + 1, "globex": first["globex"]}, (
        "data kept across restart, demo seeding idempotent"
    )
    user = mint(data_dir, port, "--sub", "alice", "--tenants", "globex")
    mine = await call(url, user, "list_databases")
    assert [d["name"] for d in mine] == ["globex"]

    again.send_signal(signal.SIGINT)
    again.wait(30)
    time.sleep(0.5)
    assert processes_using(data_dir) == []


async def test_token_finds_the_running_servers_issuer(serve) -> None:
    """`graphgate token` needs only the data dir; a token of another issuer is told which."""
    port, data_dir, started = serve
    url = f"http://127.0.0.1:{port}"
    process = start(port, data_dir)
    started.append(process)
    wait_ready(url, process)
    minted = subprocess.run(
        [GRAPHGATE, "token", "--sub", "alice", "--tenants", "acme", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=True,
    ).stdout.strip()
    assert [d["name"] for d in await call(url, minted, "list_databases")] == ["acme"]

    elsewhere = mint(data_dir, str(free_port()), "--sub", "alice", "--tenants", "acme")
    async with httpx.AsyncClient(base_url=url) as http:
        refused = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"authorization": f"Bearer {elsewhere}"},
        )
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert "another issuer" in challenge and f"tokens of {url}" in challenge


def test_demo_prints_its_tokens_on_a_terminal(serve) -> None:
    """On a TTY the banner with ready-to-paste commands is shown, and no file is left."""
    port, data_dir, started = serve
    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [GRAPHGATE, "serve", "--demo", "--port", port, "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env=clean_env(),
    )
    started.append(process)  # type: ignore[arg-type]
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"Bearer ey" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1.0)
            if ready:
                try:
                    seen += os.read(main, 65536)
                except OSError:  # EIO: the server closed its end
                    break
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        os.close(main)
    assert b"Bearer ey" in seen
    assert not (data_dir / "demo-tokens.txt").exists()
    banner = seen.decode(errors="replace")
    assert "--allow-writes" in banner  # this demo is read-only, and says how to change it
    # Sign-in through the browser comes first: no header to paste.
    assert f"claude mcp add --transport http graphgate http://127.0.0.1:{port}/mcp\r\n" in banner
    # The token command is printed with a path that runs as printed, from any directory.
    printed = banner.split("more tokens: ", 1)[1].split(" token ", 1)[0].strip()
    assert os.access(printed, os.X_OK) and Path(printed).is_absolute(), printed


async def test_stdio_transport(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=GRAPHGATE,
        args=["serve", "--transport", "stdio", "--demo", "--data-dir", str(tmp_path / "data")],
        env=clean_env(),
    )
    async with Client(params) as client:
        result = await client.call_tool("list_databases", {})
        names = [d["name"] for d in json.loads(result.content[0].text)]  # type: ignore[union-attr]
        assert names == ["acme", "globex"]
        result = await client.call_tool("run_query", {"query": "RETURN 40 + 2 AS answer"})
        assert json.loads(result.content[0].text)["rows"] == [[42]]  # type: ignore[union-attr]
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert "run_write_query" not in tools
    time.sleep(0.5)
    assert processes_using(tmp_path / "data") == []


@pytest.mark.parametrize("auth", ["dev", "oidc"])
def test_stdio_with_sign_in_is_refused_in_one_line(tmp_path: Path, auth: str) -> None:
    """stdio carries no bearer token: sign-in there could only fail every call."""
    result = subprocess.run(
        [
            *(GRAPHGATE, "serve", "--transport", "stdio", "--auth", auth, "--tenants", "acme"),
            *("--issuer", "https://idp.example", "--data-dir", str(tmp_path / "d")),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphgate:"), lines
    assert "stdio" in lines[0] and "auth = none" in lines[0]
    assert "Traceback" not in result.stderr
    assert processes_using(tmp_path / "d") == []


def stdio_params(data_dir: Path) -> StdioServerParameters:
    """The README's stdio snippet, on ``data_dir`` and with writes on."""
    return StdioServerParameters(
        command=GRAPHGATE,
        args=[
            *("serve", "--transport", "stdio", "--demo", "--allow-writes"),
            *("--data-dir", str(data_dir)),
        ],
        env=clean_env(),
    )


async def stdio_call(client: Client, tool: str, **arguments: object) -> dict:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


def wait_until(check, seconds: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def test_two_graphgates_on_one_data_dir_share_its_database(serve) -> None:
    """The README's stdio snippet beside `make run`: one database server for both, the
    same data, restarted once when it dies; it outlives the first graphgate and stops
    with the last; a kill -9 of the last leaves nothing a new start trips over."""
    port, data_dir, started = serve
    url = f"http://127.0.0.1:{port}"
    http = start(port, data_dir)
    started.append(http)
    wait_ready(url, http)
    [server] = processes_using(data_dir)
    admin = mint(data_dir, port, "--sub", "root", "--admin")
    read = {"database": "acme", "query": "MATCH (s:Shared) RETURN s.by ORDER BY s.by"}

    async with Client(stdio_params(data_dir)) as stdio:
        await stdio_call(
            stdio, "run_write_query", database="acme", query="CREATE (:Shared {by: 'stdio'})"
        )
        assert (await call(url, admin, "run_query", **read))["rows"] == [["stdio"]]
        assert processes_using(data_dir) == [server], "one database server for both"

        # The shared server dies: one new server, and both graphgates use it.
        os.kill(server, signal.SIGKILL)
        killed_at = time.monotonic()
        while (await stdio.call_tool("run_query", read)).is_error:
            assert time.monotonic() - killed_at < 10
            await asyncio.sleep(0.1)
        await call(
            url, admin, "run_write_query", **{**read, "query": "CREATE (:Shared {by: 'http'})"}
        )
        [restarted] = processes_using(data_dir)
        assert restarted != server

        # The first one stops; the database serves the second.
        http.send_signal(signal.SIGTERM)
        assert http.wait(30) == 0
        assert processes_using(data_dir) == [restarted]
        assert (await stdio_call(stdio, "run_query", **read))["rows"] == [["http"], ["stdio"]]

    # The last one out stopped it; the data persisted for the next start.
    assert wait_until(lambda: processes_using(data_dir) == [])
    third = start(port, data_dir)
    started.append(third)
    wait_ready(url, third)
    assert (await call(url, admin, "run_query", **read))["rows"] == [["http"], ["stdio"]]
    [third_server] = processes_using(data_dir)

    # kill -9 of the last graphgate, then a start at once: no stale lock, one server.
    third.kill()
    third.wait(10)
    fourth = start(port, data_dir)
    started.append(fourth)
    wait_ready(url, fourth)
    assert (await call(url, admin, "run_query", **read))["rows"] == [["http"], ["stdio"]]
    assert len(processes_using(data_dir)) == 1
    fourth.send_signal(signal.SIGTERM)
    assert fourth.wait(30) == 0
    assert wait_until(lambda: processes_using(data_dir) == [])
    assert third_server not in processes_using(data_dir)


async def test_three_graphgates_started_at_once_run_one_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ports = [str(free_port()) for _ in range(3)]
    trio = [start(port, data_dir) for port in ports]
    try:
        for port, process in zip(ports, trio, strict=True):
            wait_ready(f"http://127.0.0.1:{port}", process)
        assert len(processes_using(data_dir)) == 1
        url = f"http://127.0.0.1:{ports[2]}"
        admin = mint(data_dir, ports[2], "--sub", "root", "--admin")
        counts = await call(
            url, admin, "run_query", database="acme", query="MATCH (n) RETURN count(n)"
        )
        assert counts["rows"][0][0] > 0, "the demo was seeded once or more, never torn"
        for process in trio:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(30) for process in trio] == [0, 0, 0]
        assert wait_until(lambda: processes_using(data_dir) == [])
    finally:
        for process in trio:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def test_start_up_failures_are_one_line(tmp_path: Path) -> None:
    """A port in use and a bad flag: one line saying what to do, no traceback, no
    "listening" line, a non-zero exit; the embedded database never started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        in_use = subprocess.run(
            [GRAPHGATE, "serve", "--demo", "--port", port, "--data-dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
    bad_port = subprocess.run(
        [GRAPHGATE, "serve", "--port", "abc"], capture_output=True, text=True, env=clean_env()
    )
    for result, needle in ((in_use, "in use"), (bad_port, "port")):
        assert result.returncode not in (0, None), result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("graphgate:"), lines
        assert "Traceback" not in result.stderr and "listening" not in result.stderr
    assert "--port" in in_use.stderr
    assert processes_using(tmp_path / "d") == []


def test_an_audit_log_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    """The audit file is opened at start-up (not at the first call): a path that
    cannot be a file ends graphgate with one line naming the setting."""
    (tmp_path / "not-a-dir").write_text("")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    result = subprocess.run(
        [
            GRAPHGATE,
            "serve",
            "--tenants",
            "acme",
            "--port",
            port,
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        env={**clean_env(), "GRAPHGATE_AUDIT_LOG": str(tmp_path / "not-a-dir" / "audit.log")},
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphgate: audit_log:"), lines
    assert "Traceback" not in result.stderr and "listening" not in result.stderr
    assert processes_using(tmp_path / "d") == []


def test_sigterm_is_a_clean_stop_with_exit_code_0(serve) -> None:
    port, data_dir, started = serve
    process = start(port, data_dir)
    started.append(process)
    wait_ready(f"http://127.0.0.1:{port}", process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert "Traceback" not in process.communicate()[1]


SIGHUP_FILE_BYTES = 1024
"""Every version of the settings file below has this size (padded with a comment)."""


def write_same_identity(path: Path, text: str) -> None:
    """Rewrite ``path`` in place with the same size and modification time.

    The file watcher then sees nothing change (same inode, size and mtime),
    so whatever graphgate reloads afterwards it reloads because of SIGHUP.
    """
    padded = text + "#" * (SIGHUP_FILE_BYTES - len(text) - 1) + "\n"
    assert len(padded) == SIGHUP_FILE_BYTES
    info = path.stat()
    with path.open("r+") as file:
        file.write(padded)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


async def call_error(url: str, bearer: str, tool: str, **arguments: object) -> str:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
    async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    return str(result.content[0].text)  # type: ignore[union-attr]


async def test_sighup_reloads_the_catalog_of_a_running_serve(serve, tmp_path: Path) -> None:
    port, data_dir, started = serve
    url = f"http://127.0.0.1:{port}"
    head = (
        f'host = "127.0.0.1"\nport = {port}\nauth = "dev"\ndata_dir = "{data_dir}"\n'
        'metrics_token = "scrape"\n\n[tenants]\n'
    )
    config = tmp_path / "graphgate.toml"
    config.write_text(head + 'acme = "acme"\n' + "#" * (SIGHUP_FILE_BYTES - len(head) - 15) + "\n")
    assert config.stat().st_size == SIGHUP_FILE_BYTES
    process = subprocess.Popen(
        [GRAPHGATE, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    started.append(process)
    wait_ready(url, process)
    bearer = mint(data_dir, port, "--config", str(config), "--sub", "ann", "--tenants", "acme,beta")

    async def reloads() -> str:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            text = (await http.get("/metrics", headers={"authorization": "Bearer scrape"})).text
        return "\n".join(line for line in text.splitlines() if "catalog_reloads_total{" in line)

    assert "beta" in await call_error(url, bearer, "run_query", database="beta", query="RETURN 1")
    write_same_identity(config, head + 'acme = "acme"\nbeta = "beta"\n')
    await asyncio.sleep(1.5)  # the watcher polls twice a second: it must not have reloaded
    assert "beta" in await call_error(url, bearer, "run_query", database="beta", query="RETURN 1")

    sent = time.monotonic()
    process.send_signal(signal.SIGHUP)
    while True:
        try:
            answer = await call(url, bearer, "run_query", database="beta", query="RETURN 1 AS x")
            break
        except AssertionError:
            assert time.monotonic() - sent < 5, "the new tenant is not served after SIGHUP"
            await asyncio.sleep(0.1)
    print(f"new tenant served {time.monotonic() - sent:.2f} s after SIGHUP")
    assert answer["rows"] == [[1]]
    counted = await reloads()
    assert 'graphgate_catalog_reloads_total{outcome="ok",source="sighup"} 1.0' in counted
    assert 'source="file"' not in counted, counted

    # An invalid file on SIGHUP: nothing changes, the process keeps serving.
    write_same_identity(config, head + 'acme = "acme"\nbeta = { backend = "nowhere" }\n')
    process.send_signal(signal.SIGHUP)
    for _ in range(50):
        if 'outcome="failed",source="sighup"} 1.0' in await reloads():
            break
        await asyncio.sleep(0.1)
    assert 'graphgate_catalog_reloads_total{outcome="failed",source="sighup"} 1.0' in (
        await reloads()
    )
    assert (await call(url, bearer, "run_query", database="beta", query="RETURN 1 AS x"))["rows"]
    assert (await call(url, bearer, "run_query", database="acme", query="RETURN 1 AS x"))["rows"]

    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    log = process.communicate()[1]
    assert "Traceback" not in log
    failed = [line for line in log.splitlines() if "catalog reload (sighup) failed" in line]
    assert len(failed) == 1 and "nowhere" in failed[0], log
    assert sum("catalog reloaded (sighup)" in line for line in log.splitlines()) == 1, log
