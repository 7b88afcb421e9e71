"""``exthub demo``: a guided walk through the hub with the sample extension ``echo``, step by step.

Steps: the catalog entry; a synchronous run; asynchronous runs at LOW, NORMAL and HIGH priority, waited for
through WatchExecution; an input uploaded and an output downloaded through object accessors; validation
only (success and failure); direct mode (a signed token verified with GetSigningKeys). Each step says what
it does, shows what came back and passes or fails; the demo exits 1 if any step failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import grpc
import jwt
import typer
from google.protobuf import json_format, struct_pb2
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from exthub.catalog.v1 import catalog_service_pb2
from exthub.cli.commands import render
from exthub.cli.commands.common import (
    DEFAULT_DATA_DIR,
    DEFAULT_URL,
    EXIT_FAILED,
    AzureScopeOption,
    CatalogUrlOption,
    DataDirOption,
    HubOptions,
    TokenOption,
    UrlOption,
    run_command,
    stdout_console,
    timestamp_text,
)
from exthub.client import (
    ExecutionWaitTimeout,
    HubClient,
    ObjectTransferError,
    TokenProviderError,
    rpc_error_details,
    state_name,
)
from exthub.contract.roles import EXECUTIONS_RUN
from exthub.contract.signatures import SignatureInvalid, verify_direct_token
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from exthub.type.v1 import types_pb2

__all__ = ["STEPS", "demo"]

Execution = execution_pb2.Execution
EXTENSION = "extensions/echo"
LATEST = f"{EXTENSION}/versions/latest"
DEFAULT_STEP_TIMEOUT = 60.0


class StepFailed(Exception):
    """A step's outcome is not what the hub promises; the message says what was expected."""


@dataclass
class DemoContext:
    """What the steps share: the client, where to print, how long to wait, a scratch directory."""

    hub: HubClient
    console: Console
    timeout: float
    workdir: Path


StepAction = Callable[[DemoContext], Awaitable[str]]


@dataclass(frozen=True)
class Step:
    """One step of the walk: a title, what it shows the user, and the action (returns a one-line outcome)."""

    title: str
    explanation: str
    action: StepAction
    essential: bool = False  # the rest cannot work without it


@dataclass
class StepResult:
    """How a step went."""

    title: str
    passed: bool | None  # None: skipped
    outcome: str = field(default="")


def _struct(**values: Any) -> struct_pb2.Struct:
    request = struct_pb2.Struct()
    request.update(values)
    return request


def _expect(execution: Execution, state: Execution.State.ValueType) -> None:
    if execution.state != state:
        detail = f": {render.error_text(execution.error)}" if execution.error.code else ""
        raise StepFailed(f"{execution.name} ended {state_name(execution.state)}, expected {state_name(state)}{detail}")


async def step_catalog(ctx: DemoContext) -> str:
    """The sample extension and its versions, profiles, inputs and outputs."""
    try:
        extension = await ctx.hub.catalog.GetExtension(catalog_service_pb2.GetExtensionRequest(name=EXTENSION))
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            raise StepFailed(f"{EXTENSION} is not in the catalog: `exthub up` registers it on first start") from None
        raise
    versions = await ctx.hub.catalog.ListExtensionVersions(
        catalog_service_pb2.ListExtensionVersionsRequest(parent=EXTENSION)
    )
    ctx.console.print(render.extension_details(extension))
    ctx.console.print(render.versions_table(versions.versions, title=f"Versions of {EXTENSION}"))
    latest = next((v for v in versions.versions if v.latest), None)
    if latest is None:
        raise StepFailed(f"{EXTENSION} has no latest version to run")
    profiles = {p.name for p in latest.profiles}
    missing = {"default", "async", "direct"} - profiles
    if missing:
        raise StepFailed(f"{latest.name} lacks the profile(s) {', '.join(sorted(missing))}")
    return f"{extension.display_name} by {extension.publisher}: latest {latest.name.rsplit('/', 1)[-1]}"


