"""What graphgate needs from a Keycloak realm, as admin REST API representations.

The pieces `configure.KeycloakConfigurator` compares with a realm and writes,
and the comparison rules: a piece matches when every key graphgate sets has
graphgate's value; lists an operator may extend are only ever added to.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from graphgate.config import validate_tenant_name

MCP_SCOPE = "mcp:tools"
CLIENT_ID = "graphgate-mcp"
SHIM_CLIENT_ID = "graphgate-shim"
ADMIN_ROLE = "graphgate-admin"
USER_ROLE = "graphgate-user"
TENANTS_ATTRIBUTE = "tenants"
EXCLUDE_ISS_ATTRIBUTE = "exclude.issuer.from.auth.response"
LOOPBACK_REDIRECTS = ("http://127.0.0.1/*", "http://localhost/*")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
CLIENT_DEFAULT_SCOPES = ("basic", "web-origins", "acr", "roles", "profile", "email", MCP_SCOPE)
CLIENT_OPTIONAL_SCOPES = ("offline_access",)
REGISTRATION_SCOPES = (
    MCP_SCOPE,
    "offline_access",
    "basic",
    "roles",
    "profile",
    "email",
    "web-origins",
    "acr",
)
POLICY_TYPE = "org.keycloak.services.clientregistration.policy.ClientRegistrationPolicy"
_TENANT_ENTRY = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(:read|:write)?$"


# -- the desired pieces ------------------------------------------------------------------


def tenants_attribute(tenants: Sequence[str] = ()) -> dict[str, Any]:
    """The user-profile declaration of ``tenants``; with a catalog, a pick list.

    Only admins see or edit it: a user who could edit their own tenants
    could grant themselves any database.
    """
    validations: dict[str, Any] = {
        "length": {"max": 80},
        "pattern": {
            "pattern": _TENANT_ENTRY,
            "error-message": "a tenant name, optionally followed by :read or :write",
        },
    }
    annotations = {"inputHelperTextBefore": "One entry per tenant: acme (read) or acme:write"}
    if tenants:
        names = [validate_tenant_name(name) for name in tenants]
        validations["options"] = {
            "options": [entry for name in names for entry in (name, f"{name}:write")]
        }
        annotations["inputType"] = "multiselect"
    return {
        "name": TENANTS_ATTRIBUTE,
        "displayName": "graphgate tenants",
        "multivalued": True,
        "annotations": annotations,
        "permissions": {"view": ["admin"], "edit": ["admin"]},
        "validations": validations,
    }


def mcp_scope() -> dict[str, Any]:
    return {
        "name": MCP_SCOPE,
        "description": "graphgate: call the MCP tools; adds graphgate's audience and the "
        "tenants claim",
        "protocol": "openid-connect",
        "attributes": {
            "include.in.token.scope": "true",
            "display.on.consent.screen": "true",
            "consent.screen.text": "Use graphgate's graph database tools on your behalf",
        },
    }


def _token_claim(**config: str) -> dict[str, str]:
    return {
        "access.token.claim": "true",
        "introspection.token.claim": "true",
        "id.token.claim": "false",
        "lightweight.claim": "false",
        **config,
    }


def mcp_mappers(audience: str) -> list[dict[str, Any]]:
    def mapper(name: str, kind: str, config: dict[str, str]) -> dict[str, Any]:
        return {
            "name": name,
            "protocol": "openid-connect",
            "protocolMapper": kind,
            "consentRequired": False,
            "config": config,
        }

    return [
        mapper(
            "graphgate audience",
            "oidc-audience-mapper",
            _token_claim(**{"included.custom.audience": audience}),
        ),
        mapper(
            "graphgate roles",
            "oidc-usermodel-realm-role-mapper",
            _token_claim(
                **{
                    "claim.name": "realm_access.roles",
                    "jsonType.label": "String",
                    "multivalued": "true",
                    "userinfo.token.claim": "false",
                }
            ),
        ),
        mapper(
            "tenants",
            "oidc-usermodel-attribute-mapper",
            _token_claim(
                **{
                    "user.attribute": TENANTS_ATTRIBUTE,
                    "claim.name": "tenants",
                    "jsonType.label": "String",
                    "multivalued": "true",
                    "aggregate.attrs": "false",
                    "userinfo.token.claim": "false",
                }
            ),
        ),
    ]


def mcp_client() -> dict[str, Any]:
    return {
        "clientId": CLIENT_ID,
        "name": "graphgate MCP clients",
        "description": "Public client for MCP clients (authorization code + PKCE S256, "
        "loopback redirects on any port)",
        **_public_client_settings(),
    }


def shim_client() -> dict[str, Any]:
    """``graphgate-mcp`` without RFC 9207 ``iss`` in its redirects, for ``registration = shim``.

    The shim presents graphgate as the issuer while Keycloak answers the
    authorization request itself, so Keycloak's ``iss`` (naming Keycloak) fails
    the check strict clients make (the MCP Python SDK: "Authorization response
    iss mismatch"). Leaving ``iss`` out is the fix, and the shim's mirrored
    metadata does not announce it. It is a client of its own so that
    ``graphgate-mcp``, used directly by clients that also read Keycloak's
    metadata (which announces ``iss``), keeps RFC 9207's mix-up protection.
    """
    desired = {
        "clientId": SHIM_CLIENT_ID,
        "name": "graphgate MCP clients (registration = shim)",
        "description": "Public client for MCP clients behind graphgate's registration shim: "
        "like graphgate-mcp, but redirects carry no iss, since the shim names graphgate as "
        "the issuer",
        **_public_client_settings(),
    }
    desired["attributes"] = {**desired["attributes"], EXCLUDE_ISS_ATTRIBUTE: "true"}
    return desired


def mcp_clients() -> list[dict[str, Any]]:
    return [mcp_client(), shim_client()]


def _public_client_settings() -> dict[str, Any]:
    return {
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": True,
        "standardFlowEnabled": True,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "serviceAccountsEnabled": False,
        "fullScopeAllowed": False,
        "attributes": {
            "pkce.code.challenge.method": "S256",
            "oauth2.device.authorization.grant.enabled": "false",
        },
    }


PKCE_PROFILE = "graphgate-pkce"
PKCE_POLICY = "graphgate-pkce-for-registered-clients"


def pkce_profile() -> dict[str, Any]:
    return {
        "name": PKCE_PROFILE,
        "description": "PKCE with S256 for clients that register themselves (OAuth 2.1 and "
        "MCP require PKCE)",
        "executors": [{"executor": "pkce-enforcer", "configuration": {"auto-configure": True}}],
    }


def pkce_policy() -> dict[str, Any]:
    # Matching on the registration event, not on "any client": the executor
    # stamps pkce.code.challenge.method=S256 on each new client, and existing
    # clients of a shared realm are left as they are.
    return {
        "name": PKCE_POLICY,
        "description": "Clients registered anonymously through RFC 7591 get PKCE S256 required",
        "enabled": True,
        "conditions": [
            {
                "condition": "client-updater-context",
                "configuration": {"update-client-source": ["ByAnonymous"]},
            }
        ],
        "profiles": [PKCE_PROFILE],
    }


REDIRECTS_PROFILE = "graphgate-registered-redirects"
REDIRECTS_POLICY = "graphgate-redirects-for-registered-clients"
# Where a self-registered client may have Keycloak send the user (and so the
# code): loopback only, on any port and path (RFC 8252 §7.3), http or https.
# Java's Matcher.matches() must consume the whole URI, and the host must be
# followed by a port, a path or the end, so "http://localhost.evil.example/",
# "http://localhost@evil.example/" and Keycloak's prefix wildcard
# "http://localhost*" do not match.
LOOPBACK_REDIRECT_PATTERN = r"^https?://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?(/[^#\s]*)?$"
# Every URL of a client representation that Keycloak sends a browser or a
# request to. client_uri (Keycloak's baseUrl), logo_uri, policy_uri and tos_uri
# are only shown as links, and MCP clients put their project pages there.
REDIRECT_CHECKED_FIELDS = (
    "redirectUris",
    "rootUrl",
    "adminUrl",
    "postLogoutRedirectUris",
    "backchannelLogoutUrl",
    "jwksUri",
    "requestUris",
)


def redirects_profile(patterns: Sequence[str] = (LOOPBACK_REDIRECT_PATTERN,)) -> dict[str, Any]:
    """The client profile that holds self-registered clients' URLs to ``patterns``.

    Keycloak's "Trusted Hosts" registration policy cannot do this: it checks
    the redirect URIs and ``client_uri`` against one host list, so loopback
    only refuses mcp-remote (its ``client_uri`` is its GitHub page), and adding
    such hosts would admit them as redirect hosts too. The executor
    ``secure-client-uris-pattern`` checks the fields that matter and leaves
    the informational ones alone.
    """
    return {
        "name": REDIRECTS_PROFILE,
        "description": "Clients that register themselves may only redirect to loopback "
        "(RFC 8252): each redirect, logout and fetched URL must match one of the patterns",
        "executors": [
            {
                "executor": "secure-client-uris-pattern",
                "configuration": {
                    "allowed-patterns": list(patterns),
                    "client-uri-fields": list(REDIRECT_CHECKED_FIELDS),
                },
            }
        ],
    }


def redirects_policy(*, enabled: bool = True) -> dict[str, Any]:
    """The client policy applying `redirects_profile` to clients that register themselves.

    Off (``enabled``) in realms with Client ID Metadata Documents: Keycloak
    26.7 also runs it when its CIMD executor creates a client, a "register"
    its ``secure-client-uris-pattern`` executor refuses ("not allowed input
    format"), and no condition tells the two apart. Such realms hold
    registrations to loopback with `trusted_hosts_config` instead.
    """
    # ByRegistrationAccessToken too: a client registered with loopback URIs must
    # not swap them for others through its registration access token (RFC 7592).
    return {
        "name": REDIRECTS_POLICY,
        "description": "Clients registered or updated through RFC 7591/7592 may only "
        "redirect to loopback, or to what the profile's patterns add",
        "enabled": enabled,
        "conditions": [
            {
                "condition": "client-updater-context",
                "configuration": {
                    "update-client-source": ["ByAnonymous", "ByRegistrationAccessToken"]
                },
            }
        ],
        "profiles": [REDIRECTS_PROFILE],
    }


def anonymous_policy(
    realm_id: str, provider: str, name: str, config: Mapping[str, list[str]]
) -> dict[str, Any]:
    """A new anonymous client-registration policy component of realm ``realm_id``."""
    return {
        "name": name,
        "providerId": provider,
        "providerType": POLICY_TYPE,
        "parentId": realm_id,
        "subType": "anonymous",
        "config": dict(config),
    }


def trusted_hosts_config(hosts: Sequence[str] | None) -> dict[str, list[str]]:
    """Keycloak's anonymous "Trusted Hosts" policy, as realms with CIMD still need it.

    Redirect, root, base (``client_uri``) and admin URLs on loopback or on
    ``hosts``, from any requesting host: MCP clients register from the user's
    machine, wherever it is; what must be local is where the code goes. It
    refuses mcp-remote, whose ``client_uri`` is its GitHub page.
    """
    return {
        "trusted-hosts": union(hosts, LOOPBACK_HOSTS),
        "host-sending-registration-request-must-match": ["false"],
        "client-uris-must-match": ["true"],
    }


def host_patterns(hosts: Sequence[str]) -> list[str]:
    """Redirect patterns for hosts an operator trusted in Keycloak's "Trusted Hosts" policy.

    ``configure`` replaces that policy with `redirects_profile`; a host trusted
    there (``vscode.dev``, ``*.example.com``) stays a permitted https redirect
    host. Loopback hosts are already covered.
    """
    patterns = []
    for entry in hosts:
        host = entry.strip().lower()
        if host in LOOPBACK_HOSTS or not _TRUSTED_DOMAIN.match(host):
            continue
        if host.startswith("*."):
            name = r"([a-z0-9-]+\.)*" + re.escape(host[2:])
        else:
            name = re.escape(host)
        patterns.append(f"^https://{name}(:[0-9]{{1,5}})?(/[^#\\s]*)?$")
    return patterns


CIMD_PROFILE = "graphgate-cimd"
CIMD_POLICY = "graphgate-cimd-clients"
_TRUSTED_DOMAIN = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


def validate_cimd_domains(domains: Sequence[str]) -> list[str]:
    """Host names (``tools.example.com``), wildcards (``*.example.com``) or IPv4 addresses."""
    names = [domain.strip().lower() for domain in domains if domain.strip()]
    for name in names:
        if not _TRUSTED_DOMAIN.match(name):
            raise ValueError(f"{name!r} is not a host name, *.domain or IPv4 address")
    return list(dict.fromkeys(names))


def cimd_profile(trusted_domains: Sequence[str]) -> dict[str, Any]:
    """The client profile whose executor fetches and checks Client ID Metadata Documents.

    Keycloak's ``client-id-metadata-document`` executor (feature ``cimd``)
    runs on the authorization request: it accepts an https ``client_id`` on
    one of ``trusted_domains``, fetches the document at that URL, checks it
    (its ``client_id`` equals the URL, the request's ``redirect_uri`` is one of
    its ``redirect_uris``, no shared-secret authentication, and every URL in
    it on a trusted domain too) and creates or refreshes a client with that
    ``client_id``. Plain http client ids stay refused. The executor's one
    domain list also bounds the documents' ``redirect_uris``, so the loopback
    hosts native MCP clients redirect to (RFC 8252) are added to it; which
    client ids it handles at all is decided by `cimd_policy`'s condition,
    which lists ``trusted_domains`` alone.
    """
    domains = validate_cimd_domains([*trusted_domains, *LOOPBACK_HOSTS])
    return {
        "name": CIMD_PROFILE,
        "description": "OAuth Client ID Metadata Documents: an https client_id URL on a "
        "trusted domain is fetched and becomes a public client (Keycloak feature cimd)",
        "executors": [
            {
                "executor": "client-id-metadata-document",
                "configuration": {
                    "cimd-allow-http-scheme": False,
                    "cimd-allow-permitted-domains": domains,
                    "cimd-restrict-same-domain": False,
                    "only-allow-confidential-client": False,
                },
            }
        ],
    }


def cimd_policy(trusted_domains: Sequence[str]) -> dict[str, Any]:
    """The client policy applying `cimd_profile` to https client ids on those domains."""
    return {
        "name": CIMD_POLICY,
        "description": "Authorization requests whose client_id is an https URL on a trusted "
        "domain use Client ID Metadata Documents",
        "enabled": True,
        "conditions": [
            {
                "condition": "client-id-uri",
                "configuration": {
                    "client-id-uri-scheme": ["https"],
                    "client-id-uri-allow-permitted-domains": validate_cimd_domains(trusted_domains),
                },
            }
        ],
        "profiles": [CIMD_PROFILE],
    }


def realm_roles() -> dict[str, str]:
    return {
        ADMIN_ROLE: "graphgate: every catalogued tenant, with write where the server allows writes",
        USER_ROLE: "graphgate: may obtain the mcp:tools scope (every user, through the "
        "default roles)",
    }


# -- comparison --------------------------------------------------------------------------


def matches(desired: Any, current: Any) -> bool:
    """Desired is contained in current: dict keys recursively, anything else equal."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(
            matches(value, current.get(key)) for key, value in desired.items()
        )
    return bool(desired == current)


def differing_keys(desired: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return [key for key, value in desired.items() if not matches(value, current.get(key))]


def union(current: Sequence[str] | None, required: Sequence[str]) -> list[str]:
    kept = list(current or [])
    return kept + [item for item in required if item not in kept]


def checked_public_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"public URL {value!r} is not an http(s) URL without query or fragment")
    return value.rstrip("/")
