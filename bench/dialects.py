"""Does graphgate tell a model enough to write each dialect's Cypher? (issue 17; no model)

A fixed set of natural-language questions about the demo data, each with
reference Cypher per dialect (FalkorDB, Neo4j 5, Memgraph), and for each:

1. **It runs.** The FalkorDB and Neo4j references run on the demo data
   (graphgate's embedded FalkorDB; Neo4j Community from
   scripts/neo4j_server.py, or ``BENCH_NEO4J_URL``) through graphgate's
   backends, read path where the question reads, and must give the same
   answer. No Memgraph server is reachable here: its references go through
   the checks graphgate makes before a Memgraph query runs, those of the
   text (`cypher_scan.scan`, one statement, `bound_structure`, the
   procedure policy and `dialects.enforce` without a plan, and the read
   path's "Cypher only" rule); their answers are not checked.
2. **The schema says what it needs.** Every label and relationship type the
   reference names, each relationship's direction (start → end) and the type
   of each property it uses appear in ``get_schema``'s answer on that server.
3. **The notes say what differs.** Where a reference needs a construct that
   differs between dialects (indexes, paths, dates), the dialect's note
   (``get_schema``'s ``dialect_notes`` or the error hint on that topic) names it.

Usage: python bench/dialects.py [--json bench/results/dialects.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from graphgate.backends.base import Backend, QueryLimits  # noqa: E402
from graphgate.backends.cypher_names import names_in  # noqa: E402
from graphgate.backends.cypher_scan import (  # noqa: E402
    bound_structure,
    require_single_statement,
    scan,
)
from graphgate.backends.dialects import PlanFacts, enforce  # noqa: E402
from graphgate.backends.procedures import ProcedurePolicy  # noqa: E402
from graphgate.demo import seed_demo  # noqa: E402
from graphgate.dialect_hints import error_hint, notes_for  # noqa: E402
from graphgate.schema_view import schema_to_dict  # noqa: E402

LIMITS = QueryLimits(row_limit=1000, timeout=30.0)
DIALECTS = ("falkordb", "neo4j", "memgraph")


@dataclass(frozen=True)
class Question:
    text: str
    tenant: str  # "people" or "shop": which demo graph
    cypher: dict[str, str]
    relationships: list[tuple[str, str, str]] = field(default_factory=list)
    """(start label, type, end label): the directions the references rely on."""
    properties: list[tuple[str, str, str]] = field(default_factory=list)
    """(label or type, property, type as get_schema names it on FalkorDB)."""
    needs: dict[str, str] = field(default_factory=dict)
    """Per dialect, the words its notes must contain for this reference to be writable."""
    normalise: str = "rows"


SAME = "MATCH"  # marker: the reference is the same text in every dialect

QUESTIONS = [
    Question(
        "Who works at Acme Corp?",
        "people",
        dict.fromkeys(
            DIALECTS,
            "MATCH (p:Person)-[:WORKS_AT]->(c:Company {name: 'Acme Corp'}) "
            "RETURN p.name ORDER BY p.name",
        ),
        relationships=[("Person", "WORKS_AT", "Company")],
        properties=[("Person", "name", "String"), ("Company", "name", "String")],
    ),
    Question(
        "Which projects is Alice Johnson on, and in what role?",
        "people",
        dict.fromkeys(
            DIALECTS,
            "MATCH (:Person {name: 'Alice Johnson'})-[r:WORKS_ON]->(j:Project) "
            "RETURN j.name, r.role ORDER BY j.name",
        ),
        relationships=[("Person", "WORKS_ON", "Project")],
        properties=[("WORKS_ON", "role", "String"), ("Project", "name", "String")],
    ),
    Question(
        "What is the total budget of projects that are not done?",
        "people",
        dict.fromkeys(
            DIALECTS,
            "MATCH (j:Project) WHERE j.status <> 'done' RETURN sum(j.budget) AS total",
        ),
        properties=[("Project", "status", "String"), ("Project", "budget", "Float")],
    ),
    Question(
        "Who has worked at their company since before 2018, longest first?",
        "people",
        dict.fromkeys(
            DIALECTS,
            "MATCH (p:Person)-[w:WORKS_AT]->(:Company) WHERE w.since < 2018 "
            "RETURN p.name, w.since ORDER BY w.since",
        ),
        relationships=[("Person", "WORKS_AT", "Company")],
        properties=[("WORKS_AT", "since", "Integer")],
    ),
    Question(
        "How many hops of acquaintance lead from Alice Johnson to Dan Okafor, at least?",
        "people",
        {
            "falkordb": "MATCH (a:Person {name: 'Alice Johnson'}), (b:Person {name: 'Dan Okafor'}) "
            "RETURN length(shortestPath((a)-[:KNOWS*]->(b))) AS hops",
            "neo4j": "MATCH p = shortestPath((:Person {name: 'Alice Johnson'})-[:KNOWS*]->"
            "(:Person {name: 'Dan Okafor'})) RETURN length(p) AS hops",
            "memgraph": "MATCH p = (:Person {name: 'Alice Johnson'})-[:KNOWS *BFS]->"
            "(:Person {name: 'Dan Okafor'}) RETURN size(relationships(p)) AS hops",
        },
        relationships=[("Person", "KNOWS", "Person")],
        properties=[("Person", "name", "String")],
        needs={
            "falkordb": "only in WITH/RETURN",
            "neo4j": "shortestPath() in MATCH",
            "memgraph": "*BFS",
        },
    ),
    Question(
        "Which orders were placed in March 2024, by whom?",
        "shop",
        dict.fromkeys(
            DIALECTS,
            "MATCH (c:Customer)-[:PLACED]->(o:Order) "
            "WHERE o.placed >= date('2024-03-01') AND o.placed < date('2024-04-01') "
            "RETURN o.number, c.name ORDER BY o.number",
        ),
        relationships=[("Customer", "PLACED", "Order")],
        properties=[("Order", "placed", "Date"), ("Order", "number", "Integer")],
        needs=dict.fromkeys(DIALECTS, "date()"),
    ),
    Question(
        "How many of each UK-supplied product were ordered?",
        "shop",
        dict.fromkeys(
            DIALECTS,
            "MATCH (:Supplier {country: 'UK'})-[:SUPPLIES]->(p:Product)<-[c:CONTAINS]-(:Order) "
            "RETURN p.name, sum(c.quantity) AS ordered ORDER BY p.name",
        ),
        relationships=[("Supplier", "SUPPLIES", "Product"), ("Order", "CONTAINS", "Product")],
        properties=[("Supplier", "country", "String"), ("CONTAINS", "quantity", "Integer")],
    ),
    Question(
        "Which customers ordered widgets?",
        "shop",
        dict.fromkeys(
            DIALECTS,
            "MATCH (c:Customer)-[:PLACED]->(:Order)-[:CONTAINS]->(:Product {name: 'Widget'}) "
            "RETURN DISTINCT c.name ORDER BY c.name",
        ),
        relationships=[("Customer", "PLACED", "Order"), ("Order", "CONTAINS", "Product")],
        properties=[("Product", "name", "String")],
    ),
    Question(
        "Which properties are indexed?",
        "shop",
        {
            "falkordb": "CALL db.indexes() YIELD label, properties RETURN label, properties",
            "neo4j": "SHOW INDEXES YIELD labelsOrTypes, properties "
            "WHERE labelsOrTypes IS NOT NULL RETURN labelsOrTypes[0], properties",
            "memgraph": "",  # Memgraph's SHOW INDEX INFO is not a query graphgate reads with
        },
        needs={
            "falkordb": "CALL db.indexes()",
            "neo4j": "SHOW INDEXES",
            "memgraph": "get_schema",
        },
        normalise="indexes",
    ),
]


def normalised(rows: list[list[Any]], how: str) -> Any:
    if how == "indexes":
        pairs = set()
        for label, properties in rows:
            listed = properties if isinstance(properties, list) else str(properties).strip("[]")
            names = listed if isinstance(listed, list) else [p.strip() for p in listed.split(",")]
            if str(label) in _SHOP_LABELS:  # Neo4j holds both demo graphs in one database
                pairs.add((str(label), tuple(sorted(names))))
        return sorted(pairs)
    return [[round(v, 6) if isinstance(v, float) else v for v in row] for row in rows]


def memgraph_checks(query: str, read: bool = True) -> list[str]:
    """What graphgate checks of a Memgraph query's text before the server sees it."""
    problems = []
    try:
        bound_structure(query, 64)
        found = scan(query)
        require_single_statement(found)
        if read and found.kind != "cypher":
            problems.append(f"the read path runs only Cypher queries (this is {found.kind})")
        enforce(PlanFacts(), found, ProcedurePolicy(), read_only=read, allow_file_access=False)
    except Exception as exc:  # a refusal is the finding
        problems.append(f"{type(exc).__name__}: {exc}")
    return problems


