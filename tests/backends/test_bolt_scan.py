"""The Cypher tokenizer, the procedure policy, Neo4j plan facts and Bolt value shapes.

Plans here are the shapes Neo4j 5.26.30 returned for ``EXPLAIN`` (recorded
while writing `graphgate.backends.dialects`); the live tests in
test_bolt_neo4j.py run the same statements against the real server.
"""

from __future__ import annotations

from typing import Any

import pytest

from graphgate.backends.bolt_convert import bolt_converter
from graphgate.backends.cypher_scan import require_single_statement, scan, tokenize
from graphgate.backends.dialects import PlanFacts, enforce, guess_dialect, neo4j_plan_facts
from graphgate.backends.procedures import DEFAULT_ALLOWED, ProcedurePolicy
from graphgate.errors import QueryError, QueryRefused, ReadOnlyViolation

POLICY = ProcedurePolicy()
INNOCENT = scan("RETURN 1")
"""A text with nothing to refuse, so that a plan's facts are tested alone."""


def refuse(text: str, *, allow_file_access: bool = False) -> None:
    found = scan(text)
    require_single_statement(found)
    enforce(PlanFacts(), found, POLICY, read_only=False, allow_file_access=allow_file_access)


# -- tokenizer ------------------------------------------------------------------------------


def test_tokens_skip_strings_comments_and_backticks() -> None:
    tokens = tokenize(
        "MATCH (n) // USE system\n/* SHOW USERS */ WHERE n.x = 'USE \\' x' "
        'AND n.y = "a;b" RETURN n.`we``ird` AS `USE`'
    )
    kinds = [(t.kind, t.text) for t in tokens]
    assert ("string", "'USE \\' x'") in kinds
    assert ("string", '"a;b"') in kinds
    assert ("name", "we`ird") in kinds
    assert ("name", "USE") in kinds
    assert not any(t.kind == "word" and t.upper in {"SHOW", "SYSTEM"} for t in tokens)


@pytest.mark.parametrize(
    "text", ["RETURN 'open", 'RETURN "open', "RETURN `open", "RETURN 1 /* open"]
)
def test_unterminated_literals_are_errors(text: str) -> None:
    with pytest.raises(QueryError):
        tokenize(text)


def test_parameters_numbers_and_unicode_words() -> None:
    tokens = tokenize("RETURN $p, $`odd name`, 1.5e3, 0x1F, 1..3, námě")
    assert [t.text for t in tokens if t.kind == "param"] == ["p", "odd name"]
    assert [t.text for t in tokens if t.kind == "number"] == ["1.5e3", "0x1F", "1", "3"]
    assert tokens[-1].kind == "word" and tokens[-1].text == "námě"


# -- statements ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "MATCH (n) RETURN n; MATCH (m) DETACH DELETE m",
        "RETURN 1;RETURN 2",
        "RETURN 1 ; /* hidden */ CREATE (:X)",
    ],
)
def test_more_than_one_statement_is_refused(text: str) -> None:
    with pytest.raises(QueryRefused, match="statements"):
        require_single_statement(scan(text))


def test_trailing_semicolons_and_strings_with_semicolons_are_one_statement() -> None:
    found = scan("RETURN 'a;b' AS x ;  // done\n")
    require_single_statement(found)
    assert found.statements == 1
    assert "RETURN 'a;b' AS x ;"[: found.body_end] == "RETURN 'a;b' AS x "[: found.body_end]


def test_empty_query() -> None:
    with pytest.raises(QueryError, match="empty"):
        require_single_statement(scan("  // nothing\n"))


def test_body_skips_explain_and_profile() -> None:
    text = "EXPLAIN MATCH (n) RETURN n"
    found = scan(text)
    assert found.prefix == "EXPLAIN"
    assert text[found.body_start : found.body_end] == "MATCH (n) RETURN n"
    assert scan("PROFILE RETURN 1").prefix == "PROFILE"
    pinned = "CYPHER 5 MATCH (n) RETURN n"
    found = scan(pinned)
    assert found.prefix == "" and pinned[found.body_start : found.body_end] == pinned
    assert found.kind == "cypher"


