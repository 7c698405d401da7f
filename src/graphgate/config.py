"""Settings: one validated object, built once at start-up and passed explicitly.

Precedence, highest first: CLI flag > ``GRAPHGATE_<NAME>`` environment variable >
the TOML file given by ``--config`` > default. Only `graphgate.cli` builds a
`Settings` from the environment; everything below it receives the object.
"""

from __future__ import annotations

import ipaddress
import os
import re
import unicodedata
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

TENANT_NAME_MAX = 63
_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_DATABASE_NAME_MAX = 255

DEFAULT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEMO_TENANTS = {"acme": "acme", "globex": "globex"}

# -- the one list of each kind of address graphgate understands ------------------------------
FALKORDB_SCHEMES: Final = frozenset({"falkordb", "falkordbs", "redis", "rediss"})
"""FalkorDB over the Redis protocol."""
FALKORDB_TLS_SCHEMES: Final = frozenset({"falkordbs", "rediss"})
BOLT_SCHEMES: Final = frozenset({"bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"})
"""Neo4j and Memgraph through the ``neo4j`` driver."""
STATE_SCHEMES: Final = ("redis://", "rediss://", "unix://")
"""What ``state_url`` may name besides ``memory://``."""
LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "::1", "localhost"})
"""The spellings of this machine that clients use in URLs (RFC 8252 §7.3 redirects,
Host headers); `is_loopback_host` also accepts every other loopback address."""

BackendKind = Literal["embedded", "falkordb", "bolt"]
StateKind = Literal["memory", "redis"]


def validate_tenant_name(name: str) -> str:
    """Tenant names are identifiers, not free text.

    A narrow ASCII alphabet means look-alikes (Cyrillic "а", full-width
    letters, zero-width joiners) can never name a catalogued tenant, and the
    ``name:write`` claim syntax stays unambiguous.
    """
    if not name:
        raise ValueError("tenant name must not be empty")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ValueError(f"tenant name {name!r} contains control characters")
    if len(name) > TENANT_NAME_MAX:
        raise ValueError(f"tenant name {name[:20]!r}... is longer than {TENANT_NAME_MAX}")
    if not _TENANT_NAME.fullmatch(name):
        raise ValueError(
            f"tenant name {name!r} may use only ASCII letters, digits, '_', '.', '-' "
            "and must start with a letter or digit"
        )
    return name


def _validate_database_name(tenant: str, database: str) -> str:
    if not database or len(database) > _DATABASE_NAME_MAX:
        raise ValueError(f"database name for tenant {tenant!r} must be 1-255 characters")
    if any(unicodedata.category(ch).startswith("C") for ch in database):
        raise ValueError(f"database name for tenant {tenant!r} contains control characters")
    return database


