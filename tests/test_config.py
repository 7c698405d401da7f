"""Settings: precedence, validation, and the CLI's one-line failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from graphgate.config import Settings, load_settings, parse_catalog

GRAPHGATE = [sys.executable, "-c", "from graphgate.cli import main; main()"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("GRAPHGATE_"):
            monkeypatch.delenv(key)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "graphgate.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = Settings(tenants="acme")
    assert (settings.host, settings.port, settings.transport) == ("127.0.0.1", 8000, "http")
    assert settings.backend == "embedded"
    assert settings.row_limit == 1000
    assert settings.query_timeout == 30
    assert settings.allow_writes is False
    assert settings.auth == "none"
    assert settings.data_dir.name == "graphgate"


def test_precedence_flag_over_env_over_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_toml(tmp_path, 'port = 9001\nrow_limit = 5\nquery_timeout = 7\ntenants = "a"\n')
    assert load_settings(config).port == 9001
    monkeypatch.setenv("GRAPHGATE_PORT", "9002")
    monkeypatch.setenv("GRAPHGATE_ROW_LIMIT", "6")
    settings = load_settings(config)
    assert (settings.port, settings.row_limit, settings.query_timeout) == (9002, 6, 7)
    assert load_settings(config, port=9003, row_limit=None).port == 9003
    assert load_settings(config, port=9003, row_limit=None).row_limit == 6


def test_toml_tenant_table_maps_names_to_databases(tmp_path: Path) -> None:
    config = write_toml(tmp_path, '[tenants]\nacme = "acme_prod"\nglobex = "g2"\n')
    assert load_settings(config).catalog == {"acme": "acme_prod", "globex": "g2"}


def test_tenants_from_env_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHGATE_TENANTS", " acme , globex")
    assert load_settings().catalog == {"acme": "acme", "globex": "globex"}


@pytest.mark.parametrize(
    "value",
    ["acme,", "", "a\x00b", "a" * 64, "ac me", "acme:write", "/acme", "аcme", "acme,acme", "ａcme"],
)
def test_bad_tenant_names_are_refused(value: str) -> None:
    if value == "":
        assert parse_catalog(value) == {}
        return
    with pytest.raises(ValueError):
        parse_catalog(value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 70000),
        ("row_limit", 0),
        ("query_timeout", -1),
        ("transport", "carrier-pigeon"),
        ("backend", "mysql://x"),
        ("backend", "bolt+x://h"),
        ("state_url", "memcached://h"),
        ("state_url", "http://redis"),
        ("algorithms", "HS256"),
        ("algorithms", "none"),
        ("public_url", "ftp://x"),
    ],
)
def test_bad_values_fail(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(tenants="acme", **{field: value})
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("embedded", "embedded"),
        ("falkordb://db:6379", "falkordb"),
        ("rediss://db:6380", "falkordb"),
        ("bolt+s://neo4j.internal:7687", "bolt"),
        ("neo4j://neo4j.internal", "bolt"),
    ],
)
def test_the_backend_url_chooses_the_kind_of_backend(url: str, kind: str) -> None:
    target = Settings(tenants="acme", backend=url).backend_target
    assert (target.kind, target.url, target.name) == (kind, url, "default")
    assert (target.embedded is not None) == (kind == "embedded")


def test_the_backend_target_carries_credentials_and_bounds_but_never_shows_the_password(
    tmp_path: Path,
) -> None:
    settings = Settings(
        tenants="acme",
        backend="bolt://db:7687",
        backend_user="graphgate",
        backend_password="s3cret-pw",
        backend_dialect="memgraph",
        query_timeout=7,
        busy_wait=0.5,
        deny_procedures="db.info",
    )
    target = settings.backend_target
    assert (target.user, target.secret, target.dialect) == ("graphgate", "s3cret-pw", "memgraph")
    assert (target.query_timeout, target.pool_wait, target.deny_procedures) == (
        7,
        0.5,
        ("db.info",),
    )
    assert "s3cret-pw" not in repr(target)
    embedded = Settings(tenants="acme", data_dir=tmp_path, embedded_memory_mb=128).backend_target
    assert embedded.embedded is not None
    assert embedded.embedded.data_dir == tmp_path / "falkordb"
    assert embedded.embedded.address_space_mb > 128  # derived: data, queries and overhead
    capped = Settings(tenants="acme", embedded_address_space_mb=3000).backend_target
    assert capped.embedded is not None and capped.embedded.address_space_mb == 3000


@pytest.mark.parametrize(
    ("url", "kind", "kept"),
    [
        ("", "memory", "memory://"),
        ("memory://", "memory", "memory://"),
        ("redis://r:6379/0", "redis", "redis://r:6379/0"),
        ("rediss://r:6380/1", "redis", "rediss://r:6380/1"),
        ("unix:///run/redis.sock", "redis", "unix:///run/redis.sock"),
    ],
)
def test_the_state_url_is_checked_once_into_a_state_target(url: str, kind: str, kept: str) -> None:
    target = Settings(tenants="acme", state_url=url, session_ttl=60).state_target
    assert (target.kind, target.url, target.session_ttl) == (kind, kept, 60)


def test_no_auth_refuses_non_loopback_bind() -> None:
    with pytest.raises(ValidationError, match="refusing"):
        Settings(tenants="acme", host="0.0.0.0")
    Settings(tenants="acme", host="0.0.0.0", transport="stdio")
    Settings(tenants="acme", host="::1")


def test_auth_needs_public_url_except_dev_on_loopback() -> None:
    with pytest.raises(ValidationError, match="public_url"):
        Settings(tenants="acme", auth="oidc", issuer="https://idp.example", host="0.0.0.0")
    dev = Settings(tenants="acme", auth="dev", port=8123)
    assert dev.public_url == "http://127.0.0.1:8123"
    assert dev.resource_url == "http://127.0.0.1:8123/mcp"


def test_public_url_has_one_canonical_spelling() -> None:
    settings = Settings(tenants="a", auth="dev", public_url="https://gg.example.com/")
    assert settings.resource_url == "https://gg.example.com/mcp"
    assert settings.token_audience == "https://gg.example.com/mcp"


def test_demo_defaults_to_dev_auth_unless_auth_is_explicit() -> None:
    assert Settings(demo=True).auth == "dev"
    assert Settings(demo=True).catalog == {"acme": "acme", "globex": "globex"}
    assert Settings(demo=True, auth="none").auth == "none"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHGATE_")}
    return subprocess.run(
        [*GRAPHGATE, *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def test_cli_bad_setting_is_one_line_and_exit_2() -> None:
    result = run_cli("serve", "--port", "99999", "--tenants", "acme")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "port" in lines[0]


def test_cli_bad_env_value_names_the_setting() -> None:
    result = run_cli("serve", "--tenants", "acme", env={"GRAPHGATE_ROW_LIMIT": "lots"})
    assert result.returncode == 2
    assert "row_limit" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_refuses_open_bind_without_auth() -> None:
    result = run_cli("serve", "--host", "0.0.0.0", "--tenants", "acme")
    assert result.returncode == 2
    assert "host" in result.stderr and "auth" in result.stderr


def test_cli_requires_tenants() -> None:
    result = run_cli("serve")
    assert result.returncode == 2
    assert "tenants" in result.stderr
