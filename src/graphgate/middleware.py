"""What every ``tools/call`` goes through, in one FastMCP middleware.

`GraphgateMiddleware` sits around graphgate's tools, outermost in FastMCP's
chain (and is FastMCP's only other middleware: one layer per call), and for
each call:

1. resolves the caller (from the request's verified token, or the one local
   user) and spends one call of their ``rate_limit`` budget;
2. runs the rest of the chain, the tool included, with the call in progress
   (`current_call`) available to the tool: its caller, and what the tool
   reports for the audit line (query, databases, rows);
3. writes the audit line and the call metrics, whatever the outcome;
4. turns every failure into what the client sees: an unknown tool is a
   JSON-RPC error (-32602, the MCP spec); anything else an ``isError`` result
   whose text `graphgate.errors.to_tool_error` renders (``code: message``),
   argument errors as one line per problem naming the argument.

All four steps are in one scope, so nothing a call does, resolving its caller
included, can reach the client as a traceback.

FastMCP's tool runner logs any exception a tool raises at error level with a
traceback unless it is one of FastMCP's own; a refused database is the
client's business, not the operator's. So tools are registered through
`failures_to_middleware`, which hands any exception across the runner as a
`ToolFailure` (a quiet FastMCP error) for this middleware to render.

Its ``initialize`` and ``server/discover`` hooks advertise only the
capabilities graphgate offers (`graphgate.capabilities`).

Users may add their own FastMCP middleware (``mcp.add_middleware``) to the
server `graphgate.server.build_server` returns: it runs inside this one, sees
every call and its result, and its errors are rendered the same way.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastmcp.exceptions import FastMCPError, NotFoundError, PromptError, ResourceError, ToolError
from fastmcp.exceptions import ValidationError as ArgumentsRefused
from fastmcp.prompts import Prompt, PromptResult
from fastmcp.resources import Resource, ResourceResult, ResourceTemplate
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    DiscoverRequest,
    DiscoverResult,
    GetPromptRequestParams,
    InitializeRequest,
    InitializeResult,
    ListPromptsRequest,
    ListResourcesRequest,
    ListResourceTemplatesRequest,
    ReadResourceRequestParams,
)
from mcp_types import InputRequiredResult
from pydantic import ValidationError

from graphgate.auth.rights import Caller
from graphgate.capabilities import offered
from graphgate.errors import GraphgateError, InvalidArguments, to_request_error, to_tool_error
from graphgate.observability import REQUEST_ID, AuditRecord, Observability
from graphgate.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

CallerOf = Callable[[], Caller]
"""Returns the caller of the current request; built from its verified token."""

ListingOf = Callable[[Caller], list[Resource]]
"""The resources one caller may see (their tenants' schemas)."""

ToolFunction = Callable[..., Awaitable[ToolResult | InputRequiredResult]]
F = TypeVar("F", bound=ToolFunction)
_T = TypeVar("_T")

BACKEND_ERROR_CODES = frozenset({"backend_unavailable", "timeout"})
"""Tool error codes that also count in ``graphgate_backend_errors``."""


@dataclass(slots=True)
class ToolCall:
    """The ``tools/call`` in progress: who makes it, and what its audit line says.

    The tool fills in ``query`` (once its arguments are valid), the databases
    it used and the rows it returned.
    """

    tool: str
    caller: Caller
    query: str | None = None
    databases: list[str] = field(default_factory=list)
    rows: int = 0
    outcome: str | None = None
    """Set by a tool whose call ended without failing and without running (a question asked)."""


_CURRENT: ContextVar[ToolCall | None] = ContextVar("graphgate_tool_call", default=None)
"""Set by `GraphgateMiddleware` for exactly the span of one call.

Not FastMCP's request state (``Context.set_state(..., serializable=False)``):
that is keyed by an MCP session id, which a direct ``FastMCP.call_tool``
outside any request does not have, and read with an await per use.
"""


def current_call() -> ToolCall:
    """The call in progress; graphgate's tools run only inside `GraphgateMiddleware`."""
    call = _CURRENT.get()
    if call is None:
        raise RuntimeError("graphgate's tools need GraphgateMiddleware on their server")
    return call


def subject_key(caller: Caller) -> str:
    """One key per person, across their clients: rate limits and fair share count by it."""
    return f"{caller.issuer}\x1f{caller.subject}"


class ToolFailure(ToolError):
    """Any exception a graphgate tool raised, on its way to `GraphgateMiddleware`.

    A FastMCP error so that FastMCP's tool runner passes it on quietly (at
    debug level); the middleware renders ``error``. Its own text is only
    what a client would see if the middleware were missing.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__("internal_error: a tool failed unreported", log_level=logging.DEBUG)
        self.error = error


def failures_to_middleware(tool: F) -> F:
    """``tool``, raising whatever it raises as a `ToolFailure`; its signature unchanged."""

    @functools.wraps(tool)
    async def run(*args: Any, **kwargs: Any) -> ToolResult | InputRequiredResult:
        try:
            return await tool(*args, **kwargs)
        except Exception as exc:
            raise ToolFailure(exc) from exc

    return run  # type: ignore[return-value]


class ResourceFailure(ResourceError):
    """Any exception a graphgate resource raised, on its way to `GraphgateMiddleware`."""

    def __init__(self, error: Exception) -> None:
        super().__init__("internal_error: a resource failed unreported", log_level=logging.DEBUG)
        self.error = error


class PromptFailure(PromptError):
    """Any exception a graphgate prompt raised, on its way to `GraphgateMiddleware`."""

    def __init__(self, error: Exception) -> None:
        super().__init__("internal_error: a prompt failed unreported", log_level=logging.DEBUG)
        self.error = error


R = TypeVar("R", bound=Callable[..., Awaitable[Any]])


def resource_failures_to_middleware(read: R) -> R:
    """``read`` (a resource or prompt function), its failures handed to the middleware."""

    @functools.wraps(read)
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return await read(*args, **kwargs)
        except Exception as exc:
            raise ResourceFailure(exc) from exc

    return run  # type: ignore[return-value]


def prompt_failures_to_middleware(render: R) -> R:
    @functools.wraps(render)
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return await render(*args, **kwargs)
        except Exception as exc:
            raise PromptFailure(exc) from exc

    return run  # type: ignore[return-value]


def invalid_arguments(tool: str, error: ValidationError) -> InvalidArguments:
    """One problem per argument, in the tool's terms; no library help URLs or input echoes.

    The model that wrote the call reads this to fix it, so it says which
    argument and what is wrong.
    """
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        problems.append(f"{where}: {item['msg']}")
    return InvalidArguments(tool, problems)


def unknown_tool(name: str) -> MCPError:
    """The MCP spec: an unknown tool is a protocol error, not a tool result."""
    shown = name if len(name) <= 64 else name[:61] + "..."
    return MCPError(INVALID_PARAMS, f"Unknown tool: {shown!r}; tools/list names the tools offered")


def tool_failure_origin(tool: str, exc: Exception) -> Exception:
    """What actually went wrong in a tool, unwrapped from its way through FastMCP."""
    if isinstance(exc, ToolFailure):
        return exc.error
    if isinstance(exc, ArgumentsRefused) and isinstance(exc.__cause__, ValidationError):
        return invalid_arguments(tool, exc.__cause__)
    return exc


def request_failure_origin(_name: str, exc: Exception) -> Exception:
    """What actually went wrong in a resource or prompt, unwrapped from its way through FastMCP."""
    return exc.error if isinstance(exc, ResourceFailure | PromptFailure) else exc


@dataclass(frozen=True, slots=True)
class _Kind:
    """What tells a tool call from a resource read or prompt in `GraphgateMiddleware`."""

    origin: Callable[[str, Exception], Exception]
    """Unwraps what FastMCP raised into the failure to render."""
    render: Callable[[Exception, str | None], Exception]
    """The failure as the client sees it (tool result or JSON-RPC error)."""
    unknown: Callable[[str], MCPError] | None
    """For FastMCP's "not found": the protocol error to raise, with no audit line."""
    counts_backend_errors: bool
    logged_as: str
    """What a defect's log line says before the name."""


_TOOL_CALL = _Kind(
    origin=tool_failure_origin,
    render=to_tool_error,
    unknown=unknown_tool,
    counts_backend_errors=True,
    logged_as="tool ",
)
_REQUEST = _Kind(
    origin=request_failure_origin,
    render=to_request_error,
    unknown=None,
    counts_backend_errors=False,
    logged_as="",
)


class GraphgateMiddleware(Middleware):
    """Caller, rate limit, audit line, metrics and error rendering of every tool call.

    And the capabilities advertised on ``initialize`` / ``server/discover``.
    """

    def __init__(
        self,
        caller_of: CallerOf,
        limiter: RateLimiter,
        observability: Observability,
        listing_of: ListingOf | None = None,
        *,
        backend_of: Callable[[Iterable[str]], str] = lambda _tenants: "",
    ) -> None:
        self._caller_of = caller_of
        self._limiter = limiter
        self._obs = observability
        self._backend_of = backend_of
        self._listing_of = listing_of

    async def on_call_tool(
        self,
        context: MiddlewareContext[CallToolRequestParams],
        call_next: CallNext[CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        return await self._scope(context.message.name, _TOOL_CALL, lambda: call_next(context))

    # -- resources and prompts: the same caller, rights, audit and errors as tools -----------

    async def on_read_resource(
        self,
        context: MiddlewareContext[ReadResourceRequestParams],
        call_next: CallNext[ReadResourceRequestParams, ResourceResult],
    ) -> ResourceResult:
        return await self._scope("resources/read", _REQUEST, lambda: call_next(context))

    async def on_get_prompt(
        self,
        context: MiddlewareContext[GetPromptRequestParams],
        call_next: CallNext[GetPromptRequestParams, PromptResult],
    ) -> PromptResult:
        return await self._scope("prompts/get", _REQUEST, lambda: call_next(context))

    async def on_list_resources(
        self,
        context: MiddlewareContext[ListResourcesRequest],
        call_next: CallNext[ListResourcesRequest, Sequence[Resource]],
    ) -> Sequence[Resource]:
        listed = await call_next(context)
        caller = self._caller_or_none()
        if caller is None or self._listing_of is None:
            return listed
        return [*listed, *self._listing_of(caller)]

    async def on_list_resource_templates(
        self,
        context: MiddlewareContext[ListResourceTemplatesRequest],
        call_next: CallNext[ListResourceTemplatesRequest, Sequence[ResourceTemplate]],
    ) -> Sequence[ResourceTemplate]:
        listed = await call_next(context)
        return listed if self._has_tenants() else []

    async def on_list_prompts(
        self,
        context: MiddlewareContext[ListPromptsRequest],
        call_next: CallNext[ListPromptsRequest, Sequence[Prompt]],
    ) -> Sequence[Prompt]:
        listed = await call_next(context)
        return listed if self._has_tenants() else []

    def _caller_or_none(self) -> Caller | None:
        """The caller, for listings and capabilities; None when there is none to be had.

        A failure here is reported by the next call that needs the caller
        (with the audit line and error rendering a call gets), not by a list.
        """
        try:
            return self._caller_of()
        except Exception:
            return None

    def _has_tenants(self) -> bool:
        """Whether the caller may read any database: what resources and prompts are for."""
        caller = self._caller_or_none()
        return caller is not None and bool(caller.rights.sorted_tenants)

    async def _scope(self, name: str, kind: _Kind, run: Callable[[], Awaitable[_T]]) -> _T:
        """One call of ``kind``: its caller, rate limit, audit line, metrics and errors.

        Every step in one scope, so nothing a call does, resolving its caller
        included, reaches the client as a traceback.
        """
        started = time.perf_counter()
        call: ToolCall | None = None
        outcome, error_text = "ok", None
        try:
            call = ToolCall(name, self._caller_of())
            self._limiter.check(subject_key(call.caller))
            token = _CURRENT.set(call)
            try:
                result = await run()
            finally:
                _CURRENT.reset(token)
            outcome = call.outcome or outcome
            return result
        except Exception as exc:
            if kind.unknown is not None and isinstance(exc, NotFoundError):
                call = None  # not a call of anything offered: no audit line
                raise kind.unknown(name) from None
            error = kind.origin(name, exc)
            if isinstance(error, GraphgateError):
                outcome, error_text = error.code, str(error)
                if kind.counts_backend_errors and error.code in BACKEND_ERROR_CODES:
                    backend = self._backend_of(call.databases if call is not None else ())
                    self._obs.metrics.backend_errors.labels(error.code, backend).inc()
            elif isinstance(error, FastMCPError | MCPError | NotFoundError):
                # FastMCP's own or another middleware's: already in the client's terms
                # (an unknown resource or prompt, a URI FastMCP's path screening refused:
                # FastMCP answers invalid params, which is the client's business).
                outcome, error_text = "error", str(error)[:200]
                raise error from None
            else:
                outcome = "internal_error"
                logger.error("unexpected error in %s%s", kind.logged_as, name, exc_info=error)
            raise kind.render(error, REQUEST_ID.get()) from None
        finally:
            if call is not None:
                self._obs.record_call(
                    AuditRecord(
                        tool=name,
                        caller=call.caller,
                        databases=call.databases,
                        query=call.query,
                        rows=call.rows,
                        duration_ms=(time.perf_counter() - started) * 1000,
                        outcome=outcome,
                        error=error_text,
                    )
                )

    # -- capabilities ------------------------------------------------------------------------

    async def on_initialize(
        self,
        context: MiddlewareContext[InitializeRequest],
        call_next: CallNext[InitializeRequest, InitializeResult | None],
    ) -> InitializeResult | None:
        result = await call_next(context)
        if result is None or context.fastmcp_context is None:
            return result
        capabilities = await offered(
            context.fastmcp_context.fastmcp, result.capabilities, self._has_tenants()
        )
        return result.model_copy(update={"capabilities": capabilities})

    async def on_discover(
        self,
        context: MiddlewareContext[DiscoverRequest],
        call_next: CallNext[DiscoverRequest, DiscoverResult | dict[str, Any]],
    ) -> DiscoverResult | dict[str, Any]:
        result = await call_next(context)
        if not isinstance(result, DiscoverResult) or context.fastmcp_context is None:
            return result
        capabilities = await offered(
            context.fastmcp_context.fastmcp, result.capabilities, self._has_tenants()
        )
        return result.model_copy(update={"capabilities": capabilities})
