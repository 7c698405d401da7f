"""Every TOML block in the README and docs/ is a configuration graphgate accepts.

Blocks are taken from the Markdown as written; placeholders (``<tenant id>``,
``YOUR_ORG``) get realistic values, and settings a block leaves to its
surroundings (auth, public_url, tenants) get the values the page assumes.
A doc therefore cannot drift from the code without failing here.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from graphgate.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Realistic stand-ins: GUIDs and ids where providers put them, names elsewhere.
_PLACEHOLDERS = [
    (re.compile(r"<[^<>\n]*(?:id|ID)[^<>\n]*>"), "6e1c1a39-0f3b-4d6e-9a61-2b8e1d7c5f42"),
    (re.compile(r"<[^<>\n]+>"), "example"),
    (re.compile(r"YOUR_[A-Z_]+"), "example"),
]
_CONTEXT: dict[str, Any] = {
    "public_url": "https://graphgate.example.com",
    "tenants": {"acme": "acme", "globex": "globex"},
}


def code_blocks(language: str) -> list[tuple[str, str]]:
    """``(page:line of the fence, body)`` of every fenced ``language`` block of the pages."""
    fenced = re.compile(rf"^[ \t]*```{language}[ \t]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in fenced.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


def toml_blocks() -> list[tuple[str, str]]:
    return code_blocks("toml")


def filled(block: str) -> str:
    for pattern, value in _PLACEHOLDERS:
        block = pattern.sub(value, block)
    return block


def test_the_docs_have_configuration_blocks() -> None:
    assert len(toml_blocks()) >= 8


@pytest.mark.parametrize(("where", "block"), toml_blocks(), ids=[w for w, _ in toml_blocks()])
def test_each_toml_block_loads(where: str, block: str, tmp_path: Path) -> None:
    text = filled(block)
    values = tomllib.loads(text)  # a block must be valid TOML as printed
    config = tmp_path / "graphgate.toml"
    config.write_text(text, encoding="utf-8")
    context = {key: value for key, value in _CONTEXT.items() if key not in values}
    if "issuer" in values and "auth" not in values:
        context["auth"] = "oidc"  # the provider pages' blocks add to an oidc set-up
    if values.get("registration") in {"shim", "proxy"} and "static_client_id" not in values:
        context["static_client_id"] = "graphgate-mcp"
    settings = load_settings(config, data_dir=tmp_path / "data", **context)
    assert isinstance(settings, Settings)
    for key, value in values.items():
        if key != "tenants" and isinstance(value, str | bool | int | float):
            shown = getattr(settings, key)
            if isinstance(shown, list):
                assert value in shown, (where, key)
            elif hasattr(shown, "get_secret_value"):
                assert shown.get_secret_value() == value, (where, key)
            elif key != "public_url":
                assert shown == value, (where, key)


_SCRIPT_COMMAND = re.compile(r"(\S*python\S*) (scripts/[\w./-]+\.py) (\w+)")


def script_commands() -> list[tuple[str, str, str, str]]:
    found = []
    for page in PAGES:
        for match in _SCRIPT_COMMAND.finditer(page.read_text(encoding="utf-8")):
            found.append((str(page.relative_to(ROOT)), *match.groups()))
    return found


def test_the_docs_show_script_commands() -> None:
    assert len(script_commands()) >= 3


@pytest.mark.parametrize(("page", "python", "script", "verb"), script_commands())
def test_script_commands_in_the_docs_run_as_written(
    page: str, python: str, script: str, verb: str
) -> None:
    """Each is written with the interpreter `make` installs, and its verb exists."""
    import subprocess

    assert python.strip("`(") == ".venv/bin/python", (page, python)
    shown = subprocess.run(
        [str(ROOT / ".venv/bin/python"), script, verb, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, (page, script, verb, shown.stderr[-500:])


# -- shell commands a reader copies ------------------------------------------------------

_GRAPHGATE_COMMAND = re.compile(r"(?:^|\s|\$\()(\S*graphgate) (serve|token|keycloak configure)\b")
_INSPECTOR_COMMAND = re.compile(r"npx -y (@modelcontextprotocol/inspector\S*) --cli ")
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


def shell_commands() -> list[tuple[str, str]]:
    """Each command line of the ``sh`` blocks (where: the block), lines joined, comments cut."""
    found = []
    for where, block in code_blocks("sh"):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"(^|\s)#.*$", "", command).strip()
            if command:
                found.append((where, command))
    return found


def graphgate_commands() -> list[tuple[str, str, list[str]]]:
    """``(where, verb, flags)`` of each ``graphgate VERB ...`` in the sh blocks."""
    found = []
    for where, command in shell_commands():
        for match in _GRAPHGATE_COMMAND.finditer(command):
            rest = re.split(r"[)|;&]", command[match.end() :])[0]
            found.append((where, match.group(2), _FLAG.findall(rest)))
    return found


@pytest.fixture(scope="module")
def graphgate_help() -> dict[str, str]:
    import subprocess

    shown = {}
    for verb in {verb for _, verb, _ in graphgate_commands()}:
        done = subprocess.run(
            [str(ROOT / ".venv/bin/graphgate"), *verb.split(), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        )
        assert done.returncode == 0, (verb, done.stderr[-500:])
        shown[verb] = done.stdout
    return shown


def test_the_docs_show_graphgate_commands() -> None:
    assert {verb for _, verb, _ in graphgate_commands()} == {"serve", "token", "keycloak configure"}


@pytest.mark.parametrize(
    ("where", "verb", "flags"), graphgate_commands(), ids=[w for w, _, _ in graphgate_commands()]
)
def test_graphgate_commands_in_the_docs_take_their_flags(
    where: str, verb: str, flags: list[str], graphgate_help: dict[str, str]
) -> None:
    """Every flag a page gives ``graphgate VERB`` is one that ``graphgate VERB --help`` lists."""
    for flag in flags:
        assert re.search(rf"{flag}(?![\w-])", graphgate_help[verb]), (where, verb, flag)


def inspector_commands() -> list[tuple[str, str]]:
    return [(where, command) for where, command in shell_commands() if "inspector" in command]


def test_inspector_commands_in_the_docs_run_the_tested_version() -> None:
    """A bare ``npx @modelcontextprotocol/inspector`` on Node < 22.19 fetches 0.15 (other flags)."""
    from tests.services.oidc_provider import INSPECTOR_PROJECT

    pinned = json.loads((INSPECTOR_PROJECT / "package.json").read_text())["dependencies"]
    wanted = f"@modelcontextprotocol/inspector@{pinned['@modelcontextprotocol/inspector']}"
    commands = inspector_commands()
    assert len(commands) >= 4
    for where, command in commands:
        match = _INSPECTOR_COMMAND.search(command)
        assert match is not None and match.group(1) == wanted, (where, command)


def test_inspector_commands_in_the_docs_take_their_flags() -> None:
    """Each flag the pages give the Inspector's CLI is one its ``--cli --help`` lists."""
    import subprocess

    from tests.services.inspector import LAUNCHER
    from tests.services.node_client import node_command_or_unavailable
    from tests.services.oidc_provider import INSPECTOR_PROJECT

    command = node_command_or_unavailable(INSPECTOR_PROJECT, LAUNCHER / "index.js")
    shown = subprocess.run(
        [*command, "--cli", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for where, line in inspector_commands():
        for flag in _FLAG.findall(line.split(" --cli ", 1)[1]):
            assert re.search(rf"{flag}(?![\w-])", shown), (where, flag)