# -- USE and administration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "USE system SHOW USERS",
        "use neo4j MATCH (n) RETURN n",
        "uSe `other-db` MATCH (n) RETURN n",
        "/* c */ USE other MATCH (n) RETURN n",
        "EXPLAIN USE other RETURN 1",
        "CYPHER 5 USE other RETURN 1",
        "CALL { USE other MATCH (n) RETURN n } RETURN n",
        "CALL () { USE other RETURN 1 AS x } RETURN x",
        "MATCH (n) RETURN n UNION ALL USE other MATCH (n) RETURN n",
        "USE graph.byName('other') RETURN 1",
        "USE DATABASE tenant_b",
        "use database tenant_b",
        "U\u200bSE other RETURN 1",
        "\u200bUSE other RETURN 1",
        "USE\u200bother RETURN 1",
        "USE\u00a0other RETURN 1",
        "USE\u3000other RETURN 1",
    ],
)
def test_use_clauses_are_refused(text: str) -> None:
    with pytest.raises(QueryRefused, match="USE"):
        refuse(text)


@pytest.mark.parametrize(
    "text",
    [
        "RETURN 'USE system' AS s",
        'RETURN "USE other" AS s',
        "MATCH (n) // USE other\nRETURN n",
        "MATCH (n) /* USE other */ RETURN n",
        "MATCH (use:Use) RETURN use.use AS use",
        "RETURN {use: 1} AS m",
        "WITH 1 AS use RETURN use",
        "MATCH (n) WHERE n.name = $use RETURN n",
        "RETURN `USE` AS x",
    ],
)
def test_use_in_literals_comments_and_names_is_fine(text: str) -> None:
    refuse(text)


@pytest.mark.parametrize(
    "text",
    [
        "SHOW DATABASES",
        "show databases",
        "SHOW DEFAULT DATABASE",
        "SHOW HOME DATABASE",
        "CREATE DATABASE foo",
        "CREATE OR REPLACE DATABASE foo",
        "CREATE COMPOSITE DATABASE c",
        "DROP DATABASE foo IF EXISTS",
        "ALTER DATABASE foo SET ACCESS READ ONLY",
        "START DATABASE foo",
        "STOP DATABASE foo",
        "CREATE ALIAS a FOR DATABASE b",
        "SHOW USERS",
        "SHOW CURRENT USER",
        "CREATE USER bob SET PASSWORD 'x'",
        "CREATE OR REPLACE USER bob SET PASSWORD 'x'",
        "ALTER CURRENT USER SET PASSWORD FROM 'a' TO 'b'",
        "RENAME USER a TO b",
        "DROP ROLE r",
        "SHOW ROLES",
        "SHOW POPULATED ROLES",
        "SHOW ROLE admin PRIVILEGES",
        "SHOW USER bob PRIVILEGES",
        "SHOW PRIVILEGES",
        "GRANT ROLE admin TO bob",
        "grant all on database * to r",
        "DENY READ {*} ON GRAPH * TO r",
        "REVOKE ROLE admin FROM bob",
        "SHOW TRANSACTIONS",
        "TERMINATE TRANSACTIONS 'neo4j-transaction-1'",
        "SHOW SETTINGS",
        "SHOW SERVERS",
        # Memgraph
        "SET PASSWORD TO 'x' REPLACE 'y'",
        "SET ROLE FOR bob TO admin",
        "CLEAR ROLE FOR bob",
        "SHOW STORAGE INFO",
        "STORAGE MODE IN_MEMORY_ANALYTICAL",
        "FREE MEMORY",
        "CREATE SNAPSHOT",
        "DUMP DATABASE",
        "REGISTER REPLICA r SYNC TO '10.0.0.1'",
        "SHOW REPLICATION ROLE",
        "SET DATABASE SETTING 'x' TO 'y'",
        "SHOW CONFIG",
        "CREATE TRIGGER t ON CREATE BEFORE COMMIT EXECUTE CREATE (:X)",
        "LOCK DATA DIRECTORY",
        "SUSPEND DATABASE tenant_b",
        "RESUME DATABASE tenant_b",
        "RENAME DATABASE tenant_b TO tenant_c",
        "SHOW DATABASE PRIVILEGES FOR bob",
        "GRANT DATABASE tenant_b TO bob",
        "SET MAIN DATABASE tenant_b FOR bob",
        "EXPLAIN SHOW DATABASES",
        "/* hi */ SHOW\tDATABASES",
        "SHOW\u00a0USERS",
        "SHO\u200bW USERS",
    ],
)
def test_administration_is_refused(text: str) -> None:
    with pytest.raises(QueryRefused):
        refuse(text)


