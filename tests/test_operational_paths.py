"""/healthz, /readyz and /metrics in the production assembly with auth = oidc (issue 13.4).

A page in a user's browser must not read tenant names through DNS rebinding,
and /metrics must not be public on an authenticated server unless an operator
says so. graphgate runs as it does in production (`build_parts` then
`build_http_app`) on loopback; the issuer is never contacted by these paths.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import http_settings, make_parts, serve_http

METRICS_TOKEN = "scrape-me-9f1c"
# Nothing listens here: the paths under test must not need the issuer.
ISSUER = "http://127.0.0.1:9/realms/nowhere"

pytestmark = pytest.mark.falkordb


def oidc_settings(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    options = http_settings(
        auth="oidc",
        issuer=ISSUER,
        tenants={"acme": "acme_phys"},
        data_dir=data_dir,
        metrics_token=None,
    )
    options["public_url"] = f"http://127.0.0.1:{options['port']}"
    return {**options, **overrides}


@pytest_asyncio.fixture(loop_scope="session")
async def oidc_server(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    options = oidc_settings(tmp_path_factory.mktemp("ops"), metrics_token=METRICS_TOKEN)
    async with serve_http(make_parts(falkordb_service.backend(), **options)) as url:
        yield url


@pytest.mark.parametrize("auth", ["oidc", "dev"])
async def test_sign_in_without_a_metrics_token_keeps_metrics_closed(
    falkordb_service: FalkorDBService, tmp_path: Path, auth: str
) -> None:
    """No secret configured: /metrics answers 401 to everyone and says what to set."""
    options = oidc_settings(tmp_path, auth=auth)
    async with (
        serve_http(make_parts(falkordb_service.backend(), **options)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        for headers in ({}, {"authorization": "Bearer anything"}):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert "metrics_token" in refused.json()["error_description"]
            assert "graphgate_" not in refused.text


async def test_metrics_need_the_token(oidc_server: str) -> None:
    async with httpx.AsyncClient(base_url=oidc_server, timeout=10) as http:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": METRICS_TOKEN}):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"] == "invalid_token"
            # No address, no tenant, no physical database name in an unauthenticated body.
            for secret in ("127.0.0.1", "acme", "falkordb", "6379", ISSUER):
                assert secret not in refused.text
        scraped = await http.get(
            "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}", "host": "10.0.0.7"}
        )
        assert scraped.status_code == 200
        assert "graphgate_" in scraped.text


async def test_probes_by_pod_ip_pass_and_rebound_names_do_not(oidc_server: str) -> None:
    scrape = {"authorization": f"Bearer {METRICS_TOKEN}"}
    async with httpx.AsyncClient(base_url=oidc_server, timeout=10) as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            by_ip = await http.get(path, headers={**scrape, "host": "10.0.0.7:8000"})
            assert by_ip.status_code == 200, path
            by_ipv6 = await http.get(path, headers={**scrape, "host": "[fd00::7]:8000"})
            assert by_ipv6.status_code == 200, path
            # What a rebinding page sends: its own name, and the token it cannot have
            # anyway; the guard refuses before the route sees the request.
            rebound = await http.get(path, headers={**scrape, "host": "attacker.example:8000"})
            assert rebound.status_code == 421, path
            assert "acme" not in rebound.text and "127.0.0.1" not in rebound.text
            cross_origin = await http.get(
                path, headers={**scrape, "origin": "http://attacker.example"}
            )
            assert cross_origin.status_code == 403, path


async def test_metrics_public_serves_without_a_token(
    falkordb_service: FalkorDBService, tmp_path: Path
) -> None:
    options = oidc_settings(tmp_path, metrics_public=True)
    async with (
        serve_http(make_parts(falkordb_service.backend(), **options)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/metrics", headers={"host": "evil.example"})).status_code == 421


async def test_readyz_names_the_bounds_an_external_falkordb_lacks(
    falkordb_service: FalkorDBService, tmp_path: Path
) -> None:
    """The session's FalkorDB runs without a memory cap, queue bound or maxmemory."""
    options = http_settings(tenants={"acme": "acme_phys"}, data_dir=tmp_path)
    async with (
        serve_http(make_parts(falkordb_service.backend(), **options)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    backend = ready.json()["backend"]
    assert backend["state"] == "ready"
    missing = " ".join(backend["missing_bounds"])
    assert "QUERY_MEM_CAPACITY" in missing and "maxmemory" in missing
    assert str(falkordb_service.port) not in ready.text and "127.0.0.1" not in ready.text
