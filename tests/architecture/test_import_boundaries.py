"""The layering rules of docs/architecture.md, checked on the code: dependencies point inward.

* The client (``exthub.client``) and the contract package (``exthub.contract``) import nothing of the hub's
  server side (``services``, ``gateway``, ``tools``) — not even inside a function — and neither does the CLI,
  except ``exthub up``'s supervisor, which is only imported when ``exthub up`` runs.
* Importing the client or the CLI, and running an everyday command, loads no ``services`` module (``exthub check``
  runs the checker in a process of its own).
* The agent imports nothing of the execution service (it calls it over gRPC).
* Use-case handlers (``services/*/handlers``) speak domain types: no gRPC and no generated protos.
* No test skips or swallows a failed import: a missing ``gen/`` fails the suite.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_SIDE = ("services", "gateway", "tools", "bench", "tests")
#: The CLI module that starts the hub's processes; ``exthub up`` imports it lazily.
SUPERVISOR = ROOT / "exthub" / "cli" / "supervisor.py"
#: What a handler must not import: gRPC, protobuf runtime types, ``google.rpc`` and the generated stubs.
PROTO_OR_GRPC = ("grpc", "grpc_status", "google.protobuf", "google.rpc", "google.api")


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every import in a file, at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of ``prefixes`` or inside one of them."""
    return any(module == prefix or module.startswith(f"{prefix}.") for prefix in prefixes)


def is_generated(module: str) -> bool:
    """A generated stub module (``exthub.<package>.v1…``)."""
    parts = module.split(".")
    return len(parts) >= 3 and parts[0] == "exthub" and parts[2].startswith("v") and parts[2][1:].isdigit()


def python_files(*directories: Path) -> list[Path]:
    """The Python files under ``directories``."""
    files = sorted(path for directory in directories for path in directory.rglob("*.py"))
    assert files, f"no Python files under {directories}"
    return files


def violations(files: list[Path], forbidden: object) -> list[str]:
    """``file:line module`` for every import that ``forbidden(module)`` refuses."""
    assert callable(forbidden)
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if forbidden(module)
    ]


def test_the_client_and_the_contract_import_nothing_of_the_server_side() -> None:
    files = python_files(ROOT / "exthub" / "client", ROOT / "exthub" / "contract")
    found = violations(files, lambda module: is_under(module, SERVER_SIDE) or is_under(module, ("exthub.cli",)))
    assert not found, found


def test_the_contract_does_not_depend_on_the_client() -> None:
    found = violations(python_files(ROOT / "exthub" / "contract"), lambda module: is_under(module, ("exthub.client",)))
    assert not found, found


def test_the_cli_imports_the_server_side_only_in_the_supervisor() -> None:
    files = [path for path in python_files(ROOT / "exthub" / "cli") if path != SUPERVISOR]
    found = violations(files, lambda module: is_under(module, SERVER_SIDE))
    assert not found, found
    lazily = [module for _, module in imported_modules(ROOT / "exthub" / "cli" / "main.py") if "supervisor" in module]
    assert lazily == ["exthub.cli.supervisor"], "exthub up imports its supervisor when it runs"


def test_the_agent_imports_nothing_of_the_execution_service() -> None:
    """The agent talks to the execution service over gRPC only (message format: the contract package)."""
    found = violations(
        python_files(ROOT / "services" / "agent"), lambda module: is_under(module, ("services.execution",))
    )
    assert not found, found


@pytest.mark.parametrize(
    "handlers",
    sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "services").glob("*/handlers")),
)
def test_handlers_import_no_grpc_and_no_protos(handlers: str) -> None:
    found = violations(
        python_files(ROOT / handlers), lambda module: is_under(module, PROTO_OR_GRPC) or is_generated(module)
    )
    assert not found, found


def test_the_handler_check_sees_every_service_and_catches_a_proto_import(tmp_path: Path) -> None:
    assert {path.parent.name for path in (ROOT / "services").glob("*/handlers")} >= {"catalog", "execution"}
    sample = tmp_path / "handler.py"
    sample.write_text("def f():\n    from exthub.execution.v1 import execution_pb2\n    import grpc.aio\n")
    assert [m for _, m in imported_modules(sample) if is_under(m, PROTO_OR_GRPC) or is_generated(m)] == [
        "exthub.execution.v1",
        "grpc.aio",
    ]
    assert not is_generated("exthub.contract.states") and not is_generated("exthub.client")


LOADED_MODULES = """
import sys
{body}
print(",".join(sorted(m for m, module in sys.modules.items() if module is not None and m.split(".")[0] in {roots!r})))
"""