@pytest.mark.parametrize(
    "text",
    [
        "CREATE (user:User {name: 'x'}) RETURN user",
        "CREATE INDEX users FOR (n:User) ON (n.name)",
        "CREATE INDEX ON :User(name)",
        "DROP CONSTRAINT databases IF EXISTS",
        "SHOW INDEXES",
        "SHOW CONSTRAINTS",
        "SHOW PROCEDURES",
        "MATCH (n) RETURN n.password AS password, n.role AS role",
        "RETURN 'GRANT ROLE x TO y' AS s",
    ],
)
def test_ordinary_statements_pass_the_text_check(text: str) -> None:
    refuse(text)


# -- statement kinds (Memgraph has no planner for system statements) -------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("MATCH (n) RETURN n", "cypher"),
        ("CREATE (n:X)", "cypher"),
        ("CREATE p = (a)-[:R]->(b) RETURN p", "cypher"),
        ("  // c\n create (n)", "cypher"),
        ("EXPLAIN MATCH (n) RETURN n", "cypher"),
        ("USING PERIODIC COMMIT 10 MATCH (n) SET n.x = 1", "cypher"),
        ("CALL mg.procedures() YIELD name RETURN name", "cypher"),
        ("LOAD CSV FROM '/x.csv' WITH HEADER AS row RETURN row", "cypher"),
        ("CREATE INDEX ON :Person(name)", "schema"),
        ("CREATE EDGE INDEX ON :KNOWS(since)", "schema"),
        ("CREATE POINT INDEX ON :Place(loc)", "schema"),
        ("CREATE TEXT INDEX idx ON :Doc", "schema"),
        ("CREATE VECTOR INDEX v ON :Doc(emb) WITH CONFIG {}", "schema"),
        ("DROP INDEX ON :Person(name)", "schema"),
        ("CREATE CONSTRAINT ON (n:P) ASSERT n.id IS UNIQUE", "schema"),
        ("DROP CONSTRAINT ON (n:P) ASSERT EXISTS (n.id)", "schema"),
        ("DROP ALL INDEXES", "schema"),
        ("SHOW INDEX INFO", "other"),
        ("SHOW DATABASES", "other"),
        ("CREATE DATABASE x", "other"),
        ("ANALYZE GRAPH", "other"),
        ("CREATE ENUM Status VALUES { Good, Bad }", "other"),
    ],
)
def test_statement_kind(text: str, kind: str) -> None:
    assert scan(text).kind == kind


# -- procedures, functions, files --------------------------------------------------------------


def test_procedure_and_function_names_are_read_through_backticks_and_case() -> None:
    found = scan(
        "CALL `apoc`.`load`.json('x') YIELD value "
        "CALL db.labels() YIELD label "
        "CALL { RETURN 1 AS one } "
        "RETURN apoc.text.join(['a'], ','), `apoc`.cypher.runFirstColumnSingle('x', {}), "
        "toUpper('x'), n.prop"
    )
    assert found.procedures == ["apoc.load.json", "db.labels"]
    assert found.functions == ["apoc.text.join", "apoc.cypher.runFirstColumnSingle"]


@pytest.mark.parametrize(
    "text",
    [
        "CALL dbms.components()",
        "CALL dbms.security.listUsers()",
        "CALL apoc.cypher.run('USE system SHOW USERS', {})",
        "CALL apoc.bolt.execute('bolt://localhost', 'MATCH (n) RETURN n', {})",
        "CALL apoc.periodic.iterate('MATCH (n) RETURN n', 'SET n.x = 1', {})",
        "CALL apoc.systemdb.execute('SHOW USERS')",
        "RETURN apoc.cypher.runFirstColumnSingle('RETURN 1', {})",
        "RETURN graph.names()",
        "CALL mg.load_all()",
        "CALL periodic.iterate('MATCH (n) RETURN n', 'SET n.x = 1', {batch_size: 10})",
        "CALL migrate.memgraph('MATCH (n) RETURN n', {}, {host: 'localhost'})",
        "CALL do.when(true, 'CREATE (:X)', 'RETURN 1', {})",
    ],
)
def test_never_allowed_procedures(text: str) -> None:
    with pytest.raises(QueryRefused, match="refused for everyone"):
        refuse(text, allow_file_access=True)


@pytest.mark.parametrize(
    "text",
    [
        "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row",
        "load csv with headers from 'https://example.com/x' as r return r",
        "CALL { LOAD CSV FROM 'x' AS r RETURN r } RETURN r",
        "LOAD PARQUET FROM '/x.parquet' AS row RETURN row",
        "LOAD JSONL FROM '/x.jsonl' AS row RETURN row",
        "CALL apoc.load.json('file:///etc/passwd')",
        "CALL apoc.import.csv([], [], {})",
        "CALL json_util.load_from_url('https://example.com')",
        "CALL migrate.postgresql('SELECT 1', {})",
    ],
)
def test_file_and_url_access_needs_the_setting(text: str) -> None:
    with pytest.raises(QueryRefused, match="allow_file_access"):
        refuse(text)


