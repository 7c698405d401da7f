"""Per-subject call budgets (``rate_limit`` calls per minute, 0 = off).

A token bucket per issuer and subject, held by this replica: a burst of up to
one minute's budget is allowed, then calls are refused with a retry hint until
tokens refill. The table is bounded so that many distinct subjects cannot grow
memory without limit; the least recently seen subject is forgotten first (it
then starts again with a full bucket, which errs on the side of serving).
"""

from __future__ import annotations

import time

from cachetools import LRUCache

from graphgate.errors import RateLimited


class RateLimiter:
    def __init__(self, per_minute: int, max_subjects: int = 100_000) -> None:
        self._capacity = float(per_minute)
        self._refill_per_second = per_minute / 60.0
        # subject -> (tokens left, when counted); the least recently seen goes first.
        self._buckets: LRUCache[str, tuple[float, float]] = LRUCache(maxsize=max_subjects)

    @property
    def enabled(self) -> bool:
        return self._capacity > 0

    def check(self, subject: str, now: float | None = None) -> None:
        """Spend one call of ``subject``'s budget, or raise `RateLimited`."""
        if not self.enabled:
            return
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.get(subject, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - stamp) * self._refill_per_second)
        if tokens < 1.0:
            self._buckets[subject] = (tokens, now)
            raise RateLimited(retry_after=(1.0 - tokens) / self._refill_per_second)
        self._buckets[subject] = (tokens - 1.0, now)
