"""From verified token claims to what the caller may touch.

Pure functions, no I/O: the most heavily unit-tested part of graphgate. Rights
come from the verified token of every request (the verifier computes them once
per token and the token carries them); nothing stored can widen them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from graphgate.config import ClaimsRules, Settings, split_claim_path

logger = logging.getLogger(__name__)

Access = Literal["read", "write"]
_WRITE_SUFFIX = ":write"
_READ_SUFFIX = ":read"
_ASCII_SPACE = " \t\r\n\f\v"
UNKNOWN_KEPT = 32
"""Not-yet-catalogued tenant names kept per token: a token of thousands stays cheap."""


@dataclass(frozen=True, slots=True)
class Rights:
    """The tenants a caller may use, each with its access, and where they start."""

    tenants: Mapping[str, Access] = field(default_factory=dict)
    admin: bool = False
    starting: str | None = None
    unknown: Mapping[str, Access] = field(default_factory=dict)
    """Tenants the token names that the catalog did not hold when it was verified
    (at most `UNKNOWN_KEPT`): discovery may find them (`graphgate.tenancy.Router`)."""

    def permits(self, tenant: str) -> bool:
        return tenant in self.tenants

    def can_write(self, tenant: str) -> bool:
        return self.tenants.get(tenant) == "write"

    @property
    def can_write_anywhere(self) -> bool:
        return "write" in self.tenants.values()

    @property
    def sorted_tenants(self) -> list[str]:
        return sorted(self.tenants)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as far as routing and auditing care.

    ``key`` binds stored state (the current database) to the identity that
    chose it: issuer, subject and client, never the MCP session id alone.
    """

    issuer: str
    subject: str
    client_id: str
    rights: Rights

    @property
    def key(self) -> str:
        return f"{self.issuer}\x1f{self.subject}\x1f{self.client_id}"


def claim_at(claims: Mapping[str, Any], path: str | tuple[str, ...]) -> Any:
    """The value at a dotted path such as ``resource_access.graphgate.roles``.

    A dot always means nesting (`split_claim_path`): a claim named with
    literal dots is reached only through an escaped path, never by accident.
    ``path`` may be given split already (`ClaimsRules` holds it so).
    """
    node: Any = claims
    for part in split_claim_path(path) if isinstance(path, str) else path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _as_string_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        kept = [item for item in value if isinstance(item, str)]
        if len(kept) != len(value):
            logger.warning(
                "ignored %d non-string entries in the %s claim", len(value) - len(kept), what
            )
        return kept
    logger.warning(
        "ignored the %s claim: expected a list or a string, got %s", what, type(value).__name__
    )
    return []


def parse_tenant_entries(entries: Iterable[str], prefix: str) -> dict[str, Access]:
    """``acme`` → read, ``acme:write`` → write; group paths and the prefix stripped.

    When one tenant appears several times the strongest access wins. Only
    ASCII whitespace is trimmed: the comparison with the catalog is exact, so
    an entry padded with Unicode spaces names no tenant.
    """
    parsed: dict[str, Access] = {}
    for raw in entries:
        entry = raw.strip(_ASCII_SPACE)
        if entry.startswith("/"):
            entry = entry[1:]
        if prefix:
            if not entry.startswith(prefix):
                continue
            entry = entry[len(prefix) :]
        access: Access = "read"
        if entry.endswith(_WRITE_SUFFIX):
            entry, access = entry[: -len(_WRITE_SUFFIX)], "write"
        elif entry.endswith(_READ_SUFFIX):
            entry = entry[: -len(_READ_SUFFIX)]
        if not entry:
            continue
        if parsed.get(entry) != "write":
            parsed[entry] = access
    return parsed


def _clamp(access: Access, allow_writes: bool) -> Access:
    return access if allow_writes else "read"


def _starting(tenants: Mapping[str, Access], preferred: Any) -> str | None:
    if isinstance(preferred, str) and preferred in tenants:
        return preferred
    return min(tenants) if tenants else None


def rights_from_claims(claims: Mapping[str, Any], rules: ClaimsRules) -> Rights:
    """Rights = tenants claim ∩ catalog, or every catalogued tenant for an admin.

    Write access needs both the claim's ``:write`` and ``allow_writes`` on the
    server. Names are compared exactly: the catalog holds canonical names only,
    so case, whitespace and look-alike variants match nothing.
    """
    catalog = rules.catalog
    admin_name = ".".join(rules.admin_claim)
    admin_values = _as_string_list(claim_at(claims, rules.admin_claim), admin_name)
    admin = rules.admin_value in admin_values
    if admin:
        tenants: dict[str, Access] = {
            name: _clamp("write", rules.allow_writes) for name in sorted(catalog)
        }
    else:
        tenants_name = ".".join(rules.tenants_claim)
        entries = _as_string_list(claim_at(claims, rules.tenants_claim), tenants_name)
        claimed = parse_tenant_entries(entries, rules.tenant_prefix)
        tenants = {}
        unknown: dict[str, Access] = {}
        for name, access in claimed.items():
            if name in catalog:
                tenants[name] = _clamp(access, rules.allow_writes)
            elif len(unknown) < UNKNOWN_KEPT:
                unknown[name] = _clamp(access, rules.allow_writes)
        preferred = claim_at(claims, rules.default_tenant_claim)
        return Rights(
            tenants=tenants,
            admin=admin,
            starting=_starting(tenants, preferred),
            unknown=unknown,
        )
    preferred = claim_at(claims, rules.default_tenant_claim)
    return Rights(tenants=tenants, admin=admin, starting=_starting(tenants, preferred))


def rights_for_local_user(settings: Settings, catalog: Iterable[str] | None = None) -> Rights:
    """``auth = none`` (stdio or loopback): the one local user has the whole catalog
    (``catalog``, the live one's names, else that of ``settings``)."""
    names = settings.catalog if catalog is None else catalog
    tenants = {name: _clamp("write", settings.allow_writes) for name in names}
    return Rights(tenants=tenants, admin=True, starting=_starting(tenants, None))