def test_file_access_setting_lets_loads_through_but_not_the_allow_list() -> None:
    refuse("LOAD CSV FROM 'file:///x.csv' AS r RETURN r", allow_file_access=True)
    with pytest.raises(QueryRefused, match="allow_procedures"):
        refuse("CALL apoc.load.json('file:///x')", allow_file_access=True)


def test_allow_and_deny_lists_are_globs() -> None:
    assert ProcedurePolicy.from_lists([], []).allow == DEFAULT_ALLOWED
    custom = ProcedurePolicy.from_lists(["db.*", "custom.read"], ["db.labels"])
    custom.check_procedure("DB.relationshipTypes", allow_file_access=False)
    custom.check_procedure("custom.read", allow_file_access=False)
    with pytest.raises(QueryRefused, match="deny_procedures"):
        custom.check_procedure("db.labels", allow_file_access=False)
    with pytest.raises(QueryRefused, match="allow_procedures"):
        custom.check_procedure("apoc.meta.schema", allow_file_access=False)
    everything = ProcedurePolicy.from_lists(["*"], [])
    everything.check_procedure("my.custom.proc", allow_file_access=False)
    with pytest.raises(QueryRefused, match="refused for everyone"):
        everything.check_procedure("dbms.listConfig", allow_file_access=False)
    with pytest.raises(QueryRefused, match="allow_file_access"):
        everything.check_procedure("apoc.load.csv", allow_file_access=False)


def test_functions_skip_the_allow_list_but_not_the_deny_list() -> None:
    policy = ProcedurePolicy.from_lists(["db.labels"], ["apoc.text.*"])
    policy.check_function("apoc.coll.sum", allow_file_access=False)
    with pytest.raises(QueryRefused, match="deny_procedures"):
        policy.check_function("apoc.text.join", allow_file_access=False)


# -- Neo4j plans, as measured on 5.26 -----------------------------------------------------------


def op(name: str, details: str = "", *children: dict[str, Any], **args: str) -> dict[str, Any]:
    return {
        "operatorType": name,
        "args": {"Details": details, **args},
        "identifiers": [],
        "children": list(children),
    }


READ_PLAN = op(
    "ProduceResults@neo4j",
    "n",
    op("AllNodesScan@neo4j", "n"),
    runtime="SLOTTED",
    planner="COST",
)


def test_guess_dialect_from_the_agent() -> None:
    assert guess_dialect("Neo4j/5.26.30") == "neo4j"
    assert guess_dialect("Neo4j/v5.11.0 compatible graph database server - Memgraph") == "memgraph"


def test_neo4j_read_plan_passes() -> None:
    facts = neo4j_plan_facts(READ_PLAN, "r", "neo4j")
    assert facts.operators == ["ProduceResults@neo4j", "AllNodesScan@neo4j"]
    enforce(facts, scan("MATCH (n) RETURN n"), POLICY, read_only=True, allow_file_access=False)


def test_neo4j_write_type_is_a_read_only_violation() -> None:
    plan = op("ProduceResults@neo4j", "", op("EmptyResult@neo4j", "", op("Create@neo4j", "(n:X)")))
    facts = neo4j_plan_facts(plan, "w", "neo4j")
    with pytest.raises(ReadOnlyViolation):
        enforce(facts, scan("CREATE (n:X)"), POLICY, read_only=True, allow_file_access=False)
    enforce(facts, scan("CREATE (n:X)"), POLICY, read_only=False, allow_file_access=False)


def test_neo4j_use_system_shows_only_in_the_operator_suffix() -> None:
    # EXPLAIN USE system CALL dbms.components() ...: summary.database stayed "neo4j".
    plan = {"operatorType": "dbms.components@system", "args": {"runtime": "SYSTEM"}}
    facts = neo4j_plan_facts(plan, "s", "neo4j")
    assert facts.foreign == ["system"]
    with pytest.raises(QueryRefused, match="another database"):
        enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=False)


