"""The state stores ``state_url`` names: in memory, or Redis for replicas.

Only a user's choice of database lives here, under a hash of their identity
(issuer, subject, client and session), so the store never holds a token or a
readable identity, and no key can be derived from another user's token.

The Redis client is made by `redis_client`, one per URL: the server's
lifespan opens and closes it, and every part that keeps state in that Redis
(this store, the OAuth proxy's storage) shares it.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Protocol

from cachetools import TLRUCache

from graphgate.config import StateTarget
from graphgate.errors import BackendUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "MemoryStateStore",
    "RedisStateStore",
    "StateStore",
    "create_state_store",
    "redis_client",
]

_PREFIX = "graphgate:state:"
REDIS_TIMEOUT = 0.5
"""Seconds for one Redis command or connection: a lost Redis must degrade routing to
stateless (argument or starting database) within a fraction of a call, not hang it."""


class StateStore(Protocol):
    """Small expiring key-value storage shared by every replica.

    In memory by default; Redis when replicas must agree (``state_url``).
    Implementations must tolerate being unreachable by raising
    `graphgate.errors.BackendUnavailable`, which routing treats as "no choice".
    """

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


def _expiry(_key: str, entry: tuple[str, float], now: float) -> float:
    return now + entry[1]


class MemoryStateStore:
    """Per-process store with expiry and a hard bound on entries.

    The bound keeps memory flat when thousands of sessions come and go: the
    least recently used entries are dropped first.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        # Each entry carries its own lifetime (value, ttl), which `_expiry` reads.
        self._entries: TLRUCache[str, tuple[str, float]] = TLRUCache(
            maxsize=max_entries, ttu=_expiry, timer=time.monotonic
        )

    def __len__(self) -> int:
        self._entries.expire()
        return len(self._entries)

    async def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        return entry[0] if entry is not None else None

    async def set(self, key: str, value: str, ttl: float) -> None:
        self._entries[key] = (value, ttl)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def close(self) -> None:
        self._entries.clear()


def _hashed(key: str) -> str:
    return _PREFIX + hashlib.sha256(key.encode()).hexdigest()


def redis_client(url: str) -> Redis:
    """A client for ``url``; nothing connects until the first command.

    One attempt per command, and one more only when the connection was found
    broken (Redis restarted): a Redis that does not answer costs a call at
    most `REDIS_TIMEOUT`, never a series of retries.
    """
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError

    client: Redis = redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
        decode_responses=True,
    )
    return client


class RedisStateStore:
    """Shared state for replicas without session affinity, in a client it does not own."""

    def __init__(self, client: Redis) -> None:
        self._client = client

    async def get(self, key: str) -> str | None:
        from redis.exceptions import RedisError

        try:
            value = await self._client.get(_hashed(key))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"state store unreachable: {type(exc).__name__}") from None
        return value if isinstance(value, str) else None

    async def set(self, key: str, value: str, ttl: float) -> None:
        from redis.exceptions import RedisError

        try:
            await self._client.set(_hashed(key), value, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(
                "the state store is unreachable, so the choice of database cannot be "
                f"remembered right now ({type(exc).__name__}); pass `database` explicitly"
            ) from None

    async def delete(self, key: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._client.delete(_hashed(key))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"state store unreachable: {type(exc).__name__}") from None

    async def close(self) -> None:
        """Nothing to release: the client belongs to whoever opened it (the lifespan)."""


def create_state_store(target: StateTarget, redis: Redis | None = None) -> StateStore:
    """The store ``target`` names; a Redis one uses ``redis``, the client for its URL."""
    if target.kind == "memory":
        return MemoryStateStore()
    if redis is None:
        raise ValueError(f"a Redis client for {target.kind} state is required")
    return RedisStateStore(redis)
