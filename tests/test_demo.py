"""Demo seeding against a real FalkorDB server."""

from __future__ import annotations

import uuid

import pytest

from graphgate.backends.base import QueryLimits
from graphgate.backends.falkordb import FalkorDBBackend
from graphgate.demo import seed_demo

pytestmark = pytest.mark.falkordb

LIMITS = QueryLimits(timeout=10.0)
COUNTS = """
MATCH (n) WITH labels(n)[0] AS label, count(n) AS nodes
RETURN label, nodes ORDER BY label
"""
RELS = "MATCH ()-[r]->() RETURN type(r) AS type, count(r) AS n ORDER BY type"


async def snapshot(backend: FalkorDBBackend, database: str) -> tuple[object, object]:
    nodes = await backend.read(database, COUNTS, None, LIMITS)
    rels = await backend.read(database, RELS, None, LIMITS)
    return nodes.rows, rels.rows


async def test_seeding_twice_creates_no_duplicates(falkordb_backend: FalkorDBBackend) -> None:
    suffix = uuid.uuid4().hex[:8]
    catalog = {"acme": f"acme_{suffix}", "globex": f"globex_{suffix}"}
    await seed_demo(falkordb_backend, catalog)
    first = {db: await snapshot(falkordb_backend, db) for db in catalog.values()}
    await seed_demo(falkordb_backend, catalog)
    second = {db: await snapshot(falkordb_backend, db) for db in catalog.values()}
    assert first == second

    acme_nodes, acme_rels = first[catalog["acme"]]
    globex_nodes, globex_rels = first[catalog["globex"]]
    assert acme_nodes == [["Company", 2], ["Person", 5], ["Project", 3]]
    assert acme_rels == [["KNOWS", 4], ["WORKS_AT", 5], ["WORKS_ON", 5]]
    assert globex_nodes == [["Customer", 2], ["Order", 3], ["Product", 4], ["Supplier", 3]]
    assert globex_rels == [["CONTAINS", 5], ["PLACED", 3], ["SUPPLIES", 4]]

    for database, expected in (
        (catalog["acme"], {("Person", "name"), ("Company", "name"), ("Project", "name")}),
        (catalog["globex"], {("Product", "sku"), ("Supplier", "name"), ("Order", "number")}),
    ):
        schema = await falkordb_backend.schema(database, LIMITS)
        indexed = {(i.label, p) for i in schema.indexes for p in i.properties}
        assert indexed == expected


async def test_the_demo_data_answers_questions(falkordb_backend: FalkorDBBackend) -> None:
    suffix = uuid.uuid4().hex[:8]
    catalog = {"acme": f"a_{suffix}", "globex": f"g_{suffix}"}
    await seed_demo(falkordb_backend, catalog)
    team = await falkordb_backend.read(
        catalog["acme"],
        "MATCH (p:Person)-[w:WORKS_ON]->(:Project {name: 'Rocket Skates'}) "
        "RETURN p.name, w.role ORDER BY p.name",
        None,
        LIMITS,
    )
    assert team.rows == [["Alice Johnson", "lead"], ["Bob Smith", "developer"]]
    order = await falkordb_backend.read(
        catalog["globex"],
        "MATCH (:Customer {name: 'Hank Scorpio'})-[:PLACED]->(o:Order)-[c:CONTAINS]->(p) "
        "RETURN o.number, o.placed, p.sku, c.quantity ORDER BY o.number, p.sku",
        None,
        LIMITS,
    )
    assert order.rows == [
        [1001, "2024-03-01", "G-200", 20],
        [1001, "2024-03-01", "W-100", 500],
        [1003, "2024-04-11", "C-400", 50],
        [1003, "2024-04-11", "W-100", 100],
    ]


async def test_other_tenant_names_use_the_first_two_entries(
    falkordb_backend: FalkorDBBackend,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    catalog = {"red": f"red_{suffix}", "blue": f"blue_{suffix}", "green": f"green_{suffix}"}
    await seed_demo(falkordb_backend, catalog)
    names = await falkordb_backend.list_databases()
    assert catalog["red"] in names and catalog["blue"] in names
    assert catalog["green"] not in names
    people = await falkordb_backend.read(
        catalog["red"], "MATCH (p:Person) RETURN count(p)", None, LIMITS
    )
    assert people.rows == [[5]]
    products = await falkordb_backend.read(
        catalog["blue"], "MATCH (p:Product) RETURN count(p)", None, LIMITS
    )
    assert products.rows == [[4]]
