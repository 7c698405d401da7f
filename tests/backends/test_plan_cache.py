"""The Bolt backend's cache of plan facts: bounded and with a lifetime."""

from __future__ import annotations

import time

from graphgate.backends.bolt import PlanCache
from graphgate.backends.dialects import PlanFacts


def test_plan_cache_is_bounded_and_keyed_by_database() -> None:
    cache = PlanCache(max_entries=2)
    read = PlanFacts(operators=["ProduceResults@neo4j"])
    cache.put(("neo4j", "a", "MATCH (n) RETURN n"), read)
    assert cache.get(("neo4j", "a", "MATCH (n) RETURN n")) is read
    assert cache.get(("neo4j", "b", "MATCH (n) RETURN n")) is None
    cache.put(("neo4j", "a", "q2"), read)
    cache.put(("neo4j", "a", "q3"), read)
    assert cache.get(("neo4j", "a", "MATCH (n) RETURN n")) is None


def test_plan_cache_expires() -> None:
    cache = PlanCache(ttl=0.01)
    cache.put(("neo4j", "a", "q"), PlanFacts())
    time.sleep(0.02)
    assert cache.get(("neo4j", "a", "q")) is None
