"""The catalog's settings: named backends, placements, secrets kept out of the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from graphgate.catalog import Catalog, discovered_tenants
from graphgate.catalog_watch import (
    MAX_SETTINGS_BYTES,
    SettingsFileTooLarge,
    SettingsSource,
    needs_restart,
)
from graphgate.config import Placement, Settings, load_settings

GRAPHGATE = str(Path(sys.executable).with_name("graphgate"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "graphgate.toml"
    path.write_text(text)
    return path


def test_tenants_are_placed_on_named_backends(tmp_path: Path) -> None:
    secret = tmp_path / "eu-password"
    secret.write_text("s3cret\n")
    settings = load_settings(
        write(
            tmp_path,
            f"""
[backends.eu]
url = "bolt://neo4j-eu.internal:7687"
user = "graphgate"
password_file = "{secret}"

[backends.team-x]
url = "bolt://memgraph.internal:7687"

[tenants]
acme = "acme"
globex = {{ backend = "eu", database = "globex_prod" }}
initech = {{ backend = "team-x", database = "memgraph" }}
""",
        )
    )
    catalog = Catalog.from_settings(settings)
    assert dict(catalog.tenants) == {
        "acme": Placement("default", "acme"),
        "globex": Placement("eu", "globex_prod"),
        "initech": Placement("team-x", "memgraph"),
    }
    assert sorted(catalog.backends) == ["default", "eu", "team-x"]
    assert catalog.backends["default"].kind == "embedded"  # the single `backend` setting
    assert catalog.backends["eu"].secret == "s3cret"
    assert "s3cret" not in repr(catalog.backends["eu"])


def test_a_password_in_the_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[backends.eu]\nurl = "bolt://x:7687"\npassword = "hunter2"\n')
    with pytest.raises(ValueError) as refused:
        load_settings(path)
    assert "password_file" in str(refused.value)
    assert "GRAPHGATE_BACKENDS__EU__PASSWORD" in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_the_password_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRAPHGATE_BACKENDS__EU__PASSWORD", "from-env")
    settings = load_settings(write(tmp_path, '[backends.eu]\nurl = "bolt://x:7687"\n'))
    assert settings.backend_targets["eu"].secret == "from-env"


def test_a_dashed_backend_takes_its_password_from_the_underscored_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shells cannot set GRAPHGATE_BACKENDS__TEAM-X__PASSWORD; TEAM_X is what they can set."""
    monkeypatch.setenv("GRAPHGATE_BACKENDS__TEAM_X__PASSWORD", "dashed")
    monkeypatch.setenv("GRAPHGATE_BACKENDS__TEAM_Y__PASSWORD", "its-own")
    path = write(
        tmp_path,
        '[backends.team-x]\nurl = "bolt://x:7687"\n'
        '[backends.team-y]\nurl = "bolt://y:7687"\n'
        '[backends.team_y]\nurl = "bolt://z:7687"\n',
    )
    targets = load_settings(path).backend_targets
    assert targets["team-x"].secret == "dashed"
    assert "team_x" not in targets
    # A real [backends.team_y] table keeps the variable of its own name.
    assert targets["team_y"].secret == "its-own"
    assert targets["team-y"].secret is None


def test_the_refusal_of_a_password_names_a_variable_a_shell_can_set(tmp_path: Path) -> None:
    path = write(tmp_path, '[backends.team-x]\nurl = "bolt://x:7687"\npassword = "p"\n')
    with pytest.raises(ValueError, match="GRAPHGATE_BACKENDS__TEAM_X__PASSWORD"):
        load_settings(path)


def test_a_file_over_the_reload_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, '[tenants]\nacme = "acme"\n')
    with path.open("r+b") as file:
        file.truncate(MAX_SETTINGS_BYTES + 1)  # sparse: nothing to write, nothing to read
    with pytest.raises(SettingsFileTooLarge, match="over the 4194304 bytes"):
        SettingsSource(path).load()


@pytest.mark.parametrize(
    ("tenants", "says"),
    [
        ({"acme": {"backend": "nowhere", "database": "a"}}, "no backend named 'nowhere'"),
        ({"acme": {"backend": "Bad Name"}}, "backend name"),
        ({"acme": {"backend": "default", "table": "x"}}, "tenant 'acme'"),
        ({"acme": {"backend": "default", "database": "a\x00"}}, "control characters"),
        ({"acme": {"database": "a", "confirm_writes": "sometimes"}}, "confirm_writes"),
    ],
)
def test_bad_placements_say_what_to_do(tenants: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(tenants=tenants)
    assert says in str(refused.value)


def test_a_tenant_may_set_its_own_confirm_writes() -> None:
    settings = Settings(
        confirm_writes="when_supported",
        tenants={"acme": {"database": "acme_db", "confirm_writes": "always"}, "globex": "g"},
    )
    placements = settings.placements
    assert placements["acme"].database == "acme_db" and placements["acme"].backend == "default"
    assert placements["acme"].confirm_writes == "always"
    assert placements["globex"].confirm_writes is None  # the server's when_supported


def test_discovery_never_serves_system_and_explicit_entries_win() -> None:
    found = discovered_tenants(
        "graphs", ["system", "team_a", "team_b", "other", "team_ bad"], "team_"
    )
    assert found == {"a": Placement("graphs", "team_a"), "b": Placement("graphs", "team_b")}
    settings = Settings(
        backends={"graphs": {"url": "falkordb://h:6379", "discover": True}},
        tenants={"a": {"backend": "graphs", "database": "elsewhere"}},
    )
    catalog = Catalog.from_settings(settings).with_discovered("graphs", found)
    assert catalog.tenants["a"] == Placement("graphs", "elsewhere")
    assert catalog.tenants["b"] == Placement("graphs", "team_b")


def test_a_placed_database_is_never_discovered_as_a_tenant_of_its_own() -> None:
    """``acme`` lives in ``team_acme_prod``: no tenant ``acme_prod`` beside it."""
    settings = Settings(
        backends={"graphs": {"url": "falkordb://h:6379", "discover": True}},
        tenants={"acme": {"backend": "graphs", "database": "team_acme_prod"}},
    )
    found = discovered_tenants("graphs", ["team_acme_prod", "team_new"], "team_")
    catalog = Catalog.from_settings(settings).with_discovered("graphs", found)
    assert dict(catalog.tenants) == {
        "acme": Placement("graphs", "team_acme_prod"),
        "new": Placement("graphs", "team_new"),
    }


def test_settings_outside_the_catalog_are_named_as_needing_a_restart() -> None:
    running = Settings(tenants="acme")
    changed = Settings(tenants="acme,globex", port=9000, row_limit=5)
    assert needs_restart(running, changed) == ["port", "row_limit"]


def test_catalog_check_reports_an_unreachable_backend_and_exits_1(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[backends.gone]\nurl = "falkordb://127.0.0.1:1"\n\n'
        '[tenants]\nacme = { backend = "gone", database = "acme" }\n',
    )
    done = subprocess.run(
        [GRAPHGATE, "catalog", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "BACKEND", "DATABASE", "STATUS"]
    assert any(line.startswith("tenant") and "backend unreachable" in line for line in lines)
    assert lines[-1] == "2 problems"