DEFAULT_BACKEND: Final = "default"
ConfirmMode = Literal["never", "when_supported", "always"]
"""When a write waits for the user's yes (graphgate.confirm)."""
CONFIRM_MODES: Final = ("never", "when_supported", "always")
"""The backend the single ``backend`` setting names, and where a tenant given as a string lives."""
BACKEND_NAME_MAX = 63
_BACKEND_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]*")


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one tenant lives: a backend by name and a database on it.

    Never shown to users: they see the tenant name only (issue 13).
    """

    backend: str
    database: str
    confirm_writes: ConfirmMode | None = None
    """This tenant's own ``confirm_writes``; None follows the server's."""


def validate_backend_name(name: str) -> str:
    """Backend names are short lowercase identifiers (they appear in metrics labels)."""
    if len(name) > BACKEND_NAME_MAX or not _BACKEND_NAME.fullmatch(name):
        raise ValueError(
            f"backend name {name[:40]!r} may use only lowercase ASCII letters, digits, "
            f"'_' and '-', start with a letter or digit, and be at most {BACKEND_NAME_MAX} long"
        )
    return name


def _placement(tenant: str, value: Any) -> str | Placement:
    """A ``[tenants]`` value: a database on ``default``, or ``{backend, database}``."""
    if isinstance(value, str):
        return _validate_database_name(tenant, value)
    if isinstance(value, Placement):
        return value
    if isinstance(value, Mapping):
        extra = set(value) - {"backend", "database", "confirm_writes"}
        backend = value.get("backend", DEFAULT_BACKEND)
        database = value.get("database", tenant)
        confirm = value.get("confirm_writes")
        if (
            extra
            or not isinstance(backend, str)
            or not isinstance(database, str)
            or confirm not in (None, *CONFIRM_MODES)
        ):
            raise ValueError(
                f"tenant {tenant!r}: write a database name, or "
                '{ backend = "NAME", database = "DATABASE", confirm_writes = "always" } '
                "(backend defaults to default, database to the tenant, confirm_writes "
                "(never, when_supported, always) to the server's)"
            )
        return Placement(
            validate_backend_name(backend),
            _validate_database_name(tenant, database),
            confirm,
        )
    raise ValueError("the tenants table maps tenant names to database names (strings)")


def parse_catalog(value: Any) -> dict[str, str | Placement]:
    """Accept ``"acme,globex"``, ``["acme"]``, ``{"acme": "acme_db"}`` or
    ``{"globex": {"backend": "eu", "database": "globex_prod"}}``."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{"):
            import json

            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON: {exc.msg}") from None
        else:
            value = [part.strip() for part in stripped.split(",")]
    if isinstance(value, list | tuple):
        catalog: dict[str, str | Placement] = {}
        for entry in value:
            if not isinstance(entry, str):
                raise ValueError("tenant names must be strings")
            name = validate_tenant_name(entry)
            if name in catalog:
                raise ValueError(f"tenant {name!r} is listed twice")
            catalog[name] = name
        return catalog
    if isinstance(value, Mapping):
        catalog = {}
        for tenant, database in value.items():
            if not isinstance(tenant, str):
                raise ValueError("the tenants table maps tenant names to database names (strings)")
            catalog[validate_tenant_name(tenant)] = _placement(tenant, database)
        return catalog
    raise ValueError("expected a comma list of tenant names or a table tenant -> database")


def split_claim_path(path: str) -> tuple[str, ...]:
    """``realm_access.roles`` → ``("realm_access", "roles")``; ``\\.`` is a literal dot.

    A dot always means nesting, so a token cannot widen its rights by adding
    a top-level claim literally named ``realm_access.roles``. A claim whose
    name has dots (Auth0's namespaced ``https://example.com/tenants``) is
    written with each of them escaped: ``https://example\\.com/tenants``.
    """
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in path:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise ValueError(f"claim path {path!r} ends with a lone backslash")
    parts.append("".join(current))
    if not all(parts):
        raise ValueError(
            f"claim path {path!r} has an empty segment; a dot means nesting, "
            "write a literal dot in a claim name as \\."
        )
    return tuple(parts)


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def is_loopback_host(host: str) -> bool:
    """A bind address or host name that only this machine can reach."""
    if host in LOOPBACK_NAMES or host == "localhost.localdomain":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def backend_kind(url: str) -> BackendKind:
    """Which kind of server ``url`` names; the one check of a backend URL's scheme."""
    if url == "embedded":
        return "embedded"
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in FALKORDB_SCHEMES:
        return "falkordb"
    if scheme in BOLT_SCHEMES:
        return "bolt"
    raise ValueError(
        "use 'embedded', falkordb://[user:password@]host:port (falkordbs:// for TLS), "
        "or bolt://, bolt+s://, neo4j://, neo4j+s:// host:port"
    )


def state_kind(url: str) -> StateKind:
    """Which store ``state_url`` names; the one check of a state URL."""
    if url in {"", "memory://"}:
        return "memory"
    if url.startswith(STATE_SCHEMES):
        return "redis"
    raise ValueError("use memory:// or redis://[:password@]host:port/db (rediss:// for TLS)")


# What the embedded server maps beyond its data and its queries' memory: binaries, the
# module's thread stacks and allocator arenas (about 0.9 GB of address space idle).
_ADDRESS_SPACE_OVERHEAD_MB = 2048


def embedded_address_space(memory_mb: int, query_memory_mb: int) -> int:
    """The embedded server's hard memory cap in MB: its data, every worker's query, overhead.

    Generous on purpose: it exists to stop allocations no bound of FalkorDB's
    catches (``range(1, 1e11)``), not to police ordinary use.
    """
    workers = (os.cpu_count() or 2) + 2
    return memory_mb + query_memory_mb * workers + _ADDRESS_SPACE_OVERHEAD_MB


@dataclass(frozen=True, slots=True)
class EmbeddedBounds:
    """What only the embedded FalkorDB needs: where its files live and its memory caps."""

    data_dir: Path
    memory_mb: int
    address_space_mb: int
    queue: int


