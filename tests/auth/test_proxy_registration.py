"""``registration = proxy``: anonymous ``/register`` is bounded (issue 13.1).

graphgate runs as in production (`build_parts`, `build_http_app`, uvicorn on
loopback). ``/register`` needs nothing from the issuer, so the issuer named in
the settings does not even listen. Each hostile request of the review is kept:
100 MB and 2 MB bodies, oversized fields, a registration flood from one source.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from key_value.aio.errors import EntryTooLargeError

from graphgate.auth.proxy import MAX_ENTRIES_PER_COLLECTION, MAX_ENTRY_BYTES, proxy_storage
from graphgate.config import Settings
from tests.services.falkordb import FalkorDBService
from tests.services.graphgate import http_settings, make_parts, serve_http
from tests.services.redis import RedisService

ISSUER = "http://127.0.0.1:9/realms/nowhere"  # nothing listens: /register must not need it
CALLBACK = "http://127.0.0.1:47111/callback"
RATE = 5

pytestmark = pytest.mark.falkordb


def proxy_options(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    options = http_settings(
        auth="oidc",
        issuer=ISSUER,
        registration="proxy",
        static_client_id="graphgate-mcp",
        metrics_token="m",
        tenants={"acme": "acme"},
        data_dir=data_dir,
        registration_rate_limit=RATE,
    )
    options["public_url"] = f"http://127.0.0.1:{options['port']}"
    return {**options, **overrides}


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(
    falkordb_service: FalkorDBService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    options = proxy_options(tmp_path_factory.mktemp("proxy-register"))
    async with serve_http(make_parts(falkordb_service.backend(), **options)) as url:
        yield url


def source(url: str, address: str) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (any of 127.0.0.0/8 is loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=10)


def metadata(**extra: Any) -> dict[str, Any]:
    return {
        "redirect_uris": [CALLBACK],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "unit",
        **extra,
    }


async def raw_status(url: str, head: bytes, body: bytes) -> tuple[int, bytes]:
    """Send ``head`` and the start of ``body`` on a raw socket; the status and the rest."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.9", 0))
    try:
        writer.write(head + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest


async def test_oversized_bodies_are_refused_with_413(gateway: str) -> None:
    # The review's 100 MB registration: refused on its Content-Length, unread.
    head = (
        b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    status, rest = await raw_status(gateway, head, b'{"client_name": "' + b"x" * 65536)
    assert status == 413
    assert b'"error":"invalid_client_metadata"' in rest
    # Chunked, so no length is declared: refused once 16 KiB have arrived.
    chunk = b"x" * 20_000
    head = (
        b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    status, _ = await raw_status(gateway, head, b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert status == 413
    # The review's 2 MB client_name registrations (sixty of them kept 126 MB).
    async with source(gateway, "127.0.0.10") as http:
        for _ in range(3):
            response = await http.post("/register", json=metadata(client_name="n" * 2_000_000))
            assert response.status_code == 413
            assert response.json()["error"] == "invalid_client_metadata"
            assert "16384 bytes" in response.json()["error_description"]


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"client_name": "n" * 1025}, "invalid_client_metadata"),
        ({"client_name": {"nested": "object"}}, "invalid_client_metadata"),
        ({"software_id": "s" * 2000}, "invalid_client_metadata"),
        ({"logo_uri": "javascript:alert(1)"}, "invalid_client_metadata"),
        ({"client_uri": "https://example.com/" + "p" * 3000}, "invalid_client_metadata"),
        ({"contacts": ["a@example.com"] * 11}, "invalid_client_metadata"),
        ({"grant_types": "authorization_code"}, "invalid_client_metadata"),
        ({"response_types": ["code"] * 11}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "t" * 100}, "invalid_client_metadata"),
        ({"redirect_uris": [CALLBACK] * 11}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://127.0.0.1/" + "p" * 3000]}, "invalid_redirect_uri"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"redirect_uris": [42]}, "invalid_redirect_uri"),
        # The proxy's own patterns still apply after graphgate's checks.
        ({"redirect_uris": ["https://evil.example/cb"]}, "invalid_redirect_uri"),
    ],
)
async def test_each_field_is_bounded(gateway: str, extra: dict[str, Any], error: str) -> None:
    async with source(gateway, "127.0.0.11") as http:
        response = await http.post("/register", json=metadata(**extra))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert response.json()["error_description"]


