"""Rich renderings of catalog and execution resources, shared by the commands and the demo."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2, status_pb2
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from exthub.catalog.v1 import catalog_service_pb2, resources_pb2
from exthub.cli.commands.common import timestamp_text
from exthub.client import state_name
from exthub.contract.errors import error_info
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from exthub.type.v1 import types_pb2

__all__ = [
    "GOOD_STATES",
    "add_row",
    "error_text",
    "event_line",
    "events_table",
    "execution_panel",
    "executions_table",
    "extension_details",
    "extensions_table",
    "facets_table",
    "json_block",
    "tidy_numbers",
    "versions_table",
]

Execution = execution_pb2.Execution
#: The terminal states that mean "it worked" for a command's exit code.
GOOD_STATES = frozenset({Execution.SUCCEEDED, Execution.VALIDATION_SUCCEEDED, Execution.DIRECT_TOKEN_ISSUED})
_STATE_STYLES = {
    Execution.SUCCEEDED: "green",
    Execution.VALIDATION_SUCCEEDED: "green",
    Execution.DIRECT_TOKEN_ISSUED: "green",
    Execution.FAILED: "red",
    Execution.VALIDATION_FAILED: "red",
    Execution.TIMED_OUT: "red",
    Execution.CANCELLED: "yellow",
}


def add_row(table: Table, *cells: str | RenderableType) -> None:
    """Add a row whose strings are shown as they are (never read as rich markup: data may contain ``[``)."""
    table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells))


def state_text(state: Execution.State.ValueType) -> Text:
    """The state's name, coloured by outcome."""
    return Text(state_name(state), style=_STATE_STYLES.get(state, "cyan"))


def tidy_numbers(value: Any) -> Any:
    """Struct numbers are doubles: show ``1.0`` as ``1`` (nested values included)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: tidy_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tidy_numbers(v) for v in value]
    return value


def json_block(data: struct_pb2.Struct | dict[str, Any] | list[Any]) -> Syntax:
    """Pretty JSON (a Struct or plain data)."""
    value = json_format.MessageToDict(data) if isinstance(data, struct_pb2.Struct) else data
    text = json.dumps(tidy_numbers(value), indent=2, sort_keys=True)
    return Syntax(text, "json", theme="ansi_dark", background_color="default", word_wrap=True)


def _id(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def extensions_table(extensions: Iterable[resources_pb2.Extension], *, title: str = "Extensions") -> Table:
    """One row per extension."""
    table = Table(title=title, title_justify="left")
    table.add_column("Extension", overflow="fold", style="bold")
    table.add_column("Display name", overflow="fold")
    table.add_column("Publisher", overflow="fold")
    table.add_column("Category", overflow="fold")
    table.add_column("Tags", overflow="fold")
    table.add_column("State")
    for ext in extensions:
        add_row(
            table,
            _id(ext.name),
            ext.display_name,
            ext.publisher,
            ext.category,
            ", ".join(ext.tags),
            resources_pb2.Extension.State.Name(ext.state),
        )
    return table


def facets_table(facets: Iterable[catalog_service_pb2.Facet]) -> Table:
    """Facet → its values with counts."""
    table = Table(title="Facets", title_justify="left")
    table.add_column("Facet", style="bold")
    table.add_column("Values (count)", overflow="fold")
    for facet in facets:
        add_row(table, facet.field, ", ".join(f"{v.value} ({v.count})" for v in facet.values))
    return table


def _profile_summary(profile: resources_pb2.ExecutionProfile) -> str:
    direct = " (direct)" if profile.mode == resources_pb2.ExecutionProfile.DIRECT else ""
    return f"{profile.name}: {profile.execution_model}{direct}"


def versions_table(versions: Iterable[resources_pb2.ExtensionVersion], *, title: str = "Versions") -> Table:
    """One row per version, newest first as the catalog returns them."""
    table = Table(title=title, title_justify="left")
    table.add_column("Version", style="bold")
    table.add_column("State")
    table.add_column("Latest")
    table.add_column("Profiles", overflow="fold")
    table.add_column("Inputs", overflow="fold")
    table.add_column("Outputs", overflow="fold")
    table.add_column("Created", overflow="fold")
    for version in versions:
        add_row(
            table,
            _id(version.name),
            resources_pb2.ExtensionVersion.State.Name(version.state),
            "yes" if version.latest else "",
            "\n".join(_profile_summary(p) for p in version.profiles),
            ", ".join(f"{i.name}{'' if i.required else '?'}" for i in version.inputs),
            ", ".join(o.name for o in version.outputs),
            timestamp_text(version.create_time),
        )
    return table


def extension_details(extension: resources_pb2.Extension) -> Table:
    """The extension's fields as a two-column grid."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    rows: Sequence[tuple[str, str]] = (
        ("Name", extension.name),
        ("Display name", extension.display_name),
        ("Publisher", extension.publisher),
        ("Description", extension.description),
        ("Category", "/".join(c for c in (extension.category, extension.subcategory) if c)),
        ("Tags", ", ".join(extension.tags)),
        ("Labels", ", ".join(f"{k}={v}" for k, v in sorted(extension.labels.items()))),
        ("State", resources_pb2.Extension.State.Name(extension.state)),
        ("Owner", extension.owner),
        ("Created", timestamp_text(extension.create_time)),
        ("Updated", timestamp_text(extension.update_time)),
    )
    for label, value in rows:
        if value:
            add_row(grid, label, value)
    return grid


