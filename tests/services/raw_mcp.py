"""Raw MCP requests in the default protocol (2026-07-28), for tests that shape them by hand.

One POST per call, no session: the protocol version and the client's
description travel in every request's ``_meta`` and headers. Hostile tests
build these bodies and headers themselves to vary them; the SDK client is
for everything else.
"""

from __future__ import annotations

from typing import Any

PROTOCOL = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL,
    "io.modelcontextprotocol/clientInfo": {"name": "graphgate-tests", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def tool_call_body(name: str, arguments: dict[str, Any], request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": META},
    }


def tool_call_headers(name: str) -> dict[str, str]:
    """The headers the protocol wants beside a ``tools/call`` of ``name``."""
    return {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": PROTOCOL,
        "mcp-method": "tools/call",
        "mcp-name": name,
    }
