"""The Bolt backend's caches of plan and text facts: bounded, with or without a lifetime."""

from __future__ import annotations

import time

from graphgate.backends.bolt import RecentCache
from graphgate.backends.dialects import PlanFacts


def test_plan_cache_is_bounded_and_keyed_by_database() -> None:
    cache: RecentCache[tuple[str, str, str], PlanFacts] = RecentCache(max_entries=2)
    read = PlanFacts(operators=["ProduceResults@neo4j"])
    cache.put(("neo4j", "a", "MATCH (n) RETURN n"), read)
    assert cache.get(("neo4j", "a", "MATCH (n) RETURN n")) is read
    assert cache.get(("neo4j", "b", "MATCH (n) RETURN n")) is None
    cache.put(("neo4j", "a", "q2"), read)
    cache.put(("neo4j", "a", "q3"), read)
    assert cache.get(("neo4j", "a", "MATCH (n) RETURN n")) is None


def test_plan_cache_expires() -> None:
    cache: RecentCache[tuple[str, str, str], PlanFacts] = RecentCache(ttl=0.01)
    cache.put(("neo4j", "a", "q"), PlanFacts())
    time.sleep(0.02)
    assert cache.get(("neo4j", "a", "q")) is None


def test_without_a_lifetime_entries_stay_until_pushed_out() -> None:
    cache: RecentCache[str, int] = RecentCache(max_entries=2, ttl=None)
    cache.put("a", 1)
    time.sleep(0.02)
    assert cache.get("a") == 1
    cache.put("b", 2)
    cache.get("a")  # a is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
