"""``registration = proxy``: graphgate is the authorization server MCP clients see.

Built on FastMCP's `OAuthProxy` rather than a proxy of our own. Clients
register at graphgate (RFC 7591, or a Client ID Metadata Document), are sent
through graphgate's consent page to the issuer's login with the *one*
pre-registered client (``static_client_id``), and get tokens from graphgate.
The issuer they see is ``public_url`` everywhere: in protected resource
metadata, in the authorization server metadata, in the RFC 9207 ``iss`` of the
authorization response and in the tokens. Strict clients (the MCP Python SDK
compares all of them byte for byte) therefore work without any setting at the
issuer beyond allowing ``<public_url>/auth/callback`` as a redirect URI.

Token flow. FastMCP exchanges the issuer's code server-side, keeps the
issuer's token set in the key-value store and hands the client an HS256 JWT
of its own: ``iss`` = ``public_url``, ``aud`` = ``<public_url>/mcp``, a
``jti`` that maps to the stored upstream tokens, and the MCP client's id.
`ProxyTokenVerifier` checks that JWT, lets the proxy swap it for the upstream
access token and verifies *that* with the issuer's JWKS, so rights still come
from the issuer's claims (tenants, roles, ``sub``, ``iss``) of the newest
upstream token. Refreshing at graphgate refreshes upstream; a session the
issuer ended can no longer be refreshed, so the client is sent to log in again.
Tokens minted by the issuer itself (service accounts, scripts) are accepted as
in ``registration = direct``.

State (registered clients, pending authorizations, codes, token mappings and
the encrypted upstream tokens) lives in an `AsyncKeyValue` store: in memory by
default, or in Redis when ``state_url`` names one, so replicas share it.

Why FastMCP's own pieces are wrapped rather than used as-is:

* ``OIDCProxy`` fetches the issuer's discovery document synchronously in its
  constructor, so graphgate could not start while the issuer is down and
  `build_auth` would do network I/O. Here `ProxyInstances` builds an
  `OAuthProxy` (public constructor) for the endpoints graphgate's cached
  `IssuerMetadata` names, on the first request that needs them, and wraps the
  routes FastMCP's `get_routes` returns so that each runs on that instance.
* FastMCP renders ``issuer`` through pydantic, which adds a trailing slash to
  a bare origin (``http://host:8000/``), while graphgate's PRM names
  ``public_url`` exactly; clients compare the two as strings (RFC 8414 §3.3).
  The issuer given to FastMCP is built so that it renders exactly.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from fastmcp.server.auth import AccessToken, TokenVerificationError, TokenVerifier
from fastmcp.server.auth.jwt_issuer import derive_jwt_key
from fastmcp.server.auth.oauth_proxy import OAuthProxy
from key_value.aio.protocols import AsyncKeyValue
from key_value.aio.stores.memory import MemoryStore
from key_value.aio.wrappers.encryption import FernetEncryptionWrapper
from key_value.aio.wrappers.limit_size import LimitSizeWrapper
from key_value.aio.wrappers.prefix_collections import PrefixCollectionsWrapper
from key_value.aio.wrappers.ttl_clamp import TTLClampWrapper
from mcp.server.auth.provider import (
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl, ConfigDict, TypeAdapter
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from graphgate.auth.discovery import authorization_server_metadata_paths, discovery_routes
from graphgate.auth.issuer_documents import IssuerMetadata
from graphgate.auth.proxy_registration import BoundedRegistration
from graphgate.auth.redis_entry_cap import RedisEntryCap
from graphgate.auth.secret_files import create_once
from graphgate.auth.tokens import MAX_HEADER_BYTES, JwtVerifier, decode_jwt, read_header
from graphgate.config import LOOPBACK_NAMES, Settings
from graphgate.errors import ConfigError, IssuerUnavailable, TokenRejected, to_http_response

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

__all__ = [
    "CALLBACK_PATH",
    "GraphgateOAuthProxy",
    "ProxyInstances",
    "ProxyParts",
    "ProxyTokenVerifier",
    "UpstreamEndpoints",
    "build_proxy",
    "proxy_routes",
    "proxy_signing_key",
    "proxy_storage",
    "redirect_patterns",
]

CALLBACK_PATH: Final = "/auth/callback"
REGISTRATION_PATH: Final = "/register"
KEY_FILE: Final = "oauth-proxy.key"
MCP_PATH: Final = "/mcp"
# RFC 8252 §7.3: native clients listen on a loopback port chosen at run time.
# FastMCP matches a loopback pattern without a port against every port and path.
LOOPBACK_PATTERNS: Final = ("http://127.0.0.1", "http://localhost", "http://[::1]")
# Placeholders until the issuer's metadata is read.
_UNRESOLVED: Final = "https://issuer-endpoint-not-yet-known.invalid/"
# Bounds on stored state: anonymous registration must not grow memory or Redis forever.
# A collection holds at most MAX_ENTRIES_PER_COLLECTION × MAX_ENTRY_BYTES (320 MiB,
# in memory or Redis); a registration, checked to 16 KiB of metadata, stays far below.
MAX_ENTRIES_PER_COLLECTION: Final = 10_000
# An upstream token set (access, refresh and id token) from Keycloak is a few KiB;
# issuers that list groups in tokens cap them (Entra ID: 200, then an overage claim).
# A larger entry is refused rather than stored.
MAX_ENTRY_BYTES: Final = 32 * 1024
MAX_STATE_TTL: Final = 400 * 24 * 3600
REGISTRATION_TTL: Final = 90 * 24 * 3600
_REDIS_TIMEOUT: Final = 2.0
_KEY_BYTES: Final = 32
_EXACT_URL: Final = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))
_SIGNING_ALGORITHM: Final = "HS256"


def exact_url(value: str) -> AnyHttpUrl:
    """``value`` as an `AnyHttpUrl` that renders exactly as given (no slash added)."""
    return _EXACT_URL.validate_python(value)


def redirect_patterns(settings: Settings) -> list[str]:
    """Where clients may be sent back to: loopback on any port, or an allowlisted URI.

    The allowlist entries use FastMCP's pattern syntax (``*`` is a wildcard in
    host, port and path); an entry without ``*`` matches that URI only.
    """
    return [*LOOPBACK_PATTERNS, *settings.redirect_uri_allowlist]


# -- keys and storage ------------------------------------------------------------------------


def proxy_signing_key(settings: Settings) -> bytes:
    """The HS256 key for graphgate's tokens, also the root of the storage encryption key.

    Derived from ``static_client_secret`` when the upstream client is
    confidential (every replica knows it already); otherwise a random key kept
    in ``<data_dir>/oauth-proxy.key`` (mode 0600), which replicas must share.
    """
    if settings.static_client_secret is not None:
        return derive_jwt_key(
            high_entropy_material=settings.static_client_secret.get_secret_value(),
            salt="graphgate-oauth-proxy-jwt",
        )
    return _load_or_create_key(settings.data_dir / KEY_FILE)


def _load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it atomically (hard link, so two starters agree)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        create_once(path, base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("%s was readable by others (mode %o); setting 0600", path, mode)
        path.chmod(0o600)
    key = path.read_bytes().strip()
    try:
        if len(base64.urlsafe_b64decode(key)) < _KEY_BYTES:
            raise ValueError
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{path} does not hold a {_KEY_BYTES}-byte base64url key; delete it to have "
            "graphgate create a new one (everyone signs in again)"
        ) from None
    return key


@dataclass(frozen=True, slots=True)
class ProxyStorage:
    """The proxy's key-value store and how to release what it holds open."""

    store: AsyncKeyValue
    close: Callable[[], Awaitable[None]] | None = None


