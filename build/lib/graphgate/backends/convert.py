"""Turning driver values into the JSON shapes every backend returns.

Every backend answers with the same shapes, so a client cannot tell FalkorDB
from Neo4j by the result format:

* node: ``{"id", "labels", "properties"}``
* relationship: ``{"id", "type", "start", "end", "properties"}``
* path: ``{"nodes": [...], "relationships": [...]}``
* temporal values: ISO 8601 strings; durations: ISO 8601 durations
* points: ``{"latitude", "longitude"}`` (geographic) or ``{"x", "y"[, "z"]}``
* floats that JSON cannot carry (NaN, ±Infinity): the strings "NaN",
  "Infinity", "-Infinity"

`Converter` dispatches on ``type(value)`` through a dict rather than a chain
of isinstance checks, because conversion runs once per cell of every result
(1,000 nodes must convert in less than the driver's own parse time). Other
backends build their own `Converter` from the shape builders here.
"""

from __future__ import annotations

import importlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any

from graphgate.backends.base import JSONValue

__all__ = [
    "Converter",
    "Handler",
    "falkordb_converter",
    "iso_duration",
    "json_float",
    "node_dict",
    "path_dict",
    "relationship_dict",
]

Handler = Callable[["Converter", Any], JSONValue]
"""Converts one value of one type; gets the converter to recurse into children."""

_PASSTHROUGH = frozenset({str, int, bool, type(None)})


def node_dict(node_id: JSONValue, labels: Iterable[str], properties: JSONValue) -> JSONValue:
    return {"id": node_id, "labels": list(labels), "properties": properties}


def relationship_dict(
    rel_id: JSONValue,
    rel_type: str,
    start: JSONValue,
    end: JSONValue,
    properties: JSONValue,
) -> JSONValue:
    return {"id": rel_id, "type": rel_type, "start": start, "end": end, "properties": properties}


def path_dict(nodes: list[JSONValue], relationships: list[JSONValue]) -> JSONValue:
    return {"nodes": nodes, "relationships": relationships}


def json_float(value: float) -> JSONValue:
    """Strict JSON has no NaN or Infinity; strings keep the information."""
    if math.isfinite(value):
        return value
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def iso_duration(
    years: int = 0,
    months: int = 0,
    days: int = 0,
    hours: int = 0,
    minutes: int = 0,
    seconds: float = 0,
) -> str:
    """ISO 8601 duration, e.g. ``P1Y2M3DT4H5M6S``; ``PT0S`` for zero."""
    date_part = "".join(
        f"{amount}{unit}" for amount, unit in ((years, "Y"), (months, "M"), (days, "D")) if amount
    )
    whole = seconds == int(seconds)
    seconds_text = str(int(seconds)) if whole else f"{seconds:.9f}".rstrip("0")
    time_part = "".join(
        f"{amount}{unit}"
        for amount, unit in ((hours, "H"), (minutes, "M"), (seconds_text, "S"))
        if amount and amount != "0"
    )
    if not date_part and not time_part:
        return "PT0S"
    return "P" + date_part + ("T" + time_part if time_part else "")


class Converter:
    """Recursively converts driver values to JSON-ready data.

    Lists, tuples, dicts and the JSON scalars are handled here; everything
    driver-specific comes in ``handlers``. A type with no handler is looked up
    along its MRO once (the answer is remembered on this instance); a value
    nothing knows becomes ``str(value)`` rather than failing a whole result.
    """

    def __init__(self, handlers: Mapping[type, Handler]) -> None:
        self._handlers: dict[type, Handler] = {
            list: _convert_list,
            tuple: _convert_list,
            dict: _convert_map,
            OrderedDict: _convert_map,
            float: _convert_float,
            date: _convert_isoformat,
            datetime: _convert_isoformat,
            time: _convert_isoformat,
            timedelta: _convert_timedelta,
        }
        self._handlers.update(handlers)

    def __call__(self, value: Any) -> JSONValue:
        kind = type(value)
        if kind in _PASSTHROUGH:
            return value
        handler = self._handlers.get(kind)
        if handler is None:
            handler = self._resolve(kind)
        return handler(self, value)

    def row(self, values: Iterable[Any]) -> list[JSONValue]:
        return [self(value) for value in values]

    def _resolve(self, kind: type) -> Handler:
        for base in kind.__mro__[1:]:
            if base in _PASSTHROUGH:
                handler: Handler = _passthrough_cast(base)
                break
            found = self._handlers.get(base)
            if found is not None:
                handler = found
                break
        else:
            handler = _convert_str
        self._handlers[kind] = handler
        return handler


