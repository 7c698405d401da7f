"""How long a client may take, and how many connections it may hold (issue 13.3).

Four bounds, each a setting:

* ``header_timeout``: the request line and headers must arrive within it,
  counted from the connection (or, on a keep-alive connection, from the
  request's first byte). Enforced at the connection level by
  `graphgate.header_timeout`, because uvicorn has no such setting.
* ``body_timeout``: the whole body must arrive within it, counted from the
  headers. Enforced here, around the app: `BodyTimeout`.
* ``keepalive_timeout``: an idle keep-alive connection is closed after it
  (uvicorn's ``timeout_keep_alive``).
* ``max_connections``: past it new requests get ``503`` (uvicorn's
  ``limit_concurrency``, which counts open connections and running requests).

A client that is too slow, or that leaves in the middle of its body, is not
a server error: it is logged at debug level, without a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graphgate.config import Settings
from graphgate.header_timeout import header_timeout_protocol

__all__ = ["BodyTimeout", "connection_limits"]

logger = logging.getLogger(__name__)


def connection_limits(settings: Settings) -> dict[str, Any]:
    """The `uvicorn.Config` arguments that bound connections, from the settings."""
    return {
        "http": header_timeout_protocol(settings.header_timeout),
        "timeout_keep_alive": settings.keepalive_timeout,
        "limit_concurrency": settings.max_connections,
    }


class BodyTimeout:
    """Give up on a request whose body does not arrive in time, or whose client left.

    The app is cancelled while it waits for the body (before it has acted on
    the request), instead of being handed a disconnect that the MCP SDK would
    log as an error with a traceback. A client still connected gets ``408``
    and the connection is closed. Once the body is complete, ``receive`` is
    the server's own again (a streaming response waits on it for the
    disconnect, however long the stream lasts).
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        request = _BodyWatch(scope, receive, send, anyio.current_time() + self.seconds)
        with anyio.CancelScope() as request.cancel_scope:
            await self.app(scope, request.receive, request.send)
        if request.gave_up is not None:
            await request.give_up(self.seconds)


def _has_body(scope: Scope) -> bool:
    """Whether the request announces a body (HTTP/1.1 framing, RFC 9112 §6.3)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


class _BodyWatch:
    """One request's receive and send, as `BodyTimeout` watches them."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, deadline: float) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.deadline = deadline
        self.body_complete = False
        self.response_started = False
        self.gave_up: str | None = None  # "timeout" or "disconnect"
        self.cancel_scope: anyio.CancelScope | None = None

    async def receive(self) -> Message:
        if self.body_complete:
            return await self._receive()
        with anyio.move_on_after(self.deadline - anyio.current_time()):
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return await self._stop("disconnect")
            if not message.get("more_body", False):
                self.body_complete = True
            return message
        return await self._stop("timeout")

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)

    async def _stop(self, reason: str) -> Message:
        self.gave_up = reason
        assert self.cancel_scope is not None
        self.cancel_scope.cancel()
        await anyio.sleep_forever()
        raise AssertionError("unreachable: the scope was cancelled")  # pragma: no cover

    async def give_up(self, seconds: float) -> None:
        client = self.scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "a client"
        if self.gave_up == "disconnect":
            logger.debug("%s left during its request body; the request was dropped", peer)
            return
        logger.debug("dropped the request of %s: its body took longer than %g s", peer, seconds)
        if self.response_started:
            return
        # Connection: close, so that the server closes the connection after the answer.
        response = JSONResponse(
            {
                "error": "request_timeout",
                "error_description": f"the request body did not arrive within {seconds:g} s",
            },
            status_code=408,
            headers={"Connection": "close"},
        )
        await response(self.scope, self._receive, self._send)