def schema_gaps(question: Question, dialect: str, schema: dict[str, Any]) -> list[str]:
    """What the reference needs and get_schema's answer does not say."""
    gaps = []
    labels = {entry["label"]: entry for entry in schema["node_labels"]}
    types = {entry["type"]: entry for entry in schema["relationship_types"]}
    names = names_in(question.cypher[dialect] or question.cypher["falkordb"])
    gaps += [f"label {name}" for name in names.labels if name not in labels]
    gaps += [f"type {name}" for name in names.relationship_types if name not in types]
    for start, kind, end in question.relationships:
        ends = {(e["start"], e["end"]) for e in types.get(kind, {}).get("endpoints", [])}
        if (start, end) not in ends:
            gaps.append(f"direction ({start})-[:{kind}]->({end})")
    for owner, prop, wanted in question.properties:
        entry = labels.get(owner) or types.get(owner) or {}
        known = {p["name"]: [t.casefold() for t in p["types"]] for p in entry.get("properties", [])}
        if prop not in known:
            gaps.append(f"property {owner}.{prop}")
        elif not any(wanted.casefold() in t or t in _SYNONYMS.get(wanted, ()) for t in known[prop]):
            gaps.append(f"type of {owner}.{prop}: {known[prop]} (wanted {wanted})")
    return gaps


