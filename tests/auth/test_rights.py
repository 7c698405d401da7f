"""Claims to rights (graphgate.auth.rights): every claim shape issuers produce."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graphgate.auth.rights import (
    Caller,
    Rights,
    claim_at,
    parse_tenant_entries,
    rights_for_local_user,
    rights_from_claims,
)
from graphgate.config import Settings, claims_rules
from tests.auth.conftest import make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, tenants="acme,globex,initech", allow_writes=True)


def tenants(claims: dict[str, Any], settings: Settings) -> dict[str, str]:
    return dict(rights_from_claims(claims, claims_rules(settings)).tenants)


# -- tenants claim shapes ------------------------------------------------------------------


def test_string_claim(settings: Settings) -> None:
    assert tenants({"tenants": "acme"}, settings) == {"acme": "read"}


def test_list_claim(settings: Settings) -> None:
    assert tenants({"tenants": ["acme", "globex:write"]}, settings) == {
        "acme": "read",
        "globex": "write",
    }


def test_read_suffix(settings: Settings) -> None:
    assert tenants({"tenants": ["acme", "acme:read"]}, settings) == {"acme": "read"}


@pytest.mark.parametrize("value", [7, 3.5, True, {"acme": "write"}, None, {"acme"}])
def test_non_list_types_are_ignored(value: Any, settings: Settings) -> None:
    assert tenants({"tenants": value}, settings) == {}


def test_non_string_entries_are_dropped(settings: Settings) -> None:
    claims = {"tenants": ["acme", 5, None, ["globex"], {"x": 1}]}
    assert tenants(claims, settings) == {"acme": "read"}


def test_group_paths(settings: Settings) -> None:
    assert tenants({"tenants": ["/acme", "/globex:write"]}, settings) == {
        "acme": "read",
        "globex": "write",
    }


def test_nested_group_paths_match_nothing(settings: Settings) -> None:
    assert tenants({"tenants": ["/org/acme", "//acme"]}, settings) == {}


def test_prefix_filters_and_strips(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, tenants="acme,globex", tenant_prefix="gg-", allow_writes=True
    )
    claims = {"tenants": ["gg-acme:write", "acme", "/gg-globex", "other-globex", "gg-"]}
    assert tenants(claims, settings) == {"acme": "write", "globex": "read"}


def test_strongest_access_wins(settings: Settings) -> None:
    claims = {"tenants": ["acme:write", "acme", "acme:read"]}
    assert tenants(claims, settings) == {"acme": "write"}


def test_write_needs_allow_writes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tenants="acme", allow_writes=False)
    rights = rights_from_claims({"tenants": ["acme:write"]}, claims_rules(settings))
    assert dict(rights.tenants) == {"acme": "read"}
    assert not rights.can_write("acme")
    assert not rights.can_write_anywhere


def test_catalog_intersection(settings: Settings) -> None:
    assert tenants({"tenants": ["acme", "umbrella", "umbrella:write"]}, settings) == {
        "acme": "read"
    }


def test_claim_at_dotted_path(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tenants="acme", tenants_claim="ext.graphgate.tenants")
    assert tenants({"ext": {"graphgate": {"tenants": ["acme"]}}}, settings) == {"acme": "read"}
    assert tenants({"ext": {"graphgate": "acme"}}, settings) == {}
    assert tenants({"ext": ["graphgate"]}, settings) == {}


def test_a_dot_always_means_nesting(tmp_path: Path) -> None:
    """A top-level claim literally named like the admin path grants nothing."""
    settings = make_settings(tmp_path, tenants="acme,globex")
    forged = {"realm_access.roles": ["graphgate-admin"], "tenants": []}
    assert rights_from_claims(forged, claims_rules(settings)).admin is False
    assert claim_at({"a.b": 1, "a": {"b": 2}}, "a.b") == 2
    assert claim_at({"a.b": 1}, "a.b") is None


def test_escaped_dots_name_a_namespaced_claim(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, tenants="acme,globex", tenants_claim=r"https://example\.com/tenants"
    )
    assert tenants({"https://example.com/tenants": ["acme"]}, settings) == {"acme": "read"}
    assert tenants({"https://example": {"com/tenants": ["acme"]}}, settings) == {}


@pytest.mark.parametrize("path", ["a..b", ".a", "a.", "a\\"])
def test_malformed_claim_paths_stop_start_up(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError, match="claim path"):
        make_settings(tmp_path, tenants="acme", tenants_claim=path)


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u200b", "\u3000"])
def test_unicode_spaces_are_not_trimmed(tmp_path: Path, space: str) -> None:
    settings = make_settings(tmp_path, tenants="acme")
    assert tenants({"tenants": [f"{space}acme", f"acme{space}"]}, settings) == {}
    assert tenants({"tenants": [" acme\t"]}, settings) == {"acme": "read"}


# -- look-alikes get nothing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "ACME",
        "Acme",
        "ac me",
        "acme\u200b",  # zero-width space
        "\u0430cme",  # Cyrillic a
        "\uff41cme",  # full-width a
        "acme\u0301",  # combining accent
        "acme:WRITE",
        "acme:write:write",
        "acme\x00",
        "acme.",
        "*",
        "",
        ":write",
    ],
)
def test_look_alikes_get_nothing(entry: str, settings: Settings) -> None:
    assert tenants({"tenants": [entry]}, settings) == {}


def test_surrounding_whitespace_is_trimmed(settings: Settings) -> None:
    """rights.py strips each entry: padding from a claims mapper is not a different name."""
    assert tenants({"tenants": [" acme ", "\tglobex:write\n"]}, settings) == {
        "acme": "read",
        "globex": "write",
    }


# -- admin -----------------------------------------------------------------------------------


def test_admin_via_list_at_dotted_path(settings: Settings) -> None:
    rights = rights_from_claims(
        {"realm_access": {"roles": ["user", "graphgate-admin"]}}, claims_rules(settings)
    )
    assert rights.admin
    assert dict(rights.tenants) == {"acme": "write", "globex": "write", "initech": "write"}


def test_admin_via_string(settings: Settings) -> None:
    assert rights_from_claims(
        {"realm_access": {"roles": "graphgate-admin"}}, claims_rules(settings)
    ).admin


@pytest.mark.parametrize(
    "roles",
    [["graphgate-admin "], ["GRAPHGATE-ADMIN"], {"graphgate-admin": True}, 1, None, []],
)
def test_not_admin(roles: Any, settings: Settings) -> None:
    rights = rights_from_claims({"realm_access": {"roles": roles}}, claims_rules(settings))
    assert not rights.admin


def test_admin_writes_still_need_allow_writes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tenants="acme")
    rights = rights_from_claims(
        {"realm_access": {"roles": ["graphgate-admin"]}}, claims_rules(settings)
    )
    assert dict(rights.tenants) == {"acme": "read"}


def test_admin_at_custom_claim(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tenants="acme", admin_claim="groups", admin_value="ops")
    assert rights_from_claims({"groups": ["ops"]}, claims_rules(settings)).admin
    assert not rights_from_claims(
        {"realm_access": {"roles": ["graphgate-admin"]}}, claims_rules(settings)
    ).admin


# -- default tenant --------------------------------------------------------------------------


def test_default_tenant_claim(settings: Settings) -> None:
    rights = rights_from_claims(
        {"tenants": ["acme", "globex"], "default_tenant": "globex"}, claims_rules(settings)
    )
    assert rights.starting == "globex"


@pytest.mark.parametrize("preferred", ["initech", "umbrella", 5, None, ["globex"]])
def test_default_tenant_outside_rights_falls_back(preferred: Any, settings: Settings) -> None:
    rights = rights_from_claims(
        {"tenants": ["globex", "acme"], "default_tenant": preferred}, claims_rules(settings)
    )
    assert rights.starting == "acme"


def test_no_tenants_no_start(settings: Settings) -> None:
    rights = rights_from_claims({}, claims_rules(settings))
    assert rights == Rights()
    assert rights.starting is None
    assert not rights.permits("acme")


# -- local user, caller key --------------------------------------------------------------------


def test_local_user_has_the_catalog(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tenants="acme,globex")
    rights = rights_for_local_user(settings)
    assert rights.admin
    assert dict(rights.tenants) == {"acme": "read", "globex": "read"}
    assert rights.sorted_tenants == ["acme", "globex"]


def test_caller_key_separates_issuer_subject_client() -> None:
    a = Caller("https://i", "alice", "c1", Rights())
    assert a.key != Caller("https://j", "alice", "c1", Rights()).key
    assert a.key != Caller("https://i", "alice", "c2", Rights()).key
    assert a.key != Caller("https://i", "alic", "ec1", Rights()).key


def test_parse_tenant_entries_directly() -> None:
    assert parse_tenant_entries(["x:write", "/y", "p-z:read"], "") == {
        "x": "write",
        "y": "read",
        "p-z": "read",
    }
