"""The MCP tools: caller → rights → database → backend → result.

Tool names, arguments and result shapes are graphgate's public interface. Each
tool is thin: `graphgate.middleware.GraphgateMiddleware` resolves the caller,
spends their rate budget, writes the audit line and turns errors into tool
errors around every call; a tool reads the call in progress (`current_call`),
does its work, and raises `GraphgateError` for anything the client should
hear about.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastmcp import Context, FastMCP
from fastmcp.server.dependencies import get_http_request
from fastmcp.tools import ToolResult
from mcp_types import InputRequiredResult
from pydantic import Field

from graphgate.auth.rights import Caller
from graphgate.backends.base import (
    Explains,
    QueryLimits,
    QueryPlan,
    QueryResult,
    Schema,
)
from graphgate.backends.cypher_names import names_in
from graphgate.backends.cypher_scan import bound_structure, missing_parameters
from graphgate.config import Settings
from graphgate.confirm import WriteConfirmation, describe
from graphgate.dialect_hints import dialect_label, error_hint, summary
from graphgate.errors import (
    GraphgateError,
    QueryError,
    QueryRefused,
    ReadOnlyViolation,
    WritesNotAllowed,
)
from graphgate.fairshare import FairShare
from graphgate.middleware import (
    ToolCall,
    ToolFunction,
    current_call,
    failures_to_middleware,
    subject_key,
)
from graphgate.observability import Observability
from graphgate.replies import (
    ValueLimits,
    bounded_rows,
    encode,
    object_of_encoded,
    reply,
    reply_json,
)
from graphgate.schema_view import schema_to_dict
from graphgate.tenancy import Router, Target
from graphgate.tool_schemas import ANNOTATIONS, OUTPUT_SCHEMAS

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 100_000
MAX_PARAMS_BYTES = 1_000_000
MAX_CROSS_TENANT_CONCURRENCY = 16
MAX_SCHEMA_SAMPLE = 10_000
READ_IN_THREAD_CHARS = 2_000
"""Longer query texts are measured off the event loop, so other calls keep flowing."""

QueryText = Annotated[
    str,
    Field(
        description="One openCypher query. Use $name placeholders for values and pass them "
        "in `params` instead of formatting them into the text.",
        min_length=1,
        max_length=MAX_QUERY_CHARS,
    ),
]
Params = Annotated[
    dict[str, Any] | None,
    Field(description='Values for the query\'s $placeholders, e.g. {"name": "Ada"}.'),
]
DatabaseArg = Annotated[
    str | None,
    Field(
        description="Database to use for this call only. Omit to use the current database "
        "(see list_databases / use_database).",
        max_length=256,
    ),
]


def _session_id() -> str | None:
    """The MCP session id over stateful HTTP, None where every request stands alone.

    Under the 2026-07-28 protocol or ``stateless_http`` there is no session
    header, so a user's choice is keyed by their identity alone. Over stdio
    there is a single local user.
    """
    try:
        request = get_http_request()
    except RuntimeError:
        return None
    value = request.headers.get("mcp-session-id")
    return value[:128] if value else None


DialectOf = Callable[[Target], str | None]
"""The Cypher dialect a call's target speaks, None until its server was reached."""


def dialect_of(target: Target) -> str | None:
    """The dialect of the backend ``target`` lives on."""
    return backend_dialect(target.backend)


def backend_dialect(backend: object) -> str | None:
    """Asked on use: a Bolt server says which it is (Neo4j, Memgraph) once it was reached."""
    return backend.dialect if isinstance(backend, Explains) else None


