"""FalkorDB over the official async client, one connection pool for every tenant.

A tenant's database is a FalkorDB graph key. Facts this module is built on,
measured against FalkorDB 4.16:

* ``GRAPH.RO_QUERY`` refuses any write with "graph.RO_QUERY is to be executed
  only on read-only queries", so `read` never depends on parsing query text.
* ``GRAPH.QUERY`` on a missing key *creates* the graph, even for ``MATCH`` or
  ``RETURN 1``; ``GRAPH.RO_QUERY`` and ``GRAPH.EXPLAIN`` do not, and answer
  "Invalid graph operation on empty key". A tenant nothing was written to yet
  should still answer like an empty database (``RETURN 1`` one row, ``MATCH``
  none), and a read must not create its graph. So a read of a missing graph
  runs on `EMPTY_GRAPH`, a graph graphgate creates once and keeps empty: only
  ``RO_QUERY`` ever reaches it (which refuses every write, index-creating
  procedures included), no tenant may name it, and `list_databases` leaves
  it out. Where it cannot be created (a read-only account, a full server) the
  read says the database holds no graph yet. `schema` of a missing graph is
  an empty `Schema`. A `write` may create the graph, as the database would.
* ``RO_QUERY`` does *not* refuse ``LOAD CSV``. ``GRAPH.EXPLAIN`` shows a
  "Load CSV" operation wherever the clause appears (top level, inside
  ``CALL { }``), so the planner, not a regex, decides whether a query reads
  files. On a missing graph ``EXPLAIN`` fails too, so a write first creates
  the (empty) graph it would have created anyway; a refused write can thus
  leave an empty graph behind.
* The per-query ``TIMEOUT`` bounds reads, but writes only when the server has
  ``TIMEOUT_DEFAULT``/``TIMEOUT_MAX`` set; the embedded server sets both to
  the query timeout. For an external server that is the operator's job
  (``GRAPH.CONFIG SET TIMEOUT_MAX <ms>``); without it a write that times out
  on the client side may still finish on the server. A per-query timeout
  above ``TIMEOUT_MAX`` is refused by the server.

Deadlines are graphgate's, not redis-py's: the pool sets no socket timeout
(redis-py's default of 5 s cut every longer call and called it
"unavailable"); each call runs under an asyncio deadline of the query
timeout plus `_CLIENT_GRACE`, while the server stops the query at the
timeout itself. How a failed write is reported, measured on FalkorDB 4.16.3:

* the server's own "Query timed out" on a write: FalkorDB undoes it (nodes a
  timed-out ``CREATE`` made are not there afterwards), so `QueryTimeout`;
* graphgate's deadline passed after the write was sent (the server was still
  parsing, queueing or running it): `WriteOutcomeUnknown`;
* the connection broke after the write was sent: `BackendUnavailable` with
  `UNKNOWN_OUTCOME_HINT`; before anything was sent (refused, no slot in
  time): plain `BackendUnavailable` or `QueryTimeout`, nothing ran.

The server's refusals, as it words them: "Query's mem consumption exceeded
capacity" (QUERY_MEM_CAPACITY, nothing written) is `MemoryLimitExceeded`;
"OOM command not allowed when used memory > 'maxmemory'" (``noeviction``:
every ``GRAPH.QUERY`` is refused, deletes included, reads still work) says
the database is full; "Max pending queries exceeded" (MAX_QUEUED_QUERIES) is
`Busy`. Neither bound covers ``range()``: FalkorDB allocates the whole list
before it checks the memory cap or the deadline, so ``range(1, 3000000000)``
makes the server abort on a failed allocation (or, with enough virtual
memory, fill it) whatever graphgate asks; only a hard limit on the server
process and its supervision bound that.

Rows beyond ``row_limit`` are neither parsed nor converted: the raw reply is
cut before the client's parser sees it. They are still shipped and decoded
by redis-py, unless the server's ``RESULTSET_SIZE`` caps them (the embedded
server sets it to the row limit + 1); a reply of exactly that many rows is
reported as truncated. Within ``QueryLimits.max_bytes`` the same holds for
size: each row's JSON size is estimated from the raw reply, stopping as soon
as the budget is spent (`falkordb_reply`), and the rows past it are never
converted, so ``RETURN range(1, 1500000)`` no longer builds its 1.5 million
values twice more in graphgate. The raw reply itself is decoded whole by
redis-py before graphgate sees it: what bounds that is the server's memory
cap on the query that produced it (QUERY_MEM_CAPACITY) and RESULTSET_SIZE.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from cachetools import LRUCache

from graphgate.backends.base import (
    ConstraintInfo,
    IndexInfo,
    LabelInfo,
    PropertyInfo,
    QueryLimits,
    QueryPlan,
    QueryResult,
    Schema,
    bounded_plan,
)
from graphgate.backends.convert import Converter, falkordb_converter
from graphgate.backends.cypher_scan import require_single_statement, scan
from graphgate.backends.falkordb_reply import row_size
from graphgate.config import FALKORDB_SCHEMES, FALKORDB_TLS_SCHEMES
from graphgate.errors import (
    UNKNOWN_OUTCOME_HINT,
    BackendUnavailable,
    Busy,
    ConfigError,
    GraphgateError,
    MemoryLimitExceeded,
    QueryError,
    QueryRefused,
    QueryTimeout,
    ReadOnlyViolation,
    WriteOutcomeUnknown,
)

__all__ = ["EMPTY_GRAPH", "FalkorDBBackend"]

logger = logging.getLogger(__name__)

EMPTY_GRAPH = "graphgate:empty"
"""The graph that reads of a tenant without a graph run on; graphgate keeps it empty."""

_EMPTY_KEY = "Invalid graph operation on empty key"
_EMPTY_GRAPH_RETRY = 60.0
_READ_ONLY = "is to be executed only on read-only queries"
_TIMED_OUT = "Query timed out"
_TIMEOUT_MAX = "cannot exceed the TIMEOUT_MAX"
_QUERY_MEMORY = "mem consumption exceeded capacity"
_QUEUE_FULL = "Max pending queries exceeded"
_FULL = "used memory > 'maxmemory'"
# Seconds a caller refused by a full queue is told to wait.
_QUEUE_RETRY = 1.0
_RECONNECT_RETRY = 1.0
# The server-wide bounds whose absence `missing_bounds` reports: without them
# one query can hold the server for ever or take all of its memory.
_GRAPH_BOUNDS = ("TIMEOUT_MAX", "QUERY_MEM_CAPACITY", "MAX_QUEUED_QUERIES")
_UNBOUNDED_QUEUE = 2**32 - 1
_LOAD_CSV_OPERATION = "Load CSV"
_WRITE_OPERATIONS = frozenset({"Create", "Merge", "MergeCreate", "Delete", "Update", "Foreach"})
"""FalkorDB's plan operations that change the graph (SET and REMOVE plan as "Update")."""
# How much longer than the server-side TIMEOUT the client waits: the server's
# own "Query timed out" is the better answer, the client timeout is the backstop.
_CLIENT_GRACE = 1.0
# The schema's own queries return a few rows each; no byte budget applies.
_SCHEMA_LIMITS = QueryLimits(row_limit=1_000_000)
_SCHEMA_CONCURRENCY = 8
_GRAPH_CACHE = 1024
_INT64 = (-(2**63), 2**63 - 1)

