"""graphgate builds as a package without warnings a newcomer would see on install."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    # A copy: setuptools writes build/ beside the sources it builds.
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    output = built.stdout + built.stderr
    assert "deprecated" not in output.lower(), output[-2000:]
    assert [path.name for path in wheels.glob("graphgate-*.whl")]


def _declared() -> dict[str, str]:
    """Declared runtime dependencies: normalized distribution name -> specifier."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        _normalized(req.name): str(req.specifier)
        for req in map(Requirement, project["dependencies"])
    }


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _imported_top_level_modules() -> set[str]:
    import ast

    found: set[str] = set()
    for path in (ROOT / "src" / "graphgate").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"graphgate"}


def test_every_package_src_imports_is_declared() -> None:
    """An import that works only because another dependency happens to pull its
    package in breaks on that dependency's next release."""
    from importlib.metadata import packages_distributions

    declared = _declared()
    distributions = packages_distributions()
    missing = {
        module: distributions.get(module)
        for module in _imported_top_level_modules()
        if not any(_normalized(dist) in declared for dist in distributions.get(module, []))
        # fastmcp's import package is installed by fastmcp-slim, which `fastmcp` requires.
        and not (module == "fastmcp" and "fastmcp" in declared)
    }
    assert not missing, f"imported by src/ but not in [project] dependencies: {missing}"


def test_runtime_dependencies_are_pinned_to_the_tested_minor() -> None:
    """Each runtime dependency admits the version constraints.txt tests and no
    later minor: ``>=X.Y.Z,<X.(Y+1)``."""
    from packaging.specifiers import SpecifierSet

    tested = {
        _normalized(name): version
        for name, _, version in (
            line.partition("==")
            for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line
        )
    }
    for name, specifier in _declared().items():
        version = tested[name]
        assert version in SpecifierSet(specifier), (name, specifier, version)
        major, minor = version.split(".")[:2]
        assert f"<{major}.{int(minor) + 1}" in specifier.split(","), (name, specifier)
