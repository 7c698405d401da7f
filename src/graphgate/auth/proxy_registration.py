"""``POST /register`` in proxy mode: FastMCP's registration, behind graphgate's bounds.

(The dev issuer's ``/register`` on loopback, the mcp SDK's handler, sits
behind the same bounds: `graphgate.auth.dev_authorization`.)

In ``registration = proxy`` every anonymous registration is *stored* (in
memory or Redis) by FastMCP's `OAuthProxy`, which caps neither the body nor
its fields: one 100 MB ``client_name`` was accepted. This endpoint stands in
front of the proxy's own (reached only through its public Starlette route) and
lets a request through only when

* its source (the peer address: graphgate never trusts X-Forwarded-For) is
  within ``registration_rate_limit`` registrations per minute (429 with
  Retry-After otherwise),
* its body is a JSON object of at most 16 KiB (413 otherwise), and
* it is RFC 7591 client metadata with every field bounded, checked by the
  same `check_client_metadata` as the shim (400 ``invalid_client_metadata``).

What reaches FastMCP is the known fields only, re-serialised; FastMCP then
applies the proxy's own redirect-URI patterns. The store's per-entry and
per-collection caps (`graphgate.auth.proxy.proxy_storage`) bound the rest.
"""

from __future__ import annotations

import json
import logging
from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graphgate.auth.registration import CORS_HEADERS, check_client_metadata, read_client_metadata
from graphgate.errors import RateLimited, RegistrationRefused, to_http_response
from graphgate.ratelimit import RateLimiter

__all__ = ["BoundedRegistration"]

logger = logging.getLogger(__name__)

# Distinct sources remembered at once; the least recent is forgotten first.
MAX_SOURCES: Final = 10_000


class BoundedRegistration:
    """An ASGI app: the checks above, then the proxy's registration app with a clean body."""

    def __init__(self, registration: ASGIApp, per_minute: int) -> None:
        self.registration = registration
        self.limiter = RateLimiter(per_minute, max_subjects=MAX_SOURCES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.registration(scope, receive, send)  # the CORS preflight
            return
        request = Request(scope, receive)
        try:
            self._spend(request)
            metadata = check_client_metadata(await read_client_metadata(request))
        except RegistrationRefused as refused:
            await to_http_response(refused, headers=CORS_HEADERS)(scope, receive, send)
            return
        body = json.dumps(metadata, separators=(",", ":")).encode()
        await self.registration(_with_body_length(scope, len(body)), _replay(body, receive), send)

    def _spend(self, request: Request) -> None:
        source = request.client.host if request.client is not None else "unknown"
        try:
            self.limiter.check(source)
        except RateLimited as limited:
            logger.info("registration from %s refused: rate limit", source)
            raise RegistrationRefused(
                "temporarily_unavailable",
                "too many registrations from this address; retry later",
                status=429,
                retry_after=limited.retry_after,
            ) from None


def _with_body_length(scope: Scope, length: int) -> Scope:
    copied = dict(scope)
    copied["headers"] = list(scope["headers"])
    headers = MutableHeaders(scope=copied)
    headers["content-length"] = str(length)
    headers["content-type"] = "application/json"
    return copied


def _replay(body: bytes, receive: Receive) -> Receive:
    """The checked body once, then whatever the connection says (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