_STAT_NAMES = {
    "Labels added": "labels_added",
    "Labels removed": "labels_removed",
    "Nodes created": "nodes_created",
    "Nodes deleted": "nodes_deleted",
    "Properties set": "properties_set",
    "Properties removed": "properties_removed",
    "Relationships created": "relationships_created",
    "Relationships deleted": "relationships_deleted",
    "Indices created": "indexes_created",
    "Indices deleted": "indexes_deleted",
}


class FalkorDBBackend:
    """A FalkorDB server reached over the Redis protocol.

    Connection retries are off: a write whose connection broke after the
    server received it must not be sent twice. A broken pooled connection is
    replaced on the next call.
    """

    name = "falkordb"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        max_connections: int = 64,
        connect_timeout: float = 5.0,
    ) -> None:
        if not host:
            raise ConfigError("FalkorDB host must not be empty")
        if not 0 < port < 65536:
            raise ConfigError(f"FalkorDB port {port} is not in 1-65535")
        if max_connections < 1:
            raise ConfigError("max_connections must be at least 1")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.ssl = ssl
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self._db: Any = None
        self._pool: Any = None
        self._slots = asyncio.Semaphore(max_connections)
        self._timeout_max_ms = 0
        self._resultset_cap = 0
        self._query_memory = 0
        self._missing: list[str] = []
        self._graphs: LRUCache[str, Any] = LRUCache(maxsize=_GRAPH_CACHE)
        self._empty_graph: Any = None
        self._empty_retry_at = 0.0
        self._convert: Converter = falkordb_converter()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        max_connections: int = 64,
    ) -> FalkorDBBackend:
        """Parse ``falkordb://[user:password@]host[:port]`` (or ``redis://``).

        ``falkordbs://`` / ``rediss://`` use TLS. Credentials given as
        arguments win over those in the URL, so secrets can stay out of it.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in FALKORDB_SCHEMES:
            raise ConfigError(
                f"{scheme or 'no'} scheme: expected falkordb://[user:password@]host:port"
            )
        if not parts.hostname:
            raise ConfigError("the FalkorDB URL has no host: falkordb://host:port")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ConfigError("the FalkorDB URL has an invalid port") from None
        url_user = unquote(parts.username) if parts.username else None
        url_password = unquote(parts.password) if parts.password else None
        return cls(
            parts.hostname,
            port,
            username=username or url_user,
            password=password or url_password,
            ssl=scheme in FALKORDB_TLS_SCHEMES,
            max_connections=max_connections,
        )

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and check the server answers, with these credentials.

        The client's constructor probes the server synchronously (to detect a
        cluster) with redis-py's default retries, which take tens of seconds to
        give up on a wrong password. An async PING on our own pool goes first,
        so failures are fast; the constructor then runs in a thread.
        """
        if self._db is not None:
            return
        from falkordb.asyncio import FalkorDB
        from redis.asyncio import Connection, ConnectionPool, Redis, SSLConnection
        from redis.exceptions import RedisError

        # A burst of calls waits for one of `max_connections` slots (`_send`,
        # bounded by each query's own timeout) instead of failing with "Too
        # many connections". The slots, not redis-py's blocking pool, do the
        # waiting: its checkout (a condition, a timeout scope, wait-time
        # metrics) cost a fifth of a read's client CPU in process. The pool
        # itself may hold twice as many connections, for the lookups the
        # falkordb client makes on its own while it parses a reply (label and
        # property names after a schema change), which take no slot. No
        # `retry` is given: the async connections' default is no retry, and an
        # async Retry here would break the client's synchronous cluster probe,
        # which reuses these arguments.
        pool = ConnectionPool(
            connection_class=SSLConnection if self.ssl else Connection,
            max_connections=2 * self.max_connections,
            host=self.host,
            port=self.port,
            username=self.username,
            password=self._password,
            socket_connect_timeout=self.connect_timeout,
            # No read timeout: redis-py's default (5 s) would cut every longer
            # query and call it "unavailable"; each call's asyncio deadline
            # (the query timeout plus `_CLIENT_GRACE`) decides instead.
            socket_timeout=None,
            socket_keepalive=True,
            health_check_interval=30,
            client_name="graphgate",
            decode_responses=True,
        )
        try:
            async with asyncio.timeout(self.connect_timeout):
                await Redis(connection_pool=pool).ping()
            self._db = await asyncio.to_thread(FalkorDB, connection_pool=pool)
            self._pool = pool
        except (RedisError, OSError, TimeoutError) as exc:
            await pool.aclose()
            raise _unavailable(exc, self.host, self.port) from exc
        self._timeout_max_ms = await self._server_limit("TIMEOUT_MAX")
        self._resultset_cap = await self._server_limit("RESULTSET_SIZE")
        self._query_memory = await self._server_limit("QUERY_MEM_CAPACITY")
        self._missing = await self._find_missing_bounds()
        if self._missing:
            logger.warning(
                "FalkorDB at %s:%s lacks bounds that keep one query from holding it: %s",
                self.host,
                self.port,
                ", ".join(self._missing),
            )

    def missing_bounds(self) -> list[str]:
        """The server-wide bounds the server had unset (or unreadable) at `start`.

        Each entry names the setting and what its absence allows, for logs and
        readiness details; empty when every bound is set.
        """
        return list(self._missing)

    async def _find_missing_bounds(self) -> list[str]:
        missing: list[str] = []
        for name in _GRAPH_BOUNDS:
            value = await self._server_limit(name)
            if value == 0 or (name == "MAX_QUEUED_QUERIES" and value >= _UNBOUNDED_QUEUE):
                missing.append(f"GRAPH.CONFIG {name}")
        try:
            reply = await self._command(self.connect_timeout, "CONFIG", "GET", "maxmemory*")
            # A map on RESP3 servers, a flat name/value list on RESP2.
            config = (
                reply
                if isinstance(reply, dict)
                else dict(zip(reply[::2], reply[1::2], strict=True))
            )
        except (GraphgateError, TypeError, ValueError):
            config = {}
        if str(config.get("maxmemory", "0")) == "0":
            missing.append("maxmemory")
        if config.get("maxmemory-policy") != "noeviction":
            missing.append("maxmemory-policy noeviction")
        return missing

    async def _server_limit(self, name: str) -> int:
        """A server-wide bound from GRAPH.CONFIG (0 when unset or unreadable).

        TIMEOUT_MAX: per-query timeouts above it are refused, so they are
        clamped to it ("graphgate allows 60 s, the server 30 s" becomes 30 s
        rather than a refusal of every query). RESULTSET_SIZE: the server
        ships at most that many rows, so a full reply may be a cut one.
        Servers that forbid GRAPH.CONFIG (ACLs) get neither adjustment.
        """
        try:
            reply = await self._command(self.connect_timeout, "GRAPH.CONFIG", "GET", name)
            return max(0, int(reply[1]))
        except (GraphgateError, LookupError, TypeError, ValueError):
            return 0

    def _timeout_ms(self, limits: QueryLimits) -> int:
        timeout_ms = max(1, math.ceil(limits.timeout * 1000))
        if self._timeout_max_ms:
            timeout_ms = min(timeout_ms, self._timeout_max_ms)
        return timeout_ms

    async def close(self) -> None:
        db, self._db = self._db, None
        pool, self._pool = self._pool, None
        self._graphs.clear()
        self._empty_graph = None
        if db is not None:
            await db.aclose()
        if pool is not None:
            # A pool handed to the client is not closed by it.
            await pool.aclose()

    async def ping(self) -> None:
        await self._command(self.connect_timeout, "PING")

    # -- queries --------------------------------------------------------------------------
    async def read(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryResult:
        return await self._run(database, query, params, limits, read_only=True)

    async def write(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryResult:
        return await self._run(database, query, params, limits, read_only=False)

    dialect = "falkordb"

    async def explain(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryPlan:
        """``GRAPH.EXPLAIN``: the plan, never run, and never a graph created for it.

        A missing graph answers as `read` does (nothing written there yet).
        Index and constraint statements do not plan on FalkorDB; they are
        reported as writes without steps.
        """
        self._graph(database)
        found = scan(query)
        require_single_statement(found)
        if found.kind == "schema":
            return QueryPlan(steps=[], writes=["schema change"])
        text = _params_header(params) + query
        try:
            async with asyncio.timeout(limits.timeout + _CLIENT_GRACE):
                plan = await self._send("GRAPH.EXPLAIN", database, text)
        except TimeoutError:
            raise QueryTimeout(f"planning took longer than {limits.timeout:g} s") from None
        except Exception as exc:
            raise _translate(exc, database) from exc
        lines = [str(step).rstrip() for step in plan]
        writes = [
            line.strip() for line in lines if line.split("|", 1)[0].strip() in _WRITE_OPERATIONS
        ]
        return bounded_plan(lines, writes)

    async def list_databases(self) -> list[str]:
        names = await self._command(self.connect_timeout, "GRAPH.LIST")
        return sorted(str(name) for name in names if str(name) != EMPTY_GRAPH)

    async def schema(self, database: str, limits: QueryLimits) -> Schema:
        """Labels and types with sampled property types, counts, endpoints, indexes.

        Property types come from ``typeOf`` over at most 100 entities per label
        or type, so a rare property can be missing; counts are exact (FalkorDB
        answers label counts from its matrices). All of it runs through
        ``RO_QUERY``: a missing graph gives an empty `Schema` and stays missing.
        """
        try:
            async with asyncio.timeout(limits.timeout + _CLIENT_GRACE):
                return await self._schema(database, limits)
        except TimeoutError:
            raise QueryTimeout(
                f"reading the schema of {database!r} took longer than {limits.timeout:g} s"
            ) from None

    # -- internals ------------------------------------------------------------------------
    def _graph(self, database: str) -> Any:
        """The client's graph object, cached because it caches label/property ids."""
        if self._db is None:
            raise BackendUnavailable("the FalkorDB backend is not started")
        if not database:
            raise QueryError("database name must not be empty")
        if database == EMPTY_GRAPH:
            raise QueryError(f"the database name {database!r} is reserved by graphgate")
        graph = self._graphs.get(database)
        if graph is None:
            graph = self._graphs[database] = self._db.select_graph(database)
        return graph

    async def _send(self, *args: Any, progress: _Progress | None = None) -> Any:
        """One command on a pooled connection, holding a slot while it runs.

        The connection is taken (and connected) before the command is sent,
        so ``progress.sent`` tells a refused connection (nothing ran) from one
        that broke with the command on its way or running.
        """
        if self._pool is None:
            raise BackendUnavailable("the FalkorDB backend is not started")
        pool = self._pool
        async with self._slots:
            connection = await pool.get_connection()
            try:
                if progress is not None:
                    progress.sent = True
                await connection.send_command(*args, check_health=False)
                return await connection.read_response()
            finally:
                await pool.release(connection)

    async def _command(self, seconds: float, *args: Any) -> Any:
        if self._db is None:
            raise BackendUnavailable("the FalkorDB backend is not started")
        try:
            async with asyncio.timeout(seconds):
                return await self._send(*args)
        except TimeoutError:
            raise BackendUnavailable(
                f"FalkorDB did not answer {args[0]} in {seconds:g} s"
            ) from None
        except Exception as exc:
            raise _translate(exc, "") from exc

    async def _run(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
        *,
        read_only: bool,
    ) -> QueryResult:
        started = time.perf_counter()
        graph = self._graph(database)
        text = _params_header(params) + query
        timeout_ms = self._timeout_ms(limits)
        command = "GRAPH.RO_QUERY" if read_only else "GRAPH.QUERY"
        progress = _Progress()
        try:
            async with asyncio.timeout(timeout_ms / 1000 + _CLIENT_GRACE):

                async def run_on(graph: Any, key: str) -> QueryResult:
                    if not limits.allow_file_access:
                        await self._refuse_file_access(graph, key, text, read_only=read_only)
                    reply = await self._send(
                        command, key, text, "--compact", "timeout", timeout_ms, progress=progress
                    )
                    return await self._parse(graph, reply, limits, read_only=read_only)

                try:
                    result = await run_on(graph, database)
                except Exception as exc:
                    empty = None
                    if read_only and _EMPTY_KEY in str(exc):
                        empty = await self._empty()
                    if empty is None:
                        raise
                    # No graph yet: answer as the empty database it is, creating nothing.
                    try:
                        result = await run_on(empty, EMPTY_GRAPH)
                    except Exception as again:
                        if _EMPTY_KEY in str(again):
                            self._empty_graph = None  # deleted meanwhile: made again next time
                        raise
        except TimeoutError:
            raise _abandoned(limits.timeout, read_only=read_only, sent=progress.sent) from None
        except GraphgateError:
            raise
        except Exception as exc:
            if not read_only and progress.sent and _connection_lost(exc):
                logger.warning("FalkorDB connection broke during a write: %s", exc)
                raise BackendUnavailable(
                    f"the connection to FalkorDB broke while the write was running; "
                    f"{UNKNOWN_OUTCOME_HINT}"
                ) from exc
            raise _translate(
                exc, database, read_only=read_only, query_memory=self._query_memory
            ) from exc
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return result

    async def _empty(self) -> Any:
        """The client's graph object for `EMPTY_GRAPH`, created once if missing; None if
        it cannot be (a read-only account, a full server) or is not empty.

        One ``GRAPH.QUERY`` that only counts creates the graph if missing and
        proves it empty: nothing graphgate sends writes to it, but it is a key
        on a server others may reach too.
        """
        if self._empty_graph is not None:
            return self._empty_graph
        if time.monotonic() < self._empty_retry_at:
            return None
        # One attempt (and one log line) a minute while it cannot be made.
        self._empty_retry_at = time.monotonic() + _EMPTY_GRAPH_RETRY
        try:
            reply = await self._send(
                "GRAPH.QUERY", EMPTY_GRAPH, "MATCH (n) RETURN count(n)", "--compact"
            )
            count = int(reply[1][0][0][1])
        except Exception as exc:
            logger.warning(
                "cannot create the empty graph %r that reads of databases without a graph "
                "use (%s); they answer that the database holds no graph yet",
                EMPTY_GRAPH,
                exc,
            )
            return None
        if count:
            logger.error(
                "the graph %r must stay empty, but holds %d nodes: delete it (GRAPH.DELETE); "
                "until then reads of databases without a graph answer that they hold none",
                EMPTY_GRAPH,
                count,
            )
            return None
        if self._db is None:
            raise BackendUnavailable("the FalkorDB backend is not started")
        self._empty_graph = self._db.select_graph(EMPTY_GRAPH)
        return self._empty_graph

    async def _refuse_file_access(
        self, graph: Any, database: str, text: str, *, read_only: bool
    ) -> None:
        """Ask the planner whether the query reads files (``LOAD CSV``).

        The planner decides; the text only tells when there is nothing to ask.
        ``LOAD CSV`` cannot be spelled without the ASCII letters "load" (Cypher
        has no escapes in keywords), so a query without them skips the extra
        ``GRAPH.EXPLAIN`` round trip, which measured 14% of a point read's
        server CPU and a third of the database's.
        """
        if "load" not in text.lower():
            return
        try:
            plan = await self._send("GRAPH.EXPLAIN", database, text)
        except Exception as exc:
            if read_only or _EMPTY_KEY not in str(exc):
                raise
            # A write would create the graph anyway; create it so it can be planned.
            await self._send("GRAPH.QUERY", database, "RETURN 0", "--compact")
            plan = await self._send("GRAPH.EXPLAIN", database, text)
        if any(str(step).strip() == _LOAD_CSV_OPERATION for step in plan):
            raise QueryRefused(
                "LOAD CSV is disabled: this server does not allow queries to read files "
                "or URLs (allow_file_access is off)"
            )

    async def _parse(
        self, graph: Any, reply: list[Any], limits: QueryLimits, *, read_only: bool
    ) -> QueryResult:
        from falkordb.asyncio.query_result import parse_scalar
        from redis.exceptions import ResponseError

        # A run-time error arrives as the last element of the reply, not raised.
        if reply and isinstance(reply[-1], ResponseError):
            raise reply[-1]
        stats = _stats(reply[-1]) if not read_only else {}
        if len(reply) < 3:
            return QueryResult(columns=[], rows=[], stats=stats)
        columns = [str(column[1]) for column in reply[0]]
        records = reply[1]
        row_limit, budget = limits.row_limit, limits.max_bytes
        cap = self._resultset_cap
        truncated = len(records) > row_limit or (0 < cap <= len(records))
        convert = self._convert
        rows = []
        spent = 0
        for record in records[:row_limit] if len(records) > row_limit else records:
            if budget is not None:
                # Measured on the raw reply first: a row past the budget is never built.
                spent += row_size(record, budget - spent)
                if spent > budget:
                    truncated = True
                    break
            rows.append([convert(await parse_scalar(cell, graph)) for cell in record])
        return QueryResult(columns=columns, rows=rows, truncated=truncated, stats=stats)

    async def _ro(self, graph: Any, database: str, query: str, timeout_ms: int) -> list[Any]:
        reply = await self._send(
            "GRAPH.RO_QUERY", database, query, "--compact", "timeout", timeout_ms
        )
        result = await self._parse(graph, reply, _SCHEMA_LIMITS, read_only=True)
        return result.rows

    async def _schema(self, database: str, limits: QueryLimits) -> Schema:
        graph = self._graph(database)
        timeout_ms = self._timeout_ms(limits)
        gate = asyncio.Semaphore(_SCHEMA_CONCURRENCY)

        async def ro(query: str) -> list[Any]:
            async with gate:
                return await self._ro(graph, database, query, timeout_ms)

        try:
            labels = [row[0] for row in await ro("CALL db.labels()")]
        except Exception as exc:
            if _EMPTY_KEY in str(exc):
                return Schema()
            raise _translate(exc, database) from exc
        try:
            types = [row[0] for row in await ro("CALL db.relationshipTypes()")]
            node_infos = await asyncio.gather(
                *(self._label_info(ro, name, limits.sample) for name in labels)
            )
            rel_infos = await asyncio.gather(
                *(self._type_info(ro, name, limits.sample) for name in types)
            )
            index_rows = await ro(
                "CALL db.indexes() YIELD label, properties, types, entitytype "
                "RETURN label, properties, types, entitytype"
            )
            constraint_rows = await ro(
                "CALL db.constraints() YIELD type, label, properties, entitytype, status "
                "RETURN type, label, properties, entitytype, status"
            )
        except GraphgateError:
            raise
        except Exception as exc:
            if _EMPTY_KEY in str(exc):  # deleted while we were reading it
                return Schema()
            raise _translate(exc, database) from exc
        return Schema(
            node_labels=list(node_infos),
            relationship_types=list(rel_infos),
            indexes=_indexes(index_rows),
            constraints=_constraints(constraint_rows),
        )

    @staticmethod
    async def _label_info(ro: Any, label: str, sample: int) -> LabelInfo:
        if "`" in label:  # FalkorDB cannot escape a backtick in a name
            return LabelInfo(name=label)
        properties = await ro(
            f"MATCH (n:`{label}`) WITH n LIMIT {int(sample)} UNWIND keys(n) AS k "
            "RETURN k, collect(DISTINCT typeOf(n[k])) ORDER BY k"
        )
        count = await ro(f"MATCH (n:`{label}`) RETURN count(n)")
        return LabelInfo(
            name=label,
            properties=[PropertyInfo(name=k, types=sorted(t)) for k, t in properties],
            count=int(count[0][0]) if count else None,
        )

    @staticmethod
    async def _type_info(ro: Any, rel_type: str, sample: int) -> LabelInfo:
        if "`" in rel_type:
            return LabelInfo(name=rel_type)
        properties = await ro(
            f"MATCH ()-[r:`{rel_type}`]->() WITH r LIMIT {int(sample)} UNWIND keys(r) AS k "
            "RETURN k, collect(DISTINCT typeOf(r[k])) ORDER BY k"
        )
        count = await ro(f"MATCH ()-[r:`{rel_type}`]->() RETURN count(r)")
        ends = await ro(
            f"MATCH (a)-[r:`{rel_type}`]->(b) WITH a, b LIMIT {int(sample)} "
            "UNWIND labels(a) AS s UNWIND labels(b) AS e RETURN DISTINCT s, e ORDER BY s, e"
        )
        return LabelInfo(
            name=rel_type,
            properties=[PropertyInfo(name=k, types=sorted(t)) for k, t in properties],
            count=int(count[0][0]) if count else None,
            endpoints=[(s, e) for s, e in ends],
        )

    # -- fair share -----------------------------------------------------------------------
    async def workers(self) -> int:
        """Queries the server runs at once (GRAPH.CONFIG THREAD_COUNT); 0 if it will not say.

        The fair share gives each tenant half of them. Raises
        `BackendUnavailable` when the server cannot be asked now.
        """
        try:
            reply = await self._command(self.connect_timeout, "GRAPH.CONFIG", "GET", "THREAD_COUNT")
            return max(0, int(reply[1]))
        except (QueryError, LookupError, TypeError, ValueError):
            return 0


def _indexes(rows: list[Any]) -> list[IndexInfo]:
    """One `IndexInfo` per (label, kind): FalkorDB reports one row per label."""
    found: list[IndexInfo] = []
    for label, properties, kinds, entity in rows:
        by_kind: dict[str, list[str]] = {}
        for prop in properties:
            for kind in (kinds or {}).get(prop, ["RANGE"]):
                by_kind.setdefault(str(kind).lower(), []).append(prop)
        for kind, props in by_kind.items():
            found.append(
                IndexInfo(label=label, properties=props, kind=kind, entity=_entity(entity))
            )
    return found


def _constraints(rows: list[Any]) -> list[ConstraintInfo]:
    return [
        ConstraintInfo(
            label=label, properties=list(properties), kind=str(kind).lower(), entity=_entity(entity)
        )
        for kind, label, properties, entity, status in rows
        if status != "FAILED"
    ]


def _entity(value: Any) -> str:
    return "relationship" if str(value).upper() in {"RELATIONSHIP", "EDGE"} else "node"


def _stats(raw: list[Any]) -> dict[str, int]:
    stats = dict.fromkeys(_STAT_NAMES.values(), 0)
    for line in raw:
        name, _, value = str(line).partition(": ")
        key = _STAT_NAMES.get(name)
        if key is not None:
            stats[key] = int(float(value.split(" ", 1)[0]))
    return stats


def _unavailable(exc: BaseException, host: str, port: int) -> BackendUnavailable:
    translated = _translate(exc, "")
    if isinstance(translated, BackendUnavailable):
        return translated
    detail = str(exc) or "no answer in time"
    return BackendUnavailable(f"cannot reach FalkorDB at {host}:{port}: {detail}")


class _Progress:
    """Whether a call's command has left graphgate: after that a write may have run."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


def _abandoned(timeout: float, *, read_only: bool, sent: bool) -> QueryTimeout:
    """The error for a call graphgate stopped waiting for at its own deadline."""
    if not sent:
        return QueryTimeout(
            f"the query did not start within {timeout:g} s (the backend's connections "
            "were busy); nothing was run"
        )
    if read_only:
        return QueryTimeout(f"the query ran longer than {timeout:g} s and was abandoned")
    return WriteOutcomeUnknown(
        f"FalkorDB did not answer the write within {timeout:g} s and graphgate stopped waiting"
    )


def _connection_lost(exc: BaseException) -> bool:
    from redis.exceptions import ConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    return isinstance(exc, ConnectionError | RedisTimeout | OSError)


def _translate(
    exc: BaseException, database: str, *, read_only: bool = True, query_memory: int = 0
) -> GraphgateError:
    """Map client and server errors onto graphgate's tree, keeping the server's words.

    Connection errors name the server's address; that goes to the log, never
    into the error a client sees.
    """
    from redis.exceptions import (
        AuthenticationError,
        BusyLoadingError,
        OutOfMemoryError,
        ResponseError,
    )

    if isinstance(exc, GraphgateError):
        return exc
    message = str(exc)
    if isinstance(exc, AuthenticationError) or message.startswith(("NOAUTH", "WRONGPASS")):
        return BackendUnavailable(f"FalkorDB refused our credentials: {message}")
    if isinstance(exc, BusyLoadingError):
        return BackendUnavailable(f"FalkorDB is still loading its data: {message}")
    if _connection_lost(exc):
        logger.warning("cannot reach FalkorDB: %s", message)
        return BackendUnavailable(
            "cannot reach FalkorDB; nothing was run", retry_after=_RECONNECT_RETRY
        )
    if isinstance(exc, OutOfMemoryError) or _FULL in message:
        return MemoryLimitExceeded(
            "the database is full: FalkorDB refuses every write (deletes too) until "
            "memory is freed; nothing was changed. Reads still work; ask the operator "
            "to raise embedded_memory_mb (the server's maxmemory)"
        )
    if isinstance(exc, ResponseError):
        if _READ_ONLY in message:
            return ReadOnlyViolation(message)
        if _TIMED_OUT in message:
            done = "nothing was changed" if read_only else "FalkorDB undid the write"
            return QueryTimeout(f"FalkorDB stopped the query at its time limit; {done}")
        if _QUERY_MEMORY in message:
            allowed = f" ({query_memory // 2**20} MB)" if query_memory else ""
            return MemoryLimitExceeded(
                f"the query needed more memory than one query may use{allowed}; nothing "
                "was changed. Use LIMIT, aggregate, or ask the operator to raise "
                "query_memory_mb"
            )
        if _QUEUE_FULL in message:
            return Busy("FalkorDB's queue of waiting queries is full.", _QUEUE_RETRY)
        if _EMPTY_KEY in message:
            return QueryError(
                f"database {database!r} holds no graph yet: nothing has been written to it"
            )
        if _TIMEOUT_MAX in message:
            return QueryError(
                f"{message} (raise the server's TIMEOUT_MAX or lower graphgate's query_timeout)"
            )
        if message.startswith("WRONGTYPE"):
            return QueryError(f"{database!r} is not a graph on this server")
        return QueryError(message)
    return QueryError(f"{type(exc).__name__}: {message}")


# -- parameters ---------------------------------------------------------------------------


def _params_header(params: Mapping[str, Any] | None) -> str:
    """Render parameters as FalkorDB's ``CYPHER name=value`` prefix.

    The client's own renderer writes Python's ``True`` (which FalkorDB
    rejects), passes NaN through and falls back to ``str()`` for unknown
    types, which would put arbitrary text into the query; here only JSON
    values are accepted.
    """
    if not params:
        return ""
    parts = ["CYPHER"]
    for name, value in params.items():
        parts.append(f"{_param_name(name)}={_literal(value, name)}")
    return " ".join(parts) + " "


def _param_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "`" in name:
        raise QueryError(f"parameter name {name!r} must be a non-empty string without backticks")
    return f"`{name}`"


def _literal(value: Any, where: str) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise QueryError(f"parameter {where!r}: integer {value} does not fit 64 bits")
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QueryError(f"parameter {where!r}: {value} is not a finite number")
        return repr(float(value))
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ",".join(_literal(item, where) for item in value) + "]"
    if isinstance(value, Mapping):
        items = [f"{_param_name(key)}:{_literal(item, where)}" for key, item in value.items()]
        return "{" + ",".join(items) + "}"
    raise QueryError(
        f"parameter {where!r}: values of type {type(value).__name__} are not supported"
    )
