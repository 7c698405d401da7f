"""Sample data for ``--demo``: two tenants with deliberately different graphs.

Different shapes (people and projects vs. products and orders) make it
obvious in a demo which tenant a query reached. Everything is written with
MERGE on a key property and indexes are created only when missing, so every
start seeds again without duplicating anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from graphgate.backends.base import Backend, QueryLimits

__all__ = ["DemoUser", "demo_users", "seed_demo"]

_LIMITS = QueryLimits(row_limit=1000, timeout=30.0)
MAX_DEMO_TENANTS = 10
"""At most this many tenants in one demo user's token (a reader of all, with a big catalog)."""

_PEOPLE: dict[str, Any] = {
    "people": [
        {"name": "Alice Johnson", "title": "Engineering Lead", "born": 1984},
        {"name": "Bob Smith", "title": "Backend Engineer", "born": 1990},
        {"name": "Carol Diaz", "title": "Product Manager", "born": 1987},
        {"name": "Dan Okafor", "title": "Data Scientist", "born": 1993},
        {"name": "Erin Walsh", "title": "Designer", "born": 1995},
    ],
    "companies": [
        {"name": "Acme Corp", "industry": "Manufacturing", "founded": 1949},
        {"name": "Roadrunner Logistics", "industry": "Logistics", "founded": 2001},
    ],
    "projects": [
        {"name": "Rocket Skates", "status": "active", "budget": 250000.0},
        {"name": "Giant Magnet", "status": "planned", "budget": 90000.0},
        {"name": "Tunnel Paint", "status": "done", "budget": 12000.0},
    ],
    "works_at": [
        {"person": "Alice Johnson", "company": "Acme Corp", "since": 2015},
        {"person": "Bob Smith", "company": "Acme Corp", "since": 2019},
        {"person": "Carol Diaz", "company": "Acme Corp", "since": 2017},
        {"person": "Dan Okafor", "company": "Roadrunner Logistics", "since": 2021},
        {"person": "Erin Walsh", "company": "Acme Corp", "since": 2022},
    ],
    "works_on": [
        {"person": "Alice Johnson", "project": "Rocket Skates", "role": "lead"},
        {"person": "Bob Smith", "project": "Rocket Skates", "role": "developer"},
        {"person": "Carol Diaz", "project": "Giant Magnet", "role": "owner"},
        {"person": "Dan Okafor", "project": "Giant Magnet", "role": "analyst"},
        {"person": "Erin Walsh", "project": "Tunnel Paint", "role": "designer"},
    ],
    "knows": [
        {"a": "Alice Johnson", "b": "Bob Smith"},
        {"a": "Alice Johnson", "b": "Carol Diaz"},
        {"a": "Carol Diaz", "b": "Dan Okafor"},
        {"a": "Bob Smith", "b": "Erin Walsh"},
    ],
}

_PEOPLE_QUERY = """
UNWIND $people AS p MERGE (n:Person {name: p.name}) SET n.title = p.title, n.born = p.born
WITH count(*) AS _
UNWIND $companies AS c MERGE (n:Company {name: c.name})
  SET n.industry = c.industry, n.founded = c.founded
WITH count(*) AS _
UNWIND $projects AS p MERGE (n:Project {name: p.name}) SET n.status = p.status, n.budget = p.budget
WITH count(*) AS _
UNWIND $works_at AS w
  MATCH (p:Person {name: w.person}), (c:Company {name: w.company})
  MERGE (p)-[r:WORKS_AT]->(c) SET r.since = w.since
WITH count(*) AS _
UNWIND $works_on AS w
  MATCH (p:Person {name: w.person}), (j:Project {name: w.project})
  MERGE (p)-[r:WORKS_ON]->(j) SET r.role = w.role
WITH count(*) AS _
UNWIND $knows AS k
  MATCH (a:Person {name: k.a}), (b:Person {name: k.b})
  MERGE (a)-[:KNOWS]->(b)
RETURN count(*) AS done
"""

_SHOP: dict[str, Any] = {
    "suppliers": [
        {"name": "Initech Components", "country": "US"},
        {"name": "Umbrella Plastics", "country": "UK"},
        {"name": "Soylent Metals", "country": "DE"},
    ],
    "products": [
        {"sku": "W-100", "name": "Widget", "price": 2.5, "supplier": "Initech Components"},
        {"sku": "G-200", "name": "Gadget", "price": 12.0, "supplier": "Initech Components"},
        {"sku": "S-300", "name": "Sprocket", "price": 0.75, "supplier": "Soylent Metals"},
        {"sku": "C-400", "name": "Casing", "price": 4.2, "supplier": "Umbrella Plastics"},
    ],
    "customers": [
        {"name": "Hank Scorpio", "city": "Cypress Creek"},
        {"name": "Frank Grimes", "city": "Springfield"},
    ],
    "orders": [
        {
            "number": 1001,
            "customer": "Hank Scorpio",
            "placed": "2024-03-01",
            "lines": [{"sku": "W-100", "quantity": 500}, {"sku": "G-200", "quantity": 20}],
        },
        {
            "number": 1002,
            "customer": "Frank Grimes",
            "placed": "2024-03-04",
            "lines": [{"sku": "S-300", "quantity": 1000}],
        },
        {
            "number": 1003,
            "customer": "Hank Scorpio",
            "placed": "2024-04-11",
            "lines": [{"sku": "C-400", "quantity": 50}, {"sku": "W-100", "quantity": 100}],
        },
    ],
}