def executions_table(executions: Iterable[Execution], *, title: str = "Executions") -> Table:
    """One row per execution."""
    table = Table(title=title, title_justify="left")
    table.add_column("Execution", overflow="fold", style="bold")
    table.add_column("Version", overflow="fold")
    table.add_column("Profile")
    table.add_column("Priority")
    table.add_column("State")
    table.add_column("%", justify="right")
    table.add_column("Created")
    for execution in executions:
        add_row(
            table,
            execution.name,
            execution.extension_version.removeprefix("extensions/"),
            execution.profile,
            types_pb2.Priority.Name(execution.priority),
            state_text(execution.state),
            str(execution.percent_complete),
            timestamp_text(execution.create_time),
        )
    return table


def dead_letters_table(dead_letters: Iterable[execution_service_pb2.DeadLetter], *, title: str) -> Table:
    """One row per dead-lettered queue message."""
    table = Table(title=title, title_justify="left")
    for column in ("Execution", "Attempt", "Priority", "Reason", "Description", "Deliveries", "Dead-lettered"):
        table.add_column(column, overflow="fold")
    for letter in dead_letters:
        add_row(
            table,
            letter.execution,
            str(letter.attempt),
            types_pb2.Priority.Name(letter.priority),
            letter.reason,
            letter.description,
            str(letter.delivery_count),
            timestamp_text(letter.dead_letter_time),
        )
    return table


def event_line(event: execution_pb2.ExecutionEvent) -> str:
    """``#3 PROGRESS RUNNING 50% message`` (one event on one line)."""
    kind = execution_pb2.ExecutionEvent.Type.Name(event.type)
    text = f"#{event.sequence} {kind} {state_name(event.state)} {event.percent_complete}%"
    if event.attempt > 1:
        text += f" (attempt {event.attempt})"
    return f"{text} {event.status_message}".rstrip()


def events_table(events: Iterable[execution_pb2.ExecutionEvent], *, title: str = "Events") -> Table:
    """One row per event, in sequence order."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("Type")
    table.add_column("State")
    table.add_column("%", justify="right")
    table.add_column("Attempt", justify="right")
    table.add_column("Time")
    table.add_column("Message", overflow="fold")
    for event in events:
        add_row(
            table,
            str(event.sequence),
            execution_pb2.ExecutionEvent.Type.Name(event.type),
            state_text(event.state),
            str(event.percent_complete),
            str(event.attempt),
            timestamp_text(event.time),
            event.status_message,
        )
    return table


def error_text(status: status_pb2.Status) -> str:
    """``CODE: message [REASON]`` of a ``google.rpc.Status`` (an execution's ``error``)."""
    try:
        code = code_pb2.Code.Name(status.code)
    except ValueError:
        code = str(status.code)
    text = f"{code}: {status.message or 'no message'}"
    info = error_info(status)
    if info is not None and info.reason:
        text += f" [{info.reason}]"
    return text


def execution_panel(execution: Execution, *, title: str | None = None) -> Panel:
    """Everything a person wants to know about one execution, in a panel."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    add_row(grid, "Name", execution.name)
    add_row(grid, "Version", execution.extension_version)
    add_row(grid, "Profile", f"{execution.profile} ({Execution.Mode.Name(execution.mode)})")
    add_row(grid, "Priority", types_pb2.Priority.Name(execution.priority))
    add_row(grid, "State", state_text(execution.state))
    add_row(grid, "Progress", f"{execution.percent_complete}% {execution.status_message}".rstrip())
    add_row(grid, "Attempt", str(execution.attempt))
    if execution.validate_only:
        add_row(grid, "Validate only", "yes")
    if execution.labels:
        add_row(grid, "Labels", ", ".join(f"{k}={v}" for k, v in sorted(execution.labels.items())))
    if execution.retried_from:
        add_row(grid, "Retried from", execution.retried_from)
    for label, stamp in (
        ("Created", execution.create_time),
        ("Started", execution.start_time),
        ("Ended", execution.end_time),
    ):
        if timestamp_text(stamp):
            add_row(grid, label, timestamp_text(stamp))
    if execution.inputs:
        add_row(
            grid,
            "Inputs",
            ", ".join(
                f"{i.name} ({'provided' if i.provided else 'required' if i.required else 'optional'})"
                for i in execution.inputs
            ),
        )
    if execution.outputs:
        add_row(
            grid,
            "Outputs",
            ", ".join(f"{o.name} ({'provided' if o.provided else 'not provided'})" for o in execution.outputs),
        )
    parts: list[RenderableType] = [grid]
    if execution.HasField("result"):
        parts += [Text("Result", style="bold"), json_block(execution.result)]
    if execution.validation_errors:
        errors = Table(title="Validation errors", title_justify="left")
        errors.add_column("Field")
        errors.add_column("Code")
        errors.add_column("Message", overflow="fold")
        for error in execution.validation_errors:
            add_row(errors, error.field, error.code, error.message)
        parts.append(errors)
    if execution.error.code:
        parts.append(Text(f"Error: {error_text(execution.error)}", style="red"))
    if execution.direct_token:
        parts += [Text("Direct token", style="bold"), Text(execution.direct_token, overflow="fold")]
    return Panel(Group(*parts), title=title or execution.name, title_align="left", expand=False)
