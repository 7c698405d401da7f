"""OAuth discovery: what graphgate tells clients about itself and its issuer.

* RFC 9728 protected resource metadata (PRM) at
  ``/.well-known/oauth-protected-resource/mcp`` and ``/.well-known/oauth-protected-resource``.
* ``registration = shim``: a mirror of the issuer's RFC 8414 / OIDC discovery
  document in which graphgate names itself as the authorization server and
  offers an RFC 7591 ``/register`` that hands out one pre-registered client id.
* ``auth = dev``: graphgate's own issuer metadata and JWKS.

Every URL advertised here derives from ``settings.public_url``; request
headers (Host, X-Forwarded-*) are never consulted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from fastmcp.server.auth import TokenVerificationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graphgate.auth.registration import RegistrationPolicy, register_endpoint
from graphgate.config import Settings
from graphgate.errors import GraphgateError

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_METADATA_BYTES",
    "IssuerMetadata",
    "IssuerUnavailable",
    "authorization_server_metadata_paths",
    "discovery_routes",
    "fetch_json",
    "protected_resource_metadata",
    "shim_metadata",
]

MAX_METADATA_BYTES: Final = 256 * 1024
PRM_PATH: Final = "/.well-known/oauth-protected-resource"
JWKS_PATH: Final = "/.well-known/jwks.json"
REGISTER_PATH: Final = "/register"
_CORS: Final = {
    # Browser-based MCP clients read discovery documents cross-origin; they are public.
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, MCP-Protocol-Version",
}


class IssuerUnavailable(GraphgateError, TokenVerificationError):
    """The issuer (its metadata or JWKS) could not be used right now.

    Also a FastMCP `TokenVerificationError`, whose contract is exactly this:
    "validity could not be determined", as opposed to "the token is bad".
    ``unreachable`` distinguishes a transport failure (HTTP 503) from an
    issuer that answered with something unusable (HTTP 502).
    """

    code = "temporarily_unavailable"

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable

    @property
    def status_code(self) -> int:
        return 503 if self.unreachable else 502

    def to_response(self, retry_after: int = 5) -> JSONResponse:
        """RFC 6749 §5.2-shaped JSON error; Retry-After tells clients when to try again."""
        return JSONResponse(
            {
                "error": "temporarily_unavailable" if self.unreachable else "server_error",
                "error_description": (
                    "The authorization server cannot be reached; try again shortly."
                    if self.unreachable
                    else "The authorization server answered with unusable metadata."
                ),
            },
            status_code=self.status_code,
            headers={"Retry-After": str(retry_after), "Cache-Control": "no-store"},
        )


async def fetch_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    deadline: float,
    max_bytes: int = MAX_METADATA_BYTES,
) -> dict[str, Any]:
    """GET a JSON object with a hard deadline and a size cap.

    httpx's timeout bounds each network operation, not the whole exchange, so
    a server dripping one byte per second could hold the caller for minutes;
    ``asyncio.timeout`` bounds the total. Redirects are not followed: an
    issuer's metadata and keys live at the URLs it names (RFC 8414 §3).
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            async with client.stream(
                "GET", url, headers={"Accept": "application/json"}, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise IssuerUnavailable(
                        f"{url} answered HTTP {response.status_code}",
                        unreachable=response.status_code >= 500,
                    )
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise IssuerUnavailable(
                            f"{url} sent more than {max_bytes} bytes", unreachable=False
                        )
                    chunks.append(chunk)
    except TimeoutError:
        raise IssuerUnavailable(
            f"{url} did not answer within {deadline:g} s", unreachable=True
        ) from None
    except httpx.HTTPError as exc:
        raise IssuerUnavailable(f"{url}: {type(exc).__name__}", unreachable=True) from None
    try:
        document = json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise IssuerUnavailable(f"{url} did not send JSON", unreachable=False) from None
    if not isinstance(document, dict):
        raise IssuerUnavailable(f"{url} did not send a JSON object", unreachable=False)
    return document


def issuer_metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's discovery document may live, in the order tried.

    OIDC Discovery §4 appends ``/.well-known/openid-configuration`` to the
    issuer; RFC 8414 §3.1 inserts ``/.well-known/oauth-authorization-server``
    between host and path; some servers (Keycloak) also append the latter.
    """
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    base = issuer.rstrip("/")
    urls = [
        f"{base}/.well-known/openid-configuration",
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{base}/.well-known/oauth-authorization-server",
    ]
    return list(dict.fromkeys(urls))


class IssuerMetadata:
    """The issuer's discovery document, fetched on demand and cached.

    A fresh document is reused for ``ttl`` seconds. When a refresh fails the
    last good document keeps being served; with none, callers get
    `IssuerUnavailable` and the next attempt is allowed ``retry_after`` seconds
    later, so an outage costs one upstream request per interval, not one per
    client request. Fetches are serialised (one in flight).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        issuer: str,
        *,
        ttl: float = 300.0,
        retry_after: float = 2.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must be set to fetch its metadata")
        self.issuer = issuer
        self._client = client
        self._ttl = ttl
        self._retry_after = retry_after
        self._timeout = timeout
        self._clock = clock
        self._document: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._failed_at: float | None = None
        self._last_error: IssuerUnavailable | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        """The document, refreshed if stale; raises `IssuerUnavailable` if there is none."""
        if self._fresh():
            assert self._document is not None
            return self._document
        async with self._lock:
            if self._fresh():
                assert self._document is not None
                return self._document
            if not self._may_retry():
                return self._stale_or_raise()
            try:
                document = await self._fetch()
            except IssuerUnavailable as exc:
                self._failed_at = self._clock()
                self._last_error = exc
                logger.warning("issuer metadata unavailable: %s", exc)
                return self._stale_or_raise()
            self._document = document
            self._fetched_at = self._clock()
            self._failed_at = None
            self._last_error = None
            return document

    async def jwks_uri(self) -> str:
        document = await self.get()
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise IssuerUnavailable("the issuer's metadata names no jwks_uri", unreachable=False)
        return uri

    def _fresh(self) -> bool:
        return self._document is not None and self._clock() - self._fetched_at < self._ttl

    def _may_retry(self) -> bool:
        return self._failed_at is None or self._clock() - self._failed_at >= self._retry_after

    def _stale_or_raise(self) -> dict[str, Any]:
        if self._document is not None:
            return self._document
        raise self._last_error or IssuerUnavailable("issuer metadata unavailable", unreachable=True)

    async def _fetch(self) -> dict[str, Any]:
        error: IssuerUnavailable | None = None
        for url in issuer_metadata_urls(self.issuer):
            try:
                document = await fetch_json(self._client, url, deadline=self._timeout)
            except IssuerUnavailable as exc:
                error = exc
                if exc.unreachable:
                    break  # the host is down: the other URLs would only add waiting
                continue
            # RFC 8414 §3.3 / OIDC Discovery §4.3: the document must name exactly
            # the issuer it was fetched for, or it is someone else's.
            if document.get("issuer") != self.issuer:
                error = IssuerUnavailable(
                    f"{url} names issuer {str(document.get('issuer'))[:200]!r}, "
                    f"not the configured {self.issuer!r}",
                    unreachable=False,
                )
                continue
            return document
        assert error is not None
        raise error


# -- documents ------------------------------------------------------------------------------


def authorization_server_url(settings: Settings) -> str:
    """The authorization server PRM names: the issuer, or graphgate itself in shim mode.

    RFC 9728 §3.3 / RFC 8414 §3.3: clients compare it byte for byte with the
    ``issuer`` in that server's metadata, so it is the configured issuer exactly
    (direct), ``public_url`` whose metadata graphgate serves (shim), or the
    dev issuer (which also is ``public_url``).
    """
    if settings.auth == "dev":
        return settings.dev_issuer
    if settings.registration in {"shim", "proxy"}:
        assert settings.public_url is not None
        return settings.public_url
    assert settings.issuer is not None
    return settings.issuer


def protected_resource_metadata(settings: Settings) -> dict[str, Any]:
    """RFC 9728 §2 metadata for the MCP endpoint.

    ``resource`` is exactly ``<public_url>/mcp``: clients compare it with the
    URL they connected to (RFC 9728 §3.3, MCP authorization "resource"
    validation). Only the header method is offered: OAuth 2.1 §5.2 forbids
    query-string tokens and MCP requires the header.
    """
    document: dict[str, Any] = {
        "resource": settings.resource_url,
        "authorization_servers": [authorization_server_url(settings)],
        "bearer_methods_supported": ["header"],
        "resource_name": "graphgate",
    }
    if settings.required_scopes:
        document["scopes_supported"] = list(settings.required_scopes)
    return document


def shim_metadata(upstream: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The issuer's metadata as served by graphgate in ``registration = shim``.

    ``issuer`` becomes ``public_url``: today's MCP Python client takes the
    authorization server from PRM and refuses metadata whose ``issuer`` differs
    (RFC 8414 §3.3, exact string comparison). ``registration_endpoint`` points
    at graphgate's ``/register``; every other endpoint stays at the issuer.

    What strict clients then do: the authorization response is redirected
    by the *real* issuer, and if it carries RFC 9207 ``iss`` (Keycloak sends
    it) that value is the real issuer, not ``public_url``. A client that
    checks it (the MCP Python client does, when its callback handler passes
    ``iss`` through) aborts with "Authorization response iss mismatch".
    ``authorization_response_iss_parameter_supported`` is removed so that a
    response *without* ``iss`` is accepted. Remedies: turn ``iss`` off at the
    issuer for the static client (Keycloak: client → Advanced → "Exclude
    Issuer From Authentication Response"), or use ``registration = direct``
    with an issuer that supports dynamic registration.

    ``client_id_metadata_document_supported`` is removed too: a client that
    sees it (the MCP SDKs, given a client metadata URL) skips ``/register``
    and sends its URL as ``client_id`` straight to the issuer, past the one
    static client shim mode stands for (and, at Keycloak with
    ``--features=cimd``, into a client of its own whose ``iss`` strict clients
    then refuse). Client ID Metadata Documents belong to ``direct`` mode.
    """
    assert settings.public_url is not None
    served = dict(upstream)
    served["issuer"] = settings.public_url
    served["registration_endpoint"] = settings.public_url + REGISTER_PATH
    served.pop("authorization_response_iss_parameter_supported", None)
    served.pop("client_id_metadata_document_supported", None)
    return served


def dev_issuer_metadata(settings: Settings) -> dict[str, Any]:
    """RFC 8414 metadata for a dev issuer that is not on loopback, hence has no login UI.

    Tokens come from ``graphgate token``; no grant is served, so the lists of
    supported grant and response types are empty (RFC 8414 §2 allows omitting
    the authorization and token endpoints when no grant uses them). An MCP
    client that tries the interactive flow learns here that it must be given a
    token instead.
    """
    issuer = settings.dev_issuer
    return {
        "issuer": issuer,
        "jwks_uri": issuer + JWKS_PATH,
        "scopes_supported": list(settings.required_scopes),
        "response_types_supported": [],
        "grant_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "subject_types_supported": ["public"],
    }


def authorization_server_metadata_paths(settings: Settings) -> list[str]:
    """Every path clients probe for the authorization server metadata of ``public_url``.

    RFC 8414 §3.1 path insertion, OIDC Discovery §4 appending, each at the
    root and for the ``/mcp`` endpoint (clients that fall back to the resource
    path), and, when ``public_url`` has a path, with that path too.
    """
    base_path = urlsplit(settings.public_url or "").path.rstrip("/")
    suffixes = ["", "/mcp"] + ([base_path, f"{base_path}/mcp"] if base_path else [])
    paths: list[str] = []
    for name in ("oauth-authorization-server", "openid-configuration"):
        paths += [f"/.well-known/{name}{suffix}" for suffix in suffixes]
        paths.append(f"/mcp/.well-known/{name}")
    return list(dict.fromkeys(paths))


# -- routes ---------------------------------------------------------------------------------


def _json(document: Mapping[str, Any], *, max_age: int = 300) -> JSONResponse:
    return JSONResponse(
        dict(document), headers={**_CORS, "Cache-Control": f"public, max-age={max_age}"}
    )


def _options_or(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=_CORS)
        return await handler(request)

    return endpoint


def _static(document: Mapping[str, Any]) -> Callable[[Request], Awaitable[Response]]:
    frozen = dict(document)

    async def handler(request: Request) -> Response:
        return _json(frozen)

    return _options_or(handler)


def discovery_routes(
    settings: Settings,
    *,
    metadata: IssuerMetadata | None = None,
    dev_jwks: Mapping[str, Any] | None = None,
    dev_metadata: Mapping[str, Any] | None = None,
    registration: RegistrationPolicy | None = None,
) -> list[Route]:
    """The open routes for ``settings.auth`` / ``settings.registration``.

    ``metadata`` is required in shim mode, ``dev_jwks`` in dev mode;
    ``dev_metadata`` replaces the dev issuer's token-only metadata when it
    is an authorization server (`graphgate.auth.dev_authorization`).
    """
    if settings.auth == "none":
        return []
    prm = _static(protected_resource_metadata(settings))
    base_path = urlsplit(settings.public_url or "").path.rstrip("/")
    prm_paths = [PRM_PATH, f"{PRM_PATH}/mcp"]
    if base_path:
        prm_paths += [f"{PRM_PATH}{base_path}", f"{PRM_PATH}{base_path}/mcp"]
    routes = [Route(path, prm, methods=["GET", "OPTIONS"]) for path in prm_paths]

    as_endpoint: Callable[[Request], Awaitable[Response]] | None = None
    if settings.auth == "dev":
        if dev_jwks is None:
            raise ValueError("dev mode needs the dev JWKS")
        as_endpoint = _static(dev_metadata or dev_issuer_metadata(settings))
        routes.append(Route(JWKS_PATH, _static(dev_jwks), methods=["GET", "OPTIONS"]))
    elif settings.registration == "shim":
        if metadata is None:
            raise ValueError("registration = shim needs the issuer metadata fetcher")
        as_endpoint = _mirror_endpoint(metadata, settings)
        policy = registration or RegistrationPolicy.from_settings(settings)
        routes.append(Route(REGISTER_PATH, register_endpoint(policy), methods=["POST", "OPTIONS"]))
    if as_endpoint is not None:
        routes += [
            Route(path, as_endpoint, methods=["GET", "OPTIONS"])
            for path in authorization_server_metadata_paths(settings)
        ]
    return routes


def _mirror_endpoint(
    metadata: IssuerMetadata, settings: Settings
) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        try:
            upstream = await metadata.get()
        except IssuerUnavailable as exc:
            response = exc.to_response()
            response.headers.update(_CORS)
            return response
        return _json(shim_metadata(upstream, settings), max_age=60)

    return _options_or(handler)


def route_paths(routes: Sequence[Route]) -> frozenset[str]:
    return frozenset(route.path for route in routes)
