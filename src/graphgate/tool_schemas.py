"""The output schemas the tools declare, and their MCP annotations.

Every tool answers with the same JSON twice: as text (what models read,
within ``max_result_bytes``) and as ``structuredContent`` (what clients
validate against these schemas; the MCP Python and TypeScript SDK clients
refuse a result that does not match). Both come from one dict, so they
cannot disagree. Row values are any JSON (nodes, paths, elided markers), so
the schemas fix the envelope, not the values.
"""

from __future__ import annotations

from typing import Any

from mcp.types import ToolAnnotations

__all__ = ["ANNOTATIONS", "OUTPUT_SCHEMAS"]

_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

_ROWS: dict[str, Any] = {
    "columns": {**_STRINGS, "description": "Column names, in RETURN order."},
    "rows": {
        "type": "array",
        "items": {"type": "array"},
        "description": "One array of values per row, in column order.",
    },
    "row_count": {"type": "integer", "minimum": 0},
    "truncated": {
        "type": "boolean",
        "description": "True when rows were cut (row limit or answer budget); see hint.",
    },
    "elapsed_ms": {"type": "number"},
    "rows_cut": {"type": "integer", "minimum": 0},
    "values_elided": {"type": "integer", "minimum": 0},
    "hint": {"type": "string", "description": "How to get the rows that were cut."},
}

_ONE_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": _ROWS,
    "required": ["columns", "rows", "row_count", "truncated"],
}

_QUERY_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {"database": {"type": "string"}, **_ROWS},
    "required": ["database", "columns", "rows", "row_count", "truncated"],
}

_WRITE_RESULT: dict[str, Any] = {
    **_QUERY_RESULT,
    "properties": {
        **_QUERY_RESULT["properties"],
        "stats": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "What changed: nodes_created, properties_set, ...",
        },
    },
    "required": [*_QUERY_RESULT["required"], "stats"],
}

_NAMED: dict[str, Any] = {"type": "object", "additionalProperties": True}

OUTPUT_SCHEMAS: dict[str, dict[str, Any]] = {
    "list_databases": {
        # Its answer is a list; MCP wants an object, so FastMCP's convention:
        # structuredContent {"result": [...]}, text the list itself.
        "type": "object",
        "properties": {
            "result": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "access": {"type": "string", "enum": ["read", "write"]},
                        "current": {"type": "boolean"},
                        "dialect": {
                            "type": "string",
                            "description": "The Cypher it speaks: FalkorDB, Neo4j 5, Memgraph.",
                        },
                    },
                    "required": ["name", "access", "current", "dialect"],
                },
            }
        },
        "required": ["result"],
        "x-fastmcp-wrap-result": True,
    },
    "use_database": {
        "type": "object",
        "properties": {"current": {"type": "string"}},
        "required": ["current"],
    },
    "run_query": _QUERY_RESULT,
    "run_write_query": _WRITE_RESULT,
    "get_schema": {
        "type": "object",
        "properties": {
            "database": {"type": "string"},
            "dialect": {"type": "string"},
            "dialect_notes": {"type": "string"},
            "node_labels": {"type": "array", "items": _NAMED},
            "relationship_types": {"type": "array", "items": _NAMED},
            "indexes": {"type": "array", "items": _NAMED},
            "constraints": {"type": "array", "items": _NAMED},
            "truncated": {"type": "boolean"},
        },
        "required": [
            "database",
            "dialect",
            "node_labels",
            "relationship_types",
            "indexes",
            "constraints",
            "truncated",
        ],
    },
    "query_databases": {
        "type": "object",
        "properties": {
            "results": {
                "type": "object",
                "description": "One entry per database: its rows, or {error}.",
                "additionalProperties": {
                    "anyOf": [
                        _ONE_RESULT,
                        {
                            "type": "object",
                            "properties": {"error": {"type": "string"}},
                            "required": ["error"],
                        },
                    ]
                },
            }
        },
        "required": ["results"],
    },
    "explain_query": {
        "type": "object",
        "properties": {
            "database": {"type": "string"},
            "dialect": {"type": "string"},
            "writes": {
                "type": "boolean",
                "description": "Whether the plan changes data: run it with run_write_query.",
            },
            "write_operations": {**_STRINGS, "description": "The plan's write operators."},
            "labels": {**_STRINGS, "description": "Node labels the query names."},
            "relationship_types": {**_STRINGS, "description": "Relationship types it names."},
            "plan": {**_STRINGS, "description": "The planner's operators, one per line."},
            "truncated": {"type": "boolean"},
        },
        "required": [
            "database",
            "dialect",
            "writes",
            "write_operations",
            "labels",
            "relationship_types",
            "plan",
            "truncated",
        ],
    },
}

_READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
_SESSION_STATE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
_WRITE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
)

ANNOTATIONS: dict[str, ToolAnnotations] = {
    "list_databases": _READ_ONLY,
    "use_database": _SESSION_STATE,
    "run_query": _READ_ONLY,
    "run_write_query": _WRITE,
    "get_schema": _READ_ONLY,
    "query_databases": _READ_ONLY,
    "explain_query": _READ_ONLY,
}
"""``use_database`` changes only the session's choice (no data), and choosing the
same database twice is the same as once; ``run_write_query`` may delete, and a
CREATE run twice creates twice."""
