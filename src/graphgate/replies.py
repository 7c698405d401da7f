"""Encoding tool answers as JSON once, within a budget sized for a model's context.

Answers are serialised a single time (pydantic-core, in Rust) and sent as the
text content of the tool result; the same value, not rebuilt, is the
result's ``structuredContent`` (the MCP SDK serialises it with the rest of
the response). The reader is an LLM whose client refuses large tool
output (Claude Code: 25,000 tokens by default), so:

* very long lists (embeddings) and strings inside values are elided with a
  marker saying how long they were (`ValueLimits`);
* an answer over ``max_result_bytes`` keeps as many whole rows as fit and says
  how many it returned, how many it cut, and how to get the rest.

A client always gets valid JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pydantic_core
from fastmcp.tools import ToolResult
from mcp.types import TextContent

from graphgate.errors import ResultTooLarge


def encode(payload: Any) -> bytes:
    return pydantic_core.to_json(payload, serialize_unknown=True)


@dataclass(frozen=True, slots=True)
class ValueLimits:
    """How much of one value an answer shows: list items and string characters."""

    max_items: int = 100
    max_chars: int = 2000

    def could_elide(self, encoded_size: int) -> bool:
        """Whether an answer of this size can hold anything to elide at all.

        A list of more than ``max_items`` items takes at least two bytes per
        item, a string of more than ``max_chars`` characters at least that
        many bytes: smaller answers skip the walk over their values.
        """
        return encoded_size > min(2 * self.max_items, self.max_chars)


def elide(value: Any, limits: ValueLimits) -> tuple[Any, int]:
    """``value`` with long lists and strings shortened; the number of values shortened."""
    if isinstance(value, str):
        if len(value) <= limits.max_chars:
            return value, 0
        return f"{value[: limits.max_chars]}… [elided: {len(value)} characters in all]", 1
    if isinstance(value, list):
        shortened = 0
        items = value
        if len(value) > limits.max_items:
            items = value[: limits.max_items]
            shortened = 1
        kept = []
        for item in items:
            short, count = elide(item, limits)
            kept.append(short)
            shortened += count
        if len(value) > limits.max_items:
            kept.append(f"… [elided: {len(value)} items in all]")
        return (kept if shortened else value), shortened
    if isinstance(value, dict):
        shortened = 0
        fields = {}
        for key, item in value.items():
            short, count = elide(item, limits)
            fields[key] = short
            shortened += count
        return (fields if shortened else value), shortened
    return value, 0


def _elide_rows(rows: list[Any], limits: ValueLimits) -> tuple[list[Any], int]:
    """Each row's values elided; the rows themselves are never cut here.

    Eliding the list of rows as one value would cut a 1,000-row answer to
    ``max_items`` rows and a marker string, with ``row_count`` still 1,000:
    rows are cut by `_fit_rows`, whole, and said so.
    """
    shortened = 0
    kept = []
    for row in rows:
        values = []
        for value in row:
            short, count = elide(value, limits)
            values.append(short)
            shortened += count
        kept.append(values)
    return (kept if shortened else rows), shortened


def _fit_rows(answer: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """The answer with its rows cut to fit ``max_bytes`` (whole rows only)."""
    rows: list[Any] = answer["rows"]
    shell = {**answer, "rows": [], "row_count": 0, "truncated": True, "rows_cut": len(rows)}
    shell["hint"] = _hint(shell, max_bytes)
    budget = max_bytes - len(encode(shell)) - 16
    kept = 0
    for row in rows:
        size = len(encode(row)) + 1
        if size > budget:
            break
        budget -= size
        kept += 1
    fitted = {
        **answer,
        "rows": rows[:kept],
        "row_count": kept,
        "truncated": True,
        "rows_cut": len(rows) - kept,
    }
    fitted["hint"] = _hint(fitted, max_bytes)
    return fitted


def _hint(answer: dict[str, Any], max_bytes: int) -> str:
    """How to get the rows an answer left out, in Cypher a model can write next."""
    returned, cut = answer["row_count"], answer.get("rows_cut")
    counted = f", {cut} more in this answer" if cut else ""
    return (
        f"{returned} rows returned{counted}; the rest were cut to fit this server's row limit "
        f"and answer budget ({max_bytes} bytes): page with ORDER BY … SKIP {returned} "
        f"LIMIT {max(returned, 1)}, return fewer or smaller columns, or aggregate "
        "(count, collect, avg)"
    )


def bounded_rows(
    answer: dict[str, Any], max_bytes: int, limits: ValueLimits | None = None
) -> tuple[dict[str, Any], bytes]:
    """Encode a query answer (with ``rows``): long values elided, rows cut to fit."""
    encoded = encode(answer)
    limits = limits or ValueLimits()
    if limits.could_elide(len(encoded)):
        rows, shortened = _elide_rows(answer["rows"], limits)
        if shortened:
            answer = {**answer, "rows": rows, "values_elided": shortened}
            encoded = encode(answer)
    if len(encoded) <= max_bytes:
        if answer.get("truncated") and "hint" not in answer:
            answer = {**answer, "hint": _hint(answer, max_bytes)}
            encoded = encode(answer)
        return answer, encoded
    fitted = _fit_rows(answer, max_bytes)
    encoded = encode(fitted)
    if len(encoded) > max_bytes:
        raise ResultTooLarge(
            f"the answer exceeds the server's limit of {max_bytes} bytes even without rows; "
            "return fewer or smaller columns"
        )
    return fitted, encoded


def object_of_encoded(key: str, pieces: list[tuple[str, bytes]], max_bytes: int) -> bytes:
    """``{key: {name: piece, ...}}`` from pieces that are already JSON: no second pass."""
    inner = b",".join(encode(name) + b":" + piece for name, piece in pieces)
    encoded = b"{" + encode(key) + b":{" + inner + b"}}"
    if len(encoded) > max_bytes:
        raise ResultTooLarge(
            f"the answer is {len(encoded)} bytes, over the server's limit of {max_bytes}; "
            "query fewer databases or add a LIMIT"
        )
    return encoded


def reply(encoded: bytes, structured: Any) -> ToolResult:
    """The answer as text and as ``structuredContent``: the same value, encoded once.

    ``structured`` is the value ``encoded`` was made from (cut rows, elided
    values and all), so a client reading either sees the same answer.
    """
    # model_construct: FastMCP's constructor would turn ``structured`` into JSON and
    # back (a second and third pass over the rows) to make it JSON-ready; it
    # already is, and ``encoded`` proves it serialises.
    return ToolResult.model_construct(
        content=[TextContent(type="text", text=encoded.decode())], structured_content=structured
    )


def reply_json(payload: Any, max_bytes: int, *, wrapped: bool = False) -> ToolResult:
    """``payload`` as the answer; ``wrapped``: a list, whose structured form is {"result": ...}."""
    encoded = encode(payload)
    if len(encoded) > max_bytes:
        raise ResultTooLarge(
            f"the answer is {len(encoded)} bytes, over the server's limit of {max_bytes}; "
            "narrow it (a pattern, fewer databases, LIMIT)"
        )
    if wrapped:
        return ToolResult.model_construct(
            content=[TextContent(type="text", text=encoded.decode())],
            structured_content={"result": payload},
            meta={"fastmcp": {"wrap_result": True}},
        )
    return reply(encoded, payload)
