"""OAuth Client ID Metadata Documents (CIMD) for the Keycloak end-to-end tests.

With CIMD (draft-ietf-oauth-client-id-metadata-document) an MCP client does
not register: its ``client_id`` is an https URL, and the authorization server
fetches the client's metadata from that URL when the client first sends a
user to it. Keycloak 26.7 implements it behind ``--features=cimd``
(experimental) as a client-policy executor, ``client-id-metadata-document``,
which a realm turns on for chosen ``client_id`` URLs with a client policy
(`graphgate.keycloak.cimd_profile` and `cimd_policy`, which
``graphgate keycloak configure --cimd-trusted-domains`` also writes).

The session's Keycloak runs with the feature on and trusts the test CA
(tests/services/keycloak.py). Here:

* `MetadataDocuments` (fixture ``cimd_documents``): a small HTTPS server on
  127.0.0.1, certificate from that CA, serving the documents a test publishes
  in it (any other path is a 404) and recording every request, so a test sees
  whether and when Keycloak fetched a document.
* ``cimd_realm``: the realm's CIMD client profile and policy for client ids
  on ``127.0.0.1``, for one test; afterwards the realm's client policies are
  put back as they were and the clients Keycloak made from documents deleted.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import pytest_asyncio

from graphgate.keycloak import cimd_policy, cimd_profile
from graphgate.keycloak.realm import (
    POLICY_TYPE,
    REDIRECTS_POLICY,
    anonymous_policy,
    redirects_policy,
    trusted_hosts_config,
)
from tests.services.keycloak import AdminToken, KeycloakService
from tests.services.tls import LOOPBACK_HOST, LoopbackCertificates

# What Keycloak 26.7.3's executor says (AbstractClientIdMetadataDocumentExecutor): its
# authorization endpoint shows the text on an error page, HTTP 400, error invalid_request.
ERR_FETCH_FAILED = "Client Metadata fetch failed"
ERR_CLIENT_ID_MISMATCH = (
    "Invalid Client Metadata: client_id property does not exactly match client_id parameter."
)
ERR_DOMAIN_NOT_ALLOWED = "Invalid Client ID: domain not allowed."
# The attribute Keycloak's persistent CIMD provider keeps on the clients it made.
CACHE_EXPIRY_ATTRIBUTE = "cimd.cache.expiry.time.in.sec"
# A native app's document cannot know the port it will listen on: Keycloak, like
# RFC 8252 §7.3 asks, ignores the port of loopback redirect URIs when matching.
LOOPBACK_REDIRECT = f"http://{LOOPBACK_HOST}/callback"


def client_metadata(
    client_id: str,
    redirect_uris: list[str] | None = None,
    client_name: str = "graphgate e2e (CIMD)",
) -> dict[str, Any]:
    """A public native client's metadata document (draft-ietf-oauth-client-id-metadata-document)."""
    return {
        "client_id": client_id,
        "client_name": client_name,
        "redirect_uris": redirect_uris or [LOOPBACK_REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }


# -- the documents' server ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetch:
    """One request the document server answered."""

    path: str
    status: int
    user_agent: str


@dataclass
class MetadataDocuments:
    """An HTTPS server on 127.0.0.1 serving the client metadata documents tests publish."""

    certificates: LoopbackCertificates
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetches: list[Fetch] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def origin(self) -> str:
        assert self._server is not None, "not serving"
        return f"https://{LOOPBACK_HOST}:{self._server.server_address[1]}"

    def new_client_id(self, name: str) -> str:
        """A fresh URL on this server (Keycloak caches what it fetched per client id)."""
        return f"{self.origin}/clients/{name}-{uuid.uuid4().hex[:8]}.json"

    def publish(self, client_id: str, document: dict[str, Any]) -> None:
        """Serve ``document`` at ``client_id``, a URL of this server (127.0.0.1 or localhost)."""
        path = "/" + client_id.split("://", 1)[-1].split("/", 1)[-1]
        assert client_id.replace("//localhost:", f"//{LOOPBACK_HOST}:") == self.origin + path
        with self._lock:
            self.documents[path] = document

    def fetched(self, client_id: str) -> list[Fetch]:
        path = "/" + client_id.split("://", 1)[-1].split("/", 1)[-1]
        with self._lock:
            return [fetch for fetch in self.fetches if fetch.path == path]

    def _answer(self, path: str, user_agent: str) -> tuple[int, bytes]:
        with self._lock:
            document = self.documents.get(path)
            status = 404 if document is None else 200
            self.fetches.append(Fetch(path, status, user_agent))
        if document is None:
            return status, b'{"error": "not_found"}'
        return status, json.dumps(document).encode()

    def start(self) -> None:
        documents = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = documents._answer(
                    self.path.split("?", 1)[0], self.headers.get("user-agent", "")
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=300")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((LOOPBACK_HOST, 0), Handler)
        server.daemon_threads = True
        server.socket = self.certificates.server_context().wrap_socket(
            server.socket, server_side=True
        )
        self._server = server
        threading.Thread(target=server.serve_forever, name="cimd-documents", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @classmethod
    @contextlib.contextmanager
    def serving(cls, certificates: LoopbackCertificates) -> Iterator[MetadataDocuments]:
        documents = cls(certificates)
        documents.start()
        try:
            yield documents
        finally:
            documents.stop()


@pytest.fixture(scope="session")
def cimd_documents(
    keycloak_certificates: LoopbackCertificates,
) -> Iterator[MetadataDocuments]:
    with MetadataDocuments.serving(keycloak_certificates) as documents:
        yield documents


# -- the realm --------------------------------------------------------------------------------


@dataclass
class CimdRealm:
    """The session's realm with CIMD on for https://127.0.0.1 client ids, and its admin API."""

    keycloak: KeycloakService
    documents: MetadataDocuments
    http: httpx.AsyncClient
    token: AdminToken

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.keycloak.admin_url()}{path}"
        response = await self.http.request(
            method, url, json=body, headers=await self.token.headers()
        )
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        return response.json() if response.content else None

    async def client(self, client_id: str) -> dict[str, Any] | None:
        """Keycloak's client with that ``clientId``, if there is one."""
        found = await self.admin("GET", f"/clients?clientId={client_id}")
        return dict(found[0]) if found else None

    async def document_clients(self) -> list[dict[str, Any]]:
        """The clients Keycloak made from documents on `MetadataDocuments`."""
        clients = await self.admin("GET", "/clients?first=0&max=1000")
        return [c for c in clients if str(c["clientId"]).startswith(self.documents.origin)]


@pytest_asyncio.fixture(loop_scope="session")
async def cimd_realm(
    keycloak: KeycloakService, cimd_documents: MetadataDocuments
) -> AsyncIterator[CimdRealm]:
    """CIMD for ``https://127.0.0.1`` client ids in the session's realm, for one test."""
    async with httpx.AsyncClient(timeout=30) as http:
        realm = CimdRealm(keycloak, cimd_documents, http, AdminToken(keycloak, http))
        profiles = await realm.admin("GET", "/client-policies/profiles")
        policies = await realm.admin("GET", "/client-policies/policies")
        trusted = [LOOPBACK_HOST]
        await realm.admin(
            "PUT",
            "/client-policies/profiles",
            {**profiles, "profiles": [*profiles["profiles"], cimd_profile(trusted)]},
        )
        # As `graphgate keycloak configure --cimd-trusted-domains` leaves it: the
        # loopback redirect policy off (Keycloak would run it on the clients CIMD
        # makes, and refuse them), Trusted Hosts holding registrations instead.
        others = [
            redirects_policy(enabled=False) if entry["name"] == REDIRECTS_POLICY else entry
            for entry in policies["policies"]
        ]
        await realm.admin(
            "PUT",
            "/client-policies/policies",
            {**policies, "policies": [*others, cimd_policy(trusted)]},
        )
        realm_id = (await realm.admin("GET", ""))["id"]
        await realm.admin(
            "POST",
            "/components",
            anonymous_policy(
                realm_id, "trusted-hosts", "Trusted Hosts", trusted_hosts_config(None)
            ),
        )
        try:
            yield realm
        finally:
            components = await realm.admin("GET", f"/components?type={POLICY_TYPE}")
            for component in components:
                if component["providerId"] == "trusted-hosts":
                    await realm.admin("DELETE", f"/components/{component['id']}")
            await realm.admin("PUT", "/client-policies/policies", policies)
            await realm.admin("PUT", "/client-policies/profiles", profiles)
            for client in await realm.document_clients():
                await realm.admin("DELETE", f"/clients/{client['id']}")
