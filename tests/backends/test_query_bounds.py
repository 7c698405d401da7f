"""The structural bound on query text: nesting depth and parse cost, read by the tokenizer.

Each hostile text here was measured stalling the embedded FalkorDB's parser
(BENCHMARKS.md, "Noisy neighbour"); each stays as a regression test. The
tool-level behaviour (every tool, a clear tool error, other tenants served)
is in tests/test_fair_share.py.
"""

from __future__ import annotations

import time

import pytest

from graphgate.backends.cypher_names import names_in
from graphgate.backends.cypher_scan import MAX_PARSE_COST, bound_structure, structure
from graphgate.errors import QueryError, QueryTooComplex

DEPTH = 12


def nested(depth: int, opener: str = "(", closer: str = ")") -> str:
    return opener * depth + "1" + closer * depth


HOSTILE = {
    "parentheses 30 deep (the issue's 70 characters)": "RETURN " + nested(30),
    "lists 20 deep": "RETURN " + nested(20, "[", "]"),
    "maps 16 deep": "RETURN " + "{a:" * 16 + "1" + "}" * 16,
    "lists of parentheses": "RETURN " + "[(" * 8 + "1" + ")]" * 8,
    "unary minus 20 deep": "RETURN " + "-" * 20 + "1",
    "unary plus 16 deep": "RETURN " + "+" * 16 + "1",
    "NOT 16 deep": "RETURN " + "NOT " * 16 + "true",
    "NOT ( 10 deep": "RETURN " + "NOT (" * 10 + "true" + ")" * 10,
    "minus and parentheses": "RETURN " + "-(" * 8 + "1" + ")" * 8,
    "signs after a closer, as if an arrow": "RETURN (1) " + "-" * 20 + "1",
    "100 groups 12 deep side by side": "RETURN " + "+".join([nested(12)] * 100),
    "3000 groups 10 deep side by side": "RETURN " + "+".join([nested(10)] * 3000),
    "7000 groups 6 deep": "RETURN " + "+".join([nested(6)] * 7000),
    "a 40,000-item list literal": "RETURN size([" + ",".join(["1"] * 40_000) + "])",
    "RETURN 1+1+… 49,000 terms": "RETURN " + "+".join(["1"] * 49_000),
    "14,000 WITH clauses": "MATCH (n) " + " WITH n" * 14_000 + " RETURN count(n)",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_texts_that_stall_the_parser_are_refused(text: str) -> None:
    with pytest.raises(QueryTooComplex) as refused:
        bound_structure(text, DEPTH)
    message = str(refused.value)
    assert "nest less deeply" in message or "$params" in message
    assert refused.value.code == "query_too_complex"


LEGITIMATE = [
    "MATCH (n) RETURN n LIMIT 10",
    "MATCH (a:Person {name: $name})-[:KNOWS]->(b)<-[:WORKS_AT]-(c)--(d) RETURN a, b, c, d",
    "MATCH (a)-[r:R*1..3]-(b) WHERE a.x > -1 AND NOT (a)-->(b) RETURN -a.x, +1, 2 - -3",
    "RETURN [x IN range(1, 3) | [y IN range(1, x) | {v: (x * (y + 1)), w: [y, -y]}]]",
    "MATCH (t) WHERE (t.a = 1 OR (t.b STARTS WITH 'a' AND NOT (t.c = 'b'))) RETURN t",
    "UNWIND $rows AS row MERGE (p:P {id: row.id}) SET p += row.props RETURN count(p)",
    "CALL { MATCH (n) RETURN n } IN TRANSACTIONS OF 100 ROWS RETURN count(*)",
    "RETURN " + nested(DEPTH),
    "RETURN " + "+".join([nested(12)] * 2),
    "RETURN " + "-" * DEPTH + "1",
    "RETURN size([" + ",".join(["1"] * 4_000) + "])",
    "MATCH (n) WHERE n.id IN [" + ",".join(f"'id-{i}'" for i in range(2_000)) + "] RETURN n",
    "RETURN '" + "(" * 50_000 + "' AS text_with_brackets",
]


@pytest.mark.parametrize("text", LEGITIMATE, ids=range(len(LEGITIMATE)))
def test_ordinary_queries_pass(text: str) -> None:
    bound_structure(text, DEPTH)


@pytest.mark.parametrize(
    "text",
    [
        "RETURN '((((((((((((((((((((' AS s",
        'RETURN "[[[[[[[[[[[[[[[[[[[[[" AS s',
        "RETURN 1 // ((((((((((((((((((((",
        "RETURN 1 /* {{{{{{{{{{{{{{{{{{{{{ */",
        "MATCH (`((((((((((((((((((((`) RETURN 1",
        "RETURN 'it\\'s ((((((((((((((((((((' AS s",
        "RETURN 1 AS `a``((((((((((((((((((((`",
    ],
)
def test_brackets_in_strings_comments_and_names_do_not_count(text: str) -> None:
    assert structure(text).depth <= 1
    bound_structure(text, DEPTH)


def test_depth_counts_every_kind_of_bracket_and_prefix_operators() -> None:
    assert structure("RETURN ([{a: 1}])").depth == 3
    assert structure("RETURN - - - 1").depth == 3
    assert structure("RETURN NOT NOT true").depth == 2
    assert structure("RETURN -(-(1))").depth == 4
    # Binary operators join operands; they do not nest.
    assert structure("RETURN 1 - 2 - 3 + x - y").depth == 0
    # An arrow's dashes open no levels of their own beyond the one pattern.
    assert structure("MATCH (a)-->(b)<--(c)-[r]-(d) RETURN a").depth <= 2


def test_a_stray_closer_leaves_the_refusal_to_the_database() -> None:
    assert structure("RETURN )))) (1)").depth == 1


def test_format_characters_are_read_both_ways() -> None:
    # Dropping the zero-width space makes \' an escaped quote, so the string
    # runs on and hides the brackets; reading it as a space ends the string
    # and shows them. The worse reading counts.
    text = "RETURN '\\\u200b'" + " + " + nested(20) + " + '"
    with pytest.raises(QueryTooComplex):
        bound_structure(text, DEPTH)


def test_reading_stops_once_the_cost_is_passed() -> None:
    huge = "RETURN [" + ",".join(["1"] * 49_000) + "]"
    assert structure(huge, stop_above=MAX_PARSE_COST).cost == MAX_PARSE_COST + 1
    assert structure(huge).cost > 90_000


def test_unterminated_text_is_a_query_error_not_a_crash() -> None:
    with pytest.raises(QueryError, match="unterminated string"):
        bound_structure("RETURN '" + "(" * 40, DEPTH)


def test_naming_thousands_of_labels_stays_linear() -> None:
    """The confirmation question and explain_query read every label a text names."""
    text = "MATCH (n" + "".join(f":L{i}" for i in range(5_000)) + ") RETURN n"
    started = time.perf_counter()
    names = names_in(text)
    assert len(names.labels) == 5_000 and names.labels[:2] == ["L0", "L1"]
    assert time.perf_counter() - started < 0.2
