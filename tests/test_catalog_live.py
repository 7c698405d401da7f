"""Issue 15 with real servers: tenants on several backends, and a catalog that changes live.

One graphgate serves the embedded FalkorDB (``default``), two Neo4j Community
servers (``eu``: the session's shared one, ``us``: this module's own, which it
stops and starts) and the test FalkorDB server (``graphs``, with discovery).
Its settings file is mounted the way Kubernetes mounts a ConfigMap
(``graphgate.toml`` → ``..data/graphgate.toml``, ``..data`` → a versioned
directory swapped by one rename), and edited while MCP clients stay connected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from neo4j import AsyncGraphDatabase
from scripts.neo4j_server import Neo4jInstance

from graphgate.auth.dev import mint_dev_token
from graphgate.backends.base import QueryLimits
from graphgate.catalog_watch import SettingsSource
from graphgate.config import Settings, load_settings
from graphgate.server import build_parts
from tests.services._common import eventually, free_port
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import METRICS_HEADERS, METRICS_TOKEN, serve_http
from tests.services.mcp_results import tool, tool_error
from tests.services.neo4j import RestartableNeo4j

pytestmark = pytest.mark.asyncio(loop_scope="module")

RELOAD_BOUND = 2.0
"""Issue 15: a new tenant is served on the next call within 2 s of the file's change."""


class MountedConfig:
    """A settings file laid out as kubelet lays out a ConfigMap volume."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "graphgate.toml"
        self._version = 0

    def write(self, text: str) -> None:
        self._version += 1
        version = self.root / f"..v{self._version}"
        version.mkdir()
        (version / "graphgate.toml").write_text(text)
        link = self.root / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, self.root / "..data")  # the one atomic swap kubelet makes
        if not self.path.is_symlink():
            self.path.symlink_to("..data/graphgate.toml")


@dataclass
class Gateway:
    url: str
    settings: Settings
    config: MountedConfig
    base: str
    """The settings file without its [tenants] table."""
    markers: dict[str, str]
    graph_prefix: str
    secrets: Path

    def token(self, *tenants: str, admin: bool = False) -> str:
        return mint_dev_token(
            self.settings,
            sub=f"u-{uuid.uuid4().hex[:6]}",
            tenants=list(tenants),
            admin=admin,
            ttl=600,
        )

    def write_tenants(self, tenants: str, extra: str = "", top: str = "") -> None:
        """The file with ``tenants``; ``top`` holds top-level keys, ``extra`` more tables."""
        self.config.write(f"{top}\n{self.base}{extra}\n[tenants]\n{tenants}\n")


def _password_file(directory: Path, name: str, secret: str | None) -> Path:
    path = directory / name
    path.write_text(f"{secret or ''}\n")
    path.chmod(0o600)
    return path


BASE_TENANTS = """\
acme = "acme"
globex = { backend = "eu", database = "neo4j" }
initech = { backend = "us", database = "neo4j" }
"""


async def _mark_neo4j(uri: str, user: str, password: str, label: str, server: str) -> None:
    async with AsyncGraphDatabase.driver(uri, auth=(user, password)) as driver:
        await driver.execute_query(f"MERGE (m:{label} {{server: $server}})", server=server)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    neo4j_service: Neo4jInstance,
    second_neo4j: RestartableNeo4j,
    falkordb_service: FalkorDBService,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Gateway]:
    root = tmp_path_factory.mktemp("catalog")
    secrets_dir = root / "secrets"
    secrets_dir.mkdir()
    mount = root / "config"
    mount.mkdir()
    label = f"Marker_{uuid.uuid4().hex[:10]}"
    prefix = f"dsc{uuid.uuid4().hex[:6]}_"
    port = free_port()
    base = f"""\
host = "127.0.0.1"
port = {port}
auth = "dev"
data_dir = "{root / "data"}"
allow_writes = true
metrics_token = "{METRICS_TOKEN}"
embedded_memory_mb = 256

[backends.default]
url = "embedded"

[backends.eu]
url = "{neo4j_service.uri}"
user = "{neo4j_service.user}"
password_file = "{_password_file(secrets_dir, "eu", neo4j_service.password)}"

[backends.us]
url = "{second_neo4j.uri}"
user = "neo4j"
password_file = "{_password_file(secrets_dir, "us", second_neo4j.password)}"

