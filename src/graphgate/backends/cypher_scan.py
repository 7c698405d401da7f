"""A Cypher tokenizer, and the few facts graphgate reads from query text with it.

The planner is the judge of what a query does (see `dialects`). Text is read
only where no plan exists (Memgraph's system statements cannot be
``EXPLAIN``-ed) and as a second, independent check. Reading it through a
tokenizer rather than regexes means a keyword inside a string literal, a
comment or a backtick identifier is never mistaken for a clause, and a clause
hidden behind a comment or odd whitespace is still found.

Unicode format characters (zero-width space and friends) are the one place
two lexers could disagree: one may drop them inside a word, another may
treat them as a separator. `scan` reads the text both ways and reports the
union, so either reading of ``U\\u200bSE`` or ``USE\\u200bsystem`` is caught.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from graphgate.errors import QueryError, QueryRefused, QueryTooComplex

__all__ = [
    "MAX_PARSE_COST",
    "Scan",
    "StatementKind",
    "Structure",
    "Token",
    "bound_structure",
    "iter_tokens",
    "missing_parameters",
    "scan",
    "split_statements",
    "structure",
    "tokenize",
]

TokenKind = Literal["word", "name", "string", "number", "param", "punct"]
StatementKind = Literal["cypher", "schema", "other"]


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    """For ``name`` the identifier without backticks; for ``string`` the raw literal."""
    start: int
    end: int

    @property
    def upper(self) -> str:
        """Keyword spelling; only bare words can be keywords."""
        return self.text.upper() if self.kind == "word" else ""


def _is_format(ch: str) -> bool:
    return unicodedata.category(ch) == "Cf"


def _word_start(ch: str) -> bool:
    return ch.isalpha() or ch == "_"


def _word_part(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or unicodedata.category(ch) in {"Mn", "Mc", "Pc"}


def tokenize(text: str) -> list[Token]:
    """Split Cypher text into tokens; comments and whitespace are dropped.

    Raises `QueryError` for an unterminated string, comment or backtick
    identifier: the database would refuse it too, and guessing where it ends
    could hide a clause.
    """
    return list(iter_tokens(text))


def iter_tokens(text: str) -> Iterator[Token]:
    """`tokenize`, one token at a time, for readers that may stop early."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("//", i):
            while i < n and text[i] not in "\n\r\u2028\u2029\x85":
                i += 1
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                raise QueryError("unterminated /* comment in the query")
            i = close + 2
        elif ch in "'\"":
            end = _string_end(text, i)
            yield Token("string", text[i:end], i, end)
            i = end
        elif ch == "`":
            name, end = _backtick(text, i)
            yield Token("name", name, i, end)
            i = end
        elif ch == "$":
            j = i + 1
            if j < n and text[j] == "`":
                name, j = _backtick(text, j)
            else:
                while j < n and _word_part(text[j]):
                    j += 1
                name = text[i + 1 : j]
            yield Token("param", name, i, j)
            i = j
        elif ch.isdigit():
            j = i + 1
            while j < n and (
                _word_part(text[j]) or (text[j] == "." and j + 1 < n and text[j + 1].isdigit())
            ):
                j += 1
            yield Token("number", text[i:j], i, j)
            i = j
        elif _word_start(ch):
            j = i + 1
            while j < n and _word_part(text[j]):
                j += 1
            yield Token("word", text[i:j], i, j)
            i = j
        else:
            yield Token("punct", ch, i, i + 1)
            i += 1


def _string_end(text: str, start: int) -> int:
    quote = text[start]
    i, n = start + 1, len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise QueryError("unterminated string literal in the query")


def _backtick(text: str, start: int) -> tuple[str, int]:
    parts: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        close = text.find("`", i)
        if close < 0:
            break
        parts.append(text[i:close])
        if close + 1 < n and text[close + 1] == "`":  # `` is an escaped backtick
            parts.append("`")
            i = close + 2
            continue
        return "".join(parts), close + 1
    raise QueryError("unterminated `identifier` in the query")


def split_statements(tokens: list[Token]) -> list[list[Token]]:
    """Statements separated by ``;``, empty ones dropped."""
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.kind == "punct" and token.text == ";":
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


# -- what a statement is -------------------------------------------------------------------

