"""The everyday client commands of ``exthub``: catalog, runs, executions and the guided demo."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the client commands to the ``exthub`` application."""
    from exthub.cli.commands.demo import demo
    from exthub.cli.commands.executions import app as executions_app
    from exthub.cli.commands.extensions import app as extensions_app
    from exthub.cli.commands.run import run

    app.add_typer(extensions_app, name="extensions")
    app.add_typer(executions_app, name="executions")
    app.command("run")(run)
    app.command("demo")(demo)
