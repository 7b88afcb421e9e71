"""``exthub run EXT[@VERSION]``: create an execution, upload its inputs, follow it, download its outputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf import struct_pb2

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
    JsonOption,
    TokenOption,
    UrlOption,
    UsageProblem,
    print_json,
    read_json_argument,
    run_command,
    stderr_console,
    stdout_console,
    usage_errors,
)
from exthub.cli.commands.progress import follow_execution
from exthub.client import DEFAULT_WAIT_SECONDS, HubClient, is_terminal_state, state_name
from exthub.contract.roles import EXECUTIONS_RUN
from exthub.execution.v1 import execution_pb2
from exthub.type.v1 import types_pb2

__all__ = ["parse_assignments", "parse_version", "run"]

_PRIORITIES = {"LOW": types_pb2.LOW, "NORMAL": types_pb2.NORMAL, "HIGH": types_pb2.HIGH}


def parse_version(text: str) -> str:
    """``echo`` → ``extensions/echo/versions/latest``; ``echo@1.0.0`` → ``…/versions/1.0.0``; full names pass."""
    value = text.strip()
    if value.startswith("extensions/"):
        parts = value.split("/")
        if len(parts) == 4 and parts[2] == "versions" and parts[1] and parts[3]:
            return value
        if len(parts) == 2 and parts[1]:
            return f"{value}/versions/latest"
        raise UsageProblem(f"{text!r} is not an extension version (EXT, EXT@VERSION or extensions/EXT/versions/V)")
    extension, _, version = value.partition("@")
    if not extension or "/" in extension or "/" in version or (value.endswith("@") and not version):
        raise UsageProblem(f"{text!r} is not an extension version (EXT, EXT@VERSION or extensions/EXT/versions/V)")
    return f"extensions/{extension}/versions/{version or 'latest'}"


def parse_assignments(values: list[str], *, what: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` → ``{"a": "1", "b": "2"}``; a :class:`UsageProblem` for a malformed or repeated one."""
    parsed: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest:
            raise UsageProblem(f"{what} {value!r} must look like NAME=VALUE")
        if key.strip() in parsed:
            raise UsageProblem(f"{what} {key.strip()!r} is given twice")
        parsed[key.strip()] = rest
    return parsed


def _request_struct(value: str | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    data = read_json_argument(value, what="--request")
    if not isinstance(data, dict):
        raise UsageProblem("--request must be a JSON object")
    request = struct_pb2.Struct()
    request.update(data)
    return request


def _input_files(values: list[str]) -> dict[str, Path]:
    files = {name: Path(path) for name, path in parse_assignments(values, what="--input").items()}
    for name, path in files.items():
        if not path.is_file():
            raise UsageProblem(f"--input {name}: {path} is not a file")
    return files


async def _check_inputs_declared(hub: HubClient, version: str, files: dict[str, Path]) -> None:
    found = await hub.catalog.GetExtensionVersion(catalog_service_pb2.GetExtensionVersionRequest(name=version))
    declared = sorted(i.name for i in found.inputs)
    unknown = sorted(set(files) - set(declared))
    if unknown:
        raise UsageProblem(
            f"{found.name} has no input named {', '.join(unknown)} (declared: {', '.join(declared) or 'none'})"
        )


def run(
    extension_version: Annotated[
        str, typer.Argument(metavar="EXT[@VERSION]", help="What to run: echo, echo@1.0.0 (default: latest).")
    ],
    profile: Annotated[str, typer.Option("--profile", help="The execution profile (default: default).")] = "",
    priority: Annotated[
        str | None, typer.Option("--priority", help="LOW, NORMAL or HIGH (default: NORMAL).", show_default=False)
    ] = None,
    request: Annotated[
        str | None, typer.Option("--request", help="Request parameters: a JSON object, or a JSON file.")
    ] = None,
    inputs: Annotated[
        list[str] | None, typer.Option("--input", help="NAME=PATH: upload a file as an input (repeatable).")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Download the outputs here when it succeeds.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it with a progress bar until it ends.")] = False,
    validate_only: Annotated[bool, typer.Option("--validate-only", help="Only validate the request.")] = False,
    labels: Annotated[list[str] | None, typer.Option("--label", help="KEY=VALUE label (repeatable).")] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="UUID that makes the create idempotent (default: new).")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds for the whole run (create, inputs, --wait).")
    ] = DEFAULT_WAIT_SECONDS,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    catalog_url: CatalogUrlOption = None,
    token: TokenOption = None,
    azure_scope: AzureScopeOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Run an extension: create the execution, upload inputs and continue, optionally wait and download outputs.

    Exits 0 when the execution succeeded (or was accepted and not waited for), 1 when it ended otherwise.
    """
    options = HubOptions(url, catalog_url, token, azure_scope, data_dir)
    with usage_errors("run"):
        version = parse_version(extension_version)
        chosen_priority = types_pb2.PRIORITY_UNSPECIFIED
        if priority is not None:
            if priority.upper() not in _PRIORITIES:
                raise UsageProblem(f"--priority must be one of {', '.join(_PRIORITIES)}, not {priority!r}")
            chosen_priority = _PRIORITIES[priority.upper()]
        execution = execution_pb2.Execution(
            extension_version=version,
            profile=profile,
            priority=chosen_priority,
            validate_only=validate_only,
            request=_request_struct(request),
            labels=parse_assignments(labels or [], what="--label"),
        )
        files = _input_files(inputs or [])
        execution.expected_inputs.extend(files)  # the hub waits in PENDING_INPUTS for them, optional or not

    async def action() -> int:
        notes = stderr_console()
        deadline = time.monotonic() + timeout
        async with options.connect([EXECUTIONS_RUN]) as hub:
            if files:  # check the names before anything runs
                await _check_inputs_declared(hub, version, files)
            current = await hub.create_execution(execution, request_id=request_id, call_timeout=timeout)
            notes.print(f"Created {current.name} ({state_name(current.state)})")
            if current.state == execution_pb2.Execution.PENDING_INPUTS:
                if files:
                    notes.print(f"Uploading {', '.join(files)} …")
                current = await hub.upload_inputs(current, files, call_timeout=max(deadline - time.monotonic(), 0.1))
            if wait and not is_terminal_state(current.state):
                current = await follow_execution(hub, current, max_wait=max(deadline - time.monotonic(), 0.1))
            if output_dir is not None:
                if current.state == execution_pb2.Execution.SUCCEEDED:
                    saved = await hub.download_outputs(current, output_dir)
                    for name, path in saved.items():
                        notes.print(f"Downloaded output {name} → {path}")
                    if not saved:
                        notes.print("No outputs were provided.")
                else:
                    notes.print(f"No outputs downloaded: the execution is {state_name(current.state)}.")
        if as_json:
            print_json(current)
        else:
            stdout_console().print(render.execution_panel(current))
        if is_terminal_state(current.state) and current.state not in render.GOOD_STATES:
            return EXIT_FAILED
        return 0

    run_command("run", options, action)