_PREFIX_WORDS = frozenset({"EXPLAIN", "PROFILE"})
# Clauses a Cypher query (as opposed to a system statement) can start with.
_CYPHER_START = frozenset(
    {
        "MATCH", "OPTIONAL", "MERGE", "WITH", "UNWIND", "RETURN", "CALL", "LOAD", "FOREACH",
        "DETACH", "DELETE", "REMOVE", "FINISH", "FILTER", "LET", "USE", "UNION",
    }
)  # fmt: skip
_SCHEMA_OBJECTS = frozenset({"INDEX", "INDEXES", "CONSTRAINT", "CONSTRAINTS"})
_SCHEMA_MODIFIERS = frozenset(
    {"EDGE", "POINT", "TEXT", "VECTOR", "GLOBAL", "ALL", "RANGE", "FULLTEXT", "LOOKUP"}
)
# Statements no Cypher query starts with: administration of the server itself.
_ADMIN_FIRST = frozenset(
    {
        "GRANT", "DENY", "REVOKE", "SET", "CLEAR", "TERMINATE", "KILL", "FREE", "LOCK", "UNLOCK",
        "DUMP", "RECOVER", "REGISTER", "UNREGISTER", "RELOAD", "ENABLE", "DISABLE", "DEALLOCATE",
        "REALLOCATE", "DRYRUN", "DEMOTE", "PROMOTE", "FORCE", "ANALYZE", "STORAGE", "SUSPEND",
        "RESUME",
    }
)  # fmt: skip
_ADMIN_VERBS = frozenset({"CREATE", "DROP", "ALTER", "SHOW", "START", "STOP", "RENAME", "USE"})
_ADMIN_MODIFIERS = frozenset(
    {"OR", "REPLACE", "COMPOSITE", "STANDARD", "DEFAULT", "HOME", "CURRENT", "ALL", "POPULATED",
     "BUILT", "IN", "ACTIVE", "REMOTE", "LOCAL"}
)  # fmt: skip
_ADMIN_OBJECTS = frozenset(
    {
        "DATABASE", "DATABASES", "ALIAS", "ALIASES", "USER", "USERS", "ROLE", "ROLES",
        "PRIVILEGE", "PRIVILEGES", "SERVER", "SERVERS", "TRANSACTION", "TRANSACTIONS",
        "SETTING", "SETTINGS", "PASSWORD", "REPLICA", "REPLICAS", "REPLICATION", "COORDINATOR",
        "INSTANCE", "INSTANCES", "LICENSE", "CONFIG", "STORAGE", "SNAPSHOT", "SNAPSHOTS",
        "TRIGGER", "TRIGGERS", "STREAM", "STREAMS", "GRAPH", "METRICS", "PROFILE", "PROFILES",
        "SESSION", "CLUSTER", "LEADER",
    }
)  # fmt: skip
_LOAD_KINDS = frozenset({"CSV", "PARQUET", "JSONL"})
_USE_PRECEDERS = frozenset({"{", "UNION", "ALL", "DISTINCT"})


@dataclass(slots=True)
class Scan:
    """Facts read from one query's text. Names are as written, dotted."""

    statements: int = 0
    kind: StatementKind = "other"
    body_start: int = 0
    """Offset where the query proper starts, after a leading EXPLAIN or PROFILE."""
    body_end: int = 0
    """Offset just past the last token of the (single) statement."""
    prefix: str = ""
    """"EXPLAIN" or "PROFILE" when the text starts with one, else ""."""
    admin: str | None = None
    """Why the statement administers the server (databases, users, ...), if it does."""
    use_clause: bool = False
    procedures: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)
    """File loading clauses: "LOAD CSV", "LOAD PARQUET", "LOAD JSONL"."""

    def merge(self, other: Scan) -> None:
        self.admin = self.admin or other.admin
        self.use_clause = self.use_clause or other.use_clause
        self.statements = max(self.statements, other.statements)
        for mine, theirs in (
            (self.procedures, other.procedures),
            (self.functions, other.functions),
            (self.loads, other.loads),
        ):
            mine.extend(name for name in theirs if name not in mine)
        if other.kind != self.kind:
            self.kind = "other"


