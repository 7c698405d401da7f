"""Schema statements for Neo4j and Memgraph, and parsers for what they answer.

The parsers are pure functions over plain rows (``record.data()``), so every
documented response shape is unit-tested without a server. Shapes, as
measured (Neo4j 5.26) or as written in Memgraph's source
(``src/query/interpreter.cpp``, ``src/storage/v2/schema_info.cpp``):

* Neo4j ``db.schema.nodeTypeProperties()``: ``nodeLabels`` (list),
  ``propertyName`` (null for a label without properties), ``propertyTypes``
  (list such as ``["String"]``, or null). ``relTypeProperties()`` the same
  with ``relType`` spelled ``":`KNOWS`"``.
* Neo4j ``SHOW INDEXES``: ``type`` (RANGE, TEXT, POINT, FULLTEXT, VECTOR,
  LOOKUP), ``entityType`` (NODE, RELATIONSHIP), ``labelsOrTypes`` and
  ``properties`` (lists; null for LOOKUP). ``SHOW CONSTRAINTS``: ``type``
  (UNIQUENESS, NODE_KEY, NODE_PROPERTY_EXISTENCE, NODE_PROPERTY_TYPE and the
  RELATIONSHIP_ variants), ``entityType``, ``labelsOrTypes``, ``properties``.
* Memgraph ``SHOW SCHEMA INFO`` (needs ``--schema-info-enabled``; only in
  an auto-commit transaction): one column ``schema`` holding JSON text with
  ``nodes`` (``labels``, ``count``, ``properties`` of ``key``, ``count``,
  ``filling_factor``, ``types`` of ``type``, ``count``), ``edges`` (``type``,
  ``start_node_labels``, ``end_node_labels``, ``count``, ``properties``),
  ``node_indexes``, ``edge_indexes``, ``node_constraints``, ``enums``.
* Memgraph ``SHOW INDEX INFO``: columns ``index type``, ``label``,
  ``property``, ``count``. ``property`` is null (label and edge-type
  indexes), a string, or a list (composite label+property indexes); ``index
  type`` is one of ``label``, ``label+property`` (``... (DESC)``),
  ``edge-type``, ``edge-type+property``, ``edge-property``,
  ``vertex-property``, ``point``, ``label_text (name: x)``, ``edge-type_text
  (name: x)``, ``label+property_vector``, ``edge-type+property_vector``.
* Memgraph ``SHOW CONSTRAINT INFO``: ``constraint type`` (``exists``,
  ``unique``, ``data_type``), ``label``, ``properties`` (string, or list for
  unique), ``data_type``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from graphgate.backends.base import ConstraintInfo, IndexInfo, LabelInfo, PropertyInfo
from graphgate.errors import QueryError

__all__ = [
    "MEMGRAPH_CONSTRAINTS",
    "MEMGRAPH_INDEXES",
    "MEMGRAPH_NODE_SAMPLE",
    "MEMGRAPH_REL_ENDPOINTS",
    "MEMGRAPH_REL_SAMPLE",
    "MEMGRAPH_SCHEMA_INFO",
    "NEO4J_CONSTRAINTS",
    "NEO4J_INDEXES",
    "NEO4J_NODE_PROPERTIES",
    "NEO4J_REL_PROPERTIES",
    "Collector",
    "memgraph_constraints",
    "memgraph_indexes",
    "memgraph_sampled",
    "memgraph_schema_info",
    "neo4j_constraints",
    "neo4j_indexes",
    "neo4j_labels",
    "quote_name",
]

Row = Mapping[str, Any]

NEO4J_NODE_PROPERTIES = (
    "CALL db.schema.nodeTypeProperties() YIELD nodeLabels, propertyName, propertyTypes "
    "RETURN nodeLabels, propertyName, propertyTypes"
)
NEO4J_REL_PROPERTIES = (
    "CALL db.schema.relTypeProperties() YIELD relType, propertyName, propertyTypes "
    "RETURN relType, propertyName, propertyTypes"
)
NEO4J_INDEXES = (
    "SHOW INDEXES YIELD name, type, entityType, labelsOrTypes, properties "
    "RETURN name, type, entityType, labelsOrTypes, properties"
)
NEO4J_CONSTRAINTS = (
    "SHOW CONSTRAINTS YIELD name, type, entityType, labelsOrTypes, properties "
    "RETURN name, type, entityType, labelsOrTypes, properties"
)
MEMGRAPH_SCHEMA_INFO = "SHOW SCHEMA INFO"
MEMGRAPH_INDEXES = "SHOW INDEX INFO"
MEMGRAPH_CONSTRAINTS = "SHOW CONSTRAINT INFO"
# The fallback when SHOW SCHEMA INFO is disabled: a sample of the graph, not exact.
MEMGRAPH_NODE_SAMPLE = (
    "MATCH (n) WITH n LIMIT $sample UNWIND labels(n) AS label "
    "UNWIND (CASE WHEN size(keys(n)) = 0 THEN [null] ELSE keys(n) END) AS key "
    "RETURN label, key, collect(DISTINCT CASE WHEN key IS NULL THEN null "
    "ELSE valueType(n[key]) END) AS types"
)
MEMGRAPH_REL_SAMPLE = (
    "MATCH ()-[r]->() WITH r LIMIT $sample "
    "UNWIND (CASE WHEN size(keys(r)) = 0 THEN [null] ELSE keys(r) END) AS key "
    "RETURN type(r) AS type, key, collect(DISTINCT CASE WHEN key IS NULL THEN null "
    "ELSE valueType(r[key]) END) AS types"
)
MEMGRAPH_REL_ENDPOINTS = (
    "MATCH (a)-[r]->(b) WITH a, r, b LIMIT $sample "
    "UNWIND labels(a) AS s UNWIND labels(b) AS e RETURN DISTINCT type(r) AS type, s, e"
)


def quote_name(name: str) -> str:
    """A label or type as a Cypher identifier: backticks, with ``` doubled."""
    return "`" + name.replace("`", "``") + "`"


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


