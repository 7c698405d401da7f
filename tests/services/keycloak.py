"""Session fixture: a real Keycloak with the graphgate realm from deploy/keycloak/realm.json.

Started once per test session (a cold start, download and Quarkus build
included, takes about a minute on two cores; later sessions reuse the cached
build) and stopped at the end. The realm's audience is templated to the
``public_url`` reserved here for a graphgate server under test: a test that
starts graphgate against this Keycloak must serve at ``keycloak.public_url``
so that ``<public_url>/mcp`` is the token audience.

The demo users, their passwords and their claims:

    alice  tenants ["acme"]            bob   tenants ["globex"]
    carol  tenants ["acme:write"]      dana  realm role graphgate-admin
    erin   no tenants                  frank tenants ["initech"] (not catalogued)

Each password is ``<username>-password``.

Keycloak runs with ``--features=cimd`` (OAuth Client ID Metadata Documents,
experimental in 26.7) and trusts a throw-away test CA
(``--truststore-paths``, fixture ``keycloak_certificates``), so that the CIMD
tests can have it fetch client metadata documents from an https server on
loopback (tests/services/cimd.py). Both are on for the whole session rather
than in a second Keycloak, which would cost another ~25 s start (plus a
~20 s Quarkus re-augmentation on a cold cache): the feature adds
``client_id_metadata_document_supported`` (and ``none`` among the token
endpoint's auth methods) to the discovery document, but does nothing else
until a realm has a client policy with the CIMD executor, and only the CIMD
tests add one, for their own duration. The harness caches the Quarkus build
per feature set, so the flag costs nothing after the first run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from scripts.keycloak import (
    DEFAULT_CACHE,
    KEYCLOAK_VERSION,
    KeycloakUnavailable,
    running_keycloak,
)

from tests.services._common import free_port, service_unavailable
from tests.services.tls import LoopbackCertificates

DEMO_USERS = ("alice", "bob", "carol", "dana", "erin", "frank")
# Ready in 25-60 s on an idle two-core machine; a machine busy with other
# services may need longer, hence the knob.
READY_TIMEOUT = float(os.environ.get("GRAPHGATE_TEST_KEYCLOAK_TIMEOUT", "180"))
CLIENT_ID = "graphgate-mcp"
# Build-time feature flags of the session's Keycloak (see the module doc).
FEATURES = ("cimd",)


def demo_password(username: str) -> str:
    return f"{username}-password"


@dataclass(frozen=True, slots=True)
class KeycloakService:
    """Where the test Keycloak listens, how to administer it, and its graphgate realm."""

    base_url: str
    realm: str
    admin_user: str
    admin_password: str
    public_url: str
    version: str
    started_in: float
    client_id: str = CLIENT_ID
    features: tuple[str, ...] = ()
    trusted_ca: Path | None = None

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def resource_url(self) -> str:
        """The audience Keycloak puts in tokens: graphgate's RFC 9728 resource."""
        return f"{self.public_url}/mcp"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    @property
    def registration_endpoint(self) -> str:
        return f"{self.issuer}/clients-registrations/openid-connect"

    def admin_url(self, realm: str | None = None) -> str:
        return f"{self.base_url}/admin/realms/{realm or self.realm}"


class AdminToken:
    """A master-realm admin token for Keycloak's admin REST API, renewed before it expires."""

    def __init__(self, keycloak: KeycloakService, http: httpx.AsyncClient) -> None:
        self.keycloak = keycloak
        self.http = http
        self._token = ""
        self._until = 0.0

    async def headers(self) -> dict[str, str]:
        if time.monotonic() >= self._until:
            response = await self.http.post(
                f"{self.keycloak.base_url}/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": self.keycloak.admin_user,
                    "password": self.keycloak.admin_password,
                },
            )
            response.raise_for_status()
            body = response.json()
            self._token = str(body["access_token"])
            self._until = time.monotonic() + float(body["expires_in"]) - 10
        return {"Authorization": f"Bearer {self._token}"}


@pytest.fixture(scope="session")
def keycloak_certificates(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificates:
    """The test CA Keycloak trusts, and a certificate it signed for 127.0.0.1."""
    return LoopbackCertificates.create(tmp_path_factory.mktemp("keycloak-tls"))


@pytest.fixture(scope="session")
def keycloak(keycloak_certificates: LoopbackCertificates) -> Iterator[KeycloakService]:
    """A running Keycloak for the whole session; skipped locally, failed in CI, if absent."""
    public_url = f"http://127.0.0.1:{free_port()}"
    try:
        with running_keycloak(
            resource_url=f"{public_url}/mcp",
            cache_dir=DEFAULT_CACHE,
            ready_timeout=READY_TIMEOUT,
            features=FEATURES,
            truststore_paths=[keycloak_certificates.ca_file],
        ) as instance:
            yield KeycloakService(
                base_url=instance.base_url,
                realm=instance.realm,
                admin_user=instance.admin_user,
                admin_password=instance.admin_password,
                public_url=public_url,
                version=KEYCLOAK_VERSION,
                started_in=instance.started_in,
                features=instance.features,
                trusted_ca=keycloak_certificates.ca_file,
            )
    except KeycloakUnavailable as exc:
        service_unavailable(f"Keycloak {KEYCLOAK_VERSION}: {exc}")
