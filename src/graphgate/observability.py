"""What operators see: Prometheus metrics, the audit trail, structured logs.

Everything hangs off one `Observability` instance built at start-up; the
Prometheus registry is the instance's own (never the process-global default),
so two servers in one test process do not share counters.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graphgate.auth.rights import Caller
from graphgate.errors import ConfigError

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "graphgate_request_id", default=None
)
"""The current request's id, set by the HTTP layer and copied into every log line."""

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Called once by the CLI; logs go to stderr so stdio transport stays clean."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "mcp", "fastmcp", "uvicorn.access", "docket"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def configure_telemetry(otel_spans: bool) -> None:
    """Called once by the CLI: FastMCP's telemetry mode is a setting of the process.

    Without spans, ``propagation_only`` is the cheaper of FastMCP's two quiet
    modes (its ``off`` still assembles every span's attributes per request);
    trace context still flows through ``_meta``.
    """
    import fastmcp

    fastmcp.settings.telemetry_mode = "native" if otel_spans else "propagation_only"


class RequestIdMiddleware:
    """Gives every HTTP request an id: in the logs, the audit trail and ``X-Request-Id``.

    A client-supplied id is kept only when it is short and plain, so it cannot
    inject anything into log lines.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                supplied = value.decode("latin-1")
                break
        request_id = supplied if _plain_id(supplied) else secrets.token_hex(12)
        token = REQUEST_ID.set(request_id)

        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


def _plain_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(ch.isalnum() or ch in "-_." for ch in value)


class Metrics:
    """The ``graphgate_*`` Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tool_calls = Counter(
            "graphgate_tool_calls",
            "Tool calls by tool, tenant and outcome.",
            ["tool", "tenant", "outcome"],
            registry=self.registry,
        )
        self.tool_latency = Histogram(
            "graphgate_tool_call_seconds",
            "Tool call latency in seconds.",
            ["tool"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "graphgate_auth_failures",
            "Requests refused by authentication or authorization, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.backend_errors = Counter(
            "graphgate_backend_errors",
            "Errors raised by a database backend, by kind and backend name.",
            ["kind", "backend"],
            registry=self.registry,
        )
        self.backend_up = Gauge(
            "graphgate_backend_up",
            "1 while a backend is ready; 0 while starting, unreachable or restarting.",
            ["backend"],
            registry=self.registry,
        )
        self.backend_restarts = Counter(
            "graphgate_backend_restarts",
            "Times the embedded database process exited and graphgate restarted it.",
            ["backend"],
            registry=self.registry,
        )
        self.catalog_reloads = Counter(
            "graphgate_catalog_reloads",
            "Catalog reloads (settings file, SIGHUP, discovery) by source and outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.discovery_looks = Counter(
            "graphgate_discovery_looks",
            "Times discovery asked a backend for its databases (periodic or on demand).",
            ["backend"],
            registry=self.registry,
        )
        self.catalog_tenants = Gauge(
            "graphgate_catalog_tenants",
            "Tenants in the catalog in force, by backend.",
            ["backend"],
            registry=self.registry,
        )
        self.rows_returned = Counter(
            "graphgate_rows_returned",
            "Rows returned to clients, by tenant.",
            ["tenant"],
            registry=self.registry,
        )
        # By reason only; which tenant or caller was busy is in the audit trail.
        self.busy = Counter(
            "graphgate_busy",
            "Calls refused with busy: their tenant's or caller's share was in use, by reason.",
            ["reason"],
            registry=self.registry,
        )

    def watch_jwks_refreshes(self, count: Callable[[], int]) -> None:
        """Expose the verifier's own count of JWKS fetches as a counter."""
        self.registry.register(
            _CallbackCounter("graphgate_jwks_refreshes", "JWKS fetches from the issuer.", count)
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CallbackCounter(Collector):
    """A counter whose value is owned elsewhere (no double bookkeeping)."""

    def __init__(self, name: str, documentation: str, count: Callable[[], int]) -> None:
        self._name = name
        self._documentation = documentation
        self._count = count

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._count())


@dataclass(frozen=True, slots=True)
class AuditRecord:
    tool: str
    caller: Caller
    databases: Sequence[str]
    query: str | None
    rows: int
    duration_ms: float
    outcome: str
    error: str | None = None


class AuditTrail:
    """One JSON line per tool call; never a token, optionally only a query hash."""

    def __init__(self, destination: str, include_query_text: bool) -> None:
        """``destination`` is a file path, ``-`` for stdout, or empty for no trail.

        Nothing is opened here: `open` does it, in the server's lifespan, which
        also calls `close`.
        """
        self._destination = destination
        self._include_query_text = include_query_text
        self._lock = threading.Lock()
        self._owns_stream = False
        self._stream: IO[str] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._destination)

    def open(self) -> None:
        """Start writing (appending to the file); a second call changes nothing."""
        if self._stream is not None or not self._destination:
            return
        if self._destination == "-":
            self._stream = sys.stdout
            return
        path = Path(self._destination)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = path.open("a", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise ConfigError(
                f"audit_log: cannot append to {path} ({exc.strerror}); choose a writable "
                "file, '-' for standard output, or leave it empty"
            ) from None
        self._owns_stream = True

    def write(self, record: AuditRecord) -> None:
        if self._stream is None:
            return
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "request_id": REQUEST_ID.get(),
            "issuer": record.caller.issuer,
            "subject": record.caller.subject,
            "client_id": record.caller.client_id,
            "tool": record.tool,
            "databases": list(record.databases),
            "rows": record.rows,
            "duration_ms": round(record.duration_ms, 3),
            "outcome": record.outcome,
        }
        if record.query is not None:
            digest = hashlib.sha256(record.query.encode()).hexdigest()
            entry["query_sha256"] = digest
            if self._include_query_text:
                entry["query"] = record.query
        # A database's error message may quote the query (FalkorDB's errCtx),
        # so without query text only the stable code (`outcome`) is kept.
        if record.error and self._include_query_text:
            entry["error"] = record.error
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self._stream.write(line)

    def close(self) -> None:
        if self._owns_stream and self._stream is not None:
            self._stream.close()
        self._stream = None
        self._owns_stream = False


class Observability:
    """Metrics and audit trail together, so tools need one collaborator."""

    def __init__(self, audit: AuditTrail, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        self.audit = audit

    def record_call(self, record: AuditRecord) -> None:
        tenant = record.databases[0] if len(record.databases) == 1 else "*"
        self.metrics.tool_calls.labels(record.tool, tenant, record.outcome).inc()
        self.metrics.tool_latency.labels(record.tool).observe(record.duration_ms / 1000)
        if record.rows:
            self.metrics.rows_returned.labels(tenant).inc(record.rows)
        self.audit.write(record)

    def open(self) -> None:
        self.audit.open()

    def close(self) -> None:
        self.audit.close()
