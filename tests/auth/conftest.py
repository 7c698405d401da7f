"""Fixtures: a real local issuer (uvicorn on loopback) and signing keys, made once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graphgate.config import Settings
from tests.auth._support import (
    IssuerState,
    SigningKey,
    ec_key,
    ed_key,
    issuer_app,
    rsa_key,
    serve,
)

REALM = "/realms/test"
PUBLIC_URL = "http://graphgate.test:8000"


@pytest.fixture(scope="session")
def keys() -> dict[str, SigningKey]:
    return {
        "rsa": rsa_key("rsa-1"),
        "rsa2": rsa_key("rsa-2"),
        "ec": ec_key("ec-1"),
        "ed": ed_key("ed-1"),
        "attacker": rsa_key("attacker-1"),
    }


@pytest.fixture(scope="session")
def issuer_server() -> Iterator[tuple[str, IssuerState]]:
    state = IssuerState()
    with serve(issuer_app(state, REALM)) as base:
        state.issuer = base + REALM
        yield base, state


@pytest.fixture
def issuer(
    issuer_server: tuple[str, IssuerState], keys: dict[str, SigningKey]
) -> Iterator[IssuerState]:
    """The running issuer, reset to serve the rsa, ec and ed keys."""
    _, state = issuer_server
    state.jwks = {"keys": [keys[name].public_jwk() for name in ("rsa", "ec", "ed")]}
    state.metadata_extra = {}
    state.down = False
    state.hits.clear()
    yield state
    state.down = False


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "tenants": "acme,globex",
        "public_url": PUBLIC_URL,
        "data_dir": tmp_path / "data",
        # auth = oidc refuses to start with /metrics open and no token.
        "metrics_token": "auth-tests-metrics-token",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def oidc_settings(tmp_path: Path, issuer: IssuerState) -> Settings:
    return make_settings(tmp_path, auth="oidc", issuer=issuer.issuer)
