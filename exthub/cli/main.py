"""Typer application: ``exthub up`` and ``exthub token``, plus the client commands.

Importing the CLI loads only the client side (the stubs, :mod:`exthub.client`, :mod:`exthub.contract`):
``exthub up`` imports its supervisor, which starts the hub's processes, when it runs.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from exthub.cli.commands import register as register_client_commands
from exthub.cli.commands.common import profile_is_azure
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


class Backend(StrEnum):
    """Where the hub keeps its state: embedded SQLite files, or the Azure services."""

    local = "local"
    azure = "azure"


@app.command()
def up(
    data_dir: DataDir = Path(".exthub-data"),
    port: Annotated[
        int, typer.Option("--port", help="The gateway's public port (0 lets the OS choose).", min=0, max=65535)
    ] = 8080,
    backend: Annotated[
        Backend,
        typer.Option(
            "--backend",
            help="local: SQLite files in the data directory. azure: Cosmos DB, Service Bus, Blob Storage and Entra "
            "ID, at the endpoints of the EXTHUB_AZURE__* and EXTHUB_AUTH__* settings (or, with --emulators, local "
            "stand-ins).",
        ),
    ] = Backend.local,
    emulators: Annotated[
        bool,
        typer.Option(
            "--emulators",
            help="With --backend azure: first start the Cosmos DB emulator, Azurite, a Service Bus test broker and a "
            "local token authority, and point the hub at them.",
        ),
    ] = False,
) -> None:
    """Start the whole hub, wait until every part is healthy, print its URL; Ctrl-C stops it cleanly."""
    supervisor = _supervisor()
    try:
        code = asyncio.run(supervisor.run_hub(data_dir=data_dir, port=port, backend=backend.value, emulators=emulators))
    except supervisor.HubStartError as error:
        typer.secho(f"exthub up: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _supervisor() -> ModuleType:
    """The supervisor (the server side: imported only by the commands that need it)."""
    import exthub.cli.supervisor as supervisor

    return supervisor


@app.command()
def token(
    data_dir: DataDir = Path(".exthub-data"),
    roles: Annotated[str, typer.Option("--roles", help=f"Comma-separated app roles ({', '.join(ALL_ROLES)}).")] = "",
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="Tenant id (the `tid` claim); default: `local`, or the emulators' tenant."),
    ] = None,
    user: Annotated[str, typer.Option("--user", help="User id (the `oid` claim).")] = "developer",
    ttl: Annotated[int, typer.Option("--ttl", help="Lifetime in seconds.", min=1, max=86_400)] = 3600,
    backend: Annotated[
        Backend | None,
        typer.Option(
            "--backend",
            help="The profile to mint for; default: the one `exthub up` last ran with this data directory.",
        ),
    ] = None,
) -> None:
    """Print a token that the hub of the data directory accepts: a development JWT, or on the emulator profile
    (`exthub up --backend azure --emulators`) a user token of its local token authority."""
    role_list = [r.strip() for r in roles.split(",") if r.strip()]
    if backend is None and not profile_is_azure(data_dir):
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            issuer = DevIssuer.load_or_create(data_dir)
        except OSError as error:
            typer.secho(f"exthub token: cannot use data directory {data_dir}: {error.strerror}", fg="red", err=True)
            raise typer.Exit(2) from None
        typer.echo(issuer.issue(tenant=tenant or "local", user=user, roles=role_list, ttl_seconds=ttl))
        return
    supervisor = _supervisor()
    try:
        minted = supervisor.profile_user_token(
            data_dir,
            backend=None if backend is None else backend.value,
            roles=role_list,
            tenant=tenant,
            user=user,
            ttl=ttl,
        )
    except (supervisor.HubStartError, OSError) as error:
        typer.secho(f"exthub token: {error}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(minted)


register_client_commands(app)
