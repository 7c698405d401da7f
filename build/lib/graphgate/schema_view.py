"""Turning a backend `Schema` into the bounded JSON answer of ``get_schema``.

A model reads this answer to write Cypher, so it must stay small enough for a
context window even on a database with thousands of labels: entries are cut
at fixed bounds and the answer says when it was cut.
"""

from __future__ import annotations

from typing import Any

from graphgate.backends.base import LabelInfo, Schema

MAX_ENTRIES = 200
MAX_PROPERTIES = 100


def _matches(needle: str | None, *names: str) -> bool:
    return needle is None or any(needle in name.casefold() for name in names)


def _label_entry(
    info: LabelInfo, key: str, needle: str | None, relationship: bool, linked: bool = False
) -> tuple[dict[str, Any] | None, bool]:
    """The entry for one label or type, or None when the pattern excludes it.

    ``linked``: a relationship type joining labels the pattern matched is
    kept whole, because a query over those labels needs its direction.
    """
    name_hit = linked or _matches(needle, info.name)
    properties = [p for p in info.properties if name_hit or _matches(needle, p.name)]
    if not name_hit and not properties:
        return None, False
    cut = len(properties) > MAX_PROPERTIES
    entry: dict[str, Any] = {
        key: info.name,
        "properties": [{"name": p.name, "types": p.types} for p in properties[:MAX_PROPERTIES]],
    }
    if info.count is not None:
        entry["count"] = info.count
    if relationship and info.endpoints:
        entry["endpoints"] = [{"start": s, "end": e} for s, e in info.endpoints[:MAX_ENTRIES]]
    return entry, cut


def _section(
    infos: list[LabelInfo],
    key: str,
    needle: str | None,
    relationship: bool,
    linked_to: frozenset[str] = frozenset(),
) -> tuple[list[dict[str, Any]], bool]:
    entries: list[dict[str, Any]] = []
    truncated = False
    for info in infos:
        linked = any(s in linked_to or e in linked_to for s, e in info.endpoints)
        entry, cut = _label_entry(info, key, needle, relationship, linked)
        if entry is None:
            continue
        if len(entries) == MAX_ENTRIES:
            return entries, True
        entries.append(entry)
        truncated = truncated or cut
    return entries, truncated


def schema_to_dict(schema: Schema, pattern: str | None, label: str | None = None) -> dict[str, Any]:
    """The answer, narrowed by ``pattern`` (text) or to one ``label`` and its relationships.

    Relationship types whose endpoints touch a matched label stay in the
    answer with their endpoints, even when their own names do not match.
    """
    needle = pattern.strip().casefold() if pattern and pattern.strip() else None
    if label is not None:
        schema = _around(schema, label)
        needle = None
    labels, labels_cut = _section(schema.node_labels, "label", needle, relationship=False)
    matched = frozenset(entry["label"] for entry in labels) if needle is not None else frozenset()
    types, types_cut = _section(
        schema.relationship_types, "type", needle, relationship=True, linked_to=matched
    )
    indexes = [
        {"label": i.label, "properties": i.properties, "type": i.kind, "entity": i.entity}
        for i in schema.indexes
        if _matches(needle, i.label, *i.properties)
    ]
    constraints = [
        {"label": c.label, "properties": c.properties, "type": c.kind, "entity": c.entity}
        for c in schema.constraints
        if _matches(needle, c.label, *c.properties)
    ]
    cut = labels_cut or types_cut or len(indexes) > MAX_ENTRIES or len(constraints) > MAX_ENTRIES
    return {
        "node_labels": labels,
        "relationship_types": types,
        "indexes": indexes[:MAX_ENTRIES],
        "constraints": constraints[:MAX_ENTRIES],
        "truncated": cut,
    }


def _around(schema: Schema, label: str) -> Schema:
    """One label, the relationship types touching it, and the labels at their other ends
    (names only), with the label's own indexes and constraints."""
    types = [t for t in schema.relationship_types if any(label in pair for pair in t.endpoints)]
    neighbours = {name for t in types for pair in t.endpoints for name in pair} - {label}
    nodes = [
        info if info.name == label else LabelInfo(name=info.name, count=info.count)
        for info in schema.node_labels
        if info.name == label or info.name in neighbours
    ]
    return Schema(
        node_labels=nodes,
        relationship_types=types,
        indexes=[i for i in schema.indexes if i.label == label],
        constraints=[c for c in schema.constraints if c.label == label],
    )
