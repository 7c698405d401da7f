"""The ``/register`` shim: RFC 7591 dynamic registration answered with one static client.

Many issuers (Keycloak with policies, Entra ID, Okta) do not let anonymous
MCP clients register. In ``registration = shim`` graphgate answers every
acceptable registration with the same pre-registered public client
(``static_client_id``, no secret, PKCE), which the operator has created at
the issuer with the redirect URIs MCP clients use (loopback, any port).

Redirect URIs are still checked here, so a registration cannot smuggle in a
URI the issuer would accept through a wildcard: loopback ``http``
(RFC 8252 §7.3) always; then, when ``redirect_uri_allowlist`` is set, exactly
its entries (https ones included: the operator said which web callbacks are
theirs), and without one any ``https`` URI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from graphgate.config import LOOPBACK_NAMES, Settings
from graphgate.errors import RegistrationRefused, to_http_response

__all__ = [
    "CORS_HEADERS",
    "MAX_BODY_BYTES",
    "RegistrationPolicy",
    "check_client_metadata",
    "check_redirect_uri",
    "read_client_metadata",
    "register_endpoint",
]

MAX_BODY_BYTES: Final = 16 * 1024
MAX_REDIRECT_URIS: Final = 10
MAX_URI_LENGTH: Final = 2048
MAX_TEXT_LENGTH: Final = 1024
MAX_LIST_ITEMS: Final = 10
MAX_TOKEN_LENGTH: Final = 64
_SUPPORTED_GRANTS: Final = ("authorization_code", "refresh_token")
_ECHOED_TEXT: Final = (
    "client_name",
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
    "software_id",
    "software_version",
    "scope",
)
# RFC 7591 §2 metadata whose value is a URL (shown to users, so http(s) only).
_URL_FIELDS: Final = ("client_uri", "logo_uri", "tos_uri", "policy_uri", "jwks_uri")
# Single-token values (RFC 7591 §2); their meaning is checked by whoever honours them.
_TOKEN_FIELDS: Final = ("token_endpoint_auth_method", "application_type")
_TOKEN_LIST_FIELDS: Final = ("grant_types", "response_types")
CORS_HEADERS: Final = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, MCP-Protocol-Version",
}
_CORS: Final = CORS_HEADERS


@dataclass(frozen=True, slots=True)
class RegistrationPolicy:
    client_id: str
    redirect_uri_allowlist: frozenset[str] = field(default_factory=frozenset)
    clock: Callable[[], float] = time.time

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistrationPolicy:
        if not settings.static_client_id:
            raise ValueError("static_client_id: required for registration = shim")
        return cls(
            client_id=settings.static_client_id,
            redirect_uri_allowlist=frozenset(settings.redirect_uri_allowlist),
        )


def check_redirect_uri(uri: Any, allowlist: frozenset[str]) -> str:
    """Accept loopback http (any port), an exact allowlist entry, or, with no
    allowlist, any https URI.

    RFC 8252 §7.3: native clients listen on a loopback port chosen at run
    time, so the port is not compared. Fragments are refused (RFC 6749
    §3.1.2), and so is userinfo, which makes ``http://127.0.0.1@evil`` look
    local to a careless reader.
    """
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_LENGTH:
        raise RegistrationRefused("invalid_redirect_uri", "redirect URIs must be short strings")
    if uri in allowlist:
        return uri
    shown = uri[:100]
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise RegistrationRefused("invalid_redirect_uri", f"{shown!r} is not a URI") from None
    if parts.fragment or "#" in uri:
        raise RegistrationRefused("invalid_redirect_uri", f"{shown!r} has a fragment")
    if "@" in parts.netloc or not host or any(ch.isspace() for ch in uri):
        raise RegistrationRefused("invalid_redirect_uri", f"{shown!r} is not an acceptable URI")
    if parts.scheme == "http" and host in LOOPBACK_NAMES:
        return uri
    if parts.scheme == "https" and not allowlist:
        return uri
    if allowlist:
        raise RegistrationRefused(
            "invalid_redirect_uri",
            f"{shown!r} is not allowed: use http on 127.0.0.1, [::1] or localhost, or a "
            "callback in this server's redirect_uri_allowlist",
        )
    raise RegistrationRefused(
        "invalid_redirect_uri",
        f"{shown!r} is not allowed: use http on 127.0.0.1, [::1] or localhost, or https",
    )


def _short_text(name: str, value: Any, limit: int = MAX_TEXT_LENGTH) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise RegistrationRefused(
            "invalid_client_metadata", f"{name} must be a string of at most {limit} characters"
        )
    return value


def _short_list(name: str, value: Any, item_limit: int) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_LIST_ITEMS
        or not all(isinstance(item, str) and len(item) <= item_limit for item in value)
    ):
        raise RegistrationRefused(
            "invalid_client_metadata",
            f"{name} must be a list of at most {MAX_LIST_ITEMS} strings of at most "
            f"{item_limit} characters",
        )
    return list(value)


def check_client_metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7591 §2 client metadata checked for type and size; the known fields only.

    Shared by the shim and the proxy. Each value is bounded, so what a
    registration can make a server keep is bounded too; fields RFC 7591 does
    not define (and ``jwks``, ``software_statement``, which graphgate does not
    honour) are dropped, as §2 lets a server ignore what it does not
    understand. Redirect URIs are checked for shape here and for acceptability
    by the caller (the shim's and the proxy's rules differ).
    """
    uris = body.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise RegistrationRefused("invalid_redirect_uri", "redirect_uris must be a non-empty list")
    if len(uris) > MAX_REDIRECT_URIS:
        raise RegistrationRefused(
            "invalid_redirect_uri", f"at most {MAX_REDIRECT_URIS} redirect URIs"
        )
    if not all(isinstance(uri, str) and 0 < len(uri) <= MAX_URI_LENGTH for uri in uris):
        raise RegistrationRefused(
            "invalid_redirect_uri",
            f"redirect URIs must be strings of at most {MAX_URI_LENGTH} characters",
        )
    known: dict[str, Any] = {"redirect_uris": list(uris)}
    for name in _ECHOED_TEXT:
        if body.get(name) is not None:
            known[name] = _short_text(name, body[name])
    for name in _URL_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        url = _short_text(name, value, MAX_URI_LENGTH)
        if not url.startswith(("https://", "http://")) or any(ch.isspace() for ch in url):
            raise RegistrationRefused("invalid_client_metadata", f"{name} must be an http(s) URL")
        known[name] = url
    for name in _TOKEN_FIELDS:
        if body.get(name) is not None:
            known[name] = _short_text(name, body[name], MAX_TOKEN_LENGTH)
    for name in _TOKEN_LIST_FIELDS:
        if body.get(name) is not None:
            known[name] = _short_list(name, body[name], MAX_TOKEN_LENGTH)
    if body.get("contacts") is not None:
        known["contacts"] = _short_list("contacts", body["contacts"], MAX_TEXT_LENGTH)
    return known


