"""A lean MCP load generator: the SDK client's requests, without the SDK.

On a two-CPU machine the `mcp` SDK client spends 1.5-2 ms of CPU per call,
as much as the server it measures, so a throughput comparison made with it
is partly a measurement of the client (and favours the server whose answers
are cheaper for the SDK to validate). A `WireClient` sends, on one
keep-alive HTTP/1.1 connection, byte for byte the requests the SDK sends in
the default protocol (2026-07-28: one POST per call, the same headers and
``_meta``), parses the answer with httptools (uvicorn's parser) and checks it
as strictly as a load generator must: HTTP 200, a JSON-RPC result with the
request's id, ``isError`` false. Nothing more: no output-schema validation,
no tool-list cache. About 0.1 ms of CPU per call.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import httptools

PROTOCOL = "2026-07-28"
_META = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL,
    "io.modelcontextprotocol/clientInfo": {"name": "graphgate-bench-wire", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


class WireError(RuntimeError):
    """A call whose answer was not a successful result."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: a request out, the whole response in."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.lost: BaseException | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport instances

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(WireError(f"unparsable HTTP response: {exc}"))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionResetError("the server closed the connection")
        self._fail(self.lost)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)


class WireClient:
    """MCP calls over one keep-alive connection, as the SDK would send them."""

    def __init__(self, url: str, token: str | None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self._head = (
            f"POST {self.path} HTTP/1.1\r\n"
            f"host: {parts.netloc}\r\n"
            "accept: application/json, text/event-stream\r\n"
            "content-type: application/json\r\n"
            f"mcp-protocol-version: {PROTOCOL}\r\n"
            + (f"authorization: Bearer {token}\r\n" if token else "")
        )
        self._conn: _Connection | None = None
        self._next_id = 0

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, self._conn = await loop.create_connection(_Connection, self.host, self.port)
        await self.request("server/discover", {})

    async def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The tool's result; `WireError` unless it succeeded (``isError`` false)."""
        result = await self.request(
            "tools/call", {"name": name, "arguments": arguments}, mcp_name=name
        )
        if result.get("isError") is not False:
            raise WireError(f"tool error: {json.dumps(result)[:300]}")
        return result

    async def request(
        self, method: str, params: dict[str, Any], *, mcp_name: str | None = None
    ) -> dict[str, Any]:
        conn = self._conn
        if conn is None or conn.transport is None or conn.lost is not None:
            raise WireError("not connected")
        self._next_id += 1
        request_id = self._next_id
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "method": method,
                "params": {**params, "_meta": _META},
            },
            separators=(",", ":"),
        ).encode()
        head = self._head + f"mcp-method: {method}\r\n"
        if mcp_name is not None:
            head += f"mcp-name: {mcp_name}\r\n"
        head += f"content-length: {len(body)}\r\n\r\n"
        conn.waiter = asyncio.get_running_loop().create_future()
        conn.transport.write(head.encode() + body)
        status, payload = await conn.waiter
        if status != 200:
            raise WireError(f"{method}: HTTP {status} {payload[:200]!r}")
        message = json.loads(payload)
        if message.get("id") != request_id or "result" not in message:
            raise WireError(f"{method}: not the answer to request {request_id}: {payload[:300]!r}")
        result: dict[str, Any] = message["result"]
        return result
