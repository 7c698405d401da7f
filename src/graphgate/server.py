"""Wiring: settings, backend, auth, state and observability into one server.

Nothing here reads the environment or builds anything at import time: the CLI
(or a test) constructs the parts and hands them to `build_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from graphgate import __version__
from graphgate.auth import AuthSetup, build_auth, current_caller
from graphgate.auth.rights import Caller, rights_for_local_user
from graphgate.backends.base import Backend
from graphgate.backends.discovery import Discovery
from graphgate.backends.registry import Backends
from graphgate.backends.supervision import SupervisedBackend
from graphgate.catalog import Catalog, LiveCatalog
from graphgate.catalog_watch import CatalogReloader, SettingsFileWatcher, SettingsSource
from graphgate.config import (
    DEFAULT_BACKEND,
    LOOPBACK_NAMES,
    BackendTarget,
    Settings,
    is_loopback_host,
)
from graphgate.demo import seed_demo
from graphgate.errors import (
    BackendUnavailable,
    ConfigError,
    GraphgateError,
    MetricsNotAuthorized,
    to_http_response,
)
from graphgate.host_guard import HostGuard
from graphgate.http_limits import BodyTimeout, connection_limits
from graphgate.middleware import CallerOf, GraphgateMiddleware
from graphgate.observability import Metrics, Observability, RequestIdMiddleware
from graphgate.prompts import GraphPrompts
from graphgate.ratelimit import RateLimiter
from graphgate.resources import SchemaResources
from graphgate.state import StateStore
from graphgate.tenancy import Router
from graphgate.tools import GraphTools, dialect_of

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Served without a bearer token (but behind the Host/Origin guard); /metrics has
its own secret, required with auth = oidc unless ``metrics_public``."""

INSTRUCTIONS = """\
graphgate gives you read (and, where granted, write) access to graph databases
through openCypher. Start with list_databases to see which databases you may
use, get_schema to learn their labels, relationship types and properties, then
run_query. Each database speaks its own Cypher dialect (list_databases says
which; get_schema notes where it differs). explain_query shows a plan without
running it. Pass values as params rather than formatting them into query text.
An admin can compare databases with query_databases."""


@dataclass
class Parts:
    """Everything the server is built from, constructed once by the caller.

    Constructed, not opened: `opened` opens the files, clients and the backend
    and closes them again, in the lifespan (or in `run`, before serving).
    """

    settings: Settings
    catalog: LiveCatalog
    backends: Backends
    store: StateStore
    observability: Observability
    http_client: httpx.AsyncClient
    auth: AuthSetup
    caller_of: CallerOf
    discovery: Discovery
    redis: Redis | None = None
    """The one client for ``state_url`` when it names Redis, shared by every part there."""
    reloader: CatalogReloader | None = None
    """Reloads the catalog from the settings file (when there is one): on change, on SIGHUP."""
    source: SettingsSource | None = None
    _open: bool = field(default=False, init=False, repr=False)

    @property
    def backend(self) -> SupervisedBackend:
        """The backend named ``default`` (the demo's, and the single ``backend`` setting's)."""
        return self.backends.get(DEFAULT_BACKEND)

    @backend.setter
    def backend(self, backend: SupervisedBackend) -> None:
        self.backends.replace(DEFAULT_BACKEND, backend)


@asynccontextmanager
async def opened(parts: Parts) -> AsyncIterator[Parts]:
    """Open every resource of ``parts``; on the way out close them all, in reverse.

    Re-entrant: `run` opens the parts before serving, so that a start-up error
    (a data directory another graphgate holds) is one line rather than a
    lifespan traceback; the lifespan then finds them open and leaves them to
    `run`. A remote database that is down does not stop start-up (see
    `graphgate.backends.supervision`).
    """
    if parts._open:
        yield parts
        return
    async with AsyncExitStack() as stack:
        parts.observability.open()
        stack.callback(parts.observability.close)
        await stack.enter_async_context(parts.http_client)
        if parts.redis is not None:
            await stack.enter_async_context(parts.redis)
        stack.push_async_callback(parts.store.close)
        stack.push_async_callback(parts.auth.aclose)
        stack.push_async_callback(parts.backends.close)
        await parts.backends.start()
        stack.push_async_callback(parts.discovery.close)
        parts.discovery.start()
        if parts.source is not None and parts.reloader is not None:
            watcher = SettingsFileWatcher(parts.source.path, partial(parts.reloader.reload, "file"))
            watching = asyncio.get_running_loop().create_task(watcher.run())
            stack.push_async_callback(_cancelled, watching)
        parts._open = True
        stack.callback(setattr, parts, "_open", False)
        yield parts


