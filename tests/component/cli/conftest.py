"""A real hub in a child process for the CLI tests, and ``cli(...)`` to run ``exthub`` commands against it.

The hub (``hub_process``: catalog + execution + agent + echo over SQLite files) starts once per test package and
is stopped by its pid. Commands run in-process through typer's ``CliRunner`` (each one builds its own event
loop and gRPC channels, exactly as the console script does); the connection comes from the environment
(``EXTHUB_URL`` = the execution service, ``EXTHUB_CATALOG_URL`` = the catalog), and tokens are development
tokens minted from the hub's data directory, as ``exthub`` does on a developer's machine.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from exthub.cli.main import app

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class HubProcess:
    """A hub running in a child process: its data directory and addresses."""

    data_dir: Path
    catalog: str
    execution: str
    objects: str
    echo_url: str
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """The environment that points ``exthub`` commands at this hub."""
        return {"EXTHUB_URL": self.execution, "EXTHUB_CATALOG_URL": self.catalog, "COLUMNS": "200"}


def start_hub(data_dir: Path, log_path: Path, *, worker: bool = True) -> HubProcess:
    """Start ``hub_process`` and wait (bounded) until it announces its addresses."""
    read_end, write_end = os.pipe()
    extra = [] if worker else ["--no-worker"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.component.cli.hub_process", str(data_dir), str(write_end), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_end,),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], START_TIMEOUT)
        line = os.read(read_end, 4096).decode() if ready else ""
    finally:
        os.close(read_end)
    if not line.strip():
        stop_hub(process)
        raise RuntimeError(f"the hub process did not start; its log:\n{log_path.read_text()[-4000:]}")
    addresses: dict[str, Any] = json.loads(line)
    return HubProcess(
        data_dir, addresses["catalog"], addresses["execution"], addresses["objects"], addresses["echo"], process
    )


def stop_hub(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the hub process by its pid; kill it if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture(scope="package")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    root = tmp_path_factory.mktemp("cli-hub")
    started = start_hub(root / "data", root / "hub.log")
    try:
        yield started
    finally:
        stop_hub(started.process)


class Cli:
    """Runs ``exthub`` commands in-process against one hub."""

    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.runner = CliRunner()

    def __call__(self, *args: str | Path, env: dict[str, str] | None = None) -> Result:
        """``exthub ARGS --data-dir <hub data>``; the result has ``exit_code``, ``stdout`` and ``stderr``."""
        argv = [str(a) for a in args]
        if "--data-dir" not in argv and "--token" not in argv:
            argv += ["--data-dir", str(self.hub.data_dir)]
        return self.runner.invoke(app, argv, env={**self.hub.env, **(env or {})}, catch_exceptions=False)

    def json(self, *args: str | Path, exit_code: int = 0) -> Any:
        """Run with ``--json`` and parse stdout; fails the test unless the command exits with ``exit_code``."""
        result = self(*args, "--json")
        assert result.exit_code == exit_code, (result.stdout, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture
def cli(hub: HubProcess) -> Cli:
    return Cli(hub)
