"""uvicorn's httptools protocol with a deadline for a request's headers.

uvicorn times out idle keep-alive connections (``timeout_keep_alive``) but
not a connection that never completes its request headers: 500 sockets that
connect and send nothing, or a header a byte a minute (slowloris), were kept
for as long as the client liked. uvicorn has no setting for this; what it
does expose publicly is its ``http`` setting, which accepts a protocol class.
So this module subclasses `HttpToolsProtocol` and adds one timer:

* armed when the connection is made and when a new request's first byte
  arrives (``on_message_begin``, which covers the next request on a
  keep-alive connection, after uvicorn's own keep-alive timer was cancelled);
* cancelled when the headers are complete (``on_headers_complete``) and when
  the connection is lost;
* on expiry the connection is closed, logged at debug level with the peer's
  address and no traceback: a slow client is not a server error.

What this relies on in uvicorn (pinned to its 0.54 minor in pyproject.toml;
tests/test_connection_limits.py has a contract test that fails when any of it
changes): the class `uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`
with its ``__init__(config, server_state, app_state, _loop)``, the parser
callbacks ``connection_made``, ``on_message_begin``, ``on_headers_complete``
and ``connection_lost``, and its ``transport``, ``client`` and ``loop``
attributes. Everything else (parsing, flow control, keep-alive,
``limit_concurrency``) is uvicorn's own, unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeaderTimeoutProtocol", "header_timeout_protocol"]

logger = logging.getLogger(__name__)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that closes a connection whose request headers are late."""

    header_timeout: ClassVar[float] = 10.0
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:
            self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.debug(
            "closing the connection of %s: no complete request headers within %g s",
            peer,
            self.header_timeout,
        )
        self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class to hand uvicorn's ``http`` setting, with this deadline."""
    return type(
        "HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": float(seconds)}
    )
