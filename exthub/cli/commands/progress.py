"""A live progress bar fed by WatchExecution (``percent_complete``, ``status_message``), on stderr."""

from __future__ import annotations

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from exthub.cli.commands.common import stderr_console
from exthub.cli.commands.render import event_line
from exthub.client import DEFAULT_WAIT_SECONDS, HubClient, state_name
from exthub.execution.v1 import execution_pb2

__all__ = ["follow_execution"]


def _description(state: str, message: str) -> str:
    return f"{state} {message}".strip()


async def follow_execution(
    hub: HubClient, execution: execution_pb2.Execution, *, max_wait: float = DEFAULT_WAIT_SECONDS
) -> execution_pb2.Execution:
    """Watch ``execution`` until it ends, showing a progress bar and one line per event; return it at the end."""
    console = stderr_console()
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(
            _description(state_name(execution.state), execution.status_message),
            total=100,
            completed=execution.percent_complete,
        )

        def show(event: execution_pb2.ExecutionEvent) -> None:
            progress.console.print(event_line(event), markup=False, highlight=False)
            progress.update(
                bar,
                completed=event.percent_complete,
                description=_description(state_name(event.state), event.status_message),
            )

        return await hub.wait(execution.name, max_wait=max_wait, on_event=show)
