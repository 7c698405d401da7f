"""The reconciler: reads each piece of a realm, writes only the differences.

See the package docstring for what graphgate needs and why; `realm` holds the
desired pieces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from graphgate.config import LOOPBACK_NAMES
from graphgate.errors import KeycloakAdminError
from graphgate.keycloak.realm import (
    ADMIN_ROLE,
    CIMD_POLICY,
    CLIENT_DEFAULT_SCOPES,
    CLIENT_ID,
    CLIENT_OPTIONAL_SCOPES,
    LOOPBACK_REDIRECT_PATTERN,
    LOOPBACK_REDIRECTS,
    MCP_SCOPE,
    POLICY_TYPE,
    REDIRECTS_PROFILE,
    REGISTRATION_SCOPES,
    TENANTS_ATTRIBUTE,
    USER_ROLE,
    anonymous_policy,
    checked_public_url,
    cimd_policy,
    cimd_profile,
    differing_keys,
    host_patterns,
    matches,
    mcp_clients,
    mcp_mappers,
    mcp_scope,
    pkce_policy,
    pkce_profile,
    realm_roles,
    redirects_policy,
    redirects_profile,
    tenants_attribute,
    trusted_hosts_config,
    union,
    validate_cimd_domains,
)

_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Change:
    """One write made to the realm (or, under ``dry_run``, one that would be)."""

    action: Literal["create", "update", "link", "delete"]
    target: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.action} {self.target}" + (f": {self.detail}" if self.detail else "")


# -- the configurator --------------------------------------------------------------------


class KeycloakConfigurator:
    """Compares one realm with graphgate's needs and writes the differences.

    The HTTP client is passed in (its owner closes it); the admin token is
    fetched from the admin realm's ``admin-cli`` and kept only on this
    instance, never logged. Master-realm admin tokens live 60 s by default,
    so a 401 fetches a new one once.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        base_url: str,
        realm: str,
        admin_user: str,
        admin_password: str,
        public_url: str,
        audience: str | None = None,
        tenants: Sequence[str] = (),
        admin_realm: str = "master",
        dry_run: bool = False,
        cimd_trusted_domains: Sequence[str] = (),
    ) -> None:
        if not realm or "/" in realm:
            raise ValueError(f"realm name {realm!r} is not usable in a URL path")
        self._http = client
        self._base = base_url.rstrip("/")
        self._realm = realm
        self._admin_user = admin_user
        self._admin_password = admin_password
        self._admin_realm = admin_realm
        self._audience = audience or f"{checked_public_url(public_url)}/mcp"
        # registration = proxy: Keycloak redirects back to graphgate itself
        # (a loopback graphgate is already covered by the loopback patterns).
        callback = f"{checked_public_url(public_url)}/auth/callback"
        loopback = urlsplit(callback).hostname in LOOPBACK_NAMES
        self._redirects = [*LOOPBACK_REDIRECTS, *([] if loopback else [callback])]
        self._tenants = list(tenants)
        self._cimd_domains = validate_cimd_domains(cimd_trusted_domains)
        self._dry_run = dry_run
        self._token: str | None = None
        self._changes: list[Change] = []

    # -- HTTP ------------------------------------------------------------------------
    def _login(self) -> str:
        url = f"{self._base}/realms/{quote(self._admin_realm)}/protocol/openid-connect/token"
        response = self._http.post(
            url,
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": self._admin_user,
                "password": self._admin_password,
            },
            timeout=_TIMEOUT,
        )
        if response.status_code != 200:
            raise KeycloakAdminError(
                f"cannot log in to Keycloak at {self._base} as {self._admin_user!r} "
                f"(realm {self._admin_realm}): HTTP {response.status_code}"
            )
        token = response.json().get("access_token")
        if not isinstance(token, str):
            raise KeycloakAdminError("Keycloak's token response carries no access_token")
        return token

    def _call(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        """``path`` is relative to this realm's admin URL; ``None`` for 404 if allowed."""
        return self._request(method, self._realm_url + path, body, missing_ok=missing_ok)

    @property
    def _realm_url(self) -> str:
        return f"{self._base}/admin/realms/{quote(self._realm)}"

    def _send(self, method: str, url: str, body: Any) -> httpx.Response:
        if self._token is None:
            self._token = self._login()
        return self._http.request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=_TIMEOUT,
        )

    def _request(self, method: str, url: str, body: Any = None, *, missing_ok: bool) -> Any:
        response = self._send(method, url, body)
        if response.status_code == 401:  # the admin token expired mid-run
            self._token = None
            response = self._send(method, url, body)
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise KeycloakAdminError(
                f"{method} {url}: HTTP {response.status_code}: {_error_text(response)}"
            )
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _write(self, change: Change, method: str, path: str, body: Any = None) -> None:
        """Record ``change`` and, unless this is a dry run, make it."""
        self._changes.append(change)
        if not self._dry_run:
            url = path if path.startswith("http") else self._realm_url + path
            self._request(method, url, body, missing_ok=False)

    # -- steps -----------------------------------------------------------------------
    def configure(self) -> list[Change]:
        """Apply every step; return what changed (empty when the realm was right)."""
        self._changes = []
        realm = self._ensure_realm()
        if realm is None:  # dry run on a missing realm: everything else is new too
            return list(self._changes)
        if self._cimd_domains:
            self._require_cimd()  # before anything is written
        self._ensure_roles(realm)
        self._ensure_user_profile()
        scope_id = self._ensure_scope()
        if scope_id is not None:
            self._ensure_mappers(scope_id)
            self._ensure_scope_roles(scope_id)
            self._ensure_realm_default_scope(scope_id)
        for client in mcp_clients():
            self._ensure_client(client)
        self._ensure_registration_policies(realm["id"])
        self._ensure_client_policy("profiles", pkce_profile(), "client profile")
        self._ensure_client_policy("policies", pkce_policy(), "client policy")
        if self._cimd_domains:
            self._ensure_client_policy(
                "profiles", cimd_profile(self._cimd_domains), "client profile"
            )
            self._ensure_client_policy("policies", cimd_policy(self._cimd_domains), "client policy")
        self._ensure_redirect_policy(realm["id"])
        return list(self._changes)

    def _ensure_realm(self) -> dict[str, Any] | None:
        realm = self._call("GET", "", missing_ok=True)
        if realm is None:
            self._write(
                Change("create", f"realm {self._realm}"),
                "POST",
                f"{self._base}/admin/realms",
                {"realm": self._realm, "enabled": True},
            )
            if self._dry_run:
                return None
            realm = self._call("GET", "")
        elif not realm.get("enabled", True):
            self._write(
                Change("update", f"realm {self._realm}", "enabled"), "PUT", "", {"enabled": True}
            )
        return dict(realm)

    def _ensure_roles(self, realm: Mapping[str, Any]) -> None:
        for name, description in realm_roles().items():
            role = self._call("GET", f"/roles/{quote(name)}", missing_ok=True)
            if role is None:
                self._write(
                    Change("create", f"realm role {name}"),
                    "POST",
                    "/roles",
                    {"name": name, "description": description},
                )
            elif role.get("description") != description:
                role["description"] = description
                self._write(
                    Change("update", f"realm role {name}", "description"),
                    "PUT",
                    f"/roles-by-id/{role['id']}",
                    role,
                )
        default_role = realm.get("defaultRole", {}).get("name") or f"default-roles-{self._realm}"
        composites = self._call("GET", f"/roles/{quote(default_role)}/composites/realm") or []
        if USER_ROLE not in {role["name"] for role in composites}:
            user_role = self._call("GET", f"/roles/{quote(USER_ROLE)}", missing_ok=True)
            self._write(
                Change("link", f"realm role {USER_ROLE}", f"into {default_role}"),
                "POST",
                f"/roles/{quote(default_role)}/composites",
                [user_role or {"name": USER_ROLE}],
            )

    def _ensure_user_profile(self) -> None:
        profile = self._call("GET", "/users/profile")
        attributes = list(profile.get("attributes", []))
        desired = tenants_attribute(self._tenants)
        current = next((a for a in attributes if a.get("name") == TENANTS_ATTRIBUTE), None)
        if (
            current is not None
            and matches(desired, current)
            and set(current.get("validations", {})) == set(desired["validations"])
        ):
            return
        if current is None:
            attributes.append(desired)
            change = Change("create", "user profile attribute tenants", "multivalued")
        else:
            attributes[attributes.index(current)] = desired
            change = Change("update", "user profile attribute tenants")
        self._write(change, "PUT", "/users/profile", {**profile, "attributes": attributes})

    def _scopes(self) -> dict[str, dict[str, Any]]:
        return {scope["name"]: scope for scope in self._call("GET", "/client-scopes") or []}

    def _ensure_scope(self) -> str | None:
        desired = mcp_scope()
        current = self._scopes().get(MCP_SCOPE)
        if current is None:
            self._write(
                Change("create", f"client scope {MCP_SCOPE}"), "POST", "/client-scopes", desired
            )
            if self._dry_run:
                for mapper in mcp_mappers(self._audience):
                    self._changes.append(Change("create", f"mapper {mapper['name']}"))
                return None
            return str(self._scopes()[MCP_SCOPE]["id"])
        differing = differing_keys(desired, current)
        if differing:
            merged = _merged(current, desired)
            self._write(
                Change("update", f"client scope {MCP_SCOPE}", ", ".join(differing)),
                "PUT",
                f"/client-scopes/{current['id']}",
                merged,
            )
        return str(current["id"])

    def _ensure_mappers(self, scope_id: str) -> None:
        path = f"/client-scopes/{scope_id}/protocol-mappers/models"
        current = {mapper["name"]: mapper for mapper in self._call("GET", path) or []}
        for desired in mcp_mappers(self._audience):
            found = current.get(desired["name"])
            target = f"mapper {desired['name']} of {MCP_SCOPE}"
            if found is None:
                self._write(Change("create", target), "POST", path, desired)
            elif found.get("protocolMapper") != desired["protocolMapper"]:
                raise KeycloakAdminError(
                    f"{target} exists with type {found.get('protocolMapper')}; "
                    f"expected {desired['protocolMapper']}: rename or delete it and rerun"
                )
            elif not matches(desired["config"], found.get("config", {})):
                differing = differing_keys(desired["config"], found.get("config", {}))
                merged = {**found, "config": {**found.get("config", {}), **desired["config"]}}
                self._write(
                    Change("update", target, ", ".join(differing)),
                    "PUT",
                    f"{path}/{found['id']}",
                    merged,
                )

    def _ensure_scope_roles(self, scope_id: str) -> None:
        path = f"/client-scopes/{scope_id}/scope-mappings/realm"
        mapped = {role["name"] for role in self._call("GET", path) or []}
        missing = [name for name in (USER_ROLE, ADMIN_ROLE) if name not in mapped]
        if missing:
            roles = [
                self._call("GET", f"/roles/{quote(name)}", missing_ok=True) or {"name": name}
                for name in missing
            ]
            self._write(
                Change("link", f"realm roles {', '.join(missing)}", f"into {MCP_SCOPE}"),
                "POST",
                path,
                roles,
            )

    def _ensure_realm_default_scope(self, scope_id: str) -> None:
        defaults = {scope["name"] for scope in self._call("GET", "/default-default-client-scopes")}
        if MCP_SCOPE in defaults:
            return
        optional = self._call("GET", "/default-optional-client-scopes") or []
        if MCP_SCOPE in {scope["name"] for scope in optional}:
            self._write(
                Change("update", f"client scope {MCP_SCOPE}", "no longer a realm optional scope"),
                "DELETE",
                f"/default-optional-client-scopes/{scope_id}",
            )
        self._write(
            Change("link", f"client scope {MCP_SCOPE}", "realm default scope"),
            "PUT",
            f"/default-default-client-scopes/{scope_id}",
        )

    def _ensure_client(self, desired: dict[str, Any]) -> None:
        client_id = desired["clientId"]
        # registration = proxy signs in through graphgate-mcp alone; the shim's
        # client serves native clients, on loopback.
        redirects = self._redirects if client_id == CLIENT_ID else list(LOOPBACK_REDIRECTS)
        found = self._call("GET", f"/clients?clientId={quote(client_id)}") or []
        created = not found
        if created:
            body = {
                **desired,
                "redirectUris": redirects,
                "webOrigins": ["+"],
                "defaultClientScopes": [],
                "optionalClientScopes": [],
            }
            self._write(Change("create", f"client {client_id}"), "POST", "/clients", body)
            if self._dry_run:
                return
            found = self._call("GET", f"/clients?clientId={quote(client_id)}")
        current = found[0]
        desired = {
            **desired,
            "redirectUris": union(current.get("redirectUris"), redirects),
            "webOrigins": union(current.get("webOrigins"), ["+"]),
        }
        differing = differing_keys(desired, current)
        if differing and not created:
            merged = _merged(current, desired)
            self._write(
                Change("update", f"client {client_id}", ", ".join(differing)),
                "PUT",
                f"/clients/{current['id']}",
                merged,
            )
        self._ensure_client_scopes(current["id"], client_id)

    def _ensure_client_scopes(self, internal_id: str, client_id: str) -> None:
        scopes = self._scopes()
        base = f"/clients/{internal_id}"
        for kind, wanted, other in (
            ("default", CLIENT_DEFAULT_SCOPES, "optional"),
            ("optional", CLIENT_OPTIONAL_SCOPES, "default"),
        ):
            linked = {scope["name"] for scope in self._call("GET", f"{base}/{kind}-client-scopes")}
            linked_other = {
                scope["name"] for scope in self._call("GET", f"{base}/{other}-client-scopes")
            }
            for name in wanted:
                if name in linked or name not in scopes:
                    continue
                scope_id = scopes[name]["id"]
                if name in linked_other:
                    # Keycloak links a scope to a client one way only.
                    self._write(
                        Change("update", f"client {client_id}", f"{name} no longer {other}"),
                        "DELETE",
                        f"{base}/{other}-client-scopes/{scope_id}",
                    )
                self._write(
                    Change("link", f"client scope {name}", f"{kind} scope of {client_id}"),
                    "PUT",
                    f"{base}/{kind}-client-scopes/{scope_id}",
                )

    def _ensure_registration_policies(self, realm_id: str) -> None:
        components = self._call("GET", f"/components?type={quote(POLICY_TYPE)}") or []
        anonymous = {c["providerId"]: c for c in components if c.get("subType") == "anonymous"}
        wanted: dict[str, tuple[str, dict[str, list[str]]]] = {}
        allowed = anonymous.get("allowed-client-templates", {}).get("config", {})
        wanted["allowed-client-templates"] = (
            "Allowed Client Scopes",
            {
                "allowed-client-scopes": union(
                    allowed.get("allowed-client-scopes"), REGISTRATION_SCOPES
                ),
                "allow-default-scopes": ["true"],
            },
        )
        for provider, (name, config) in wanted.items():
            current = anonymous.get(provider)
            target = f"anonymous registration policy {name!r}"
            if current is None:
                self._write(
                    Change("create", target),
                    "POST",
                    "/components",
                    anonymous_policy(realm_id, provider, name, config),
                )
                continue
            current_config = current.get("config", {})
            differing = [key for key, value in config.items() if current_config.get(key) != value]
            if differing:
                self._write(
                    Change("update", target, ", ".join(differing)),
                    "PUT",
                    f"/components/{current['id']}",
                    {**current, "config": {**current_config, **config}},
                )

    def _ensure_redirect_policy(self, realm_id: str) -> None:
        """Self-registered clients redirect to loopback: a client profile, not Trusted Hosts.

        Keycloak's anonymous "Trusted Hosts" policy checks ``client_uri`` against
        the same hosts as the redirect URIs, which refuses mcp-remote (its
        ``client_uri`` is its GitHub page), and it cannot be told to check the
        redirect URIs alone. So the redirect URIs are held to loopback by
        `redirects_profile` and the Trusted Hosts policy is deleted, after the
        profile is in place, so that registration is never unchecked. Hosts an
        operator had trusted there become https redirect patterns of the
        profile; patterns added to the profile are kept.

        A realm with Client ID Metadata Documents cannot have the profile's
        policy on (see `redirects_policy`): there it is turned off and Trusted
        Hosts kept, or put back, instead.
        """
        policies = (self._call("GET", "/client-policies/policies") or {}).get("policies", [])
        cimd = bool(self._cimd_domains) or CIMD_POLICY in {p.get("name") for p in policies}
        components = self._call("GET", f"/components?type={quote(POLICY_TYPE)}") or []
        trusted = next(
            (
                component
                for component in components
                if component.get("subType") == "anonymous"
                and component.get("providerId") == "trusted-hosts"
            ),
            None,
        )
        hosts = (trusted or {}).get("config", {}).get("trusted-hosts", [])
        profiles = (self._call("GET", "/client-policies/profiles") or {}).get("profiles", [])
        current: dict[str, Any] = next(
            (p for p in profiles if p.get("name") == REDIRECTS_PROFILE), {}
        )
        current_patterns = [
            pattern
            for executor in current.get("executors", [])
            for pattern in executor.get("configuration", {}).get("allowed-patterns", [])
        ]
        patterns = union(current_patterns, [LOOPBACK_REDIRECT_PATTERN, *host_patterns(hosts)])
        self._ensure_client_policy("profiles", redirects_profile(patterns), "client profile")
        self._ensure_client_policy("policies", redirects_policy(enabled=not cimd), "client policy")
        if cimd:
            self._ensure_trusted_hosts(realm_id, trusted)
        elif trusted is not None:
            self._write(
                Change(
                    "delete",
                    "anonymous registration policy 'Trusted Hosts'",
                    f"redirect URIs are checked by client profile {REDIRECTS_PROFILE}",
                ),
                "DELETE",
                f"/components/{trusted['id']}",
            )

    def _ensure_trusted_hosts(self, realm_id: str, current: dict[str, Any] | None) -> None:
        config = current.get("config", {}) if current else {}
        desired = trusted_hosts_config(config.get("trusted-hosts"))
        target = "anonymous registration policy 'Trusted Hosts'"
        if current is None:
            self._write(
                Change("create", target, "Client ID Metadata Documents are on"),
                "POST",
                "/components",
                anonymous_policy(realm_id, "trusted-hosts", "Trusted Hosts", desired),
            )
            return
        differing = [key for key, value in desired.items() if config.get(key) != value]
        if differing:
            self._write(
                Change("update", target, ", ".join(differing)),
                "PUT",
                f"/components/{current['id']}",
                {**current, "config": {**config, **desired}},
            )

    def _require_cimd(self) -> None:
        """Refuse ``cimd_trusted_domains`` unless Keycloak runs with ``--features=cimd``.

        Without the feature Keycloak knows neither the executor nor the
        condition and answers their PUT with a 400 that does not say why; its
        discovery document says it plainly.
        """
        url = f"{self._base}/realms/{quote(self._realm)}/.well-known/openid-configuration"
        response = self._http.get(url, timeout=_TIMEOUT)
        if response.status_code != 200:
            raise KeycloakAdminError(f"GET {url}: HTTP {response.status_code}")
        if response.json().get("client_id_metadata_document_supported") is not True:
            raise KeycloakAdminError(
                f"Keycloak at {self._base} does not offer Client ID Metadata Documents "
                "(its discovery document lacks client_id_metadata_document_supported): "
                "start it with --features=cimd (experimental in Keycloak 26.7)"
            )

    def _ensure_client_policy(self, kind: str, desired: dict[str, Any], label: str) -> None:
        """Client profiles and policies are stored as one list per realm: PUT it whole."""
        path = f"/client-policies/{kind}"
        entries = list((self._call("GET", path) or {}).get(kind, []))
        names = [entry.get("name") for entry in entries]
        target = f"{label} {desired['name']}"
        if desired["name"] not in names:
            self._write(Change("create", target), "PUT", path, {kind: [*entries, desired]})
            return
        index = names.index(desired["name"])
        differing = differing_keys(desired, entries[index])
        if differing:
            entries[index] = desired
            self._write(
                Change("update", target, ", ".join(differing)), "PUT", path, {kind: entries}
            )


def _merged(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """``desired`` over ``current``, attributes merged key by key (others' are kept)."""
    return {
        **current,
        **desired,
        "attributes": {**current.get("attributes", {}), **desired["attributes"]},
    }


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, Mapping):
        for key in ("errorMessage", "error_description", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return str(body)[:300]


def configure_keycloak(
    *,
    base_url: str,
    realm: str,
    admin_user: str,
    admin_password: str,
    public_url: str,
    audience: str | None = None,
    tenants: Sequence[str] = (),
    admin_realm: str = "master",
    dry_run: bool = False,
    client: httpx.Client | None = None,
    cimd_trusted_domains: Sequence[str] = (),
) -> list[Change]:
    """One-shot convenience around `KeycloakConfigurator` (owns a client if none given)."""
    owned = client is None
    http = client or httpx.Client()
    try:
        return KeycloakConfigurator(
            http,
            base_url=base_url,
            realm=realm,
            admin_user=admin_user,
            admin_password=admin_password,
            public_url=public_url,
            audience=audience,
            tenants=tenants,
            admin_realm=admin_realm,
            dry_run=dry_run,
            cimd_trusted_domains=cimd_trusted_domains,
        ).configure()
    finally:
        if owned:
            http.close()