@pytest.mark.parametrize(
    ("plan", "query_type"),
    [
        ({"operatorType": "AdministrationCommand@system", "args": {"runtime": "SYSTEM"}}, "s"),
        (op("ProduceResults@neo4j", "", op("ShowSettings@neo4j", "allSettings")), "r"),
        (op("ProduceResults@neo4j", "", op("ShowTransactions@neo4j", "")), "r"),
        (op("ProduceResults@neo4j", "", op("TerminateTransactions@neo4j", "")), "r"),
        (
            op(
                "ProduceResults@neo4j",
                "",
                op("ProcedureCall@neo4j", "dbms.listConfig() :: (name :: STRING)"),
            ),
            "s",
        ),
    ],
)
def test_neo4j_administration_plans_are_refused(plan: dict[str, Any], query_type: str) -> None:
    facts = neo4j_plan_facts(plan, query_type, "neo4j")
    with pytest.raises(QueryRefused):
        enforce(facts, INNOCENT, POLICY, read_only=False, allow_file_access=False)


def test_neo4j_schema_ddl_is_a_write_only() -> None:
    plan = op(
        "CreateIndex@neo4j",
        "RANGE INDEX FOR (:X) ON (a)",
        op("DoNothingIfExists(INDEX)@neo4j", "RANGE INDEX FOR (:X) ON (a)"),
        runtime="SCHEMA",
        planner="ADMINISTRATION",
    )
    facts = neo4j_plan_facts(plan, "s", "neo4j")
    assert facts.schema_only and not facts.admin
    text = scan("CREATE INDEX IF NOT EXISTS FOR (n:X) ON (n.a)")
    enforce(facts, text, POLICY, read_only=False, allow_file_access=False)
    with pytest.raises(ReadOnlyViolation):
        enforce(facts, text, POLICY, read_only=True, allow_file_access=False)


def test_neo4j_plan_procedures_and_load_csv() -> None:
    plan = op(
        "ProduceResults@neo4j",
        "label",
        op("ProcedureCall@neo4j", "db.labels() :: (label :: STRING)"),
        op("LoadCSV@neo4j", "r"),
    )
    facts = neo4j_plan_facts(plan, "r", "neo4j")
    assert facts.procedures == ["db.labels"]
    assert facts.loads == ["LOAD CSV"]
    with pytest.raises(QueryRefused, match="LOAD CSV"):
        enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=False)
    enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=True)


def test_neo4j_call_in_transactions_is_refused() -> None:
    plan = op("ProduceResults@neo4j", "", op("TransactionForeach@neo4j", ""))
    facts = neo4j_plan_facts(plan, "rw", "neo4j")
    with pytest.raises(QueryRefused, match="batches"):
        enforce(facts, INNOCENT, POLICY, read_only=False, allow_file_access=False)
    # The write path lets it through to run it as an auto-commit statement; reads never.
    enforce(facts, INNOCENT, POLICY, read_only=False, allow_file_access=False, allow_batched=True)
    with pytest.raises(QueryRefused, match="batches"):
        enforce(facts, INNOCENT, POLICY, read_only=True, allow_file_access=False)


def test_neo4j_database_suffix_compares_case_insensitively() -> None:
    facts = neo4j_plan_facts(READ_PLAN, "r", "NEO4J")
    assert facts.foreign == []


# -- Bolt value shapes ------------------------------------------------------------------------


def test_temporal_spatial_and_bytes_shapes() -> None:
    from neo4j import spatial, time

    convert = bolt_converter()
    assert convert(time.Date(2024, 1, 2)) == "2024-01-02"
    assert convert(time.DateTime(2024, 1, 2, 3, 4, 5, 123000000)) == "2024-01-02T03:04:05.123000"
    assert convert(time.DateTime(2024, 1, 2, 3, 4, 5, 123456789)) == "2024-01-02T03:04:05.123456789"
    assert convert(time.Time(1, 2, 3)) == "01:02:03"
    assert convert(time.Duration(months=14, days=3, seconds=3725, nanoseconds=500)) == (
        "P1Y2M3DT1H2M5.0000005S"
    )
    assert convert(time.Duration()) == "PT0S"
    assert convert(spatial.CartesianPoint((1, 2))) == {"x": 1.0, "y": 2.0}
    assert convert(spatial.CartesianPoint((1, 2, 3))) == {"x": 1.0, "y": 2.0, "z": 3.0}
    assert convert(spatial.WGS84Point((2.5, 1.5))) == {"latitude": 1.5, "longitude": 2.5}
    assert convert(spatial.WGS84Point((2.5, 1.5, 9))) == {
        "latitude": 1.5,
        "longitude": 2.5,
        "height": 9.0,
    }
    assert convert(b"\x00\x01") == "AAE="
    assert convert([float("nan"), {"k": float("inf")}]) == ["NaN", {"k": "Infinity"}]
