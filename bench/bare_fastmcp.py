"""The framework's floor: a bare FastMCP server with one tool, no auth, no graphgate.

    BARE_FALKORDB_PASSWORD=... python bench/bare_fastmcp.py --port 8100 --falkordb 127.0.0.1:6379

One tool, ``run_query(query, params, database)``, runs the query with the
falkordb async client (``ro_query``) and returns the rows as JSON text. It
is served like graphgate: streamable HTTP at ``/mcp``, JSON responses,
uvicorn with httptools on uvloop, no access log, FastMCP's telemetry in
``propagation_only`` (graphgate's default, ``otel_spans = false``).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import fastmcp
import uvicorn
from fastmcp import FastMCP
from redis.asyncio import BlockingConnectionPool


def build(host: str, port: int, password: str | None) -> Any:
    from falkordb.asyncio import FalkorDB

    pool = BlockingConnectionPool(
        host=host,
        port=port,
        password=password,
        max_connections=64,
        timeout=None,
        decode_responses=True,
    )
    db = FalkorDB(connection_pool=pool)
    graphs: dict[str, Any] = {}
    mcp: FastMCP = FastMCP("bare")

    @mcp.tool(output_schema=None)
    async def run_query(
        query: str, params: dict[str, Any] | None = None, database: str = "t00"
    ) -> str:
        """Run a read-only query and return its columns and rows as JSON."""
        graph = graphs.get(database)
        if graph is None:
            graph = graphs[database] = db.select_graph(database)
        result = await graph.ro_query(query, params)
        columns = [column[1] for column in result.header]
        return json.dumps({"columns": columns, "rows": result.result_set})

    return mcp.http_app(path="/mcp", json_response=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--falkordb", required=True, help="host:port")
    args = parser.parse_args()
    # As `graphgate serve` sets it (otel_spans off): FastMCP creates no spans of its own.
    fastmcp.settings.telemetry_mode = "propagation_only"
    host, _, port = args.falkordb.rpartition(":")
    app = build(host, int(port), os.environ.get("BARE_FALKORDB_PASSWORD") or None)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        # graphgate's public settings: uvloop (graphgate serve runs on it), httptools.
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
