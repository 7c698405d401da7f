"""What each Bolt server's planner says about a query, and graphgate's verdict on it.

Neo4j and Memgraph both plan a query under ``EXPLAIN`` without running it,
but report the plan differently:

* **Neo4j** (measured on 5.26) returns the plan in the result summary: a tree
  of operators named ``<Operator>@<database>`` (``AllNodesScan@neo4j``) whose
  ``Details`` argument shows procedure signatures (``db.labels() :: (label
  :: STRING)``), plus ``query_type`` (``r``, ``w``, ``rw``, ``s``). The
  summary's ``database`` is always the session's, even for ``USE system
  ...``: only the operator suffix (``dbms.components@system``) and the
  ``SYSTEM`` runtime show that the query would run elsewhere. User, role and
  database administration plans as ``AdministrationCommand@system``;
  index and constraint DDL as ``CreateIndex@neo4j`` with ``query_type``
  ``s``; ``LOAD CSV`` as a ``LoadCSV`` operator; ``SHOW SETTINGS`` and
  ``TERMINATE TRANSACTIONS`` as read-type (``r``) ``ShowSettings`` and
  ``TerminateTransactions`` operators, which is why operators are checked
  and not only the query type.
* **Memgraph** answers ``EXPLAIN`` with rows of one ``QUERY PLAN`` column
  (`` * Produce {n}``, `` | * CallProcedure<mg.procedures> {name}``) and a
  summary ``type`` of ``rw`` whatever the query (its EXPLAIN is typed
  ``NONE``, reported as ``rw``). The verdict therefore comes from the
  operator names, checked against the operators Memgraph's own
  ``ReadWriteTypeChecker`` classifies, and the executed query's summary type
  (set when Memgraph prepares it) is checked again afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from graphgate.backends.cypher_scan import Scan
from graphgate.backends.procedures import ProcedurePolicy
from graphgate.errors import QueryRefused, ReadOnlyViolation

__all__ = [
    "Dialect",
    "PlanFacts",
    "enforce",
    "guess_dialect",
    "memgraph_plan_facts",
    "neo4j_plan_facts",
]

Dialect = Literal["neo4j", "memgraph"]


def guess_dialect(agent: str) -> Dialect:
    """Memgraph introduces itself as "Neo4j/v5.11.0 compatible graph database server - Memgraph"."""
    return "memgraph" if "memgraph" in agent.lower() else "neo4j"


@dataclass(slots=True)
class PlanFacts:
    """What a plan shows, independent of the dialect that produced it."""

    operators: list[str] = field(default_factory=list)
    procedures: list[str] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    """Write operators (Memgraph) or the non-read query type (Neo4j)."""
    foreign: list[str] = field(default_factory=list)
    """Databases other than the session's that an operator runs on."""
    admin: list[str] = field(default_factory=list)
    """Operators that administer the server rather than query a database."""
    schema_only: bool = False
    """Only index/constraint DDL: allowed through `write`, never through `read`."""
    batched: list[str] = field(default_factory=list)
    """Operators that commit on their own (``CALL {} IN TRANSACTIONS``, periodic commit)."""
    unknown: list[str] = field(default_factory=list)


# -- Neo4j -----------------------------------------------------------------------------------

_NEO4J_SHOW_ALLOWED = frozenset(
    {"ShowIndexes", "ShowConstraints", "ShowProcedures", "ShowFunctions"}
)
_NEO4J_SCHEMA = frozenset({"CreateIndex", "DropIndex", "CreateConstraint", "DropConstraint"})
_NEO4J_BATCHED = frozenset({"TransactionForeach", "TransactionApply"})
_NEO4J_FILE = frozenset({"LoadCSV"})


def _neo4j_operators(plan: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    stack = [plan]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.get("children") or ())


def neo4j_plan_facts(plan: Mapping[str, Any] | None, query_type: str, database: str) -> PlanFacts:
    """Read a Neo4j ``EXPLAIN`` summary (``summary.plan`` and ``summary.query_type``)."""
    facts = PlanFacts()
    if query_type != "r":
        facts.writes.append(f"query type {query_type!r}")
    if plan is None:
        facts.unknown.append("(no plan)")
        return facts
    schema_ops = 0
    for node in _neo4j_operators(plan):
        raw = str(node.get("operatorType", ""))
        name, _, runs_on = raw.partition("@")
        args = node.get("args") or {}
        facts.operators.append(raw)
        if runs_on and runs_on.casefold() != database.casefold():
            facts.foreign.append(runs_on)
        if args.get("runtime") == "SYSTEM":
            facts.admin.append(raw)
        if name == "AdministrationCommand" or (
            name.startswith(("Show", "Terminate")) and name not in _NEO4J_SHOW_ALLOWED
        ):
            facts.admin.append(name)
        if name in _NEO4J_FILE:
            facts.loads.append("LOAD CSV")
        if name in _NEO4J_BATCHED:
            facts.batched.append(name)
        if name == "ProcedureCall":
            details = str(args.get("Details", ""))
            facts.procedures.append(details.split("(", 1)[0].strip())
        if name in _NEO4J_SCHEMA or name.startswith("DoNothingIfExists"):
            schema_ops += 1
    facts.schema_only = schema_ops == len(facts.operators) and schema_ops > 0
    if query_type == "s" and not facts.schema_only and not facts.admin:
        # Schema-type queries other than index/constraint DDL are DBMS-level work
        # (e.g. a DBMS-mode procedure): nothing a tenant needs.
        facts.admin.append("a system-type query")
    return facts