def _passthrough_cast(base: type) -> Handler:
    # Subclasses of str/int/bool (enums, numpy-free int subclasses) collapse to
    # the plain type so the JSON encoder never sees them.
    def convert(_: Converter, value: Any) -> JSONValue:
        return base(value)

    return convert


def _convert_list(converter: Converter, value: Any) -> JSONValue:
    return [converter(item) for item in value]


def _convert_map(converter: Converter, value: Any) -> JSONValue:
    return {str(key): converter(item) for key, item in value.items()}


def _convert_float(_: Converter, value: Any) -> JSONValue:
    return json_float(value)


def _convert_isoformat(_: Converter, value: Any) -> JSONValue:
    return str(value.isoformat())


def _convert_timedelta(_: Converter, value: Any) -> JSONValue:
    total = value.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return sign + iso_duration(
        days=int(days), hours=int(hours), minutes=int(minutes), seconds=round(seconds, 6)
    )


def _convert_str(_: Converter, value: Any) -> JSONValue:
    return str(value)


# -- FalkorDB ----------------------------------------------------------------------------


def _falkordb_node(converter: Converter, node: Any) -> JSONValue:
    return node_dict(node.id, node.labels or (), _convert_map(converter, node.properties))


def _falkordb_edge(converter: Converter, edge: Any) -> JSONValue:
    start = edge.src_node
    end = edge.dest_node
    return relationship_dict(
        edge.id,
        edge.relation,
        start if type(start) is int else start.id,
        end if type(end) is int else end.id,
        _convert_map(converter, edge.properties),
    )


def _falkordb_path(converter: Converter, path: Any) -> JSONValue:
    return path_dict(
        [_falkordb_node(converter, node) for node in path.nodes()],
        [_falkordb_edge(converter, edge) for edge in path.edges()],
    )


def _falkordb_datetime(_: Converter, value: Any) -> JSONValue:
    # FalkorDB's datetime is a *local* date-time (localdatetime()); the client
    # stamps it UTC only because it decodes an epoch number. Dropping the
    # offset reports what the database stores, as Neo4j's LocalDateTime would.
    return str(value.replace(tzinfo=None).isoformat())


def _falkordb_duration(_: Converter, value: Any) -> JSONValue:
    seconds = value.seconds + value.microseconds / 1_000_000
    text = iso_duration(
        years=value.years,
        months=value.months,
        days=value.days,
        hours=value.hours,
        minutes=value.minutes,
        seconds=seconds,
    )
    return text


def _falkordb_handlers() -> Mapping[type, Handler]:
    # dateutil ships without type stubs; only the class object is needed here.
    relativedelta = importlib.import_module("dateutil.relativedelta").relativedelta
    from falkordb.edge import Edge
    from falkordb.node import Node
    from falkordb.path import Path

    return MappingProxyType(
        {
            Node: _falkordb_node,
            Edge: _falkordb_edge,
            Path: _falkordb_path,
            datetime: _falkordb_datetime,
            relativedelta: _falkordb_duration,
        }
    )


def falkordb_converter() -> Converter:
    """A converter for values parsed by the ``falkordb`` client.

    Points arrive from the client as ``{"latitude", "longitude"}`` dicts and
    vectors as lists of floats, so the generic handlers already fit them.
    """
    return Converter(_falkordb_handlers())
