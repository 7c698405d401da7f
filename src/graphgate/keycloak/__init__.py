"""Bring a Keycloak realm to the state graphgate expects, idempotently.

``graphgate keycloak configure`` does with the admin REST API what importing
``deploy/keycloak/realm.json`` does for a new realm, for realms that already
exist and hold users: it reads each piece, compares it with what graphgate
needs and writes only the differences, so a second run changes nothing and
says so. Pieces an operator may have extended (redirect URIs, trusted hosts,
allowed scopes, other mappers) are only ever added to, never pruned.

What graphgate needs from the realm, and why:

- client scope ``mcp:tools`` (in the token's ``scope``) carrying three mappers:
  the audience = graphgate's resource URL (RFC 8707/9068: graphgate refuses
  tokens minted for anyone else), the ``tenants`` user attribute as a JSON
  array, and the realm roles as ``realm_access.roles`` (the admin role);
- realm roles ``graphgate-admin`` and ``graphgate-user``. Keycloak applies a
  client scope that has role scope mappings only to users holding one of
  those roles, and clients registered anonymously get "full scope disabled",
  so ``mcp:tools`` maps both roles and every user gets ``graphgate-user``
  through the realm's default roles;
- a multivalued ``tenants`` attribute declared in the user profile: Keycloak
  24+ drops attributes the profile does not declare;
- a public client ``graphgate-mcp``: authorization code with PKCE S256,
  loopback redirect URIs on any port (RFC 8252 §7.3), no password grant;
  and its twin ``graphgate-shim`` for ``registration = shim``, whose
  redirects leave out RFC 9207 ``iss`` (the shim names graphgate as the
  issuer, so Keycloak's ``iss`` would fail strict clients' check);
- ``mcp:tools`` as a realm default scope, so clients registered through RFC
  7591 get it; an anonymous registration policy that admits the scopes MCP
  clients ask for; and client policies that make PKCE S256 mandatory for
  every client registered that way and hold its redirect URIs to loopback.
  The redirect check is a client profile (``secure-client-uris-pattern``)
  rather than Keycloak's "Trusted Hosts" registration policy, which also
  checks ``client_uri`` against its hosts and so refuses mcp-remote (whose
  ``client_uri`` is its GitHub page); ``configure`` deletes that policy once
  the profile is in place, keeping the hosts it trusted as redirect patterns;
- optionally (``cimd_trusted_domains``), a client profile and policy that let
  MCP clients use an https URL on those hosts as their ``client_id``: OAuth
  Client ID Metadata Documents, which Keycloak 26.7 offers only when started
  with ``--features=cimd`` (experimental).
"""

from graphgate.errors import KeycloakAdminError
from graphgate.keycloak.configure import (
    Change,
    KeycloakConfigurator,
    configure_keycloak,
)
from graphgate.keycloak.realm import (
    ADMIN_ROLE,
    CIMD_POLICY,
    CIMD_PROFILE,
    CLIENT_ID,
    LOOPBACK_REDIRECT_PATTERN,
    LOOPBACK_REDIRECTS,
    MCP_SCOPE,
    REDIRECTS_POLICY,
    REDIRECTS_PROFILE,
    SHIM_CLIENT_ID,
    USER_ROLE,
    cimd_policy,
    cimd_profile,
    tenants_attribute,
    validate_cimd_domains,
)

__all__ = [
    "ADMIN_ROLE",
    "CIMD_POLICY",
    "CIMD_PROFILE",
    "CLIENT_ID",
    "LOOPBACK_REDIRECTS",
    "LOOPBACK_REDIRECT_PATTERN",
    "MCP_SCOPE",
    "REDIRECTS_POLICY",
    "REDIRECTS_PROFILE",
    "SHIM_CLIENT_ID",
    "USER_ROLE",
    "Change",
    "KeycloakAdminError",
    "KeycloakConfigurator",
    "cimd_policy",
    "cimd_profile",
    "configure_keycloak",
    "tenants_attribute",
    "validate_cimd_domains",
]
