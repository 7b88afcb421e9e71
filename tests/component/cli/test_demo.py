"""``exthub demo`` against a real hub: every step runs, says what it did and passes or fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import Result

from tests.component.cli.conftest import Cli, HubProcess, start_hub, stop_hub

STEP_TIMEOUT = "3"  # the async step waits this long for the queue to be worked
_OUTCOME = re.compile(r"^(✓ passed|✗ failed): (.*)$")


@pytest.fixture(scope="module")
def demo_run(hub: HubProcess) -> Result:
    return Cli(hub)("demo", "--timeout", STEP_TIMEOUT)


def outcomes(result: Result) -> list[tuple[bool, str]]:
    """(passed, outcome) of each step, in order, from the ``✓ passed: …`` / ``✗ failed: …`` lines."""
    found = [_OUTCOME.match(line) for line in result.stdout.splitlines()]
    return [(m.group(1) == "✓ passed", m.group(2)) for m in found if m is not None]


def test_demo_walks_through_every_step(demo_run: Result) -> None:
    steps = outcomes(demo_run)
    assert len(steps) == 6, demo_run.stdout
    for title in ("The sample extension", "A synchronous run", "Asynchronous runs with priorities"):
        assert title in demo_run.stdout
    catalog, sync, _async, objects, validation, direct = steps
    assert catalog == (True, "Echo by Exthub: latest 1.0.0")
    assert sync[0] and sync[1].endswith("SUCCEEDED; echo returned the request")
    assert objects == (True, "the input's SHA-256 matched on the extension's side; the output came back")
    assert validation == (True, "valid → VALIDATION_SUCCEEDED; invalid → VALIDATION_FAILED on invalid")
    assert direct[0] and direct[1].startswith("token for extensions/echo verified with the hub's public key ")
    # what each step showed
    assert "Its events (gap-free sequence)" in demo_run.stdout
    assert "LOW    executions/" in demo_run.stdout and "HIGH   executions/" in demo_run.stdout
    assert "the request asked to be invalid" in demo_run.stdout
    assert "Verified claims (ES256, key" in demo_run.stdout
    assert re.search(r"│ tid\s+│ local\s+│", demo_run.stdout)
    assert re.search(r"│ aud\s+│ extensions/echo\s+│", demo_run.stdout)
    assert "Summary" in demo_run.stdout


def test_demo_async_step_completes_and_the_demo_passes(demo_run: Result) -> None:
    steps = outcomes(demo_run)
    assert steps[2] == (True, "LOW, NORMAL and HIGH all SUCCEEDED"), demo_run.stdout
    assert demo_run.exit_code == 0


def test_without_a_worker_the_async_step_says_why_and_the_demo_fails(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("cli-hub-no-worker")
    idle = start_hub(root / "data", root / "hub.log", worker=False)
    try:
        result = Cli(idle)("demo", "--timeout", "1")
    finally:
        stop_hub(idle.process)
    assert result.exit_code == 1
    steps = outcomes(result)
    assert [passed for passed, _ in steps] == [True, True, False, True, True, True]
    assert steps[2][1].startswith("not finished within 1 s (LOW still QUEUED, NORMAL still QUEUED, HIGH still QUEUED)")
    assert "asynchronous worker" in steps[2][1]


def test_demo_without_a_development_key_stops_after_step_one(cli: Cli, tmp_path: Path) -> None:
    result = cli("demo", "--data-dir", tmp_path / "empty")
    assert result.exit_code == 1
    steps = outcomes(result)
    assert len(steps) == 1 and not steps[0][0]
    assert steps[0][1].startswith(f"no development issuer key in {tmp_path / 'empty'}")
    assert result.stdout.count("skipped") == 5
