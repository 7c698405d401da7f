"""graphgate: a multi-tenant MCP server for graph databases."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("graphgate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
