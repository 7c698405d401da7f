"""Reading what graphgate answers in tests: tool results and bearer challenges."""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
from mcp import Client


async def tool(client: Client, name: str, /, **arguments: Any) -> Any:
    """The tool's JSON answer; a tool error fails the test with its text."""
    result = await client.call_tool(name, arguments)
    text = result.content[0].text  # type: ignore[union-attr]
    if result.is_error:
        raise AssertionError(text)
    return json.loads(text)


async def tool_error(client: Client, name: str, /, **arguments: Any) -> str:
    """The text of the tool error the call must give."""
    result = await client.call_tool(name, arguments)
    assert result.is_error, result
    return str(result.content[0].text)  # type: ignore[union-attr]


def challenge_error(response: httpx.Response | httpx2.Response) -> str | None:
    """The ``error`` of a ``WWW-Authenticate: Bearer`` challenge, if any."""
    header = response.headers.get("www-authenticate", "")
    for part in header.removeprefix("Bearer ").split(", "):
        name, _, value = part.partition("=")
        if name == "error":
            return value.strip('"')
    return None