def proxy_storage(
    settings: Settings, signing_key: bytes, *, redis: Redis | None = None
) -> ProxyStorage:
    """The store named by ``state_url``, bounded in size and lifetime.

    ``redis`` is the client for ``state_url`` when it names Redis (shared with
    the state store, opened and closed by the server's lifespan); without it
    this store makes its own, and `ProxyStorage.close` releases it.

    * ``memory://``: ``key_value.aio``'s `MemoryStore`, each collection capped, so a flood
      of registrations evicts the oldest instead of exhausting memory.
    * ``redis://``, ``rediss://``, ``unix://``: the `RedisStore` of
      ``key_value.aio``, its collections prefixed with ``graphgate-oauth`` and
      every value Fernet-encrypted with a key derived from the signing key:
      the upstream access and refresh tokens must not sit readable in Redis.

    Entries FastMCP stores without a lifetime (client registrations) expire
    after 90 days; a client whose registration expired registers again.

    Every entry is at most ``MAX_ENTRY_BYTES`` as JSON (larger ones raise
    instead of being stored), and each collection keeps at most
    ``MAX_ENTRIES_PER_COLLECTION`` entries, the oldest evicted first: by
    `MemoryStore` itself, and in Redis by `RedisEntryCap`.

    ``redis`` (``decode_responses=True``) is used instead of a client of
    the store's own; its owner closes it.
    """
    close: Callable[[], Awaitable[None]] | None = None
    base: AsyncKeyValue
    state = settings.state_target
    if state.kind == "memory":
        base = MemoryStore(max_entries_per_collection=MAX_ENTRIES_PER_COLLECTION)
    else:
        from key_value.aio.stores.redis import RedisStore

        from graphgate.state import redis_client

        client = redis
        if client is None:
            client = redis_client(state.url)
            close = client.aclose
        storage_key = derive_jwt_key(
            high_entropy_material=signing_key.decode(), salt="graphgate-oauth-proxy-storage"
        )
        encrypted = FernetEncryptionWrapper(
            PrefixCollectionsWrapper(RedisStore(client=client), prefix="graphgate-oauth"),
            fernet=Fernet(storage_key),
            # A value written under another key (rotated secret) reads as absent:
            # the client registers or signs in again instead of seeing an error.
            raise_on_decryption_error=False,
        )
        base = RedisEntryCap(
            encrypted,
            client,
            max_entries=MAX_ENTRIES_PER_COLLECTION,
            index_prefix="graphgate-index:oauth:",
            index_ttl=MAX_STATE_TTL,
        )
    sized = LimitSizeWrapper(base, max_size=MAX_ENTRY_BYTES, raise_on_too_large=True)
    store = TTLClampWrapper(sized, min_ttl=1, max_ttl=MAX_STATE_TTL, missing_ttl=REGISTRATION_TTL)
    return ProxyStorage(store=store, close=close)


