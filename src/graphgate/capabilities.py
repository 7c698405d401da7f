"""The server capabilities graphgate advertises: only what it offers.

FastMCP registers handlers for prompts and resources on every server, and
the SDK derives the advertised capabilities from the handlers, so a server
with tools only still says it has prompts and resources. A client that
believes it then lists them (one more request per connection, an empty
answer) or shows an empty panel to its user. `graphgate.middleware`
passes the ``initialize`` answer (session protocol) and the
``server/discover`` answer (2026-07-28) through `offered`, which takes
``prompts`` and ``resources`` out while the server has none to list.

Resources (each tenant's schema) and prompts (about a tenant) are per
caller: a caller who may read no database is listed none, so neither is
advertised to them (``for_caller`` False). graphgate always registers its
schema template and prompts, so every other caller is offered both.
"""

from __future__ import annotations

from fastmcp import FastMCP
from mcp.types import ServerCapabilities


async def offered(
    server: FastMCP, capabilities: ServerCapabilities, for_caller: bool = True
) -> ServerCapabilities:
    """``capabilities`` without ``prompts`` / ``resources`` while ``server`` has none
    (or ``for_caller`` is False: the caller may read no database)."""
    changes: dict[str, None] = {}
    if capabilities.prompts is not None and not (
        for_caller and await server.list_prompts(run_middleware=False)
    ):
        changes["prompts"] = None
    if capabilities.resources is not None and not (
        for_caller
        and (
            await server.list_resources(run_middleware=False)
            or await server.list_resource_templates(run_middleware=False)
        )
    ):
        changes["resources"] = None
    return capabilities.model_copy(update=changes) if changes else capabilities