_SHOP_LABELS = frozenset({"Supplier", "Product", "Customer", "Order"})
_SYNONYMS = {"Float": ("double",), "Integer": ("long",), "Date": ("date",)}


def note_gaps(question: Question, dialect: str) -> list[str]:
    notes = notes_for(dialect)
    assert notes is not None
    needed = question.needs.get(dialect)
    if needed is None:
        return []
    said = " ".join([notes.summary, *notes.topics.values()])
    return [] if needed in said else [f"notes do not mention {needed!r}"]


@contextlib.asynccontextmanager
async def falkordb() -> AsyncIterator[Backend]:
    from graphgate.backends.embedded import EmbeddedFalkorDB

    with tempfile.TemporaryDirectory() as data:
        server = EmbeddedFalkorDB(Path(data) / "data", query_timeout=30)
        await server.start()
        backend = server.backend()
        await backend.start()
        try:
            yield backend
        finally:
            await backend.close()
            await server.stop()


@contextlib.asynccontextmanager
async def neo4j() -> AsyncIterator[Backend]:
    from graphgate.backends.bolt import BoltBackend

    url = os.environ.get("BENCH_NEO4J_URL")
    with contextlib.ExitStack() as stack:
        if url is None:
            from scripts.neo4j_server import running_neo4j

            instance = stack.enter_context(running_neo4j())
            url, user, password = instance.uri, instance.user, instance.password
        else:
            user = os.environ.get("BENCH_NEO4J_USER", "neo4j")
            password = os.environ.get("BENCH_NEO4J_PASSWORD", "")
        backend = BoltBackend(url, user=user, password=password)
        await backend.start()
        try:
            yield backend
        finally:
            await backend.close()


