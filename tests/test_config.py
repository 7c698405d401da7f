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
        ("algorithms", "HS256"),
        ("algorithms", "none"),
        ("public_url", "ftp://x"),
    ],
)
def test_bad_values_fail(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(tenants="acme", **{field: value})
    assert field in str(info.value)


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
