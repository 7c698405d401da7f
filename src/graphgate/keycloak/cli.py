"""``graphgate keycloak configure``: the command-line face of `graphgate.keycloak`.

Mounted by `graphgate.cli` as the ``keycloak`` sub-command. Like the rest of
the CLI it sits at the edge: typer reads the flags (and, for the admin
password, an environment variable or a hidden prompt, so the password need not
appear in the process list or the shell history).
"""

from __future__ import annotations

from typing import Annotated

import httpx
import typer

from graphgate.keycloak import KeycloakAdminError, configure_keycloak

keycloak_app = typer.Typer(
    name="keycloak",
    help="Set up Keycloak as graphgate's authorization server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@keycloak_app.callback()
def keycloak() -> None:
    """Set up Keycloak as graphgate's authorization server."""
    # A callback keeps ``configure`` a sub-command even while it is the only one.


@keycloak_app.command()
def configure(
    url: Annotated[
        str, typer.Option("--url", help="Keycloak's base URL, e.g. https://sso.example.com")
    ],
    public_url: Annotated[
        str,
        typer.Option(
            "--public-url",
            help="graphgate's public URL; tokens get the audience <public-url>/mcp.",
        ),
    ],
    admin_password: Annotated[
        str,
        typer.Option(
            "--admin-password",
            envvar="GRAPHGATE_KEYCLOAK_ADMIN_PASSWORD",
            prompt=True,
            hide_input=True,
            help="Admin password (or set GRAPHGATE_KEYCLOAK_ADMIN_PASSWORD).",
        ),
    ],
    realm: Annotated[str, typer.Option("--realm", help="Realm to configure.")] = "graphgate",
    admin_user: Annotated[
        str,
        typer.Option(
            "--admin-user",
            envvar="GRAPHGATE_KEYCLOAK_ADMIN_USER",
            help="Admin user name in the admin realm.",
        ),
    ] = "admin",
    admin_realm: Annotated[
        str, typer.Option("--admin-realm", help="Realm the admin user belongs to.")
    ] = "master",
    audience: Annotated[
        str | None,
        typer.Option(
            "--audience", help="Token audience if graphgate's `audience` setting overrides it."
        ),
    ] = None,
    tenants: Annotated[
        str | None,
        typer.Option(
            "--tenants",
            help="Comma list of tenants: offered as a pick list (NAME, NAME:write) for the "
            "users' tenants attribute.",
        ),
    ] = None,
    cimd_trusted_domains: Annotated[
        str | None,
        typer.Option(
            "--cimd-trusted-domains",
            help="Comma list of hosts (tools.example.com, *.example.com) whose https URLs "
            "MCP clients may use as client_id (Client ID Metadata Documents). Needs Keycloak "
            "started with --features=cimd (experimental in 26.7).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report the changes without making them.")
    ] = False,
) -> None:
    """Create or update REALM so that its tokens work with graphgate (idempotent)."""
    names = [part.strip() for part in (tenants or "").split(",") if part.strip()]
    domains = [part.strip() for part in (cimd_trusted_domains or "").split(",") if part.strip()]
    try:
        changes = configure_keycloak(
            base_url=url,
            realm=realm,
            admin_user=admin_user,
            admin_password=admin_password,
            admin_realm=admin_realm,
            public_url=public_url,
            audience=audience,
            tenants=names,
            dry_run=dry_run,
            cimd_trusted_domains=domains,
        )
    except (KeycloakAdminError, ValueError) as exc:
        typer.echo(f"graphgate: {exc}", err=True)
        raise typer.Exit(2) from None
    except httpx.HTTPError as exc:
        typer.echo(f"graphgate: cannot reach Keycloak at {url}: {exc}", err=True)
        raise typer.Exit(2) from None
    verb = "would change" if dry_run else "changed"
    if not changes:
        typer.echo(f"realm {realm}: already configured, nothing {verb}")
        return
    for change in changes:
        typer.echo(f"  {change}")
    typer.echo(f"realm {realm}: {len(changes)} {verb}")
