"""How big a FalkorDB compact reply's values will be as JSON, found without building them.

A compact reply holds every value as ``[type, payload]``: arrays as lists
of such pairs, maps as ``[key, value, key, value, ...]``, nodes as ``[id,
[label ids], [[key id, type, value], ...]]``, edges as ``[id, type id,
source, destination, [[key id, type, value], ...]]``, paths as ``[[array of
nodes], [array of edges]]``. `row_size` walks that structure and stops as
soon as the total passes the budget it is given, so the work it does is
bounded by the budget, not by the value: one row holding a list of a million
integers costs as much as the budget allows, then the walk ends.

The estimate is meant to be at most the JSON size (names count as their ids,
points and temporals as a few bytes), so rows that fit are not cut here; the
exact cut on encoded bytes stays with `graphgate.replies`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["row_size"]

_STRING, _INTEGER, _DOUBLE, _ARRAY, _EDGE, _NODE, _PATH, _MAP, _VECTOR = (
    2,
    3,
    5,
    6,
    7,
    8,
    9,
    10,
    12,
)
_ENTITY_OVERHEAD = 30  # {"id":…,"labels":[…],"properties":{}} without the names
_SMALL = 4  # null, booleans, points, temporals: at least this many bytes


def row_size(record: list[Any], budget: int) -> int:
    """The estimated JSON bytes of one raw row; past ``budget`` it stops early."""
    size = 1  # '[' here, then each item's ',' or ']'
    for cell in record:
        size += value_size(cell, budget - size) + 1
        if size > budget:
            break
    return size


def value_size(value: Any, budget: int) -> int:
    """The estimated JSON bytes of one ``[type, payload]`` value, at most just past ``budget``."""
    try:
        kind, payload = int(value[0]), value[1]
    except (LookupError, TypeError, ValueError):
        return _SMALL
    if kind == _STRING:
        return len(payload) + 2
    if kind in (_INTEGER, _DOUBLE):
        return len(str(payload))
    if kind == _ARRAY:
        return _sequence_size(payload, budget)
    if kind == _MAP:
        size = 1
        for index in range(0, len(payload) - 1, 2):
            size += len(str(payload[index])) + 4 + value_size(payload[index + 1], budget - size)
            if size > budget:
                break
        return size
    if kind == _NODE:
        return _entity_size(payload[2], budget)
    if kind == _EDGE:
        return _entity_size(payload[4], budget)
    if kind == _PATH:
        size = 2 + value_size(payload[0], budget)
        return size + value_size(payload[1], budget - size)
    if kind == _VECTOR:
        size = 1
        for number in payload:
            size += len(str(number)) + 1
            if size > budget:
                break
        return size
    return _SMALL


def _sequence_size(items: list[Any], budget: int) -> int:
    size = 1
    for item in items:
        size += value_size(item, budget - size) + 1
        if size > budget:
            break
    return size


def _entity_size(properties: list[Any], budget: int) -> int:
    size = _ENTITY_OVERHEAD
    for prop in properties:
        size += 4 + value_size(prop[1:], budget - size)
        if size > budget:
            break
    return size