def scan(text: str) -> Scan:
    """Read ``text`` with format characters dropped, and again with them as spaces."""
    result = _scan_tokens(tokenize(text))
    if any(_is_format(ch) for ch in text):
        dropped = "".join(ch for ch in text if not _is_format(ch))
        spaced = "".join(" " if _is_format(ch) else ch for ch in text)
        result.merge(_scan_tokens(tokenize(dropped)))
        result.merge(_scan_tokens(tokenize(spaced)))
    return result


def _scan_tokens(tokens: list[Token]) -> Scan:
    statements = split_statements(tokens)
    result = Scan(statements=len(statements))
    if not statements:
        return result
    for statement in statements:
        _read_statement(statement, result)
    first = statements[0]
    # Only a leading EXPLAIN/PROFILE is cut off; Neo4j's CYPHER options stay, so
    # that the plan checked is made with the same language version as the run.
    lead = 1 if first[0].upper in _PREFIX_WORDS else 0
    result.prefix = first[0].upper if lead else ""
    result.body_start = first[lead].start if lead < len(first) else first[-1].end
    result.body_end = first[-1].end
    result.kind = _kind(first[_skip_prefix(first) :])
    return result


def _skip_prefix(tokens: list[Token]) -> int:
    """Index of the first token after EXPLAIN/PROFILE and Neo4j's ``CYPHER 5 key=value``."""
    i = 0
    while i < len(tokens):
        word = tokens[i].upper
        if word in _PREFIX_WORDS:
            i += 1
        elif word == "CYPHER":
            i += 1
            while i < len(tokens) and (
                tokens[i].kind == "number"
                or (
                    i + 2 < len(tokens)
                    and tokens[i].kind == "word"
                    and tokens[i + 1].text == "="
                    and tokens[i].upper not in _CYPHER_START
                )
            ):
                i += 3 if tokens[i].kind == "word" else 1
        else:
            break
    return i


def _kind(tokens: list[Token]) -> StatementKind:
    words = _leading_words(tokens)
    if not tokens:
        return "other"
    first = tokens[0].upper
    if first == "USING":  # Memgraph: USING PERIODIC COMMIT n <query>
        return "cypher"
    if first == "CREATE":
        follower = tokens[1] if len(tokens) > 1 else None
        if follower is not None and (
            follower.text == "("
            or (len(tokens) > 2 and follower.kind in {"word", "name"} and tokens[2].text == "=")
        ):
            return "cypher"
    if first in _CYPHER_START:
        return "cypher"
    if first in {"CREATE", "DROP"}:
        rest = [word for word in words[1:4] if word not in _SCHEMA_MODIFIERS]
        if rest and rest[0] in _SCHEMA_OBJECTS:
            return "schema"
    return "other"


def _leading_words(tokens: list[Token]) -> list[str]:
    words = []
    for token in tokens:
        if token.kind != "word":
            break
        words.append(token.upper)
    return words


def _admin_reason(tokens: list[Token]) -> str | None:
    words = _leading_words(tokens)
    if not words:
        return None
    if words[0] in _ADMIN_FIRST:
        return f"{words[0]} statements administer the server"
    if words[0] in _ADMIN_VERBS:
        rest = words[1:]
        while rest and rest[0] in _ADMIN_MODIFIERS:
            rest = rest[1:]
        if rest and rest[0] in _ADMIN_OBJECTS:
            return f"{words[0]} {rest[0]} administers the server, not a database"
        # SHOW USER bob PRIVILEGES, SHOW ROLE r PRIVILEGES: the object comes later.
        if words[0] == "SHOW" and any(word in {"PRIVILEGE", "PRIVILEGES"} for word in words):
            return "SHOW ... PRIVILEGES administers the server"
    return None


