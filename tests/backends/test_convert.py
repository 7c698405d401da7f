"""Value conversion: every FalkorDB type from a real server, plus the shape builders."""

from __future__ import annotations

import enum
import json
import time
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from graphgate.backends.base import QueryLimits
from graphgate.backends.convert import (
    Converter,
    falkordb_converter,
    iso_duration,
    json_float,
    node_dict,
    path_dict,
    relationship_dict,
)
from graphgate.backends.falkordb import FalkorDBBackend

LIMITS = QueryLimits(row_limit=5000, timeout=10.0)


async def one_row(backend: FalkorDBBackend, graph: str, query: str) -> dict[str, Any]:
    result = await backend.read(graph, query, None, LIMITS)
    assert len(result.rows) == 1
    row = dict(zip(result.columns, result.rows[0], strict=True))
    json.dumps(row, allow_nan=False)  # strictly JSON-ready
    return row


@pytest.mark.falkordb
async def test_graph_values(falkordb_backend: FalkorDBBackend, graph_name: str) -> None:
    await falkordb_backend.write(
        graph_name,
        "CREATE (:Person:Admin {name: 'Ann', scores: [1, 2.5], meta: 'm'})"
        "-[:KNOWS {since: 2020}]->(:Person {name: 'Bo'})<-[:LIKES]-(:Thing)",
        None,
        LIMITS,
    )
    row = await one_row(
        falkordb_backend,
        graph_name,
        "MATCH p = (a:Admin)-[k:KNOWS]->(b)<-[l:LIKES]-(t) RETURN a, k, b, p, [a, b] AS pair, "
        "{first: a, rel: k} AS m, id(a) AS aid, id(b) AS bid, id(t) AS tid, id(k) AS kid, "
        "id(l) AS lid",
    )
    aid, bid, tid, kid, lid = (row[key] for key in ("aid", "bid", "tid", "kid", "lid"))
    ann = {
        "id": aid,
        "labels": ["Person", "Admin"],
        "properties": {"name": "Ann", "scores": [1, 2.5], "meta": "m"},
    }
    bo = {"id": bid, "labels": ["Person"], "properties": {"name": "Bo"}}
    knows = {"id": kid, "type": "KNOWS", "start": aid, "end": bid, "properties": {"since": 2020}}
    assert row["a"] == ann
    assert row["k"] == knows
    assert row["b"] == bo
    assert row["pair"] == [ann, bo]
    assert row["m"] == {"first": ann, "rel": knows}
    path = row["p"]
    assert [node["id"] for node in path["nodes"]] == [aid, bid, tid]
    assert path["nodes"][0] == ann
    assert path["nodes"][2] == {"id": tid, "labels": ["Thing"], "properties": {}}
    # Direction is kept: LIKES points from the last node back to Bo.
    assert path["relationships"] == [
        knows,
        {"id": lid, "type": "LIKES", "start": tid, "end": bid, "properties": {}},
    ]
    assert set(path) == {"nodes", "relationships"}