async def measure(backend: Backend, dialect: str, graphs: dict[str, str]) -> dict[str, Any]:
    await seed_demo(backend, {"acme": graphs["people"], "globex": graphs["shop"]})
    schemas = {
        kind: schema_to_dict(await backend.schema(database, LIMITS), None)
        for kind, database in graphs.items()
    }
    found: dict[str, Any] = {}
    for question in QUESTIONS:
        query = question.cypher[dialect]
        result = await backend.read(graphs[question.tenant], query, None, LIMITS)
        found[question.text] = {
            "answer": normalised(result.rows, question.normalise),
            "schema_gaps": schema_gaps(question, dialect, schemas[question.tenant]),
            "note_gaps": note_gaps(question, dialect),
        }
    return found


async def neo4j_text_on_falkordb(backend: Backend) -> dict[str, Any]:
    """A model writes Neo4j's Cypher by default: what FalkorDB says, and the hint it gets."""
    seen = {}
    for question in QUESTIONS:
        text = question.cypher["neo4j"]
        if text == question.cypher["falkordb"]:
            continue
        try:
            await backend.read(
                "acme" if question.tenant == "people" else "globex", text, None, LIMITS
            )
            seen[question.text] = {"error": None, "hint": None}
        except Exception as exc:
            seen[question.text] = {
                "error": str(exc),
                "hint": error_hint("falkordb", text, str(exc)),
            }
    return seen


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("neo4j").setLevel(logging.ERROR)  # schema procedures' deprecation notes
    logging.getLogger("graphgate.backends.falkordb").setLevel(logging.ERROR)
    report: dict[str, Any] = {}
    async with falkordb() as backend:
        report["falkordb"] = await measure(
            backend, "falkordb", {"people": "acme", "shop": "globex"}
        )
        report["neo4j_text_on_falkordb"] = await neo4j_text_on_falkordb(backend)
    # Neo4j Community has one database: both demo graphs go into it (disjoint labels).
    async with neo4j() as backend:
        report["neo4j"] = await measure(backend, "neo4j", {"people": "neo4j", "shop": "neo4j"})
    report["memgraph"] = {
        q.text: {
            "text_checks": memgraph_checks(q.cypher["memgraph"]) if q.cypher["memgraph"] else [],
            "note_gaps": note_gaps(q, "memgraph"),
        }
        for q in QUESTIONS
    }
    failures = 0
    print("| question | FalkorDB | Neo4j 5 | same answer | Memgraph (text checks) |")
    print("|---|---|---|---|---|")
    for question in QUESTIONS:
        f, n = report["falkordb"][question.text], report["neo4j"][question.text]
        m = report["memgraph"][question.text]
        same = f["answer"] == n["answer"] and f["answer"] != []
        cells = []
        for seen in (f, n):
            gaps = seen["schema_gaps"] + seen["note_gaps"]
            cells.append("ok" if not gaps else "; ".join(gaps))
        mem = m["text_checks"] + m["note_gaps"]
        mem_cell = "get_schema (no Cypher)" if not question.cypher["memgraph"] else "passes"
        cells.append("yes" if same else f"NO: {f['answer']} vs {n['answer']}")
        cells.append(mem_cell if not mem else "; ".join(mem))
        failures += sum(cell not in ("ok", "yes", "passes", mem_cell) for cell in cells)
        print(f"| {question.text} | " + " | ".join(cells) + " |")
    print(f"\n{len(QUESTIONS)} questions, {failures} problems\n")
    print("Neo4j's reference sent to FalkorDB (what a model writes by default):\n")
    for text, seen in report["neo4j_text_on_falkordb"].items():
        print(f"* {text} → {seen['error'] or 'ran'}; hint: {seen['hint']}")
        failures += seen["error"] is not None and seen["hint"] is None
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
