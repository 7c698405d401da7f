"""The state store named by ``state_url``: in memory, or Redis for replicas.

Only a user's choice of database lives here, under a hash of their identity
(issuer, subject, client and session), so the store never holds a token or a
readable identity, and no key can be derived from another user's token.
"""

from __future__ import annotations

import hashlib
from typing import Any

from graphgate.config import Settings
from graphgate.errors import BackendUnavailable, ConfigError
from graphgate.tenancy import MemoryStateStore, StateStore

_PREFIX = "graphgate:state:"


def _hashed(key: str) -> str:
    return _PREFIX + hashlib.sha256(key.encode()).hexdigest()


class RedisStateStore:
    """Shared state for replicas without session affinity.

    Short socket timeouts: a lost Redis must degrade routing to stateless
    (argument or starting database) within a fraction of a call, not hang it.
    """

    def __init__(self, url: str, timeout: float = 0.5) -> None:
        import redis.asyncio as redis

        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            decode_responses=True,
        )

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
        await self._client.aclose()


def create_state_store(settings: Settings) -> StateStore:
    url = settings.state_url
    if url in {"", "memory://"}:
        return MemoryStateStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStateStore(url)
    raise ConfigError(f"state_url {url!r}: use memory:// or redis://host:port/db")