def loaded_modules(body: str, cwd: Path, roots: tuple[str, ...], env: dict[str, str] | None = None) -> str:
    """The modules under ``roots`` a fresh interpreter has loaded after running ``body`` (an entry ``None`` in
    ``sys.modules``, which makes a module unimportable, is not a loaded module)."""
    proc = subprocess.run(
        [sys.executable, "-c", LOADED_MODULES.format(body=body, roots=roots)],
        cwd=cwd,
        env={**os.environ, "EXTHUB_DATA_DIR": str(cwd / "data"), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def loaded_server_modules(body: str, cwd: Path) -> str:
    """The ``services``/``gateway`` modules a fresh interpreter has loaded after running ``body``."""
    return loaded_modules(body, cwd, ("services", "gateway"))


def test_importing_the_client_loads_no_service_module(tmp_path: Path) -> None:
    assert loaded_server_modules("import exthub.client", tmp_path) == ""


def test_the_cli_and_its_everyday_commands_load_no_service_module(tmp_path: Path) -> None:
    body = """
import contextlib, io
from exthub.cli import app
for argv in (
    ["token", "--roles", "Executions.Run"], ["run", "--help"], ["demo", "--help"], ["executions", "--help"],
    ["check", "--data-dir", "no-hub-here"],
):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        app(argv)
"""
    assert loaded_server_modules(body, tmp_path) == ""


def test_a_local_profile_service_loads_no_azure_sdk(tmp_path: Path) -> None:
    """The Azure SDKs cost start time and memory: only a process on the azure backend imports them."""
    body = """
import asyncio
import services.agent.__main__, services.catalog.app, services.execution.app
from services.platform.backends import Backends
from services.platform.settings import Settings

async def open_and_close() -> None:
    backends = await Backends.open(Settings())
    await backends.close()

asyncio.run(open_and_close())
"""
    assert loaded_modules(body, tmp_path, ("azure",), env={"EXTHUB_BACKEND": "local"}) == ""


#: What a running service must not have loaded: the CLI's toolkit (typer, click, rich and pygments, which
#: structlog would import if allowed), the filter parser (lark, loaded by the first filter a list request
#: carries) and, with tracing off, the OpenTelemetry SDK, instrumentations and exporters.
NOT_IN_A_SERVICE = ("rich", "pygments", "typer", "click", "lark", "opentelemetry", "azure")
_OTEL_API = "opentelemetry"  # the API alone (no-op tracer, context) is allowed; its heavy parts are not
_OTEL_HEAVY = ("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter")
#: ...nor the ports and SDKs of backends it does not use: only the execution service publishes execution events
#: (the events package, the CloudEvents SDK), and only once a publisher is configured (webhooks, the topic), and
#: stores objects; the catalog uses no work queue, the agent no document store.
NOT_USED_BY = {
    "catalog": ("services.platform.events", "cloudevents", "services.objects", "services.platform.workqueue"),
    "execution": ("services.platform.events", "cloudevents"),
    "agent": ("services.platform.events", "cloudevents", "services.objects", "services.platform.docstore"),
}

#: Starts one service as ``python -m services.<name>`` does (``run_service`` with the ``__main__`` module's
#: ``_start``) on OS-chosen ports, stops it once started, and leaves the interpreter with what it loaded.
STARTED_SERVICE = """
import services.{service}.__main__ as entry
from services.platform.entrypoint import run_service

class Started(Exception):
    pass

async def start_then_stop(settings):
    app = await entry._start(settings)
    await app.stop(0)
    raise Started

try:
    run_service("{service}", start_then_stop)
except Started:
    pass
else:
    raise SystemExit("the service did not start")
"""


@pytest.mark.parametrize("service", ["catalog", "execution", "agent"])
def test_a_started_service_loads_no_cli_toolkit_no_filter_parser_and_no_tracing_sdk(
    service: str, tmp_path: Path
) -> None:
    """Idle memory: every module a service imports stays resident. Started the way ``exthub up`` starts it (local
    backend, tracing off), a service has not loaded what only the CLI, a filtered list request or tracing use,
    nor the ports of backends it does not use."""
    env = {
        "EXTHUB_BACKEND": "local",
        "OTEL_SDK_DISABLED": "true",
        **{f"EXTHUB_{port}": "0" for port in ("CATALOG_PORT", "EXECUTION_PORT", "AGENT_PORT", "OBJECTS_PORT")},
    }
    unwanted = (*NOT_IN_A_SERVICE, *NOT_USED_BY[service])
    loaded = loaded_modules(STARTED_SERVICE.format(service=service), tmp_path, unwanted, env=env)
    found = [
        module
        for module in loaded.split(",")
        if module and (not is_under(module, (_OTEL_API,)) or is_under(module, _OTEL_HEAVY))
    ]
    assert not found, f"services.{service} loaded {found}"


def test_the_service_import_probe_sees_what_a_service_loads(tmp_path: Path) -> None:
    """The probe above would notice: a started service does load structlog, and rich is only shut out because
    ``run_service`` does it (a plain import of the platform loads rich through structlog)."""
    started = loaded_modules(
        STARTED_SERVICE.format(service="catalog"), tmp_path, ("structlog", "grpc"), env={"EXTHUB_CATALOG_PORT": "0"}
    )
    assert "structlog" in started.split(",") and "grpc" in started.split(",")
    assert "rich" in loaded_modules("import services.platform.logging", tmp_path, ("rich",)).split(",")


def import_failure_handlers(path: Path) -> list[int]:
    """Lines where a module skips or swallows a failed import (``pytest.importorskip``, ``except ImportError``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "importorskip":
            lines.append(node.lineno)
        elif isinstance(node, ast.ExceptHandler) and node.type is not None:
            caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            if any(isinstance(c, ast.Name) and c.id in ("ImportError", "ModuleNotFoundError") for c in caught):
                lines.append(node.lineno)
    return lines


def test_no_test_skips_when_generated_code_or_a_module_is_missing(tmp_path: Path) -> None:
    """A missing ``gen/`` (or any module) fails the suite instead of skipping tests quietly."""
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in python_files(ROOT / "tests")
        for line in import_failure_handlers(path)
        if path != Path(__file__)
    ]
    assert not found, found
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import pytest\nstubs = pytest.importorskip('exthub.catalog.v1')\n"
        "try:\n    import grpc\nexcept (ImportError, OSError):\n    grpc = None\n"
    )
    assert sorted(import_failure_handlers(sample)) == [2, 5]
