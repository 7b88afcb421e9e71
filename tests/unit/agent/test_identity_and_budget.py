"""The agent id, the per-call time budget, and the agent settings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.contract.errors import error_info
from exthub.execution.v1 import execution_pb2
from services.agent.adapters import KeyRingBodySigner
from services.agent.adapters.http_json import CALLER_MARGIN_SECONDS, HttpJsonAdapter
from services.agent.extension_services import default_extension_services
from services.agent.identity import AGENT_ID_FILE, agent_id
from services.platform.egress import EgressPolicy
from services.platform.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_agent_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = Settings.local_defaults(tmp_path)
    first = agent_id(settings)
    assert first.startswith("agent-")
    assert agent_id(settings) == first
    assert (tmp_path / AGENT_ID_FILE).read_text().strip() == first
    assert agent_id(Settings.local_defaults(tmp_path, agent_id="agent-7")) == "agent-7"


def test_agent_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTHUB_AGENT_PRIORITIES", "high, normal")
    monkeypatch.setenv("EXTHUB_AGENT_MAX_IN_FLIGHT", "8")
    settings = Settings.local_defaults(tmp_path)
    assert settings.agent_priorities == ["HIGH", "NORMAL"]
    assert settings.agent_max_in_flight == 8
    invalid: list[dict[str, Any]] = [
        {"agent_priorities": []},
        {"agent_priorities": ["HIGH", "HIGH"]},
        {"agent_priorities": ["URGENT"]},
        {"agent_id": "bad id"},
        {"agent_max_in_flight": 0},
    ]
    for bad in invalid:
        with pytest.raises(ValidationError):
            Settings.local_defaults(tmp_path, **bad)


def _task(*, deadline_in: float | None, call_timeout: float | None) -> execution_pb2.ExecutionTask:
    task = execution_pb2.ExecutionTask(execution="executions/e", attempt=1)
    if deadline_in is not None:
        task.deadline.FromDatetime(NOW + timedelta(seconds=deadline_in))
    if call_timeout is not None:
        task.call_timeout.FromTimedelta(timedelta(seconds=call_timeout))
    return task


@pytest.mark.parametrize(
    ("deadline_in", "call_timeout", "time_limit", "seconds", "bound"),
    [
        (60, 5, None, 5, "call_timeout"),
        (3, 5, None, 3, "deadline"),
        (60, 5, 2.0, 2.0 - CALLER_MARGIN_SECONDS, "caller"),
        (60, None, None, 60, "deadline"),
        (None, None, None, 100, "call_timeout"),  # the adapter's own cap
        (-1, 5, None, -1, "deadline"),
        (60, 0, None, 60, "deadline"),  # a zero call_timeout means unset
    ],
)
async def test_call_budget(
    deadline_in: float | None, call_timeout: float | None, time_limit: float | None, seconds: float, bound: str
) -> None:
    async with aiohttp.ClientSession() as session:
        adapter = HttpJsonAdapter(
            session, services=default_extension_services(), sign=False, max_call_seconds=100, clock=lambda: NOW
        )
        budget = adapter._budget(_task(deadline_in=deadline_in, call_timeout=call_timeout), time_limit)
    assert budget.seconds == pytest.approx(seconds)
    assert budget.bound == bound


async def test_signer_and_unsigned_are_exclusive() -> None:
    class _Ring:
        def sign_extension_request(
            self, body: bytes, *, audience: str, execution: str, attempt: int, now: datetime
        ) -> str:
            return "x..y"

    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="choose one"):
            HttpJsonAdapter(
                session, services=default_extension_services(), signer=KeyRingBodySigner(_Ring()), sign=False
            )


async def test_without_signer_nothing_unsigned_is_sent() -> None:
    task = _task(deadline_in=60, call_timeout=None)
    task.execution_model = "http-json/sync/v1"
    task.extension_settings["execution_url"] = "http://127.0.0.1:9/execute"
    async with aiohttp.ClientSession() as session:
        adapter = HttpJsonAdapter(
            session, services=default_extension_services(), clock=lambda: NOW, egress=EgressPolicy(["127.0.0.1:9"])
        )
        response = await adapter.execute(task)
    assert response.outcome == agent_pb.ExecuteResponse.FAILED
    info = error_info(response.error)
    assert info is not None and info.reason == "REQUEST_NOT_SIGNED"


async def test_a_slow_signer_is_a_retryable_signing_failure() -> None:
    class _Stuck:
        async def sign(self, execution: str, attempt: int, body: bytes) -> str:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    task = _task(deadline_in=60, call_timeout=0.05)
    task.extension_settings["execution_url"] = "http://127.0.0.1:9/execute"
    async with aiohttp.ClientSession() as session:
        adapter = HttpJsonAdapter(
            session,
            services=default_extension_services(),
            signer=_Stuck(),
            clock=lambda: NOW,
            egress=EgressPolicy(["127.0.0.1:9"]),
        )
        response = await adapter.execute(task)
    assert response.outcome == agent_pb.ExecuteResponse.RETRYABLE_FAILURE
    info = error_info(response.error)
    assert info is not None and info.reason == "REQUEST_SIGNING_FAILED"
