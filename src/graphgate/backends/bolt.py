"""Neo4j and Memgraph over Bolt: one async driver, one pool, every tenant.

A tenant's database is chosen per session (``driver.session(database=...)``),
never by a driver per tenant, so a catalog of 1,000 tenants costs the same
connections as one: the pool holds at most ``max_connections`` however many
databases are in use. Neo4j resolves the name to one of its databases;
Memgraph (multi-tenancy, Enterprise) to a logical database, and refuses
``USE DATABASE`` in a session that named its database, as every graphgate
session does.

How a query is judged, before it runs (see `dialects` for the measured plan
shapes):

1. The text is tokenized (`cypher_scan`): one statement only, no ``USE``
   clause, no server administration, and the procedures, namespaced
   functions and ``LOAD`` clauses it names.
2. ``EXPLAIN`` of the query, in the session that then runs it: operators
   that leave the database, administer the server, load files, call
   procedures or write are checked against the rules and the operator's
   procedure lists. The facts are remembered for a few minutes per database
   and text (they depend on the text, not on parameter values); so is step 1.
3. The query runs and the summary's query type must be ``r`` for a read. On
   Neo4j a read is an auto-commit transaction in read access mode, one round
   trip: the server refuses any write in it ("Writing in read access mode
   not allowed"). Memgraph does not enforce access modes, so there a read
   runs in an explicit transaction that is rolled back, never committed.

Deadlines: every transaction carries ``query_timeout`` as its server-side
timeout; graphgate gives up itself a few seconds later (`_CLIENT_GRACE`,
covering how late Neo4j's transaction monitor notices a timeout), and then
terminates the abandoned transaction on the server in the background
(`bolt_abandon`). Waiting for a pooled connection is bounded separately and
short (``pool_wait``), answered with `Busy`. Errors say whether a write was
not sent, rolled back, or may have committed (`bolt_errors`). A dropped
connection is retried once for a read, never for a write.

Results stop at ``row_limit`` rows and at ``QueryLimits.max_bytes`` (the
rows' JSON size, measured per fetched batch): the rest is discarded on the
server, never sent. A single value is built whole by the driver before
graphgate sees it; the server's per-transaction memory limit bounds the
values it materialises, not those it streams (docs/backends.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

import pydantic_core
from cachetools import LRUCache, TTLCache

from graphgate.backends import bolt_schema as schema_sql
from graphgate.backends.base import QueryLimits, QueryPlan, QueryResult, Schema, bounded_plan
from graphgate.backends.bolt_abandon import Terminator, new_call_id, transaction_metadata
from graphgate.backends.bolt_convert import bolt_converter
from graphgate.backends.bolt_errors import WriteProgress, abandoned, translate
from graphgate.backends.cypher_scan import Scan, require_single_statement, scan
from graphgate.backends.dialects import (
    Dialect,
    PlanFacts,
    enforce,
    guess_dialect,
    memgraph_plan_facts,
    neo4j_plan_facts,
)
from graphgate.backends.procedures import ProcedurePolicy
from graphgate.config import BOLT_SCHEMES, BackendTarget
from graphgate.errors import (
    BackendUnavailable,
    ConfigError,
    GraphgateError,
    QueryError,
    QueryRefused,
    ReadOnlyViolation,
)

if TYPE_CHECKING:
    from neo4j import AsyncDriver, AsyncResult, AsyncSession, AsyncTransaction, Query


__all__ = ["BoltBackend"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# How much longer than the server-side transaction timeout the client waits.
# Neo4j's transaction monitor checks timeouts every 2 s by default
# (db.transaction.monitor.check.interval): a 1 s timeout ends between 1.05
# and 2.3 s (measured on 5.26). A shorter grace would abandon, and report as
# outcome-unknown, writes the server is about to roll back itself.
_CLIENT_GRACE = 3.0
# The smallest wait for a pooled connection: 0 would fail even a free pool's acquisition.
_MIN_POOL_WAIT = 0.05
_MEMGRAPH_FALLBACK_SAMPLE = 1000
_FETCH_SIZE = 1000
_SCAN_CACHE_MAX_CHARS = 10_000
_CACHE_ENTRIES = 2048
_PLAN_TTL = 300.0
_SYSTEM_DATABASE = "system"

_STATS: Final = {
    "nodes_created": "nodes_created",
    "nodes_deleted": "nodes_deleted",
    "relationships_created": "relationships_created",
    "relationships_deleted": "relationships_deleted",
    "properties_set": "properties_set",
    "labels_added": "labels_added",
    "labels_removed": "labels_removed",
    "indexes_added": "indexes_created",
    "indexes_removed": "indexes_deleted",
    "constraints_added": "constraints_created",
    "constraints_removed": "constraints_deleted",
}


class BoltBackend:
    """A Neo4j or Memgraph server reached with the async ``neo4j`` driver."""

    name = "bolt"

    def __init__(
        self,
        uri: str,
        *,
        user: str | None = None,
        password: str | None = None,
        dialect: Dialect | None = None,
        policy: ProcedurePolicy | None = None,
        max_connections: int = 100,
        connect_timeout: float = 5.0,
        query_timeout: float = 30.0,
        pool_wait: float = 2.0,
        user_agent: str = "graphgate",
    ) -> None:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme not in BOLT_SCHEMES:
            raise ConfigError(
                f"{scheme or 'no'} scheme: expected bolt://, bolt+s://, neo4j:// or neo4j+s:// "
                "host:port"
            )
        if not parts.hostname:
            raise ConfigError(f"the Bolt URL {uri!r} has no host: bolt://host:7687")
        try:
            port = parts.port or 7687
        except ValueError:
            raise ConfigError(f"the Bolt URL {uri!r} has an invalid port") from None
        if parts.path not in {"", "/"}:
            raise ConfigError(
                "the Bolt URL must not name a database (path): tenants' databases come "
                "from the catalog"
            )
        if max_connections < 1:
            raise ConfigError("max_connections must be at least 1")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.uri = f"{scheme}://{host}:{port}" + (f"?{parts.query}" if parts.query else "")
        # Credentials given as arguments win over those in the URL.
        self.user = user or (unquote(parts.username) if parts.username else None)
        self._password = password or (unquote(parts.password) if parts.password else None)
        self.dialect: Dialect | None = dialect
        if dialect is not None:
            self.name = dialect
        self.policy = policy or ProcedurePolicy()
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.query_timeout = query_timeout
        self.pool_wait = pool_wait
        self.user_agent = user_agent
        self.agent = ""
        self._driver: AsyncDriver | None = None
        self._convert = bolt_converter()
        # Plan facts per (dialect, database, text) for a few minutes, as a schema
        # change may alter them; text facts depend on the text alone.
        self._plans: TTLCache[tuple[str, str, str], PlanFacts] = TTLCache(
            maxsize=_CACHE_ENTRIES, ttl=_PLAN_TTL
        )
        self._scans: LRUCache[str, Scan] = LRUCache(maxsize=_CACHE_ENTRIES)
        self._terminator = Terminator(self._plain_session, bound=connect_timeout * 2)

    @classmethod
    def from_target(cls, target: BackendTarget) -> BoltBackend:
        """The backend ``--backend bolt://...`` names, with the operator's procedure lists."""
        return cls(
            target.url,
            user=target.user,
            password=target.secret,
            dialect=target.dialect,
            policy=ProcedurePolicy.from_lists(target.allow_procedures, target.deny_procedures),
            query_timeout=target.query_timeout,
            pool_wait=target.pool_wait,
        )

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the driver and learn the server's agent, which picks the dialect."""
        if self._driver is not None:
            return
        from neo4j import AsyncGraphDatabase
        from neo4j.exceptions import AuthError, DriverError, Neo4jError

        auth = (self.user or "", self._password or "") if (self.user or self._password) else None
        driver = AsyncGraphDatabase.driver(
            self.uri,
            auth=auth,
            user_agent=self.user_agent,
            max_connection_pool_size=self.max_connections,
            connection_timeout=self.connect_timeout,
            connection_acquisition_timeout=self.connect_timeout * 6,
            liveness_check_timeout=30.0,
            max_transaction_retry_time=0.0,
        )
        try:
            async with asyncio.timeout(self.connect_timeout * 2):
                info = await driver.get_server_info()
        except TimeoutError:
            await driver.close()
            logger.warning("no answer from %s within %g s", self.uri, self.connect_timeout * 2)
            raise BackendUnavailable(
                f"no answer from the database server within {self.connect_timeout * 2:g} s"
            ) from None
        except AuthError as exc:
            await driver.close()
            logger.warning("%s refused graphgate's credentials: %s", self.uri, exc.message)
            raise BackendUnavailable(
                f"the database server refused graphgate's credentials: {exc.message}"
            ) from exc
        except (DriverError, Neo4jError, OSError) as exc:
            await driver.close()
            logger.warning("cannot reach %s: %s", self.uri, exc)
            raise BackendUnavailable("cannot reach the database server") from exc
        self.agent = str(info.agent)
        if self.dialect is None:
            self.dialect = guess_dialect(self.agent)
        self.name = self.dialect
        self._driver = driver

    async def close(self) -> None:
        await self._terminator.close()
        driver, self._driver = self._driver, None
        if driver is not None:
            # Closing only says goodbye on idle sockets; a dead peer must not hold up shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.connect_timeout):
                    await driver.close()

    async def ping(self) -> None:
        driver = self._require_driver()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await driver.verify_connectivity()
        except TimeoutError:
            logger.warning("%s did not answer within %g s", self.uri, self.connect_timeout)
            raise BackendUnavailable(
                f"the database server did not answer within {self.connect_timeout:g} s"
            ) from None
        except Exception as exc:
            raise translate(exc) from exc

    # -- queries --------------------------------------------------------------------------
    async def read(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryResult:
        from neo4j.exceptions import ServiceUnavailable, SessionExpired

        self._check_database(database)
        found = self._scan(query)
        started = time.perf_counter()
        for attempt in (1, 2):
            call = new_call_id()
            try:
                result = await self._bounded(
                    limits,
                    self._read_once(database, query, found, params, limits, call),
                    database=database,
                    call=call,
                )
            except (ServiceUnavailable, SessionExpired) as exc:
                if attempt == 1:
                    continue  # a dropped connection: reads are safe to send again, once
                raise self._translate(exc, limits) from exc
            except GraphgateError:
                raise
            except Exception as exc:
                raise self._translate(exc, limits) from exc
            result.elapsed_ms = (time.perf_counter() - started) * 1000
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def write(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryResult:
        self._check_database(database)
        found = self._scan(query)
        started = time.perf_counter()
        call = new_call_id()
        progress = WriteProgress()
        try:
            result = await self._bounded(
                limits,
                self._write_once(database, query, found, params, limits, call, progress),
                database=database,
                call=call,
                progress=progress,
            )
        except GraphgateError:
            raise
        except Exception as exc:
            raise self._translate(exc, limits, progress) from exc
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return result

    async def explain(
        self,
        database: str,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
    ) -> QueryPlan:
        """``EXPLAIN`` in a transaction that is never committed, judged like a write.

        The same text and plan checks as `write` (USE, administration,
        procedures, files), so a plan is shown only of what graphgate would run.
        """
        self._check_database(database)
        found = self._scan(query)
        _refuse_text(found, self.policy, limits)
        dialect = self._dialect()
        if dialect == "memgraph" and found.kind != "cypher":
            if found.kind == "schema":
                return QueryPlan(steps=[], writes=["schema change"])
            raise QueryRefused("only Cypher queries and index or constraint statements plan")
        call = new_call_id()
        try:
            lines, facts = await self._bounded(
                limits,
                self._plan(database, dialect, found, query, params, limits, call),
                database=database,
                call=call,
            )
        except GraphgateError:
            raise
        except Exception as exc:
            raise self._translate(exc, limits) from exc
        enforce(
            facts,
            found,
            self.policy,
            read_only=False,
            allow_file_access=limits.allow_file_access,
            allow_batched=dialect == "neo4j",
        )
        writes = [name for name in facts.operators if _writes(name)] or facts.writes
        if facts.schema_only:
            writes = ["schema change"]
        return bounded_plan(lines, writes)

    async def _plan(
        self,
        database: str,
        dialect: Dialect,
        found: Scan,
        query: str,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
        call: str,
    ) -> tuple[list[str], PlanFacts]:
        body = query[found.body_start : found.body_end]
        async with self._session(database, read=False, pool_wait=limits.timeout) as session:
            tx = await session.begin_transaction(
                metadata=transaction_metadata(call), timeout=limits.timeout
            )
            try:
                cursor = await tx.run("EXPLAIN " + body, _params(params))
                if dialect == "memgraph":
                    rows = [str(record[0]) async for record in cursor]
                    await cursor.consume()
                    return [row.rstrip() for row in rows], memgraph_plan_facts(rows)
                summary = await cursor.consume()
                facts = neo4j_plan_facts(summary.plan, str(summary.query_type or ""), database)
                return _plan_lines(summary.plan), facts
            finally:
                await tx.close()  # never committed: EXPLAIN runs nothing, and keeps nothing

    async def schema(self, database: str, limits: QueryLimits) -> Schema:
        """Labels, types, properties, counts, endpoints, indexes and constraints."""
        self._check_database(database)
        call = new_call_id()
        try:
            if self._dialect() == "memgraph":
                work = self._memgraph_schema(database, limits, call)
            else:
                work = self._neo4j_schema(database, limits, call)
            return await self._bounded(limits, work, database=database, call=call)
        except GraphgateError:
            raise
        except Exception as exc:
            raise self._translate(exc, limits) from exc

    async def list_databases(self) -> list[str]:
        """Standard databases only: never ``system``, never composite (they span databases)."""
        limits = QueryLimits(timeout=self.connect_timeout * 2)
        try:
            if self._dialect() == "memgraph":
                return await self._bounded(limits, self._memgraph_databases())
            return await self._bounded(limits, self._neo4j_databases())
        except GraphgateError:
            raise
        except Exception as exc:
            raise self._translate(exc, limits) from exc

    async def abandoned_work_done(self) -> None:
        """Until the background terminations of abandoned transactions have finished."""
        await self._terminator.wait()

    # -- internals: running -------------------------------------------------------------------
    def _pool_wait(self, timeout: float) -> float:
        """How long a call may wait for a pooled connection: short, and within its deadline."""
        return max(_MIN_POOL_WAIT, min(self.pool_wait, timeout))

    def _translate(
        self, exc: BaseException, limits: QueryLimits, progress: WriteProgress | None = None
    ) -> GraphgateError:
        return translate(
            exc, progress=progress, timeout=limits.timeout, pool_size=self.max_connections
        )

    def _require_driver(self) -> AsyncDriver:
        if self._driver is None:
            raise BackendUnavailable("the Bolt backend is not started")
        return self._driver

    def _dialect(self) -> Dialect:
        self._require_driver()
        assert self.dialect is not None  # set by start()
        return self.dialect

    def _scan(self, query: str) -> Scan:
        """The text's facts, remembered for texts short enough to keep."""
        if not isinstance(query, str) or not query.strip():
            raise QueryError("the query is empty")
        found = self._scans.get(query)
        if found is None:
            found = scan(query)
            require_single_statement(found)
            if len(query) <= _SCAN_CACHE_MAX_CHARS:
                self._scans[query] = found
        return found

    @staticmethod
    def _check_database(database: str) -> None:
        if not database:
            raise QueryError("database name must not be empty")
        if database.casefold() == _SYSTEM_DATABASE:
            raise QueryRefused("the system database is not a tenant database")

    @asynccontextmanager
    async def _session(
        self, database: str, *, read: bool, pool_wait: float | None = None
    ) -> AsyncIterator[AsyncSession]:
        from neo4j import READ_ACCESS, WRITE_ACCESS

        driver = self._require_driver()
        session = driver.session(
            database=database,
            default_access_mode=READ_ACCESS if read else WRITE_ACCESS,
            fetch_size=_FETCH_SIZE,
            connection_acquisition_timeout=self._pool_wait(
                self.query_timeout if pool_wait is None else pool_wait
            ),
        )
        try:
            yield session
        finally:
            await session.close()

    def _plain_session(self, database: str) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """A session for graphgate's own housekeeping statements."""
        return self._session(database, read=False)

    async def _bounded(
        self,
        limits: QueryLimits,
        work: Awaitable[_T],
        *,
        database: str = "",
        call: str | None = None,
        progress: WriteProgress | None = None,
    ) -> _T:
        """Await ``work`` until the server should have answered, then give up on it.

        The server stops the transaction at ``limits.timeout``; graphgate waits
        for a pooled connection, that timeout and `_CLIENT_GRACE` more. Past
        that, the transaction tagged ``call`` is terminated on the server in
        the background and the caller gets its error at once.
        """
        deadline = limits.timeout + self._pool_wait(limits.timeout) + _CLIENT_GRACE
        try:
            async with asyncio.timeout(deadline):
                return await work
        except TimeoutError:
            if call is not None and self.dialect is not None:
                self._terminator.stop(self.dialect, database, call)
            raise abandoned(deadline, progress) from None

    async def _read_once(
        self,
        database: str,
        query: str,
        found: Scan,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
        call: str,
    ) -> QueryResult:
        dialect = self._dialect()
        statement = query[: found.body_end]
        body = query[found.body_start : found.body_end]
        metadata = transaction_metadata(call)
        # The text's verdict first: USE, administration and named procedures are
        # refused as such, even where the planner would only answer with an error.
        _refuse_text(found, self.policy, limits)
        if dialect == "memgraph" and found.kind != "cypher":
            if found.kind == "schema":
                raise ReadOnlyViolation("index and constraint statements are writes")
            raise QueryRefused(
                "only Cypher queries run through the read path; use get_schema for "
                "indexes and constraints"
            )
        async with self._session(database, read=True, pool_wait=limits.timeout) as session:
            if dialect == "memgraph":
                # Memgraph ignores the access mode: the transaction is never committed.
                tx = await session.begin_transaction(metadata=metadata, timeout=limits.timeout)
                try:
                    facts = await self._explain(tx, dialect, database, body, params)
                    self._enforce_read(facts, found, limits)
                    cursor = await tx.run(statement, _params(params))
                    return self._pure_read(*await self._collect(cursor, limits), found)
                finally:
                    await tx.close()
            # Neo4j refuses writes in a read-mode transaction: one auto-commit round trip.
            facts = await self._explain(
                session,
                dialect,
                database,
                body,
                params,
                server_timeout=limits.timeout,
                metadata=metadata,
            )
            self._enforce_read(facts, found, limits)
            cursor = await session.run(_query(statement, limits.timeout, metadata), _params(params))
            return self._pure_read(*await self._collect(cursor, limits), found)

    def _enforce_read(self, facts: PlanFacts, found: Scan, limits: QueryLimits) -> None:
        enforce(
            facts, found, self.policy, read_only=True, allow_file_access=limits.allow_file_access
        )

    @staticmethod
    def _pure_read(result: QueryResult, query_type: str, found: Scan) -> QueryResult:
        result.stats = {}  # a read changes nothing: no counters to report
        # EXPLAIN alone runs nothing (and Memgraph types it "rw").
        if query_type != "r" and found.prefix != "EXPLAIN":
            raise ReadOnlyViolation(
                f"the server reported query type {query_type!r} for this query; "
                "the read path runs only pure reads"
            )
        return result

    async def _write_once(
        self,
        database: str,
        query: str,
        found: Scan,
        params: Mapping[str, Any] | None,
        limits: QueryLimits,
        call: str,
        progress: WriteProgress,
    ) -> QueryResult:
        dialect = self._dialect()
        statement = query[: found.body_end]
        body = query[found.body_start : found.body_end]
        metadata = transaction_metadata(call)
        _refuse_text(found, self.policy, limits)
        if dialect == "memgraph" and found.kind != "cypher":
            if found.kind != "schema":
                raise QueryRefused(
                    "Memgraph statements other than Cypher queries and index or constraint "
                    "definitions are not available through graphgate"
                )
            # Memgraph allows index and constraint changes only outside explicit transactions.
            async with self._session(database, read=False, pool_wait=limits.timeout) as session:
                progress.phase = "committing"  # auto-commit: it commits as it runs
                cursor = await session.run(
                    _query(statement, limits.timeout, metadata), _params(params)
                )
                result, _ = await self._collect(cursor, limits)
                return result
        async with self._session(database, read=False, pool_wait=limits.timeout) as session:
            tx = await session.begin_transaction(metadata=metadata, timeout=limits.timeout)
            try:
                facts = await self._explain(tx, dialect, database, body, params)
                enforce(
                    facts,
                    found,
                    self.policy,
                    read_only=False,
                    allow_file_access=limits.allow_file_access,
                    allow_batched=dialect == "neo4j",
                )
                if not facts.batched:
                    progress.phase = "open"
                    cursor = await tx.run(statement, _params(params))
                    result, _ = await self._collect(cursor, limits)
                    progress.phase = "committing"
                    await tx.commit()
                    return result
            finally:
                await tx.close()  # rolls back whatever was not committed (here: only the plan)
            # CALL {} IN TRANSACTIONS commits batch by batch, and Neo4j runs it only as
            # an auto-commit statement; its timeout bounds the whole, not each batch.
            progress.phase = "committing"
            progress.batched = True
            cursor = await session.run(_query(statement, limits.timeout, metadata), _params(params))
            result, _ = await self._collect(cursor, limits)
            return result

    async def _explain(
        self,
        runner: AsyncTransaction | AsyncSession,
        dialect: Dialect,
        database: str,
        body: str,
        params: Mapping[str, Any] | None,
        *,
        server_timeout: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> PlanFacts:
        """The planner's facts about ``body``, remembered briefly per database and text.

        A plan's kind (read or write), its operators and the procedures it calls
        depend on the text, not on parameter values, so repeated queries skip
        the extra planning round trip. Reads still run in read mode and have
        their executed query type checked, whatever the cache says. In an
        explicit transaction the transaction's timeout applies; on a session
        the statement carries ``server_timeout``.
        """
        key = (dialect, database, body)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        explain = "EXPLAIN " + body
        if server_timeout is None:
            cursor = await runner.run(explain, _params(params))
        else:
            statement = _query(explain, server_timeout, metadata)
            cursor = await runner.run(statement, _params(params))  # type: ignore[arg-type]
        if dialect == "memgraph":
            rows = [str(record[0]) async for record in cursor]
            await cursor.consume()
            facts = memgraph_plan_facts(rows)
        else:
            summary = await cursor.consume()
            facts = neo4j_plan_facts(summary.plan, str(summary.query_type or ""), database)
        self._plans[key] = facts
        return facts

    async def _collect(self, cursor: AsyncResult, limits: QueryLimits) -> tuple[QueryResult, str]:
        """Rows up to ``row_limit`` and ``max_bytes``; the rest are discarded on the server."""
        keys = cursor.keys()
        columns = [str(key) for key in keys]
        row_limit = limits.row_limit
        budget = limits.max_bytes
        convert = self._convert
        rows: list[list[Any]] = []
        truncated = False
        used = 2  # the rows' brackets
        while not truncated:
            # Fetches of at most a driver batch instead of an await per record;
            # one row past the limit tells whether there were more.
            wanted = min(_FETCH_SIZE, row_limit + 1 - len(rows))
            records = await cursor.fetch(wanted)
            batch = [convert.row(record.values()) for record in records]
            if len(rows) + len(batch) > row_limit:
                batch = batch[: row_limit - len(rows)]
                truncated = True
            if budget is not None:
                fits, used = _fitting(batch, used, budget)
                if fits < len(batch):
                    batch = batch[:fits]
                    truncated = True  # no row past the budget is kept, or fetched
            rows.extend(batch)
            if len(records) < wanted:
                break
        summary = await cursor.consume()
        counters = summary.counters
        stats = {name: int(getattr(counters, attribute, 0)) for attribute, name in _STATS.items()}
        result = QueryResult(columns=columns, rows=rows, truncated=truncated, stats=stats)
        return result, str(summary.query_type or "")

    async def _rows(
        self, runner: Any, query: str | Query, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Trusted internal statements (schema, catalog): plain values, no conversion."""
        cursor = await runner.run(query, params)
        return [record.data() async for record in cursor]

    # -- internals: schema and catalog -----------------------------------------------------------
    async def _neo4j_schema(self, database: str, limits: QueryLimits, call: str) -> Schema:
        async with self._session(database, read=True, pool_wait=limits.timeout) as session:
            tx = await session.begin_transaction(
                metadata=transaction_metadata(call), timeout=limits.timeout
            )
            try:
                labels = [row["label"] for row in await self._rows(tx, "CALL db.labels()")]
                types = [
                    row["relationshipType"]
                    for row in await self._rows(tx, "CALL db.relationshipTypes()")
                ]
                nodes, rels = schema_sql.neo4j_labels(
                    await self._rows(tx, schema_sql.NEO4J_NODE_PROPERTIES),
                    await self._rows(tx, schema_sql.NEO4J_REL_PROPERTIES),
                    labels=labels,
                    types=types,
                )
                for label in labels:
                    quoted = schema_sql.quote_name(label)
                    rows = await self._rows(tx, f"MATCH (n:{quoted}) RETURN count(n) AS c")
                    nodes.count(label, rows[0]["c"])
                for rel_type in types:
                    quoted = schema_sql.quote_name(rel_type)
                    rows = await self._rows(tx, f"MATCH ()-[r:{quoted}]->() RETURN count(r) AS c")
                    rels.count(rel_type, rows[0]["c"])
                    ends = await self._rows(
                        tx,
                        f"MATCH (a)-[:{quoted}]->(b) WITH a, b LIMIT {int(limits.sample)} "
                        "UNWIND labels(a) AS s UNWIND labels(b) AS e RETURN DISTINCT s, e",
                    )
                    for row in ends:
                        rels.endpoint(rel_type, row["s"], row["e"])
                indexes = schema_sql.neo4j_indexes(await self._rows(tx, schema_sql.NEO4J_INDEXES))
                constraints = schema_sql.neo4j_constraints(
                    await self._rows(tx, schema_sql.NEO4J_CONSTRAINTS)
                )
            finally:
                await tx.close()
        return Schema(
            node_labels=nodes.infos(counted=True),
            relationship_types=rels.infos(counted=True),
            indexes=indexes,
            constraints=constraints,
        )

    async def _memgraph_schema(self, database: str, limits: QueryLimits, call: str) -> Schema:
        from neo4j.exceptions import Neo4jError

        metadata = transaction_metadata(call)
        async with self._session(database, read=True, pool_wait=limits.timeout) as session:
            try:
                rows = await self._rows(
                    session, _query(schema_sql.MEMGRAPH_SCHEMA_INFO, limits.timeout, metadata)
                )
                node_labels, rel_types = schema_sql.memgraph_schema_info(rows[0]["schema"])
            except Neo4jError:
                # Run-time schema tracking is off (or the server predates it): sample instead.
                tx = await session.begin_transaction(metadata=metadata, timeout=limits.timeout)
                try:
                    sample = {"sample": max(limits.sample, _MEMGRAPH_FALLBACK_SAMPLE)}
                    node_labels, rel_types = schema_sql.memgraph_sampled(
                        await self._rows(tx, schema_sql.MEMGRAPH_NODE_SAMPLE, sample),
                        await self._rows(tx, schema_sql.MEMGRAPH_REL_SAMPLE, sample),
                        await self._rows(tx, schema_sql.MEMGRAPH_REL_ENDPOINTS, sample),
                    )
                finally:
                    await tx.close()
            indexes = schema_sql.memgraph_indexes(
                await self._rows(
                    session, _query(schema_sql.MEMGRAPH_INDEXES, limits.timeout, metadata)
                )
            )
            constraints = schema_sql.memgraph_constraints(
                await self._rows(
                    session, _query(schema_sql.MEMGRAPH_CONSTRAINTS, limits.timeout, metadata)
                )
            )
        return Schema(
            node_labels=node_labels,
            relationship_types=rel_types,
            indexes=indexes,
            constraints=constraints,
        )

    async def _neo4j_databases(self) -> list[str]:
        async with self._session(_SYSTEM_DATABASE, read=True) as session:
            rows = await self._rows(
                session,
                "SHOW DATABASES YIELD name, type WHERE type = 'standard' "
                "RETURN DISTINCT name ORDER BY name",
            )
        return [str(row["name"]) for row in rows]

    async def _memgraph_databases(self) -> list[str]:
        from neo4j.exceptions import Neo4jError

        driver = self._require_driver()
        try:
            async with driver.session(default_access_mode="READ") as session:
                rows = await self._rows(session, "SHOW DATABASES")
        except Neo4jError:
            # Without an Enterprise licence Memgraph has exactly one database.
            return ["memgraph"]
        names = [str(next(iter(row.values()))) for row in rows if row]
        return sorted(names)

    # -- fair share -----------------------------------------------------------------------
    async def workers(self) -> int:
        """The driver's pool size: at most that many queries are in flight at once.

        The server's own worker count is not readable over Bolt; the pool is
        what one tenant could otherwise exhaust, so the fair share gives each
        tenant half of it.
        """
        return self.max_connections


def _fitting(batch: list[list[Any]], used: int, budget: int) -> tuple[int, int]:
    """How many rows of ``batch`` fit in ``budget`` after ``used`` bytes, and the bytes then used.

    The batch is encoded once (pydantic-core, in Rust, as the reply will be);
    only a batch that does not fit is measured row by row to find the cut. A
    row whose top-level values alone cannot fit is never encoded: one
    ``range(1, 5000000)`` would otherwise cost another 40 MB of JSON.
    """
    if used + sum(_size_at_least(row) for row in batch) <= budget:
        size = len(pydantic_core.to_json(batch, serialize_unknown=True)) - 1  # one pair of []
        if used + size <= budget:
            return len(batch), used + size
    for kept, row in enumerate(batch):
        if used + _size_at_least(row) > budget:
            return kept, used
        row_size = len(pydantic_core.to_json(row, serialize_unknown=True)) + 1
        if used + row_size > budget:
            return kept, used
        used += row_size
    return len(batch), used


def _size_at_least(row: list[Any]) -> int:
    """A lower bound of a row's JSON size from its top-level values' lengths, without encoding."""
    return 1 + sum(len(value) + 1 if isinstance(value, str | list | dict) else 2 for value in row)


_WRITE_OPERATORS = (
    "Create", "Merge", "LockingMerge", "Delete", "DetachDelete", "Set", "Remove", "Foreach",
)  # fmt: skip
_SCHEMA_OPERATORS = ("CreateIndex", "CreateConstraint")


def _writes(operator: str) -> bool:
    """Whether a Neo4j or Memgraph plan operator changes the graph (``SetProperty@neo4j``)."""
    name = operator.partition("@")[0]
    return name.startswith(_WRITE_OPERATORS) and not name.startswith(_SCHEMA_OPERATORS)


def _plan_lines(plan: Mapping[str, Any] | None, depth: int = 0) -> list[str]:
    """A Neo4j plan tree as indented lines: ``Operator | details``."""
    if plan is None:
        return []
    name = str(plan.get("operatorType", "")).partition("@")[0]
    details = str((plan.get("args") or {}).get("Details", ""))
    lines = ["    " * depth + (f"{name} | {details}" if details else name)]
    for child in plan.get("children") or ():
        lines.extend(_plan_lines(child, depth + 1))
    return lines


def _params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(params) if params else None


def _refuse_text(found: Scan, policy: ProcedurePolicy, limits: QueryLimits) -> None:
    """The text-only verdict, for statements no planner will explain."""
    enforce(
        PlanFacts(),
        found,
        policy,
        read_only=False,
        allow_file_access=limits.allow_file_access,
    )


def _query(text: str, timeout: float, metadata: dict[str, str] | None = None) -> Query:
    """An auto-commit statement with the transaction timeout the server enforces."""
    from neo4j import Query

    return Query(text, metadata=metadata or transaction_metadata(new_call_id()), timeout=timeout)