class Collector:
    """Labels (or types) with their properties' types, in first-seen order."""

    def __init__(self) -> None:
        self.properties: dict[str, dict[str, list[str]]] = {}
        self.counts: dict[str, int] = {}
        self.endpoints: dict[str, list[tuple[str, str]]] = {}

    def label(self, name: str) -> dict[str, list[str]]:
        return self.properties.setdefault(name, {})

    def add(self, name: str, key: str | None, types: Iterable[str]) -> None:
        properties = self.label(name)
        if key is None:
            return
        known = properties.setdefault(key, [])
        known.extend(kind for kind in types if kind not in known)

    def count(self, name: str, amount: Any) -> None:
        if isinstance(amount, int) and not isinstance(amount, bool):
            self.counts[name] = self.counts.get(name, 0) + amount

    def endpoint(self, name: str, start: str, end: str) -> None:
        pairs = self.endpoints.setdefault(name, [])
        if (start, end) not in pairs:
            pairs.append((start, end))

    def infos(self, *, counted: bool) -> list[LabelInfo]:
        return [
            LabelInfo(
                name=name,
                properties=[
                    PropertyInfo(name=key, types=sorted(types))
                    for key, types in sorted(props.items())
                ],
                count=self.counts.get(name, 0) if counted else None,
                endpoints=sorted(self.endpoints.get(name, [])),
            )
            for name, props in sorted(self.properties.items())
        ]


# -- Neo4j -----------------------------------------------------------------------------------


def _neo4j_type_name(raw: Any) -> str:
    """``:`KNOWS``` -> ``KNOWS`` (Neo4j quotes every type and doubles inner backticks)."""
    text = str(raw)
    if text.startswith(":"):
        text = text[1:]
    if len(text) >= 2 and text.startswith("`") and text.endswith("`"):
        text = text[1:-1].replace("``", "`")
    return text


def neo4j_labels(
    node_rows: Iterable[Row],
    rel_rows: Iterable[Row],
    *,
    labels: Iterable[str] = (),
    types: Iterable[str] = (),
) -> tuple[Collector, Collector]:
    """Labels and types from ``db.schema.*TypeProperties``, plus any the procedures skip."""
    nodes, rels = Collector(), Collector()
    for label in labels:
        nodes.label(label)
    for rel_type in types:
        rels.label(rel_type)
    for row in node_rows:
        for label in _strings(row.get("nodeLabels")):
            nodes.add(label, row.get("propertyName"), _strings(row.get("propertyTypes")))
    for row in rel_rows:
        name = _neo4j_type_name(row.get("relType"))
        rels.add(name, row.get("propertyName"), _strings(row.get("propertyTypes")))
    return nodes, rels


def _entity(value: Any) -> str:
    return "relationship" if str(value).upper() in {"RELATIONSHIP", "EDGE"} else "node"


def neo4j_indexes(rows: Iterable[Row]) -> list[IndexInfo]:
    """One `IndexInfo` per label or type; LOOKUP (token) indexes are the server's own."""
    found = []
    for row in rows:
        kind = str(row.get("type", "")).lower()
        if kind == "lookup":
            continue
        for label in _strings(row.get("labelsOrTypes")):
            found.append(
                IndexInfo(
                    label=label,
                    properties=_strings(row.get("properties")),
                    kind=kind,
                    entity=_entity(row.get("entityType")),
                )
            )
    return found