@dataclass(frozen=True, slots=True)
class BackendTarget:
    """One database server and the bounds graphgate keeps on it.

    The slice of `Settings` a backend is built from (`graphgate.backends.create_backend`),
    so a backend never sees the server's port, auth or tools. ``name`` is the
    backend's name in the settings; the single ``backend`` setting is ``default``.
    """

    kind: BackendKind
    url: str
    user: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    dialect: Literal["memgraph", "neo4j"] | None = None
    query_timeout: float = 30.0
    row_limit: int = 1000
    query_memory_mb: int = 512
    pool_wait: float = 2.0
    """Seconds a call waits for a pooled connection (``busy_wait``)."""
    allow_procedures: tuple[str, ...] = ()
    deny_procedures: tuple[str, ...] = ()
    embedded: EmbeddedBounds | None = None
    name: str = "default"
    discover: bool = False
    """Serve its databases as tenants of the same name (`graphgate.backends.discovery`)."""
    discover_prefix: str = ""
    """Only databases named with this prefix are discovered; the tenant is named without it."""
    discover_interval: float = 30.0

    @property
    def secret(self) -> str | None:
        """The password in clear, for the driver only."""
        return self.password.get_secret_value() if self.password is not None else None


@dataclass(frozen=True, slots=True)
class StateTarget:
    """The slice of `Settings` the state stores are built from (`graphgate.state`)."""

    kind: StateKind
    url: str
    session_ttl: float = 24 * 3600.0


StrList = Annotated[list[str], NoDecode]


