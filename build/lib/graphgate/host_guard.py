"""The Host/Origin guard in front of every path, against DNS rebinding.

A page on ``evil.example`` can make the victim's browser resolve its own name
to 127.0.0.1 (or to a pod address) and then read graphgate's answers as
same-origin. The request then carries ``Host: evil.example``: rebinding needs
a *name*. So graphgate accepts a Host that is a name from its configuration
(`graphgate.server.allowed_hosts`) or an IP literal, and nothing else:

* an IP-literal Host cannot be a rebinding attack, since the browser only
  sends one when the page itself was loaded from that address, and then the
  page is graphgate's own (a cross-origin read from another page still carries
  that page's Origin, which the guard refuses). Kubelet probes and Prometheus
  scrapes send the pod IP; port-mapped containers the host's address.
* any other name is refused with 421, on ``/healthz``, ``/readyz`` and
  ``/metrics`` as on ``/mcp``: those pages name tenants and backends.

The judgement itself is FastMCP's `HostOriginGuardMiddleware` in strict mode
(Origin must be ``public_url`` or the request's own origin); this module only
picks which host list applies and lets the common case skip the parsing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from fastmcp.server.http import HostOriginGuardMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["HostGuard", "is_ip_literal_host"]


def is_ip_literal_host(host: bytes) -> bool:
    """``10.0.0.7``, ``10.0.0.7:8000``, ``[fd00::7]:8000``: an address, not a name."""
    try:
        text = host.decode("ascii").strip()
    except UnicodeDecodeError:
        return False
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return False
    else:
        address, _, port = text.partition(":")
        if port and not port.isdigit():
            return False
    try:
        # Strict dotted-quad only: "127.1" and "0x7f.0.0.1" are names to a browser's
        # resolver as much as addresses, so they stay with the named list.
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


class HostGuard:
    """Every HTTP request passes the Host/Origin guard; ``plain_hosts`` take a short way.

    A request whose Host header is, to the letter, one of ``plain_hosts`` and
    that carries no Origin (every non-browser MCP client) is one the guard
    always lets through; it skips the guard's per-request host parsing. A
    request with exactly one Host header that is an IP literal is judged
    against any host (its Origin is still checked); any other request gets the
    guard's full judgement against the configured names.
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Sequence[str],
        allowed_origins: Sequence[str] | None,
        plain_hosts: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.named = HostOriginGuardMiddleware(
            app, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins, mode="strict"
        )
        self.by_address = HostOriginGuardMiddleware(
            app, allowed_hosts=["*"], allowed_origins=allowed_origins, mode="strict"
        )
        self.plain_hosts = frozenset(host.encode("latin-1") for host in plain_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.named(scope, receive, send)
            return
        host, origin, hosts = self._host_and_origin(scope)
        if hosts == 1 and host is not None:
            if not origin and host in self.plain_hosts:
                await self.app(scope, receive, send)
                return
            if is_ip_literal_host(host):
                await self.by_address(scope, receive, send)
                return
        await self.named(scope, receive, send)

    @staticmethod
    def _host_and_origin(scope: Scope) -> tuple[bytes | None, bool, int]:
        host: bytes | None = None
        origin = False
        hosts = 0
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = True
            elif name == b"host":
                hosts += 1
                host = value
        return host, origin, hosts
