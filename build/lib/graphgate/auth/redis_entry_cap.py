"""A cap on the entries of each collection in Redis, as `MemoryStore` has in memory.

``key_value``'s `RedisStore` keeps whatever it is given until the entries
expire, and proxy mode stores every anonymous registration: without a cap a
flood from many addresses grows Redis for the 90 days a registration lives.
This wrapper keeps, per collection, a sorted set of the keys written (scored
by time) next to the entries; when a write takes the collection past
``max_entries``, the oldest keys are popped from the set (atomically, so two
replicas never both evict the same one) and their entries deleted through the
wrapped store. With the per-entry size cap (`LimitSizeWrapper`), what a
collection holds in Redis is bounded in bytes as well.

The index keys are named ``<index_prefix><collection>`` (outside the prefix of the
entries, whose values are all encrypted) and expire with the
longest lifetime an entry may have, renewed on every write.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, SupportsFloat

from key_value.aio.protocols import AsyncKeyValue
from key_value.aio.wrappers.base import BaseWrapper

if TYPE_CHECKING:  # redis is imported only when state_url names it
    from redis.asyncio import Redis

__all__ = ["RedisEntryCap"]


class RedisEntryCap(BaseWrapper):
    """Evict the oldest entries of a collection once it holds more than ``max_entries``."""

    def __init__(
        self,
        key_value: AsyncKeyValue,
        client: Redis,
        *,
        max_entries: int,
        index_prefix: str,
        index_ttl: int,
    ) -> None:
        self.key_value = key_value
        self.client = client
        self.max_entries = max_entries
        self.index_prefix = index_prefix
        self.index_ttl = index_ttl
        super().__init__()

    async def put(
        self,
        key: str,
        value: Mapping[str, Any],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        await self.key_value.put(key, value, collection=collection, ttl=ttl)
        await self._written([key], collection)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        await self.key_value.put_many(keys, values, collection=collection, ttl=ttl)
        await self._written(keys, collection)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        await self.client.zrem(self._index(collection), key)
        return await self.key_value.delete(key, collection=collection)

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        if keys:
            await self.client.zrem(self._index(collection), *keys)
        return await self.key_value.delete_many(keys, collection=collection)

    def _index(self, collection: str | None) -> str:
        return f"{self.index_prefix}{collection or 'default'}"

    async def _written(self, keys: Sequence[str], collection: str | None) -> None:
        if not keys:
            return
        index = self._index(collection)
        now = time.time()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(index, dict.fromkeys(keys, now))
            pipe.expire(index, self.index_ttl)
            pipe.zcard(index)
            *_, size = await pipe.execute()
        excess = int(size) - self.max_entries
        if excess <= 0:
            return
        evicted = await self.client.zpopmin(index, excess)
        # (member, score) pairs; members are str, the client decoding responses.
        stale = [str(pair[0]) for pair in evicted]
        if stale:
            await self.key_value.delete_many(stale, collection=collection)