@pytest.mark.falkordb
async def test_scalar_and_temporal_values(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    await falkordb_backend.write(graph_name, "CREATE ()", None, LIMITS)
    row = await one_row(
        falkordb_backend,
        graph_name,
        "RETURN null AS n, true AS t, 7 AS i, -1.25 AS f, 'text' AS s, "
        "[1, 'a', [null]] AS l, {a: {b: [1]}} AS m, "
        "point({latitude: 52.5, longitude: 13.4}) AS pt, vecf32([1.0, 0.5]) AS v, "
        "date('2024-02-29') AS d, localtime('23:59:58') AS lt, "
        "localdatetime('2024-01-02T03:04:05') AS ldt, "
        "duration('P1Y2M3DT4H5M6S') AS dur, duration('PT0S') AS zero, "
        "1e308 * 10 AS inf, -1e308 * 10 AS ninf",
    )
    assert row == {
        "n": None,
        "t": True,
        "i": 7,
        "f": -1.25,
        "s": "text",
        "l": [1, "a", [None]],
        "m": {"a": {"b": [1]}},
        # FalkorDB stores point coordinates as 32-bit floats.
        "pt": {"latitude": 52.5, "longitude": pytest.approx(13.4, rel=1e-6)},
        "v": [1.0, 0.5],
        "d": "2024-02-29",
        "lt": "23:59:58",
        "ldt": "2024-01-02T03:04:05",
        "dur": "P1Y2M3DT4H5M6S",
        "zero": "PT0S",
        "inf": "Infinity",
        "ninf": "-Infinity",
    }
    assert type(row["m"]) is dict


@pytest.mark.falkordb
async def test_conversion_is_cheaper_than_the_client_parse(
    falkordb_backend: FalkorDBBackend, graph_name: str
) -> None:
    """1,000 nodes convert in at most twice the client's own parse time (in practice far less)."""
    from falkordb.asyncio.query_result import QueryResult

    await falkordb_backend.write(
        graph_name,
        "UNWIND range(1, 1000) AS i CREATE (:Item:Stock {id: i, name: 'item ' + toString(i), "
        "price: i * 1.5, tags: ['a', 'b'], active: i % 2 = 0})",
        None,
        LIMITS,
    )
    graph = falkordb_backend._graph(graph_name)
    reply = await graph.execute_command(
        "GRAPH.RO_QUERY", graph_name, "MATCH (n:Item) RETURN n", "--compact"
    )
    convert = falkordb_converter()
    parse_times, convert_times = [], []
    for _ in range(5):
        parsed = QueryResult(graph)
        started = time.perf_counter()
        await parsed.parse(reply)
        parse_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        rows = [convert.row(record) for record in parsed.result_set]
        convert_times.append(time.perf_counter() - started)
    assert len(rows) == 1000 and rows[0][0]["labels"] == ["Item", "Stock"]
    assert min(convert_times) <= 2 * min(parse_times)


# -- without a server ---------------------------------------------------------------------------


def test_shape_builders_are_shared_shapes() -> None:
    node = node_dict("4:abc:1", ("A",), {"x": 1})
    rel = relationship_dict("5:abc:2", "R", "4:abc:1", "4:abc:3", {})
    assert node == {"id": "4:abc:1", "labels": ["A"], "properties": {"x": 1}}
    assert rel == {
        "id": "5:abc:2",
        "type": "R",
        "start": "4:abc:1",
        "end": "4:abc:3",
        "properties": {},
    }
    assert path_dict([node], [rel]) == {"nodes": [node], "relationships": [rel]}


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ({}, "PT0S"),
        ({"years": 1}, "P1Y"),
        ({"days": 3, "seconds": 0.5}, "P3DT0.5S"),
        ({"hours": 4, "minutes": 5}, "PT4H5M"),
        ({"months": 14, "seconds": 61}, "P14MT61S"),
    ],
)
def test_iso_duration(parts: dict[str, Any], expected: str) -> None:
    assert iso_duration(**parts) == expected


def test_json_float() -> None:
    assert json_float(1.5) == 1.5
    assert json_float(float("nan")) == "NaN"
    assert json_float(float("-inf")) == "-Infinity"


class Colour(enum.IntEnum):
    RED = 1


class Unknown:
    def __str__(self) -> str:
        return "unknown!"


def test_generic_values() -> None:
    convert = Converter({})
    value = {
        "tuple": (1, 2),
        "ordered": OrderedDict(a=1),
        "date": date(2024, 1, 2),
        "aware": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "delta": timedelta(days=1, hours=2, seconds=3.5),
        "negative": timedelta(hours=-1),
        "enum": Colour.RED,
        "unknown": Unknown(),
        "nan": float("nan"),
        3: "int key",
    }
    assert convert(value) == {
        "tuple": [1, 2],
        "ordered": {"a": 1},
        "date": "2024-01-02",
        "aware": "2024-01-02T03:04:05+00:00",
        "delta": "P1DT2H3.5S",
        "negative": "-PT1H",
        "enum": 1,
        "unknown": "unknown!",
        "nan": "NaN",
        "3": "int key",
    }
    assert type(convert(Colour.RED)) is int


def test_handlers_extend_and_override() -> None:
    class Special:
        pass

    convert = Converter({Special: lambda _c, _v: "special", date: lambda _c, v: v.year})
    assert convert([Special(), date(1999, 1, 1)]) == ["special", 1999]
