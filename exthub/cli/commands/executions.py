"""``exthub executions list|get|cancel|retry|events``: follow and manage executions."""

from __future__ import annotations

from typing import Annotated

import typer

from exthub.cli.commands import render
from exthub.cli.commands.common import (
    DEFAULT_DATA_DIR,
    DEFAULT_URL,
    EXIT_FAILED,
    AzureScopeOption,
    CatalogUrlOption,
    DataDirOption,
    HubOptions,
    JsonOption,
    TokenOption,
    UrlOption,
    execution_name,
    print_json,
    run_command,
    stdout_console,
    usage_errors,
)
from exthub.cli.commands.progress import follow_execution
from exthub.client import DEFAULT_WAIT_SECONDS, is_terminal_state
from exthub.contract.roles import EXECUTIONS_RUN, HUB_ADMIN
from exthub.execution.v1 import execution_pb2, execution_service_pb2

app = typer.Typer(help="Follow and manage executions (your tenant's; Hub.Admin sees all).", no_args_is_help=True)

ExecutionArgument = Annotated[str, typer.Argument(help="The execution: executions/<id> or <id>.")]
MAX_PAGE_SIZE = 1000
EVENTS_PAGE_SIZE = 1000


@app.command("list")
def list_executions(
    filter_: Annotated[
        str, typer.Option("--filter", help="AIP-160 filter, e.g. 'state = FAILED AND extension = \"extensions/echo\"'.")
    ] = "",
    order_by: Annotated[str, typer.Option("--order-by", help="e.g. 'create_time desc'.")] = "",
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Show at most this many.")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """List executions."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)

    async def action() -> int:
        found: list[execution_pb2.Execution] = []
        async with options.connect() as hub:
            request = execution_service_pb2.ListExecutionsRequest(filter=filter_, order_by=order_by)
            while True:
                request.page_size = min(limit - len(found), MAX_PAGE_SIZE)
                page = await hub.executions.ListExecutions(request)
                found.extend(page.executions)
                if not page.next_page_token or len(found) >= limit:
                    break
                request.page_token = page.next_page_token
        if as_json:
            print_json(execution_service_pb2.ListExecutionsResponse(executions=found))
        else:
            stdout_console().print(render.executions_table(found, title=f"Executions ({len(found)})"))
        return 0

    run_command("executions list", options, action)


@app.command()
def get(
    execution: ExecutionArgument,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the execution has ended (WaitExecution), then show it.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait with --wait.")
    ] = DEFAULT_WAIT_SECONDS,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Show one execution: state, progress, result, errors, objects; --wait first waits until it has ended."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)
    with usage_errors("executions get"):
        name = execution_name(execution)

    async def action() -> int:
        async with options.connect() as hub:
            found = await (hub.wait(name, max_wait=timeout) if wait else hub.get_execution(name))
        if as_json:
            print_json(found)
        else:
            stdout_console().print(render.execution_panel(found))
        return 0

    run_command("executions get", options, action)


@app.command()
def cancel(
    execution: ExecutionArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Cancel an execution (QUEUED and PENDING_INPUTS at once; RUNNING once its agent stops)."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)
    with usage_errors("executions cancel"):
        name = execution_name(execution)

    async def action() -> int:
        async with options.connect([EXECUTIONS_RUN]) as hub:
            cancelled = await hub.executions.CancelExecution(execution_service_pb2.CancelExecutionRequest(name=name))
        if as_json:
            print_json(cancelled)
        else:
            stdout_console().print(render.execution_panel(cancelled, title=f"Cancelled {cancelled.name}"))
        return 0

    run_command("executions cancel", options, action)


@app.command()
def retry(
    execution: ExecutionArgument,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the new execution until it ends.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait with --wait.")
    ] = DEFAULT_WAIT_SECONDS,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Run a finished execution again as a new execution (``retried_from`` points back)."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)
    with usage_errors("executions retry"):
        name = execution_name(execution)

    async def action() -> int:
        async with options.connect([EXECUTIONS_RUN]) as hub:
            again = await hub.executions.RetryExecution(execution_service_pb2.RetryExecutionRequest(name=name))
            if wait and not is_terminal_state(again.state):
                again = await follow_execution(hub, again, max_wait=timeout)
        if as_json:
            print_json(again)
        else:
            stdout_console().print(render.execution_panel(again, title=f"Retry of {name}: {again.name}"))
        if is_terminal_state(again.state) and again.state not in render.GOOD_STATES:
            return EXIT_FAILED
        return 0

    run_command("executions retry", options, action)


@app.command()
def events(
    execution: ExecutionArgument,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing events until the execution ends.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to follow with --follow.")
    ] = DEFAULT_WAIT_SECONDS,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Show an execution's events (gap-free sequence); --follow streams them live (WatchExecution)."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)
    with usage_errors("executions events"):
        name = execution_name(execution)

    async def action() -> int:
        found: list[execution_pb2.ExecutionEvent] = []
        async with options.connect() as hub:
            if follow:
                console = stdout_console()

                def show(event: execution_pb2.ExecutionEvent) -> None:
                    found.append(event)
                    if not as_json:
                        console.print(render.event_line(event), markup=False)

                await hub.wait(name, max_wait=timeout, on_event=show)
            else:
                request = execution_service_pb2.ListExecutionEventsRequest(parent=name, page_size=EVENTS_PAGE_SIZE)
                while True:
                    page = await hub.executions.ListExecutionEvents(request)
                    found.extend(page.events)
                    if not page.next_page_token:
                        break
                    request.page_token = page.next_page_token
        if as_json:
            print_json(execution_service_pb2.ListExecutionEventsResponse(events=found))
        elif not follow:
            stdout_console().print(render.events_table(found, title=f"Events of {name}"))
        return 0

    run_command("executions events", options, action)


@app.command("dead-letters")
def dead_letters(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Show at most this many.")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """List the work queue's dead letters (Hub.Admin); `exthub executions retry` redrives one."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)

    async def action() -> int:
        found: list[execution_service_pb2.DeadLetter] = []
        async with options.connect([HUB_ADMIN]) as hub:
            request = execution_service_pb2.ListDeadLettersRequest()
            while True:
                request.page_size = min(limit - len(found), MAX_PAGE_SIZE)
                page = await hub.executions.ListDeadLetters(request)
                found.extend(page.dead_letters)
                if not page.next_page_token or len(found) >= limit:
                    break
                request.page_token = page.next_page_token
        if as_json:
            print_json(execution_service_pb2.ListDeadLettersResponse(dead_letters=found))
        else:
            stdout_console().print(render.dead_letters_table(found, title=f"Dead letters ({len(found)})"))
        return 0

    run_command("executions dead-letters", options, action)