def _read_statement(tokens: list[Token], result: Scan) -> None:
    body = _skip_prefix(tokens)
    reason = _admin_reason(tokens[body:])
    if reason and result.admin is None:
        result.admin = reason
    previous: Token | None = tokens[body - 1] if body else None
    i = body
    while i < len(tokens):
        token = tokens[i]
        word = token.upper
        if (
            word == "USE"
            and i + 1 < len(tokens)
            and tokens[i + 1].kind in {"word", "name"}
            and (i == body or _text_of(previous) in _USE_PRECEDERS)
        ):
            result.use_clause = True
        elif word == "LOAD" and i + 1 < len(tokens) and tokens[i + 1].upper in _LOAD_KINDS:
            result.loads.append(f"LOAD {tokens[i + 1].upper}")
        elif word == "CALL" and i + 1 < len(tokens) and tokens[i + 1].kind in {"word", "name"}:
            name, after = _qualified(tokens, i + 1)
            if not (previous is not None and previous.text in {".", ":"}):
                _add(result.procedures, name)
            previous, i = tokens[after - 1], after
            continue
        elif token.kind in {"word", "name"} and _text_of(previous) not in {".", ":", "$"}:
            name, after = _qualified(tokens, i)
            if "." in name and after < len(tokens) and tokens[after].text == "(":
                _add(result.functions, name)
            if after > i + 1:
                previous, i = tokens[after - 1], after
                continue
        previous = token
        i += 1


def _text_of(token: Token | None) -> str:
    return "" if token is None else (token.upper or token.text)


def _qualified(tokens: list[Token], start: int) -> tuple[str, int]:
    """``a.b.c`` (each part a word or backtick name) starting at ``start``."""
    parts = [tokens[start].text]
    i = start + 1
    while (
        i + 1 < len(tokens)
        and tokens[i].text == "."
        and tokens[i].kind == "punct"
        and tokens[i + 1].kind in {"word", "name"}
    ):
        parts.append(tokens[i + 1].text)
        i += 2
    return ".".join(parts), i


def _add(names: list[str], name: str) -> None:
    if name not in names:
        names.append(name)


def require_single_statement(found: Scan) -> None:
    """One statement per call: a second one would run unchecked by the planner."""
    if found.statements == 0:
        raise QueryError("the query is empty")
    if found.statements > 1:
        raise QueryRefused(
            f"the query holds {found.statements} statements separated by ';': send one at a time"
        )


# -- what a query costs to parse ----------------------------------------------------------

MAX_PARSE_COST = 10_000
"""Parse cost a query may have: about 50 ms of FalkorDB's parser on one core.

Measured on the embedded FalkorDB 4.16 (BENCHMARKS.md, "Noisy neighbour"):
flat text costs a few microseconds per token (a 40,000-item list literal,
80,000 tokens: 0.33 s), and the parser backtracks at every nesting level, so
a bracket at depth d costs as much as 2**(d-1) tokens (``RETURN ((…1…))`` 12
deep: 15 ms, 16 deep: 0.23 s) and groups side by side add up (100 groups 12
deep: 1.8 s). Prefix operators nest the same way (``RETURN ----…1`` 16 deep:
0.49 s, ``NOT NOT …`` 16 deep: 0.34 s). Parsing runs before the query's
timeout and holds one of the server's few threads, so the bound has to be on
the text; graphgate's own reading stops as soon as the bound is passed.
"""

