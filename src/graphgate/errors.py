"""graphgate's exception tree, and the one place each wire form is rendered.

    GraphgateError
    ├── ConfigError              bad settings: start-up fails with exit code 2
    ├── InternalError            a defect: logged with its traceback, told by request id
    ├── AuthError                no usable token: HTTP 401 (RFC 6750 invalid_token)
    │   ├── CredentialsMissing   no bearer token at all (RFC 6750 §3.1: no error code)
    │   ├── CredentialsMisplaced a token in the URL, or several Authorization headers
    │   ├── TokenRejected        the token itself is bad (``reason`` labels metrics)
    │   └── MetricsNotAuthorized /metrics without its own bearer secret
    ├── ForbiddenError           token fine, rights missing: HTTP 403 / tool error
    │   ├── ScopeMissing         the token lacks a required scope (insufficient_scope)
    │   ├── NoTenants            the token's tenants meet nothing in the catalog
    │   ├── DatabaseNotPermitted same message whether or not the database exists
    │   ├── WritesNotAllowed     write attempted where the server or rights forbid it
    │   └── WriteNotConfirmed    the user declined, cancelled or did not answer; or
    │                            confirmation is required and the client cannot ask
    ├── InvalidArguments         a tool call's arguments do not fit the tool's schema
    ├── RateLimited              per-subject (or per-source) budget exhausted: 429
    ├── Busy                     the tenant's or caller's share of the backend is in use
    ├── QueryError               the database refused the query (its own message)
    │   ├── ReadOnlyViolation    a write reached a read-only path
    │   ├── QueryRefused         refused by graphgate's policy before execution
    │   │   └── QueryTooComplex  text the engine's parser cannot bound (nesting, length)
    │   ├── QueryTimeout         the query ran past its time limit; a write was undone
    │   │   └── WriteOutcomeUnknown  a write graphgate stopped waiting for
    │   ├── MemoryLimitExceeded  the query needed more memory than it may use
    │   └── ResultTooLarge       the result exceeds max_result_bytes
    ├── BackendUnavailable       the database server cannot be reached (retry hint)
    ├── IssuerUnavailable        the authorization server cannot be used now: 503 / 502
    ├── RegistrationRefused      an RFC 7591 §3.2.2 refusal of a client registration
    ├── SignInRefused            the dev issuer's sign-in page cannot go on: 400
    ├── RequestTimeout           the request body did not arrive in time: 408
    └── KeycloakAdminError       Keycloak's admin API refused `keycloak configure`

Each class carries what every wire needs: ``code`` (the tool error's prefix),
``status`` (the HTTP status, where it can reach HTTP) and ``oauth_error`` (the
``error`` member of an RFC 6749 / 6750 / 7591 JSON body; ``code`` when None;
left out where ``names_error`` is False).
`to_tool_error` renders any exception as a tool error and `to_http_response`
renders a `GraphgateError` as an HTTP response; nothing else builds either.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from fastmcp.exceptions import ToolError
    from mcp.shared.exceptions import MCPError
    from starlette.responses import Response


class GraphgateError(Exception):
    """Root of every error graphgate raises on purpose."""

    code: ClassVar[str] = "graphgate_error"
    status: int = 500
    oauth_error: str | None = None
    names_error: ClassVar[bool] = True
    retry_after: float | None = None
    page_title: ClassVar[str | None] = None
    """The heading of its HTML page, where a person reads it in a browser."""

    def headers(self) -> Mapping[str, str]:
        """Response headers this error adds when it reaches HTTP (e.g. a challenge)."""
        return {}


class ConfigError(GraphgateError):
    code = "invalid_configuration"


class InternalError(GraphgateError):
    """Something graphgate did not expect: the client learns only where to look."""

    code = "internal_error"
    oauth_error = "server_error"

    def __init__(self, request_id: str | None) -> None:
        super().__init__(
            "graphgate hit an unexpected error; request id "
            f"{request_id or 'n/a'} is in the server log"
        )


class AuthError(GraphgateError):
    code = "invalid_token"
    status = 401


TokenReason = Literal[
    "malformed",
    "oversized",
    "bad_header",
    "alg_not_allowed",
    "crit_header",
    "unknown_kid",
    "key_mismatch",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "bad_claim_type",
    "lifetime_too_long",
    "invalid",
]


class CredentialsMissing(AuthError):
    """No bearer token was sent.

    RFC 6750 §3.1: a request without credentials is told no error code, only
    where to get a token (the challenge's ``resource_metadata``).
    """

    code = "missing_token"
    names_error = False

    def __init__(self) -> None:
        super().__init__("This resource needs a bearer access token in the Authorization header.")


class CredentialsMisplaced(AuthError):
    """A token in the URL (OAuth 2.1 §5.2) or several Authorization headers."""

    code = "invalid_request"
    oauth_error = "invalid_request"


class TokenRejected(AuthError):
    """The token is not acceptable; ``reason`` is a short label fit for metrics."""

    def __init__(self, reason: TokenReason, description: str | None = None) -> None:
        super().__init__(description or reason.replace("_", " "))
        self.reason: TokenReason = reason


class MetricsNotAuthorized(AuthError):
    """/metrics names every tenant, so it has its own secret."""

    def __init__(self, closed: bool) -> None:
        super().__init__(
            "metrics are closed on this server: its operator sets metrics_token "
            "(or metrics_public = true)"
            if closed
            else "metrics need the metrics token"
        )

    def headers(self) -> Mapping[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="metrics"'}


class ForbiddenError(GraphgateError):
    code = "forbidden"
    status = 403
    oauth_error = "insufficient_scope"


class ScopeMissing(ForbiddenError):
    """The token lacks a scope the server requires (RFC 6750 §3.1 insufficient_scope)."""

    code = "insufficient_scope"


class NoTenants(ForbiddenError):
    """A valid token whose tenants meet nothing in the catalog.

    Not ``insufficient_scope``: MCP clients answer that code with a step-up
    authorization asking for the challenge's scopes (MCP 2025-11-25 "Scope
    challenge handling"), which cannot help since tenant membership is no
    OAuth scope. ``access_denied`` (RFC 6749 §4.1.2.1) makes clients stop and
    show the description.
    """

    code = "no_tenants"
    oauth_error = "access_denied"

    def __init__(self) -> None:
        super().__init__(
            "The access token grants no tenant on this server. Ask an administrator "
            "to give you access to a tenant, then sign in again."
        )


class DatabaseNotPermitted(ForbiddenError):
    """Raised for any database outside the caller's rights.

    The message is deliberately identical for "does not exist" and "exists
    but not yours", so the catalog cannot be enumerated.
    """

    code = "database_not_permitted"

    def __init__(self, name: str) -> None:
        shown = name if len(name) <= 64 else name[:61] + "..."
        super().__init__(
            f"Database {shown!r} is not available to you. "
            "Call list_databases to see the databases you may use."
        )


class WritesNotAllowed(ForbiddenError):
    code = "writes_not_allowed"


class WriteNotConfirmed(ForbiddenError):
    """A write the user did not confirm (``confirm_writes``): nothing ran."""

    code = "write_not_confirmed"


class InvalidArguments(GraphgateError):
    """A tool call's arguments do not fit its schema: one problem per argument, named."""

    code = "invalid_arguments"
    status = 400

    def __init__(self, tool: str, problems: list[str]) -> None:
        super().__init__(f"{tool}: " + "; ".join(problems))


UNKNOWN_OUTCOME_HINT = "the write may still have committed; check before retrying"
"""Said by every error after which a write's outcome is unknown, and only by those."""


class RateLimited(GraphgateError):
    code = "rate_limited"
    status = 429
    oauth_error = "slow_down"

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message or f"Rate limit exceeded: retry in {retry_after:.1f} s.")


