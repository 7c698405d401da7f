"""Each tenant's schema as an MCP resource, ``graph://{tenant}/schema``, per caller.

One template serves every tenant; reading goes through `GraphgateMiddleware`
like a tool call (caller, rate limit, audit line, errors) and through the
same `Router.target` check, so a tenant that is unknown and one that is
someone else's get the same "not available to you" answer. Listing is per
caller: ``resources/list`` names only the caller's tenants (the middleware
adds them, `SchemaResources.listed`), and a caller who may read no
database sees neither the resources nor the template.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastmcp import FastMCP
from fastmcp.resources import Resource, TextResource
from pydantic import AnyUrl

from graphgate.auth.rights import Caller
from graphgate.middleware import current_call, resource_failures_to_middleware
from graphgate.replies import encode
from graphgate.tenancy import Router, Target

__all__ = ["SCHEMA_TEMPLATE", "SchemaResources", "schema_uri"]

SCHEMA_TEMPLATE = "graph://{tenant}/schema"
_MIME = "application/json"

SchemaOf = Callable[[Caller, Target], Awaitable[dict[str, Any]]]


def schema_uri(tenant: str) -> str:
    return SCHEMA_TEMPLATE.format(tenant=tenant)


class SchemaResources:
    """The schema resources, read through ``schema_of`` (get_schema's answer)."""

    def __init__(self, router: Router, schema_of: SchemaOf, max_bytes: int) -> None:
        self._router = router
        self._schema_of = schema_of
        self._max_bytes = max_bytes

    async def read(self, tenant: str) -> str:
        call = current_call()
        target = self._router.target(call.caller, tenant)
        call.databases.append(target.tenant)
        answer = await self._schema_of(call.caller, target)
        return encode(answer).decode()

    def listed(self, caller: Caller) -> list[Resource]:
        """What ``resources/list`` shows ``caller``: their tenants' schemas, nothing else."""
        return [
            TextResource(
                uri=AnyUrl(schema_uri(tenant)),
                name=f"{tenant} schema",
                description=f"Labels, relationship types, properties and indexes of {tenant}.",
                mime_type=_MIME,
                text="",  # never read: reads go to the template, through the rights check
            )
            for tenant in caller.rights.sorted_tenants
        ]

    def register(self, mcp: FastMCP) -> None:
        mcp.resource(
            SCHEMA_TEMPLATE,
            name="schema",
            description="A database's schema: what get_schema answers, as a resource.",
            mime_type=_MIME,
        )(resource_failures_to_middleware(self.read))
