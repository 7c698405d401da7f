"""Log in at Keycloak over plain HTTP the way a browser would, for end-to-end tests.

Real MCP clients open the authorization URL in a browser and wait on a loopback
callback. Tests have no browser, so `browser_login` plays its part: it fetches
the login page, submits the username and password form, accepts a consent
screen if Keycloak shows one (anonymously registered clients get
"consent required"), and stops at the first redirect that leaves the
authorization server. That URL carries ``code``, ``state`` and ``iss`` (RFC
9207) for the client under test to use; it is returned, not followed.

Keycloak marks its cookies ``Secure`` even on ``http://127.0.0.1``. Browsers
send them anyway (loopback origins count as secure contexts), but Python's
cookie jar does not, so this helper keeps the authorization server's cookies
itself and leaves the caller's client's own cookie jar alone.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from tests.services._common import origin

__all__ = [
    "LoginError",
    "Pkce",
    "authorization_url",
    "browser_login",
    "login_for_tokens",
]

# Login page, optional consent page, and a few redirects: more means a loop.
_MAX_STEPS = 12


class LoginError(RuntimeError):
    """The login did not reach a redirect back to the client (bad password, error page…)."""


@dataclass
class _Form:
    action: str
    method: str
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, type)

    def names(self) -> set[str]:
        return {name for name, _, _ in self.fields}

    def hidden(self) -> dict[str, str]:
        return {name: value for name, value, kind in self.fields if kind == "hidden" and name}


class _PageParser(HTMLParser):
    """Collects the forms of a Keycloak page and the text of its error messages."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.messages: list[str] = []
        self.title = ""
        self._form: _Form | None = None
        self._message_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form":
            self._form = _Form(
                action=attributes.get("action", ""),
                method=attributes.get("method", "get").lower(),
            )
            self.forms.append(self._form)
        elif tag in {"input", "button"} and self._form is not None:
            name = attributes.get("name", "")
            if name:
                kind = attributes.get("type", "text" if tag == "input" else "submit").lower()
                self._form.fields.append((name, attributes.get("value", ""), kind))
        elif tag == "title":
            self._in_title = True
        classes = attributes.get("class", "")
        if self._message_depth:
            self._message_depth += 1
        elif (
            attributes.get("id") in {"input-error", "kc-error-message"}
            or ("alert" in classes and "title" in classes)
            or "kc-feedback-text" in classes
        ):
            self._message_depth = 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "title":
            self._in_title = False
        if self._message_depth:
            self._message_depth -= 1

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if not text:
            return
        if self._in_title:
            self.title += text
        if self._message_depth:
            self.messages.append(text)

    def describe(self) -> str:
        return "; ".join(dict.fromkeys(self.messages)) or self.title or "no message on the page"


def _parse(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser


def _keep_cookies(response: httpx.Response, jar: dict[str, str]) -> None:
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(header)
        except CookieError:
            continue
        for name, morsel in cookie.items():
            if morsel["max-age"] in {"0", "-1"} or not morsel.value:
                jar.pop(name, None)
            else:
                jar[name] = morsel.value


async def _send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    jar: dict[str, str],
    data: dict[str, str] | None = None,
) -> httpx.Response:
    headers = {"Accept": "text/html"}
    if jar:
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in jar.items())
    response = await client.request(method, url, data=data, headers=headers, follow_redirects=False)
    _keep_cookies(response, jar)
    return response


async def browser_login(
    authorization_url: str, username: str, password: str, client: httpx.AsyncClient
) -> str:
    """Sign in as ``username`` and return the redirect back to the client, unfollowed.

    The returned URL is whatever the authorization server sent the browser to:
    ``code``/``state``/``iss`` on success, or ``error=...`` (e.g. when consent
    is refused by policy). Pages that leave the user stuck at the server (wrong
    password, invalid ``redirect_uri``, a required action) raise `LoginError`
    with the message the page shows; the password never appears in it.
    """
    login_origin = origin(authorization_url)
    jar: dict[str, str] = {}
    response = await _send(client, "GET", authorization_url, jar)
    credentials_sent = False
    for _ in range(_MAX_STEPS):
        if response.is_redirect:
            location = urljoin(str(response.url), response.headers["location"])
            if origin(location) != login_origin:
                return location
            response = await _send(client, "GET", location, jar)
            continue
        page = _parse(response.text)
        login = next((form for form in page.forms if "password" in form.names()), None)
        consent = next((form for form in page.forms if "accept" in form.names()), None)
        if login is not None:
            if credentials_sent:
                raise LoginError(f"login as {username!r} refused: {page.describe()}")
            data = login.hidden()
            data.update(username=username, password=password)
            credentials_sent = True
            form = login
        elif consent is not None:
            data = consent.hidden()
            data["accept"] = next(value for name, value, _ in consent.fields if name == "accept")
            form = consent
        else:
            raise LoginError(
                f"unexpected page from the authorization server (HTTP "
                f"{response.status_code}): {page.describe()}"
            )
        response = await _send(
            client, "POST", urljoin(str(response.url), form.action), jar, data=data
        )
    raise LoginError(f"no redirect back to the client after {_MAX_STEPS} steps")


# -- the whole authorization code + PKCE flow, for tests that just need tokens ----------


@dataclass(frozen=True, slots=True)
class Pkce:
    """An RFC 7636 verifier and its S256 challenge."""

    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"))


def authorization_url(
    issuer: str,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    scope: str = "openid mcp:tools",
    pkce: Pkce | None = None,
    resource: str | None = None,
) -> str:
    """A Keycloak authorization request as an MCP client builds it."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
    }
    if pkce is not None:
        params.update(code_challenge=pkce.challenge, code_challenge_method="S256")
    if resource is not None:
        params["resource"] = resource
    return str(httpx.URL(f"{issuer}/protocol/openid-connect/auth", params=params))


async def login_for_tokens(
    *,
    issuer: str,
    client_id: str,
    username: str,
    password: str,
    client: httpx.AsyncClient,
    redirect_uri: str = "http://127.0.0.1:33418/callback",
    scope: str = "openid mcp:tools",
    resource: str | None = None,
) -> dict[str, Any]:
    """Authorization code + PKCE S256 through the login form; the token response.

    Checks what a careful client checks on the way back: ``state`` echoes
    ours and ``iss`` (RFC 9207) names the issuer we started with.
    """
    pkce = Pkce.new()
    state = secrets.token_urlsafe(16)
    url = authorization_url(
        issuer,
        client_id=client_id,
        redirect_uri=redirect_uri,
        state=state,
        scope=scope,
        pkce=pkce,
        resource=resource,
    )
    landed = await browser_login(url, username, password, client)
    query = parse_qs(urlsplit(landed).query)
    if "code" not in query:
        raise LoginError(f"no code in the redirect: {query.get('error', ['?'])[0]}")
    if query.get("state") != [state]:
        raise LoginError("state in the redirect does not match the request")
    if query.get("iss", [issuer]) != [issuer]:
        raise LoginError(f"iss in the redirect is {query['iss'][0]!r}, expected {issuer!r}")
    form = {
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "code_verifier": pkce.verifier,
    }
    if resource is not None:
        form["resource"] = resource
    response = await client.post(f"{issuer}/protocol/openid-connect/token", data=form)
    if response.status_code != 200:
        raise LoginError(f"token endpoint answered HTTP {response.status_code}: {response.text}")
    tokens: dict[str, Any] = response.json()
    return tokens
