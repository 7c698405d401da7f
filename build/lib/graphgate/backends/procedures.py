"""Which procedures (and namespaced functions) a tenant's query may call.

Three tiers, checked in this order:

1. **Never**, for anyone: procedures that act on the server rather than on
   one database (``dbms.*``, Memgraph's ``mg.load``), that run Cypher text
   graphgate never saw (``apoc.cypher.*``, Memgraph's ``do.*``), that commit
   on their own outside the caller's transaction and time limit
   (``apoc.periodic.*``, ``periodic.*``), or that can open a connection to
   another database, possibly this same server's (``apoc.bolt.*``,
   ``migrate.memgraph``, ``migrate.neo4j``, composite ``graph.*``).
2. **Files, URLs and foreign databases** (``apoc.load.*``, ``apoc.import.*``,
   ``json_util.*``, ``migrate.*``, ...): only with ``allow_file_access``.
3. **The operator's lists**: ``deny_procedures`` always refuses; a
   procedure must match ``allow_procedures``, which defaults to a list of
   read-only, single-database built-ins (`DEFAULT_ALLOWED`). Patterns are
   shell globs, matched case-insensitively (``apoc.meta.*``, ``*``).

Namespaced *functions* (``apoc.text.join()``) go through tiers 1 and 2 and
``deny_procedures``, but not through the allow list: most are pure, and
listing every one would make the setting unusable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from graphgate.errors import QueryRefused

__all__ = ["DEFAULT_ALLOWED", "FILE_ACCESS", "NEVER", "ProcedurePolicy"]

NEVER: tuple[str, ...] = (
    # Neo4j: the DBMS, other databases, dynamic Cypher, work outside the transaction.
    "dbms.*",
    "graph.*",
    "apoc.systemdb.*",
    "apoc.cypher.*",
    "apoc.bolt.*",
    "apoc.periodic.*",
    "apoc.trigger.*",
    "apoc.custom.*",
    "apoc.uuid.*",
    "apoc.config.*",
    "apoc.dv.*",
    "apoc.util.sleep",
    # Memgraph: module loading, streams, dynamic Cypher, batched commits, other servers.
    "mg.load",
    "mg.load_all",
    "mg.create_module_file",
    "mg.update_module_file",
    "mg.delete_module_file",
    "mg.kafka_*",
    "mg.pulsar_*",
    "do.*",
    "periodic.*",
    "migrate.memgraph",
    "migrate.neo4j",
)

FILE_ACCESS: tuple[str, ...] = (
    "apoc.load.*",
    "apoc.import.*",
    "apoc.export.*",
    "apoc.log.*",
    "apoc.ml.*",
    "apoc.xml.*",
    "apoc.es.*",
    "apoc.mongo.*",
    "apoc.mongodb.*",
    "apoc.couchbase.*",
    "apoc.redis.*",
    "apoc.static.*",
    "json_util.*",
    "import_util.*",
    "export_util.*",
    "xml_module.*",
    "migrate.*",
    "llm.*",
    "llm_util.*",
)

DEFAULT_ALLOWED: tuple[str, ...] = (
    # Neo4j built-ins that stay inside the session's database.
    "db.labels",
    "db.relationshipTypes",
    "db.propertyKeys",
    "db.schema.*",
    "db.info",
    "db.ping",
    "db.awaitIndex",
    "db.awaitIndexes",
    "db.index.fulltext.queryNodes",
    "db.index.fulltext.queryRelationships",
    "db.index.vector.queryNodes",
    "db.index.vector.queryRelationships",
    "db.create.setNodeVectorProperty",
    "db.create.setRelationshipVectorProperty",
    "db.createLabel",
    "db.createProperty",
    "db.createRelationshipType",
    "apoc.meta.*",
    "apoc.path.*",
    "apoc.algo.*",
    "apoc.neighbors.*",
    "apoc.nodes.*",
    "apoc.coll.*",
    "apoc.map.*",
    "apoc.text.*",
    "apoc.create.*",
    "apoc.merge.*",
    "apoc.refactor.*",
    # Memgraph built-ins and MAGE read-only algorithms.
    "mg.procedures",
    "mg.functions",
    "schema.node_type_properties",
    "schema.rel_type_properties",
    "meta_util.*",
    "algo.*",
    "nxalg.*",
    "path.*",
    "pagerank.*",
    "betweenness_centrality.*",
    "degree_centrality.*",
    "community_detection.*",
    "weakly_connected_components.*",
    "node_similarity.*",
    "text_search.*",
    "vector_search.*",
)


def _matches(name: str, patterns: Iterable[str]) -> str | None:
    folded = name.casefold()
    for pattern in patterns:
        if fnmatchcase(folded, pattern.casefold()):
            return pattern
    return None


@dataclass(frozen=True, slots=True)
class ProcedurePolicy:
    """The operator's ``allow_procedures`` / ``deny_procedures`` with the fixed tiers."""

    allow: tuple[str, ...] = DEFAULT_ALLOWED
    deny: tuple[str, ...] = ()

    @classmethod
    def from_lists(cls, allow: Iterable[str], deny: Iterable[str]) -> ProcedurePolicy:
        """An empty ``allow`` means the defaults, not "nothing": say ``["*"]`` for everything."""
        allowed = tuple(pattern.strip() for pattern in allow if pattern.strip())
        denied = tuple(pattern.strip() for pattern in deny if pattern.strip())
        return cls(allow=allowed or DEFAULT_ALLOWED, deny=denied)

    def check_procedure(self, name: str, *, allow_file_access: bool) -> None:
        self._check(name, "procedure", allow_file_access=allow_file_access, use_allow_list=True)

    def check_function(self, name: str, *, allow_file_access: bool) -> None:
        self._check(name, "function", allow_file_access=allow_file_access, use_allow_list=False)

    def _check(
        self, name: str, what: str, *, allow_file_access: bool, use_allow_list: bool
    ) -> None:
        if _matches(name, NEVER):
            raise QueryRefused(
                f"{what} {name} is refused for everyone: it reaches beyond this database "
                "(the server, another database, or work outside this transaction)"
            )
        if not allow_file_access and _matches(name, FILE_ACCESS):
            raise QueryRefused(
                f"{what} {name} reads or writes files, URLs or other databases, "
                "which this server does not allow (allow_file_access is off)"
            )
        if _matches(name, self.deny):
            raise QueryRefused(f"{what} {name} is not allowed on this server (deny_procedures)")
        if use_allow_list and not _matches(name, self.allow):
            raise QueryRefused(
                f"{what} {name} is not allowed on this server; an operator can add it "
                "to allow_procedures"
            )