def metrics_closed(settings: Settings) -> bool:
    """Sign-in on but no metrics secret: the tenant names in /metrics stay private."""
    return (
        settings.auth != "none" and settings.metrics_token is None and not settings.metrics_public
    )


def _metrics_authorized(request: Request, settings: Settings) -> bool:
    if settings.metrics_token is None:
        return not metrics_closed(settings)
    expected = f"Bearer {settings.metrics_token.get_secret_value()}"
    return hmac.compare_digest(request.headers.get("authorization", ""), expected)


def build_server(parts: Parts) -> FastMCP:
    """A plain FastMCP server: graphgate's tools, its middleware, open operational routes.

    `GraphgateMiddleware` is the outermost middleware; whatever a user adds
    with ``mcp.add_middleware`` runs inside it and sees every call.
    """
    settings = parts.settings

    @asynccontextmanager
    async def lifespan(_server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        async with opened(parts):
            seeding: asyncio.Task[None] | None = None
            try:
                if settings.demo and DEFAULT_BACKEND in parts.backends.names():
                    if parts.backend.status.ready:
                        await seed_demo(parts.backend, settings.catalog)
                    else:
                        seeding = asyncio.create_task(seed_demo_when_ready(parts))
                yield {}
            finally:
                if seeding is not None:
                    seeding.cancel()

    router = Router(
        parts.catalog,
        parts.backends,
        parts.store,
        ttl=settings.session_ttl,
        rediscover=parts.discovery.rediscover,
    )
    tools = GraphTools(settings, router, parts.observability)
    resources = SchemaResources(router, tools.schema_answer, settings.max_result_bytes)
    mcp: FastMCP = FastMCP(
        "graphgate",
        version=__version__,
        instructions=INSTRUCTIONS,
        auth=parts.auth.provider,
        lifespan=lifespan,
        mask_error_details=True,
        middleware=[
            GraphgateMiddleware(
                parts.caller_of,
                RateLimiter(settings.rate_limit),
                parts.observability,
                listing_of=resources.listed,
                backend_of=router.backend_label,
            )
        ],
        # The tools' input schemas hold no $ref to inline (tests/test_tools.py),
        # so FastMCP's default rewriting middleware would only add a layer per call.
        dereference_schemas=False,
    )
    tools.register(mcp)
    resources.register(mcp)
    GraphPrompts(router, dialect_of, settings.allow_writes).register(mcp)

    @mcp.custom_route("/healthz", methods=["GET"], include_in_schema=False)
    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @mcp.custom_route("/readyz", methods=["GET"], include_in_schema=False)
    async def readyz(_request: Request) -> Response:
        # Unauthenticated: states and reasons only, never an address (issue 13).
        ready, body = await parts.backends.readiness()
        return JSONResponse(body, status_code=200 if ready else 503)

    @mcp.custom_route("/metrics", methods=["GET"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not _metrics_authorized(request, settings):
            return to_http_response(MetricsNotAuthorized(metrics_closed(settings)))
        return Response(
            parts.observability.metrics.render(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    return mcp


def allowed_hosts(settings: Settings) -> list[str]:
    """Host names accepted on every path, against DNS rebinding.

    Derived from the configuration only: the public URL's host, and loopback
    names when bound to loopback. IP-literal hosts are accepted besides
    (`graphgate.host_guard`); no other name is.
    """
    hosts: list[str] = []
    if settings.public_url:
        netloc = urlsplit(settings.public_url).netloc
        hosts.append(netloc)
        hosts.append(netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc)
    if is_loopback_host(settings.host) or settings.host in {"0.0.0.0", "::"}:
        for name in sorted(LOOPBACK_NAMES):
            shown = f"[{name}]" if ":" in name else name
            hosts.extend([shown, f"{shown}:{settings.port}"])
    return list(dict.fromkeys(hosts))


def build_http_app(parts: Parts) -> ASGIApp:
    settings = parts.settings
    app = build_server(parts).http_app(
        path="/mcp",
        json_response=settings.json_response,
        stateless_http=settings.stateless_http,
        # graphgate's own Host/Origin guard is applied below, around every
        # path: it also admits the IP-literal Host of probes and scrapes.
        host_origin_protection=False,
    )
    hosts = allowed_hosts(settings)
    guarded = HostGuard(
        app,
        allowed_hosts=hosts,
        allowed_origins=[settings.public_url] if settings.public_url else None,
        plain_hosts=hosts,
    )
    # Outermost, so that even responses of the auth gate carry the id; the body
    # deadline around it all, so that no layer sees a half-received request.
    return BodyTimeout(RequestIdMiddleware(guarded), settings.body_timeout)


def local_caller_of(settings: Settings, live: LiveCatalog | None = None) -> CallerOf:
    """The caller when auth is off: the one local user with the whole (live) catalog."""
    if live is None:
        caller = Caller("local", "local", "local", rights_for_local_user(settings))
        return lambda: caller
    return _LocalCaller(settings, live)


class _LocalCaller:
    """The local user's rights, computed again only when the catalog changed."""

    def __init__(self, settings: Settings, live: LiveCatalog) -> None:
        self._settings = settings
        self._live = live
        self._seen: Catalog | None = None
        self._caller: Caller | None = None

    def __call__(self) -> Caller:
        current = self._live.current
        if current is not self._seen or self._caller is None:
            rights = rights_for_local_user(self._settings, current.tenants)
            self._caller, self._seen = Caller("local", "local", "local", rights), current
        return self._caller


def build_parts(settings: Settings, source: SettingsSource | None = None) -> Parts:
    """Construct every collaborator from the settings; nothing is opened yet (`opened`).

    With ``source`` (the settings file and flags), the catalog reloads when it changes.
    """
    from graphgate.backends import create_backend
    from graphgate.observability import AuditTrail
    from graphgate.state import create_state_store, redis_client

    state = settings.state_target
    redis = redis_client(state.url) if state.kind == "redis" else None
    observability = Observability(AuditTrail(settings.audit_log, settings.audit_query_text))
    metrics = observability.metrics
    live = LiveCatalog(Catalog.from_settings(settings))
    http_client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)

    def build_backend(target: BackendTarget) -> SupervisedBackend:
        return supervised(create_backend(target), metrics, target.name)

    backends = Backends(
        live,
        build_backend,
        readiness=settings.readiness,
        on_removed=lambda name: _forget_backend_metrics(metrics, name),
    )
    discovery = Discovery(live, backends, metrics)
    auth = build_auth(
        settings,
        http_client,
        redis=redis,
        open_paths=OPEN_PATHS,
        on_failure=lambda reason: metrics.auth_failures.labels(reason).inc(),
        catalog=live.names,
        rediscover=discovery.rediscover,
    )
    verifier = auth.verifier
    if verifier is not None:
        metrics.watch_jwks_refreshes(lambda: verifier.keys.refreshes)

        # Rights are computed when a token is verified: a new catalog means computing again.
        def forget_rights(_old: Catalog, _new: Catalog) -> None:
            verifier.clear_cache()

        live.subscribe(forget_rights)
    live.subscribe(partial(_count_tenants, metrics))
    _count_tenants(metrics, live.current, live.current)
    parts = Parts(
        settings=settings,
        catalog=live,
        backends=backends,
        store=create_state_store(state, redis),
        observability=observability,
        http_client=http_client,
        auth=auth,
        caller_of=caller_of(settings, auth, live),
        discovery=discovery,
        redis=redis,
        source=source,
    )
    if source is not None:
        parts.reloader = CatalogReloader(source, settings, live, backends, metrics)
    return parts


def _count_tenants(metrics: Metrics, old: Catalog, new: Catalog) -> None:
    for name in set(old.backends) - set(new.backends):
        with contextlib.suppress(KeyError):
            metrics.catalog_tenants.remove(name)
    for name in new.backends:
        metrics.catalog_tenants.labels(name).set(len(new.tenants_on(name)))


def _forget_backend_metrics(metrics: Metrics, name: str) -> None:
    for metric in (metrics.backend_up, metrics.backend_restarts):
        with contextlib.suppress(KeyError):
            metric.remove(name)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def supervised(
    backend: Backend, metrics: Metrics, name: str = DEFAULT_BACKEND
) -> SupervisedBackend:
    """``backend`` watched and repaired, its state in ``graphgate_backend_up{backend=name}``."""
    up = metrics.backend_up.labels(name)
    return SupervisedBackend(
        backend,
        on_change=lambda status: up.set(1 if status.ready else 0),
        on_restart=metrics.backend_restarts.labels(name).inc,
    )


async def seed_demo_when_ready(parts: Parts) -> None:
    """Demo data for a database that was not there at start, once it comes."""
    await parts.backend.wait_ready()
    try:
        await seed_demo(parts.backend, parts.settings.catalog)
    except GraphgateError as exc:
        logger.warning("could not seed the demo data: %s", exc)


def caller_of(settings: Settings, auth: AuthSetup, live: LiveCatalog | None = None) -> CallerOf:
    """How tools learn who calls: from each request's token, or the one local user."""
    if settings.auth == "none" or auth.provider is None:
        return local_caller_of(settings, live)
    rights_of = auth.provider.rights_of
    return lambda: current_caller(settings, rights_of)


async def run(
    settings: Settings,
    announce: Callable[[], None] | None = None,
    source: SettingsSource | None = None,
) -> None:
    """Serve until interrupted.

    Everything is opened here, before the server, so that a start-up error (a
    data directory another graphgate holds, an audit file that cannot be
    written) ends graphgate with one line; the lifespan then finds it open.
    With ``source``, SIGHUP (and any change of the file) reloads the catalog.
    """
    listener = bind_listener(settings) if settings.transport == "http" else None
    try:
        async with opened(build_parts(settings, source)) as parts:
            reloader = parts.reloader
            if reloader is not None:
                loop = asyncio.get_running_loop()
                pending: set[asyncio.Task[bool]] = set()

                def on_hangup() -> None:
                    task = loop.create_task(reloader.reload("sighup"))
                    pending.add(task)
                    task.add_done_callback(pending.discard)

                loop.add_signal_handler(signal.SIGHUP, on_hangup)
            if announce is not None:  # the port is ours and the backend started: now say so
                announce()
            await _serve(parts, listener)
    finally:
        if listener is not None:
            listener.close()


def bind_listener(settings: Settings) -> socket.socket:
    """The HTTP port, taken before anything else starts.

    A port in use is then one line and a non-zero exit before the database
    starts or anything claims to listen, instead of uvicorn's log after the
    demo data was seeded.
    """
    family = socket.AF_INET6 if ":" in settings.host.strip("[]") else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((settings.host.strip("[]"), settings.port))
    except OSError as exc:
        listener.close()
        reason = (
            "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        )
        raise ConfigError(
            f"port {settings.port} on {settings.host} {reason}: stop what holds it, "
            "or choose another with --port"
        ) from None
    return listener


async def _serve(parts: Parts, listener: socket.socket | None) -> None:
    settings = parts.settings
    if settings.transport == "stdio":
        mcp = build_server(parts)
        await mcp.run_stdio_async(show_banner=False, log_level="WARNING")
        return
    import uvicorn

    app = build_http_app(parts)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="none",
        lifespan="on",
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        # Nothing reads the client address or scheme: public_url alone says
        # what is advertised, so X-Forwarded-* is neither trusted nor parsed.
        proxy_headers=False,
        timeout_graceful_shutdown=30,
        # httptools with a header deadline, keep-alive and connection limits.
        **connection_limits(settings),
    )
    server = uvicorn.Server(config)
    assert listener is not None
    logger.info(
        "graphgate listening on %s/mcp",
        settings.public_url or f"http://{settings.host}:{settings.port}",
    )
    await server.serve(sockets=[listener])
    if server.started is False:
        raise BackendUnavailable(
            f"could not start the HTTP server on {settings.host}:{settings.port}"
        )
