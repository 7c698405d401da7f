"""What every tool call goes through: graphgate's FastMCP middleware, as a client sees it.

Errors come back as ``isError`` results in graphgate's words (``code:
message``), unknown tools as protocol errors, defects masked behind a request
id; a user's own FastMCP middleware sees every call. Progress notifications
are checked in tests/test_tools.py and, over HTTP, in tests/test_http.py.

On a real FalkorDB server, through FastMCP's in-memory client (which speaks
to the same handlers as the HTTP transport).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.server.middleware import Middleware
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from graphgate.auth.rights import Caller
from graphgate.server import build_server
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import make_parts


def server(falkordb_service: FalkorDBService, tmp_path: Path, **settings: Any) -> FastMCP:
    catalog = {"acme": "middleware_acme", "globex": "middleware_globex"}
    options = {"tenants": catalog, "data_dir": tmp_path, **settings}
    return build_server(make_parts(falkordb_service.backend(), **options))


def text_of(result: Any) -> str:
    return result.content[0].text  # type: ignore[no-any-return]


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_argument_errors_name_the_argument(falkordb_service, tmp_path) -> None:
    async with Client(server(falkordb_service, tmp_path)) as client:
        extra = await client.call_tool(
            "run_query", {"query": "RETURN 1", "limit": 3}, raise_on_error=False
        )
        assert extra.is_error
        assert text_of(extra) == "invalid_arguments: run_query: limit: Unexpected keyword argument"

        missing = await client.call_tool("run_query", {}, raise_on_error=False)
        assert text_of(missing) == "invalid_arguments: run_query: query: Missing required argument"

        several = await client.call_tool(
            "get_schema", {"sample_size": 0, "pattern": 7}, raise_on_error=False
        )
        problems = text_of(several).removeprefix("invalid_arguments: get_schema: ").split("; ")
        assert sorted(problem.split(":")[0] for problem in problems) == ["pattern", "sample_size"]

        wrong = await client.call_tool(
            "run_query", {"query": "RETURN 1", "params": [1, 2]}, raise_on_error=False
        )
        assert wrong.is_error and text_of(wrong).startswith("invalid_arguments: run_query: params")
        for result in (extra, missing, several, wrong):
            assert "pydantic" not in text_of(result) and "http" not in text_of(result)
            assert "[1, 2]" not in text_of(result)  # the input is not echoed

        # An unknown tool is a protocol error (MCP spec), not a tool result.
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("drop_everything", {}, raise_on_error=False)
        assert unknown.value.code == INVALID_PARAMS and "Unknown tool" in unknown.value.message
        with pytest.raises(MCPError) as long_name:
            await client.call_tool("x" * 10_000, {}, raise_on_error=False)
        assert long_name.value.code == INVALID_PARAMS and len(long_name.value.message) < 200

        # And the server keeps serving.
        fine = await client.call_tool("list_databases", {})
        assert [db["name"] for db in json.loads(text_of(fine))] == ["acme", "globex"]


async def test_every_call_of_a_tool_is_audited(falkordb_service, tmp_path) -> None:
    audit = tmp_path / "audit.jsonl"
    mcp = server(
        falkordb_service, tmp_path, audit_log=str(audit), audit_query_text=True, allow_writes=True
    )
    async with Client(mcp) as client:
        await client.call_tool("run_write_query", {"query": "MERGE (s:Seed) RETURN 1"})
        await client.call_tool(
            "run_query", {"query": "RETURN 1", "database": "nope"}, raise_on_error=False
        )
        await client.call_tool("run_query", {"query": 5}, raise_on_error=False)
        with pytest.raises(MCPError):
            await client.call_tool("no_such_tool", {})
    ok, refused, invalid = audit_lines(audit)
    assert (ok["tool"], ok["outcome"], ok["databases"], ok["rows"]) == (
        "run_write_query",
        "ok",
        ["acme"],
        1,
    )
    assert ok["query"] == "MERGE (s:Seed) RETURN 1" and ok["subject"] == "local"
    assert refused["outcome"] == "database_not_permitted"
    assert "not available to you" in refused["error"]
    assert invalid["outcome"] == "invalid_arguments" and "query" not in invalid


async def test_calls_outside_any_request_take_the_same_path(falkordb_service, tmp_path) -> None:
    """``FastMCP.call_tool`` (embedding graphgate) answers what a client is answered."""
    mcp = server(falkordb_service, tmp_path)
    async with Client(mcp) as client:  # the server is running: its backends are open
        over_mcp = await client.call_tool("list_databases", {})
        direct = await mcp.call_tool("list_databases", {})
    assert json.loads(text_of(direct)) == json.loads(text_of(over_mcp))
    assert over_mcp.structured_content == {"result": json.loads(text_of(over_mcp))}
    assert not over_mcp.is_error


async def test_a_users_middleware_sees_every_call(falkordb_service, tmp_path) -> None:
    seen: list[tuple[str, bool]] = []

    class Watcher(Middleware):
        async def on_call_tool(self, context: Any, call_next: Any) -> Any:
            try:
                result = await call_next(context)
            except Exception:
                seen.append((context.message.name, False))
                raise
            seen.append((context.message.name, True))
            return result

    mcp = server(falkordb_service, tmp_path)
    mcp.add_middleware(Watcher())
    async with Client(mcp) as client:
        await client.call_tool("list_databases", {})
        refused = await client.call_tool(
            "run_query", {"query": "RETURN 1", "database": "nope"}, raise_on_error=False
        )
    assert seen == [("list_databases", True), ("run_query", False)]
    # The user's middleware does not change how graphgate tells the error.
    assert text_of(refused).startswith("database_not_permitted: ")


async def test_a_users_middleware_failing_is_masked_like_a_defect(
    falkordb_service, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Middleware):
        async def on_call_tool(self, context: Any, call_next: Any) -> Any:
            raise RuntimeError("secret internals")

    mcp = server(falkordb_service, tmp_path)
    mcp.add_middleware(Broken())
    with caplog.at_level(logging.ERROR, logger="graphgate.middleware"):
        async with Client(mcp) as client:
            result = await client.call_tool("list_databases", {}, raise_on_error=False)
    assert text_of(result).startswith("internal_error: graphgate hit an unexpected error")
    assert "secret internals" not in text_of(result)
    assert any("secret internals" in str(r.exc_info) for r in caplog.records)


async def test_a_defect_resolving_the_caller_is_masked(falkordb_service, tmp_path) -> None:
    parts = make_parts(
        falkordb_service.backend(), tenants={"acme": "middleware_acme"}, data_dir=tmp_path
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


async def test_a_call_without_a_token_is_told_so_by_every_tool(
    falkordb_service, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sign-in on but no bearer token in the request (a transport without HTTP).

    Every tool answers ``invalid_token`` as a tool error; nothing is logged as a
    defect.
    """
    mcp = server(falkordb_service, tmp_path, auth="dev", allow_writes=True)
    with caplog.at_level(logging.WARNING):
        async with Client(mcp) as client:
            for tool in await client.list_tools():
                arguments = (
                    {"query": "RETURN 1"}
                    if "query" in tool.input_schema.get("required", [])
                    else {"name": "acme"}
                    if tool.name == "use_database"
                    else {}
                )
                result = await client.call_tool(tool.name, arguments, raise_on_error=False)
                assert result.is_error, tool.name
                assert text_of(result) == (
                    "invalid_token: no verified access token for this call"
                ), tool.name
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("rate_limit", [2])
async def test_the_rate_limit_is_a_tool_error(falkordb_service, tmp_path, rate_limit) -> None:
    async with Client(server(falkordb_service, tmp_path, rate_limit=rate_limit)) as client:
        for _ in range(rate_limit):
            assert not (await client.call_tool("list_databases", {})).is_error
        limited = await client.call_tool("list_databases", {}, raise_on_error=False)
    assert limited.is_error and text_of(limited).startswith("rate_limited: Rate limit exceeded")


async def test_prompts_and_resources_are_advertised_with_something_behind_them(
    falkordb_service, tmp_path
) -> None:
    """A caller who may read a database has its schema resource and the prompts; a
    caller who may read none is listed neither, so neither is advertised to them."""
    async with Client(server(falkordb_service, tmp_path)) as client:
        offered = client.server_capabilities
        assert offered is not None
        assert offered.tools is not None
        assert offered.prompts is not None and offered.resources is not None
        assert [str(r.uri) for r in await client.list_resources()] == [
            "graph://acme/schema",
            "graph://globex/schema",
        ]
    nobody = make_parts(falkordb_service.backend(), tenants={}, data_dir=tmp_path)
    async with Client(build_server(nobody)) as client:
        offered = client.server_capabilities
        assert offered is not None
        assert offered.tools is not None
        assert offered.prompts is None and offered.resources is None
        assert await client.list_resources() == []
        assert await client.list_resource_templates() == []
        assert await client.list_prompts() == []
