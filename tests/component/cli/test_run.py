"""``exthub run``: sync runs, inputs and outputs through object accessors, --wait with progress, failures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.component.cli.conftest import Cli


def test_sync_run_with_inline_and_file_requests(cli: Cli, tmp_path: Path) -> None:
    inline = cli.json("run", "echo-plain", "--request", '{"hello": "world"}', "--label", "suite=cli")
    assert inline["state"] == "SUCCEEDED" and inline["mode"] == "SYNC"
    assert inline["result"]["echo"] == {"hello": "world"}
    assert inline["labels"] == {"suite": "cli"} and inline["priority"] == "NORMAL"
    request_file = tmp_path / "request.json"
    request_file.write_text('{"from": "a file"}')
    from_file = cli.json("run", "echo-plain@1.0.0", "--request", request_file, "--priority", "high")
    assert from_file["extensionVersion"] == "extensions/echo-plain/versions/1.0.0"
    assert from_file["result"]["echo"] == {"from": "a file"} and from_file["priority"] == "HIGH"


def test_run_uploads_inputs_and_downloads_outputs(cli: Cli, tmp_path: Path) -> None:
    content = b"an input document\n" * 500
    document = tmp_path / "document.bin"
    document.write_bytes(content)
    out = tmp_path / "out"
    result = cli("run", "echo", "--input", f"document={document}", "--output-dir", out, "--request", '{"k": 1}')
    assert result.exit_code == 0, result.stderr
    assert "Uploading document" in result.stderr and f"Downloaded output report → {out / 'report'}" in result.stderr
    assert "SUCCEEDED" in result.stdout
    assert json.loads((out / "report").read_text()) == {"k": 1}
    execution_id = result.stderr.split("Created executions/", 1)[1].split()[0]
    got = cli.json("executions", "get", execution_id)
    assert got["result"]["inputs"]["document"] == {
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    assert [(i["name"], i.get("provided", False)) for i in got["inputs"]] == [("document", True)]


def test_run_echo_without_inputs_runs_at_once(cli: Cli) -> None:
    """echo's only input is optional: the create call itself runs it (no PENDING_INPUTS, no :continue)."""
    result = cli("run", "echo", "--json")
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout)
    assert result.stderr.splitlines()[0] == f"Created {done['name']} (SUCCEEDED)"
    assert done["state"] == "SUCCEEDED"
    assert "inputs" not in done["result"]  # nothing was uploaded
    events = cli.json("executions", "events", done["name"])
    assert [e.get("state") for e in events["events"]] == ["RUNNING", "SUCCEEDED"]


def test_wait_shows_progress_fed_by_watch_execution(cli: Cli) -> None:
    result = cli("run", "echo-plain", "--request", '{"longRunning": true}', "--wait", "--timeout", "30")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Created executions/") and lines[0].endswith("(RUNNING)")
    assert "#1 CREATED RUNNING 0%" in result.stderr
    assert "#2 PROGRESS RUNNING 50%" in result.stderr
    assert "#3 STATE_CHANGED SUCCEEDED 100%" in result.stderr
    assert "SUCCEEDED" in result.stdout and '"longRunning": true' in result.stdout


def test_failed_and_invalid_runs_exit_1_with_the_reason(cli: Cli) -> None:
    failed = cli("run", "echo-plain", "--request", '{"failWith": 500}')
    assert failed.exit_code == 1
    assert "FAILED" in failed.stdout and "Error:" in failed.stdout
    invalid = cli("run", "echo-plain", "--validate-only", "--request", '{"invalid": true}')
    assert invalid.exit_code == 1
    assert "VALIDATION_FAILED" in invalid.stdout and "Validation errors" in invalid.stdout
    assert "the request asked to be invalid" in invalid.stdout
    valid = cli.json("run", "echo-plain", "--validate-only")
    assert valid["state"] == "VALIDATION_SUCCEEDED"


def test_async_run_is_queued_with_its_priority(cli: Cli) -> None:
    queued = cli.json("run", "echo-plain", "--profile", "async", "--priority", "LOW")
    assert queued["mode"] == "ASYNC" and queued["priority"] == "LOW"
    assert queued["state"] in ("QUEUED", "RUNNING", "SUCCEEDED")  # an agent may take it at once


def test_direct_run_returns_a_token(cli: Cli) -> None:
    direct = cli.json("run", "echo-plain", "--profile", "direct")
    assert direct["state"] == "DIRECT_TOKEN_ISSUED" and direct["directToken"].count(".") == 2


def test_bad_command_lines_exit_2_before_calling_the_hub(cli: Cli, tmp_path: Path) -> None:
    cases = {
        ("run", "echo", "--priority", "URGENT"): "--priority must be one of LOW, NORMAL, HIGH",
        ("run", "echo", "--request", "{not json"): "--request: the inline JSON is not valid JSON",
        ("run", "echo", "--request", "[1, 2]"): "--request must be a JSON object",
        ("run", "echo", "--input", "document"): "--input 'document' must look like NAME=VALUE",
        ("run", "echo", "--input", f"document={tmp_path / 'missing'}"): "is not a file",
        ("run", "a/b@1"): "is not an extension version",
        ("run", "echo", "--url", "ftp://x:1"): "unsupported scheme",
    }
    for args, message in cases.items():
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)


def test_inputs_are_checked_against_the_version_before_it_runs(cli: Cli, tmp_path: Path) -> None:
    document = tmp_path / "d.txt"
    document.write_text("x")
    before = cli.json("executions", "list", "--filter", 'extension = "extensions/echo-plain"', "--limit", "1000")
    result = cli("run", "echo-plain", "--input", f"document={document}")
    assert result.exit_code == 2
    assert "has no input named document (declared: none)" in result.stderr
    after = cli.json("executions", "list", "--filter", 'extension = "extensions/echo-plain"', "--limit", "1000")
    assert len(after.get("executions", [])) == len(before.get("executions", []))  # nothing was created


def test_unknown_version_is_not_found(cli: Cli) -> None:
    result = cli("run", "echo@9.9.9")
    assert result.exit_code == 1
    assert result.stderr.startswith("exthub run: NOT_FOUND:") and "VERSION_NOT_FOUND" in result.stderr


def test_async_run_with_wait_follows_the_queue_to_the_end(cli: Cli) -> None:
    result = cli("run", "echo-plain", "--profile", "async", "--priority", "HIGH", "--wait", "--timeout", "30")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[0].endswith("(QUEUED)")
    assert "STATE_CHANGED RUNNING" in result.stderr and "STATE_CHANGED SUCCEEDED 100%" in result.stderr
    assert "ASYNC" in result.stdout and "HIGH" in result.stdout and "SUCCEEDED" in result.stdout
