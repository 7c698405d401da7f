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

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graphgate.config import Settings
from graphgate.errors import RequestTimeout, to_http_response
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

    The request's task is cancelled while the app waits for the body (before
    it has acted on the request), instead of the app being handed a
    disconnect that the MCP SDK would log as an error with a traceback. A
    client still connected gets ``408`` and the connection is closed. Once the
    body is complete, ``receive`` is the server's own again (a streaming
    response waits on it for the disconnect, however long the stream lasts).

    One timer per request and no cancel scopes: this wraps every POST, and
    with anyio's scopes it cost ~27 µs a request (measured in-process on the
    2-core test machine), with a timer ~10 µs.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        watch = _BodyWatch(scope, receive, send, task)
        watch.timer = asyncio.get_running_loop().call_later(self.seconds, watch.expire)
        try:
            await self.app(scope, watch.receive, watch.send)
        except asyncio.CancelledError:
            if watch.gave_up is None:
                raise
            task.uncancel()  # the cancellation was ours, and ends here
        finally:
            watch.timer.cancel()
        if watch.gave_up is not None:
            await watch.give_up(self.seconds)


def _has_body(scope: Scope) -> bool:
    """Whether the request announces a body (HTTP/1.1 framing, RFC 9112 §6.3)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


class _BodyWatch:
    """One request's receive and send, as `BodyTimeout` watches them."""

    timer: asyncio.TimerHandle

    def __init__(self, scope: Scope, receive: Receive, send: Send, task: asyncio.Task[Any]) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.task = task
        self.body_complete = False
        self.waiting = False
        self.response_started = False
        self.gave_up: str | None = None  # "timeout" or "disconnect"

    async def receive(self) -> Message:
        if self.body_complete:
            return await self._receive()
        if self.gave_up is not None:
            return await self._stop(self.gave_up)
        self.waiting = True
        try:
            message = await self._receive()
        finally:
            self.waiting = False
        if message["type"] == "http.disconnect":
            return await self._stop("disconnect")
        if not message.get("more_body", False):
            self.body_complete = True
            self.timer.cancel()
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)

    def expire(self) -> None:
        """The timer: past the deadline with the body still incomplete."""
        if self.body_complete or self.gave_up is not None:
            return
        self.gave_up = "timeout"
        if self.waiting:
            self.task.cancel()
        # Otherwise the app is between two parts of the body: its next receive stops it.

    async def _stop(self, reason: str) -> Message:
        self.gave_up = reason
        self.timer.cancel()
        self.task.cancel()
        await asyncio.sleep(0)  # the cancellation is delivered here
        raise AssertionError("unreachable: the task was cancelled")  # pragma: no cover

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
        response = to_http_response(RequestTimeout(seconds))
        await response(self.scope, self._receive, self._send)
