"""The ASGI routing in front of the app: which host list the Host/Origin guard applies.

Real HTTP behaviour of the guard (421 for a foreign Host, 403 for a foreign
Origin) is in tests/test_http.py and tests/test_operational_paths.py; here,
that only requests the guard would let through anyway take the short way, that
IP-literal hosts are recognised exactly, and that /mcp and the discovery routes
each answer.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from graphgate.host_guard import HostGuard, is_ip_literal_host
from graphgate.server import build_http_app
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import make_parts


class Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(self.name)


async def route(path: str, headers: list[tuple[bytes, bytes]]) -> str:
    calls: list[str] = []
    hosts = ["127.0.0.1:8000", "mcp.example.com"]
    guard = HostGuard(Recorder("app", calls), hosts, ["https://mcp.example.com"], hosts)
    # Which way a request went: straight to the app, or through one of the two guards.
    guard.named.app = Recorder("named", calls)
    guard.by_address.app = Recorder("by_address", calls)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": headers, "scheme": "http"}
    await guard(scope, None, send)  # type: ignore[arg-type]
    if sent:
        return f"refused {sent[0]['status']}"
    assert len(calls) == 1
    return calls[0]


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/mcp", [(b"host", b"127.0.0.1:8000")], "app"),
        ("/mcp", [(b"host", b"mcp.example.com")], "app"),
        # Kubelet probes and Prometheus scrapes by pod IP: judged, and admitted.
        ("/healthz", [(b"host", b"10.0.0.7:8000")], "by_address"),
        ("/metrics", [(b"host", b"[fd00::7]:8000")], "by_address"),
        (
            "/metrics",
            [(b"host", b"10.0.0.7:8000"), (b"origin", b"http://evil.example")],
            "refused 403",
        ),
        # Anything else is the named guard's to judge, the open paths included.
        ("/healthz", [(b"host", b"evil.example")], "refused 421"),
        ("/readyz", [(b"host", b"evil.example:8000")], "refused 421"),
        ("/metrics", [(b"host", b"127.1:8000")], "refused 421"),
        ("/mcp", [(b"host", b"evil.example")], "refused 421"),
        ("/mcp", [(b"host", b"MCP.example.com")], "named"),
        (
            "/mcp",
            [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://evil.example")],
            "refused 403",
        ),
        ("/mcp", [(b"origin", b"https://mcp.example.com"), (b"host", b"mcp.example.com")], "named"),
        ("/mcp", [(b"host", b"10.0.0.7"), (b"host", b"evil.example")], "refused 421"),
        ("/mcp", [], "refused 421"),
        ("/register", [(b"host", b"evil.example")], "refused 421"),
    ],
)
async def test_only_plainly_allowed_requests_skip_the_guard(
    path: str, headers: list[tuple[bytes, bytes]], expected: str
) -> None:
    assert await route(path, headers) == expected


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        (b"10.0.0.7", True),
        (b"10.0.0.7:8000", True),
        (b"[fd00::7]:8000", True),
        (b"[::1]", True),
        (b"127.1", False),
        (b"0x7f.0.0.1", False),
        (b"10.0.0.7.nip.io", False),
        (b"10.0.0.7:80x", False),
        (b"[fd00::7]x", False),
        (b"fd00::7", False),  # unbracketed: not a Host header value
        (b"evil.example", False),
        (b"\xff", False),
    ],
)
def test_ip_literal_hosts(host: bytes, literal: bool) -> None:
    assert is_ip_literal_host(host) is literal


async def test_the_mcp_endpoint_and_every_discovery_route_answer(
    falkordb_service: FalkorDBService, tmp_path: Any
) -> None:
    """/mcp beside the routes the auth provider adds: each reaches its own handler."""
    parts = make_parts(
        falkordb_service.backend(),
        auth="dev",
        data_dir=tmp_path,
        public_url="http://127.0.0.1:8000",
        tenants={"acme": "acme"},
    )
    transport = httpx.ASGITransport(app=build_http_app(parts))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        gate = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        resource = await http.get("/.well-known/oauth-protected-resource/mcp")
        issuer = await http.get("/.well-known/oauth-authorization-server")
    assert gate.status_code == 401 and gate.headers["www-authenticate"].startswith("Bearer ")
    assert resource.status_code == 200
    assert resource.json()["resource"] == "http://127.0.0.1:8000/mcp"
    assert issuer.status_code == 200 and "jwks_uri" in issuer.json()
