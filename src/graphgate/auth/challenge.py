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
  catalog (`graphgate.errors.NoTenants` says why not ``insufficient_scope``),
  after asking discovery to look once (``rediscover``, rate-limited and
  shared by every request) when the token names tenants not yet known: a
  database created a moment ago is served to its first user, and a name that
  still does not exist gets the very same 403;
* answers 502/503 JSON when the issuer's keys cannot be had;
* renders every refusal with `graphgate.errors.to_http_response`, adding
  only the challenge header;
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
from collections.abc import Awaitable, Callable, Collection
from typing import Final

from fastmcp.server.auth import AccessToken
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.authentication import AuthCredentials
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from graphgate.auth.rights import Rights
from graphgate.auth.tokens import JwtVerifier, describe
from graphgate.errors import (
    AuthError,
    CredentialsMisplaced,
    CredentialsMissing,
    ForbiddenError,
    GraphgateError,
    IssuerUnavailable,
    NoTenants,
    ScopeMissing,
    TokenReason,
    TokenRejected,
    to_http_response,
)

logger = logging.getLogger(__name__)

__all__ = ["BearerGate", "Challenge"]

# RFC 6750 §2.1 b64token.
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

FailureHook = Callable[[str], None]
RightsOfToken = Callable[[AccessToken], Rights]
Rediscover = Callable[[], Awaitable[bool]]
"""Asks discovery to look now; rate-limited by its owner (`graphgate.backends.discovery`)."""


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

    def response(self, error: AuthError | ForbiddenError, *, scope: str | None = None) -> Response:
        """``error`` as a 401 / 403 with its challenge (no error code for a missing token)."""
        if error.names_error:
            header = self.header(error.oauth_error or error.code, str(error), scope=scope)
        else:
            header = self.header(scope=scope)
        return to_http_response(error, headers={"WWW-Authenticate": header})


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
        rights: RightsOfToken | None = None,
        open_paths: Collection[str] = (),
        on_failure: FailureHook | None = None,
        rediscover: Rediscover | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.challenge = challenge
        self.required_scopes = tuple(required_scopes)
        self.rights = rights
        self.open_paths = frozenset(open_paths)
        self.on_failure = on_failure
        self.rediscover = rediscover

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

    def _fail(self, reason: str, error: GraphgateError, *, scope: str | None = None) -> Response:
        if self.on_failure is not None:
            try:
                self.on_failure(reason)
            except Exception:  # a metrics hook must never turn a 401 into a 500
                logger.exception("auth failure hook raised")
        if isinstance(error, AuthError | ForbiddenError):
            return self.challenge.response(error, scope=scope)
        return to_http_response(error)

    def _rejected(self, reason: TokenReason) -> Response:
        return self._fail(
            reason, TokenRejected(reason, describe(reason, self.verifier.options.issuer))
        )

    async def _authenticate(self, connection: HTTPConnection) -> AccessToken | Response:
        # Parse only when there is a query (MCP requests normally have none).
        if connection.scope.get("query_string") and "access_token" in connection.query_params:
            return self._fail(
                "query_token",
                CredentialsMisplaced(
                    "Send the access token in the Authorization header, not in the URL."
                ),
            )
        values = connection.headers.getlist("authorization")
        if len(values) > 1:
            return self._fail(
                "multiple_headers", CredentialsMisplaced("Send exactly one Authorization header.")
            )
        if not values:
            return self._fail("missing_token", CredentialsMissing())
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            # RFC 6750 §3.1: another scheme is "no bearer credentials", not an invalid one.
            return self._fail("missing_token", CredentialsMissing())
        token = credentials.strip()
        if len(token) > self.verifier.options.max_token_bytes:
            return self._rejected("oversized")
        if not _B64TOKEN.fullmatch(token):
            return self._rejected("malformed")
        try:
            access = await self.verifier.verify(token)
        except TokenRejected as rejected:
            return self._rejected(rejected.reason)
        except IssuerUnavailable as unavailable:
            return self._fail("issuer_unavailable", unavailable)
        missing = [s for s in self.required_scopes if s not in access.scopes]
        if missing:
            needed = " ".join(self.required_scopes)
            return self._fail(
                "insufficient_scope",
                ScopeMissing(f"The access token lacks the scope {needed}."),
                scope=needed,
            )
        if self.rights is not None:
            rights = self.rights(access)
            if not rights.tenants and rights.unknown and self.rediscover is not None:
                access = await self._after_rediscovery(self.rediscover, token, access)
                rights = self.rights(access)
            if not rights.tenants:
                # NoTenants says why this is access_denied, not insufficient_scope.
                return self._fail("no_tenants", NoTenants())
        return access

    async def _after_rediscovery(
        self, rediscover: Rediscover, token: str, access: AccessToken
    ) -> AccessToken:
        """``access`` verified again after discovery looked (or declined to, rate-limited).

        A catalog change clears the verifier's cache, so verifying again
        computes the rights against the catalog now in force; when nothing
        changed it is a cache hit. Whatever discovery found, the caller gets
        the same answer as any token naming tenants that do not exist.
        """
        await rediscover()
        try:
            return await self.verifier.verify(token)
        except GraphgateError:  # expired in between, keys gone: keep the first verdict
            return access
