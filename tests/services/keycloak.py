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
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scripts.keycloak import (
    DEFAULT_CACHE,
    KEYCLOAK_VERSION,
    KeycloakUnavailable,
    running_keycloak,
)

from tests.services._common import free_port, service_unavailable

DEMO_USERS = ("alice", "bob", "carol", "dana", "erin", "frank")
# Ready in 25-60 s on an idle two-core machine; a machine busy with other
# services may need longer, hence the knob.
READY_TIMEOUT = float(os.environ.get("GRAPHGATE_TEST_KEYCLOAK_TIMEOUT", "180"))
CLIENT_ID = "graphgate-mcp"


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


@pytest.fixture(scope="session")
def keycloak() -> Iterator[KeycloakService]:
    """A running Keycloak for the whole session; skipped locally, failed in CI, if absent."""
    public_url = f"http://127.0.0.1:{free_port()}"
    try:
        with running_keycloak(
            resource_url=f"{public_url}/mcp", cache_dir=DEFAULT_CACHE, ready_timeout=READY_TIMEOUT
        ) as instance:
            yield KeycloakService(
                base_url=instance.base_url,
                realm=instance.realm,
                admin_user=instance.admin_user,
                admin_password=instance.admin_password,
                public_url=public_url,
                version=KEYCLOAK_VERSION,
                started_in=instance.started_in,
            )
    except KeycloakUnavailable as exc:
        service_unavailable(f"Keycloak {KEYCLOAK_VERSION}: {exc}")
