"""Direct ``tools/call`` dispatch answers exactly what FastMCP's own path would.

Progress notifications through it are checked in tests/test_tools.py and, over
HTTP, in tests/test_http.py.

On a real FalkorDB server, through FastMCP's in-memory client (which speaks
to the same low-level handlers as the HTTP transport).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from graphgate.auth.rights import Caller
from graphgate.dispatch import DirectToolCalls, schemas_with_header_marks
from graphgate.server import build_server
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import make_parts


def server(falkordb_service: FalkorDBService, tmp_path: Path, **settings: Any) -> FastMCP:
    catalog = {"acme": "dispatch_acme", "globex": "dispatch_globex"}
    parts = make_parts(falkordb_service.backend(), tenants=catalog, data_dir=tmp_path, **settings)
    return build_server(parts)


def text_of(result: Any) -> str:
    return result.content[0].text  # type: ignore[no-any-return]


async def test_context_free_tools_are_served_directly(falkordb_service, tmp_path) -> None:
    mcp = server(falkordb_service, tmp_path, allow_writes=True)
    entry = mcp._mcp_server.get_request_handler("tools/call")
    assert entry is not None
    direct = getattr(entry.handler, "__self__", None)
    assert isinstance(direct, DirectToolCalls)
    for name in (
        "list_databases",
        "use_database",
        "run_query",
        "run_write_query",
        "get_schema",
        "query_databases",
    ):
        assert direct.serves(name)
    assert not direct.serves("drop_everything")


async def test_graphgate_tools_skip_the_sdks_header_walk(falkordb_service, tmp_path) -> None:
    """None of graphgate's tools marks an argument ``x-mcp-header``: nothing to compare."""
    mcp = server(falkordb_service, tmp_path, allow_writes=True)
    lookup = mcp._mcp_server.get_tool_input_schema
    assert lookup is not None
    for name in ("run_query", "run_write_query", "query_databases", "use_database"):
        assert mcp._get_tool_input_schema(name) is not None  # FastMCP knows the schema ...
        assert lookup(name) is None  # ... and the SDK is told there is nothing to check


def test_header_checks_keep_every_schema_that_marks_a_header() -> None:
    marked: dict[str, Any] = {
        "type": "object",
        "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
    }
    nested: dict[str, Any] = {
        "type": "object",
        "properties": {
            "where": {
                "type": "object",
                "properties": {"zone": {"type": "integer", "x-mcp-header": "Zone"}},
            }
        },
    }
    plain: dict[str, Any] = {"type": "object", "properties": {"query": {"type": "string"}}}
    # The SDK ignores a schema with an invalid mark (here on an object property) whole.
    invalid: dict[str, Any] = {
        "type": "object",
        "properties": {"deep": {"type": "object", "x-mcp-header": "Deep"}},
    }
    schemas: dict[str, Any] = {
        "marked": marked,
        "nested": nested,
        "plain": plain,
        "invalid": invalid,
    }
    check = schemas_with_header_marks(schemas.get)
    assert check("marked") is marked
    assert check("nested") is nested
    assert check("plain") is None
    assert check("invalid") is None
    assert check("unknown") is None
    # A listing that changes a tool's schema is judged again.
    schemas["plain"] = remarked = {**marked}
    assert check("plain") is remarked
    schemas["marked"] = {**plain}
    assert check("marked") is None


def test_tool_call_middleware_cannot_be_bypassed_silently() -> None:
    from fastmcp.server.middleware import Middleware

    mcp = FastMCP("probe")
    mcp.add_middleware(Middleware())

    async def ping() -> str:
        return "pong"

    with pytest.raises(RuntimeError, match="bypass FastMCP middleware: Middleware"):
        DirectToolCalls.install(mcp, {"ping": ping})  # type: ignore[dict-item]


async def test_direct_answers_equal_fastmcps_own(falkordb_service, tmp_path) -> None:
    mcp = server(falkordb_service, tmp_path)
    async with Client(mcp) as client:
        direct = await client.call_tool("list_databases", {})
        chosen = await client.call_tool("use_database", {"name": "globex"})
    through_fastmcp = await mcp.call_tool("list_databases", {})
    assert json.loads(text_of(direct)) == json.loads(text_of(through_fastmcp))
    assert json.loads(text_of(chosen)) == {"current": "globex"}
    assert direct.structured_content is None and not direct.is_error


async def test_argument_errors_are_tool_errors(falkordb_service, tmp_path) -> None:
    async with Client(server(falkordb_service, tmp_path)) as client:
        extra = await client.call_tool(
            "run_query", {"query": "RETURN 1", "limit": 3}, raise_on_error=False
        )
        assert extra.is_error and "Unexpected keyword argument" in text_of(extra)
        assert "limit" in text_of(extra)

        missing = await client.call_tool("run_query", {}, raise_on_error=False)
        assert missing.is_error and "Missing required argument" in text_of(missing)

        wrong = await client.call_tool(
            "run_query", {"query": "RETURN 1", "params": [1, 2]}, raise_on_error=False
        )
        assert wrong.is_error and "params" in text_of(wrong)

        # An unknown tool is a protocol error (MCP spec), not a tool result.
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("drop_everything", {}, raise_on_error=False)
        assert unknown.value.code == INVALID_PARAMS and "Unknown tool" in unknown.value.message

        # And the server keeps serving.
        fine = await client.call_tool("list_databases", {})
        assert [db["name"] for db in json.loads(text_of(fine))] == ["acme", "globex"]


async def test_a_defect_outside_the_tools_error_mapping_is_masked(
    falkordb_service, tmp_path
) -> None:
    parts = make_parts(
        falkordb_service.backend(), tenants={"acme": "dispatch_acme"}, data_dir=tmp_path
    )

    def broken_caller() -> Caller:
        raise RuntimeError("secret internals")

    parts.caller_of = broken_caller
    async with Client(build_server(parts)) as client:
        result = await client.call_tool("list_databases", {}, raise_on_error=False)
    assert result.is_error
    assert text_of(result).startswith("internal_error: graphgate hit an unexpected error")
    assert "secret internals" not in text_of(result)
    assert "Traceback" not in text_of(result)
