"""Every command of the README, run as written against a real `exthub up`.

The README's blocks are read from the file (not copied here), so an edit that breaks one fails this test. They
run in a scratch directory that looks like a checkout (``.venv`` and ``README.md`` linked in, ``.exthub-data``
is the hub's data directory). The one change is the gateway address (in the text and as ``EXTHUB_URL``), because
the test hub listens on an OS-chosen port instead of 8080.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.exthub_up import RunningHub

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_ADDRESS = "127.0.0.1:8080"
COMMAND_TIMEOUT = 120.0
_BLOCK = re.compile(r"```(sh|python)\n(.*?)```", re.DOTALL)


def readme_blocks(section: str, language: str) -> list[str]:
    """The fenced ``language`` blocks under the README heading ``## section``."""
    text = README.read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    body = next((p for p in parts if p.startswith(section + "\n")), None)
    assert body is not None, f"README has no section {section!r}"
    return [code for lang, code in _BLOCK.findall(body) if lang == language]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, RunningHub]]:
    work = tmp_path_factory.mktemp("readme")
    (work / ".venv").symlink_to(ROOT / ".venv")
    (work / "README.md").symlink_to(README)
    hub = RunningHub(work / ".exthub-data")
    try:
        yield work, hub
    finally:
        assert hub.stop() == 0


def run(workdir: tuple[Path, RunningHub], code: str, *, language: str = "sh") -> str:
    work, hub = workdir
    code = code.replace(DEFAULT_URL, hub.url).replace(DEFAULT_ADDRESS, hub.address)
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "sh" else [sys.executable, "-c", code]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EXTHUB_")}
    result = subprocess.run(
        command,
        cwd=work,
        env={**environment, "EXTHUB_URL": hub.url, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"README block failed ({result.returncode}):\n{code}\n{result.stdout}{result.stderr}"
    return result.stdout


def hub_output(hub: RunningHub) -> str:
    """What ``exthub up`` printed to its log so far (its lines after the URL follow within moments: bounded wait)."""
    deadline = time.monotonic() + 10
    text = hub.log.read_text("utf-8")
    while "traces:" not in text and time.monotonic() < deadline:
        time.sleep(0.05)
        text = hub.log.read_text("utf-8")
    return text


def test_first_rest_call(workdir: tuple[Path, RunningHub]) -> None:
    (block,) = readme_blocks("A first REST call", "sh")
    output = run(workdir, block)
    assert '"name":"extensions/echo"' in output
    # the create answer is the finished execution: echo's optional input does not make it wait
    assert '"state":"SUCCEEDED"' in output and '"echo":{"message":"hello"}' in output
    assert '"extensionVersion":"extensions/echo/versions/1.0.0"' in output and "PENDING_INPUTS" not in output


def test_first_grpc_call_with_grpcurl_and_python(workdir: tuple[Path, RunningHub]) -> None:
    (shell,) = readme_blocks("A first gRPC call", "sh")
    output = run(workdir, shell)
    assert "exthub.catalog.v1.CatalogService" in output and "exthub.execution.v1.ExecutionService" in output
    assert '"name": "extensions/echo"' in output
    (python,) = readme_blocks("A first gRPC call", "python")
    printed = run(workdir, python, language="python")
    assert printed.startswith("SUCCEEDED") and "'message': 'hi'" in printed


def test_everyday_commands_and_the_demo(workdir: tuple[Path, RunningHub]) -> None:
    (block,) = readme_blocks("Everyday commands", "sh")
    output = run(workdir, block)
    work, _ = workdir
    assert "extensions/echo" in output and "SUCCEEDED" in output
    downloaded = list((work / "out").iterdir())
    assert downloaded, "exthub run --output-dir downloaded echo's output"
    assert "6/6" in output or "all steps passed" in output.lower(), output[-2000:]


def test_editing_a_proto_commands_exist() -> None:
    """The generator's commands in the README are the ones the test suite runs (``--check``) or documents."""
    (block,) = readme_blocks("Editing a proto", "sh")
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert ".venv/bin/python -m tools.generate --check" in commands
    result = subprocess.run(
        [sys.executable, "-m", "tools.generate", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--update-baseline" in result.stdout and "--check" in result.stdout


def test_benchmark_commands_start() -> None:
    """Each benchmark in the README is a module with a working command line that takes the options written beside it
    (the runs themselves are long)."""
    (block,) = readme_blocks("Benchmarks", "sh")
    commands = re.findall(r"-m (bench\.\w+)([^#\n]*)", block)
    assert len({module for module, _ in commands}) >= 5
    for module, options in commands:
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and "usage" in result.stdout.lower(), (module, result.stderr[-1000:])
        for option in re.findall(r"--[a-z][a-z-]*", options):
            assert option in result.stdout, (module, option)


def test_observability_commands(workdir: tuple[Path, RunningHub]) -> None:
    """The metrics commands run against the hub (the trace walkthrough starts a hub of its own: ``console``)."""
    (block,) = readme_blocks("Observability", "sh")
    output = run(workdir, block)
    work, _ = workdir
    endpoints = json.loads((work / ".exthub-data" / "endpoints.json").read_text())
    assert endpoints["parts"]["execution"]["metrics"] in output
    assert 'exthub_build_info{service="execution"' in output and 'exthub_queue_messages{priority="LOW"' in output
    assert endpoints["tracing"] is None, "no OTEL_EXPORTER_OTLP_* variable: tracing off"
    assert "traces: tracing off (set OTEL_EXPORTER_OTLP_ENDPOINT to export them)" in hub_output(workdir[1])
    walkthrough = re.findall(r"```console\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert any("tools.otlp_receiver" in text and "OTEL_EXPORTER_OTLP_ENDPOINT" in text for text in walkthrough)


AZURE_START_TIMEOUT = 120.0  # four stand-ins, then the hub, on a loaded 2-core machine


def test_run_on_the_azure_profile(tmp_path: Path) -> None:
    """The section's `exthub up` (its options as written) in a scratch checkout, then its calls: a REST call with
    the emulator profile's token, and an asynchronous run with an input and an output (Service Bus, Azurite)."""
    up, calls = readme_blocks("Run on the Azure profile", "sh")
    command = next(line.split("#")[0].split() for line in up.splitlines() if "exthub up" in line)
    options = command[command.index("up") + 1 :]
    assert options == ["--backend", "azure", "--emulators"]
    work = tmp_path / "readme-azure"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")
    (work / "README.md").symlink_to(README)
    hub = RunningHub(work / ".exthub-data", args=options, start_timeout=AZURE_START_TIMEOUT)
    try:
        output = run((work, hub), calls)
    finally:
        assert hub.stop() == 0
    assert '"state":"SUCCEEDED"' in output and '"echo":{"message":"hello"}' in output
    assert "SUCCEEDED" in output.split('"echo":{"message":"hello"}', 1)[1], "the asynchronous run succeeded"
    assert list((work / "out-azure").iterdir()), "exthub run --output-dir downloaded echo's output from Azurite"
