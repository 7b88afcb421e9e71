"""Typer application: ``exthub up`` and ``exthub token``, plus the client commands.

Importing the CLI loads only the client side (the stubs, :mod:`exthub.client`, :mod:`exthub.contract`):
``exthub up`` imports its supervisor, which starts the hub's processes, when it runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from exthub.cli.commands import register as register_client_commands
from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.roles import ALL_ROLES

app = typer.Typer(
    help="Exthub: a contract-first extension hub. `exthub up` runs it on this machine.",
    no_args_is_help=True,
    add_completion=False,
)

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="EXTHUB_DATA_DIR", help="Where the hub keeps its data, keys and logs.")
]


@app.command()
def up(
    data_dir: DataDir = Path(".exthub-data"),
    port: Annotated[
        int, typer.Option("--port", help="The gateway's public port (0 lets the OS choose).", min=0, max=65535)
    ] = 8080,
) -> None:
    """Start the whole hub, wait until every part is healthy, print its URL; Ctrl-C stops it cleanly."""
    from exthub.cli.supervisor import HubStartError, run_hub

    try:
        code = asyncio.run(run_hub(data_dir=data_dir, port=port))
    except HubStartError as error:
        typer.secho(f"exthub up: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command()
def token(
    data_dir: DataDir = Path(".exthub-data"),
    roles: Annotated[str, typer.Option("--roles", help=f"Comma-separated app roles ({', '.join(ALL_ROLES)}).")] = "",
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id (the `tid` claim).")] = "local",
    user: Annotated[str, typer.Option("--user", help="User id (the `oid` claim).")] = "developer",
    ttl: Annotated[int, typer.Option("--ttl", help="Lifetime in seconds.", min=1, max=86_400)] = 3600,
) -> None:
    """Print a development JWT that the local hub accepts."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        issuer = DevIssuer.load_or_create(data_dir)
    except OSError as error:
        typer.secho(f"exthub token: cannot use data directory {data_dir}: {error.strerror}", fg="red", err=True)
        raise typer.Exit(2) from None
    role_list = [r.strip() for r in roles.split(",") if r.strip()]
    typer.echo(issuer.issue(tenant=tenant, user=user, roles=role_list, ttl_seconds=ttl))


register_client_commands(app)
