"""Typer application: ``exthub up``, ``exthub token`` and ``exthub check``, plus the client commands.

Importing the CLI loads only the client side (the stubs, :mod:`exthub.client`, :mod:`exthub.contract`):
``exthub up`` imports its supervisor, which starts the hub's processes, when it runs; ``exthub check`` runs the
execution service's invariant checker as its own process (``python -m services.execution.invariants``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
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


#: The module ``exthub check`` runs (the hub's side: the CLI never imports it).
INVARIANT_CHECKER = "services.execution.invariants"


@app.command()
def check(
    data_dir: DataDir = Path(".exthub-data"),
    require_terminal: Annotated[
        bool, typer.Option("--require-terminal", help="Every execution must have ended (no work in flight).")
    ] = False,
    settled: Annotated[
        bool, typer.Option("--settled", help="The outbox relay has caught up: finished executions relay nothing.")
    ] = False,
    accepted: Annotated[
        Path | None,
        typer.Option("--accepted", help="A file of execution names clients were given (one a line): none lost."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the execution invariants over the hub's execution store (the backend of EXTHUB_BACKEND and the
    data directory), also while the hub runs: gap-free events, allowed moves only, one terminal state, the
    document agreeing with its last event. Prints a summary; exits 1 on a violation, 2 if the store cannot be
    read."""
    if importlib.util.find_spec(INVARIANT_CHECKER.split(".", 1)[0]) is None:
        typer.secho("exthub check: the hub is not installed here (only its client)", fg="red", err=True)
        raise typer.Exit(2)
    arguments = [sys.executable, "-m", INVARIANT_CHECKER]
    arguments += ["--require-terminal"] if require_terminal else []
    arguments += ["--settled"] if settled else []
    arguments += ["--accepted", str(accepted)] if accepted is not None else []
    arguments += ["--json"] if json_output else []
    environment = {**os.environ, "EXTHUB_DATA_DIR": str(data_dir)}
    raise typer.Exit(subprocess.run(arguments, env=environment, check=False).returncode)


register_client_commands(app)
