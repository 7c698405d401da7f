"""The server capabilities graphgate advertises: only what it offers.

FastMCP registers handlers for prompts and resources on every server, and
the SDK derives the advertised capabilities from the handlers, so a server
with tools only still says it has prompts and resources. A client that
believes it then lists them (one more request per connection, an empty
answer) or shows an empty panel to its user. `OnlyWhatIsOffered` takes
``prompts`` and ``resources`` out of the ``initialize`` answer (session
protocol) and the ``server/discover`` answer (2026-07-28) while the server
has none to list.
"""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from mcp.types import DiscoverRequest, DiscoverResult, InitializeRequest, InitializeResult
from mcp.types import ServerCapabilities as Capabilities


class OnlyWhatIsOffered(Middleware):
    """Advertises prompts and resources only when the server has some."""

    async def on_initialize(
        self,
        context: MiddlewareContext[InitializeRequest],
        call_next: CallNext[InitializeRequest, InitializeResult | None],
    ) -> InitializeResult | None:
        result = await call_next(context)
        if result is None or context.fastmcp_context is None:
            return result
        offered = await _offered(context.fastmcp_context.fastmcp, result.capabilities)
        return result.model_copy(update={"capabilities": offered})

    async def on_discover(
        self,
        context: MiddlewareContext[DiscoverRequest],
        call_next: CallNext[DiscoverRequest, DiscoverResult | dict[str, Any]],
    ) -> DiscoverResult | dict[str, Any]:
        result = await call_next(context)
        if not isinstance(result, DiscoverResult) or context.fastmcp_context is None:
            return result
        offered = await _offered(context.fastmcp_context.fastmcp, result.capabilities)
        return result.model_copy(update={"capabilities": offered})


async def _offered(server: FastMCP, capabilities: Capabilities) -> Capabilities:
    changes: dict[str, None] = {}
    if capabilities.prompts is not None and not await server.list_prompts(run_middleware=False):
        changes["prompts"] = None
    if capabilities.resources is not None and not (
        await server.list_resources(run_middleware=False)
        or await server.list_resource_templates(run_middleware=False)
    ):
        changes["resources"] = None
    return capabilities.model_copy(update=changes) if changes else capabilities