_OPENERS = frozenset("([{")
_CLOSERS = frozenset(")]}")
_SIGNS = frozenset("+-")
# Words after which + and - begin an operand rather than join two.
_OPERAND_LEADS = frozenset(
    {
        "RETURN", "WITH", "WHERE", "AND", "OR", "XOR", "NOT", "IN", "WHEN", "THEN", "ELSE",
        "CASE", "UNWIND", "SET", "SKIP", "LIMIT", "BY", "IS", "CONTAINS", "STARTS", "ENDS",
        "DISTINCT", "AS", "YIELD",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Structure:
    """How hard a query's text is to parse, whatever it means."""

    depth: int
    """Deepest nesting of (), [], {} and prefix operators (-x, +x, NOT x)."""
    cost: int
    """One per token, plus 2**(d-1) for each level opened at depth d."""


_ARROW = frozenset("<>-")
_ARROW_DASHES = 2
"""Dashes after a ``)`` or ``]`` that draw a relationship (``)-->(``, ``)<--(``)."""


def _is_prefix(token: Token, previous: Token | None, arrow_dashes: int) -> bool:
    """Is ``token`` a prefix operator: NOT, or a sign where an operand must begin?

    ``arrow_dashes`` counts the dashes already seen since the last ``)`` or
    ``]``: the first two draw an arrow; any further one is a sign again.
    """
    if token.kind == "word":
        return token.upper == "NOT"
    if token.kind != "punct" or token.text not in _SIGNS:
        return False
    if 0 <= arrow_dashes < _ARROW_DASHES:
        return False
    if previous is None:
        return True
    if previous.kind == "punct":
        return previous.text not in _CLOSERS
    return previous.upper in _OPERAND_LEADS


def structure(text: str, stop_above: int | None = None) -> Structure:
    """The nesting and parse cost of ``text``, read with the tokenizer.

    Strings, comments and `quoted names` are single tokens, so brackets in
    them never count. A run of prefix operators nests like brackets until the
    operand it prefixes. Unbalanced brackets are left to the database to
    refuse: a stray closer never makes the depth negative. Reading stops once
    the cost passes ``stop_above``, so a huge text costs graphgate no more
    than a refused one.
    """
    depth = deepest = cost = 0
    prefixes = 0  # prefix operators since the last operand, nesting what follows
    outer: list[int] = []
    previous: Token | None = None
    arrow_dashes = -1  # dashes since the last ) or ], or -1 outside such a run
    for token in iter_tokens(text):
        cost += 1
        if token.kind == "punct" and token.text in _ARROW and arrow_dashes >= 0:
            prefix = _is_prefix(token, previous, arrow_dashes)
            arrow_dashes += token.text == "-"
        else:
            prefix = _is_prefix(token, previous, -1)
            arrow_dashes = 0 if token.kind == "punct" and token.text in ")]" else -1
        if prefix:
            prefixes += 1
            level = depth + prefixes
            cost += 1 << min(level - 1, 62)
            deepest = max(deepest, level)
        elif token.kind == "punct" and token.text in _OPENERS:
            outer.append(depth)
            depth += prefixes + 1
            prefixes = 0
            deepest = max(deepest, depth)
            cost += 1 << min(depth - 1, 62)
        elif token.kind == "punct" and token.text in _CLOSERS:
            depth = outer.pop() if outer else 0
            prefixes = 0
        else:
            prefixes = 0
        if stop_above is not None and cost > stop_above:
            break
        previous = token
    return Structure(deepest, cost)


def bound_structure(text: str, max_depth: int, max_cost: int = MAX_PARSE_COST) -> None:
    """Refuse, with `QueryTooComplex`, text too deep or too costly for the parser.

    A short text with no more brackets and operators than ``max_depth`` cannot
    exceed either bound and is let through unread. Format characters are
    read both ways, as in `scan`, and the worse reading counts: where one
    lexer ends a string another may not.
    """
    if len(text) <= max_depth or (
        len(text) <= max_cost
        and sum(text.count(ch) for ch in "([{+-") + text.upper().count("NOT") <= max_depth
    ):
        return
    found = structure(text, stop_above=max_cost)
    if any(_is_format(ch) for ch in text):
        for variant in (
            "".join(ch for ch in text if not _is_format(ch)),
            "".join(" " if _is_format(ch) else ch for ch in text),
        ):
            other = structure(variant, stop_above=max_cost)
            found = Structure(max(found.depth, other.depth), max(found.cost, other.cost))
    if found.depth > max_depth:
        raise QueryTooComplex(
            f"the query nests brackets or prefix operators {found.depth} deep; at most "
            f"{max_depth} is allowed: nest less deeply, for example by naming intermediate "
            "values with WITH or passing nested values as $params"
        )
    if found.cost > max_cost:
        raise QueryTooComplex(
            f"the query is too large for the database's parser to read safely (cost over "
            f"{max_cost:,}): pass long lists and maps as $params, split it into smaller "
            "queries, or nest less deeply"
        )


def missing_parameters(text: str, given: Iterable[str]) -> list[str]:
    """The ``$names`` the text uses that ``given`` lacks, in order of first use.

    Read only after a database refused a query, to name what to pass: each
    database words "missing parameter" its own way, or not at all. Numbered
    parameters (``$0``) are names like any other. A text that does not
    tokenize has nothing to say here.
    """
    have = set(given)
    try:
        used = [token.text for token in iter_tokens(text) if token.kind == "param"]
    except QueryError:
        return []
    return [name for name in dict.fromkeys(used) if name not in have]
