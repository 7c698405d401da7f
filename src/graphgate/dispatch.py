"""``tools/call`` served straight from graphgate's tools.

FastMCP's own ``tools/call`` path builds a Context, runs its middleware chain,
resolves the tool through its providers, opens telemetry spans and rebuilds the
tool's argument validator on every call: about a fifth of a point read's server
CPU (BENCHMARKS.md, "Direct dispatch"). graphgate's tools need none of it: they
are fixed at start-up, take plain JSON arguments and turn their own errors into
tool errors. So the low-level server's ``tools/call`` handler is pointed here:
one pydantic validator per tool, built once, then the tool itself.

What clients see does not change: ``tools/list`` (names, schemas, annotations)
stays FastMCP's, the same validator semantics apply (pydantic over the tool's
signature, unknown arguments refused), and errors come back as
``isError`` results with the same text. A tool reports progress with
`report_progress`, which sends MCP progress notifications when the client
asked for them (a ``progressToken``). Unknown names go to FastMCP's handler.

What the direct path skips is FastMCP's tool-call middleware: graphgate adds
none (rights are checked in the tools), and `DirectToolCalls.install` refuses
to start if any middleware that could act on a tool call is registered, so a
later addition cannot be bypassed silently.

Before any of this, on every ``tools/call``, the SDK compares ``Mcp-Param-*``
headers with the arguments a tool's input schema marks ``x-mcp-header``, and
finds those marks by walking the whole schema twice: the largest single
self-time entry of a point read. `schemas_with_header_marks` hands the SDK
only schemas that carry such a mark, so for graphgate's tools (none do) the
check is skipped with the same outcome it would reach.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools import ToolResult
from fastmcp.utilities.types import get_cached_typeadapter
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import find_invalid_x_mcp_header, x_mcp_header_map
from mcp.types import INVALID_PARAMS, CallToolRequestParams, CallToolResult, TextContent
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from graphgate.observability import REQUEST_ID

logger = logging.getLogger(__name__)

ToolFunction = Callable[..., Awaitable[ToolResult]]
Reporter = Callable[[float, float | None, str | None], Awaitable[None]]

_PROGRESS: ContextVar[Reporter | None] = ContextVar("graphgate_progress", default=None)


async def report_progress(progress: float, total: float | None, message: str | None) -> None:
    """Progress of the tool call in progress; nothing when its client asked for none."""
    reporter = _PROGRESS.get()
    if reporter is not None:
        await reporter(progress, total, message)


def _reporter(ctx: ServerRequestContext[Any]) -> Reporter | None:
    token = ctx.meta.get("progress_token") if ctx.meta else None
    if token is None:
        return None

    async def report(progress: float, total: float | None, message: str | None) -> None:
        await ctx.session.send_progress_notification(
            progress_token=token,
            progress=progress,
            total=total,
            message=message,
            related_request_id=None if ctx.request_id is None else str(ctx.request_id),
        )

    return report


def invalid_arguments(tool: str, error: PydanticValidationError) -> str:
    """One line per problem, naming the argument; no library help URLs or input echoes.

    The model that wrote the call reads this to fix it, so it says which
    argument and what is wrong, in the tool's own words.
    """
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        problems.append(f"{where}: {item['msg']}")
    return f"invalid_arguments: {tool}: " + "; ".join(problems)


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


class DirectToolCalls:
    """Runs graphgate's tools without FastMCP's per-call machinery.

    ``tools`` maps each tool name to the coroutine function FastMCP registered
    under it; any other name is an unknown tool, a protocol error.
    """

    def __init__(self, tools: Mapping[str, ToolFunction]) -> None:
        # A TypeAdapter over a function validates a dict of keyword arguments
        # against its signature and returns the call. FastMCP's helper resolves
        # the signature's forward references the way FastMCP's tools do.
        self._validators: dict[str, TypeAdapter[Any]] = {
            name: get_cached_typeadapter(function) for name, function in tools.items()
        }

    @classmethod
    def install(cls, mcp: FastMCP, tools: Mapping[str, ToolFunction]) -> DirectToolCalls:
        """Take over ``tools/call`` on ``mcp``'s low-level server for ``tools``."""
        from fastmcp.server.middleware.dereference import DereferenceRefsMiddleware

        # FastMCP's own default only rewrites listed schemas; anything else could
        # act on tool calls, which the direct path would skip.
        acting = [m for m in mcp.middleware if not isinstance(m, DereferenceRefsMiddleware)]
        if acting:
            names = ", ".join(type(m).__name__ for m in acting)
            raise RuntimeError(f"direct tool calls would bypass FastMCP middleware: {names}")
        server = mcp._mcp_server
        direct = cls(tools)
        server.add_request_handler("tools/call", CallToolRequestParams, direct.handle)
        if server.get_tool_input_schema is not None:
            server.get_tool_input_schema = schemas_with_header_marks(server.get_tool_input_schema)
        return direct

    def serves(self, name: str) -> bool:
        return name in self._validators

    async def handle(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult | Any:
        validator = self._validators.get(params.name)
        if validator is None:
            # The MCP spec: an unknown tool is a protocol error, not a tool result.
            shown = params.name if len(params.name) <= 64 else params.name[:61] + "..."
            raise MCPError(
                INVALID_PARAMS, f"Unknown tool: {shown!r}; tools/list names the tools offered"
            )
        try:
            call = validator.validate_python(params.arguments or {})
        except PydanticValidationError as exc:
            logger.info("invalid arguments for %s: %d error(s)", params.name, exc.error_count())
            return _error(invalid_arguments(params.name, exc))
        reporting = _PROGRESS.set(_reporter(ctx))
        try:
            result = await call
        except ToolError as exc:
            return _error(str(exc))
        except Exception:
            # The tools map their own errors; this is a defect, so it is masked
            # like FastMCP's mask_error_details would, and logged in full.
            logger.exception("unexpected error in tool %s", params.name)
            return _error(
                f"internal_error: graphgate hit an unexpected error; request id "
                f"{REQUEST_ID.get() or 'n/a'} is in the server log"
            )
        finally:
            _PROGRESS.reset(reporting)
        return _as_call_result(result)


SchemaLookup = Callable[[str], Mapping[str, Any] | None]


def schemas_with_header_marks(lookup: SchemaLookup) -> SchemaLookup:
    """``lookup``, answering None for a schema no ``Mcp-Param-*`` header can be checked against.

    The SDK validates headers only against valid ``x-mcp-header`` marks; a
    schema with none (or with an invalid one, which the SDK ignores whole)
    passes every request, and None ("no schema") passes it too, without the
    walk. The verdict is kept per tool for as long as the lookup hands out
    the same schema object.
    """
    verdicts: dict[str, tuple[Mapping[str, Any], bool]] = {}

    def schema_to_check(name: str) -> Mapping[str, Any] | None:
        schema = lookup(name)
        if schema is None:
            return None
        known = verdicts.get(name)
        if known is None or known[0] is not schema:
            marked = find_invalid_x_mcp_header(schema) is None and bool(x_mcp_header_map(schema))
            known = verdicts[name] = (schema, marked)
        return schema if known[1] else None

    return schema_to_check


def _as_call_result(result: ToolResult) -> CallToolResult:
    """The wire shape FastMCP's own handler gives the same ToolResult."""
    shaped = result.to_mcp_result()
    if isinstance(shaped, CallToolResult):
        return shaped
    if isinstance(shaped, tuple):
        content, structured = shaped
        return CallToolResult(content=content, structured_content=structured)
    return CallToolResult(content=shaped)