class Busy(GraphgateError):
    """Fair share: one tenant or caller already has its share of queries in flight.

    Nothing ran; the call may be retried after ``retry_after`` seconds.
    """

    code = "busy"
    status = 503

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"{message} Nothing ran; retry in {retry_after:.1f} s.")


class QueryError(GraphgateError):
    code = "query_error"
    status = 400


class ReadOnlyViolation(QueryError):
    code = "read_only"


class QueryRefused(QueryError):
    code = "query_refused"


class QueryTooComplex(QueryRefused):
    """Refused before it reached the database: parsing it could stall the server."""

    code = "query_too_complex"


class QueryTimeout(QueryError):
    """The query ran past ``query_timeout`` and is known not to have changed anything."""

    code = "timeout"
    status = 504


class WriteOutcomeUnknown(QueryTimeout):
    """graphgate stopped waiting for a write: it may or may not have committed."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; {UNKNOWN_OUTCOME_HINT}")


class MemoryLimitExceeded(QueryError):
    """The database stopped the query at its memory bound; nothing was changed."""

    code = "memory_limit"


class ResultTooLarge(QueryError):
    code = "result_too_large"


class BackendUnavailable(GraphgateError):
    """The database cannot be reached now; ``retry_after`` says when to try again."""

    code = "backend_unavailable"
    status = 503

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        if retry_after is not None:
            message = f"{message}; retry in {retry_after:.1f} s"
        super().__init__(message)


class IssuerUnavailable(GraphgateError):
    """The issuer (its metadata or JWKS) could not be used right now.

    ``unreachable`` distinguishes a transport failure (HTTP 503) from an
    issuer that answered with something unusable (HTTP 502). The details stay
    in the log; clients are told which of the two, and when to try again.
    """

    code = "temporarily_unavailable"
    page_title = "Sign-in unavailable"

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.status = 503 if unreachable else 502
        self.oauth_error = "temporarily_unavailable" if unreachable else "server_error"
        self.retry_after = 5.0

    @property
    def public_description(self) -> str:
        return (
            "The authorization server cannot be reached; try again shortly."
            if self.unreachable
            else "The authorization server answered with unusable metadata."
        )


RegistrationErrorCode = Literal[
    "invalid_client_metadata", "invalid_redirect_uri", "temporarily_unavailable"
]


class RegistrationRefused(GraphgateError):
    """An RFC 7591 §3.2.2 error: the code and a description safe to show the client.

    ``status`` is 400 but for an oversized body (413) and a rate limit (429,
    with ``retry_after`` seconds in a Retry-After header).
    """

    code = "registration_refused"

    def __init__(
        self,
        error: RegistrationErrorCode,
        description: str,
        *,
        status: int = 400,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(description)
        self.oauth_error = error
        self.status = status
        self.retry_after = retry_after


class SignInRefused(GraphgateError):
    """A step of the dev issuer's browser sign-in that cannot go on (expired, bad choice)."""

    code = "sign_in_refused"
    status = 400
    oauth_error = "invalid_request"
    page_title = "Sign-in failed"


