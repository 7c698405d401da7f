"""graphgate reaches fastmcp, mcp, starlette, neo4j (any library) only through public names.

A private attribute of a library is a break waiting for its next release.
The one allowed seam (uvicorn's httptools protocol, `graphgate.header_timeout`)
subclasses a public class and has its own contract test; everything else in
``src/`` may touch an underscore name only on graphgate's own objects.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "graphgate"
STDLIB_PRIVATE_BY_DESIGN = {"os._exit"}
"""Documented stdlib names that merely look private."""


def _own_private_names() -> set[str]:
    """Underscore attributes graphgate defines itself (``self._x = ...``, ``def _x``)."""
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {name for name in names if name.startswith("_")}


def test_no_private_attribute_of_a_library_is_used() -> None:
    own = _own_private_names()
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            where = f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute):
                name = node.attr
                if not name.startswith("_") or name.startswith("__") or name in own:
                    continue
                if ast.unparse(node) in STDLIB_PRIVATE_BY_DESIGN:
                    continue
                found.append(f"{where} {ast.unparse(node)}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "setattr", "hasattr"}
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and node.args[1].value.startswith("_")
                and not node.args[1].value.startswith("__")
            ):
                found.append(f"{where} {ast.unparse(node)}")
    assert found == [], "private names of other packages used in src/:\n" + "\n".join(found)


def test_no_private_module_of_a_library_is_imported() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
                modules += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                if module.startswith("graphgate"):
                    continue
                if any(
                    part.startswith("_") and not part.startswith("__") for part in module.split(".")
                ):
                    found.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {module}")
    assert found == [], "private modules of other packages imported in src/:\n" + "\n".join(found)
