"""Renderings show the hub's data as it is: text that looks like rich markup is printed, not interpreted."""

from __future__ import annotations

import io

from google.protobuf import struct_pb2
from rich.console import Console

from exthub.catalog.v1 import resources_pb2
from exthub.cli.commands import render
from exthub.execution.v1 import execution_pb2

TRICKY = "[/] closes nothing, [bold]opens[/bold] and [red]stays"


def printed(*renderables: object) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    for renderable in renderables:
        console.print(renderable)
    return buffer.getvalue()


def test_catalog_text_is_not_markup() -> None:
    extension = resources_pb2.Extension(
        name="extensions/x", display_name=TRICKY, publisher=TRICKY, description=TRICKY, tags=[TRICKY]
    )
    out = printed(render.extensions_table([extension]), render.extension_details(extension))
    assert out.count(TRICKY) >= 3


def test_execution_text_is_not_markup() -> None:
    result = struct_pb2.Struct()
    result.update({"echo": TRICKY, "n": 2.0})
    execution = execution_pb2.Execution(
        name="executions/e",
        state=execution_pb2.Execution.VALIDATION_FAILED,
        status_message=TRICKY,
        labels={"k": TRICKY},
        result=result,
        validation_errors=[execution_pb2.ValidationError(field="f", message=TRICKY)],
    )
    event = execution_pb2.ExecutionEvent(sequence=1, status_message=TRICKY)
    out = printed(render.execution_panel(execution), render.events_table([event]), render.executions_table([execution]))
    assert out.count(TRICKY) >= 4
    assert '"n": 2' in out  # a whole double is shown as an integer
    assert render.event_line(event).endswith(TRICKY)
