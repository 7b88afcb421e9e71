"""Errors as a user sees them from the real ``exthub`` process: one line on stderr, an exit code, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.component.cli.conftest import HubProcess

EXTHUB = [sys.executable, "-m", "exthub.cli"]
TIMEOUT = 60


def exthub(hub: HubProcess, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **hub.env}
    if url is not None:
        env["EXTHUB_URL"] = env["EXTHUB_CATALOG_URL"] = url
    return subprocess.run(
        [*EXTHUB, *args, "--data-dir", str(hub.data_dir)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_call_prints_the_status_and_reason_in_one_line(hub: HubProcess) -> None:
    result = exthub(hub, "executions", "get", "executions/00000000-0000-4000-8000-000000000000")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("exthub executions get: NOT_FOUND: ")
    assert result.stderr.rstrip().endswith("[EXECUTION_NOT_FOUND]")


def test_invalid_argument_shows_the_field_violations(hub: HubProcess) -> None:
    result = exthub(hub, "executions", "list", "--filter", "nope = 1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("exthub executions list: INVALID_ARGUMENT: ")
    assert "[INVALID_FILTER]" in result.stderr and "(filter: " in result.stderr


def test_an_unreachable_hub_is_named(hub: HubProcess) -> None:
    url = f"127.0.0.1:{closed_port()}"
    result = exthub(hub, "extensions", "list", url=url)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"exthub extensions list: cannot reach the hub at {url}: UNAVAILABLE: ")
    assert result.stderr.count("\n") == 1


def test_a_missing_development_key_says_what_to_do(hub: HubProcess, tmp_path: Path) -> None:
    result = subprocess.run(
        [*EXTHUB, "extensions", "list", "--data-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **hub.env},
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no development issuer key in" in result.stderr and "exthub up --data-dir" in result.stderr
    assert not (tmp_path / "nowhere").exists()  # nothing was created behind the user's back
