"""``exthub executions list|get|cancel|retry|events`` against a real execution service."""

from __future__ import annotations

import uuid

from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.roles import EXECUTIONS_RUN
from tests.component.cli.conftest import Cli


def test_list_filters_by_label_and_get_shows_one(cli: Cli) -> None:
    case = uuid.uuid4().hex[:8]
    first = cli.json("run", "echo-plain", "--label", f"case={case}", "--request", '{"n": 1}')
    second = cli.json("run", "echo-plain", "--label", f"case={case}", "--request", '{"n": 2}')
    listed = cli.json("executions", "list", "--filter", f'labels.case = "{case}"')
    assert sorted(e["name"] for e in listed["executions"]) == sorted([first["name"], second["name"]])
    limited = cli.json("executions", "list", "--filter", f'labels.case = "{case}"', "--limit", "1")
    assert len(limited["executions"]) == 1
    table = cli("executions", "list", "--filter", f'labels.case = "{case}"')
    assert table.exit_code == 0 and first["name"] in table.stdout and "Executions (2)" in table.stdout
    got = cli.json("executions", "get", first["name"])
    assert got["name"] == first["name"] and got["result"]["echo"] == {"n": 1}
    panel = cli("executions", "get", first["name"].removeprefix("executions/"))
    assert panel.exit_code == 0 and "SUCCEEDED" in panel.stdout and f"case={case}" in panel.stdout


def test_get_wait_answers_when_the_execution_has_ended_or_says_it_has_not(cli: Cli) -> None:
    running = cli.json("run", "echo-plain", "--request", '{"longRunning": true, "delaySeconds": 0.5}')
    assert running["state"] == "RUNNING"
    done = cli.json("executions", "get", running["name"], "--wait", "--timeout", "30")
    assert done["state"] == "SUCCEEDED" and done["result"]["echo"]["delaySeconds"] == 0.5
    slow = cli.json("run", "echo-plain", "--request", '{"longRunning": true, "delaySeconds": 30}')
    late = cli("executions", "get", slow["name"], "--wait", "--timeout", "0.5")
    assert late.exit_code == 1 and "did not finish within 0.5 s (still RUNNING)" in late.stderr
    cli.json("executions", "cancel", slow["name"])


def test_cancel_a_running_execution_then_retry_a_failed_one(cli: Cli) -> None:
    running = cli.json("run", "echo-plain", "--request", '{"longRunning": true, "delaySeconds": 30}')
    assert running["state"] == "RUNNING"
    cancelled = cli.json("executions", "cancel", running["name"])
    assert cancelled["state"] == "CANCELLED"
    assert cli.json("executions", "cancel", running["name"])["state"] == "CANCELLED"  # cancelling is idempotent
    finished = cli.json("run", "echo-plain")
    too_late = cli("executions", "cancel", finished["name"])
    assert too_late.exit_code == 1 and "FAILED_PRECONDITION" in too_late.stderr and too_late.stderr.count("\n") == 1

    failed = cli.json("run", "echo-plain", "--request", '{"failWith": 500}', "--label", "case=retry", exit_code=1)
    assert failed["state"] == "FAILED"
    retried = cli.json("executions", "retry", failed["name"], exit_code=1)  # it ran again and failed again
    assert retried["retriedFrom"] == failed["name"] and retried["name"] != failed["name"]
    assert retried["state"] == "FAILED" and retried["labels"] == {"case": "retry"}
    assert cli.json("executions", "get", retried["name"])["retriedFrom"] == failed["name"]


def test_events_list_and_follow(cli: Cli) -> None:
    done = cli.json("run", "echo-plain")
    events = cli.json("executions", "events", done["name"])["events"]
    assert [e["sequence"] for e in events] == ["1", "2"]  # int64 travels as a JSON string
    assert [e["state"] for e in events] == ["RUNNING", "SUCCEEDED"]
    table = cli("executions", "events", done["name"])
    assert "CREATED" in table.stdout and "STATE_CHANGED" in table.stdout

    running = cli.json("run", "echo-plain", "--request", '{"longRunning": true}')
    followed = cli("executions", "events", running["name"], "--follow", "--timeout", "30")
    assert followed.exit_code == 0, followed.stderr
    assert followed.stdout.splitlines()[-1].startswith("#3 STATE_CHANGED SUCCEEDED 100%")
    assert "#2 PROGRESS RUNNING 50%" in followed.stdout


def test_another_tenant_sees_not_found(cli: Cli) -> None:
    mine = cli.json("run", "echo-plain")
    from exthub.contract.dev_tokens import DevIssuer

    other = DevIssuer.load_or_create(cli.hub.data_dir).issue(tenant="other", user="u", roles=[EXECUTIONS_RUN])
    result = cli("executions", "get", mine["name"], "--token", other)
    assert result.exit_code == 1 and "NOT_FOUND" in result.stderr and "EXECUTION_NOT_FOUND" in result.stderr
    theirs = cli("executions", "list", "--token", other, "--json")
    assert theirs.exit_code == 0 and mine["name"] not in theirs.stdout


def test_dead_letters_lists_an_exhausted_async_execution_for_admins_only(cli: Cli) -> None:
    failed = cli.json(
        "run", "echo-plain", "--profile", "async", "--request", '{"failWith": 500}', "--wait", exit_code=1
    )
    assert failed["state"] == "FAILED" and int(failed["attempt"]) > 1  # retried before it gave up
    letters = cli.json("executions", "dead-letters")["deadLetters"]
    mine = [letter for letter in letters if letter["execution"] == failed["name"]]
    assert len(mine) == 1 and mine[0]["attempt"] == failed["attempt"] and mine[0]["reason"]
    table = cli("executions", "dead-letters")
    assert table.exit_code == 0 and failed["name"].removeprefix("executions/")[:8] in table.stdout

    runner_only = DevIssuer.load_or_create(cli.hub.data_dir).issue(
        tenant="local", user="developer", roles=[EXECUTIONS_RUN]
    )
    refused = cli("executions", "dead-letters", "--token", runner_only)
    assert refused.exit_code == 1 and "PERMISSION_DENIED" in refused.stderr and "Traceback" not in refused.stderr