def _constraint_kind(raw: str) -> str:
    upper = raw.upper()
    if "UNIQUE" in upper:
        return "unique"
    if upper.endswith("KEY"):
        return "key"
    if "EXIST" in upper:
        return "mandatory"
    if "TYPE" in upper:
        return "type"
    return raw.lower()


def neo4j_constraints(rows: Iterable[Row]) -> list[ConstraintInfo]:
    """Kinds normalised to FalkorDB's words where they mean the same: unique, mandatory."""
    found = []
    for row in rows:
        for label in _strings(row.get("labelsOrTypes")):
            found.append(
                ConstraintInfo(
                    label=label,
                    properties=_strings(row.get("properties")),
                    kind=_constraint_kind(str(row.get("type", ""))),
                    entity=_entity(row.get("entityType")),
                )
            )
    return found


# -- Memgraph --------------------------------------------------------------------------------


def memgraph_schema_info(text: Any) -> tuple[list[LabelInfo], list[LabelInfo]]:
    """Labels and edge types from ``SHOW SCHEMA INFO``.

    Memgraph tracks nodes by their whole label *set*; graphgate reports per
    label, so a node labelled ``A:B`` counts towards both ``A`` and ``B`` and
    lends each its properties. Unlabelled nodes have no label to report.
    """
    try:
        document = json.loads(text) if isinstance(text, str | bytes) else text
    except ValueError as exc:
        raise QueryError(f"SHOW SCHEMA INFO returned text that is not JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise QueryError("SHOW SCHEMA INFO returned JSON that is not an object")
    nodes, rels = Collector(), Collector()
    for node in document.get("nodes") or ():
        for label in _strings(node.get("labels")):
            nodes.label(label)
            nodes.count(label, node.get("count"))
            for prop in node.get("properties") or ():
                kinds = [str(kind.get("type")) for kind in prop.get("types") or ()]
                nodes.add(label, str(prop.get("key")), kinds)
    for edge in document.get("edges") or ():
        # Memgraph's documentation shows ":EDGE"; its source writes the bare name.
        name = str(edge.get("type", "")).removeprefix(":")
        rels.label(name)
        rels.count(name, edge.get("count"))
        for start in _strings(edge.get("start_node_labels")):
            for end in _strings(edge.get("end_node_labels")):
                rels.endpoint(name, start, end)
        for prop in edge.get("properties") or ():
            kinds = [str(kind.get("type")) for kind in prop.get("types") or ()]
            rels.add(name, str(prop.get("key")), kinds)
    return nodes.infos(counted=True), rels.infos(counted=True)


def memgraph_sampled(
    node_rows: Iterable[Row], rel_rows: Iterable[Row], endpoint_rows: Iterable[Row]
) -> tuple[list[LabelInfo], list[LabelInfo]]:
    """The fallback's answer: sampled labels, types and endpoints, without counts."""
    nodes, rels = Collector(), Collector()
    for row in node_rows:
        nodes.add(str(row["label"]), row.get("key"), _strings(row.get("types")))
    for row in rel_rows:
        rels.add(str(row["type"]), row.get("key"), _strings(row.get("types")))
    for row in endpoint_rows:
        rels.label(str(row["type"]))
        rels.endpoint(str(row["type"]), str(row["s"]), str(row["e"]))
    return nodes.infos(counted=False), rels.infos(counted=False)


def _memgraph_index_kind(raw: str) -> tuple[str, str]:
    """(kind, entity) for an ``index type`` value."""
    base = raw.split(" (", 1)[0].strip().lower()
    entity = "relationship" if base.startswith("edge") else "node"
    if base.endswith("_vector"):
        return "vector", entity
    if "_text" in base:
        return "text", entity
    if base == "point":
        return "point", entity
    if base in {"label", "edge-type"}:
        return "label", entity
    return "range", entity


def memgraph_indexes(rows: Iterable[Row]) -> list[IndexInfo]:
    found = []
    for row in rows:
        kind, entity = _memgraph_index_kind(str(row.get("index type", "")))
        found.append(
            IndexInfo(
                label=str(row.get("label") or ""),
                properties=_strings(row.get("property")),
                kind=kind,
                entity=entity,
            )
        )
    return found


_MEMGRAPH_CONSTRAINT_KINDS = {"exists": "mandatory", "unique": "unique", "data_type": "type"}


def memgraph_constraints(rows: Iterable[Row]) -> list[ConstraintInfo]:
    found = []
    for row in rows:
        raw = str(row.get("constraint type", "")).lower()
        found.append(
            ConstraintInfo(
                label=str(row.get("label") or ""),
                properties=_strings(row.get("properties")),
                kind=_MEMGRAPH_CONSTRAINT_KINDS.get(raw, raw),
                entity="node",
            )
        )
    return found
