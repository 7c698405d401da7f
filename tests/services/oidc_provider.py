"""Session fixture: a second, independent OpenID Connect server (npm's `oidc-provider`).

graphgate must work with any standard OpenID Connect provider, not just the
Keycloak the other end-to-end tests use. ``tests/oidc_provider/server.mjs``
runs the certified `oidc-provider` on loopback with claim shapes unlike
Keycloak's (see that file); graphgate is pointed at them with settings only
(`GRAPHGATE_SETTINGS`).

Also here, shared with the TypeScript client test:

* `npm_install`: installs a Node project's pinned dependencies into its
  ``node_modules`` with ``npm install --no-package-lock`` (no lock file, hence no
  download URLs, is ever written to the repository), bounded in time, serialised
  across processes and skipped when the installed versions already match.
  ``python -m tests.services.oidc_provider install`` does it for every Node
  project of the test suite (``make services`` runs it): this provider, the
  TypeScript SDK client, mcp-remote, Claude Code's CLI and the MCP
  Inspector's CLI.
* `provider_login`: fills in the provider's login and consent pages over HTTP
  as a browser would.
* `Browser`: plays the user's browser from an authorization URL to the MCP
  client's redirect URI, through graphgate's own consent page (registration =
  proxy) and the identity provider's pages.

Without node or npm the tests that need them skip locally and fail in CI.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.services._common import free_port, service_unavailable

TESTS = Path(__file__).resolve().parent.parent
PROJECT = TESTS / "oidc_provider"
TS_CLIENT_PROJECT = TESTS / "e2e_ts"
MCP_REMOTE_PROJECT = TESTS / "mcp_remote"
CLAUDE_CODE_PROJECT = TESTS / "claude_code"
INSPECTOR_PROJECT = TESTS / "inspector"
NODE_PROJECTS = (
    PROJECT,
    TS_CLIENT_PROJECT,
    MCP_REMOTE_PROJECT,
    CLAUDE_CODE_PROJECT,
    INSPECTOR_PROJECT,
)

NPM_TIMEOUT = float(os.environ.get("GRAPHGATE_TEST_NPM_TIMEOUT", "300"))
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_STAMP = ".graphgate-installed"

# The provider's accounts (server.mjs), password "<login>-password", and what their
# access tokens carry:
#   ann  groups ["graphgate-acme", "staff"]
#   ben  groups ["graphgate-acme", "graphgate-globex:write"], org.home "globex"
#   ops  roles "graphgate-operator" (admin), groups []
#   nel  groups ["staff", "acme"]: nothing with the graphgate- prefix
#   ivy  groups ["graphgate-initech"]: not in the catalog
# graphgate's settings for those shapes: the only thing that differs from Keycloak.
GRAPHGATE_SETTINGS: dict[str, Any] = {
    # A claim named by a URL: its dots are escaped, since a dot means nesting.
    "tenants_claim": r"https://graphgate\.example/groups",
    "tenant_prefix": "graphgate-",
    "default_tenant_claim": "org.home",
    "admin_claim": "roles",
    "admin_value": "graphgate-operator",
}
PROXY_CLIENT = "graphgate-proxy"


def provider_password(username: str) -> str:
    return f"{username}-password"


class NodeUnavailable(RuntimeError):
    """node or npm is missing, or the dependencies could not be installed."""


# -- installing a Node project's dependencies ---------------------------------------------


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        raise NodeUnavailable("node is not on PATH")
    try:
        done = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise NodeUnavailable(f"node --version failed: {exc}") from None
    return done.stdout.strip()


def _pinned(project: Path) -> dict[str, str]:
    manifest = json.loads((project / "package.json").read_text())
    dependencies: dict[str, str] = manifest.get("dependencies", {})
    return dependencies


def _installed_matches(project: Path) -> bool:
    for name, version in _pinned(project).items():
        installed = project / "node_modules" / name / "package.json"
        try:
            if json.loads(installed.read_text()).get("version") != version:
                return False
        except (OSError, ValueError):
            return False
    return True


def _fingerprint(project: Path, node: str) -> str:
    digest = hashlib.sha256((project / "package.json").read_bytes())
    digest.update(node.encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _install_lock(project: Path) -> Iterator[None]:
    name = hashlib.sha256(str(project).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"graphgate-npm-{name}.lock"
    with path.open("w") as handle:
        deadline = time.monotonic() + NPM_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NodeUnavailable(f"another npm install of {project} is stuck") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def npm_install(project: Path, *, timeout: float = NPM_TIMEOUT) -> Path:
    """Install ``project``'s pinned dependencies once; returns its ``node_modules``.

    ``npm install --no-package-lock --ignore-scripts``: nothing but
    ``node_modules`` (gitignored) is written. A stamp (hash of package.json
    and the node version) plus a check of each pinned version makes later
    calls a no-op. Raises `NodeUnavailable` when node/npm are missing or npm
    fails or runs out of time (the registry is unreachable, ...).
    """
    node = node_version()
    npm = shutil.which("npm")
    if npm is None:
        raise NodeUnavailable("npm is not on PATH")
    modules = project / "node_modules"
    stamp = modules / _STAMP
    wanted = _fingerprint(project, node)
    with _install_lock(project):
        if stamp.is_file() and stamp.read_text() == wanted and _installed_matches(project):
            return modules
        command = [
            npm,
            "install",
            "--no-package-lock",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]
        try:
            done = subprocess.run(
                command,
                cwd=project,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise NodeUnavailable(f"npm install in {project} took over {timeout:.0f} s") from None
        except OSError as exc:
            raise NodeUnavailable(f"npm install in {project} failed: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise NodeUnavailable(
                f"npm install in {project} exited {done.returncode}: {' | '.join(tail)}"
            )
        if not _installed_matches(project):
            raise NodeUnavailable(f"npm install in {project} did not install the pinned versions")
        stamp.write_text(wanted)
    return modules


# -- the running provider ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OidcProviderService:
    """Where the provider listens and the graphgate it issues tokens for."""

    issuer: str
    public_url: str  # graphgate under test must serve here: tokens' aud is <public_url>/mcp
    pid: int
    proxy_client_id: str = PROXY_CLIENT
    settings: dict[str, Any] = field(default_factory=lambda: dict(GRAPHGATE_SETTINGS))

    @property
    def resource_url(self) -> str:
        return f"{self.public_url}/mcp"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def registration_endpoint(self) -> str:
        return f"{self.issuer}/reg"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()  # server.mjs stops when its stdin closes
    try:
        process.wait(timeout=STOP_TIMEOUT / 2)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT / 2)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def running_provider(
    public_url: str, *, token_ttl: int = 300, log: Path | None = None
) -> Iterator[OidcProviderService]:
    """Start ``node server.mjs``; yield once its discovery document is served; stop it."""
    npm_install(PROJECT)
    node = shutil.which("node")
    assert node is not None
    log_handle = log.open("wb") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        [
            node,
            "server.mjs",
            "--port",
            "0",
            "--public-url",
            public_url,
            "--token-ttl",
            str(token_ttl),
        ],
        cwd=PROJECT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log_handle,
        start_new_session=True,
    )
    try:
        issuer = _wait_ready(process)
        yield OidcProviderService(issuer=issuer, public_url=public_url, pid=process.pid)
    finally:
        _stop(process)
        if process.stdout is not None:
            process.stdout.close()
        if log is not None and not isinstance(log_handle, int):
            log_handle.close()


def _wait_ready(process: subprocess.Popen[bytes]) -> str:
    """The issuer from the ``ready`` line, once its discovery document answers."""
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    os.set_blocking(process.stdout.fileno(), False)
    buffer = b""
    issuer: str | None = None
    while issuer is None:
        if process.poll() is not None:
            raise NodeUnavailable(f"node server.mjs exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise NodeUnavailable(f"node server.mjs printed no ready line in {READY_TIMEOUT:.0f} s")
        chunk = process.stdout.read()
        if chunk:
            buffer += chunk
            for line in buffer.splitlines():
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict) and message.get("event") == "ready":
                        issuer = str(message["issuer"])
        else:
            time.sleep(0.05)
    while True:
        try:
            answer = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=5)
            if answer.status_code == 200 and answer.json().get("issuer") == issuer:
                return issuer
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise NodeUnavailable(f"{issuer} served no discovery document in {READY_TIMEOUT:.0f} s")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProviderService]:
    """The provider for the whole session; skipped locally, failed in CI, without node/npm."""
    public_url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("oidc-provider") / "server.log"
    try:
        with running_provider(public_url, log=log) as service:
            yield service
    except NodeUnavailable as exc:
        service_unavailable(f"oidc-provider (node): {exc}")


# -- a browser for the sign-in pages ---------------------------------------------------------


class LoginError(RuntimeError):
    """The sign-in did not get back to the client (wrong password, an error page, ...)."""


@dataclass
class _Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, list[str]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.alerts: list[str] = []
        self.title = ""
        self._form: _Form | None = None
        self._in_alert = False
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form":
            self._form = _Form(action=attributes.get("action", ""))
            self.forms.append(self._form)
        elif self._form is not None and tag == "input" and attributes.get("name"):
            name = attributes["name"]
            self._form.fields[name] = attributes.get("value", "")
            self._form.kinds[name] = attributes.get("type", "text").lower()
        elif self._form is not None and tag == "button" and attributes.get("name"):
            self._form.buttons.setdefault(attributes["name"], []).append(
                attributes.get("value", "")
            )
        elif tag == "title":
            self._in_title = True
        if attributes.get("role") == "alert" or tag == "li":
            self._in_alert = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "title":
            self._in_title = False
        elif tag in {"p", "li"}:
            self._in_alert = False

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if self._in_title:
            self.title += text
        elif self._in_alert and text:
            self.alerts.append(text)

    def describe(self) -> str:
        return "; ".join(self.alerts) or self.title or "no message on the page"


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


async def _send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    jar: dict[str, str],
    data: dict[str, str] | None = None,
) -> httpx.Response:
    """One request with the cookies of ``jar`` (paths ignored), keeping what is set."""
    headers = {"Accept": "text/html"}
    if jar:
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in jar.items())
    response = await http.request(method, url, data=data, headers=headers, follow_redirects=False)
    http.cookies.clear()  # only ``jar`` decides what is sent
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        with contextlib.suppress(CookieError):
            cookie.load(header)
        for name, morsel in cookie.items():
            expired = morsel["max-age"] in {"0", "-1"} or morsel["expires"].startswith(
                "Thu, 01 Jan 1970"
            )
            if morsel.value and not expired:
                jar[name] = morsel.value
            else:
                jar.pop(name, None)
    return response


async def provider_login(
    authorization_url: str,
    username: str,
    password: str,
    *,
    consent: str = "allow",
    timeout: float = 30.0,
) -> str:
    """Sign in on the provider's pages; the redirect that leaves the provider, unfollowed.

    Follows the provider's own redirects, submits the login form (``login``,
    ``password``) and answers the consent form with ``consent`` (``allow`` or
    ``deny``). The returned URL carries ``code``/``state``/``iss`` or ``error``.
    A page that keeps the user at the provider raises `LoginError` with the
    message it shows; the password never appears in it. Each call is a fresh
    browser profile: no session from an earlier sign-in is reused.
    """
    async with httpx.AsyncClient(timeout=timeout) as http:
        return await _provider_login(http, authorization_url, username, password, consent)


async def _provider_login(
    http: httpx.AsyncClient, authorization_url: str, username: str, password: str, consent: str
) -> str:
    origin = _origin(authorization_url)
    jar: dict[str, str] = {}
    response = await _send(http, "GET", authorization_url, jar)
    logged_in = False
    for _ in range(12):
        if response.is_redirect:
            location = urljoin(str(response.url), response.headers["location"])
            if _origin(location) != origin:
                return location
            response = await _send(http, "GET", location, jar)
            continue
        page = _parse(response.text)
        login = next((form for form in page.forms if "password" in form.fields), None)
        decision = next((form for form in page.forms if "decision" in form.buttons), None)
        if login is not None:
            if logged_in:
                raise LoginError(f"login as {username!r} refused: {page.describe()}")
            logged_in = True
            data = {"login": username, "password": password}
            form = login
        elif decision is not None:
            if consent not in decision.buttons["decision"]:
                raise LoginError(f"the consent page offers no {consent!r}")
            data = {"decision": consent}
            form = decision
        else:
            raise LoginError(
                f"unexpected page from the provider (HTTP {response.status_code}): "
                f"{page.describe()}"
            )
        target = urljoin(str(response.url), form.action)
        response = await _send(http, "POST", target, jar, data=data)
    raise LoginError("no redirect back to the client after 12 steps")


IdpLogin = Callable[[str, str], Awaitable[str]]
"""``(authorization_url, username) -> redirect URL``: signs in at the identity provider."""


@dataclass
class Browser:
    """The user's browser between an MCP client and its loopback redirect URI.

    graphgate's consent page (registration = proxy) is approved here, with a
    cookie jar of its own since the approval is bound to the browser by a
    cookie; pages at ``idp_origin`` are left to ``idp_login``. Stops at the
    first redirect to ``redirect_uri`` and returns it, unfollowed. ``pages``
    records what was seen: ``graphgate-consent``, ``idp-login``.
    """

    idp_origin: str
    idp_login: IdpLogin
    pages: list[str] = field(default_factory=list)
    timeout: float = 30.0

    async def sign_in(self, url: str, username: str, redirect_uri: str) -> str:
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            return await self._sign_in(http, url, username, redirect_uri)

    async def _sign_in(
        self, http: httpx.AsyncClient, url: str, username: str, redirect_uri: str
    ) -> str:
        jar: dict[str, str] = {}
        for _ in range(12):
            if url.startswith(redirect_uri):
                return url
            if _origin(url) == self.idp_origin:
                self.pages.append("idp-login")
                url = await self.idp_login(url, username)
                continue
            response = await _send(http, "GET", url, jar)
            if response.is_redirect:
                url = urljoin(url, response.headers["location"])
                continue
            url = await self._approve(http, url, response, jar)
        raise LoginError(f"no redirect to {redirect_uri} after 12 steps")

    async def _approve(
        self, http: httpx.AsyncClient, url: str, page: httpx.Response, jar: dict[str, str]
    ) -> str:
        parsed = _parse(page.text)
        form = next((f for f in parsed.forms if "approve" in f.buttons.get("action", [])), None)
        if page.status_code != 200 or form is None:
            raise LoginError(f"unexpected page at {url}: HTTP {page.status_code} {page.text[:300]}")
        self.pages.append("graphgate-consent")
        target = urljoin(url, form.action or urlsplit(url).path)
        response = await _send(http, "POST", target, jar, data={**form.fields, "action": "approve"})
        if not response.is_redirect:
            raise LoginError(f"graphgate's consent was not accepted: HTTP {response.status_code}")
        return urljoin(target, response.headers["location"])


# -- `python -m tests.services.oidc_provider install` ------------------------------------


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m tests.services.oidc_provider install", file=sys.stderr)
        return 2
    try:
        for project in NODE_PROJECTS:
            modules = npm_install(project)
            print(f"{project.relative_to(TESTS.parent)}: {modules.name} ready")
    except NodeUnavailable as exc:
        print(f"node dependencies: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
