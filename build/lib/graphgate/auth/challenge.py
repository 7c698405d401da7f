"""The bearer gate: every request outside the open paths needs a good token.

One ASGI middleware (RFC 6750, RFC 9728 §5.1, MCP authorization) that

* refuses ``access_token`` in the query string (OAuth 2.1 §5.2, RFC 6750 §5.3);
* refuses several ``Authorization`` headers (which one would the proxy log?);
* answers 401 with ``WWW-Authenticate: Bearer resource_metadata="...",
  scope="..."``, adding ``error="invalid_token"`` only when a token was sent
  (RFC 6750 §3.1: a request without credentials gets no error code);
* answers 403 ``insufficient_scope`` naming the scopes needed (RFC 6750 §3.1,
  which MCP clients use for step-up authorization);
* answers 403 ``access_denied`` when the token's tenants meet nothing in the
  catalog (see `BearerGate._no_tenants`);
* answers 502/503 JSON when the issuer's keys cannot be had;
* otherwise stores the verified token where FastMCP and the MCP SDK look for
  it (``scope["user"]``, ``scope["auth"]``) and calls the app.

Why a replacement for FastMCP's ``RequireAuthMiddleware``: that one orders
``scope`` before ``resource_metadata``, has no 403 for an empty tenant set,
accepts the first of several Authorization headers and ignores query-string
tokens. The gate runs first; FastMCP's check behind it then always passes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.authentication import AuthCredentials
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from graphgate.auth.discovery import IssuerUnavailable
from graphgate.auth.rights import Rights
from graphgate.auth.tokens import JwtVerifier, TokenRejected, describe

logger = logging.getLogger(__name__)

__all__ = ["BearerGate", "Challenge"]

# RFC 6750 §2.1 b64token.
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_NO_STORE: Final = {"Cache-Control": "no-store"}

FailureHook = Callable[[str], None]


class Challenge:
    """Builds the ``WWW-Authenticate`` values graphgate sends.

    Parameter order is fixed: ``resource_metadata`` (RFC 9728 §5.1, what MCP
    clients look for first), ``scope``, then ``error`` and
    ``error_description``. Values are ASCII without quotes or backslashes
    (RFC 6750 §3), so no escaping is ever needed.
    """

    def __init__(self, resource_metadata_url: str, scopes: Collection[str]) -> None:
        self.resource_metadata_url = resource_metadata_url
        self.scope = " ".join(scopes)

    def header(
        self, error: str | None = None, description: str | None = None, *, scope: str | None = None
    ) -> str:
        parts = [f'resource_metadata="{self.resource_metadata_url}"']
        shown_scope = self.scope if scope is None else scope
        if shown_scope:  # never an empty scope="" (RFC 6750 §3: scope is 1*scope-token)
            parts.append(f'scope="{shown_scope}"')
        if error:
            parts.append(f'error="{error}"')
        if description:
            parts.append(f'error_description="{_safe(description)}"')
        return "Bearer " + ", ".join(parts)

    def unauthorized(self, error: str | None = None, description: str | None = None) -> Response:
        """401. Without ``error`` for a request that sent no bearer token at all."""
        body: dict[str, str] = {}
        if error:
            body["error"] = error
        body["error_description"] = description or (
            "This resource needs a bearer access token in the Authorization header."
        )
        return JSONResponse(
            body,
            status_code=401,
            headers={"WWW-Authenticate": self.header(error, description), **_NO_STORE},
        )

    def forbidden(self, error: str, description: str, *, scope: str | None = None) -> Response:
        return JSONResponse(
            {"error": error, "error_description": description},
            status_code=403,
            headers={"WWW-Authenticate": self.header(error, description, scope=scope), **_NO_STORE},
        )


def _safe(text: str) -> str:
    return "".join(ch if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\' else " " for ch in text)


class BearerGate:
    """ASGI middleware guarding everything except ``open_paths``; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: JwtVerifier,
        challenge: Challenge,
        required_scopes: Collection[str],
        rights: Callable[[Mapping[str, Any]], Rights] | None = None,
        open_paths: Collection[str] = (),
        on_failure: FailureHook | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.challenge = challenge
        self.required_scopes = tuple(required_scopes)
        self.rights = rights
        self.open_paths = frozenset(open_paths)
        self.on_failure = on_failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        outcome = await self._authenticate(connection)
        if isinstance(outcome, Response):
            if scope["type"] == "http":
                await outcome(scope, receive, send)
            else:  # a websocket upgrade without a good token: refuse the handshake
                await WebSocketClose(code=1008)(scope, receive, send)
            return
        scope["user"] = AuthenticatedUser(outcome)
        scope["auth"] = AuthCredentials(outcome.scopes)
        await self.app(scope, receive, send)

    def _fail(self, reason: str, response: Response) -> Response:
        if self.on_failure is not None:
            try:
                self.on_failure(reason)
            except Exception:  # a metrics hook must never turn a 401 into a 500
                logger.exception("auth failure hook raised")
        return response

    async def _authenticate(self, connection: HTTPConnection) -> Any:
        challenge = self.challenge
        # Parse only when there is a query (MCP requests normally have none).
        if connection.scope.get("query_string") and "access_token" in connection.query_params:
            return self._fail(
                "query_token",
                challenge.unauthorized(
                    "invalid_request",
                    "Send the access token in the Authorization header, not in the URL.",
                ),
            )
        values = connection.headers.getlist("authorization")
        if len(values) > 1:
            return self._fail(
                "multiple_headers",
                challenge.unauthorized("invalid_request", "Send exactly one Authorization header."),
            )
        if not values:
            return self._fail("missing_token", challenge.unauthorized())
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            # RFC 6750 §3.1: another scheme is "no bearer credentials", not an invalid one.
            return self._fail("missing_token", challenge.unauthorized())
        token = credentials.strip()
        if len(token) > self.verifier.options.max_token_bytes:
            return self._fail(
                "oversized", challenge.unauthorized("invalid_token", describe("oversized"))
            )
        if not _B64TOKEN.fullmatch(token):
            return self._fail(
                "malformed", challenge.unauthorized("invalid_token", describe("malformed"))
            )
        try:
            access = await self.verifier.verify(token)
        except TokenRejected as rejected:
            return self._fail(
                rejected.reason,
                challenge.unauthorized(
                    "invalid_token", describe(rejected.reason, self.verifier.options.issuer)
                ),
            )
        except IssuerUnavailable as unavailable:
            return self._fail("issuer_unavailable", unavailable.to_response())
        missing = [s for s in self.required_scopes if s not in access.scopes]
        if missing:
            needed = " ".join(self.required_scopes)
            return self._fail(
                "insufficient_scope",
                challenge.forbidden(
                    "insufficient_scope",
                    f"The access token lacks the scope {needed}.",
                    scope=needed,
                ),
            )
        if self.rights is not None and not self.rights(access.claims).tenants:
            return self._fail("no_tenants", self._no_tenants())
        return access

    def _no_tenants(self) -> Response:
        """403 for a valid token whose tenants meet nothing in the catalog.

        Not ``insufficient_scope``: MCP clients answer that code with a
        step-up authorization asking for the challenge's scopes (MCP
        2025-11-25 "Scope challenge handling"; the Python SDK's oauth2.py),
        which cannot help here since tenant membership is no OAuth scope. The
        client would send the user through the login page again and get the
        same token. ``access_denied`` (the RFC 6749 §4.1.2.1 code for "the
        resource owner or authorization server denied the request") states
        the situation and makes clients stop and show the description.
        """
        return self.challenge.forbidden(
            "access_denied",
            "The access token grants no tenant on this server. Ask an administrator "
            "to give you access to a tenant, then sign in again.",
        )
