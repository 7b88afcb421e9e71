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
