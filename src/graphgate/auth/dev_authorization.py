"""The dev issuer as a minimal OAuth authorization server, for loopback only.

An MCP client connecting without a token (Claude Code, mcp-remote, the SDKs)
discovers the dev issuer, registers (RFC 7591), sends the browser to
``/authorize`` (authorization code with PKCE S256), where a page lists the
demo users, each with their tenants and access; picking one sends the browser
back to the client with a code, which ``/token`` exchanges for the same kind
of JWT ``graphgate token`` mints (so the one verifier checks both), plus a
refresh token.

The protocol is the mcp SDK's: `create_auth_routes` supplies ``/authorize``,
``/token`` and ``/register`` with their checks (PKCE required and
verified, the redirect URI compared exactly with a registered one, codes bound
to their client, RFC 6749/7591/7009-shaped errors), and this module is its
`OAuthAuthorizationServerProvider`: what is stored, for how long, and who may
sign in. graphgate adds:

* loopback only: served when the server is bound to loopback *and* the
  issuer names loopback (`serves_authorization`), and only loopback ``http``
  redirect URIs (RFC 8252 §7.3, any port) are registered, so codes can go
  nowhere but this machine;
* `BoundedRegistration` (the proxy mode's) in front of ``/register``: body
  and field sizes, a rate limit per address;
* bounds on everything kept in memory: pending sign-ins (10 min), codes
  (one use, 5 min; a code presented twice also loses its refresh token,
  RFC 6749 §4.1.2), refresh tokens (rotated on use, 7 days), each capped in
  number. Registered clients are kept in the data dir (`DevClientStore`).

No authentication happens here: anyone who can reach the loopback port can
sign in as any demo user, as anyone who can read the data dir can mint
tokens. That is the dev issuer's whole point, and why it is loopback only.

RFC 9207 ``iss`` is not sent: the SDK's own error redirects do not carry it,
and advertising it would make strict clients refuse those. No ``/revoke``:
the SDK's handler (mcp 2.3) requires a ``client_secret`` field even from
public clients, so the clients MCP uses could not call it; an unused refresh
token simply expires.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import urlsplit

from cachetools import TTLCache
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    OAuthAuthorizationServerProvider,
    RefreshToken,
    RegistrationError,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import REGISTRATION_PATH, build_metadata, create_auth_routes
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import RequestBodyLimitMiddleware
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp

from graphgate.auth.dev import DEV_ALGORITHM, DevKeys, mint_dev_token
from graphgate.auth.dev_clients import DevClientStore
from graphgate.auth.dev_sign_in import sign_in_page, sign_in_problem
from graphgate.auth.discovery import JWKS_PATH
from graphgate.auth.proxy_registration import BoundedRegistration
from graphgate.auth.registration import check_redirect_uri
from graphgate.config import Settings, is_loopback_host
from graphgate.demo import DemoUser, demo_users
from graphgate.errors import RegistrationRefused

__all__ = ["SIGN_IN_PATH", "DevAuthorizationServer", "serves_authorization"]

logger = logging.getLogger(__name__)

SIGN_IN_PATH: Final = "/sign-in"
PENDING_SECONDS: Final = 600
CODE_SECONDS: Final = 300
ACCESS_SECONDS: Final = 3600
REFRESH_SECONDS: Final = 7 * 24 * 3600
MAX_PENDING: Final = 1000
MAX_CODES: Final = 1000
MAX_REFRESH_TOKENS: Final = 10_000
MAX_SIGN_IN_BODY: Final = 4096
# What `validate_issuer_url` (the SDK) lets an http issuer be named.
_LOOPBACK_ISSUER_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_CLIENT_AUTH_METHODS: Final = ["none", "client_secret_post", "client_secret_basic"]
_EXPIRED: Final = (
    "This sign-in request has expired or was already used. "
    "Start the sign-in again from your MCP client."
)


def serves_authorization(settings: Settings) -> bool:
    """Whether the dev issuer signs people in: dev auth over HTTP, on and named by loopback."""
    if settings.auth != "dev" or settings.transport != "http":
        return False
    return (
        is_loopback_host(settings.host)
        and urlsplit(settings.dev_issuer).hostname in _LOOPBACK_ISSUER_HOSTS
    )


def _loopback_redirect(uri: str) -> bool:
    """RFC 8252 §7.3: ``http`` on 127.0.0.1, [::1] or localhost, any port; nothing else."""
    try:
        check_redirect_uri(uri, frozenset())
    except RegistrationRefused:
        return False
    return urlsplit(uri).scheme == "http" and "\\" not in uri


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """An ``/authorize`` request waiting for the user to pick someone on the sign-in page."""

    client_id: str
    client_name: str
    params: AuthorizationParams


class DevAuthorizationServer(
    OAuthAuthorizationServerProvider[AuthorizationCode, RefreshToken, AccessToken]
):
    """The SDK provider for the dev issuer, with its metadata and routes.

    ``users`` default to `demo_users` of the catalog; ``clients`` to the
    store in the data dir.
    """

    def __init__(
        self,
        settings: Settings,
        keys: DevKeys,
        *,
        users: Sequence[DemoUser] | None = None,
        clients: DevClientStore | None = None,
    ) -> None:
        if not serves_authorization(settings):
            raise ValueError(
                "the dev authorization server serves only on loopback: bind to 127.0.0.1 "
                "(or ::1, localhost) with a loopback public_url"
            )
        self.settings = settings
        self.keys = keys
        self.issuer = settings.dev_issuer
        self.users = {user.name: user for user in (users or demo_users(list(settings.catalog)))}
        self.clients = clients or DevClientStore(settings.data_dir, self._acceptable)
        self.registration = ClientRegistrationOptions(
            enabled=True, default_scopes=list(settings.required_scopes) or None
        )
        self.revocation = RevocationOptions(enabled=False)  # see the module docstring
        self._pending: TTLCache[str, PendingSignIn] = TTLCache(MAX_PENDING, PENDING_SECONDS)
        self._codes: TTLCache[str, AuthorizationCode] = TTLCache(MAX_CODES, CODE_SECONDS)
        # Codes already exchanged, with the refresh token they brought (RFC 6749 §4.1.2).
        self._used_codes: TTLCache[str, str | None] = TTLCache(MAX_CODES, CODE_SECONDS)
        self._refresh: TTLCache[str, RefreshToken] = TTLCache(MAX_REFRESH_TOKENS, REFRESH_SECONDS)

    # -- metadata and routes --------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 metadata: the SDK's for its endpoints, plus the dev issuer's keys.

        ``issuer`` is the configured string exactly (RFC 8414 §3.3 compares it
        byte for byte). The OIDC members stay so that clients which read the
        document at ``openid-configuration`` with an OIDC schema accept it.
        """
        document = build_metadata(
            AnyHttpUrl(self.issuer), None, self.registration, self.revocation
        ).model_dump(mode="json", exclude_none=True)
        document.update(
            issuer=self.issuer,
            jwks_uri=self.issuer + JWKS_PATH,
            scopes_supported=list(self.settings.required_scopes),
            token_endpoint_auth_methods_supported=list(_CLIENT_AUTH_METHODS),
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=[DEV_ALGORITHM],
        )
        return document

    def routes(self) -> list[Route]:
        """``/authorize``, ``/token``, ``/register`` and the sign-in page.

        The SDK's metadata route is left out: graphgate's discovery routes
        serve `metadata` at every path clients probe.
        """
        routes: list[Route] = []
        for route in create_auth_routes(
            self,
            AnyHttpUrl(self.issuer),
            client_registration_options=self.registration,
            revocation_options=self.revocation,
        ):
            if route.path.startswith("/.well-known/"):
                continue
            if route.path == REGISTRATION_PATH:
                bounded = BoundedRegistration(
                    cast(ASGIApp, route.endpoint), self.settings.registration_rate_limit
                )
                route = Route(REGISTRATION_PATH, bounded, methods=["POST", "OPTIONS"])
            routes.append(route)
        sign_in = RequestBodyLimitMiddleware(request_response(self._sign_in), MAX_SIGN_IN_BODY)
        routes.append(Route(SIGN_IN_PATH, sign_in, methods=["GET", "POST"]))
        return routes

    # -- clients ----------------------------------------------------------------------------

    @staticmethod
    def _acceptable(client: OAuthClientInformationFull) -> bool:
        return bool(client.redirect_uris) and all(
            _loopback_redirect(str(uri)) for uri in client.redirect_uris or ()
        )

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        for uri in client_info.redirect_uris or ():
            if not _loopback_redirect(str(uri)):
                raise RegistrationError(
                    "invalid_redirect_uri",
                    f"{str(uri)[:100]!r} is not allowed: the dev issuer sends codes only to "
                    "http://127.0.0.1, http://[::1] or http://localhost (any port)",
                )
        self.clients.add(client_info)
        logger.info(
            "dev issuer: registered client %s (%s)",
            client_info.client_id,
            (client_info.client_name or "unnamed")[:100],
        )

    # -- authorization ----------------------------------------------------------------------

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        """Park the request and send the browser to the sign-in page."""
        audiences = self.settings.token_audiences
        if params.resource is not None and params.resource not in audiences:
            raise AuthorizeError(
                "invalid_target",
                f"this issuer grants access to {audiences[0]} only, not {params.resource[:200]!r}",
            )
        request_id = secrets.token_urlsafe(32)
        self._pending[request_id] = PendingSignIn(
            client.client_id, client.client_name or "An MCP client", params
        )
        return construct_redirect_uri(self.issuer + SIGN_IN_PATH, request=request_id)

    async def _sign_in(self, request: Request) -> Response:
        if request.method == "GET":
            return self._show_users(request.query_params.get("request", ""))
        form = await request.form()
        request_id, choice = form.get("request"), form.get("user")
        if not isinstance(request_id, str) or request_id not in self._pending:
            return sign_in_problem(_EXPIRED)
        if form.get("deny"):
            return self._back_to_client(self._pending.pop(request_id).params, error="access_denied")
        user = self.users.get(choice) if isinstance(choice, str) else None
        if user is None:
            return sign_in_problem(f"Pick one of the listed users ({', '.join(self.users)}).")
        pending = self._pending.pop(request_id)
        params = pending.params
        code = secrets.token_urlsafe(32)
        self._codes[code] = AuthorizationCode(
            code=code,
            scopes=list(self.settings.required_scopes),
            expires_at=time.time() + CODE_SECONDS,
            client_id=pending.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=user.name,
        )
        logger.info("dev issuer: %s signed in for client %s", user.name, pending.client_id)
        return self._back_to_client(params, code=code)

    def _show_users(self, request_id: str) -> Response:
        pending = self._pending.get(request_id)
        if pending is None:
            return sign_in_problem(_EXPIRED)
        return sign_in_page(
            action=self.issuer + SIGN_IN_PATH,
            request_id=request_id,
            client_name=pending.client_name,
            redirect_uri=str(pending.params.redirect_uri),
            resource=self.settings.resource_url,
            users=list(self.users.values()),
            writes_allowed=self.settings.allow_writes,
        )

    @staticmethod
    def _back_to_client(params: AuthorizationParams, **answer: str) -> Response:
        url = construct_redirect_uri(str(params.redirect_uri), **answer, state=params.state)
        return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})

    # -- tokens -----------------------------------------------------------------------------

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        """The code, taken out: one attempt per code, whatever its outcome (PKCE included)."""
        code = self._codes.get(authorization_code)
        if code is None:
            if authorization_code in self._used_codes:
                issued = self._used_codes.pop(authorization_code)
                if issued is not None:
                    self._refresh.pop(issued, None)
                logger.warning("dev issuer: a used code was presented again; its tokens revoked")
            return None
        if code.client_id != client.client_id:
            return None
        del self._codes[authorization_code]
        self._used_codes[authorization_code] = None
        return code

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        tokens = self._issue(client, authorization_code.subject, authorization_code.scopes)
        if authorization_code.code in self._used_codes:
            self._used_codes[authorization_code.code] = tokens.refresh_token
        return tokens

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        token = self._refresh.get(refresh_token)
        return token if token is not None and token.client_id == client.client_id else None

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        """A new access token and a new refresh token; the old one is spent."""
        if self._refresh.pop(refresh_token.token, None) is None:
            raise TokenError("invalid_grant", "refresh token does not exist")
        return self._issue(client, refresh_token.subject, scopes)

    def _issue(
        self, client: OAuthClientInformationFull, subject: str | None, scopes: list[str]
    ) -> OAuthToken:
        user = self.users.get(subject or "")
        if user is None:
            raise TokenError("invalid_grant", "this user is no longer offered; sign in again")
        lifetime = min(ACCESS_SECONDS, int(self.settings.max_token_lifetime))
        access = mint_dev_token(
            self.settings,
            sub=user.name,
            tenants=list(user.tenants),
            admin=user.admin,
            ttl=lifetime,
            scopes=scopes,
            client_id=client.client_id,
            keys=self.keys,
        )
        refresh: str | None = None
        if "refresh_token" in client.grant_types:
            refresh = secrets.token_urlsafe(32)
            self._refresh[refresh] = RefreshToken(
                token=refresh,
                client_id=client.client_id,
                scopes=scopes,
                expires_at=int(time.time()) + REFRESH_SECONDS,
                resource=self.settings.resource_url,
                subject=user.name,
            )
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=lifetime,
            scope=" ".join(scopes) or None,
            refresh_token=refresh,
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        """Access tokens are JWTs checked by the server's verifier, not looked up here."""
        return None

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        """Part of the SDK protocol; unused while ``/revoke`` is off (module docstring)."""
        if isinstance(token, RefreshToken):
            self._refresh.pop(token.token, None)
