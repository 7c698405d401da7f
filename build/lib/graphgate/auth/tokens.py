"""Bearer JWT verification against the issuer's JWKS (RFC 7519, RFC 8725, RFC 9068).

Why not FastMCP's ``JWTVerifier``: it keeps its JWKS for a fixed hour with
no rate limit on refreshes for unknown ``kid`` values and no last-good keys
during an outage, has no bound on token size, no verified-token cache, and
reports no reason for a refusal. This verifier is built on pyjwt, with:

* keys chosen only by ``kid`` from the configured JWKS; ``jku``, ``x5u``,
  ``x5c`` and ``jwk`` headers are never consulted (RFC 8725 §3.10), and any
  ``crit`` header is refused (RFC 7515 §4.1.11: we understand no extension);
* algorithms from an asymmetric allowlist only, and the key must fit the
  algorithm (no ``none``, no HMAC with a public key as secret, RFC 8725 §3.1);
* ``iss`` equal to the issuer, ``aud`` containing our audience (RFC 8707 /
  MCP: a token minted for another resource is refused), ``exp``/``iat``
  required and numeric, ``nbf`` honoured, all with a small leeway;
* a short-lived cache of verified tokens keyed by their SHA-256, so a
  session's repeated calls skip the signature check.

The token itself is never logged, stored or echoed: the cache key is a hash
and `AccessToken.token` holds the hash too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx
import jwt
from fastmcp.server.auth import AccessToken, TokenVerifier

from graphgate.auth.discovery import IssuerUnavailable, fetch_json
from graphgate.config import ASYMMETRIC_ALGORITHMS
from graphgate.errors import AuthError

logger = logging.getLogger(__name__)

__all__ = [
    "JwtVerifier",
    "KeySet",
    "Reason",
    "TokenRejected",
    "TokenVerifierSettings",
    "token_fingerprint",
]

Reason = Literal[
    "malformed",
    "oversized",
    "bad_header",
    "alg_not_allowed",
    "crit_header",
    "unknown_kid",
    "key_mismatch",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "bad_claim_type",
    "lifetime_too_long",
    "invalid",
]

MAX_TOKEN_BYTES: Final = 16 * 1024
MAX_HEADER_BYTES: Final = 2048
MAX_KEYS: Final = 64
MAX_JWKS_BYTES: Final = 512 * 1024

# alg -> (kty, crv or None): the key must be of this type for the algorithm.
_KEY_FOR_ALG: Final[dict[str, tuple[str, str | None]]] = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}


class TokenRejected(AuthError):
    """The token is not acceptable; ``reason`` is a short label fit for metrics."""

    def __init__(self, reason: Reason, description: str | None = None) -> None:
        super().__init__(description or reason.replace("_", " "))
        self.reason: Reason = reason


def token_fingerprint(token: str) -> str:
    """A stable, non-reversible name for a token (cache key, `AccessToken.token`)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def _b64url_json(segment: str, limit: int) -> Any:
    if len(segment) > limit:
        raise TokenRejected("oversized")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise TokenRejected("malformed", "the token header is not base64url JSON") from None


# -- keys -----------------------------------------------------------------------------------


JwksSource = Callable[[], Awaitable[Mapping[str, Any]]]