def validate_registration(body: Mapping[str, Any], policy: RegistrationPolicy) -> dict[str, Any]:
    """RFC 7591 §2/§3.2.1: the client information for an acceptable request.

    Values graphgate cannot honour are replaced, as §3.2.1 permits: the
    client is always public (``token_endpoint_auth_method = none``, no
    secret) and uses the authorization code grant with PKCE.
    """
    known = check_client_metadata(body)
    redirect_uris = [
        check_redirect_uri(uri, policy.redirect_uri_allowlist) for uri in known["redirect_uris"]
    ]
    grants = known.get("grant_types", ["authorization_code"])
    grant_types = [g for g in _SUPPORTED_GRANTS if g in grants or g == "authorization_code"]
    if "code" not in known.get("response_types", ["code"]):
        raise RegistrationRefused(
            "invalid_client_metadata", "response_types must be a list containing 'code'"
        )

    info: dict[str, Any] = {
        "client_id": policy.client_id,
        "client_id_issued_at": int(policy.clock()),
        "token_endpoint_auth_method": "none",
        "redirect_uris": redirect_uris,
        "grant_types": grant_types,
        "response_types": ["code"],
    }
    for name in (*_ECHOED_TEXT, "contacts"):
        if name in known:
            info[name] = known[name]
    return info


def _too_large() -> RegistrationRefused:
    return RegistrationRefused(
        "invalid_client_metadata",
        f"the request body exceeds {MAX_BODY_BYTES} bytes; send the client metadata only",
        status=413,
    )


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _too_large()
            chunks.append(chunk)
    except ClientDisconnect:
        raise RegistrationRefused("invalid_client_metadata", "incomplete request body") from None
    return b"".join(chunks)


async def read_client_metadata(request: Request) -> dict[str, Any]:
    """The JSON object of a registration request, at most `MAX_BODY_BYTES` long."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
    if media_type.lower() != "application/json":
        raise RegistrationRefused(
            "invalid_client_metadata", "send the client metadata as application/json"
        )
    raw = await _read_body(request)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise RegistrationRefused("invalid_client_metadata", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RegistrationRefused("invalid_client_metadata", "the body must be a JSON object")
    return body


def register_endpoint(policy: RegistrationPolicy) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint for ``POST /register`` (and its CORS preflight)."""

    async def endpoint(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=_CORS)
        try:
            info = validate_registration(await read_client_metadata(request), policy)
        except RegistrationRefused as refused:
            return to_http_response(refused, headers=_CORS)
        return JSONResponse(info, status_code=201, headers={**_CORS, "Cache-Control": "no-store"})

    return endpoint