async def step_sync(ctx: DemoContext) -> str:
    """A synchronous run: the outcome comes back with the call."""
    request = _struct(message="hello from exthub demo")

    def show(event: execution_pb2.ExecutionEvent) -> None:
        ctx.console.print("  " + render.event_line(event), markup=False)

    done = await ctx.hub.create_and_wait(
        Execution(extension_version=LATEST, profile="default", request=request),
        max_wait=ctx.timeout,
        on_event=show,
    )
    ctx.console.print(render.execution_panel(done, title="Synchronous run"))
    _expect(done, Execution.SUCCEEDED)
    events = await ctx.hub.executions.ListExecutionEvents(
        execution_service_pb2.ListExecutionEventsRequest(parent=done.name)
    )
    ctx.console.print(render.events_table(events.events, title="Its events (gap-free sequence)"))
    echoed = json_format.MessageToDict(done.result).get("echo")
    if echoed != json_format.MessageToDict(request):
        raise StepFailed(f"echo answered {echoed!r}, expected the request back")
    return f"{done.name} SUCCEEDED; echo returned the request"


async def step_async(ctx: DemoContext) -> str:
    """Three queued runs at LOW, NORMAL and HIGH priority, waited for through WatchExecution."""
    created: list[Execution] = []
    for priority in (types_pb2.LOW, types_pb2.NORMAL, types_pb2.HIGH):
        name = types_pb2.Priority.Name(priority)
        execution = await ctx.hub.create_execution(
            Execution(extension_version=LATEST, profile="async", priority=priority, request=_struct(priority=name)),
            call_timeout=ctx.timeout,
        )
        if execution.state == Execution.PENDING_INPUTS:  # echo declares an optional input: continue without it
            execution = await ctx.hub.upload_inputs(execution, {}, call_timeout=ctx.timeout)
        created.append(execution)
        ctx.console.print(f"  {name:<6} {execution.name} → {state_name(execution.state)}")
    ctx.console.print(f"  Waiting up to {ctx.timeout:g} s for an agent to take them from the queue …")
    outcomes = await asyncio.gather(
        *(ctx.hub.wait(e.name, max_wait=ctx.timeout) for e in created), return_exceptions=True
    )
    finished: list[Execution] = []
    unfinished: list[str] = []
    for execution, outcome in zip(created, outcomes, strict=True):
        label = types_pb2.Priority.Name(execution.priority)
        if isinstance(outcome, ExecutionWaitTimeout):
            unfinished.append(f"{label} still {outcome.state}")
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            finished.append(outcome)
    if unfinished:
        raise StepFailed(
            f"not finished within {ctx.timeout:g} s ({', '.join(unfinished)}): queued work runs only when the "
            "hub's asynchronous worker (the agent's queue consumer) is running"
        )
    table = Table(title="Finished, in the order they started", title_justify="left")
    for column in ("Priority", "Execution", "State", "Started", "Ended"):
        table.add_column(column, overflow="fold")
    for execution in sorted(finished, key=lambda e: (e.start_time.seconds, e.start_time.nanos)):
        render.add_row(
            table,
            types_pb2.Priority.Name(execution.priority),
            execution.name,
            render.state_text(execution.state),
            timestamp_text(execution.start_time, milliseconds=True),
            timestamp_text(execution.end_time, milliseconds=True),
        )
    ctx.console.print(table)
    for execution in finished:
        _expect(execution, Execution.SUCCEEDED)
    return "LOW, NORMAL and HIGH all SUCCEEDED"


