"""The contract every graph database backend fulfils.

graphgate never lets a tenant name reach a backend: the tool layer resolves a
tenant to a *database name* from the catalog and passes that explicitly to
every call. Backends therefore never choose a database themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

JSONValue = Any
"""A value made only of dicts, lists, str, int, float, bool and None."""


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """Per-call bounds, taken from the settings by the tool layer."""

    row_limit: int = 1000
    timeout: float = 30.0
    allow_file_access: bool = False
    max_bytes: int | None = None
    """Rough bound on a result's JSON size: backends stop converting rows past it."""
    sample: int = 100
    """Entities per label or relationship type that schema reads to learn property
    types and endpoints: more finds rarer properties, and costs more."""


@dataclass(slots=True)
class QueryResult:
    """A query's answer, already converted to JSON-ready values."""

    columns: list[str]
    rows: list[list[JSONValue]]
    truncated: bool = False
    stats: dict[str, int] = field(default_factory=dict)
    elapsed_ms: float = 0.0

    @property
    def row_count(self) -> int:
        return len(self.rows)


@dataclass(slots=True)
class PropertyInfo:
    name: str
    types: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LabelInfo:
    """A node label or relationship type with the properties seen on it."""

    name: str
    properties: list[PropertyInfo] = field(default_factory=list)
    count: int | None = None
    # Relationship types only: (start label, end label) pairs where known.
    endpoints: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class IndexInfo:
    label: str
    properties: list[str]
    kind: str = "range"
    entity: str = "node"  # "node" or "relationship"


@dataclass(slots=True)
class ConstraintInfo:
    label: str
    properties: list[str]
    kind: str = "unique"
    entity: str = "node"


@dataclass(slots=True)
class Schema:
    node_labels: list[LabelInfo] = field(default_factory=list)
    relationship_types: list[LabelInfo] = field(default_factory=list)
    indexes: list[IndexInfo] = field(default_factory=list)
    constraints: list[ConstraintInfo] = field(default_factory=list)


@dataclass(slots=True)
class QueryPlan:
    """What the database's planner says about a query it has not run.

    ``steps`` are the planner's operators, one line each, indented by depth,
    as the database words them; ``writes`` names the planner's write
    operators (empty for a pure read).
    """

    steps: list[str]
    writes: list[str] = field(default_factory=list)
    truncated: bool = False


MAX_PLAN_STEPS = 200
MAX_STEP_CHARS = 400


def bounded_plan(lines: list[str], writes: list[str]) -> QueryPlan:
    """A `QueryPlan` of at most `MAX_PLAN_STEPS` lines of `MAX_STEP_CHARS` characters.

    A planner's text grows with the query (a 100 kB query plans to as many
    operators), and a model reads this: past the bounds, the plan says it was cut.
    """
    cut = len(lines) > MAX_PLAN_STEPS
    steps = []
    for line in lines[:MAX_PLAN_STEPS]:
        if len(line) > MAX_STEP_CHARS:
            line, cut = line[:MAX_STEP_CHARS] + "…", True
        steps.append(line)
    return QueryPlan(steps=steps, writes=list(dict.fromkeys(writes)), truncated=cut)


@runtime_checkable
class Explains(Protocol):
    """A backend that can show a query's plan without running it."""

    dialect: str | None
    """The Cypher dialect it speaks ("falkordb", "neo4j", "memgraph"); None until known."""

    async def explain(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryPlan:
        """The plan of ``query`` on ``database``; nothing runs and nothing is created.

        The same text checks as `Backend.read` / `Backend.write` apply (one
        statement, no ``USE``, no administration, the procedure policy); the
        caller decides from ``QueryPlan.writes`` which rights it needs.
        """


@runtime_checkable
class Backend(Protocol):
    """An async graph database shared by every tenant.

    One instance holds one connection pool for all databases. Errors are
    raised as `graphgate.errors` types: `QueryError` for anything the
    database refused (with the database's own message), `ReadOnlyViolation`
    for a write attempted through `read`, `QueryTimeout`,
    `BackendUnavailable` when the server cannot be reached.
    """

    name: str
    """Short kind name for logs and metrics, e.g. "falkordb"."""

    async def start(self) -> None:
        """Open connections (and start processes); called once in the lifespan."""

    async def close(self) -> None:
        """Release every resource; safe to call twice."""

    async def ping(self) -> None:
        """Raise `BackendUnavailable` unless the server answers now."""

    async def read(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryResult:
        """Run a query the database itself guarantees not to write.

        Must never create `database` as a side effect.
        """

    async def write(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryResult:
        """Run a query that may write; `stats` says what changed."""

    async def schema(self, database: str, limits: QueryLimits) -> Schema:
        """Labels, relationship types, properties, indexes, constraints."""

    async def list_databases(self) -> list[str]:
        """The databases that exist on the server now (not the catalog)."""
