"""graphgate's auth layer: wiring for the server, and the caller for tools.

The server calls `build_auth` once and hands ``setup.provider`` to FastMCP;
the provider brings its own routes (discovery, ``/register``, dev JWKS) and
the bearer gate middleware, so::

    setup = build_auth(settings, http_client)
    mcp = FastMCP("graphgate", auth=setup.provider)
    app = mcp.http_app(path="/mcp")

Tools call `current_caller` on every call: rights come from the verified
token of that very request, never from anything stored.

With ``auth = dev`` on loopback the provider also serves the dev issuer's
sign-in (`graphgate.auth.dev_authorization`): ``/authorize``, ``/token``,
``/register`` and ``/sign-in``.

With ``registration = proxy`` (`graphgate.auth.proxy`) the provider also
serves FastMCP's OAuth proxy endpoints (``/authorize``, ``/token``,
``/register``, ``/consent``, ``/auth/callback``, ``/revoke``), and the gate's
verifier maps graphgate-issued tokens back to the issuer's claims.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence, Set
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
from fastmcp.server.auth import AccessToken, AuthProvider
from fastmcp.server.dependencies import get_access_token
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from starlette.middleware import Middleware
from starlette.routing import Route

from graphgate.auth.challenge import BearerGate, Challenge, Rediscover
from graphgate.auth.dev import DevKeys, dev_verifier, mint_dev_token
from graphgate.auth.dev_authorization import DevAuthorizationServer, serves_authorization
from graphgate.auth.discovery import PRM_PATH, discovery_routes
from graphgate.auth.issuer_documents import IssuerMetadata
from graphgate.auth.proxy import ProxyInstances, ProxyStorage, build_proxy
from graphgate.auth.rights import Caller, Rights, rights_for_local_user, rights_from_claims
from graphgate.auth.tokens import JwtVerifier, KeySet, TokenVerifierSettings, VerifiedToken
from graphgate.config import ClaimsRules, Settings, claims_rules
from graphgate.errors import AuthError, IssuerUnavailable, TokenRejected

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "DEFAULT_OPEN_PATHS",
    "AuthSetup",
    "GraphgateAuth",
    "IssuerUnavailable",
    "JwtVerifier",
    "TokenRejected",
    "VerifiedToken",
    "build_auth",
    "caller_from_token",
    "current_caller",
    "mint_dev_token",
    "rights_of_token",
]

DEFAULT_OPEN_PATHS: frozenset[str] = frozenset({"/healthz", "/readyz"})

RightsOf = Callable[[Mapping[str, Any]], Rights]


def rights_of_token(token: AccessToken, rights_of: RightsOf) -> Rights:
    """The rights a verified token grants: those it carries, or computed from its claims.

    Tokens from graphgate's verifiers are `VerifiedToken`s whose rights were
    computed once, at verification; ``rights_of`` serves any other.
    """
    if isinstance(token, VerifiedToken):
        return token.rights
    return rights_of(token.claims or {})


class GraphgateAuth(AuthProvider):
    """The FastMCP auth provider: verifier, gate middleware and discovery routes together.

    FastMCP mounts `get_routes` and `get_middleware` itself when the provider
    is passed as ``FastMCP(auth=...)``; its own ``RequireAuthMiddleware`` on
    ``/mcp`` then only sees requests the gate already let through.
    ``rights_of`` turns claims into rights (`rights_from_claims` on the
    settings' `ClaimsRules`).
    """

    def __init__(
        self,
        settings: Settings,
        verifier: JwtVerifier,
        routes: Sequence[Route],
        *,
        open_paths: Collection[str] = DEFAULT_OPEN_PATHS,
        on_failure: Callable[[str], None] | None = None,
        rules: ClaimsRules | None = None,
        rediscover: Rediscover | None = None,
    ) -> None:
        super().__init__(
            base_url=settings.public_url, required_scopes=list(settings.required_scopes)
        )
        self.settings = settings
        self.verifier = verifier
        self.rights_of: RightsOf = partial(
            _rights_from_claims, rules=rules or claims_rules(settings)
        )
        self.routes = list(routes)
        self.open_paths = frozenset(open_paths) | {route.path for route in self.routes}
        self.on_failure = on_failure
        self.rediscover = rediscover

    async def verify_token(self, token: str) -> AccessToken | None:
        return await self.verifier.verify_token(token)

    def get_routes(self, mcp_path: str | None = None) -> list[Route]:
        self.set_mcp_path(mcp_path)
        return list(self.routes)

    def get_middleware(self) -> list[Any]:
        """The gate, then the SDK's middleware that exposes the token in a contextvar."""
        return [self.gate_middleware(), Middleware(AuthContextMiddleware)]

    def gate_middleware(self) -> Middleware:
        settings = self.settings
        challenge = Challenge(f"{settings.public_url}{PRM_PATH}/mcp", settings.required_scopes)
        return Middleware(
            BearerGate,
            verifier=self.verifier,
            challenge=challenge,
            required_scopes=settings.required_scopes,
            rights=partial(rights_of_token, rights_of=self.rights_of),
            open_paths=self.open_paths,
            on_failure=self.on_failure,
            rediscover=self.rediscover,
        )


def _rights_from_claims(claims: Mapping[str, Any], *, rules: ClaimsRules) -> Rights:
    return rights_from_claims(claims, rules)


@dataclass(frozen=True, slots=True)
class AuthSetup:
    """What `build_auth` made. ``provider`` is None for ``auth = none``.

    ``oauth_proxy`` and ``proxy_storage`` are set for ``registration = proxy``;
    `aclose` releases the store's connections; call it when the server stops.
    """

    provider: GraphgateAuth | None
    verifier: JwtVerifier | None = None
    routes: list[Route] = field(default_factory=list)
    issuer_metadata: IssuerMetadata | None = None
    oauth_proxy: ProxyInstances | None = None
    proxy_storage: ProxyStorage | None = None

    async def aclose(self) -> None:
        if self.proxy_storage is not None and self.proxy_storage.close is not None:
            await self.proxy_storage.close()


def build_auth(
    settings: Settings,
    http_client: httpx.AsyncClient,
    *,
    redis: Redis | None = None,
    open_paths: Collection[str] = DEFAULT_OPEN_PATHS,
    on_failure: Callable[[str], None] | None = None,
    retry_after: float = 2.0,
    catalog: Set[str] | None = None,
    rediscover: Rediscover | None = None,
) -> AuthSetup:
    """Build the auth layer for ``settings``; no network I/O happens here.

    ``http_client`` (owned and closed by the caller's lifespan) fetches the
    issuer's metadata and JWKS lazily, on the first request that needs them.
    ``redis`` (also the caller's) is the client for ``state_url`` when it names
    Redis, where the OAuth proxy keeps its state.
    ``open_paths`` are served without a token (health checks; add
    ``/metrics`` if it has its own protection); discovery routes are always
    open. ``on_failure`` receives a reason label for every refused request
    (``expired``, ``bad_signature``, ``missing_token``, ``no_tenants``, ...).
    ``retry_after`` is how long an unreachable issuer is left alone before
    the next request tries again (meanwhile: last good keys, or 502/503).
    ``catalog`` is the live catalog's tenant names (`graphgate.catalog`): rights
    are computed against the catalog in force when the token is verified, and
    the server clears the verified-token cache whenever the catalog changes.
    ``rediscover`` asks discovery to look now (rate-limited): the gate calls it
    before refusing a token whose tenants are all unknown so far.
    """
    if settings.auth == "none":
        return AuthSetup(provider=None)
    rules = claims_rules(settings, catalog)
    rights_of: RightsOf = partial(_rights_from_claims, rules=rules)
    metadata: IssuerMetadata | None = None
    if settings.auth == "dev":
        keys = DevKeys.load_or_create(settings.data_dir)
        dev = dev_verifier(settings, keys)
        verifier = JwtVerifier(
            dev.keys, dev.options, base_url=settings.public_url, rights_of=rights_of
        )
        # On loopback the dev issuer also signs people in (a page of demo users).
        signs_in = serves_authorization(settings)
        server = DevAuthorizationServer(settings, keys) if signs_in else None
        routes = discovery_routes(
            settings, dev_jwks=keys.jwks, dev_metadata=server.metadata() if server else None
        )
        routes += server.routes() if server else []
    else:
        assert settings.issuer is not None
        # Shim mirrors the issuer's metadata and proxy reads its endpoints from it.
        if settings.registration in {"shim", "proxy"} or not settings.jwks_url:
            metadata = IssuerMetadata(
                http_client,
                settings.issuer,
                ttl=settings.jwks_cache_seconds,
                retry_after=retry_after,
            )
        jwks_url = settings.jwks_url or (metadata.jwks_uri if metadata else None)
        assert jwks_url is not None
        keys_set = KeySet.remote(
            http_client,
            jwks_url,
            algorithms=settings.algorithms,
            cache_seconds=settings.jwks_cache_seconds,
            retry_after=retry_after,
        )
        verifier = JwtVerifier(
            keys_set,
            TokenVerifierSettings.from_rules(rules),
            base_url=settings.public_url,
            rights_of=rights_of,
        )
        if settings.registration == "proxy":
            assert metadata is not None
            proxied = build_proxy(settings, metadata, verifier, redis=redis)
            provider = GraphgateAuth(
                settings,
                proxied.verifier,
                proxied.routes,
                open_paths=open_paths,
                on_failure=on_failure,
                rules=rules,
                rediscover=rediscover,
            )
            return AuthSetup(
                provider=provider,
                verifier=proxied.verifier,
                routes=proxied.routes,
                issuer_metadata=metadata,
                oauth_proxy=proxied.instances,
                proxy_storage=proxied.storage,
            )
        routes = discovery_routes(settings, metadata=metadata)
    provider = GraphgateAuth(
        settings,
        verifier,
        routes,
        open_paths=open_paths,
        on_failure=on_failure,
        rules=rules,
        rediscover=rediscover,
    )
    return AuthSetup(provider=provider, verifier=verifier, routes=routes, issuer_metadata=metadata)


def caller_from_token(
    token: AccessToken,
    settings: Settings,
    rights_of: RightsOf | None = None,
) -> Caller:
    """Who a verified token names, and what its claims allow.

    The rights are the ones the token carries (`VerifiedToken`, computed at
    verification); for any other token ``rights_of`` (or, without it,
    `rights_from_claims` on the settings) computes them now.
    """
    claims = token.claims or {}
    issuer = claims.get("iss")
    subject = token.subject or claims.get("sub")
    if isinstance(token, VerifiedToken):
        rights = token.rights
    elif rights_of is not None:
        rights = rights_of(claims)
    else:
        rights = rights_from_claims(claims, claims_rules(settings))
    return Caller(
        issuer=issuer if isinstance(issuer, str) else "",
        subject=subject if isinstance(subject, str) else "",
        client_id=token.original_client_id or token.client_id,
        rights=rights,
    )


def current_caller(settings: Settings, rights_of: RightsOf | None = None) -> Caller:
    """The caller of the tool call in progress.

    ``auth = none`` has one local user holding the whole catalog. Otherwise
    the token is the one FastMCP stored for *this* HTTP request (the gate put
    it in the request scope), so rights follow the newest token even within
    one MCP session; they were computed when that token was verified.
    ``rights_of`` serves a token that carries none (see `caller_from_token`).
    """
    if settings.auth == "none":
        return Caller("local", "local", "local", rights_for_local_user(settings))
    token = get_access_token()
    if token is None:
        raise AuthError("no verified access token for this call")
    return caller_from_token(token, settings, rights_of)
