"""The `mcp` SDK's OAuth client, driven like a user at a browser, for end-to-end tests.

Shared by the Keycloak and oidc-provider suites: each supplies a ``browser``
that signs a user in at its own authorization server, and a ``gateway`` (the
graphgate under test, with a ``url``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from tests.services._common import free_port, origin

MCP_HEADERS = {"accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"},
    },
}


class Served(Protocol):
    url: str


class SignsIn(Protocol):
    async def sign_in(self, url: str, username: str, redirect_uri: str) -> str: ...


@dataclass
class MemoryTokenStorage:
    """The SDK's `TokenStorage`, in memory, remembering every token set it was given."""

    tokens: OAuthToken | None = None
    client_info: OAuthClientInformationFull | None = None
    history: list[OAuthToken] = field(default_factory=list)

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class AuthorizationRefused(Exception):
    """The authorization server sent the browser back with ``error=...``."""


@dataclass
class OAuthMcpUser:
    """One user's MCP client: the SDK's OAuth provider over an httpx2 client."""

    gateway: Served
    username: str
    browser: SignsIn
    storage: MemoryTokenStorage = field(default_factory=MemoryTokenStorage)
    redirect_uri: str = field(default_factory=lambda: f"http://127.0.0.1:{free_port()}/callback")
    # An https URL: the SDK then uses it as its client_id (Client ID Metadata
    # Document) instead of registering, where the metadata says
    # client_id_metadata_document_supported.
    client_metadata_url: str | None = None
    requests: list[str] = field(default_factory=list)
    authorization_urls: list[str] = field(default_factory=list)
    callbacks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        metadata = OAuthClientMetadata(
            redirect_uris=[self.redirect_uri],  # type: ignore[list-item]
            client_name=f"graphgate e2e ({self.username})",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        )
        self.provider = OAuthClientProvider(
            f"{self.gateway.url}/mcp",
            metadata,
            self.storage,
            redirect_handler=self._open_browser,
            callback_handler=self._callback,
            client_metadata_url=self.client_metadata_url,
        )

        async def record(request: httpx2.Request) -> None:
            self.requests.append(f"{request.method} {request.url}")

        self.http = httpx2.AsyncClient(
            auth=self.provider, timeout=60, event_hooks={"request": [record]}
        )

    @property
    def logins(self) -> int:
        return len(self.callbacks)

    async def _open_browser(self, url: str) -> None:
        self.authorization_urls.append(url)
        self.callbacks.append(await self.browser.sign_in(url, self.username, self.redirect_uri))

    async def _callback(self) -> AuthorizationCodeResult:
        query = parse_qs(urlsplit(self.callbacks[-1]).query)
        if "error" in query:
            raise AuthorizationRefused(query["error"][0])
        return AuthorizationCodeResult(
            code=query["code"][0], state=query["state"][0], iss=query.get("iss", [None])[0]
        )

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Client]:
        transport = streamable_http_client(f"{self.gateway.url}/mcp", http_client=self.http)
        async with Client(transport) as client:
            yield client

    async def post_initialize(self) -> httpx2.Response:
        """One raw MCP request through the OAuth provider (for answers the Client hides)."""
        return await self.http.post(f"{self.gateway.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS)

    @property
    def access_token(self) -> str:
        assert self.storage.tokens is not None
        return self.storage.tokens.access_token

    def flow_between(self, issuer_origin: str, issuer_label: str) -> list[str]:
        """The requests the SDK made, as `request_flow` names them."""
        return request_flow(
            (line.split(" ", 1) for line in self.requests),
            issuer_origin,
            issuer_label,
            registration=("/register", "/reg"),
        )

    async def aclose(self) -> None:
        await self.http.aclose()


def request_flow(
    requests: Iterable[Sequence[str]],
    issuer_origin: str,
    issuer_label: str,
    *,
    registration: tuple[str, ...] = ("/register",),
) -> list[str]:
    """``(method, url)`` pairs as ``kind@host`` (mcp, prm, asm, register, token).

    The host is ``issuer_label`` for requests to ``issuer_origin``, ``gg``
    for graphgate; repeated steps (metadata fallbacks) collapse into one. A
    POST to a path ending in one of ``registration`` (or Keycloak's
    ``clients-registrations``) is a registration.
    """
    kinds: list[str] = []
    for method, url in requests:
        path = urlsplit(url).path
        if path == "/mcp":
            kind = "mcp"
        elif "oauth-protected-resource" in path:
            kind = "prm"
        elif "oauth-authorization-server" in path or "openid-configuration" in path:
            kind = "asm"
        elif method == "POST" and (path.endswith(registration) or "clients-registrations" in path):
            kind = "register"
        elif path.endswith("/token"):
            kind = "token"
        else:
            kind = path
        entry = f"{kind}@{issuer_label if origin(url) == issuer_origin else 'gg'}"
        if not kinds or kinds[-1] != entry:
            kinds.append(entry)
    return kinds