async def step_objects(ctx: DemoContext) -> str:
    """An input uploaded through a signed write-only URL, an output downloaded through a read-only one."""
    content = b"Exthub moves files through short-lived signed URLs, not through the hub.\n" * 64
    document = ctx.workdir / "document.txt"
    await asyncio.to_thread(document.write_bytes, content)
    request = _struct(step="inputs and outputs")
    execution = await ctx.hub.create_execution(
        Execution(extension_version=LATEST, request=request, expected_inputs=["document"]), call_timeout=ctx.timeout
    )
    _expect(execution, Execution.PENDING_INPUTS)
    (upload,) = [i.upload for i in execution.inputs if i.name == "document"]
    ctx.console.print(
        f"  {execution.name} is PENDING_INPUTS; input 'document' gets a {upload.method} URL "
        f"valid until {timestamp_text(upload.expire_time)}"
    )
    done = await ctx.hub.upload_inputs(execution, {"document": document}, call_timeout=ctx.timeout)
    ctx.console.print(f"  uploaded {len(content)} bytes and continued → {state_name(done.state)}")
    if done.state != Execution.SUCCEEDED:
        done = await ctx.hub.wait(done.name, max_wait=ctx.timeout)
    _expect(done, Execution.SUCCEEDED)
    seen = json_format.MessageToDict(done.result).get("inputs", {}).get("document", {})
    expected = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    ctx.console.print("  echo read the input and reports:", render.json_block(seen))
    if seen.get("sha256") != expected["sha256"] or int(seen.get("size", -1)) != expected["size"]:
        raise StepFailed(f"echo saw {seen}, expected {expected}")
    saved = await ctx.hub.download_outputs(done, ctx.workdir / "outputs")
    if "report" not in saved:
        raise StepFailed(f"no 'report' output was provided (outputs: {', '.join(saved) or 'none'})")
    report = await asyncio.to_thread(saved["report"].read_text, encoding="utf-8")
    ctx.console.print(f"  downloaded output 'report' ({len(report)} bytes):", render.json_block(json.loads(report)))
    if json.loads(report) != json_format.MessageToDict(request):
        raise StepFailed("the report output is not the JSON of the request")
    return "the input's SHA-256 matched on the extension's side; the output came back"


async def step_validation(ctx: DemoContext) -> str:
    """Validation only: the extension checks the request without running it."""
    valid = await ctx.hub.create_and_wait(
        Execution(extension_version=LATEST, validate_only=True, request=_struct(message="fine")),
        max_wait=ctx.timeout,
    )
    ctx.console.print(f"  a valid request → {state_name(valid.state)}")
    _expect(valid, Execution.VALIDATION_SUCCEEDED)
    invalid = await ctx.hub.create_and_wait(
        Execution(extension_version=LATEST, validate_only=True, request=_struct(invalid=True)),
        max_wait=ctx.timeout,
    )
    ctx.console.print(render.execution_panel(invalid, title="An invalid request"))
    _expect(invalid, Execution.VALIDATION_FAILED)
    if not invalid.validation_errors:
        raise StepFailed("VALIDATION_FAILED came without validation errors")
    fields = ", ".join(e.field for e in invalid.validation_errors)
    return f"valid → VALIDATION_SUCCEEDED; invalid → VALIDATION_FAILED on {fields}"