_SHOP_QUERY = """
UNWIND $suppliers AS s MERGE (n:Supplier {name: s.name}) SET n.country = s.country
WITH count(*) AS _
UNWIND $products AS p
  MERGE (n:Product {sku: p.sku}) SET n.name = p.name, n.price = p.price
  WITH n, p MATCH (s:Supplier {name: p.supplier}) MERGE (s)-[:SUPPLIES]->(n)
WITH count(*) AS _
UNWIND $customers AS c MERGE (n:Customer {name: c.name}) SET n.city = c.city
WITH count(*) AS _
UNWIND $orders AS o
  MERGE (n:Order {number: o.number}) SET n.placed = date(o.placed)
  WITH n, o MATCH (c:Customer {name: o.customer}) MERGE (c)-[:PLACED]->(n)
  WITH n, o UNWIND o.lines AS line
  MATCH (p:Product {sku: line.sku})
  MERGE (n)-[r:CONTAINS]->(p) SET r.quantity = line.quantity
RETURN count(*) AS done
"""

_INDEXES: dict[str, list[tuple[str, str]]] = {
    "people": [("Person", "name"), ("Company", "name"), ("Project", "name")],
    "shop": [("Product", "sku"), ("Supplier", "name"), ("Order", "number")],
}


@dataclass(frozen=True, slots=True)
class DemoUser:
    """Someone to sign in as on the dev issuer's sign-in page.

    ``tenants`` are token entries (``name`` or ``name:write``), exactly what
    ``graphgate token --tenants`` takes; ``admin`` grants every tenant.
    """

    name: str
    tenants: tuple[str, ...] = ()
    admin: bool = False

    def access(self) -> list[tuple[str, str]]:
        """(tenant, what this user may do there), as the sign-in page lists it."""
        if self.admin:
            return [("every tenant", "read, write, admin")]
        shown = []
        for entry in self.tenants:
            name, _, access = entry.partition(":")
            shown.append((name, "read, write" if access == "write" else "read"))
        return shown


def demo_users(tenants: Sequence[str]) -> list[DemoUser]:
    """The users the dev issuer offers, derived from the catalog's tenant names.

    One user per kind of access, so a demo shows each: a reader of the first
    tenant, a writer of the last, a reader of all (with two or more tenants;
    the first `MAX_DEMO_TENANTS`)
    and an admin. Writes still need ``--allow-writes`` on the server.
    """
    names = sorted(tenants)
    users: list[DemoUser] = []
    if names:
        users.append(DemoUser("alice", (names[0],)))
        users.append(DemoUser("bob", (f"{names[-1]}:write",)))
    if len(names) > 1:
        users.append(DemoUser("carol", tuple(names[:MAX_DEMO_TENANTS])))
    users.append(DemoUser("admin", admin=True))
    return users


async def seed_demo(backend: Backend, catalog: Mapping[str, str]) -> None:
    """Seed the first two catalog databases; a no-op when the data is there.

    The tenants named "acme" and "globex" are preferred when present;
    otherwise the first two catalog entries are used, in catalog order.
    """
    preferred = [catalog[name] for name in ("acme", "globex") if name in catalog]
    databases = preferred if len(preferred) == 2 else list(catalog.values())[:2]
    seeds = [("people", _PEOPLE_QUERY, _PEOPLE), ("shop", _SHOP_QUERY, _SHOP)]
    for database, (kind, query, params) in zip(databases, seeds, strict=False):
        # Indexes first: the MERGEs then find their keys through them.
        await _ensure_indexes(backend, database, _INDEXES[kind])
        await backend.write(database, query, params, _LIMITS)


async def _ensure_indexes(backend: Backend, database: str, wanted: list[tuple[str, str]]) -> None:
    schema = await backend.schema(database, _LIMITS)
    present = {
        (index.label, prop)
        for index in schema.indexes
        if index.entity == "node"
        for prop in index.properties
    }
    for label, prop in wanted:
        if (label, prop) not in present:
            await backend.write(
                database, f"CREATE INDEX FOR (n:{label}) ON (n.{prop})", None, _LIMITS
            )
