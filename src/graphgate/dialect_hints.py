"""One-line notes on each Cypher dialect, where a model is likely to write the wrong one.

Models write Neo4j's Cypher by default. A FalkorDB or Memgraph tenant then
gets ``SHOW INDEXES``, ``datetime()`` or ``shortestPath`` in ``MATCH``, and
the database's error alone rarely says what to write instead. So:

* ``list_databases`` says each tenant's dialect (`dialect_label`);
* ``get_schema`` carries the dialect's summary line (`summary`);
* a query error carries the note on the topic the query or the error is
  about, indexes, vector search, dates or paths (`error_hint`), and nothing
  when it is about none of them.

Each note was checked against the servers graphgate is tested on (FalkorDB
4.16, Neo4j 5.26) and, for Memgraph, against its documentation
(bench/dialects.py measures that the reference queries it names run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DialectNotes", "dialect_label", "error_hint", "notes_for", "summary"]

Topic = str


@dataclass(frozen=True, slots=True)
class DialectNotes:
    label: str
    summary: str
    topics: dict[Topic, str]


_NOTES: dict[str, DialectNotes] = {
    "falkordb": DialectNotes(
        label="FalkorDB",
        summary=(
            "FalkorDB Cypher: no datetime() (use date(), localdatetime(), timestamp()); "
            "shortestPath() only in WITH/RETURN; list indexes with CALL db.indexes(), "
            "not SHOW INDEXES; vector search with CALL db.idx.vector.queryNodes(label, "
            "property, k, vecf32($vector))."
        ),
        topics={
            "index": "FalkorDB: CREATE INDEX FOR (n:Label) ON (n.property); list indexes "
            "with CALL db.indexes() (SHOW INDEXES does not exist).",
            "vector": "FalkorDB: CREATE VECTOR INDEX FOR (n:Label) ON (n.embedding) OPTIONS "
            "{dimension: 768, similarityFunction: 'cosine'}; search with CALL "
            "db.idx.vector.queryNodes('Label', 'embedding', 10, vecf32($vector)) "
            "YIELD node, score.",
            "date": "FalkorDB: date(), localtime(), localdatetime(), duration() and "
            "timestamp(); there is no datetime() and no time zones.",
            "path": "FalkorDB: shortestPath()/allShortestPaths() only in WITH or RETURN: "
            "MATCH (a:L {…}), (b:L {…}) RETURN shortestPath((a)-[*]->(b)).",
        },
    ),
    "neo4j": DialectNotes(
        label="Neo4j 5",
        summary=(
            "Neo4j 5 Cypher: SHOW INDEXES / SHOW CONSTRAINTS (db.indexes() is gone); "
            "vector search with CALL db.index.vector.queryNodes(indexName, k, $vector); "
            "date(), datetime() with time zones, duration.between(); shortestPath() in MATCH."
        ),
        topics={
            "index": "Neo4j 5: CREATE INDEX name IF NOT EXISTS FOR (n:Label) ON (n.property); "
            "list them with SHOW INDEXES (CALL db.indexes() was removed in 5).",
            "vector": "Neo4j 5: CREATE VECTOR INDEX name FOR (n:Label) ON n.embedding OPTIONS "
            "{indexConfig: {`vector.dimensions`: 768, `vector.similarity_function`: "
            "'cosine'}}; search with CALL db.index.vector.queryNodes('name', 10, $vector) "
            "YIELD node, score.",
            "date": "Neo4j 5: date(), datetime() (zoned), localdatetime(), duration(), "
            "duration.between(a, b); temporal properties keep their types.",
            "path": "Neo4j 5: MATCH p = shortestPath((a)-[*]->(b)) (or SHORTEST 1 in 5.21+).",
        },
    ),
    "memgraph": DialectNotes(
        label="Memgraph",
        summary=(
            "Memgraph Cypher: CREATE INDEX ON :Label(property) (indexes are listed by "
            "get_schema: SHOW INDEX INFO does not run as a query here); "
            "vector search with CALL vector_search.search(index, k, $vector); shortest "
            "paths with (a)-[*BFS]->(b) or [*WSHORTEST], not shortestPath(); date(), "
            "localTime(), localDateTime(), duration()."
        ),
        topics={
            "index": "Memgraph: CREATE INDEX ON :Label(property) with run_write_query; "
            "get_schema lists the indexes (SHOW INDEX INFO, SHOW INDEXES and db.indexes() "
            "do not run as queries here).",
            "vector": "Memgraph: CREATE VECTOR INDEX name ON :Label(embedding) WITH CONFIG "
            '{"dimension": 768, "capacity": 1000}; search with CALL '
            "vector_search.search('name', 10, $vector) YIELD node, similarity.",
            "date": "Memgraph: date(), localTime(), localDateTime(), duration(); "
            "datetime() with time zones only in recent versions.",
            "path": "Memgraph: MATCH p = (a)-[*BFS]->(b) (unweighted) or "
            "(a)-[*WSHORTEST (r, n | r.weight)]->(b); shortestPath() does not exist.",
        },
    ),
}

_TOPIC_WORDS: dict[Topic, re.Pattern[str]] = {
    "vector": re.compile(r"\b(vector|vecf32|embeddings?|similarity)\b"),
    "index": re.compile(r"\b(index|indexes|constraints?)\b"),
    "date": re.compile(r"\b(date|datetime|localdatetime|localtime|duration|timestamp|temporal)\b"),
    "path": re.compile(r"\b(shortestpath|allshortestpaths|shortest|bfs|wshortest)\b"),
}
"""Whole words, checked in order: a vector index is about vectors first."""

_UNKNOWN_WORDS = ("unknown function", "unknown procedure", "no procedure", "not found")


def notes_for(dialect: str | None) -> DialectNotes | None:
    return _NOTES.get(dialect or "")


def dialect_label(dialect: str | None) -> str:
    """How list_databases names the dialect ("FalkorDB", "Neo4j 5"); "unknown" before contact."""
    notes = notes_for(dialect)
    return notes.label if notes is not None else "unknown"


def summary(dialect: str | None) -> str | None:
    notes = notes_for(dialect)
    return notes.summary if notes is not None else None


def error_hint(dialect: str | None, query: str | None, message: str) -> str | None:
    """The note on what a failed query was about, or None when it was about none of them.

    The error's words count first (the database names what it did not
    know), then the query's; an unknown function or procedure on no known
    topic gets the dialect's summary.
    """
    notes = notes_for(dialect)
    if notes is None:
        return None
    said = message.casefold()
    for text in (said, (query or "").casefold()):
        for topic, words in _TOPIC_WORDS.items():
            if words.search(text):
                return notes.topics[topic]
    if any(word in said for word in _UNKNOWN_WORDS):
        return notes.summary
    return None