# -- Memgraph ---------------------------------------------------------------------------------

# From Memgraph's ReadWriteTypeChecker and PlanPrinter (src/query/plan/).
_MG_WRITE = frozenset(
    {
        "CreateNode", "CreateExpand", "Delete", "SetProperty", "SetNestedProperty",
        "SetProperties", "SetLabels", "RemoveProperty", "RemoveNestedProperty", "RemoveLabels",
        "Merge", "Foreach",
    }
)  # fmt: skip
_MG_READ = frozenset(
    {
        "Once", "Produce", "Expand", "ExpandVariable", "ConstructNamedPath", "Filter",
        "EdgeUniquenessFilter", "EvaluatePatternFilter", "Optional", "Cartesian", "Accumulate",
        "Aggregate", "Skip", "Limit", "OrderBy", "Distinct", "Union", "Unwind", "Apply",
        "IndexedJoin", "HashJoin", "RollUpApply", "EmptyResult", "CallProcedure",
    }
)  # fmt: skip
_MG_SCAN_PREFIXES = ("ScanAll", "ScanParallel", "ScanChunk")
_MG_FILE = {"LoadCsv": "LOAD CSV", "LoadParquet": "LOAD PARQUET", "LoadJsonl": "LOAD JSONL"}
_MG_BATCHED = frozenset({"PeriodicCommit", "PeriodicSubquery"})


def memgraph_plan_rows(rows: Iterable[str]) -> list[str]:
    """Operator texts of a Memgraph ``EXPLAIN``, tree drawing and branch headers removed.

    A row is ``" "``, then ``"| "`` per depth, then ``*`` (or ``P`` inside a
    parallel section), a space and the operator's own text; branch headers
    read ``"|\\ On Match"``.
    """
    operators = []
    for row in rows:
        text = row.strip()
        while text.startswith("| "):
            text = text[2:].lstrip()
        if not text or text.startswith("|\\") or text == "|":
            continue
        if text[0] in "*P" and text[1:2] == " ":
            operators.append(text[2:].strip())
        else:
            operators.append(text)
    return operators


def memgraph_plan_facts(rows: Iterable[str]) -> PlanFacts:
    facts = PlanFacts()
    for text in memgraph_plan_rows(rows):
        name = _leading_identifier(text)
        facts.operators.append(name or text)
        if name == "CallProcedure":
            start, end = text.find("<"), text.find(">")
            if 0 <= start < end:
                facts.procedures.append(text[start + 1 : end].strip())
            else:
                facts.unknown.append(text)
        elif name in _MG_FILE:
            facts.loads.append(_MG_FILE[name])
        elif name in _MG_WRITE:
            facts.writes.append(name)
        elif name in _MG_BATCHED:
            facts.batched.append(name)
        elif not (name in _MG_READ or name.startswith(_MG_SCAN_PREFIXES)):
            facts.unknown.append(text)
    return facts


def _leading_identifier(text: str) -> str:
    end = 0
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return text[:end]


# -- the verdict ------------------------------------------------------------------------------


def enforce(
    facts: PlanFacts,
    found: Scan,
    policy: ProcedurePolicy,
    *,
    read_only: bool,
    allow_file_access: bool,
    allow_batched: bool = False,
) -> None:
    """Refuse the query unless plan and text agree it stays in its database and its rights.

    Leaving the database is checked first, so that ``USE system`` through
    `read` is reported as what it is rather than as a write. ``allow_batched``
    lets through writes that commit in batches (Neo4j's ``CALL {} IN
    TRANSACTIONS``), for a caller that runs them as the auto-commit
    statements they must be and reports a failure halfway as such.
    """
    if found.use_clause:
        raise QueryRefused(
            "USE clauses are not allowed: every query runs in the database graphgate chose"
        )
    if found.admin:
        raise QueryRefused(f"{found.admin}; graphgate does not run it for anyone")
    if facts.foreign:
        raise QueryRefused(
            f"the query would run on another database ({facts.foreign[0]!r}): "
            "queries stay in the database graphgate chose"
        )
    if facts.admin:
        raise QueryRefused(
            f"server administration ({facts.admin[0]}) is not available through graphgate"
        )
    if facts.unknown:
        raise QueryRefused(
            f"the planner reported an operator graphgate does not know ({facts.unknown[0]}); "
            "refusing rather than guessing what it does"
        )
    if facts.batched and not allow_batched:
        raise QueryRefused(
            f"{facts.batched[0]} commits in batches outside the call's transaction; "
            "send the work as ordinary queries"
        )
    loads = list(dict.fromkeys([*facts.loads, *found.loads]))
    if loads and not allow_file_access:
        raise QueryRefused(
            f"{loads[0]} is disabled: this server does not allow queries to read files "
            "or URLs (allow_file_access is off)"
        )
    for name in dict.fromkeys([*facts.procedures, *found.procedures]):
        if name:
            policy.check_procedure(name, allow_file_access=allow_file_access)
    for name in found.functions:
        policy.check_function(name, allow_file_access=allow_file_access)
    if read_only and (facts.writes or facts.schema_only):
        what = facts.writes[0] if facts.writes else "schema change"
        raise ReadOnlyViolation(
            f"this query writes ({what}); the read path runs only queries the planner "
            "reports as pure reads"
        )
