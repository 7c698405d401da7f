"""Run a real Neo4j Community server for graphgate's integration tests.

    python scripts/neo4j_server.py download
    python scripts/neo4j_server.py run [--port 7687] [--password secret]

Neo4j's tar.gz distribution is not published to Maven Central (its assembly
module builds it with ``attach=false``), but every jar in it is. Maven
resolves ``org.neo4j:neo4j`` and ``org.neo4j.app:neo4j-server`` (the two
modules the Community distribution is assembled from) into ``~/.m2`` and
writes their classpath to ``.cache/neo4j-<version>/classpath.txt``; the
server then runs straight from those jars:

    java -cp <classpath> org.neo4j.cli.AdminTool dbms set-initial-password <pw>
    java -cp <classpath> org.neo4j.server.CommunityEntryPoint --home-dir=<home> ...

which is what the distribution's ``neo4j-admin`` and ``neo4j console``
scripts run. Every run gets its own throw-away home directory (config, data,
logs), Bolt on a loopback port, HTTP off, usage reports off, a 512 MB heap
with transaction memory limits inside it (a memory bomb in a test ends as
an error, not as a JVM out of heap).
Neo4j 5.26 (the LTS line) supports Java 17 and 21, both usable here.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

try:
    from scripts._processes import log_tail, stop_group
except ModuleNotFoundError:  # run as `python scripts/<name>.py`
    from _processes import log_tail, stop_group  # type: ignore[no-redef]

NEO4J_VERSION = "5.26.30"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / ".cache"
ADMIN_USER = "neo4j"
# Within the 512 MB heap: one transaction may hold a quarter of it, all of them half.
TRANSACTION_MEMORY = "128m"
TRANSACTIONS_MEMORY = "256m"

_DOWNLOAD_TIMEOUT = 900.0
_READY_TIMEOUT = 120.0
_STOP_TIMEOUT = 30.0
_ADMIN_TIMEOUT = 120.0
_SUPPORTED_JAVA = (17, 21)
_JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
)

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>graphgate.test</groupId>
  <artifactId>neo4j-server-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.neo4j</groupId><artifactId>neo4j</artifactId><version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.neo4j.app</groupId><artifactId>neo4j-server</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


class Neo4jUnavailable(RuntimeError):
    """Neo4j could not be downloaded or started; the message says why."""


@dataclass(frozen=True, slots=True)
class Neo4jInstance:
    """A running Neo4j: where its Bolt port is and how to log in."""

    host: str
    port: int
    user: str
    password: str
    home: Path
    log_path: Path
    version: str
    pid: int
    started_in: float

    @property
    def uri(self) -> str:
        return f"bolt://{self.host}:{self.port}"


# -- distribution ------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Cross-process lock: concurrent test sessions share one cache directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _classpath_ok(classpath_file: Path) -> bool:
    if not classpath_file.is_file():
        return False
    jars = classpath_file.read_text().strip().split(os.pathsep)
    return bool(jars) and all(Path(jar).is_file() for jar in jars)


def download(cache_dir: Path = DEFAULT_CACHE, version: str = NEO4J_VERSION) -> Path:
    """The server's classpath file, resolved by Maven into ``~/.m2`` unless already there."""
    target = cache_dir / f"neo4j-{version}"
    classpath_file = target / "classpath.txt"
    if _classpath_ok(classpath_file):
        return classpath_file
    with _locked(cache_dir / f"neo4j-{version}.lock"):
        if _classpath_ok(classpath_file):
            return classpath_file
        if shutil.which("mvn") is None:
            raise Neo4jUnavailable("mvn not found: install Maven to download Neo4j")
        target.mkdir(parents=True, exist_ok=True)
        (target / "pom.xml").write_text(_POM.format(version=version))
        staged = target / f".classpath-{os.getpid()}.txt"
        command = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(target / "pom.xml"),
            "dependency:build-classpath",
            "-DincludeScope=runtime",
            f"-Dmdep.outputFile={staged}",
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise Neo4jUnavailable(
                f"mvn dependency:build-classpath did not finish in {_DOWNLOAD_TIMEOUT:.0f} s"
            ) from None
        if result.returncode != 0 or not _classpath_ok(staged):
            tail = (result.stdout + result.stderr).strip()[-1500:]
            staged.unlink(missing_ok=True)
            raise Neo4jUnavailable(f"mvn could not fetch Neo4j {version}: {tail}")
        staged.rename(classpath_file)
    return classpath_file


def _java_major(java_home: Path) -> int:
    release = java_home / "release"
    if not release.is_file():
        return 0
    found = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(), re.MULTILINE)
    return int(found.group(1)) if found else 0


