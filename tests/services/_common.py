"""Shared rules for test fixtures that start real services, and the small helpers they share."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def service_unavailable(reason: str) -> None:
    """In CI a service that cannot start fails the test; locally it skips loudly."""
    if in_ci():
        pytest.fail(f"required service unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"SERVICE UNAVAILABLE (would fail in CI): {reason}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower case."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


async def eventually(check: Callable[[], Awaitable[object]], bound: float) -> float:
    """Seconds until ``check()`` returns without an AssertionError; fails past ``bound``."""
    started = time.monotonic()
    while True:
        try:
            await check()
            return time.monotonic() - started
        except AssertionError:
            if time.monotonic() - started > bound:
                raise
            await asyncio.sleep(0.1)
