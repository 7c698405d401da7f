"""Bolt driver values (Neo4j, Memgraph) in the JSON shapes of `graphgate.backends.convert`.

Identifiers are the servers' ``element_id`` strings: Neo4j 5 deprecates the
integer ``id()`` and may reuse it after deletes, and Memgraph reports its
integer id as the element id anyway. Temporal values keep Python's
``isoformat`` spelling when they fit Python's types (so a Neo4j and a
FalkorDB date-time read the same), and the driver's own ISO form with
nanoseconds, or outside Python's year range, when they do not.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from graphgate.backends.base import JSONValue
from graphgate.backends.convert import (
    Converter,
    Handler,
    iso_duration,
    json_float,
    node_dict,
    path_dict,
    relationship_dict,
)

__all__ = ["bolt_converter"]


def _properties(converter: Converter, entity: Any) -> JSONValue:
    return {str(key): converter(value) for key, value in entity.items()}


def _node(converter: Converter, node: Any) -> JSONValue:
    return node_dict(node.element_id, sorted(node.labels), _properties(converter, node))


def _endpoint(node: Any) -> JSONValue:
    return None if node is None else node.element_id


def _relationship(converter: Converter, rel: Any) -> JSONValue:
    return relationship_dict(
        rel.element_id,
        rel.type,
        _endpoint(rel.start_node),
        _endpoint(rel.end_node),
        _properties(converter, rel),
    )


def _path(converter: Converter, path: Any) -> JSONValue:
    return path_dict(
        [_node(converter, node) for node in path.nodes],
        [_relationship(converter, rel) for rel in path.relationships],
    )


def _temporal(_: Converter, value: Any) -> JSONValue:
    # Whole microseconds fit Python's types; finer values or years outside
    # 1..9999 keep the driver's nanosecond ISO text rather than losing digits.
    if getattr(value, "nanosecond", 0) % 1000 == 0:
        try:
            return str(value.to_native().isoformat())
        except (ValueError, OverflowError):
            pass
    return str(value.iso_format())


def _duration(_: Converter, value: Any) -> JSONValue:
    years, months, days = value.years_months_days
    hours, minutes, seconds, nanoseconds = value.hours_minutes_seconds_nanoseconds
    return iso_duration(
        years=int(years),
        months=int(months),
        days=int(days),
        hours=int(hours),
        minutes=int(minutes),
        seconds=seconds + nanoseconds / 1_000_000_000,
    )


def _cartesian(_: Converter, point: Any) -> JSONValue:
    shape = {"x": json_float(point.x), "y": json_float(point.y)}
    if len(point) > 2:
        shape["z"] = json_float(point.z)
    return shape


def _geographic(_: Converter, point: Any) -> JSONValue:
    shape = {"latitude": json_float(point.latitude), "longitude": json_float(point.longitude)}
    if len(point) > 2:
        shape["height"] = json_float(point.height)
    return shape


def _generic_point(_: Converter, point: Any) -> JSONValue:
    # A point with an SRID the driver has no class for: plain coordinates.
    return [json_float(float(coordinate)) for coordinate in point]


def _bytes(_: Converter, value: Any) -> JSONValue:
    """Byte arrays as base64 text: JSON has no bytes, and a list of ints is 4x larger."""
    return base64.b64encode(bytes(value)).decode("ascii")


def _vector(converter: Converter, value: Any) -> JSONValue:
    return converter(list(value.to_native()))


def _bolt_handlers() -> Mapping[type, Handler]:
    from neo4j import graph, spatial, time, vector

    return MappingProxyType(
        {
            graph.Node: _node,
            graph.Relationship: _relationship,
            graph.Path: _path,
            time.Date: _temporal,
            time.Time: _temporal,
            time.DateTime: _temporal,
            time.Duration: _duration,
            spatial.CartesianPoint: _cartesian,
            spatial.WGS84Point: _geographic,
            spatial.Point: _generic_point,
            bytes: _bytes,
            bytearray: _bytes,
            vector.Vector: _vector,
        }
    )


def bolt_converter() -> Converter:
    """A converter for values returned by the ``neo4j`` driver.

    The driver makes one `Relationship` subclass per relationship type; the
    converter finds the handler along the MRO once per class.
    """
    return Converter(_bolt_handlers())
