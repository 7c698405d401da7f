"""Stopping, on the server, the transactions graphgate stopped waiting for.

When graphgate's own deadline passes the query may still be running on the
server (a server slow to enforce its timeout, a lock wait, a network that
stalled). Left alone it keeps a worker and memory busy for every tenant.
Each transaction graphgate opens carries a unique ``call`` id in its
metadata; after giving up, graphgate finds the transaction with that id in
``SHOW TRANSACTIONS`` and ends it with ``TERMINATE TRANSACTIONS``, both
available to any user for their own transactions on Neo4j 5 (Community
included) and on Memgraph. This runs in the background, bounded in time,
and never delays the caller's error; failures are logged, and the server's
own transaction timeout remains the backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final

from graphgate.backends.dialects import Dialect

if TYPE_CHECKING:
    from neo4j import AsyncSession

__all__ = [
    "Terminator",
    "memgraph_terminate_statement",
    "new_call_id",
    "transaction_metadata",
]

logger = logging.getLogger(__name__)

_LOOKS: Final = 3
"""How often to look for the transaction: it may reach the server just after graphgate gave up."""
_LOOK_INTERVAL: Final = 0.3

_NEO4J_FIND: Final = (
    "SHOW TRANSACTIONS YIELD transactionId, metaData "
    "WHERE metaData.call = $call RETURN transactionId"
)
_NEO4J_TERMINATE: Final = "TERMINATE TRANSACTIONS $ids"
_MEMGRAPH_FIND: Final = "SHOW TRANSACTIONS"


def new_call_id() -> str:
    """A per-call id, unguessable so no other caller's transaction can match it."""
    return secrets.token_hex(12)


def transaction_metadata(call: str) -> dict[str, str]:
    """What every graphgate transaction carries: who opened it, and which call."""
    return {"app": "graphgate", "call": call}


def memgraph_terminate_statement(rows: Sequence[Mapping[str, Any]], call: str) -> str | None:
    """``TERMINATE TRANSACTIONS "<id>", ...`` for the rows of ``SHOW TRANSACTIONS`` tagged ``call``.

    Memgraph takes the ids as string literals, not parameters; they come from
    the server and are refused unless they are plain digits, so nothing but
    an id can reach the statement.
    """
    ids = []
    for row in rows:
        metadata = row.get("metadata")
        if isinstance(metadata, Mapping) and metadata.get("call") == call:
            found = str(row.get("transaction_id", ""))
            if found.isdigit():
                ids.append(json.dumps(found))
    return f"TERMINATE TRANSACTIONS {', '.join(ids)}" if ids else None


class Terminator:
    """Background terminations of abandoned transactions, owned by one backend."""

    def __init__(
        self,
        open_session: Callable[[str], AbstractAsyncContextManager[AsyncSession]],
        *,
        bound: float,
    ) -> None:
        self._open_session = open_session
        self._bound = bound
        self._tasks: set[asyncio.Task[None]] = set()

    def stop(self, dialect: Dialect, database: str, call: str) -> None:
        """Start ending the transaction tagged ``call``; return at once."""
        task = asyncio.get_running_loop().create_task(self._stop(dialect, database, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until every termination started so far has finished (or given up)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _stop(self, dialect: Dialect, database: str, call: str) -> None:
        try:
            async with asyncio.timeout(self._bound):
                for look in range(_LOOKS):
                    if look:
                        await asyncio.sleep(_LOOK_INTERVAL)
                    if await self._terminate(dialect, database, call):
                        logger.info("terminated abandoned transaction (call %s)", call)
                        return
        except TimeoutError:
            logger.warning("could not terminate abandoned transaction (call %s) in time", call)
        except Exception as exc:  # the server's timeout is the backstop: log, never raise
            logger.warning("could not terminate abandoned transaction (call %s): %s", call, exc)

    async def _terminate(self, dialect: Dialect, database: str, call: str) -> bool:
        async with self._open_session(database) as session:
            if dialect == "memgraph":
                cursor = await session.run(_MEMGRAPH_FIND)
                statement = memgraph_terminate_statement(await cursor.data(), call)
                if statement is None:
                    return False
                await (await session.run(statement)).consume()
                return True
            cursor = await session.run(_NEO4J_FIND, {"call": call})
            ids = [str(row["transactionId"]) for row in await cursor.data()]
            if not ids:
                return False
            await (await session.run(_NEO4J_TERMINATE, {"ids": ids})).consume()
            return True
