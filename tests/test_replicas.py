"""Two graphgate processes, no session affinity, shared state in a real Redis.

Calls alternate between the replicas; what a user chose with use_database on
one replica routes their next call on the other. When Redis is lost, routing
degrades to the argument or the starting database, never to another user's
choice, and recovers when Redis is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from graphgate.auth.dev import mint_dev_token
from graphgate.config import Settings
from tests.services._common import free_port
from tests.services.falkordb import FalkorDBService, seed_tagged_tenants
from tests.services.redis import RedisService

GRAPHGATE = str(Path(sys.executable).with_name("graphgate"))
TENANTS = ("acme", "globex", "initech")


@pytest.fixture
def replicas(
    falkordb_service: FalkorDBService, redis_service: RedisService, tmp_path: Path
) -> Iterator[tuple[list[str], Settings, dict[str, str]]]:
    suffix = uuid.uuid4().hex[:6]
    catalog = {name: f"{name}_{suffix}" for name in TENANTS}

    ports = [free_port(), free_port()]
    public_url = f"http://127.0.0.1:{ports[0]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHGATE_")}
    env.update(
        GRAPHGATE_AUTH="dev",
        GRAPHGATE_PUBLIC_URL=public_url,
        GRAPHGATE_DATA_DIR=str(tmp_path),
        GRAPHGATE_BACKEND=falkordb_service.url,
        GRAPHGATE_BACKEND_PASSWORD=falkordb_service.password,
        GRAPHGATE_TENANTS=json.dumps(catalog),
        GRAPHGATE_STATE_URL=redis_service.url,
        GRAPHGATE_STATELESS_HTTP="true",
        GRAPHGATE_LOG_LEVEL="warning",
    )
    processes = [
        subprocess.Popen(
            [GRAPHGATE, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, process in zip(urls, processes, strict=True):
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise AssertionError(process.stderr.read())  # type: ignore[union-attr]
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "replica did not become ready"
                time.sleep(0.2)
        settings = Settings(auth="dev", public_url=public_url, data_dir=tmp_path, tenants=catalog)
        yield urls, settings, catalog
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


async def call(url: str, bearer: str, tool: str, mode: str = "auto", **arguments: Any) -> Any:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
    async with Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as c:  # type: ignore[arg-type]
        result = await c.call_tool(tool, arguments)
    text = result.content[0].text  # type: ignore[union-attr]
    return {"error": text} if result.is_error else json.loads(text)


async def tenant_seen(url: str, bearer: str, mode: str = "auto") -> str:
    answer = await call(url, bearer, "run_query", mode, query="MATCH (t:Tag) RETURN t.tenant")
    assert "error" not in answer, answer
    return str(answer["rows"][0][0])


async def test_choice_follows_the_user_across_replicas(
    replicas: tuple[list[str], Settings, dict[str, str]],
    falkordb_service: FalkorDBService,
    redis_service: RedisService,
) -> None:
    urls, settings, catalog = replicas
    await seed_tagged_tenants(falkordb_service, catalog)
    users = {
        f"user{i}": mint_dev_token(
            settings, sub=f"user{i}", tenants=list(TENANTS), admin=False, ttl=600
        )
        for i in range(4)
    }
    choices = {name: TENANTS[i % 3] for i, name in enumerate(users)}

    async def one_user(name: str, bearer: str) -> None:
        mode = "legacy" if name.endswith(("1", "3")) else "auto"
        chosen = await call(urls[0], bearer, "use_database", mode, name=choices[name])
        assert chosen == {"current": choices[name]}
        for step in range(4):
            assert await tenant_seen(urls[(step + 1) % 2], bearer, mode) == choices[name]

    await asyncio.gather(*(one_user(name, bearer) for name, bearer in users.items()))

    # Redis lost: every user degrades to their starting database (acme), never
    # to someone else's choice; explicit arguments still work.
    redis_service.stop()
    try:
        for bearer in users.values():
            for url in urls:
                assert await tenant_seen(url, bearer) == "acme"
            explicit = await call(
                urls[1],
                bearer,
                "run_query",
                database="initech",
                query="MATCH (t:Tag) RETURN t.tenant",
            )
            assert explicit["rows"] == [["initech"]]
            refused = await call(urls[0], bearer, "use_database", name="globex")
            assert "state store is unreachable" in refused["error"]
    finally:
        redis_service.start()

    # Redis back (empty): choices can be made and followed again.
    bearer = users["user0"]
    await call(urls[1], bearer, "use_database", name="initech")
    assert await tenant_seen(urls[0], bearer) == "initech"
    other = users["user2"]
    assert await tenant_seen(urls[0], other) == "acme"