async def test_not_json_is_refused(gateway: str) -> None:
    async with source(gateway, "127.0.0.12") as http:
        for content, media in ((b"{not json", "application/json"), (b"[1]", "application/json")):
            response = await http.post(
                "/register", content=content, headers={"content-type": media}
            )
            assert response.status_code == 400
            assert response.json()["error"] == "invalid_client_metadata"
        text = await http.post("/register", content=json.dumps(metadata()).encode())
        assert text.status_code == 400


async def test_unknown_metadata_is_not_stored(gateway: str) -> None:
    async with source(gateway, "127.0.0.13") as http:
        response = await http.post(
            "/register",
            json=metadata(x_padding="p" * 12_000, jwks={"keys": [{"k": "q" * 1000}]}),
        )
    assert response.status_code == 201, response.text
    client = response.json()
    assert "x_padding" not in client and "jwks" not in client
    assert client["client_name"] == "unit" and client["redirect_uris"] == [CALLBACK]
    assert client["client_id"]


async def test_registrations_are_rate_limited_per_source(gateway: str) -> None:
    async with source(gateway, "127.0.0.14") as flood, source(gateway, "127.0.0.15") as other:
        statuses = [
            (await flood.post("/register", json=metadata())).status_code for _ in range(RATE)
        ]
        assert statuses == [201] * RATE
        limited = await flood.post("/register", json=metadata())
        assert limited.status_code == 429
        assert limited.json()["error"] == "temporarily_unavailable"
        assert 1 <= int(limited.headers["retry-after"]) <= 60 / RATE + 1
        # Garbage counts too, so a flood cannot probe for free.
        assert (await flood.post("/register", content=b"x")).status_code == 429
        # Another address has its own budget.
        assert (await other.post("/register", json=metadata())).status_code == 201
        # The preflight is never limited.
        preflight = await flood.options(
            "/register",
            headers={"origin": "http://127.0.0.1", "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 200


def test_the_rate_limit_setting(tmp_path: Path) -> None:
    assert Settings(tenants="acme").registration_rate_limit == 20
    with pytest.raises(ValueError, match="registration_rate_limit"):
        Settings(tenants="acme", registration_rate_limit=-1)


async def test_memory_store_is_bounded_in_entries_and_bytes(tmp_path: Path) -> None:
    settings = Settings(**proxy_options(tmp_path))
    store = proxy_storage(settings, b"k" * 44).store
    with pytest.raises(EntryTooLargeError):
        await store.put("big", {"v": "x" * MAX_ENTRY_BYTES}, collection="clients")
    assert await store.get("big", collection="clients") is None
    for index in range(MAX_ENTRIES_PER_COLLECTION + 10):
        await store.put(f"k{index}", {"v": index}, collection="clients")
    assert await store.get("k0", collection="clients") is None  # the oldest went first
    newest = MAX_ENTRIES_PER_COLLECTION + 9
    assert await store.get(f"k{newest}", collection="clients") == {"v": newest}


async def test_redis_store_is_bounded_in_entries_and_bytes(
    tmp_path: Path, redis_service: RedisService
) -> None:
    import redis.asyncio as redis

    settings = Settings(**proxy_options(tmp_path, state_url=redis_service.url))
    storage = proxy_storage(settings, b"k" * 44)
    collection = f"bounded-{uuid.uuid4().hex[:8]}"
    raw = redis.Redis.from_url(redis_service.url, decode_responses=True)
    try:
        store = storage.store
        with pytest.raises(EntryTooLargeError):
            await store.put("big", {"v": "x" * MAX_ENTRY_BYTES}, collection=collection)
        assert await store.get("big", collection=collection) is None
        for index in range(MAX_ENTRIES_PER_COLLECTION + 10):
            await store.put(f"k{index}", {"v": index}, collection=collection)
        assert await store.get("k0", collection=collection) is None  # the oldest went first
        assert await store.get("k9", collection=collection) is None
        assert await store.get("k10", collection=collection) == {"v": 10}
        newest = MAX_ENTRIES_PER_COLLECTION + 9
        assert await store.get(f"k{newest}", collection=collection) == {"v": newest}
        entries = [key async for key in raw.scan_iter(f"graphgate-oauth*{collection}*")]
        assert len(entries) == MAX_ENTRIES_PER_COLLECTION
        # Every key has a lifetime, the index included.
        _, ttl = await store.ttl(f"k{newest}", collection=collection)
        assert ttl is not None and ttl > 0
        assert await raw.ttl(f"graphgate-index:oauth:{collection}") > 0
    finally:
        await raw.aclose()
        assert storage.close is not None
        await storage.close()
