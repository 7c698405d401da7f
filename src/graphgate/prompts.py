"""Prompts that start a conversation the right way: explore a tenant, change it safely.

A prompt names a database, so it is checked like a tool call (`Router.target`:
the same "not available to you" for unknown and not-yours) and rendered with
the database's dialect. ``safe_update`` exists only where writes do
(``allow_writes``), like ``run_write_query``.
"""

from __future__ import annotations

from typing import Annotated

from fastmcp import FastMCP
from pydantic import Field

from graphgate.dialect_hints import dialect_label, summary
from graphgate.middleware import current_call, prompt_failures_to_middleware
from graphgate.resources import schema_uri
from graphgate.tenancy import Router
from graphgate.tools import DialectOf

__all__ = ["GraphPrompts"]

DatabaseName = Annotated[str, Field(description="A database from list_databases.", max_length=256)]
Change = Annotated[
    str,
    Field(description="The change to make, in plain words.", min_length=1, max_length=2000),
]


class GraphPrompts:
    def __init__(self, router: Router, dialect: DialectOf, allow_writes: bool) -> None:
        self._router = router
        self._dialect = dialect
        self._allow_writes = allow_writes

    def _checked(self, database: str) -> tuple[str, str]:
        """The tenant, if the caller may use it, and its dialect's notes."""
        call = current_call()
        target = self._router.target(call.caller, database)
        call.databases.append(target.tenant)
        dialect = self._dialect(target)
        notes = summary(dialect) or ""
        return target.tenant, f"It speaks {dialect_label(dialect)} Cypher. {notes}".strip()

    async def explore_database(self, database: DatabaseName) -> str:
        tenant, dialect = self._checked(database)
        return (
            f"Help me explore the graph database {tenant!r}. {dialect}\n\n"
            f"1. Read its schema (get_schema with database={tenant!r}, or the resource "
            f"{schema_uri(tenant)}): node labels, relationship types with their direction "
            "(start → end) and property types.\n"
            "2. Summarise what the graph is about in a few sentences, with the counts.\n"
            "3. Suggest five questions it can answer, each with the read-only Cypher that "
            "answers it, run with run_query (values as $parameters, a LIMIT on lists).\n"
            "Use only labels, relationship types and properties the schema shows."
        )

    async def safe_update(self, database: DatabaseName, change: Change) -> str:
        tenant, dialect = self._checked(database)
        return (
            f"I want to change the graph database {tenant!r}: {change}\n\n{dialect}\n\n"
            "Do it safely:\n"
            f"1. Read the schema (get_schema with database={tenant!r}) and find the nodes "
            "the change is about with run_query; show me what you found.\n"
            "2. Write one Cypher statement for the change, with every value as a $parameter, "
            "matching on a unique key, and MERGE rather than CREATE where the thing may exist.\n"
            "3. Check it with explain_query: which labels and relationship types it touches "
            "and what it creates, sets or deletes. Tell me, and wait for my go-ahead.\n"
            "4. Run it with run_write_query (the server may ask me to confirm), then show me "
            "its stats and read the result back with run_query."
        )

    def register(self, mcp: FastMCP) -> None:
        mcp.prompt(
            name="explore_database",
            description="Explore a database: its schema, what it holds, questions it answers.",
        )(prompt_failures_to_middleware(self.explore_database))
        if self._allow_writes:
            mcp.prompt(
                name="safe_update",
                description="Plan, check (explain_query) and run one change to a database.",
            )(prompt_failures_to_middleware(self.safe_update))
