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

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graphgate.auth.issuer_documents import IssuerMetadata
from graphgate.auth.registration import RegistrationPolicy, register_endpoint
from graphgate.config import Settings
from graphgate.errors import IssuerUnavailable, to_http_response

logger = logging.getLogger(__name__)

__all__ = [
    "authorization_server_metadata_paths",
    "discovery_routes",
    "protected_resource_metadata",
    "shim_metadata",
]

PRM_PATH: Final = "/.well-known/oauth-protected-resource"
JWKS_PATH: Final = "/.well-known/jwks.json"
REGISTER_PATH: Final = "/register"
_CORS: Final = {
    # Browser-based MCP clients read discovery documents cross-origin; they are public.
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, MCP-Protocol-Version",
}


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
        except IssuerUnavailable as unavailable:
            return to_http_response(unavailable, headers=_CORS)
        return _json(shim_metadata(upstream, settings), max_age=60)

    return _options_or(handler)


def route_paths(routes: Sequence[Route]) -> frozenset[str]:
    return frozenset(route.path for route in routes)