@asynccontextmanager
async def in_callers_terms(
    target: Target,
    query: str | None = None,
    params: Mapping[str, Any] | None = None,
    dialect: DialectOf | None = None,
) -> AsyncIterator[None]:
    """Errors of a call on ``target`` told in the terms of the one who made it.

    Read only on the error path: a ``$name`` the database missed is named
    with how to pass it, and the tenant is named, never its physical
    database (a catalog may map ``initech`` to ``initech_prod_internal_7``;
    the backend and the server speak of the latter; it goes to the debug log).
    A query the database refused gets the dialect's note on what it was
    about (`graphgate.dialect_hints`), when it was about indexes, vectors,
    dates or paths.
    """
    try:
        yield
    except GraphgateError as exc:
        told = _naming_missing_parameters(exc, query, params)
        _naming_the_tenant(told, target)
        if dialect is not None:
            _with_dialect_hint(told, dialect(target), query)
        if told is exc:
            raise
        raise told from None


def _with_dialect_hint(exc: GraphgateError, dialect: str | None, query: str | None) -> None:
    if type(exc) not in (QueryError, QueryRefused):
        return
    hint = error_hint(dialect, query, str(exc))
    if hint is not None:
        exc.args = (f"{exc} (hint: {hint})",)


def _naming_missing_parameters(
    exc: GraphgateError, query: str | None, params: Mapping[str, Any] | None
) -> GraphgateError:
    if type(exc) is not QueryError or query is None:
        return exc
    missing = missing_parameters(query, params or {})
    if not missing:
        return exc
    names = ", ".join(f"${name}" for name in missing)
    example = ", ".join(f'"{name}": …' for name in missing)
    return QueryError(
        f"the query uses {names}, which params does not give: pass "
        f"params={{{example}}} (the database said: {exc})"
    )


def _naming_the_tenant(exc: GraphgateError, target: Target) -> None:
    if target.database == target.tenant:
        return
    text = str(exc)
    # Only on the error path, so compiled per use: nothing cached at module level.
    name = re.compile(rf"(?<![\w.-]){re.escape(target.database)}(?![\w.-])")
    told = name.sub(target.tenant, text)
    if told != text:
        logger.debug("error about %r (tenant %r): %s", target.database, target.tenant, text)
        exc.args = (told,)


def _check_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    if params is None:
        return {}
    if not all(isinstance(key, str) and key for key in params):
        raise QueryError("params must be an object whose keys are non-empty strings")
    return dict(params)


def _result_dict(
    target: Target, result: QueryResult, with_stats: bool, with_database: bool = True
) -> dict[str, Any]:
    answer: dict[str, Any] = {"database": target.tenant} if with_database else {}
    answer.update(
        {
            "columns": result.columns,
            "rows": result.rows,
            "row_count": result.row_count,
            "truncated": result.truncated,
            "elapsed_ms": round(result.elapsed_ms, 3),
        }
    )
    if with_stats:
        answer["stats"] = result.stats
    return answer


