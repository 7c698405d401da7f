"""The ASGI routing in front of the app: which requests skip the Host/Origin guard.

Real HTTP behaviour of the guard (421 for a foreign Host, 403 for a foreign
Origin) is in tests/test_http.py; here, that only requests the guard would
let through anyway take the short way, and that /mcp is the route tried first.
"""

from __future__ import annotations

from typing import Any

import pytest

from graphgate.server import OpenPathsUnguarded, build_http_app
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
    router = OpenPathsUnguarded(
        Recorder("app", calls), Recorder("guard", calls), ["127.0.0.1:8000", "mcp.example.com"]
    )
    scope = {"type": "http", "path": path, "headers": headers}
    await router(scope, None, None)
    assert len(calls) == 1
    return calls[0]


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/healthz", [(b"host", b"10.0.0.7:8000")], "app"),  # kubelet probes by pod IP
        ("/mcp", [(b"host", b"127.0.0.1:8000")], "app"),
        ("/mcp", [(b"host", b"mcp.example.com")], "app"),
        # Anything else is the guard's to judge, allowed or not.
        ("/mcp", [(b"host", b"evil.example")], "guard"),
        ("/mcp", [(b"host", b"MCP.example.com")], "guard"),
        ("/mcp", [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://evil.example")], "guard"),
        ("/mcp", [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")], "guard"),
        ("/mcp", [(b"host", b"127.0.0.1:8000"), (b"host", b"evil.example")], "guard"),
        ("/mcp", [], "guard"),
        ("/register", [(b"host", b"evil.example")], "guard"),
    ],
)
async def test_only_plainly_allowed_requests_skip_the_guard(
    path: str, headers: list[tuple[bytes, bytes]], expected: str
) -> None:
    assert await route(path, headers) == expected


def test_the_mcp_endpoint_is_the_route_tried_first(
    falkordb_service: FalkorDBService, tmp_path: Any
) -> None:
    parts = make_parts(
        falkordb_service.backend(),
        auth="dev",
        data_dir=tmp_path,
        public_url="http://127.0.0.1:8000",
        tenants={"acme": "acme"},
    )
    outer: Any = build_http_app(parts)
    starlette = outer.app.app  # RequestIdMiddleware -> OpenPathsUnguarded -> the app
    paths = [getattr(route, "path", None) for route in starlette.router.routes]
    assert paths[0] == "/mcp"
    # The discovery routes the auth provider adds are all still there, after it.
    assert "/.well-known/oauth-protected-resource/mcp" in paths[1:]
    assert "/.well-known/oauth-authorization-server" in paths[1:]
