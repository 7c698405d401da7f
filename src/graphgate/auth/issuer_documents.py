"""Documents fetched from the issuer: its discovery metadata and its JWKS.

Below both `graphgate.auth.tokens` (keys) and `graphgate.auth.discovery`
(the shim's mirror), so neither imports the other for them:

* `fetch_json`: one bounded GET of a JSON object (a deadline for the whole
  exchange, a size cap, no redirects); every failure is `IssuerUnavailable`;
* `CachedDocument`: the one "keep the last good copy, retry after a pause"
  cache both documents need;
* `IssuerMetadata`: the issuer's RFC 8414 / OIDC discovery document on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar
from urllib.parse import urlsplit

import httpx

from graphgate.errors import IssuerUnavailable

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_METADATA_BYTES",
    "CachedDocument",
    "IssuerMetadata",
    "fetch_json",
    "issuer_metadata_urls",
]

MAX_METADATA_BYTES: Final = 256 * 1024

T = TypeVar("T")


async def fetch_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    deadline: float,
    max_bytes: int = MAX_METADATA_BYTES,
) -> dict[str, Any]:
    """GET a JSON object with a hard deadline and a size cap.

    httpx's timeout bounds each network operation, not the whole exchange, so
    a server dripping one byte per second could hold the caller for minutes;
    ``asyncio.timeout`` bounds the total. Redirects are not followed: an
    issuer's metadata and keys live at the URLs it names (RFC 8414 §3).
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            async with client.stream(
                "GET", url, headers={"Accept": "application/json"}, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise IssuerUnavailable(
                        f"{url} answered HTTP {response.status_code}",
                        unreachable=response.status_code >= 500,
                    )
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise IssuerUnavailable(
                            f"{url} sent more than {max_bytes} bytes", unreachable=False
                        )
                    chunks.append(chunk)
    except TimeoutError:
        raise IssuerUnavailable(
            f"{url} did not answer within {deadline:g} s", unreachable=True
        ) from None
    except httpx.HTTPError as exc:
        raise IssuerUnavailable(f"{url}: {type(exc).__name__}", unreachable=True) from None
    try:
        document = json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise IssuerUnavailable(f"{url} did not send JSON", unreachable=False) from None
    if not isinstance(document, dict):
        raise IssuerUnavailable(f"{url} did not send a JSON object", unreachable=False)
    return document


class CachedDocument(Generic[T]):
    """A value fetched on demand: fresh for ``ttl``, the last good copy kept.

    * a fresh value is served without I/O;
    * a stale one is refreshed by the next `get`; if the refresh fails, the
      last good value is served and the failure logged;
    * after a failed attempt the next one waits ``retry_after`` seconds, so an
      outage costs one upstream request per interval, not one per client
      request; with no good value at all, `get` raises the last failure;
    * one fetch in flight: requests that queued behind it take its result.

    ``fetch`` raises `IssuerUnavailable` for anything unusable, so a document
    that arrives but fails validation keeps the last good copy too.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[T]],
        *,
        what: str,
        ttl: float,
        retry_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self._fetch = fetch
        self._ttl = ttl
        self._retry_after = retry_after
        self._clock = clock
        self._value: T | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._last_error: IssuerUnavailable | None = None
        self._lock = asyncio.Lock()
        self.attempts = 0
        """Fetches started so far (the operator's refresh counter)."""

    @property
    def value(self) -> T | None:
        """The last good value, without any I/O."""
        return self._value

    async def get(self, *, refresh_after: float | None = None) -> T:
        """The value, refreshed first if due; raises `IssuerUnavailable` if there is none.

        ``refresh_after`` asks for an early refresh when the last attempt is at
        least that many seconds old (a JWKS asked for a key it does not hold).
        """
        seen = self._attempted_at
        if not self._due(refresh_after):
            return self._value_or_raise()
        async with self._lock:
            if self._attempted_at != seen:
                # Another request refreshed while this one waited: use its result.
                return self._value_or_raise()
            self._attempted_at = self._clock()
            self.attempts += 1
            try:
                value = await self._fetch()
            except IssuerUnavailable as exc:
                self._last_error = exc
                logger.warning(
                    "%s unavailable (%s); %s",
                    self.what,
                    exc,
                    "keeping the last good copy" if self._value is not None else "none yet",
                )
                return self._value_or_raise()
            self._value = value
            self._fetched_at = self._attempted_at
            self._last_error = None
            return value

    def _due(self, refresh_after: float | None) -> bool:
        if self._attempted_at is None:
            return True
        now = self._clock()
        since_attempt = now - self._attempted_at
        if self._last_error is not None:
            return since_attempt >= self._retry_after
        if now - self._fetched_at >= self._ttl:
            return True
        return refresh_after is not None and since_attempt >= refresh_after

    def _value_or_raise(self) -> T:
        if self._value is not None:
            return self._value
        raise self._last_error or IssuerUnavailable(f"no {self.what} yet", unreachable=True)


def issuer_metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's discovery document may live, in the order tried.

    OIDC Discovery §4 appends ``/.well-known/openid-configuration`` to the
    issuer; RFC 8414 §3.1 inserts ``/.well-known/oauth-authorization-server``
    between host and path; some servers (Keycloak) also append the latter.
    """
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    base = issuer.rstrip("/")
    urls = [
        f"{base}/.well-known/openid-configuration",
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{base}/.well-known/oauth-authorization-server",
    ]
    return list(dict.fromkeys(urls))


class IssuerMetadata:
    """The issuer's discovery document, a `CachedDocument` fetched on first need.

    Nothing is fetched at construction, so graphgate starts while the issuer
    is down; the shim's mirror, the proxy's upstream endpoints and a JWKS URL
    found by discovery all read it from here.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        issuer: str,
        *,
        ttl: float = 300.0,
        retry_after: float = 2.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must be set to fetch its metadata")
        self.issuer = issuer
        self._client = client
        self._timeout = timeout
        self._document: CachedDocument[dict[str, Any]] = CachedDocument(
            self._fetch, what="issuer metadata", ttl=ttl, retry_after=retry_after, clock=clock
        )

    async def get(self) -> dict[str, Any]:
        """The document, refreshed if stale; raises `IssuerUnavailable` if there is none."""
        return await self._document.get()

    async def jwks_uri(self) -> str:
        document = await self.get()
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise IssuerUnavailable("the issuer's metadata names no jwks_uri", unreachable=False)
        return uri

    async def _fetch(self) -> dict[str, Any]:
        error: IssuerUnavailable | None = None
        for url in issuer_metadata_urls(self.issuer):
            try:
                document = await fetch_json(self._client, url, deadline=self._timeout)
            except IssuerUnavailable as exc:
                error = exc
                if exc.unreachable:
                    break  # the host is down: the other URLs would only add waiting
                continue
            # RFC 8414 §3.3 / OIDC Discovery §4.3: the document must name exactly
            # the issuer it was fetched for, or it is someone else's.
            if document.get("issuer") != self.issuer:
                error = IssuerUnavailable(
                    f"{url} names issuer {str(document.get('issuer'))[:200]!r}, "
                    f"not the configured {self.issuer!r}",
                    unreachable=False,
                )
                continue
            return document
        assert error is not None
        raise error
