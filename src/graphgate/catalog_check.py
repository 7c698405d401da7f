"""``graphgate catalog check``: a catalog checked against the live backends, as a table.

For every backend: can graphgate connect and log in, and which databases
does it have. For every tenant: is it placed once, on a configured backend,
and does its database exist there. Any problem makes the exit status 1, so
a CI job or an init container can refuse a catalog before it is served.

The embedded FalkorDB is not started here (a running graphgate holds its
data directory): its tenants are reported as ``not checked``, which is not a
problem; its graphs are created on first write.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from graphgate.backends import create_backend
from graphgate.catalog import Catalog
from graphgate.config import BackendTarget
from graphgate.errors import GraphgateError

__all__ = ["CheckRow", "check_catalog", "render"]

CONNECT_BOUND = 15.0
"""Seconds one backend has to answer before it counts as unreachable."""


@dataclass(frozen=True, slots=True)
class CheckRow:
    kind: str  # "backend" or "tenant"
    name: str
    backend: str
    database: str
    status: str
    problem: bool


async def _databases(target: BackendTarget) -> tuple[list[str] | None, str]:
    """The backend's databases, or None and why not."""
    backend = create_backend(target)
    try:
        async with asyncio.timeout(CONNECT_BOUND):
            await backend.start()
            await backend.ping()
            return await backend.list_databases(), "ok"
    except TimeoutError:
        return None, f"no answer within {CONNECT_BOUND:g} s"
    except GraphgateError as exc:
        return None, " ".join(str(exc).split())
    finally:
        await backend.close()


async def check_catalog(catalog: Catalog) -> list[CheckRow]:
    """One row per backend, then one per tenant, in name order."""
    rows: list[CheckRow] = []
    found: dict[str, list[str] | None] = {}
    for name, target in sorted(catalog.backends.items()):
        if target.kind == "embedded":
            rows.append(CheckRow("backend", name, name, "", "embedded: not checked", False))
            continue
        databases, status = await _databases(target)
        found[name] = databases
        shown = status if databases is None else f"ok, {len(databases)} databases"
        rows.append(CheckRow("backend", name, name, "", shown, databases is None))
        if databases is not None and target.discover:
            from graphgate.catalog import discovered_tenants

            catalog = catalog.with_discovered(
                name, discovered_tenants(name, databases, target.discover_prefix)
            )
    seen: dict[tuple[str, str], str] = {}
    for tenant, placement in sorted(catalog.tenants.items()):
        key = (placement.backend, placement.database)
        databases = found.get(placement.backend)
        if catalog.backends[placement.backend].kind == "embedded":
            status, problem = "not checked (embedded)", False
        elif databases is None:
            status, problem = "backend unreachable", True
        elif placement.database not in databases:
            status, problem = "database missing", True
        else:
            status, problem = "ok", False
        if key in seen:
            status, problem = f"same database as tenant {seen[key]}", True
        seen.setdefault(key, tenant)
        rows.append(
            CheckRow("tenant", tenant, placement.backend, placement.database, status, problem)
        )
    return rows


def render(rows: list[CheckRow]) -> str:
    """A plain-text table: KIND NAME BACKEND DATABASE STATUS."""
    header = ("KIND", "NAME", "BACKEND", "DATABASE", "STATUS")
    table = [header] + [
        (row.kind, row.name, row.backend, row.database or "-", row.status) for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in table
    ]
    problems = sum(row.problem for row in rows)
    lines.append(f"{problems} problem{'s' if problems != 1 else ''}")
    return "\n".join(lines)
