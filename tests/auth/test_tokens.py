"""The JWT verifier against a real local issuer: claims, caching, JWKS refresh policy."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from fastmcp.server.auth import TokenVerificationError

from graphgate.auth.issuer_documents import IssuerMetadata
from graphgate.auth.rights import Rights
from graphgate.auth.tokens import (
    JwtVerifier,
    KeySet,
    TokenVerifierSettings,
    VerifiedToken,
    token_fingerprint,
)
from graphgate.errors import IssuerUnavailable, TokenRejected
from tests.auth._support import IssuerState, SigningKey, claims_for, closed_port_url, rsa_key

AUDIENCE = "http://graphgate.test:8000/mcp"
ALGS = ["RS256", "ES256", "EdDSA", "PS256"]


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def make_verifier(
    client: httpx.AsyncClient,
    issuer: IssuerState,
    *,
    clock: Clock | None = None,
    jwks_url: str | None = None,
    **options: Any,
) -> JwtVerifier:
    key_options: dict[str, Any] = {
        key: options.pop(key)
        for key in ("cache_seconds", "min_refresh_interval", "retry_after")
        if key in options
    }
    if clock is not None:
        key_options["clock"] = clock
    url = jwks_url or issuer.metadata()["jwks_uri"]
    keys = KeySet.remote(client, url, algorithms=ALGS, timeout=2.0, **key_options)
    settings = TokenVerifierSettings(
        issuer=issuer.issuer, audience=AUDIENCE, algorithms=ALGS, **options
    )
    return JwtVerifier(keys, settings)


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient() as http:
        yield http


async def test_valid_tokens_of_each_key_type(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    verifier = make_verifier(client, issuer)
    for name in ("rsa", "ec", "ed"):
        token = keys[name].sign(claims_for(issuer.issuer, AUDIENCE, sub=f"user-{name}"))
        access = await verifier.verify(token)
        assert access.subject == f"user-{name}"
        assert access.client_id == "client-1"
        assert access.scopes == ["openid", "mcp:tools"]
        assert access.claims["tenants"] == ["acme"]
        assert access.token == token_fingerprint(token)
        assert token not in access.model_dump_json()


async def test_scopes_from_scp_list_and_client_id_claim(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    verifier = make_verifier(client, issuer)
    claims = claims_for(
        issuer.issuer,
        [AUDIENCE, "other"],
        scope=None,
        azp=None,
        scp=["mcp:tools", "x"],
        client_id="cli",
    )
    access = await verifier.verify(keys["rsa"].sign(claims))
    assert access.scopes == ["mcp:tools", "x"]
    assert access.client_id == "cli"
    assert access.expires_at == claims["exp"]


async def test_verified_tokens_are_cached_until_exp(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    verifier = make_verifier(client, issuer)
    token = keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, ttl=2))
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first
    assert verifier.verifications == 1
    # Never beyond exp: test_expired_token_is_not_served_from_cache.


async def test_cache_is_bounded(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    verifier = make_verifier(client, issuer, cache_size=3)
    tokens = [keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, jti=str(n))) for n in range(10)]
    for token in tokens:
        await verifier.verify(token)
    assert verifier.verifications == 10
    for token in tokens[-3:]:  # the three most recent are still cached
        await verifier.verify(token)
    assert verifier.verifications == 10
    await verifier.verify(tokens[0])  # long evicted: checked again
    assert verifier.verifications == 11


async def test_expired_token_is_not_served_from_cache(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    verifier = make_verifier(client, issuer, leeway=0)
    token = keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, ttl=1))
    await verifier.verify(token)
    await asyncio.sleep(1.2)
    with pytest.raises(TokenRejected) as caught:
        await verifier.verify(token)
    assert caught.value.reason == "expired"


async def test_leeway_accepts_a_token_expired_seconds_ago(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    verifier = make_verifier(client, issuer, leeway=30)
    token = keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, ttl=-10))
    assert (await verifier.verify(token)).subject == "alice"
    strict = make_verifier(client, issuer, leeway=0)
    with pytest.raises(TokenRejected) as caught:
        await strict.verify(token)
    assert caught.value.reason == "expired"


async def test_jwks_url_discovered_from_issuer_metadata(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    metadata = IssuerMetadata(client, issuer.issuer)
    verifier = JwtVerifier(
        KeySet.remote(client, metadata.jwks_uri, algorithms=ALGS),
        TokenVerifierSettings(issuer=issuer.issuer, audience=AUDIENCE, algorithms=ALGS),
    )
    await verifier.verify(keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE)))
    assert issuer.hits["metadata"] == 1
    assert issuer.hits["jwks"] == 1


async def test_metadata_naming_another_issuer_is_refused(
    client: httpx.AsyncClient, issuer: IssuerState
) -> None:
    issuer.metadata_extra = {"issuer": issuer.issuer + "/"}
    metadata = IssuerMetadata(client, issuer.issuer)
    with pytest.raises(IssuerUnavailable) as caught:
        await metadata.jwks_uri()
    assert caught.value.status == 502


async def test_unknown_kid_refresh_is_rate_limited(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    clock = Clock()
    verifier = make_verifier(client, issuer, clock=clock, min_refresh_interval=30)
    await verifier.verify(keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE)))
    assert issuer.hits["jwks"] == 1
    stranger = rsa_key("stranger")
    clock.now += 31
    for n in range(20):
        with pytest.raises(TokenRejected) as caught:
            await verifier.verify(stranger.sign(claims_for(issuer.issuer, AUDIENCE, jti=str(n))))
        assert caught.value.reason == "unknown_kid"
        clock.now += 1
    assert issuer.hits["jwks"] == 2  # one refresh for the first unknown kid, none for 19 more
    clock.now += 30
    with pytest.raises(TokenRejected):
        await verifier.verify(stranger.sign(claims_for(issuer.issuer, AUDIENCE)))
    assert issuer.hits["jwks"] == 3


async def test_key_rotation(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    clock = Clock()
    verifier = make_verifier(client, issuer, clock=clock, min_refresh_interval=10)
    old = keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, jti="old"))
    await verifier.verify(old)
    # The issuer rotates: rsa-2 in, rsa-1 out.
    issuer.jwks = {"keys": [keys["rsa2"].public_jwk(), keys["ec"].public_jwk()]}
    clock.now += 11
    new = keys["rsa2"].sign(claims_for(issuer.issuer, AUDIENCE, jti="new"))
    assert (await verifier.verify(new)).subject == "alice"  # accepted after one refresh
    assert issuer.hits["jwks"] == 2
    with pytest.raises(TokenRejected) as caught:
        await verifier.verify(old)  # was cached, but its key is gone
    assert caught.value.reason == "unknown_kid"
    fresh_with_removed_key = keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, jti="again"))
    with pytest.raises(TokenRejected):
        await verifier.verify(fresh_with_removed_key)


async def test_last_good_keys_survive_an_outage(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    clock = Clock()
    verifier = make_verifier(client, issuer, clock=clock, cache_seconds=60, retry_after=5)
    await verifier.verify(keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, jti="1")))
    issuer.down = True
    clock.now += 61  # keys are stale: the next verification tries a refresh, which fails
    access = await verifier.verify(keys["ec"].sign(claims_for(issuer.issuer, AUDIENCE, jti="2")))
    assert access.subject == "alice"
    assert issuer.hits["jwks"] == 2
    # within retry_after nothing is fetched, whatever the kid
    with pytest.raises(TokenRejected) as caught:
        await verifier.verify(rsa_key("nobody").sign(claims_for(issuer.issuer, AUDIENCE)))
    assert caught.value.reason == "unknown_kid"
    assert issuer.hits["jwks"] == 2
    issuer.down = False
    clock.now += 6
    await verifier.verify(keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, jti="3")))
    assert issuer.hits["jwks"] == 3


async def test_cold_start_with_issuer_unreachable_then_recovery(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    clock = Clock()
    issuer.down = True
    verifier = make_verifier(client, issuer, clock=clock, retry_after=2)
    token = keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE))
    with pytest.raises(IssuerUnavailable) as caught:
        await verifier.verify(token)
    assert caught.value.status == 503
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(token)  # inside retry_after: no new request
    assert issuer.hits["jwks"] == 1
    issuer.down = False
    clock.now += 2
    assert (await verifier.verify(token)).subject == "alice"


async def test_connection_refused_is_unavailable_not_invalid(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    verifier = make_verifier(client, issuer, jwks_url=closed_port_url() + "/certs")
    with pytest.raises(IssuerUnavailable) as caught:
        await verifier.verify(keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE)))
    assert caught.value.unreachable
    assert await verifier.verify_token("a.b.c") is None
    # FastMCP's interface: "validity unknown" is its TokenVerificationError, not None.
    with pytest.raises(TokenVerificationError):
        await verifier.verify_token(keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE)))


async def test_unusable_jwks_entries_are_skipped(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    rsa_private = keys["rsa2"].public_jwk()
    rsa_private["d"] = "AAAA"  # a published private key: refused
    issuer.jwks = {
        "keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            keys["ec"].public_jwk(use="enc"),
            rsa_private,
            "not a key",
            keys["rsa"].public_jwk(alg="RS384"),
            keys["ed"].public_jwk(),
        ]
    }
    verifier = make_verifier(client, issuer)
    assert (await verifier.verify(keys["ed"].sign(claims_for(issuer.issuer, AUDIENCE)))).subject
    assert verifier.keys.kids == {"rsa-1", "ed-1"}
    for name, reason in (("ec", "unknown_kid"), ("rsa2", "unknown_kid"), ("rsa", "key_mismatch")):
        with pytest.raises(TokenRejected) as caught:
            await verifier.verify(keys[name].sign(claims_for(issuer.issuer, AUDIENCE)))
        assert caught.value.reason == reason, name


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_short_rsa_keys_are_refused(client: httpx.AsyncClient, issuer: IssuerState) -> None:
    weak = rsa_key("weak", bits=1024)
    issuer.jwks = {"keys": [weak.public_jwk()]}
    verifier = make_verifier(client, issuer)
    with pytest.raises(TokenRejected) as caught:
        await verifier.verify(weak.sign(claims_for(issuer.issuer, AUDIENCE)))
    assert caught.value.reason == "key_mismatch"


async def test_reasons_are_counted_and_the_token_never_logged(
    client: httpx.AsyncClient,
    issuer: IssuerState,
    keys: dict[str, SigningKey],
    caplog: pytest.LogCaptureFixture,
) -> None:
    verifier = make_verifier(client, issuer)
    caplog.set_level(logging.DEBUG)
    bad = [
        keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, ttl=-3600)),
        keys["rsa"].sign(claims_for(issuer.issuer, "http://elsewhere/mcp")),
        keys["attacker"].sign(claims_for(issuer.issuer, AUDIENCE), kid="rsa-1"),
    ]
    for token in bad:
        with pytest.raises(TokenRejected):
            await verifier.verify(token)
    assert verifier.rejections == {"expired": 1, "wrong_audience": 1, "bad_signature": 1}
    for token in bad:
        assert token not in caplog.text
        assert token.split(".")[2] not in caplog.text


def test_constructor_refuses_symmetric_algorithms() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        JwtVerifier(
            KeySet(None, algorithms=["HS256"]),
            TokenVerifierSettings(issuer="https://i", audience="a", algorithms=["HS256"]),
        )
    with pytest.raises(ValueError, match="issuer and audience"):
        JwtVerifier(
            KeySet(None, algorithms=["RS256"]),
            TokenVerifierSettings(issuer="", audience="a", algorithms=["RS256"]),
        )


async def test_rights_are_computed_once_per_verified_token(
    client: httpx.AsyncClient, issuer: IssuerState, keys: dict[str, SigningKey]
) -> None:
    """The token carries its rights: computed at verification, served with it from the cache."""
    seen: list[dict[str, Any]] = []

    def rights_of(claims: Any) -> Rights:
        seen.append(dict(claims))
        return Rights(tenants={name: "read" for name in claims["tenants"]})

    keys_set = KeySet.remote(client, issuer.metadata()["jwks_uri"], algorithms=ALGS)
    options = TokenVerifierSettings(issuer=issuer.issuer, audience=AUDIENCE, algorithms=ALGS)
    verifier = JwtVerifier(keys_set, options, rights_of=rights_of)
    alice = keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, jti="a"))
    first = await verifier.verify(alice)
    again = await verifier.verify(alice)
    assert isinstance(first, VerifiedToken) and again is first
    assert dict(first.rights.tenants) == {"acme": "read"}
    assert len(seen) == 1
    # Equal claims in another token are that token's own computation.
    twin = await verifier.verify(keys["rsa"].sign(claims_for(issuer.issuer, AUDIENCE, jti="b")))
    assert twin.rights == first.rights and len(seen) == 2
    assert "rights" not in twin.model_dump()  # never serialised with the token
