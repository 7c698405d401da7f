"""A cheap lower bound on a converted value's JSON size, to stop fetching rows early.

The reply is encoded and cut exactly once, at the end (`graphgate.replies`);
this only lets a backend stop pulling rows from the server once the rows it
has would not fit anyway. It must never over-estimate, or a row the reply
could have carried would be dropped: strings count their characters plus
quotes (escapes and multi-byte UTF-8 only add), integers their decimal
digits from the bit length (rounded down), every other number three
characters (``1.0``), containers their brackets, separators and keys.
The walk stops as soon as the total passes ``limit``, so a single huge
value costs at most ``limit`` steps, not its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["json_size_at_least"]


def json_size_at_least(value: Any, limit: int) -> int:
    """A lower bound of ``value``'s JSON size in bytes, or any number above ``limit``."""
    total = 0
    # Iterators, not items: a list of millions is walked in place, never copied.
    stack: list[Iterator[Any]] = [iter((value,))]
    while stack:
        for item in stack[-1]:
            if isinstance(item, str):
                total += len(item) + 2
            elif isinstance(item, bool) or item is None:
                total += 4
            elif isinstance(item, int):
                total += max(1, abs(item).bit_length() * 3 // 10)
            elif isinstance(item, float):
                total += 3
            elif isinstance(item, list | tuple):
                total += 1 + max(1, len(item))  # brackets and commas
                stack.append(iter(item))
                break
            elif isinstance(item, dict):
                total += 1 + max(1, len(item)) + sum(len(str(key)) + 3 for key in item)
                stack.append(iter(item.values()))
                break
            else:
                total += 1
            if total > limit:
                return total
        else:
            stack.pop()
            continue
        if total > limit:
            return total
    return total