class BackendSettings(BaseModel):
    """One ``[backends.NAME]`` table.

    ``password`` comes only from ``GRAPHGATE_BACKENDS__NAME__PASSWORD`` (a TOML
    file that holds one is refused, see `_SecretFreeToml`) or ``password_file``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str
    user: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    dialect: Literal["auto", "memgraph", "neo4j"] = "auto"
    query_timeout: float | None = Field(default=None, gt=0, le=3600)
    row_limit: int | None = Field(default=None, ge=1, le=1_000_000)
    discover: bool = False
    discover_prefix: str = Field(default="", max_length=63)
    discover_interval: float = Field(default=30.0, ge=1, le=86_400)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        backend_kind(value)
        return value

    def secret(self, name: str) -> SecretStr | None:
        """The password: from the environment, else read from ``password_file``."""
        if self.password is not None:
            return self.password
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(
                f"backends.{name}.password_file: cannot read {self.password_file} "
                f"({exc.strerror}); mount the secret there or fix the path"
            ) from None
        return SecretStr(text.rstrip("\r\n"))


class Settings(BaseSettings):
    """Everything graphgate can be told, validated once."""

    model_config = SettingsConfigDict(
        env_prefix="GRAPHGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        hide_input_in_errors=True,
    )

    # -- server ---------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    transport: Literal["http", "stdio"] = "http"
    public_url: str | None = None
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("graphgate")))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    demo: bool = False
    stateless_http: bool = False
    json_response: bool = True
    header_timeout: float = Field(default=10.0, gt=0, le=600)
    """Seconds a connection has to send a request's headers (slowloris, idle sockets)."""
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a request has to send its whole body once the headers are in."""
    keepalive_timeout: int = Field(default=5, ge=1, le=3600)
    """Seconds an idle keep-alive connection stays open (above a load balancer's idle timeout)."""
    max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    """Open connections plus running requests past which new requests get 503."""
    otel_spans: bool = False
    """FastMCP's OpenTelemetry spans per request: off by default, because even
    with no OpenTelemetry SDK configured they cost ~3% of a call's CPU."""

    # -- backend ----------------------------------------------------------------------------
    backend: str = "embedded"
    backend_user: str | None = None
    backend_password: SecretStr | None = None
    backend_dialect: Literal["auto", "memgraph", "neo4j"] = "auto"
    tenants: Annotated[dict[str, str | Placement], NoDecode] = Field(default_factory=dict)
    """Tenant → database on ``default``, or → ``{backend, database}`` (`graphgate.catalog`)."""
    backends: dict[str, BackendSettings] = Field(default_factory=dict)
    """Named backends (``[backends.NAME]``); the ``backend*`` settings are ``default``."""
    readiness: Literal["any", "all"] = "any"
    """/readyz answers 200 while ``any`` backend is ready, or only while ``all`` are."""
    allow_writes: bool = False
    confirm_writes: ConfirmMode = "never"
    """Ask the user before each write (MCP elicitation); see graphgate.confirm. A tenant
    of the catalog may override it (``acme = { database = "acme", confirm_writes = "always" }``)."""
    confirm_timeout: float = Field(default=120.0, gt=0, le=3600)
    """Seconds the user has to answer a write's confirmation; then nothing runs."""
    row_limit: int = Field(default=1000, ge=1, le=1_000_000)
    query_timeout: float = Field(default=30.0, gt=0, le=3600)
    allow_file_access: bool = False
    allow_procedures: StrList = Field(default_factory=list)
    deny_procedures: StrList = Field(default_factory=list)
    max_result_bytes: int = Field(default=100_000, ge=1024, le=1024 * 1024 * 1024)
    """Per-call answer budget: about 25,000 tokens, what Claude Code accepts by default."""
    max_value_items: int = Field(default=100, ge=1, le=10_000_000)
    """Longest list shown inside a value (an embedding is cut, with its length said)."""
    max_string_chars: int = Field(default=2000, ge=16, le=1024 * 1024 * 1024)
    """Longest string shown inside a value."""
    query_memory_mb: int = Field(default=512, ge=16, le=1024 * 1024)
    """Memory one query may use in the database (FalkorDB QUERY_MEM_CAPACITY)."""
    embedded_memory_mb: int = Field(default=4096, ge=64, le=1024 * 1024)
    """The embedded FalkorDB's maxmemory: past it writes are refused, never graphs evicted."""
    embedded_address_space_mb: int = Field(default=0, ge=0, le=16 * 1024 * 1024)
    """Hard cap on the embedded database process's memory (RLIMIT_AS); 0 derives one
    from embedded_memory_mb and query_memory_mb."""
    backend_queue: int = Field(default=256, ge=1, le=1_000_000)
    """Queries the embedded FalkorDB queues before refusing more (MAX_QUEUED_QUERIES)."""
    max_query_depth: int = Field(default=12, ge=1, le=64)
    """Deepest nesting of (), [], {} and prefix operators (-x, NOT x) in a query's text.

    Deeper texts are refused before any backend sees them: FalkorDB's parser
    takes twice as long per level (12: 15 ms, 16: 0.23-0.49 s), before its
    query timeout applies.
    """
    tenant_concurrency: int = Field(default=0, ge=0, le=10_000)
    """Queries one tenant may have in flight; 0 picks half the backend's workers."""
    subject_concurrency: int = Field(default=0, ge=0, le=10_000)
    """Queries one caller may have in flight; 0 picks the tenant share."""
    busy_wait: float = Field(default=2.0, ge=0, le=60)
    """Seconds a call waits for its share before the `busy` error."""

    # -- auth -------------------------------------------------------------------------------
    auth: Literal["none", "dev", "oidc"] = "none"
    issuer: str | None = None
    audience: StrList = Field(default_factory=list)
    """Accepted ``aud`` values, compared exactly: a URL, a client id, a GUID,
    ``api://…``; default ``<public_url>/mcp``."""
    jwks_url: str | None = None
    algorithms: StrList = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    required_scopes: StrList = Field(default_factory=lambda: ["mcp:tools"])
    tenants_claim: str = "tenants"
    tenant_prefix: str = ""
    default_tenant_claim: str = "default_tenant"
    admin_claim: str = "realm_access.roles"
    admin_value: str = "graphgate-admin"
    registration: Literal["direct", "shim", "proxy"] = "direct"
    static_client_id: str | None = None
    static_client_secret: SecretStr | None = None
    redirect_uri_allowlist: StrList = Field(default_factory=list)
    registration_rate_limit: int = Field(default=20, ge=0, le=100_000)
    """Proxy mode: registrations per minute from one address (a burst of that many); 0 = off."""
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    max_token_lifetime: float = Field(default=24 * 3600.0, gt=0, le=366 * 24 * 3600.0)
    """Longest life (``exp`` after ``iat`` or now) graphgate accepts in a token."""
    clock_leeway: float = Field(default=30.0, ge=0, le=300)

    # -- state and operations ------------------------------------------------------------
    state_url: str = "memory://"
    session_ttl: float = Field(default=24 * 3600.0, gt=0)
    metrics_token: SecretStr | None = None
    metrics_public: bool = False
    """Serve /metrics without ``metrics_token`` although sign-in is on: its labels name tenants.

    With auth on (dev or oidc) and neither a token nor this, /metrics stays closed (401)."""
    audit_log: str = ""
    audit_query_text: bool = True
    rate_limit: int = Field(default=0, ge=0)

    @field_validator("tenants_claim", "admin_claim", "default_tenant_claim")
    @classmethod
    def _claim_path(cls, value: str) -> str:
        split_claim_path(value)
        return value

    @field_validator("tenants", mode="before")
    @classmethod
    def _parse_tenants(cls, value: Any) -> dict[str, str | Placement]:
        return parse_catalog(value)

    @field_validator("backends", mode="before")
    @classmethod
    def _dashed_names_from_env(cls, value: Any) -> Any:
        """``GRAPHGATE_BACKENDS__TEAM_X__PASSWORD`` is the password of ``[backends.team-x]``.

        Shells cannot set a variable whose name holds ``-``, so a backend named
        with one takes its password from the name with ``_`` instead. Only an
        entry holding nothing but a password (which only the environment can
        give, `_SecretFreeToml`) is folded in, and only into the one dashed
        backend it spells; a real ``[backends.team_x]`` table keeps its own.
        """
        if not isinstance(value, Mapping):
            return value
        folded = dict(value)
        for name, entry in value.items():
            if not (isinstance(entry, Mapping) and set(entry) == {"password"}):
                continue
            dashed = [
                other
                for other in value
                if other != name and "-" in str(other) and str(other).replace("-", "_") == name
            ]
            if len(dashed) != 1 or not isinstance(value[dashed[0]], Mapping):
                continue
            target = dict(value[dashed[0]])
            target.setdefault("password", entry["password"])  # the exact name wins
            folded[dashed[0]] = target
            del folded[name]
        return folded

    @field_validator("backends")
    @classmethod
    def _backend_names(cls, value: dict[str, BackendSettings]) -> dict[str, BackendSettings]:
        for name in value:
            validate_backend_name(name)
        if sum(1 for entry in value.values() if entry.url == "embedded") > 1:
            raise ValueError("only one backend may be 'embedded' (one data directory)")
        return value

    @field_validator(
        "algorithms",
        "audience",
        "required_scopes",
        "redirect_uri_allowlist",
        "allow_procedures",
        "deny_procedures",
        mode="before",
    )
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if bad:
            raise ValueError(
                f"{', '.join(bad)} not allowed: only asymmetric algorithms "
                f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}); 'none' and HMAC are refused"
            )
        if not value:
            raise ValueError("at least one algorithm is required")
        return value

    @field_validator("audience")
    @classmethod
    def _audiences(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry != entry.strip() or any(ch.isspace() for ch in entry):
                raise ValueError(f"{entry!r} has spaces; audiences are compared exactly")
        return list(dict.fromkeys(value))

    @field_validator("public_url", "issuer", "jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL without query or fragment")
        return value

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        # RFC 9728 compares `resource` by exact string: one canonical spelling.
        return value.rstrip("/") if value else value

    @field_validator("backend")
    @classmethod
    def _backend_url(cls, value: str) -> str:
        backend_kind(value)
        return value

    @field_validator("state_url")
    @classmethod
    def _state_url(cls, value: str) -> str:
        state_kind(value)
        return value or "memory://"

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.demo and not self.tenants:
            self.tenants = dict(DEMO_TENANTS)
        if self.demo and "auth" not in self.model_fields_set and self.transport == "http":
            self.auth = "dev"
        if self.transport == "stdio" and self.auth != "none":
            raise ValueError(
                f"auth: stdio has no bearer token to verify, so auth = {self.auth} cannot "
                "work there; use auth = none with transport = stdio (the local user)"
            )
        if self.transport == "http" and self.auth == "none" and not is_loopback_host(self.host):
            raise ValueError(
                f"host: refusing to serve {self.host!r} without authentication; "
                "bind to 127.0.0.1 or turn auth on (auth = dev | oidc)"
            )
        if self.auth != "none" and self.transport == "http" and self.public_url is None:
            if self.auth == "dev" and is_loopback_host(self.host):
                shown = f"[{self.host}]" if ":" in self.host else self.host
                self.public_url = f"http://{shown}:{self.port}"
            else:
                raise ValueError(
                    "public_url: required when auth is on; it is the only source of the "
                    "URLs graphgate advertises (e.g. https://graphgate.example.com)"
                )
        if self.auth == "oidc" and not self.issuer:
            raise ValueError("issuer: required when auth = oidc")
        targets = self.backend_names  # the password files are read when a backend is built
        for tenant, placement in self.placements.items():
            if placement.backend not in targets:
                raise ValueError(
                    f"tenants.{tenant}: no backend named {placement.backend!r}; "
                    f"add a [backends.{placement.backend}] table or place it on one of "
                    f"{', '.join(sorted(targets)) or 'none'}"
                )
        if (
            self.registration in {"shim", "proxy"}
            and self.auth == "oidc"
            and not (self.static_client_id)
        ):
            raise ValueError(f"static_client_id: required for registration = {self.registration}")
        return self

    # -- derived values -------------------------------------------------------------------
    @property
    def resource_url(self) -> str:
        """The RFC 9728 resource identifier: exactly ``<public_url>/mcp``."""
        base = self.public_url or f"http://{self.host}:{self.port}"
        return f"{base}/mcp"

    @property
    def token_audiences(self) -> list[str]:
        """The ``aud`` values a token may carry (one is enough), exactly as configured."""
        return self.audience or [self.resource_url]

    @property
    def token_audience(self) -> str:
        """The audience graphgate's own tokens (dev issuer) are minted for."""
        return self.token_audiences[0]

    @property
    def dev_issuer(self) -> str:
        """In dev mode graphgate is its own issuer, rooted at the public URL."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def effective_issuer(self) -> str | None:
        return self.dev_issuer if self.auth == "dev" else self.issuer

    @property
    def catalog(self) -> dict[str, str]:
        """Tenant → database name, whichever backend it lives on."""
        return {name: self.placements[name].database for name in self.tenants}

    @property
    def placements(self) -> dict[str, Placement]:
        """Tenant → where it lives; a string entry is a database on ``default``."""
        return {
            name: entry if isinstance(entry, Placement) else Placement(DEFAULT_BACKEND, entry)
            for name, entry in self.tenants.items()
        }

    @property
    def backend_names(self) -> list[str]:
        """The names of `backend_targets`, without reading any password file."""
        names = set(self.backends)
        if self._legacy_default_wanted():
            names.add(DEFAULT_BACKEND)
        return sorted(names)

    def _legacy_default_wanted(self) -> bool:
        return DEFAULT_BACKEND not in self.backends and (
            not self.backends
            or self.backend != "embedded"
            or any(not isinstance(entry, Placement) for entry in self.tenants.values())
            or any(
                isinstance(entry, Placement) and entry.backend == DEFAULT_BACKEND
                for entry in self.tenants.values()
            )
        )

    @property
    def backend_targets(self) -> dict[str, BackendTarget]:
        """Every named backend as a `BackendTarget`.

        ``default`` is ``[backends.default]`` if given, else the ``backend*``
        settings, kept when there is no ``[backends]`` table, when ``backend``
        names a server, or when a tenant lives on it.
        """
        targets: dict[str, BackendTarget] = {}
        if self._legacy_default_wanted():
            targets[DEFAULT_BACKEND] = self.backend_target
        for name, entry in self.backends.items():
            targets[name] = self._named_target(name, entry)
        return targets

    def _named_target(self, name: str, entry: BackendSettings) -> BackendTarget:
        return BackendTarget(
            kind=backend_kind(entry.url),
            url=entry.url,
            user=entry.user,
            password=entry.secret(name),
            dialect=None if entry.dialect == "auto" else entry.dialect,
            query_timeout=entry.query_timeout or self.query_timeout,
            row_limit=entry.row_limit or self.row_limit,
            query_memory_mb=self.query_memory_mb,
            pool_wait=self.busy_wait,
            allow_procedures=tuple(self.allow_procedures),
            deny_procedures=tuple(self.deny_procedures),
            embedded=self._embedded_bounds() if entry.url == "embedded" else None,
            name=name,
            discover=entry.discover,
            discover_prefix=entry.discover_prefix,
            discover_interval=entry.discover_interval,
        )

    def _embedded_bounds(self) -> EmbeddedBounds:
        return EmbeddedBounds(
            data_dir=self.data_dir / "falkordb",
            memory_mb=self.embedded_memory_mb,
            address_space_mb=self.embedded_address_space_mb
            or embedded_address_space(self.embedded_memory_mb, self.query_memory_mb),
            queue=self.backend_queue,
        )

    @property
    def backend_target(self) -> BackendTarget:
        """The ``backend*`` settings and the bounds the backend keeps, as one slice."""
        embedded = None
        if self.backend == "embedded":
            embedded = EmbeddedBounds(
                data_dir=self.data_dir / "falkordb",
                memory_mb=self.embedded_memory_mb,
                address_space_mb=self.embedded_address_space_mb
                or embedded_address_space(self.embedded_memory_mb, self.query_memory_mb),
                queue=self.backend_queue,
            )
        return BackendTarget(
            kind=backend_kind(self.backend),
            url=self.backend,
            user=self.backend_user,
            password=self.backend_password,
            dialect=None if self.backend_dialect == "auto" else self.backend_dialect,
            query_timeout=self.query_timeout,
            row_limit=self.row_limit,
            query_memory_mb=self.query_memory_mb,
            pool_wait=self.busy_wait,
            allow_procedures=tuple(self.allow_procedures),
            deny_procedures=tuple(self.deny_procedures),
            embedded=embedded,
        )

    @property
    def state_target(self) -> StateTarget:
        """Where users' choices of database (and the OAuth proxy's state) are kept."""
        return StateTarget(
            kind=state_kind(self.state_url), url=self.state_url, session_ttl=self.session_ttl
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file:
            sources.append(_SecretFreeToml(settings_cls, toml_file=toml_file))
        return tuple(sources)


class _SecretFreeToml(TomlConfigSettingsSource):
    """The TOML file, refused when a ``[backends.NAME]`` table holds a password.

    Settings files are committed, templated into ConfigMaps and printed in
    reviews; a backend's secret belongs in ``password_file`` or the environment.
    """

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        backends = data.get("backends")
        if isinstance(backends, Mapping):
            for name, table in backends.items():
                if isinstance(table, Mapping) and "password" in table:
                    env = f"GRAPHGATE_BACKENDS__{str(name).upper().replace('-', '_')}__PASSWORD"
                    raise ValueError(
                        f"backends.{name}.password: secrets are not read from the settings "
                        f'file; use password_file = "/run/secrets/..." or {env}'
                    )
        return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from flags (``overrides``), environment and TOML file.

    ``overrides`` whose value is None are treated as "flag not given".
    """
    flags = {key: value for key, value in overrides.items() if value is not None}
    if config_file is None:
        return Settings(**flags)
    if not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    return _FileSettings(**flags)


