"""The ``graphgate`` command: the only module that reads the environment.

It turns flags, ``GRAPHGATE_*`` variables and the TOML file into one `Settings`,
builds the parts and runs the server. A bad setting ends start-up with one
line naming it and exit code 2.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from graphgate.config import Settings, load_settings
from graphgate.errors import ConfigError, GraphgateError
from graphgate.keycloak.cli import keycloak_app

app = typer.Typer(
    name="graphgate",
    help="A multi-tenant MCP server for graph databases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

logger = logging.getLogger("graphgate")

DEMO_TOKENS_FILE = "demo-tokens.txt"
"""Where the demo's client commands go when stderr is not a terminal."""


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"graphgate: {message}", err=True)
    raise typer.Exit(code)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "settings"
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if not first["loc"] and ":" in message:
        # Model-level checks name their setting first: "host: refusing ..."
        return f"invalid setting {message}"
    return f"invalid setting '{location}': {message}"


def settings_from_cli(config: Path | None, **flags: Any) -> Settings:
    try:
        return load_settings(config, **flags)
    except ValidationError as exc:
        _fail(_describe(exc))
    except (FileNotFoundError, ConfigError) as exc:
        _fail(str(exc))
    except ValueError as exc:  # e.g. a malformed TOML file
        _fail(f"cannot read config file {config}: {exc}")


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file.", dir_okay=False)
]


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1]")] = None,
    # A string here, so a bad value is judged (in one line) with the other settings.
    port: Annotated[str | None, typer.Option(help="Port [default: 8000]")] = None,
    transport: Annotated[str | None, typer.Option(help="http or stdio [default: http]")] = None,
    public_url: Annotated[
        str | None, typer.Option(help="The URL clients reach graphgate at.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the embedded database and keys live.")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="embedded | falkordb://host:port | bolt://host:port"),
    ] = None,
    tenants: Annotated[
        str | None, typer.Option(help="Comma list of tenants, e.g. acme,globex")
    ] = None,
    allow_writes: Annotated[
        bool | None, typer.Option("--allow-writes", help="Offer run_write_query.")
    ] = None,
    auth: Annotated[str | None, typer.Option(help="none | dev | oidc")] = None,
    issuer: Annotated[str | None, typer.Option(help="The OIDC issuer URL (auth = oidc).")] = None,
    registration: Annotated[
        str | None, typer.Option(help="direct | shim | proxy [default: direct]")
    ] = None,
    static_client_id: Annotated[
        str | None,
        typer.Option(help="The pre-registered client id (registration = shim | proxy)."),
    ] = None,
    demo: Annotated[
        bool | None,
        typer.Option(
            "--demo",
            help="Seed two sample tenants; over HTTP this turns on dev auth "
            "unless --auth (or GRAPHGATE_AUTH, or the config file) says otherwise.",
        ),
    ] = None,
) -> None:
    """Run the MCP server (streamable HTTP at /mcp, or stdio)."""
    settings = settings_from_cli(
        config,
        host=host,
        port=port,
        transport=transport,
        public_url=public_url,
        data_dir=data_dir,
        backend=backend,
        tenants=tenants,
        allow_writes=allow_writes,
        auth=auth,
        issuer=issuer,
        registration=registration,
        static_client_id=static_client_id,
        demo=demo,
    )
    try:
        targets = settings.backend_targets  # reads the backends' password files
    except ValueError as exc:
        _fail(str(exc))
    if not settings.tenants and not any(t.discover for t in targets.values()):
        _fail(
            "invalid setting 'tenants': no tenants configured; pass --tenants acme,globex "
            "(or a [tenants] table in the config file), or use --demo"
        )
    from graphgate.observability import configure_logging, configure_telemetry
    from graphgate.server import run

    configure_logging(settings.log_level, settings.log_format)
    configure_telemetry(settings.otel_spans)
    if settings.auth == "dev":
        from graphgate.auth.dev import record_dev_issuer

        record_dev_issuer(settings)
    announce = None
    if settings.demo and settings.auth == "dev" and settings.transport == "http":
        to_terminal = sys.stderr.isatty()

        def announce() -> None:
            _announce_demo(settings, to_terminal=to_terminal)

    try:
        from graphgate.catalog_watch import SettingsSource

        flags = {
            "host": host,
            "port": port,
            "transport": transport,
            "public_url": public_url,
            "data_dir": data_dir,
            "backend": backend,
            "tenants": tenants,
            "allow_writes": allow_writes,
            "auth": auth,
            "issuer": issuer,
            "registration": registration,
            "static_client_id": static_client_id,
            "demo": demo,
        }
        source = SettingsSource(config, flags) if config is not None else None
        _run_fast(run(settings, announce, source))
    except ConfigError as exc:  # e.g. the port is taken, the audit log unwritable
        _fail(str(exc), code=2)
    except GraphgateError as exc:
        _fail(str(exc), code=1)


