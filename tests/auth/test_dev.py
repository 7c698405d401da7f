"""Dev mode: the key pair in the data dir, minted tokens, local verification."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import jwt
import pytest

from graphgate.auth.dev import KEY_FILE, DevKeys, dev_verifier, mint_dev_token
from graphgate.auth.rights import rights_from_claims
from graphgate.auth.tokens import TokenRejected
from tests.auth._support import b64url
from tests.auth.conftest import make_settings


def test_key_is_created_private_and_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    first = DevKeys.load_or_create(data_dir)
    path = data_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    again = DevKeys.load_or_create(data_dir)
    assert again.kid == first.kid
    assert not [p for p in data_dir.iterdir() if p.name != KEY_FILE]  # no temp files left


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    DevKeys.load_or_create(tmp_path)
    path = tmp_path / KEY_FILE
    path.chmod(0o644)
    DevKeys.load_or_create(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_foreign_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("not a key")
    (tmp_path / KEY_FILE).chmod(0o600)
    with pytest.raises(ValueError):
        DevKeys.load_or_create(tmp_path)


def test_kid_is_the_rfc7638_thumbprint(tmp_path: Path) -> None:
    keys = DevKeys.load_or_create(tmp_path)
    jwk = keys.public_jwk
    canonical = f'{{"crv":"{jwk["crv"]}","kty":"{jwk["kty"]}","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    assert keys.kid == b64url(hashlib.sha256(canonical.encode()).digest())
    assert set(keys.jwks["keys"][0]) == {"crv", "kty", "x", "y", "kid", "use", "alg"}


async def test_minted_token_verifies_and_maps_to_rights(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth="dev", allow_writes=True)
    token = mint_dev_token(settings, "alice", ["acme", "globex:write"], False, 300)
    access = await dev_verifier(settings).verify(token)
    assert access.subject == "alice"
    assert access.scopes == ["mcp:tools"]
    assert access.claims["iss"] == settings.dev_issuer
    assert access.claims["aud"] == settings.resource_url
    assert access.claims["exp"] - access.claims["iat"] == 300
    rights = rights_from_claims(access.claims, settings)
    assert dict(rights.tenants) == {"acme": "read", "globex": "write"}
    assert not rights.admin
    assert jwt.get_unverified_header(token)["kid"] == DevKeys.load_or_create(settings.data_dir).kid


async def test_admin_and_prefix_follow_the_settings(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        auth="dev",
        tenant_prefix="gg-",
        tenants_claim="groups",
        admin_claim="resource_access.graphgate.roles",
        admin_value="boss",
    )
    token = mint_dev_token(settings, "root", ["acme"], True, 60, scopes=["mcp:tools", "extra"])
    access = await dev_verifier(settings).verify(token)
    assert access.claims["groups"] == ["gg-acme"]
    assert access.claims["resource_access"] == {"graphgate": {"roles": ["boss"]}}
    assert access.scopes == ["mcp:tools", "extra"]
    rights = rights_from_claims(access.claims, settings)
    assert rights.admin
    assert set(rights.tenants) == {"acme", "globex"}


@pytest.mark.parametrize(
    ("sub", "tenants", "ttl"),
    [
        ("", ["acme"], 60),
        ("a", ["ac me"], 60),
        ("a", ["acme:admin"], 60),
        ("a", ["\u0430cme"], 60),
        ("a", ["acme"], 0),
        ("a", ["acme"], 10**9),
    ],
)
def test_bad_arguments_say_what_to_fix(
    tmp_path: Path, sub: str, tenants: list[str], ttl: int
) -> None:
    settings = make_settings(tmp_path, auth="dev")
    with pytest.raises(ValueError):
        mint_dev_token(settings, sub, tenants, False, ttl)


async def test_token_from_another_data_dir_is_refused(tmp_path: Path) -> None:
    ours = make_settings(tmp_path / "a", auth="dev")
    theirs = make_settings(tmp_path / "b", auth="dev")
    token = mint_dev_token(theirs, "mallory", ["acme"], True, 60)
    with pytest.raises(TokenRejected) as caught:
        await dev_verifier(ours).verify(token)
    assert caught.value.reason == "unknown_kid"


async def test_token_for_another_port_is_refused(tmp_path: Path) -> None:
    """Two dev servers on one machine share no tokens: issuer and audience differ."""
    one = make_settings(tmp_path, auth="dev", public_url="http://127.0.0.1:8001")
    two = make_settings(tmp_path, auth="dev", public_url="http://127.0.0.1:8002")
    token = mint_dev_token(one, "a", ["acme"], False, 60)
    with pytest.raises(TokenRejected):
        await dev_verifier(two).verify(token)
