"""The whole tool surface and the isolation suite on a real Neo4j, through MCP.

Neo4j Community has one user database (``neo4j``), so tenants map to it or to
databases that do not exist: routing is covered by the database-selection path
(which database each call names) and by the refusal paths.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from graphgate.server import build_server
from tests.services.graphgate import make_parts
from tests.services.neo4j import make_backend

pytestmark = pytest.mark.neo4j


def client_for(neo4j_service: Any, tmp_path: Path, **settings: Any) -> Client[Any]:
    catalog = {"acme": "neo4j", "ghost": "ghost" + uuid.uuid4().hex[:6], "system_peek": "system"}
    parts = make_parts(make_backend(neo4j_service), tenants=catalog, data_dir=tmp_path, **settings)
    return Client(build_server(parts))


async def answer(client: Client[Any], tool: str, **arguments: Any) -> tuple[bool, Any]:
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    text = result.content[0].text  # type: ignore[union-attr]
    return result.is_error, (text if result.is_error else json.loads(text))


async def test_tools_on_neo4j(neo4j_service: Any, tmp_path: Path) -> None:
    label = f"T_{uuid.uuid4().hex[:10]}"
    async with client_for(neo4j_service, tmp_path, allow_writes=True) as client:
        failed, created = await answer(
            client,
            "run_write_query",
            database="acme",
            query=f"CREATE (a:{label} {{name: $n, at: date('2024-05-01')}})"
            f"-[:KNOWS {{w: 1.5}}]->(:{label} {{name: 'b'}}) RETURN a",
            params={"n": "a"},
        )
        assert not failed, created
        assert created["stats"]["nodes_created"] == 2
        assert created["rows"][0][0]["labels"] == [label]
        assert created["rows"][0][0]["properties"]["at"] == "2024-05-01"

        failed, read = await answer(
            client,
            "run_query",
            query=f"MATCH p = (:{label})-[r:KNOWS]->() RETURN p, r.w",
        )
        assert not failed, read
        path, weight = read["rows"][0]
        assert [n["properties"]["name"] for n in path["nodes"]] == ["a", "b"]
        assert path["relationships"][0]["type"] == "KNOWS" and weight == 1.5

        failed, schema = await answer(client, "get_schema", pattern=label)
        assert not failed, schema
        assert [entry["label"] for entry in schema["node_labels"]] == [label]

        failed, message = await answer(client, "run_query", query=f"CREATE (:{label})")
        assert failed and "read_only" in message

        failed, message = await answer(client, "run_query", query="MATCH (n RETURN n")
        assert failed and message.startswith("query_error")

        failed, listing = await answer(client, "list_databases")
        assert [d["name"] for d in listing] == ["acme", "ghost", "system_peek"]
        failed, chosen = await answer(client, "use_database", name="ghost")
        assert chosen == {"current": "ghost"}
        failed, message = await answer(client, "run_query", query="RETURN 1")
        # Routed to the missing database: a clear error, without its physical name.
        assert failed and "does not exist on the server" in message
        failed, across = await answer(
            client, "query_databases", query="RETURN 1 AS one", databases=["acme", "ghost"]
        )
        assert across["results"]["acme"]["rows"] == [[1]]
        assert "error" in across["results"]["ghost"]

        await answer(
            client, "run_write_query", database="acme", query=f"MATCH (n:{label}) DETACH DELETE n"
        )


@pytest.mark.parametrize(
    "query",
    [
        "USE system SHOW DATABASES",
        "use SYSTEM show users",
        "SHOW DATABASES",
        "CREATE DATABASE evil",
        "CREATE USER mallory SET PASSWORD 'x'",
        "/* comment */ USE system CALL dbms.components() YIELD name RETURN name",
        "CALL dbms.components() YIELD name RETURN name",
        "MATCH (n) RETURN n; MATCH (m) RETURN m",
        "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row",
        "CALL { USE system SHOW DATABASES YIELD name RETURN name } RETURN name",
        "ＵＳＥ system SHOW DATABASES",
    ],
)
async def test_query_text_cannot_leave_the_tenant(
    neo4j_service: Any, tmp_path: Path, query: str
) -> None:
    async with client_for(neo4j_service, tmp_path, allow_writes=True) as client:
        for tool in ("run_query", "run_write_query"):
            failed, message = await answer(client, tool, query=query, database="acme")
            assert failed, (tool, query, message)
            assert "Traceback" not in message


async def test_system_database_is_not_a_tenant_backdoor(neo4j_service: Any, tmp_path: Path) -> None:
    """Even catalogued, the system database answers no administration through a read."""
    async with client_for(neo4j_service, tmp_path) as client:
        failed, message = await answer(
            client, "run_query", database="system_peek", query="SHOW USERS"
        )
        assert failed, message