def _run_fast(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed: about a tenth less CPU per call."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        asyncio.run(main)
        return
    uvloop.run(main)


def _announce_demo(settings: Settings, *, to_terminal: bool) -> None:
    """Show the demo's client commands, whose tokens are admin credentials for 24 h.

    On a terminal they are printed. Otherwise stderr is the log stream a
    supervisor collects and keeps, so they go to a private file in the data
    dir instead, and only its path is printed.
    """
    banner = _demo_banner(settings)
    if to_terminal:
        typer.echo(banner, err=True)
        return
    from graphgate.auth.secret_files import replace_private

    path = settings.data_dir / DEMO_TOKENS_FILE
    replace_private(path, (banner + "\n").encode())
    typer.echo(
        f"graphgate demo: tenants {', '.join(sorted(settings.catalog))} at "
        f"{settings.resource_url}; client commands with tokens are in {path} (mode 0600)",
        err=True,
    )


def _demo_banner(settings: Settings) -> str:
    """Ready-to-paste client commands: browser sign-in, or a token for a user and an admin."""
    from graphgate.auth.dev import mint_dev_token
    from graphgate.auth.dev_authorization import serves_authorization

    first = sorted(settings.catalog)[0]
    user = mint_dev_token(settings, sub="demo-user", tenants=[first], admin=False, ttl=86400)
    admin = mint_dev_token(settings, sub="demo-admin", tenants=[], admin=True, ttl=86400)
    url = settings.resource_url
    # The console script beside this interpreter: runnable as printed, venv or not.
    command = Path(sys.executable).parent / "graphgate"
    writes = (
        "  writes are on (run_write_query) for tokens granting NAME:write"
        if settings.allow_writes
        else "  read-only: restart with --allow-writes to offer run_write_query"
    )
    sign_in = (
        [
            "  sign in through the browser (pick a demo user on graphgate's page):",
            f"    claude mcp add --transport http graphgate {url}",
            "  or paste a token instead,",
        ]
        if serves_authorization(settings)
        else []
    )
    return "\n".join(
        [
            f"graphgate demo: tenants {', '.join(sorted(settings.catalog))} at {url}",
            *sign_in,
            f"  a user of {first!r} (token valid 24 h):",
            f"    claude mcp add --transport http graphgate-{first} {url} "
            f'--header "Authorization: Bearer {user}"',
            "  an admin of every tenant:",
            f"    claude mcp add --transport http graphgate-admin {url} "
            f'--header "Authorization: Bearer {admin}"',
            writes,
            f"  more tokens: {command} token --sub NAME --tenants acme,globex:write [--admin]",
        ]
    )


@app.command()
def token(
    sub: Annotated[str, typer.Option("--sub", help="Subject (user name).")],
    tenants: Annotated[str, typer.Option(help="Comma list, each NAME or NAME:write.")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="Grant the admin role.")] = False,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.", min=1)] = 3600,
    config: ConfigOpt = None,
    data_dir: Annotated[Path | None, typer.Option(help="The server's data dir.")] = None,
    public_url: Annotated[str | None, typer.Option(help="The server's public URL.")] = None,
    host: Annotated[str | None, typer.Option(help="The server's host.")] = None,
    port: Annotated[str | None, typer.Option(help="The server's port.")] = None,
) -> None:
    """Mint a token signed by the dev issuer (auth = dev); printed on the last line.

    Without --public-url, --host, --port or --config, the issuer is the one the
    dev server on the same data dir recorded when it started.
    """
    from graphgate.auth.dev import mint_dev_token, recorded_dev_issuer

    if public_url is None and host is None and port is None and config is None:
        probe = settings_from_cli(None, data_dir=data_dir, auth="dev")
        public_url = recorded_dev_issuer(probe.data_dir)
    settings = settings_from_cli(
        config, data_dir=data_dir, public_url=public_url, host=host, port=port, auth="dev"
    )

    entries = [part.strip() for part in tenants.split(",") if part.strip()]
    try:
        value = mint_dev_token(settings, sub=sub, tenants=entries, admin=admin, ttl=ttl)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(value)


app.add_typer(keycloak_app, name="keycloak")

catalog_app = typer.Typer(help="Tenants and the backends they live on.", no_args_is_help=True)


@catalog_app.command("check")
def catalog_check(config: ConfigOpt = None) -> None:
    """Check the catalog against the live backends; exit 1 on any problem."""
    from graphgate.catalog import Catalog
    from graphgate.catalog_check import check_catalog, render

    settings = settings_from_cli(config)
    try:
        catalog = Catalog.from_settings(settings)
    except ConfigError as exc:
        _fail(str(exc))
    rows = asyncio.run(check_catalog(catalog))
    typer.echo(render(rows))
    if any(row.problem for row in rows):
        raise typer.Exit(1)


app.add_typer(catalog_app, name="catalog")


def main() -> None:
    # SIGTERM is how service managers ask for a stop: a clean shutdown, exit code 0
    # (130 would be reported as a failure). Ctrl-C keeps the shell's 130.
    signal.signal(signal.SIGTERM, _stop_cleanly)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


def _stop_cleanly(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
