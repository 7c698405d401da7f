"""The upstream Memgraph MCP server, ``mcp-memgraph`` 0.4.1, as a point of comparison.

It is installed from PyPI into its own virtual environment,
``.cache/bench/mcp-memgraph`` (never into graphgate's), and run as shipped:

* ``mcp-memgraph`` console script, ``MCP_TRANSPORT=streamable-http``;
* multi-tenant mode: ``MCP_AUTH_ENABLED=true`` with ``MCP_AUTH_ISSUER``,
  ``MCP_AUTH_AUDIENCE`` and ``MCP_AUTH_JWKS_URL`` naming graphgate's dev issuer,
  so the very tokens graphgate gets are accepted; ``MCP_TENANT_CATALOG`` lists
  the tenants, each of which must be a database of the Bolt server of the same
  name (its ``TenantClientRegistry`` connects with ``database=<tenant>``);
* ``MEMGRAPH_URL``/``MEMGRAPH_USER``/``MEMGRAPH_PASSWORD``: the Bolt server.

Against Neo4j Community only the database ``neo4j`` exists (more databases
need Enterprise), so the catalog is the single tenant ``neo4j`` and the
tokens name it; graphgate gets the same catalog (``{"neo4j": "neo4j"}``).
Its ``run_cypher_query`` takes no parameters, so the point read's value is
written into the query text, for both servers.

Neo4j comes from ``BENCH_NEO4J_URL`` (+ ``BENCH_NEO4J_USER``,
``BENCH_NEO4J_PASSWORD``) naming a running server, else the project's own
``scripts/neo4j_server.py`` starts Neo4j Community from the jars Maven keeps in
``~/.m2`` (the harness the tests use).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import REPO

MCP_MEMGRAPH_VERSION = "0.4.1"
VENV = REPO / ".cache" / "bench" / "mcp-memgraph"

# Each tool of mcp-memgraph 0.4.1 with arguments that fit the benchmark's graph.
TOOL_PROBES: dict[str, dict[str, Any]] = {
    "list_databases": {},
    "use_database": {"name": "neo4j"},
    "run_cypher_query": {"query": "MATCH (p:Person) RETURN count(p) AS n"},
    "search_schema": {"pattern": "person"},
    "get_node_schema": {"node_labels": ["Person"]},
    "get_relationship_schema": {
        "relationship_type": "KNOWS",
        "start_node_labels": ["Person"],
        "end_node_labels": ["Person"],
    },
    "get_enum_schema": {"enum_name": "Status"},
}


def ensure_venv() -> Path:
    """The ``mcp-memgraph`` executable, installing it into its own venv on first use."""
    executable = VENV / "bin" / "mcp-memgraph"
    if executable.exists() and _installed_version() == MCP_MEMGRAPH_VERSION:
        return executable
    VENV.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(VENV / "bin" / "pip"), "install", "-q", f"mcp-memgraph=={MCP_MEMGRAPH_VERSION}"],
        check=True,
        timeout=900,
    )
    return executable


def _installed_version() -> str | None:
    try:
        out = subprocess.run(
            [
                str(VENV / "bin" / "python"),
                "-c",
                "import importlib.metadata as m;print(m.version('mcp-memgraph'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@dataclass(frozen=True)
class Bolt:
    url: str
    user: str
    password: str
    source: str
    pid: int | None = None


@contextlib.asynccontextmanager
async def neo4j_server() -> AsyncIterator[Bolt | str]:
    """A running Neo4j (yields `Bolt`), or the reason there is none (yields a str)."""
    url = os.environ.get("BENCH_NEO4J_URL")
    if url:
        yield Bolt(
            url,
            os.environ.get("BENCH_NEO4J_USER", "neo4j"),
            os.environ.get("BENCH_NEO4J_PASSWORD", ""),
            "BENCH_NEO4J_URL",
        )
        return
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        harness = importlib.import_module("scripts.neo4j_server")
    except ImportError as exc:
        yield f"no Neo4j: BENCH_NEO4J_URL is not set and scripts/neo4j_server.py is absent ({exc})"
        return
    manager = harness.running_neo4j()
    try:
        instance = await asyncio.to_thread(manager.__enter__)
    except (harness.Neo4jUnavailable, OSError) as exc:
        yield f"no Neo4j: scripts/neo4j_server.py could not start it ({exc})"
        return
    try:
        yield Bolt(
            instance.uri,
            instance.user,
            instance.password,
            f"scripts/neo4j_server.py running_neo4j(), Neo4j Community {instance.version}",
            instance.pid,
        )
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


async def seed_neo4j(bolt: Bolt, persons: int) -> None:
    """The benchmark's Person graph in the ``neo4j`` database (replacing any earlier one)."""
    from neo4j import AsyncGraphDatabase

    async with AsyncGraphDatabase.driver(bolt.url, auth=(bolt.user, bolt.password)) as driver:
        await driver.execute_query("MATCH (p:Person) DETACH DELETE p", database_="neo4j")
        await driver.execute_query(
            "CREATE INDEX bench_person_pid IF NOT EXISTS FOR (p:Person) ON (p.pid)",
            database_="neo4j",
        )
        await driver.execute_query(
            "UNWIND range(1, $n) AS i CREATE (:Person {pid: i, name: 'person ' + toString(i), "
            "email: 'p' + toString(i) + '@example.com', age: 20 + i % 50, city: 'c' + "
            "toString(i % 17)})",
            {"n": persons},
            database_="neo4j",
        )
        await driver.execute_query("CALL db.awaitIndexes(60)", database_="neo4j")


def memgraph_env(
    bolt: Bolt, port: int, issuer: str, audience: str, jwks_url: str
) -> dict[str, str]:
    return {
        "MCP_TRANSPORT": "streamable-http",
        "MCP_HOST": "127.0.0.1",
        "MCP_PORT": str(port),
        "MCP_READ_ONLY": "true",
        "MCP_LOG_LEVEL": "WARNING",
        "MEMGRAPH_URL": bolt.url,
        "MEMGRAPH_USER": bolt.user,
        "MEMGRAPH_PASSWORD": bolt.password,
        "MEMGRAPH_DATABASE": "neo4j",
        "MCP_AUTH_ENABLED": "true",
        "MCP_AUTH_ISSUER": issuer,
        "MCP_AUTH_AUDIENCE": audience,
        "MCP_AUTH_JWKS_URL": jwks_url,
        "MCP_TENANT_CATALOG": "neo4j",
    }


async def probe_tools(call: Any) -> list[dict[str, Any]]:
    """Call every tool once; what each answered (ok, or the error it gave)."""
    report = []
    for tool, arguments in TOOL_PROBES.items():
        try:
            result = await asyncio.wait_for(call(tool, arguments), 60)
            text = _text(result)
            failed = bool(result.is_error) or _looks_like_error(text)
            report.append({"tool": tool, "ok": not failed, "answer": text[:240]})
        except Exception as exc:
            report.append(
                {"tool": tool, "ok": False, "answer": f"{type(exc).__name__}: {exc}"[:240]}
            )
    return report


def _text(result: Any) -> str:
    content = getattr(result, "content", None) or []
    return " ".join(str(getattr(item, "text", "")) for item in content)


def _looks_like_error(text: str) -> bool:
    head = text.lstrip()[:80]
    return head.startswith(('[{"error"', '{"error"')) or '"error":' in text[:120]