class KeySet:
    """The issuer's signing keys by ``kid``, refreshed with a bounded rate.

    * fresh for ``cache_seconds``; after that the next verification refreshes;
    * an unknown ``kid`` triggers a refresh at most once per
      ``min_refresh_interval`` (key rotation is picked up, but a stream of
      random kids cannot turn into a stream of requests to the issuer);
    * a failed refresh keeps the last good keys (an issuer outage does not
      lock out holders of valid tokens); with no keys at all, callers get
      `IssuerUnavailable` and the next try is allowed after ``retry_after``;
    * ``generation`` grows whenever a key disappears, so caches of tokens
      verified with it can be invalidated.

    Without a ``source`` the set is static (dev mode).
    """

    def __init__(
        self,
        source: JwksSource | None,
        *,
        initial: Mapping[str, Any] | None = None,
        algorithms: Iterable[str],
        cache_seconds: float = 300.0,
        min_refresh_interval: float = 30.0,
        retry_after: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.algorithms = frozenset(algorithms)
        self._source = source
        self._cache_seconds = cache_seconds
        self._min_refresh_interval = min_refresh_interval
        self._retry_after = retry_after
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] | None = None
        self._parsed: dict[tuple[str, str], jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._last_failed = False
        self._last_error: IssuerUnavailable | None = None
        self._lock = asyncio.Lock()
        self.generation = 0
        self.refreshes = 0
        if initial is not None:
            self._install(initial)

    @classmethod
    def remote(
        cls,
        client: httpx.AsyncClient,
        jwks_url: str | Callable[[], Awaitable[str]],
        *,
        timeout: float = 5.0,
        **options: Any,
    ) -> KeySet:
        """Keys fetched with ``client`` from ``jwks_url`` (or from a URL found by discovery)."""

        async def source() -> Mapping[str, Any]:
            url = jwks_url if isinstance(jwks_url, str) else await jwks_url()
            return await fetch_json(client, url, deadline=timeout, max_bytes=MAX_JWKS_BYTES)

        return cls(source, **options)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys or ())

    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The key to check a token with header ``kid``/``alg``, refreshing if allowed."""
        if self._source is not None and self._refresh_due(kid):
            await self._refresh(kid)
        if self._keys is None:
            raise self._last_error or IssuerUnavailable("no signing keys yet", unreachable=True)
        if kid is None:
            if len(self._keys) != 1:
                raise TokenRejected("unknown_kid", "the token names no key")
            kid = next(iter(self._keys))
        jwk_data = self._keys.get(kid)
        if jwk_data is None:
            raise TokenRejected("unknown_kid", "the token was signed with an unknown key")
        return self._parsed_key(kid, jwk_data, alg)

    def _refresh_due(self, kid: str | None) -> bool:
        now = self._clock()
        if self._attempted_at is None:
            return True
        since_attempt = now - self._attempted_at
        if self._last_failed:
            return since_attempt >= self._retry_after
        if now - self._fetched_at >= self._cache_seconds:
            return True
        unknown = self._keys is not None and kid is not None and kid not in self._keys
        return unknown and since_attempt >= self._min_refresh_interval

    async def _refresh(self, kid: str | None) -> None:
        attempted = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted:
                return  # another request refreshed while we waited: use its result
            assert self._source is not None
            self._attempted_at = self._clock()
            self.refreshes += 1
            try:
                document = await self._source()
                self._install(document)
            except IssuerUnavailable as exc:
                self._last_failed = True
                self._last_error = exc
                logger.warning(
                    "JWKS refresh failed (%s); %s",
                    exc,
                    "keeping the last good keys" if self._keys else "no keys yet",
                )
                return
            self._last_failed = False
            self._last_error = None
            self._fetched_at = self._attempted_at

    def _install(self, document: Mapping[str, Any]) -> None:
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise IssuerUnavailable("the JWKS has no 'keys' list", unreachable=False)
        keys: dict[str, dict[str, Any]] = {}
        for entry in entries[:MAX_KEYS]:
            if not isinstance(entry, dict) or not self._usable(entry):
                continue
            keys[str(entry.get("kid", ""))] = entry
        if not keys:
            raise IssuerUnavailable("the JWKS holds no usable signing key", unreachable=False)
        if self._keys is not None and not self._keys.keys() <= keys.keys():
            self.generation += 1
        previous = self._keys or {}
        self._parsed = {
            slot: key
            for slot, key in self._parsed.items()
            if slot[0] in keys and keys[slot[0]] == previous.get(slot[0])
        }
        self._keys = keys

    def _usable(self, entry: Mapping[str, Any]) -> bool:
        """Signing keys of an asymmetric type we allow; never ``oct`` (RFC 7517 §4.2-4.4)."""
        if entry.get("use", "sig") != "sig":
            return False
        ops = entry.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            return False
        if "d" in entry:  # a private key published by mistake: refuse to trust the set's hygiene
            return False
        kid = entry.get("kid", "")
        if not isinstance(kid, str) or len(kid) > 256:
            return False
        return any(entry.get("kty") == kty for kty, _ in _KEY_FOR_ALG.values())

    def _parsed_key(self, kid: str, jwk_data: Mapping[str, Any], alg: str) -> jwt.PyJWK:
        cached = self._parsed.get((kid, alg))
        if cached is not None:
            return cached
        if alg not in self.algorithms:
            raise TokenRejected("alg_not_allowed")
        kty, crv = _KEY_FOR_ALG[alg]
        key_alg = jwk_data.get("alg")
        if (
            jwk_data.get("kty") != kty
            or (crv is not None and jwk_data.get("crv") != crv)
            or (key_alg is not None and key_alg != alg)
        ):
            raise TokenRejected("key_mismatch", "the token's algorithm does not fit its key")
        try:
            key = jwt.PyJWK(dict(jwk_data), algorithm=alg)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise TokenRejected("key_mismatch", "the issuer's key cannot be used") from None
        if len(self._parsed) < 4 * MAX_KEYS:
            self._parsed[(kid, alg)] = key
        return key


# -- verifier -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenVerifierSettings:
    issuer: str
    audience: str | Sequence[str]
    algorithms: Sequence[str]
    required_scopes: Sequence[str] = ()
    leeway: float = 30.0
    max_lifetime: float = 24 * 3600.0
    cache_seconds: float = 60.0
    cache_size: int = 4096
    max_token_bytes: int = MAX_TOKEN_BYTES


@dataclass(frozen=True, slots=True)
class _Cached:
    token: AccessToken
    until: float
    generation: int


_EXCEPTION_REASONS: Final[tuple[tuple[type[Exception], Reason], ...]] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "alg_not_allowed"),
    (jwt.InvalidKeyError, "key_mismatch"),
    (jwt.InvalidIssuedAtError, "bad_claim_type"),
    (jwt.exceptions.InvalidSubjectError, "bad_claim_type"),
    (jwt.exceptions.InvalidJTIError, "bad_claim_type"),
    (jwt.DecodeError, "malformed"),
)

_DESCRIPTIONS: Final[dict[str, str]] = {
    "expired": "The access token has expired.",
    "not_yet_valid": "The access token is not valid yet.",
    "issued_in_future": "The access token claims to be issued in the future.",
    "wrong_issuer": "The access token was issued by another issuer.",
    "wrong_audience": "The access token was not issued for this resource.",
    "lifetime_too_long": "The access token lives longer than this server accepts.",
}


def describe(reason: str, issuer: str | None = None) -> str:
    """An RFC 6750 ``error_description`` for a refusal: ASCII, no quotes, no token.

    A token of another issuer is told which issuer this server trusts (the
    issuer is public: protected resource metadata advertises it), because the
    usual cause is a dev token minted for another port or data dir.
    """
    text = _DESCRIPTIONS.get(reason, "The access token is invalid.")
    if reason == "wrong_issuer" and issuer:
        shown = "".join(ch for ch in issuer if 0x20 < ord(ch) < 0x7F and ch not in '"\\')
        text = f"{text[:-1]}; this server accepts tokens of {shown[:200]}."
    return text


class JwtVerifier(TokenVerifier):
    """FastMCP `TokenVerifier` for the issuer's JWTs; see the module docstring.

    `verify` raises `TokenRejected` (with a reason) or `IssuerUnavailable`;
    `verify_token` is FastMCP's interface and answers None for a bad token.
    ``rejections`` counts refusals by reason.
    """

    def __init__(
        self,
        keys: KeySet,
        options: TokenVerifierSettings,
        *,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        bad = [alg for alg in options.algorithms if alg not in ASYMMETRIC_ALGORITHMS]
        if bad or not options.algorithms:
            raise ValueError(
                f"algorithms {bad or '[]'}: use asymmetric algorithms only (RS256, ES256, ...)"
            )
        if not options.issuer or not options.audience:
            raise ValueError("issuer and audience are required: tokens are checked against both")
        super().__init__(base_url=base_url, required_scopes=list(options.required_scopes))
        self.keys = keys
        self.options = options
        self._algorithms = list(options.algorithms)
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._decoder = jwt.PyJWT()
        self.rejections: Counter[str] = Counter()
        self.verifications = 0

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            return await self.verify(token)
        except TokenRejected:
            return None

    async def verify(self, token: str) -> AccessToken:
        try:
            return await self._verify(token)
        except TokenRejected as exc:
            self.rejections[exc.reason] += 1
            logger.debug("token refused: %s", exc.reason)
            raise

    async def _verify(self, token: str) -> AccessToken:
        if len(token) > self.options.max_token_bytes:
            raise TokenRejected("oversized", "the access token is too large")
        fingerprint = token_fingerprint(token)
        now = self._clock()
        hit = self._cache.get(fingerprint)
        if hit is not None:
            if now < hit.until and hit.generation == self.keys.generation:
                return hit.token
            del self._cache[fingerprint]

        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise TokenRejected("malformed", "the access token is not a signed JWT")
        header = _b64url_json(parts[0], MAX_HEADER_BYTES)
        if not isinstance(header, dict):
            raise TokenRejected("bad_header")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise TokenRejected("alg_not_allowed")
        if "crit" in header or "b64" in header:
            raise TokenRejected("crit_header")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
            raise TokenRejected("bad_header")

        generation = self.keys.generation
        key = await self.keys.key_for(kid, alg)
        claims = self._decode(token, key, alg)
        access = self._access_token(claims, fingerprint)
        self.verifications += 1
        exp = float(claims["exp"])
        self._remember(fingerprint, access, min(now + self.options.cache_seconds, exp), generation)
        return access

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = self._decoder.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.options.audience,
                issuer=self.options.issuer,
                leeway=self.options.leeway,
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub"],
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.ImmatureSignatureError as exc:
            reason: Reason = "issued_in_future" if "(iat)" in str(exc) else "not_yet_valid"
            raise TokenRejected(reason) from None
        except jwt.PyJWTError as exc:
            for kind, mapped in _EXCEPTION_REASONS:
                if isinstance(exc, kind):
                    raise TokenRejected(mapped) from None
            raise TokenRejected("invalid") from None
        except (ValueError, TypeError, OverflowError, RecursionError):
            # pyjwt validates untrusted input; anything it did not anticipate is
            # still the token's fault, never a server error.
            raise TokenRejected("malformed") from None
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if name in claims and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise TokenRejected("bad_claim_type", f"the {name} claim is not a number")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenRejected("missing_claim")
        self._check_lifetime(claims)
        return claims

    def _check_lifetime(self, claims: Mapping[str, Any]) -> None:
        """Refuse tokens that live longer than ``max_lifetime`` (``exp = 1e308``).

        Measured from ``iat`` and from now, so neither a backdated ``iat`` nor
        a far ``exp`` stretches a signed token's reach past the operator's bound.
        """
        bound = self.options.max_lifetime + self.options.leeway
        exp = float(claims["exp"])
        if exp - float(claims["iat"]) > bound or exp - self._clock() > bound:
            raise TokenRejected(
                "lifetime_too_long",
                f"the access token lives longer than {self.options.max_lifetime:g} s",
            )

    def _access_token(self, claims: dict[str, Any], fingerprint: str) -> AccessToken:
        client_id = claims.get("azp", claims.get("client_id"))
        return AccessToken(
            token=fingerprint,
            client_id=client_id if isinstance(client_id, str) and client_id else "unknown",
            scopes=_scopes(claims),
            expires_at=int(claims["exp"]),
            resource=_first(self.options.audience),
            subject=claims["sub"],
            claims=claims,
        )

    def _remember(self, key: str, token: AccessToken, until: float, generation: int) -> None:
        self._cache[key] = _Cached(token, until, generation)
        if len(self._cache) > self.options.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        self._cache.clear()


def _first(audience: str | Sequence[str]) -> str:
    return audience if isinstance(audience, str) else audience[0]


def _scopes(claims: Mapping[str, Any]) -> list[str]:
    """Scopes from ``scope`` (RFC 8693 §4.2: one space-separated string) or ``scp``
    (a list or a string, as Entra ID and Okta issue it).

    A scope claim of any other shape makes the token unusable rather than
    silently scopeless, so the refusal names the real problem.
    """
    found: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            found += value.split()
        elif (
            name == "scp"
            and isinstance(value, list)
            and all(isinstance(item, str) for item in value)
        ):
            found += [part for item in value for part in item.split()]
        else:
            raise TokenRejected("bad_claim_type", f"the {name} claim is malformed")
    return list(dict.fromkeys(found))
