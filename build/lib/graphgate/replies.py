"""Encoding tool answers as JSON once, within the per-call byte budget.

Answers are serialised a single time (pydantic-core, in Rust) and sent as the
text content of the tool result: no second pass to build structured content
from the same rows. An answer over ``max_result_bytes`` keeps as many whole
rows as fit and says ``truncated: true``, so a client always gets valid JSON.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from fastmcp.tools import ToolResult
from mcp.types import TextContent

from graphgate.errors import ResultTooLarge


def encode(payload: Any) -> bytes:
    return pydantic_core.to_json(payload, serialize_unknown=True)


def _fit_rows(answer: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """The answer with its rows cut to fit ``max_bytes`` (whole rows only)."""
    rows: list[Any] = answer["rows"]
    shell = {**answer, "rows": [], "row_count": 0, "truncated": True}
    budget = max_bytes - len(encode(shell)) - 16
    kept = 0
    for row in rows:
        size = len(encode(row)) + 1
        if size > budget:
            break
        budget -= size
        kept += 1
    return {**answer, "rows": rows[:kept], "row_count": kept, "truncated": True}


def bounded_rows(answer: dict[str, Any], max_bytes: int) -> tuple[dict[str, Any], bytes]:
    """Encode a query answer (with ``rows``), cutting rows when it is too large."""
    encoded = encode(answer)
    if len(encoded) <= max_bytes:
        return answer, encoded
    fitted = _fit_rows(answer, max_bytes)
    encoded = encode(fitted)
    if len(encoded) > max_bytes:
        raise ResultTooLarge(
            f"the answer exceeds the server's limit of {max_bytes} bytes even without rows"
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


def reply(encoded: bytes) -> ToolResult:
    return ToolResult(content=[TextContent(type="text", text=encoded.decode())])


def reply_json(payload: Any, max_bytes: int) -> ToolResult:
    encoded = encode(payload)
    if len(encoded) > max_bytes:
        raise ResultTooLarge(
            f"the answer is {len(encoded)} bytes, over the server's limit of {max_bytes}; "
            "narrow it (a pattern, fewer databases, LIMIT)"
        )
    return reply(encoded)