class RequestTimeout(GraphgateError):
    """The request body did not arrive within ``body_timeout``."""

    code = "request_timeout"
    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:g} s")

    def headers(self) -> Mapping[str, str]:
        # The server closes the connection after the answer.
        return {"Connection": "close"}


class KeycloakAdminError(GraphgateError):
    """Keycloak's admin API refused or failed a request; the message names it."""

    code = "keycloak_admin_error"


# -- the wires --------------------------------------------------------------------------


def to_tool_error(error: BaseException, request_id: str | None = None) -> ToolError:
    """The MCP tool error for ``error``: its code and message, or a masked defect.

    A `GraphgateError` is the client's business, not the operator's: it is
    kept out of error-level logs (the audit trail records each one). Anything
    else is a defect; the caller logs its traceback, the client gets only the
    request id.
    """
    # Imported here so backends and settings load without the MCP stack.
    from fastmcp.exceptions import ToolError

    shown = error if isinstance(error, GraphgateError) else InternalError(request_id)
    level = logging.DEBUG if shown is error else logging.ERROR
    return ToolError(f"{shown.code}: {shown}", log_level=level)


def to_request_error(error: BaseException, request_id: str | None = None) -> MCPError:
    """The JSON-RPC error of a failed ``resources/read`` or ``prompts/get``.

    Resources and prompts have no error result the way tools do; the message
    is the tool error's (``code: message``), so a refused database reads the
    same whichever way it was asked for. The client's own mistakes (rights,
    arguments, its query) are invalid params; the rest internal errors.
    """
    from mcp.shared.exceptions import MCPError
    from mcp.types import INTERNAL_ERROR, INVALID_PARAMS

    shown = error if isinstance(error, GraphgateError) else InternalError(request_id)
    theirs = isinstance(shown, ForbiddenError | QueryError | InvalidArguments)
    return MCPError(INVALID_PARAMS if theirs else INTERNAL_ERROR, f"{shown.code}: {shown}")


def describe(error: GraphgateError) -> str:
    """What a client is told over HTTP: never an issuer's own words."""
    if isinstance(error, IssuerUnavailable):
        return error.public_description
    return str(error)


def to_http_response(
    error: GraphgateError,
    *,
    headers: Mapping[str, str] | None = None,
    html_page: bool = False,
) -> Response:
    """``error`` as an RFC 6749 §5.2-shaped JSON body with its status and headers.

    ``html_page`` renders the same message as a small HTML page instead, for
    the browser steps of a sign-in, where a person reads it. Responses are
    never cached; a ``retry_after`` becomes a Retry-After header.
    """
    from starlette.responses import HTMLResponse, JSONResponse

    merged = {"Cache-Control": "no-store", **error.headers(), **(headers or {})}
    if error.retry_after is not None:
        merged["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    description = describe(error)
    if html_page:
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>graphgate</title></head>"
            f"<body><h1>{html.escape(_title(error))}</h1><p>{html.escape(description)}</p>"
            "</body></html>"
        )
        return HTMLResponse(page, status_code=error.status, headers=merged)
    body = {"error": error.oauth_error or error.code} if error.names_error else {}
    body["error_description"] = description
    return JSONResponse(body, status_code=error.status, headers=merged)


def _title(error: GraphgateError) -> str:
    if error.page_title:
        return error.page_title
    return "Request refused" if error.status < 500 else "Something went wrong"
