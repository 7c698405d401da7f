"""Run a real Keycloak for graphgate's integration tests and for local demos.

    python scripts/keycloak.py download
    python scripts/keycloak.py run [--port 8080] [--public-url http://127.0.0.1:8000]

The server distribution comes from Maven Central through Maven itself
(``mvn dependency:copy``, cached in ``~/.m2``) because package registries are
the only network a developer's machine and CI are sure to reach. It is
unpacked once into ``.cache/keycloak-<version>/`` and every run works on its
own throw-away copy of that tree (jars hard-linked, the rest copied), so two
test sessions never share a realm-import directory, a build or a database.

Keycloak runs in dev mode on an in-memory H2 database: every start imports
``deploy/keycloak/realm.json`` afresh, with the audience mapper rewritten for
the graphgate URL under test. ``start-dev`` re-augments the Quarkus build
(~20 s) whenever its build options differ from the last build in the tree;
the first run saves its build back into the cache so later runs skip that.
Feature flags (``--features``) are build options too, so the cache keeps one
build per set of features: ``lib/quarkus`` in the unpacked tree for none, and
``.cache/keycloak-<version>.builds/<features>/`` for each other set.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

try:
    from scripts._processes import log_tail, stop_group
except ModuleNotFoundError:  # run as `python scripts/<name>.py`
    from _processes import log_tail, stop_group  # type: ignore[no-redef]

KEYCLOAK_VERSION = "26.7.3"
REPO_ROOT = Path(__file__).resolve().parent.parent
REALM_FILE = REPO_ROOT / "deploy" / "keycloak" / "realm.json"
DEFAULT_CACHE = REPO_ROOT / ".cache"
REALM = "graphgate"
AUDIENCE_MAPPER = "oidc-audience-mapper"
MCP_SCOPE = "mcp:tools"

# Keycloak 26 is supported on JDK 21 and 25; 17 still boots it but is past support.
_PREFERRED_JAVA = 21
_READY_TIMEOUT = 180.0
_STOP_TIMEOUT = 30.0
_DOWNLOAD_TIMEOUT = 900.0
# A dev server for tests: small heap, and C1 only, which starts faster on two cores.
_HEAP = "-Xms64m -Xmx512m"
_JVM_EXTRA = "-XX:TieredStopAtLevel=1"


class KeycloakUnavailable(RuntimeError):
    """Keycloak could not be downloaded, unpacked or started; the message says why."""


@dataclass(frozen=True, slots=True)
class KeycloakInstance:
    """A running Keycloak: where it listens and how to administer it."""

    base_url: str
    realm: str
    admin_user: str
    admin_password: str
    home: Path
    log_path: Path
    java_home: Path | None
    started_in: float
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    features: tuple[str, ...] = ()

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm}"


# -- distribution ------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Cross-process lock: concurrent test sessions share one cache directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _maven_zip(version: str) -> Path:
    return (
        Path.home()
        / ".m2/repository/org/keycloak/keycloak-quarkus-dist"
        / version
        / f"keycloak-quarkus-dist-{version}.zip"
    )


def download(version: str = KEYCLOAK_VERSION) -> Path:
    """The distribution zip, fetched by Maven into ``~/.m2`` unless already there."""
    cached = _maven_zip(version)
    if cached.is_file():
        return cached
    if shutil.which("mvn") is None:
        raise KeycloakUnavailable("mvn not found: install Maven to download Keycloak")
    with tempfile.TemporaryDirectory(prefix="keycloak-dl-") as scratch:
        command = [
            "mvn",
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{version}:zip",
            f"-DoutputDirectory={scratch}",
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise KeycloakUnavailable(
                f"mvn dependency:copy did not finish in {_DOWNLOAD_TIMEOUT:.0f} s"
            ) from None
        if result.returncode != 0 or not cached.is_file():
            tail = (result.stdout + result.stderr).strip()[-1500:]
            raise KeycloakUnavailable(f"mvn could not fetch Keycloak {version}: {tail}")
    return cached


def _unzip(archive: Path, target: Path) -> None:
    """Unpack keeping the Unix permission bits (zipfile drops them: kc.sh must stay +x)."""
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            extracted = Path(bundle.extract(info, target))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                extracted.chmod(mode)


def distribution(cache_dir: Path = DEFAULT_CACHE, version: str = KEYCLOAK_VERSION) -> Path:
    """``.cache/keycloak-<version>``, downloaded and unpacked once, atomically."""
    home = cache_dir / f"keycloak-{version}"
    if (home / "bin" / "kc.sh").is_file():
        return home
    with _locked(cache_dir / f"keycloak-{version}.lock"):
        if (home / "bin" / "kc.sh").is_file():
            return home
        archive = download(version)
        scratch = Path(tempfile.mkdtemp(prefix=f".keycloak-{version}-", dir=cache_dir))
        try:
            _unzip(archive, scratch)
            unpacked = scratch / f"keycloak-{version}"
            if not (unpacked / "bin" / "kc.sh").is_file():
                raise KeycloakUnavailable(f"{archive} does not hold keycloak-{version}/bin/kc.sh")
            unpacked.rename(home)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return home


def _java_major(java_home: Path) -> int:
    release = java_home / "release"
    if not release.is_file():
        return 0
    found = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(), re.MULTILINE)
    return int(found.group(1)) if found else 0


def find_java_home(explicit: str | None = None) -> Path | None:
    """A JDK Keycloak 26 supports (21+), else None to let kc.sh use ``java`` on PATH."""
    if explicit:
        return Path(explicit)
    candidates = [path for path in Path("/usr/lib/jvm").glob("*") if (path / "bin/java").is_file()]
    supported = [path for path in candidates if _java_major(path) >= _PREFERRED_JAVA]
    if not supported:
        return None
    return max(supported, key=lambda path: (_java_major(path), path.name))


# -- realm -------------------------------------------------------------------------------


def render_realm(resource_url: str, template: Path = REALM_FILE) -> dict[str, Any]:
    """realm.json with its audience mapper naming ``resource_url``.

    Structured rather than textual substitution: the file stays valid JSON an
    admin can import as-is, and only the one mapper value changes.
    """
    realm: dict[str, Any] = json.loads(template.read_text())
    rendered = copy.deepcopy(realm)
    replaced = 0
    for scope in rendered.get("clientScopes", []):
        for mapper in scope.get("protocolMappers", []):
            if mapper.get("protocolMapper") == AUDIENCE_MAPPER:
                mapper["config"]["included.custom.audience"] = resource_url
                replaced += 1
    if replaced != 1:
        raise ValueError(f"{template}: expected one {AUDIENCE_MAPPER}, found {replaced}")
    return rendered


# -- process -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _require_free(port: int) -> None:
    """Refuse a taken port up front: another server there would pass our readiness check."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise KeycloakUnavailable(f"port {port} on 127.0.0.1 is already in use") from None


