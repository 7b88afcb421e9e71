"""`exthub check`: the invariant checker over a hub's execution store, as operators run it (a real `exthub`
process, which runs `python -m services.execution.invariants` on the data directory's SQLite store)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from services.execution.adapters.documents import COLLECTION
from services.execution.domain.state_machine import claim, create, transition
from services.execution.domain.states import ExecutionState
from services.execution.handlers.support import change_from
from services.execution.repository import ExecutionRepository
from services.execution.store import DATABASE_FILE
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.timefmt import to_storage, utcnow
from tests.unit.execution.builders import execution

S = ExecutionState
FINISHED = "11111111-1d2e-4f3a-8b9c-0d1e2f3a4b5c"
QUEUED = "22222222-1d2e-4f3a-8b9c-0d1e2f3a4b5c"
BROKEN = "33333333-1d2e-4f3a-8b9c-0d1e2f3a4b5c"


def now() -> str:
    return to_storage(utcnow())


def exthub_check(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exthub.cli", "check", "--data-dir", str(data_dir), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def store_executions(data_dir: Path, *, broken: bool) -> None:
    """One finished execution, one still QUEUED, and (``broken``) one whose document counts an event that was
    never stored."""
    store = await SqliteDocumentStore.open(data_dir / DATABASE_FILE)
    try:
        repository = ExecutionRepository(store.collection(COLLECTION))
        record, created = create(S.QUEUED, now=now())
        await repository.create(execution(record, execution_id=FINISHED), created)
        await repository.update(
            FINISHED, lambda current: change_from(current, claim(current.record, now=now(), attempt=1))
        )
        await repository.update(
            FINISHED,
            lambda current: change_from(current, transition(current.record, S.SUCCEEDED, now=now(), attempt=1)),
        )
        record, created = create(S.QUEUED, now=now())
        await repository.create(execution(record, execution_id=QUEUED), created)
        if broken:
            record, created = create(S.QUEUED, now=now())
            gap = dataclasses.replace(record, last_sequence=3)
            await repository.create(execution(gap, execution_id=BROKEN), created)
    finally:
        await store.close()


async def test_a_healthy_store_passes_and_work_in_flight_fails_only_when_it_must_have_ended(tmp_path: Path) -> None:
    await store_executions(tmp_path, broken=False)

    healthy = exthub_check(tmp_path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.strip() == "exthub check: 2 executions, 4 events checked: no violation"

    finished = exthub_check(tmp_path, "--require-terminal")
    assert finished.returncode == 1
    assert f"executions/{QUEUED}: TERMINAL: never ended (still QUEUED)" in finished.stdout
    assert "by rule: TERMINAL 1" in finished.stdout


async def test_a_violation_exits_1_and_is_listed_also_as_json(tmp_path: Path) -> None:
    await store_executions(tmp_path, broken=True)
    accepted = tmp_path / "accepted.txt"
    accepted.write_text(f"executions/{FINISHED}\nexecutions/never-stored\n", encoding="utf-8")

    found = exthub_check(tmp_path, "--accepted", str(accepted))
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"executions/{BROKEN}: EVENTS_GAP" in found.stdout
    assert "executions/never-stored: LOST" in found.stdout

    as_json = exthub_check(tmp_path, "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["executions"] == 3
    assert {(v["execution"], v["rule"]) for v in report["violations"]} == {(f"executions/{BROKEN}", "EVENTS_GAP")}


def test_a_directory_without_a_hub_store_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    missing = exthub_check(tmp_path / "nothing-here")
    assert missing.returncode == 2
    assert "no execution store at" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "nothing-here").exists()