# -- the proxy --------------------------------------------------------------------------------


def _http_url(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return value
    return None


@dataclass(frozen=True, slots=True)
class UpstreamEndpoints:
    """The issuer's endpoints the proxy talks to, as its discovery document names them."""

    authorization: str
    token: str
    revocation: str | None

    @classmethod
    def from_metadata(cls, document: Mapping[str, Any]) -> UpstreamEndpoints:
        authorization = _http_url(document.get("authorization_endpoint"))
        token = _http_url(document.get("token_endpoint"))
        if authorization is None or token is None:
            raise IssuerUnavailable(
                "the issuer's metadata names no authorization or token endpoint", unreachable=False
            )
        return cls(authorization, token, _http_url(document.get("revocation_endpoint")))


class GraphgateOAuthProxy(OAuthProxy):
    """FastMCP's `OAuthProxy` for one set of upstream endpoints, with an exact issuer.

    ``endpoints`` None is the proxy graphgate starts with while the issuer's
    metadata is unknown: it registers clients and shows the consent page, and
    refuses the steps that would talk to the issuer (`authorize`, a refresh)
    with ``temporarily_unavailable``; the routes refuse the consent approval
    and the callback (`ProxyInstances`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        endpoints: UpstreamEndpoints | None,
        upstream: TokenVerifier,
        storage: AsyncKeyValue,
        signing_key: bytes,
    ) -> None:
        if settings.public_url is None or settings.static_client_id is None:
            raise ConfigError("registration = proxy needs public_url and static_client_id")
        secret = settings.static_client_secret
        super().__init__(
            # `.invalid` never resolves (RFC 6761); the steps that would use these refuse first.
            upstream_authorization_endpoint=(
                endpoints.authorization if endpoints else _UNRESOLVED + "authorize"
            ),
            upstream_token_endpoint=endpoints.token if endpoints else _UNRESOLVED + "token",
            upstream_client_id=settings.static_client_id,
            upstream_client_secret=secret.get_secret_value() if secret is not None else None,
            # Revocation (and its advertisement) only where the issuer offers it.
            upstream_revocation_endpoint=endpoints.revocation if endpoints else None,
            token_verifier=upstream,
            base_url=settings.public_url,
            issuer_url=exact_url(settings.public_url),
            redirect_path=CALLBACK_PATH,
            allowed_client_redirect_uris=redirect_patterns(settings),
            valid_scopes=list(settings.required_scopes),
            forward_pkce=True,
            client_storage=storage,
            jwt_signing_key=signing_key,
            # FastMCP's consent page stays on: the issuer sees a single client and
            # will not ask the user again, so this is where the user learns which
            # client (and redirect URI) is about to receive a token.
            require_authorization_consent=True,
        )
        self.endpoints = endpoints
        # get_routes also sets the MCP path, which FastMCP's token issuer needs.
        self.routes_by_path: dict[str, Route] = {
            route.path: route for route in self.get_routes(MCP_PATH) if isinstance(route, Route)
        }

    @property
    def issuer(self) -> str:
        return str(self.issuer_url)

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        if self.endpoints is None:
            raise AuthorizeError(
                error="temporarily_unavailable",
                error_description="The identity provider cannot be reached; try again shortly.",
            )
        return await super().authorize(client, params)

    async def exchange_refresh_token(
        self,
        client: OAuthClientInformationFull,
        refresh_token: RefreshToken,
        scopes: list[str],
    ) -> OAuthToken:
        if self.endpoints is None:
            raise TokenError(
                "invalid_request", "The identity provider cannot be reached; try again shortly."
            )
        return await super().exchange_refresh_token(client, refresh_token, scopes)


ProxyFactory = Callable[[UpstreamEndpoints | None], GraphgateOAuthProxy]


class ProxyInstances:
    """The `GraphgateOAuthProxy` for the endpoints the issuer's metadata names now.

    `OAuthProxy` takes its upstream endpoints as constructor arguments only,
    and graphgate must start while the issuer is down. So a proxy is built
    without endpoints at start-up and, once the metadata has been read, one
    for its endpoints (again only if they change). Instances are
    interchangeable: FastMCP keeps every client, transaction, code and token
    in the shared store and signs its tokens and cookies with the one key,
    which is what replicas rely on too. Reading the metadata costs nothing
    while it is fresh (`IssuerMetadata` keeps the last good copy).
    """

    def __init__(self, metadata: IssuerMetadata, build: ProxyFactory) -> None:
        self._metadata = metadata
        self._build = build
        self.unresolved = build(None)
        self._current = self.unresolved

    async def resolved(self) -> GraphgateOAuthProxy:
        """The proxy for the issuer's current endpoints; raises `IssuerUnavailable`."""
        endpoints = UpstreamEndpoints.from_metadata(await self._metadata.get())
        if endpoints != self._current.endpoints:
            self._current = self._build(endpoints)
        return self._current

    async def best(self) -> GraphgateOAuthProxy:
        """The resolved proxy if the issuer's metadata can be had, else the latest one."""
        try:
            return await self.resolved()
        except IssuerUnavailable:
            return self._current

    def route(self, path: str, *, upstream_step: Callable[[Scope], bool] | None = None) -> ASGIApp:
        """An ASGI app for ``path`` that runs that route of the current proxy.

        ``upstream_step`` tells the requests that send the browser to the
        issuer or call it; without the issuer's endpoints they get the
        "Sign-in unavailable" page (a person reads it) with Retry-After.
        """
        return _CurrentProxyRoute(self, path, upstream_step)


class _CurrentProxyRoute:
    """An ASGI app (not a function, so Starlette passes it the raw ASGI call)."""

    def __init__(
        self,
        instances: ProxyInstances,
        path: str,
        upstream_step: Callable[[Scope], bool] | None,
    ) -> None:
        self.instances = instances
        self.path = path
        self.upstream_step = upstream_step

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.upstream_step is not None and self.upstream_step(scope):
            try:
                proxy = await self.instances.resolved()
            except IssuerUnavailable as unavailable:
                await to_http_response(unavailable, html_page=True)(scope, receive, send)
                return
        else:
            proxy = await self.instances.best()
        route = proxy.routes_by_path.get(self.path)
        if route is None:  # /revoke, at an issuer that offers no revocation
            await Response(status_code=404)(scope, receive, send)
            return
        await route.app(scope, receive, send)


def _posted(scope: Scope) -> bool:
    return bool(scope.get("method") == "POST")


def _always(scope: Scope) -> bool:
    return True


# Steps that send the browser to the issuer or exchange a code with it.
_UPSTREAM_STEPS: Final[dict[str, Callable[[Scope], bool]]] = {
    "/consent": _posted,  # approving sends the browser to the issuer's login
    CALLBACK_PATH: _always,  # exchanges the issuer's code at its token endpoint
}
REVOCATION_PATH: Final = "/revoke"


def proxy_routes(settings: Settings, instances: ProxyInstances) -> list[Route]:
    """graphgate's PRM, the proxy's metadata at every path clients probe, its OAuth endpoints.

    Each route runs the same route of the current `ProxyInstances` proxy.
    FastMCP's own protected resource metadata is dropped for graphgate's (one
    source for every advertised URL); its authorization server metadata is
    served at the RFC 8414 and OIDC paths graphgate serves in shim mode too.
    """
    own = instances.unresolved.routes_by_path
    metadata = instances.route("/.well-known/oauth-authorization-server")
    routes = discovery_routes(settings)
    routes += [
        Route(path, metadata, methods=["GET", "OPTIONS"])
        for path in authorization_server_metadata_paths(settings)
    ]
    paths = [path for path in own if not path.startswith("/.well-known/")]
    if REVOCATION_PATH not in paths:
        paths.append(REVOCATION_PATH)
    for path in paths:
        app = instances.route(path, upstream_step=_UPSTREAM_STEPS.get(path))
        methods = own[path].methods if path in own else {"POST", "OPTIONS"}
        if path == REGISTRATION_PATH:
            app = BoundedRegistration(app, settings.registration_rate_limit)
        routes.append(Route(path, app, methods=sorted(methods or ())))
    return routes


# -- verification ---------------------------------------------------------------------------


def _unverified_part(segment: str, limit: int) -> Any:
    if len(segment) > limit:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return None


class ProxyTokenVerifier(JwtVerifier):
    """Verifies graphgate-issued tokens by way of the upstream token they stand for.

    A token whose header says HS256 and whose payload names ``public_url`` as
    issuer is checked here, by the same `decode_jwt` as the issuer's tokens:
    signature, ``iss``, ``aud`` (``<public_url>/mcp``), ``exp``, ``nbf``,
    ``iat``, lifetime, and that it is an access token rather than a refresh
    token. Then the proxy looks up the upstream token set by ``jti`` and
    verifies the upstream access token with the issuer's keys; the resulting
    claims (and the rights they grant) are the caller's. Any other token takes
    the ordinary path (issuer's keys, issuer, audience), which never admits
    HS256, so neither path can pass for the other.
    """

    def __init__(
        self,
        upstream: JwtVerifier,
        instances: ProxyInstances,
        signing_key: bytes,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        issuer = instances.unresolved.jwt_issuer
        super().__init__(
            upstream.keys,
            upstream.options,
            base_url=instances.unresolved.issuer,
            clock=clock,
            rights_of=upstream.rights_of,
        )
        self._instances = instances
        self._signing_key = signing_key
        self._issuer = instances.unresolved.issuer
        self._rules = replace(
            upstream.options,
            # Exactly what FastMCP writes (pydantic's rendering of <public_url>/mcp).
            issuer=issuer.issuer,
            audience=issuer.audience,
            algorithms=[_SIGNING_ALGORITHM],
            required_claims=("exp", "iat", "iss", "aud", "jti"),
        )
        self._resource = str(issuer.audience)

    def _issued_here(self, token: str) -> bool:
        parts = token.split(".")
        if len(parts) != 3:
            return False
        header = _unverified_part(parts[0], MAX_HEADER_BYTES)
        if not isinstance(header, dict) or header.get("alg") != _SIGNING_ALGORITHM:
            return False
        payload = _unverified_part(parts[1], self.options.max_token_bytes)
        return isinstance(payload, dict) and payload.get("iss") == self._issuer

    async def verify_uncached(self, token: str, fingerprint: str) -> AccessToken:
        if not self._issued_here(token):
            return await super().verify_uncached(token, fingerprint)
        header = read_header(token, self._rules.algorithms)
        claims = decode_jwt(token, self._signing_key, header.alg, self._rules, self._clock())
        if claims.get("token_use", "access") != "access":
            raise TokenRejected("invalid", "a refresh token is not an access token")
        proxy = await self._instances.best()
        try:
            upstream = await proxy.load_access_token(token)
        except TokenVerificationError as unknown:
            cause = unknown.__cause__
            if isinstance(cause, IssuerUnavailable):
                raise cause from None
            raise IssuerUnavailable(str(unknown), unreachable=True) from None
        if upstream is None:
            # Unknown jti (expired, rotated, lost with a restarted memory store) or
            # an upstream token the issuer's keys no longer accept.
            raise TokenRejected("invalid", "the upstream session behind the token is gone")
        upstream_claims = getattr(upstream, "claims", None)
        if not isinstance(upstream_claims, Mapping) or not upstream_claims.get("sub"):
            raise TokenRejected("missing_claim")
        exp = int(claims["exp"])
        return self.access_token(
            fingerprint,
            dict(upstream_claims),
            client_id=str(claims.get("client_id") or "unknown"),
            scopes=list(upstream.scopes),
            expires_at=min(exp, upstream.expires_at or exp),
            resource=self._resource,
        )


# -- assembly ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxyParts:
    instances: ProxyInstances
    verifier: ProxyTokenVerifier
    routes: list[Route]
    storage: ProxyStorage


def build_proxy(
    settings: Settings,
    metadata: IssuerMetadata,
    upstream: JwtVerifier,
    *,
    storage: AsyncKeyValue | None = None,
    redis: Redis | None = None,
) -> ProxyParts:
    """The proxy, the gate's verifier and the routes; no network I/O.

    ``storage`` replaces the store ``state_url`` names (tests, other backends);
    ``redis`` is a client for ``state_url`` the caller owns and shares.
    """
    if settings.public_url is None:
        raise ConfigError("public_url: required for registration = proxy")
    public = urlsplit(settings.public_url)
    if public.scheme != "https" and public.hostname not in LOOPBACK_NAMES:
        # The MCP SDK refuses to serve OAuth endpoints otherwise (RFC 8414 §2, OAuth 2.1 §1.5).
        raise ConfigError(
            "public_url: with registration = proxy graphgate is an OAuth authorization "
            "server, which must be served over https (http is allowed on loopback only)"
        )
    if settings.issuer and settings.issuer.rstrip("/") == settings.public_url:
        raise ConfigError(
            "issuer: in registration = proxy graphgate is the authorization server clients "
            "see; issuer must name the identity provider behind it, not public_url"
        )
    key = proxy_signing_key(settings)
    stored = (
        ProxyStorage(storage) if storage is not None else proxy_storage(settings, key, redis=redis)
    )
    instances = ProxyInstances(
        metadata,
        lambda endpoints: GraphgateOAuthProxy(
            settings, endpoints=endpoints, upstream=upstream, storage=stored.store, signing_key=key
        ),
    )
    return ProxyParts(
        instances=instances,
        verifier=ProxyTokenVerifier(upstream, instances, key),
        routes=proxy_routes(settings, instances),
        storage=stored,
    )
