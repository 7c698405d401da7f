"""The node labels and relationship types a query's text names.

Planners do not say it in one shape: FalkorDB's ``GRAPH.EXPLAIN`` shows
``Create`` without what it creates, Neo4j's operators name labels in free
text, Memgraph's in its own. The text does, in every dialect: ``:Name`` in a
node pattern or a label predicate is a label, ``:NAME`` in a relationship
pattern (``-[r:KNOWS|LIKES]->``) a relationship type. Map keys
(``{name: 'x'}``) and Neo4j's ``::`` casts are not names.

Used to tell the person confirming a write, and the model reading a plan,
what a query touches; never to decide what it may do (the database's
planner and read-only mode decide that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphgate.backends.cypher_scan import Token, tokenize

__all__ = ["Names", "names_in"]

_BLOCK_OPENERS = frozenset({"CALL", "EXISTS", "COUNT", "COLLECT", "FOREACH"})
_ALTERNATIVES = frozenset({"|", "&", "!"})


@dataclass(slots=True)
class Names:
    labels: list[str] = field(default_factory=list)
    relationship_types: list[str] = field(default_factory=list)


def _is_name(token: Token | None) -> bool:
    return token is not None and token.kind in ("word", "name")


def names_in(text: str) -> Names:
    """Labels and relationship types named in ``text``, in order of first appearance."""
    tokens = tokenize(text)
    found = Names()
    # A set beside each list: a text naming thousands of labels stays linear.
    seen_labels: set[str] = set()
    seen_types: set[str] = set()
    # What each open bracket is: "node" (, "rel" [ after a dash, "map" {, "other".
    stack: list[str] = []
    previous: Token | None = None
    naming = False  # inside a label or type expression, after a ':' name
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.kind == "punct":
            char = token.text
            if char == "(":
                stack.append("node")
            elif char == "[":
                dashed = previous is not None and previous.text in ("-", "<")
                stack.append("rel" if dashed else "other")
            elif char == "{":
                block = previous is not None and previous.upper in _BLOCK_OPENERS
                stack.append("other" if block else "map")
            elif char in ")]}" and stack:
                stack.pop()
            where = stack[-1] if stack else "top"
            opens_name = char == ":" and not (previous is not None and previous.text == ":")
            opens_name = opens_name and not (following is not None and following.text == ":")
            continues = naming and char in _ALTERNATIVES
            if (opens_name or continues) and where != "map" and _is_name(following):
                assert following is not None
                rel = where == "rel"
                target, seen = (
                    (found.relationship_types, seen_types) if rel else (found.labels, seen_labels)
                )
                if following.text not in seen:
                    seen.add(following.text)
                    target.append(following.text)
                naming = True
            elif char not in _ALTERNATIVES and char != ":":
                naming = False
        elif not (naming and previous is not None and previous.kind == "punct"):
            naming = False
        previous = token
    return found
