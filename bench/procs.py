"""Processes the benchmarks start, and what /proc says about them.

Every server runs as its own process on loopback, so its CPU time and memory
can be read from ``/proc/<pid>/stat`` and ``/proc/<pid>/status`` without
counting the load generator. Every process started here is stopped by
`Procs.close` (the run wraps it in ``try/finally``); servers also get
``PR_SET_PDEATHSIG`` so they die with the benchmark even if it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is fields[0]; utime and stime are fields[11], fields[12].
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Server:
    """A server process the benchmark started: its name, pid, URL and log."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_kib(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Procs:
    """Starts servers as subprocesses and stops them all on `close`."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.servers: list[Server] = []
        self._http_servers: list[ThreadingHTTPServer] = []

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        url: str,
        cwd: Path | None = None,
    ) -> Server:
        log = self.work_dir / f"{name}.log"
        handle = log.open("wb")
        full_env = {**os.environ, **env}
        process = subprocess.Popen(
            argv,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            cwd=cwd or self.work_dir,
        )
        handle.close()
        server = Server(name, process, url, log)
        self.servers.append(server)
        return server

    async def wait_http(self, server: Server, path: str, timeout: float = 60.0) -> None:
        """Until ``GET url+path`` answers below 500 (or the process dies)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if server.process.poll() is not None:
                    raise RuntimeError(
                        f"{server.name} exited with {server.process.returncode}:\n"
                        f"{server.log_tail()}"
                    )
                try:
                    response = await http.get(server.url + path)
                    if response.status_code < 500:
                        return
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{server.name} did not answer {path} in {timeout:.0f} s ({last})")

    async def stop(self, server: Server, timeout: float = 15.0) -> None:
        if server in self.servers:
            self.servers.remove(server)
        process = server.process
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if process.poll() is None:
                process.kill()
                process.wait(5)

    def serve_json(self, document: Any) -> str:
        """Serve one JSON document over HTTP on loopback (a JWKS); returns its URL."""
        body = json.dumps(document).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self._http_servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"

    async def close(self) -> None:
        for server in list(self.servers):
            with contextlib.suppress(Exception):
                await self.stop(server)
        for httpd in self._http_servers:
            httpd.shutdown()
            httpd.server_close()
        self._http_servers.clear()