class GraphTools:
    """graphgate's tools, with their collaborators; `register` declares them on FastMCP."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        observability: Observability,
    ) -> None:
        self._settings = settings
        self._confirm = WriteConfirmation(settings.confirm_writes, settings.confirm_timeout)
        self._router = router
        self._max_bytes = settings.max_result_bytes
        self._values = ValueLimits(
            max_items=settings.max_value_items, max_chars=settings.max_string_chars
        )
        self._limits = QueryLimits(
            row_limit=settings.row_limit,
            timeout=settings.query_timeout,
            allow_file_access=settings.allow_file_access,
            max_bytes=settings.max_result_bytes,
        )
        busy = observability.metrics.busy
        self._fair = FairShare(
            tenant_limit=settings.tenant_concurrency,
            subject_limit=settings.subject_concurrency,
            wait=settings.busy_wait,
            backend_of=router.fair_share_key,
            on_busy=lambda reason: busy.labels(reason).inc(),
        )

    async def _bound_text(self, query: str) -> None:
        """Refuse text the database's parser could not bound, before any backend sees it."""
        depth = self._settings.max_query_depth
        if len(query) > READ_IN_THREAD_CHARS:
            await asyncio.to_thread(bound_structure, query, depth)
        else:
            bound_structure(query, depth)

    def _read_only_advice(self, caller: Caller, target: Target, refused: Exception) -> str:
        """What to do about a write sent through the read path, in the tools' terms."""
        if not self._settings.allow_writes:
            advice = "this server does not allow writes (allow_writes is off)"
        elif not caller.rights.can_write(target.tenant):
            advice = f"you have read-only access to database {target.tenant!r}"
        else:
            advice = "send queries that create, change or delete data with run_write_query"
        return (
            f"run_query only reads and this query writes: {advice}. (The database said: {refused})"
        )

    def _share(self, caller: Caller, target: Target) -> AbstractAsyncContextManager[None]:
        """One of the caller's and one of the tenant's shares of the backend."""
        return self._fair.share(target.tenant, subject_key(caller))

    async def _query_on_one(self, query: str, database: str | None) -> tuple[ToolCall, Target]:
        """The call in progress, its query recorded and bounded, routed to one database."""
        call = current_call()
        call.query = query
        await self._bound_text(query)
        target = await self._router.resolve(call.caller, database, _session_id())
        call.databases.append(target.tenant)
        return call, target

    @asynccontextmanager
    async def _querying(
        self, caller: Caller, target: Target, query: str, params: Mapping[str, Any] | None
    ) -> AsyncIterator[None]:
        """A query's turn on ``target``: in the caller's and the tenant's shares, its
        errors in the caller's terms (with the dialect's hints)."""
        async with self._share(caller, target), in_callers_terms(target, query, params, dialect_of):
            yield

    # -- the tools -----------------------------------------------------------------------

    async def list_databases(self) -> ToolResult:
        """List the databases you may use, your access to each, which is current, and
        the Cypher dialect each speaks (FalkorDB, Neo4j 5, Memgraph)."""
        caller = current_call().caller
        current = await self._router.current(caller, _session_id())
        current = current or caller.rights.starting
        listing = [
            {
                "name": name,
                "access": caller.rights.tenants[name],
                "current": name == current,
                "dialect": dialect_label(backend_dialect(backend)),
            }
            for name, backend in self._router.listed(caller)
        ]
        return reply_json(listing, self._max_bytes, wrapped=True)

    async def use_database(
        self,
        name: Annotated[
            str, Field(description="A database name from list_databases.", max_length=256)
        ],
    ) -> ToolResult:
        """Make `name` the current database for the following calls of this session."""
        call = current_call()
        target = await self._router.choose(call.caller, name, _session_id())
        call.databases.append(target.tenant)
        return reply_json({"current": target.tenant}, self._max_bytes)

    async def run_query(
        self,
        query: QueryText,
        params: Params = None,
        database: DatabaseArg = None,
    ) -> ToolResult:
        """Run a read-only openCypher query and return its rows as JSON.

        The database itself enforces read-only: any query that would write is
        refused. Nodes come back as {id, labels, properties}, relationships as
        {id, type, start, end, properties}, paths as {nodes, relationships}.
        Results beyond the server's row limit are cut and marked truncated.
        Call get_schema first to learn the labels, relationship types and
        properties.
        """
        call, target = await self._query_on_one(query, database)
        caller = call.caller
        async with self._querying(caller, target, query, params):
            try:
                result = await target.backend.read(
                    target.database, query, _check_params(params), self._limits
                )
            except ReadOnlyViolation as exc:
                raise ReadOnlyViolation(self._read_only_advice(caller, target, exc)) from None
        answer, encoded = bounded_rows(
            _result_dict(target, result, with_stats=False), self._max_bytes, self._values
        )
        call.rows = answer["row_count"]
        return reply(encoded, answer)

    async def run_write_query(
        self,
        ctx: Context,
        query: QueryText,
        params: Params = None,
        database: DatabaseArg = None,
    ) -> ToolResult | InputRequiredResult:
        """Run an openCypher query that may create, change or delete data.

        Needs write access to the database. Returns the rows (if the query
        RETURNs any) and `stats`: nodes and relationships created or deleted,
        properties set. Prefer run_query for anything that only reads. The
        server may ask the user to confirm the write first (explain_query
        shows what they will be asked about).
        """
        call, target = await self._query_on_one(query, database)
        caller = call.caller
        if not caller.rights.can_write(target.tenant):
            raise WritesNotAllowed(f"You have read-only access to database {target.tenant!r}.")
        checked = _check_params(params)
        if self._confirm.wanted(target.confirm_writes):
            # Planned inside a share, asked outside one: a person may take minutes.
            async with self._querying(caller, target, query, params):
                plan = await self._explain(target, query, checked)
            question = describe(target.tenant, query, plan, names_in(query))
            asking = await self._confirm.confirm(
                ctx, caller.key, target.tenant, target.confirm_writes, query, checked, question
            )
            if asking is not None:
                call.outcome = "confirmation_asked"
                return asking
        async with self._querying(caller, target, query, params):
            result = await target.backend.write(target.database, query, checked, self._limits)
        answer, encoded = bounded_rows(
            _result_dict(target, result, with_stats=True), self._max_bytes, self._values
        )
        call.rows = answer["row_count"]
        return reply(encoded, answer)

    async def explain_query(
        self,
        query: QueryText,
        params: Params = None,
        database: DatabaseArg = None,
    ) -> ToolResult:
        """Show the database's plan for a query without running it: its operators,
        whether it writes (and with which operations), and the labels and
        relationship types it names. Nothing runs and nothing changes. A plan
        that writes needs the same write access as run_write_query.
        """
        call, target = await self._query_on_one(query, database)
        caller = call.caller
        checked = _check_params(params)
        async with self._querying(caller, target, query, params):
            plan = await self._explain(target, query, checked)
        if plan.writes and not self._settings.allow_writes:
            raise WritesNotAllowed(
                "this query writes, and this server does not allow writes (allow_writes is off)"
            )
        if plan.writes and not caller.rights.can_write(target.tenant):
            raise WritesNotAllowed(
                f"this query writes, and you have read-only access to database {target.tenant!r}"
            )
        names = names_in(query)
        answer = {
            "database": target.tenant,
            "dialect": dialect_label(dialect_of(target)),
            "writes": bool(plan.writes),
            "write_operations": plan.writes,
            "labels": names.labels,
            "relationship_types": names.relationship_types,
            "plan": plan.steps,
            "truncated": plan.truncated,
        }
        return reply_json(answer, self._max_bytes)

    async def _explain(self, target: Target, query: str, params: dict[str, Any]) -> QueryPlan:
        backend = target.backend
        if not isinstance(backend, Explains):
            raise QueryRefused("this server's database cannot show query plans")
        return await backend.explain(target.database, query, params, self._limits)

    async def get_schema(
        self,
        database: DatabaseArg = None,
        pattern: Annotated[
            str | None,
            Field(
                description="Case-insensitive text to narrow a large schema to matching "
                "labels, relationship types and property names.",
                max_length=200,
            ),
        ] = None,
        label: Annotated[
            str | None,
            Field(
                description="One node label (exact name): its properties, the relationship "
                "types that touch it with their directions, and the labels at their other end.",
                max_length=200,
            ),
        ] = None,
        sample_size: Annotated[
            int | None,
            Field(
                description="Entities read per label and relationship type to learn property "
                "types (default 100): raise it to find rare properties of a large graph.",
                ge=1,
                le=MAX_SCHEMA_SAMPLE,
            ),
        ] = None,
    ) -> ToolResult:
        """Describe a database: node labels, relationship types, their properties
        with value types, indexes and constraints, so you can write correct Cypher.
        Relationship endpoints give each type's direction (start → end).
        `dialect_notes` says where this database's Cypher differs from Neo4j's.
        """
        call = current_call()
        target = await self._router.resolve(call.caller, database, _session_id())
        call.databases.append(target.tenant)
        answer = await self.schema_answer(call.caller, target, pattern, label, sample_size)
        return reply_json(answer, self._max_bytes)

    async def schema_answer(
        self,
        caller: Caller,
        target: Target,
        pattern: str | None = None,
        label: str | None = None,
        sample_size: int | None = None,
    ) -> dict[str, Any]:
        """get_schema's answer (also the ``graph://{tenant}/schema`` resource's)."""
        async with self._share(caller, target), in_callers_terms(target):
            limits = self._limits
            if sample_size is not None:
                limits = dataclasses.replace(limits, sample=sample_size)
            schema: Schema = await target.backend.schema(target.database, limits)
        dialect = dialect_of(target)
        answer = {
            "database": target.tenant,
            "dialect": dialect_label(dialect),
            **schema_to_dict(schema, pattern, label),
        }
        notes = summary(dialect)
        if notes is not None:
            answer["dialect_notes"] = notes
        return answer

    async def query_databases(
        self,
        ctx: Context,
        query: QueryText,
        params: Params = None,
        databases: Annotated[
            list[str] | None,
            Field(
                description='Databases to query; omit or ["*"] for every database you may use.',
                max_length=1000,
            ),
        ] = None,
    ) -> ToolResult:
        """Run one read-only query on several databases at once (for example, to
        compare tenants). One failing database does not fail the others: its
        entry holds {error} instead of rows.
        """
        call = current_call()
        call.query = query
        await self._bound_text(query)
        targets = self._router.resolve_many(call.caller, databases)
        call.databases.extend(target.tenant for target in targets)
        checked = _check_params(params)
        gate = asyncio.Semaphore(MAX_CROSS_TENANT_CONCURRENCY)
        total = len(targets)
        share = max(1024, self._max_bytes // total)
        done = 0

        structured: dict[str, Any] = {}

        async def one(target: Target) -> tuple[str, bytes]:
            nonlocal done
            async with gate:
                try:
                    async with (
                        self._fair.tenant_share(target.tenant),
                        in_callers_terms(target, query, checked),
                    ):
                        result = await target.backend.read(
                            target.database, query, checked, self._limits
                        )
                    answer, encoded = bounded_rows(
                        _result_dict(target, result, with_stats=False, with_database=False),
                        share,
                        self._values,
                    )
                    call.rows += answer["row_count"]
                except GraphgateError as exc:
                    answer = {"error": f"{exc.code}: {exc}"}
                    encoded = encode(answer)
                structured[target.tenant] = answer
            done += 1
            # MCP progress notifications, when the client asked for them.
            await ctx.report_progress(done, total, f"{target.tenant} done")
            return target.tenant, encoded

        # One share of the caller's for the whole call, and one of each
        # tenant's while its read runs: the call is one of the caller's,
        # and splitting it by caller shares would make it serial.
        async with self._fair.caller_share(subject_key(call.caller)):
            pieces = await asyncio.gather(*(one(target) for target in targets))
        encoded = object_of_encoded("results", pieces, self._max_bytes)
        return reply(encoded, {"results": {name: structured[name] for name, _ in pieces}})

    def register(self, mcp: FastMCP) -> None:
        """Declare the tools on ``mcp``, which must carry `GraphgateMiddleware`.

        Each is registered through `failures_to_middleware`, so that its
        errors reach the middleware (which renders them) rather than FastMCP's
        error log.
        """
        declared: list[tuple[str, ToolFunction]] = [
            ("list_databases", self.list_databases),
            ("use_database", self.use_database),
            ("run_query", self.run_query),
            ("run_write_query", self.run_write_query),
            ("get_schema", self.get_schema),
            ("query_databases", self.query_databases),
            ("explain_query", self.explain_query),
        ]
        for name, function in declared:
            if name == "run_write_query" and not self._settings.allow_writes:
                continue
            mcp.tool(
                failures_to_middleware(function),
                name=name,
                annotations=ANNOTATIONS[name],
                output_schema=OUTPUT_SCHEMAS[name],
            )
