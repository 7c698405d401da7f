"""Memgraph's statements and answers, parsed from their documented shapes.

No Memgraph server is available to these tests (no registry here ships
one), so every shape below is taken from Memgraph's own source and
documentation, and written out in full so a reader can check it:

* ``EXPLAIN`` rows: one column ``QUERY PLAN``; each row is ``" "``, then
  ``"| "`` per branch depth, then ``*`` (``P`` in a parallel section), a space
  and the operator's text (``PlanPrinter``, src/query/plan/pretty_print.cpp);
  branch headers are ``"|\\ On Match"``. ``CallProcedure<name> {fields}``,
  ``LoadCsv {row}``, ``Produce {n}``, ``ScanAll (n)``.
* ``SHOW SCHEMA INFO``: one column ``schema``, a JSON document
  (docs: querying/schema; source: src/storage/v2/schema_info.cpp).
* ``SHOW INDEX INFO``: ``index type``, ``label``, ``property``, ``count``;
  ``SHOW CONSTRAINT INFO``: ``constraint type``, ``label``, ``properties``,
  ``data_type`` (src/query/interpreter.cpp, DatabaseInfoQuery).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from graphgate.backends.base import ConstraintInfo, IndexInfo, LabelInfo, PropertyInfo
from graphgate.backends.bolt_schema import (
    memgraph_constraints,
    memgraph_indexes,
    memgraph_sampled,
    memgraph_schema_info,
    quote_name,
)
from graphgate.backends.cypher_scan import scan
from graphgate.backends.dialects import enforce, memgraph_plan_facts, memgraph_plan_rows
from graphgate.backends.procedures import ProcedurePolicy
from graphgate.errors import QueryError, QueryRefused, ReadOnlyViolation

POLICY = ProcedurePolicy()
INNOCENT = scan("MATCH (n) RETURN n")

# EXPLAIN MATCH (n)-[r]->(m) WHERE n.x > 1 RETURN n, count(m)
READ_PLAN = [
    " * Produce {n, count(m)}",
    " * Aggregate {COUNT-1} {n}",
    " * Filter (n :Person), {n.x}",
    " * Expand (n)-[r]->(m)",
    " * ScanAllByLabel (n :Person)",
    " * Once",
]
# EXPLAIN MERGE (n:P {id: 1}) ON CREATE SET n.new = true RETURN n
MERGE_PLAN = [
    " * Produce {n}",
    " * Accumulate",
    " * Merge",
    " |\\ On Match",
    " | * ScanAllByLabelProperties (n :P {id})",
    " | * Once",
    " |\\ On Create",
    " | * SetProperty",
    " | * CreateNode",
    " | * Once",
    " * Once",
]
# EXPLAIN CALL mg.procedures() YIELD name RETURN name
CALL_PLAN = [" * Produce {name}", " * CallProcedure<mg.procedures> {name}", " * Once"]
# EXPLAIN LOAD CSV FROM '/x.csv' WITH HEADER AS row RETURN row
LOAD_PLAN = [" * Produce {row}", " * LoadCsv {row}", " * Once"]
# EXPLAIN MATCH (n) RETURN count(n), with parallel execution
PARALLEL_PLAN = [" * Produce {count(n)}", " P Aggregate {COUNT-1} {}", " P ScanAll (n)", " * Once"]


def test_plan_rows_lose_their_tree_drawing() -> None:
    assert memgraph_plan_rows(MERGE_PLAN) == [
        "Produce {n}",
        "Accumulate",
        "Merge",
        "ScanAllByLabelProperties (n :P {id})",
        "Once",
        "SetProperty",
        "CreateNode",
        "Once",
        "Once",
    ]


def test_read_plan_is_a_read() -> None:
    facts = memgraph_plan_facts(READ_PLAN)
    assert facts.writes == [] and facts.unknown == []
    enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=False)


def test_parallel_sections_are_read_too() -> None:
    facts = memgraph_plan_facts(PARALLEL_PLAN)
    assert facts.operators == ["Produce", "Aggregate", "ScanAll", "Once"]
    enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=False)


def test_writes_inside_branches_are_found() -> None:
    facts = memgraph_plan_facts(MERGE_PLAN)
    assert facts.writes == ["Merge", "SetProperty", "CreateNode"]
    with pytest.raises(ReadOnlyViolation):
        enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=False)
    enforce(facts, INNOCENT, POLICY, read_only=False, allow_file_access=False)


@pytest.mark.parametrize(
    "operator",
    [
        "CreateExpand (n)-[r:R]->(m)",
        "Delete",
        "SetLabels",
        "RemoveProperty",
        "RemoveLabels",
        "SetProperties",
        "SetNestedProperty",
        "Foreach",
    ],
)
def test_every_write_operator_is_a_write(operator: str) -> None:
    facts = memgraph_plan_facts([" * EmptyResult", f" * {operator}", " * Once"])
    with pytest.raises(ReadOnlyViolation):
        enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=False)


def test_procedure_names_come_from_the_plan() -> None:
    facts = memgraph_plan_facts(CALL_PLAN)
    assert facts.procedures == ["mg.procedures"]
    enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=False)
    loading = memgraph_plan_facts(
        [" * Produce {x}", " * CallProcedure<json_util.load_from_url> {objects}", " * Once"]
    )
    with pytest.raises(QueryRefused, match="allow_file_access"):
        enforce(loading, INNOCENT, POLICY, read_only=True, allow_file_access=False)
    module = memgraph_plan_facts([" * CallProcedure<mg.load_all> {}", " * Once"])
    with pytest.raises(QueryRefused, match="refused for everyone"):
        enforce(module, INNOCENT, POLICY, read_only=False, allow_file_access=True)


@pytest.mark.parametrize(
    ("rows", "what"),
    [
        (LOAD_PLAN, "LOAD CSV"),
        ([" * Produce {row}", " * LoadParquet {row}", " * Once"], "LOAD PARQUET"),
        ([" * Produce {row}", "* LoadJsonl {row}", " * Once"], "LOAD JSONL"),
    ],
)
def test_file_loading_operators(rows: list[str], what: str) -> None:
    facts = memgraph_plan_facts(rows)
    with pytest.raises(QueryRefused, match=what):
        enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=False)
    enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=True)


@pytest.mark.parametrize(
    "rows",
    [
        [" * PeriodicCommit {10}", " * SetProperty", " * ScanAll (n)", " * Once"],
        [" * Produce {}", " * PeriodicSubquery", " |\\ ", " | * CreateNode", " * Once"],
    ],
)
def test_batched_commits_are_refused(rows: list[str]) -> None:
    with pytest.raises(QueryRefused, match="batches"):
        enforce(
            memgraph_plan_facts(rows), INNOCENT, POLICY, read_only=False, allow_file_access=True
        )


def test_unknown_operators_fail_closed() -> None:
    for rows in ([" * Unknown operator!"], [" * TeleportNodes {n}", " * Once"]):
        with pytest.raises(QueryRefused, match="does not know"):
            enforce(
                memgraph_plan_facts(rows), INNOCENT, POLICY, read_only=False, allow_file_access=True
            )


# -- SHOW SCHEMA INFO ------------------------------------------------------------------------

SCHEMA_INFO = {
    "nodes": [
        {"labels": [], "count": 1, "properties": []},
        {
            "labels": ["A", "B"],
            "count": 10,
            "properties": [
                {
                    "key": "prop1",
                    "count": 6,
                    "filling_factor": 60.0,
                    "types": [
                        {"type": "Boolean", "count": 3},
                        {"type": "Integer", "count": 1},
                        {"type": "String", "count": 2},
                    ],
                },
                {
                    "key": "prop2",
                    "count": 3,
                    "filling_factor": 30.0,
                    "types": [{"type": "Float", "count": 3}],
                },
            ],
        },
        {
            "labels": ["A"],
            "count": 2,
            "properties": [
                {
                    "key": "name",
                    "count": 2,
                    "filling_factor": 100.0,
                    "types": [{"type": "String", "count": 2}],
                }
            ],
        },
    ],
    "edges": [
        {
            "type": ":EDGE",
            "start_node_labels": ["C", "D"],
            "end_node_labels": [],
            "count": 3,
            "properties": [
                {
                    "key": "edge_prop",
                    "count": 2,
                    "filling_factor": 66.67,
                    "types": [{"type": "Integer", "count": 2}],
                }
            ],
        },
        {
            "type": "KNOWS",
            "start_node_labels": ["A"],
            "end_node_labels": ["A", "B"],
            "count": 4,
            "properties": [],
        },
    ],
    "node_indexes": [
        {"labels": ["A"], "properties": ["name"], "count": 2, "type": "label+property"}
    ],
    "edge_indexes": [],
    "node_constraints": [{"type": "unique", "labels": ["A"], "properties": ["name"]}],
    "enums": [],
}


def test_schema_info_is_reported_per_label() -> None:
    labels, types = memgraph_schema_info(json.dumps(SCHEMA_INFO))
    assert labels == [
        LabelInfo(
            name="A",
            properties=[
                PropertyInfo(name="name", types=["String"]),
                PropertyInfo(name="prop1", types=["Boolean", "Integer", "String"]),
                PropertyInfo(name="prop2", types=["Float"]),
            ],
            count=12,
        ),
        LabelInfo(
            name="B",
            properties=[
                PropertyInfo(name="prop1", types=["Boolean", "Integer", "String"]),
                PropertyInfo(name="prop2", types=["Float"]),
            ],
            count=10,
        ),
    ]
    assert types == [
        LabelInfo(
            name="EDGE", properties=[PropertyInfo(name="edge_prop", types=["Integer"])], count=3
        ),
        LabelInfo(name="KNOWS", count=4, endpoints=[("A", "A"), ("A", "B")]),
    ]


def test_empty_schema_info() -> None:
    empty: dict[str, list[Any]] = {
        "nodes": [],
        "edges": [],
        "node_indexes": [],
        "edge_indexes": [],
        "node_constraints": [],
        "enums": [],
    }
    assert memgraph_schema_info(json.dumps(empty)) == ([], [])


def test_schema_info_that_is_not_json() -> None:
    with pytest.raises(QueryError, match="not JSON"):
        memgraph_schema_info("SchemaInfo disabled.")
    with pytest.raises(QueryError, match="not an object"):
        memgraph_schema_info("[]")


def test_sampled_fallback() -> None:
    labels, types = memgraph_sampled(
        [
            {"label": "Person", "key": "name", "types": ["STRING"]},
            {"label": "Person", "key": "age", "types": ["INTEGER", "FLOAT"]},
            {"label": "Empty", "key": None, "types": []},
        ],
        [{"type": "KNOWS", "key": "since", "types": ["DATE"]}],
        [
            {"type": "KNOWS", "s": "Person", "e": "Person"},
            {"type": "LIKES", "s": "Person", "e": "X"},
        ],
    )
    assert labels == [
        LabelInfo(name="Empty", count=None),
        LabelInfo(
            name="Person",
            properties=[
                PropertyInfo(name="age", types=["FLOAT", "INTEGER"]),
                PropertyInfo(name="name", types=["STRING"]),
            ],
            count=None,
        ),
    ]
    assert types == [
        LabelInfo(
            name="KNOWS",
            properties=[PropertyInfo(name="since", types=["DATE"])],
            count=None,
            endpoints=[("Person", "Person")],
        ),
        LabelInfo(name="LIKES", count=None, endpoints=[("Person", "X")]),
    ]


# -- SHOW INDEX INFO / SHOW CONSTRAINT INFO --------------------------------------------------

INDEX_ROWS: list[dict[str, Any]] = [
    {"index type": "edge-property", "label": None, "property": "weight", "count": 7},
    {"index type": "edge-type", "label": "KNOWS", "property": None, "count": 4},
    {"index type": "edge-type+property", "label": "KNOWS", "property": "since", "count": 4},
    {"index type": "edge-type+property_vector", "label": "SIM", "property": "emb", "count": 0},
    {"index type": "edge-type_text (name: t2)", "label": "SAID", "property": ["text"], "count": 1},
    {"index type": "label", "label": "Person", "property": None, "count": 12},
    {"index type": "label+property", "label": "Person", "property": ["name"], "count": 12},
    {"index type": "label+property", "label": "Person", "property": ["a", "b"], "count": 3},
    {"index type": "label+property (DESC)", "label": "Person", "property": ["age"], "count": 12},
    {"index type": "label+property", "label": "Old", "property": "name", "count": 1},
    {"index type": "label+property_vector", "label": "Doc", "property": "emb", "count": 9},
    {"index type": "label_text (name: t1)", "label": "Doc", "property": [], "count": 9},
    {"index type": "point", "label": "Place", "property": "loc", "count": 2},
    {"index type": "vertex-property", "label": None, "property": "uid", "count": 5},
]


def test_index_info() -> None:
    assert memgraph_indexes(INDEX_ROWS) == [
        IndexInfo(label="", properties=["weight"], kind="range", entity="relationship"),
        IndexInfo(label="KNOWS", properties=[], kind="label", entity="relationship"),
        IndexInfo(label="KNOWS", properties=["since"], kind="range", entity="relationship"),
        IndexInfo(label="SIM", properties=["emb"], kind="vector", entity="relationship"),
        IndexInfo(label="SAID", properties=["text"], kind="text", entity="relationship"),
        IndexInfo(label="Person", properties=[], kind="label", entity="node"),
        IndexInfo(label="Person", properties=["name"], kind="range", entity="node"),
        IndexInfo(label="Person", properties=["a", "b"], kind="range", entity="node"),
        IndexInfo(label="Person", properties=["age"], kind="range", entity="node"),
        IndexInfo(label="Old", properties=["name"], kind="range", entity="node"),
        IndexInfo(label="Doc", properties=["emb"], kind="vector", entity="node"),
        IndexInfo(label="Doc", properties=[], kind="text", entity="node"),
        IndexInfo(label="Place", properties=["loc"], kind="point", entity="node"),
        IndexInfo(label="", properties=["uid"], kind="range", entity="node"),
    ]


def test_constraint_info() -> None:
    rows: list[dict[str, Any]] = [
        {
            "constraint type": "exists",
            "label": "Employee",
            "properties": "first_name",
            "data_type": "",
        },
        {"constraint type": "unique", "label": "Employee", "properties": ["id"], "data_type": ""},
        {"constraint type": "unique", "label": "P", "properties": ["a", "b"], "data_type": ""},
        {"constraint type": "data_type", "label": "P", "properties": "age", "data_type": "INTEGER"},
    ]
    assert memgraph_constraints(rows) == [
        ConstraintInfo(label="Employee", properties=["first_name"], kind="mandatory"),
        ConstraintInfo(label="Employee", properties=["id"], kind="unique"),
        ConstraintInfo(label="P", properties=["a", "b"], kind="unique"),
        ConstraintInfo(label="P", properties=["age"], kind="type"),
    ]


def test_names_are_quoted_with_doubled_backticks() -> None:
    assert quote_name("Person") == "`Person`"
    assert quote_name("we`ird") == "`we``ird`"
