"""``graphgate serve`` with experimental patches, to estimate a change before making it.

    GRAPHGATE_WHATIF=skip_explain,uvloop python bench/whatif_serve.py   # + GRAPHGATE_* settings

Used by ``bench/run.py --only whatif``; never by the default run. The patches
reach into graphgate's internals (private names), so they may stop applying
when src/ changes: then the variant fails to start and says which patch.

* ``skip_explain``: `FalkorDBBackend._refuse_file_access` returns at once when
  the query text cannot hold a ``LOAD CSV`` clause (no ``load`` in it, any
  case), saving the ``GRAPH.EXPLAIN`` round trip of every other read.
* ``uvloop``: the server runs on uvloop instead of the default asyncio loop.
* ``rights_once``: `rights_from_claims` is remembered per claims object, so a
  request's token is turned into rights once, not in the gate and again in
  the tool.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

VARIANTS = ("skip_explain", "uvloop", "rights_once", "skip_explain,uvloop,rights_once")


def apply(flags: set[str]) -> None:
    unknown = flags - {"skip_explain", "uvloop", "rights_once", ""}
    if unknown:
        raise SystemExit(f"unknown GRAPHGATE_WHATIF flags {sorted(unknown)}")
    if "uvloop" in flags:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if "skip_explain" in flags:
        from graphgate.backends import falkordb

        original = falkordb.FalkorDBBackend._refuse_file_access

        async def refuse(
            self: Any, graph: Any, database: str, text: str, *, read_only: bool
        ) -> None:
            if "load" not in text.lower():
                return
            await original(self, graph, database, text, read_only=read_only)

        falkordb.FalkorDBBackend._refuse_file_access = refuse  # type: ignore[method-assign]
    if "rights_once" in flags:
        import graphgate.auth
        from graphgate.auth import rights

        original_rights = rights.rights_from_claims
        # The verifier's cache hands out the same claims dict for every request with
        # the same token; the dict is kept here, so its id cannot be reused meanwhile.
        by_id: dict[int, tuple[Any, Any]] = {}

        def remembered(claims: Any, settings: Any) -> Any:
            hit = by_id.get(id(claims))
            if hit is not None and hit[0] is claims:
                return hit[1]
            value = original_rights(claims, settings)
            if len(by_id) > 10_000:
                by_id.clear()
            by_id[id(claims)] = (claims, value)
            return value

        rights.rights_from_claims = remembered  # type: ignore[assignment]
        graphgate.auth.rights_from_claims = remembered  # type: ignore[attr-defined]


def main() -> None:
    apply(set(os.environ.get("GRAPHGATE_WHATIF", "").split(",")))
    from graphgate.cli import main as graphgate_main

    sys.argv = ["graphgate", "serve"]
    graphgate_main()


if __name__ == "__main__":
    main()
