"""Fixtures that start real services once per test session live in tests/services/."""

pytest_plugins = [
    "tests.services.falkordb",
    "tests.services.redis",
    "tests.services.neo4j",
    "tests.services.keycloak",
    "tests.services.cimd",
    "tests.services.oidc_provider",
]