def find_java(explicit: str | None = None) -> str:
    """A ``java`` of a version Neo4j 5.26 supports (17 or 21), else the one on PATH."""
    if explicit:
        return str(Path(explicit) / "bin" / "java")
    homes = [path for path in Path("/usr/lib/jvm").glob("*") if (path / "bin/java").is_file()]
    supported = [path for path in homes if _java_major(path) in _SUPPORTED_JAVA]
    if supported:
        best = max(supported, key=lambda path: (_java_major(path), path.name))
        return str(best / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise Neo4jUnavailable("no java found: install a JDK 17 or 21 to run Neo4j")
    return found


# -- process -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_config(home: Path, port: int, extra: Mapping[str, str]) -> None:
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (home / "import").mkdir(exist_ok=True)
    (conf / "neo4j.conf").write_text(
        "\n".join(
            [
                "server.default_listen_address=127.0.0.1",
                f"server.bolt.listen_address=127.0.0.1:{port}",
                f"server.bolt.advertised_address=127.0.0.1:{port}",
                "server.bolt.enabled=true",
                "server.http.enabled=false",
                "server.https.enabled=false",
                "server.memory.pagecache.size=64m",
                # Memory bombs end as MemoryPoolOutOfMemoryError, not as a JVM that
                # exits (ExitOnOutOfMemoryError) under every other test's feet.
                f"db.memory.transaction.max={TRANSACTION_MEMORY}",
                f"db.memory.transaction.total.max={TRANSACTIONS_MEMORY}",
                f"server.directories.import={home / 'import'}",
                "dbms.usage_report.enabled=false",
                "dbms.security.auth_enabled=true",
                *(f"{name}={value}" for name, value in extra.items()),
                "",
            ]
        )
    )


def _wait_ready(
    process: subprocess.Popen[bytes], uri: str, password: str, log_path: Path, timeout: float
) -> None:
    """Until the ``neo4j`` database (not just the DBMS) answers a query."""
    from neo4j import GraphDatabase
    from neo4j.exceptions import Neo4jError, ServiceUnavailable, SessionExpired

    deadline = time.monotonic() + timeout
    last = ""
    with GraphDatabase.driver(uri, auth=(ADMIN_USER, password), connection_timeout=2.0) as driver:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise Neo4jUnavailable(
                    f"Neo4j exited with status {process.returncode} while starting; "
                    f"last log lines ({log_path}):\n{log_tail(log_path)}"
                )
            try:
                # A plain session: execute_query would retry (and log) on its own.
                with driver.session(database="neo4j") as session:
                    session.run("RETURN 1").consume()
                return
            except (ServiceUnavailable, SessionExpired, Neo4jError, OSError) as exc:
                last = str(exc)
            time.sleep(0.5)
    raise Neo4jUnavailable(
        f"Neo4j did not answer on {uri} within {timeout:.0f} s ({last}); last log lines "
        f"({log_path}):\n{log_tail(log_path)}"
    )


def _clean_env(home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NEO4J_", "JAVA_OPTS", "JDK_JAVA_OPTIONS"))
    }
    env["NEO4J_HOME"] = str(home)
    env["NEO4J_CONF"] = str(home / "conf")
    return env


@contextlib.contextmanager
def running_neo4j(
    *,
    port: int | None = None,
    password: str | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    version: str = NEO4J_VERSION,
    java_home: str | None = None,
    ready_timeout: float = _READY_TIMEOUT,
    settings: Mapping[str, str] | None = None,
) -> Iterator[Neo4jInstance]:
    """Start Neo4j on loopback with a fresh store; stop it (and its JVM) on exit.

    ``settings`` are added to ``neo4j.conf`` (a test's own server settings).

    Raises `Neo4jUnavailable` when it cannot be fetched or does not come up
    within ``ready_timeout``.
    """
    classpath = download(cache_dir, version).read_text().strip()
    java = find_java(java_home)
    port = port or free_port()
    # Hex, never urlsafe: a password starting with "-" reads as an option to neo4j-admin.
    password = password or secrets.token_hex(18)
    logs = cache_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"neo4j-{port}.log"
    with tempfile.TemporaryDirectory(prefix="graphgate-neo4j-") as scratch:
        home = Path(scratch) / "home"
        _write_config(home, port, settings or {})
        env = _clean_env(home)
        admin = subprocess.run(
            [java, "-Xmx256m", "-cp", classpath, "org.neo4j.cli.AdminTool",
             "dbms", "set-initial-password", password],
            env=env, capture_output=True, text=True, timeout=_ADMIN_TIMEOUT, check=False,
        )  # fmt: skip
        if admin.returncode != 0:
            raise Neo4jUnavailable(
                f"neo4j-admin dbms set-initial-password failed: {admin.stderr.strip()[-800:]}"
            )
        # If this process dies without cleaning up, the kernel sends java SIGTERM.
        guard = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
        args = [
            *guard,
            java,
            *_JVM_OPTIONS,
            "-cp",
            classpath,
            "org.neo4j.server.CommunityEntryPoint",
            f"--home-dir={home}",
            f"--config-dir={home / 'conf'}",
        ]
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
            uri = f"bolt://127.0.0.1:{port}"
            _wait_ready(process, uri, password, home / "logs" / "neo4j.log", ready_timeout)
            yield Neo4jInstance(
                host="127.0.0.1",
                port=port,
                user=ADMIN_USER,
                password=password,
                home=home,
                log_path=home / "logs" / "neo4j.log",
                version=version,
                pid=process.pid,
                started_in=time.monotonic() - started,
            )
        finally:
            stop_group(process, _STOP_TIMEOUT)


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("download", help="resolve the server's jars into ~/.m2 and .cache/")
    run = commands.add_parser("run", help="run Neo4j on loopback until Ctrl-C")
    run.add_argument("--port", type=int, default=7687)
    run.add_argument("--password", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            print(download(args.cache_dir))
            return 0
        with running_neo4j(port=args.port, password=args.password, cache_dir=args.cache_dir) as neo:
            print(f"Neo4j {neo.version} on {neo.uri} (user {neo.user}, password {neo.password})")
            print("Ctrl-C to stop.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    except Neo4jUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