def _link_or_copy(source: str, target: str) -> object:
    # The jars never change: hard links make a 190 MB tree cost a few MB per run.
    if f"{os.sep}lib{os.sep}lib{os.sep}" in source:
        try:
            os.link(source, target)
            return target
        except OSError:
            pass
    return shutil.copy2(source, target)


_SCRATCH_PREFIX = "graphgate-keycloak-"
_OWNER_FILE = "owner.pid"


def _sweep_abandoned() -> None:
    """Remove instance trees whose owner died without cleaning up (e.g. SIGKILL)."""
    for scratch in Path(tempfile.gettempdir()).glob(f"{_SCRATCH_PREFIX}*"):
        try:
            owner = int((scratch / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(scratch, ignore_errors=True)
        except PermissionError:
            continue


_FEATURE = re.compile(r"^[a-z0-9][a-z0-9-]*(:v[0-9]+)?$")


def _features(features: Sequence[str]) -> tuple[str, ...]:
    """Feature names as ``--features`` takes them (``cimd``, ``token-exchange:v1``), sorted."""
    names = tuple(sorted({name.strip() for name in features if name.strip()}))
    for name in names:
        if not _FEATURE.match(name):
            raise ValueError(f"not a Keycloak feature name: {name!r}")
    return names


def _build_store(dist: Path, features: tuple[str, ...]) -> Path:
    """Where the cache keeps the Quarkus build for ``features`` (see the module doc)."""
    if not features:
        return dist / "lib" / "quarkus"
    return dist.parent / f"{dist.name}.builds" / "+".join(features).replace(":", "_") / "quarkus"


def _instance_home(dist: Path, scratch: Path, features: tuple[str, ...] = ()) -> Path:
    home = scratch / dist.name
    store = _build_store(dist, features)
    with _locked(dist.parent / f"{dist.name}.lock", shared=True):
        shutil.copytree(dist, home, copy_function=_link_or_copy, symlinks=True)
        if features and store.is_dir():
            shutil.rmtree(home / "lib" / "quarkus")
            shutil.copytree(store, home / "lib" / "quarkus")
    shutil.rmtree(home / "data", ignore_errors=True)
    (home / "data" / "import").mkdir(parents=True)
    return home


def _build_files(quarkus: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(quarkus.glob("*")) if path.is_file()}


def _save_build(home: Path, dist: Path, features: tuple[str, ...] = ()) -> None:
    """Keep the instance's Quarkus build in the cache so the next start skips augmentation."""
    store = _build_store(dist, features)
    built = home / "lib" / "quarkus"
    if store.is_dir() and _build_files(built) == _build_files(store):
        return
    with _locked(dist.parent / f"{dist.name}.lock"):
        store.parent.mkdir(parents=True, exist_ok=True)
        staged = store.parent / f".quarkus-{os.getpid()}"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(built, staged)
        retired = store.parent / f".quarkus-old-{os.getpid()}"
        if store.is_dir():
            store.rename(retired)
        staged.rename(store)
        shutil.rmtree(retired, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise KeycloakUnavailable(
                    f"Keycloak exited with status {process.returncode} while starting; "
                    f"last log lines ({log_path}):\n{log_tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.5)
    raise KeycloakUnavailable(
        f"Keycloak did not answer {url} within {timeout:.0f} s; last log lines "
        f"({log_path}):\n{log_tail(log_path)}"
    )


@contextlib.contextmanager
def running_keycloak(
    *,
    resource_url: str,
    port: int | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    admin_user: str = "admin",
    admin_password: str | None = None,
    import_realm: bool = True,
    java_home: Path | None = None,
    ready_timeout: float = _READY_TIMEOUT,
    features: Sequence[str] = (),
    truststore_paths: Sequence[Path] = (),
) -> Iterator[KeycloakInstance]:
    """Start Keycloak in dev mode with the graphgate realm imported; stop it on exit.

    ``features`` are passed as ``--features`` (e.g. ``["cimd"]``, Keycloak's
    experimental OAuth Client ID Metadata Documents); ``truststore_paths``
    (PEM or PKCS#12 files) as ``--truststore-paths``, the certificates
    Keycloak trusts when it fetches https URLs itself.

    Raises `KeycloakUnavailable` when it cannot be fetched or does not come up
    within ``ready_timeout``; the process group is ended either way, so no
    ``java`` outlives the block.
    """
    enabled = _features(features)
    dist = distribution(cache_dir)
    java = java_home or find_java_home()
    port = port or _free_port()
    _require_free(port)
    password = admin_password or secrets.token_urlsafe(18)
    logs = cache_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"keycloak-{port}.log"
    _sweep_abandoned()
    with tempfile.TemporaryDirectory(prefix=_SCRATCH_PREFIX) as scratch:
        (Path(scratch) / _OWNER_FILE).write_text(str(os.getpid()))
        home = _instance_home(dist, Path(scratch), enabled)
        # If this process dies without cleaning up (SIGKILL, a crashed test run), the
        # kernel sends kc.sh SIGTERM, which kc.sh forwards to its java.
        guard = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
        args = [
            *guard,
            str(home / "bin" / "kc.sh"),
            "start-dev",
            f"--http-port={port}",
            "--http-host=127.0.0.1",
            "--db=dev-mem",
        ]
        if enabled:
            args.append(f"--features={','.join(enabled)}")
        if truststore_paths:
            args.append(f"--truststore-paths={','.join(str(path) for path in truststore_paths)}")
        if import_realm:
            realm_file = home / "data" / "import" / f"{REALM}-realm.json"
            realm_file.write_text(json.dumps(render_realm(resource_url)))
            args.append("--import-realm")
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("KC_", "KEYCLOAK_", "JAVA_OPTS"))
        }
        env.update(
            KC_BOOTSTRAP_ADMIN_USERNAME=admin_user,
            KC_BOOTSTRAP_ADMIN_PASSWORD=password,
            JAVA_OPTS_KC_HEAP=_HEAP,
            JAVA_OPTS_APPEND=_JVM_EXTRA,
        )
        if java is not None:
            env["JAVA_HOME"] = str(java)
        realm = REALM if import_realm else "master"
        ready = f"http://127.0.0.1:{port}/realms/{realm}/.well-known/openid-configuration"
        started = time.monotonic()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                args,
                cwd=home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_ready(process, ready, log_path, ready_timeout)
            elapsed = time.monotonic() - started
            with contextlib.suppress(OSError):
                _save_build(home, dist, enabled)
            yield KeycloakInstance(
                base_url=f"http://127.0.0.1:{port}",
                realm=REALM,
                admin_user=admin_user,
                admin_password=password,
                home=home,
                log_path=log_path,
                java_home=java,
                started_in=elapsed,
                process=process,
                features=enabled,
            )
        finally:
            stop_group(process, _STOP_TIMEOUT)


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("download", help="fetch and unpack the distribution into .cache/")
    run = commands.add_parser("run", help="run Keycloak with the graphgate realm until Ctrl-C")
    run.add_argument("--port", type=int, default=8080)
    run.add_argument(
        "--public-url",
        default="http://127.0.0.1:8000",
        help="graphgate's public URL; the realm's audience becomes <public-url>/mcp",
    )
    run.add_argument("--admin-user", default="admin")
    run.add_argument("--admin-password", default="admin")
    run.add_argument("--java-home", default=os.environ.get("KEYCLOAK_JAVA_HOME"))
    run.add_argument(
        "--features",
        default="",
        help="Keycloak features to enable, comma-separated (e.g. cimd)",
    )
    run.add_argument(
        "--truststore-path",
        action="append",
        default=[],
        type=Path,
        help="a PEM file of certificates Keycloak trusts for its own https requests; repeatable",
    )
    options = parser.parse_args(argv)
    # SIGTERM takes the same way out as Ctrl-C, through the cleanup that stops Keycloak.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if options.command == "download":
            print(distribution())
            return 0
        java = find_java_home(options.java_home)
        with running_keycloak(
            resource_url=f"{options.public_url.rstrip('/')}/mcp",
            port=options.port,
            admin_user=options.admin_user,
            admin_password=options.admin_password,
            java_home=java,
            features=options.features.split(","),
            truststore_paths=options.truststore_path,
        ) as keycloak:
            print(
                f"Keycloak {KEYCLOAK_VERSION} up in {keycloak.started_in:.1f} s\n"
                f"  features: {', '.join(keycloak.features) or 'default'}\n"
                f"  issuer:  {keycloak.issuer}\n"
                f"  admin:   {keycloak.base_url}/admin/ (user {keycloak.admin_user})\n"
                f"  log:     {keycloak.log_path}\n"
                "Ctrl-C stops it.",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                while keycloak.process.poll() is None:
                    time.sleep(1.0)
                print(f"Keycloak exited (status {keycloak.process.returncode})", file=sys.stderr)
                return 1
    except KeycloakUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
