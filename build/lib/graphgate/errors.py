"""graphgate's exception tree, and the one place it is mapped to the wire.

    GraphgateError
    ├── ConfigError              bad settings: start-up fails with exit code 2
    ├── AuthError                no usable token: HTTP 401 (RFC 6750 invalid_token)
    ├── ForbiddenError           token fine, rights missing: HTTP 403 / tool error
    │   └── DatabaseNotPermitted same message whether or not the database exists
    ├── WritesNotAllowed         write attempted where the server or rights forbid it
    ├── RateLimited              per-subject budget exhausted (carries a retry hint)
    ├── Busy                     the tenant's or caller's share of the backend is in use
    ├── QueryError               the database refused the query (its own message)
    │   ├── ReadOnlyViolation    a write reached a read-only path
    │   ├── QueryRefused         refused by graphgate's policy before execution
    │   │   └── QueryTooComplex  text the engine's parser cannot bound (nesting, length)
    │   ├── QueryTimeout         the query ran past its time limit; a write was undone
    │   │   └── WriteOutcomeUnknown  a write graphgate stopped waiting for
    │   ├── MemoryLimitExceeded  the query needed more memory than it may use
    │   └── ResultTooLarge       the result exceeds max_result_bytes
    └── BackendUnavailable       the database server cannot be reached (retry hint)

Tools raise these; `to_tool_error` turns them into MCP tool errors. Anything
else that escapes a tool is a bug: it is logged with its traceback and the
client gets a generic message, never the traceback.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastmcp.exceptions import ToolError


class GraphgateError(Exception):
    """Root of every error graphgate raises on purpose."""

    code = "graphgate_error"


class ConfigError(GraphgateError):
    code = "invalid_configuration"


class AuthError(GraphgateError):
    code = "invalid_token"


class ForbiddenError(GraphgateError):
    code = "forbidden"


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


UNKNOWN_OUTCOME_HINT = "the write may still have committed; check before retrying"
"""Said by every error after which a write's outcome is unknown, and only by those."""


class RateLimited(GraphgateError):
    code = "rate_limited"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"Rate limit exceeded: retry in {retry_after:.1f} s.")


class Busy(GraphgateError):
    """Fair share: one tenant or caller already has its share of queries in flight.

    Nothing ran; the call may be retried after ``retry_after`` seconds.
    """

    code = "busy"

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"{message} Nothing ran; retry in {retry_after:.1f} s.")


class QueryError(GraphgateError):
    code = "query_error"


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

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        if retry_after is not None:
            message = f"{message}; retry in {retry_after:.1f} s"
        super().__init__(message)


def to_tool_error(error: GraphgateError) -> ToolError:
    """The single mapping from graphgate errors to MCP tool errors."""
    # Imported here so backends and settings load without the MCP stack.
    from fastmcp.exceptions import ToolError

    # Expected refusals are the client's business, not the operator's: keep
    # them out of error-level logs (the audit trail records each one).
    return ToolError(f"{error.code}: {error}", log_level=logging.DEBUG)