async def step_direct(ctx: DemoContext) -> str:
    """Direct mode: the hub issues a signed token and the client calls the extension itself."""
    execution = await ctx.hub.create_execution(
        Execution(extension_version=LATEST, profile="direct"), call_timeout=ctx.timeout
    )
    if execution.state == Execution.PENDING_INPUTS:
        execution = await ctx.hub.upload_inputs(execution, {}, call_timeout=ctx.timeout)
    _expect(execution, Execution.DIRECT_TOKEN_ISSUED)
    keys = await ctx.hub.executions.GetSigningKeys(execution_service_pb2.GetSigningKeysRequest())
    jwks = {"keys": [json_format.MessageToDict(k, preserving_proto_field_name=True) for k in keys.keys]}
    unverified = jwt.decode(execution.direct_token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(execution.direct_token).get("kid", "")
    try:
        claims = verify_direct_token(
            execution.direct_token, jwks, issuer=str(unverified.get("iss", "")), audience=execution.extension
        )
    except SignatureInvalid as error:
        raise StepFailed(f"the direct token does not verify with GetSigningKeys: {error}") from None
    table = Table(title=f"Verified claims (ES256, key {kid})", title_justify="left")
    table.add_column("Claim", style="bold")
    table.add_column("Value", overflow="fold")
    for name in ("iss", "sub", "aud", "execution", "extension", "version", "profile", "tid", "oid", "iat", "exp"):
        render.add_row(table, name, str(claims.get(name, "")))
    ctx.console.print(f"  {execution.name} → DIRECT_TOKEN_ISSUED; GetSigningKeys lists {len(keys.keys)} key(s)")
    ctx.console.print(table)
    return f"token for {claims['aud']} verified with the hub's public key {kid}"


STEPS: tuple[Step, ...] = (
    Step(
        "The sample extension",
        "Reads extensions/echo from the catalog: its versions and execution profiles (sync, async, direct).",
        step_catalog,
        essential=True,
    ),
    Step(
        "A synchronous run",
        "Creates an execution with the default profile: the hub calls echo during the create call "
        "(after the optional input is skipped with ContinueExecution) and the result comes back at once.",
        step_sync,
    ),
    Step(
        "Asynchronous runs with priorities",
        "Queues three executions with the async profile at LOW, NORMAL and HIGH priority; an agent takes "
        "HIGH work first. The demo follows each with WatchExecution until it ends.",
        step_async,
    ),
    Step(
        "Inputs and outputs",
        "Uploads a file through the input's signed write-only URL, continues the execution, checks that echo "
        "read the same bytes (SHA-256), then downloads the output through its signed read-only URL.",
        step_objects,
    ),
    Step(
        "Validation only",
        "Asks echo to validate a good and a bad request without running them; the errors are kept on the execution.",
        step_validation,
    ),
    Step(
        "Direct mode",
        "Gets a signed direct token instead of a run, and verifies it with the hub's public keys (GetSigningKeys).",
        step_direct,
    ),
)


async def _run_step(step: Step, ctx: DemoContext) -> StepResult:
    try:
        outcome = await step.action(ctx)
    except StepFailed as failure:
        return StepResult(step.title, False, str(failure))
    except grpc.aio.AioRpcError as error:
        return StepResult(step.title, False, rpc_error_details(error).one_line())
    except (ExecutionWaitTimeout, ObjectTransferError, TokenProviderError) as error:
        return StepResult(step.title, False, str(error))
    return StepResult(step.title, True, outcome)


def _summary(results: list[StepResult]) -> Table:
    table = Table(title="Summary", title_justify="left")
    table.add_column("Step")
    table.add_column("Result")
    table.add_column("Outcome", overflow="fold")
    marks = {True: "[green]passed[/green]", False: "[red]FAILED[/red]", None: "[yellow]skipped[/yellow]"}
    for index, result in enumerate(results, 1):
        table.add_row(f"{index}. {result.title}", marks[result.passed], escape(result.outcome))
    return table


async def walk(options: HubOptions, *, step_timeout: float, console: Console) -> int:
    """Run every step against the hub; 0 if all passed, 1 otherwise."""
    console.print(
        Panel(
            f"A guided tour of the hub at [bold]{escape(options.url)}[/bold] with the sample extension echo.\n"
            f"Each step says what it does, calls the hub and checks the answer (waits up to {step_timeout:g} s).",
            title="exthub demo",
            title_align="left",
        )
    )
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="exthub-demo-"))
    results: list[StepResult] = []
    try:
        async with options.connect([EXECUTIONS_RUN]) as hub:
            ctx = DemoContext(hub=hub, console=console, timeout=step_timeout, workdir=workdir)
            for index, step in enumerate(STEPS, 1):
                console.rule(f"Step {index}/{len(STEPS)}: {step.title}", align="left")
                console.print(step.explanation, style="dim")
                result = await _run_step(step, ctx)
                results.append(result)
                mark = "[green]✓ passed[/green]" if result.passed else "[red]✗ failed[/red]"
                console.print(f"{mark}: {escape(result.outcome)}")
                if not result.passed and step.essential:
                    results += [StepResult(s.title, None, "needs step 1") for s in STEPS[index:]]
                    break
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)
    console.rule()
    console.print(_summary(results))
    return 0 if all(r.passed for r in results) else EXIT_FAILED


def demo(
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds each step may wait for executions to end.")
    ] = DEFAULT_STEP_TIMEOUT,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Walk through the hub with the sample extension: sync, async with priorities, objects, validation, direct."""
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)

    async def action() -> int:
        return await walk(options, step_timeout=timeout, console=stdout_console())

    run_command("demo", options, action)