[backends.graphs]
url = "{falkordb_service.url}"
password_file = "{_password_file(secrets_dir, "graphs", falkordb_service.password)}"
discover = true
discover_prefix = "{prefix}"
discover_interval = 3600
"""
    config = MountedConfig(mount)
    config.write(f"{base}\n[tenants]\n{BASE_TENANTS}")
    settings = load_settings(config.path)
    parts = build_parts(settings, SettingsSource(config.path))
    await _mark_neo4j(neo4j_service.uri, "neo4j", neo4j_service.password, label, "neo4j-eu")
    await _mark_neo4j(second_neo4j.uri, "neo4j", second_neo4j.password, label, "neo4j-us")
    async with serve_http(parts) as url:
        gateway = Gateway(url, settings, config, base, {}, prefix, secrets_dir)
        async with connected(gateway, gateway.token(admin=True)) as (client, _):
            await tool(
                client,
                "run_write_query",
                database="acme",
                query=f"MERGE (:{label} {{server: 'falkordb'}})",
            )
        gateway.markers["label"] = label
        yield gateway
    async with AsyncGraphDatabase.driver(
        neo4j_service.uri, auth=("neo4j", neo4j_service.password)
    ) as driver:
        await driver.execute_query(f"MATCH (m:{label}) DELETE m")


@asynccontextmanager
async def connected(gateway: Gateway, bearer: str) -> AsyncIterator[tuple[Client, set[str]]]:
    """One MCP session; the set collects every ``mcp-session-id`` the client sent."""
    sessions: set[str] = set()

    async def note(request: httpx2.Request) -> None:
        if "mcp-session-id" in request.headers:
            sessions.add(request.headers["mcp-session-id"])

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {bearer}"}, timeout=60, event_hooks={"request": [note]}
    )
    async with Client(
        streamable_http_client(f"{gateway.url}/mcp", http_client=http), mode="legacy"
    ) as client:  # type: ignore[arg-type]
        yield client, sessions


async def marker(client: Client, gateway: Gateway, tenant: str) -> str:
    label = gateway.markers["label"]
    answer = await tool(
        client, "run_query", database=tenant, query=f"MATCH (m:{label}) RETURN m.server"
    )
    return str(answer["rows"][0][0])


async def test_each_tenant_is_served_by_its_own_server(gateway: Gateway) -> None:
    async with connected(gateway, gateway.token("acme", "globex", "initech")) as (client, _):
        assert await marker(client, gateway, "acme") == "falkordb"
        assert await marker(client, gateway, "globex") == "neo4j-eu"
        assert await marker(client, gateway, "initech") == "neo4j-us"
        label = gateway.markers["label"]
        answer = await tool(client, "query_databases", query=f"MATCH (m:{label}) RETURN m.server")
        assert {name: result["rows"][0][0] for name, result in answer["results"].items()} == {
            "acme": "falkordb",
            "globex": "neo4j-eu",
            "initech": "neo4j-us",
        }
        listing = await tool(client, "list_databases")
        assert sorted(entry["name"] for entry in listing) == ["acme", "globex", "initech"]
        shown = str(listing)
        assert "bolt://" not in shown and "127.0.0.1" not in shown


async def test_a_backend_that_stops_fails_only_its_tenants_and_comes_back(
    gateway: Gateway, second_neo4j: RestartableNeo4j
) -> None:
    async with connected(gateway, gateway.token("acme", "globex", "initech")) as (client, _):
        second_neo4j.stop()
        try:
            error = await tool_error(client, "run_query", database="initech", query="RETURN 1")
            assert error.startswith("backend_unavailable"), error
            assert await marker(client, gateway, "acme") == "falkordb"
            assert await marker(client, gateway, "globex") == "neo4j-eu"
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
                ready = await http.get("/readyz")
            assert ready.status_code == 200
            states = {name: body["state"] for name, body in ready.json()["backends"].items()}
            assert states["us"] != "ready" and states["eu"] == states["default"] == "ready"
            assert "127.0.0.1" not in ready.text
        finally:
            instance = second_neo4j.start()
        label = gateway.markers["label"]
        await _mark_neo4j(instance.uri, "neo4j", instance.password, label, "neo4j-us")

        async def served() -> None:
            assert await marker(client, gateway, "initech") == "neo4j-us"

        await eventually(served, 15.0)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            assert (await http.get("/readyz")).json()["backends"]["us"]["state"] == "ready"
            metrics = (await http.get("/metrics", headers=METRICS_HEADERS)).text
        assert 'graphgate_backend_up{backend="us"} 1.0' in metrics
        assert 'graphgate_backend_errors_total{backend="us",kind="backend_unavailable"}' in metrics


async def test_the_catalog_follows_the_file_while_a_session_stays_connected(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="graphgate.catalog_watch")
    bearer = gateway.token("acme", "globex", "initech", "newbie")
    async with connected(gateway, bearer) as (client, sessions):
        await tool(client, "use_database", name="globex")
        error = await tool_error(client, "run_query", database="newbie", query="RETURN 1")
        assert "newbie" in error

        # Added: served on the next call within 2 s.
        gateway.write_tenants(BASE_TENANTS + 'newbie = { backend = "eu", database = "neo4j" }')
        took = await eventually(
            lambda: _served(client, gateway, "newbie", "neo4j-eu"), RELOAD_BOUND
        )
        print(f"new tenant served {took:.2f} s after the file changed")
        assert await tool(client, "run_query", query="RETURN 1 AS one")  # globex is still current
        assert (await tool(client, "list_databases"))[1]["current"] is True

        # Moved: initech goes from the us server to the eu one.
        moved = BASE_TENANTS.replace('backend = "us"', 'backend = "eu"')
        gateway.write_tenants(moved + 'newbie = { backend = "eu", database = "neo4j" }')
        await eventually(lambda: _served(client, gateway, "initech", "neo4j-eu"), RELOAD_BOUND)

        # Removed: refused on the next call, the same answer as a name never known.
        gateway.write_tenants('acme = "acme"\ninitech = { backend = "us", database = "neo4j" }')

        async def refused() -> None:
            error = await tool_error(client, "run_query", database="globex", query="RETURN 1")
            never = await tool_error(client, "run_query", database="nosuch", query="RETURN 1")
            assert error.replace("globex", "X") == never.replace("nosuch", "X")

        await eventually(refused, RELOAD_BOUND)
        # The chosen database left: the next call falls back as if never chosen.
        assert (await tool(client, "run_query", query="RETURN 1 AS one"))["database"] == "acme"

        # Invalid: nothing changes, one line says why, a metric counts it.
        gateway.config.write("[tenants]\nacme = { backend = 'nowhere' }\nport = 'x'\n")
        await asyncio.sleep(1.5)
        assert await marker(client, gateway, "initech") == "neo4j-us"
        failed = [r for r in caplog.records if "catalog reload (file) failed" in r.getMessage()]
        assert len(failed) == 1, [r.getMessage() for r in caplog.records]
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            metrics = (await http.get("/metrics", headers=METRICS_HEADERS)).text
        assert 'graphgate_catalog_reloads_total{outcome="failed",source="file"} 1.0' in metrics

        # A setting outside the catalog: reported, not applied.
        gateway.write_tenants(BASE_TENANTS, top="row_limit = 1")

        async def reported() -> None:
            assert any("needs a restart: row_limit" in r.getMessage() for r in caplog.records)

        await eventually(reported, RELOAD_BOUND)
        await eventually(lambda: _served(client, gateway, "globex", "neo4j-eu"), RELOAD_BOUND)
        rows = await tool(
            client, "run_query", database="acme", query="UNWIND range(1, 3) AS x RETURN x"
        )
        assert rows["row_count"] == 3
        assert len(sessions) == 1, sessions


async def _served(client: Client, gateway: Gateway, tenant: str, server: str) -> None:
    result = await client.call_tool(
        "run_query",
        {"database": tenant, "query": f"MATCH (m:{gateway.markers['label']}) RETURN m.server"},
    )
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    assert str(result.content[0].text).count(server) == 1  # type: ignore[union-attr]


async def test_a_graph_created_after_start_is_served_to_a_token_that_grants_it(
    gateway: Gateway, falkordb_service: FalkorDBService
) -> None:
    backend = falkordb_service.backend()
    await backend.start()
    try:
        name = f"team{uuid.uuid4().hex[:6]}"
        graph = f"{gateway.graph_prefix}{name}"
        async with connected(gateway, gateway.token("acme", name)) as (client, _):
            error = await tool_error(client, "run_query", database=name, query="RETURN 1")
            assert name in error
            await backend.write(
                graph, "CREATE (:Marker {server: 'discovered'})", None, QueryLimits()
            )
            await asyncio.sleep(2.1)  # past the on-demand look's rate limit
            answer = await tool(
                client, "run_query", database=name, query="MATCH (m:Marker) RETURN m.server"
            )
            assert answer["rows"] == [["discovered"]]
        async with connected(gateway, gateway.token("acme")) as (client, _):
            error = await tool_error(client, "run_query", database=name, query="RETURN 1")
            assert "not" in error  # exists, but this token does not grant it
    finally:
        await backend.write(graph, "MATCH (n) DELETE n", None, QueryLimits())
        await backend.close()


async def test_discovery_on_neo4j_serves_its_database_and_never_system(
    gateway: Gateway, second_neo4j: RestartableNeo4j
) -> None:
    found_backend = f"""
[backends.found]
url = "{second_neo4j.uri}"
user = "neo4j"
password_file = "{gateway.secrets / "us"}"
discover = true
discover_interval = 1
"""
    async with connected(gateway, gateway.token("acme", "neo4j", "system")) as (client, _):
        error = await tool_error(client, "run_query", database="neo4j", query="RETURN 1")
        assert "neo4j" in error
        gateway.write_tenants(BASE_TENANTS, extra=found_backend)

        async def found() -> None:
            label = gateway.markers["label"]
            answer = await tool(
                client, "run_query", database="neo4j", query=f"MATCH (m:{label}) RETURN m.server"
            )
            assert answer["rows"] == [["neo4j-us"]]

        await eventually(found, 5.0)
        error = await tool_error(client, "run_query", database="system", query="SHOW DATABASES")
        never = await tool_error(client, "run_query", database="nosuch", query="SHOW DATABASES")
        assert error.replace("system", "X") == never.replace("nosuch", "X")
    gateway.write_tenants(BASE_TENANTS)
