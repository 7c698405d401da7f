"""Playing the browser on the dev issuer's sign-in page, for tests of real clients.

`pick_user` follows an authorization URL the way a browser would: ``/authorize``
redirects to the sign-in page, whose form is posted with the chosen user; the
redirect back to the client (carrying ``code`` and ``state``, or ``error``) is
returned unfollowed, for the test to deliver to the client's callback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx


class SignInFailed(AssertionError):
    """The page did not send the browser back to the client."""


@dataclass
class SignInPage:
    """What the sign-in page shows: its form and the users offered (name → access text)."""

    action: str = ""
    hidden: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = SignInPage()
        self._user: str | None = None
        self._cell = 0
        self._in_alert = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.page.action = attributes.get("action", "")
        elif tag == "input" and attributes.get("type") == "hidden":
            self.page.hidden[attributes.get("name", "")] = attributes.get("value", "")
        elif tag == "button" and attributes.get("name") == "user":
            self._user = attributes.get("value", "")
            self.page.users[self._user] = ""
        elif tag == "td":
            self._cell += 1
        elif tag == "tr":
            self._user, self._cell = None, 0
        elif tag == "br" and self._user is not None and self._cell == 2:
            self.page.users[self._user] += "; "
        if attributes.get("role") == "alert":
            self._in_alert = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._in_alert = False
        elif tag in {"tr", "table"}:
            self._user = None

    def handle_data(self, data: str) -> None:
        if self._in_alert:
            self.page.alerts.append(data.strip())
        elif self._user is not None and self._cell == 2:
            self.page.users[self._user] += data


def parse_sign_in_page(html: str) -> SignInPage:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser.page


async def open_sign_in_page(http: httpx.AsyncClient, authorization_url: str) -> httpx.Response:
    """GET the authorization URL and follow graphgate's redirect to the sign-in page."""
    response = await http.get(authorization_url, follow_redirects=False)
    if response.status_code != 302:
        raise SignInFailed(f"/authorize answered {response.status_code}: {response.text[:300]}")
    return await http.get(urljoin(authorization_url, response.headers["location"]))


async def pick_user(authorization_url: str, username: str, *, deny: bool = False) -> str:
    """Sign in as ``username`` (or cancel); the redirect back to the client, unfollowed."""
    async with httpx.AsyncClient(timeout=30) as http:
        page_response = await open_sign_in_page(http, authorization_url)
        page = parse_sign_in_page(page_response.text)
        if page_response.status_code != 200:
            raise SignInFailed("; ".join(page.alerts) or page_response.text[:300])
        form = dict(page.hidden)
        if deny:
            form["deny"] = "1"
        else:
            form["user"] = username
        target = urljoin(str(page_response.url), page.action)
        answer = await http.post(target, data=form, follow_redirects=False)
        if answer.status_code != 303:
            failed = parse_sign_in_page(answer.text)
            raise SignInFailed("; ".join(failed.alerts) or f"HTTP {answer.status_code}")
        return answer.headers["location"]