@dataclass(frozen=True, slots=True)
class ClaimsRules:
    """The slice of the settings that token checks and rights read, built once.

    What a verified token must be (``issuer``, ``audiences``, ``algorithms``,
    ``required_scopes``, ``leeway``, ``max_token_lifetime``) and what its
    claims grant (the catalog, ``allow_writes``, and where the tenants, the
    admin role and the starting tenant sit in the claims). Claim paths are
    split here, once, rather than for every token.
    """

    issuer: str | None
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    required_scopes: tuple[str, ...]
    leeway: float
    max_token_lifetime: float
    catalog: Set[str]
    """The tenant names served: a frozen set, or the live catalog's view of its names."""
    allow_writes: bool
    tenants_claim: tuple[str, ...]
    tenant_prefix: str
    default_tenant_claim: tuple[str, ...]
    admin_claim: tuple[str, ...]
    admin_value: str


def claims_rules(settings: Settings, catalog: Set[str] | None = None) -> ClaimsRules:
    """The `ClaimsRules` of ``settings`` (the dev issuer in dev mode).

    ``catalog`` is the live catalog's names (`graphgate.catalog.LiveCatalog.names`);
    without it, the tenants of ``settings``.
    """
    return ClaimsRules(
        issuer=settings.effective_issuer,
        audiences=tuple(settings.token_audiences),
        algorithms=tuple(settings.algorithms),
        required_scopes=tuple(settings.required_scopes),
        leeway=settings.clock_leeway,
        max_token_lifetime=settings.max_token_lifetime,
        catalog=frozenset(settings.catalog) if catalog is None else catalog,
        allow_writes=settings.allow_writes,
        tenants_claim=split_claim_path(settings.tenants_claim),
        tenant_prefix=settings.tenant_prefix,
        default_tenant_claim=split_claim_path(settings.default_tenant_claim),
        admin_claim=split_claim_path(settings.admin_claim),
        admin_value=settings.admin_value,
    )
