"""The execution service's metrics (counted from the events the relay relays, the sweeper's moves, the queue's
stats) and the dispatcher's trace context on the queue message."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exthub.contract.roles import EXECUTIONS_RUN
from services.execution.dispatch import Dispatcher
from services.execution.domain import ExecutionState, claim, create, progress, transition
from services.execution.domain.model import DispatchMarker, ProfileSnapshot
from services.execution.handlers.create import ExecutionDraft, create_execution
from services.execution.observability import ExecutionMetrics, model_label, watch_queue
from services.execution.sweeper import Sweeper
from services.platform import telemetry
from services.platform.auth.principal import Principal
from services.platform.metrics import ServiceMetrics
from services.platform.timefmt import from_storage, to_storage, utcnow
from services.platform.workqueue.port import Priority, QueueStatsSource
from services.platform.workqueue.servicebus import ServiceBusWorkQueue
from services.platform.workqueue.sqlite import SqliteWorkQueue
from tests.unit.execution.builders import HTTP_JSON_ASYNC, execution
from tests.unit.execution.fakes import build, echo_version
from tools.emulators.servicebus_broker import BrokerTokenCredential
from tools.otlp_receiver import OtlpReceiver

S = ExecutionState
ASYNC = {"execution_model": HTTP_JSON_ASYNC, "priority": "NORMAL"}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_relayed_events_count_created_attempts_finished_duration_and_lag() -> None:
    registry = CollectorRegistry()
    metrics = ExecutionMetrics(registry)
    start = utcnow()
    at = [to_storage(start + timedelta(seconds=s)) for s in (0, 1, 2, 3, 4)]
    record, created = create(S.QUEUED, now=at[0])
    first = claim(record, now=at[1], attempt=1)
    retry = transition(first.record, S.QUEUED, now=at[2], attempt=1)  # a transient failure: attempt 2
    second = claim(retry.record, now=at[3], attempt=2)
    half = progress(second.record, now=at[3], attempt=2, percent_complete=50)
    done = transition(half.record, S.SUCCEEDED, now=at[4], attempt=2)
    events = [created, *(r.event for r in (first, retry, second, half, done) if r.event is not None)]
    the_execution = execution(done.record)

    metrics.relayed(the_execution, events[:2], start + timedelta(seconds=1.5))
    metrics.relayed(the_execution, events[2:], start + timedelta(seconds=5))

    assert value(registry, "exthub_executions_created_total", **ASYNC, state="QUEUED") == 1
    assert value(registry, "exthub_executions_created_total", **ASYNC, state="RUNNING") == 0
    assert value(registry, "exthub_execution_attempts_total", **ASYNC) == 2, "each entry into RUNNING"
    assert value(registry, "exthub_executions_finished_total", **ASYNC, state="SUCCEEDED") == 1
    assert value(registry, "exthub_execution_duration_seconds_sum", **ASYNC, state="SUCCEEDED") == pytest.approx(4)
    assert value(registry, "exthub_outbox_lag_seconds_count", kind="event") == len(events)
    lags = [1.5, 0.5, 3, 2, 2, 1]
    assert value(registry, "exthub_outbox_lag_seconds_sum", kind="event") == pytest.approx(sum(lags))


def test_a_synchronous_create_is_an_attempt_and_unknown_models_are_bounded() -> None:
    registry = CollectorRegistry()
    metrics = ExecutionMetrics(registry)
    record, created = create(S.RUNNING, now=to_storage(utcnow()))
    custom = execution(
        record,
        version=dataclasses.replace(
            execution(record).version, profile=ProfileSnapshot(name="x", execution_model="acme-123/sync/v1")
        ),
    )
    metrics.relayed(custom, [created], utcnow())
    other = {"execution_model": "_OTHER", "priority": "NORMAL"}
    assert value(registry, "exthub_executions_created_total", **other, state="RUNNING") == 1
    assert value(registry, "exthub_execution_attempts_total", **other) == 1
    assert model_label("http-json/sync/v1") == "http-json/sync/v1" and model_label("x/async/v1") == "_OTHER"


def test_dispatch_lag_and_sweeper_actions() -> None:
    registry = CollectorRegistry()
    metrics = ExecutionMetrics(registry)
    record, _ = create(S.QUEUED, now=to_storage(utcnow()))
    queued = execution(record)
    metrics.dispatched(queued, DispatchMarker(1), from_storage(record.state_time) + timedelta(seconds=0.25))
    assert value(registry, "exthub_outbox_lag_seconds_sum", kind="dispatch") == pytest.approx(0.25)
    metrics.swept(S.QUEUED, S.TIMED_OUT)
    metrics.swept(S.RUNNING, S.CANCELLED)
    metrics.swept(S.RUNNING, S.TIMED_OUT)
    assert value(registry, "exthub_sweeper_actions_total", action="timed_out", from_state="QUEUED") == 1
    assert value(registry, "exthub_sweeper_actions_total", action="cancelled", from_state="RUNNING") == 1
    assert value(registry, "exthub_sweeper_actions_total", action="timed_out", from_state="RUNNING") == 1


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SqliteWorkQueue]:
    opened = await SqliteWorkQueue.open(tmp_path / "queue.sqlite3")
    try:
        yield opened
    finally:
        await opened.close()


async def test_queue_gauges_read_the_queue_at_each_scrape(queue: SqliteWorkQueue) -> None:
    metrics = ServiceMetrics("execution")
    registry = metrics.registry
    assert watch_queue(metrics, queue) is not None, "the SQLite queue offers stats"
    assert registry.get_sample_value("exthub_queue_messages", {"priority": "LOW", "state": "active"}) == 0
    await queue.publish("a", b"{}", priority=Priority.HIGH, properties={})
    await queue.publish("b", b"{}", priority=Priority.HIGH, properties={})
    later = utcnow() + timedelta(minutes=5)
    await queue.publish("c", b"{}", priority=Priority.LOW, properties={}, not_before=later)
    [lease] = await queue.receive(lease_seconds=30)
    await queue.dead_letter(lease, reason="RetriesExhausted", description="test")
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families((await metrics.exposition()).decode())
        for sample in family.samples
    }

    def scraped_value(name: str, **labels: str) -> float:
        return scraped[(name, tuple(sorted(labels.items())))]

    assert scraped_value("exthub_queue_messages", priority="HIGH", state="active") == 1
    assert scraped_value("exthub_queue_messages", priority="LOW", state="scheduled") == 1
    assert scraped_value("exthub_queue_dead_letters", priority="HIGH") == 1
    assert scraped_value("exthub_queue_oldest_message_age_seconds", priority="HIGH") >= 0
    assert scraped_value("exthub_queue_messages", priority="NORMAL", state="active") == 0
    assert len([key for key in scraped if key[0] == "exthub_queue_messages"]) == 6, "3 priorities x 2 states"


async def test_a_queue_without_stats_gets_no_queue_series() -> None:
    # The Service Bus adapter offers no stats (its runtime properties need Manage rights): no gauge, not zeros.
    # Opening it connects nothing; nothing here reaches a broker.
    servicebus = await ServiceBusWorkQueue.open("exthub-test.servicebus.windows.net", BrokerTokenCredential())
    try:
        assert not isinstance(servicebus, QueueStatsSource)
        metrics = ServiceMetrics("execution")
        assert watch_queue(metrics, servicebus) is None
        families = {family.name for family in text_string_to_metric_families((await metrics.exposition()).decode())}
        assert not any(name.startswith("exthub_queue_") for name in families), families
        assert "rpc_server_duration_seconds" in families, "the rest of the registry is there"
    finally:
        await servicebus.close()


async def test_the_dispatched_message_carries_the_trace_only_when_tracing_is_on(queue: SqliteWorkQueue) -> None:
    record, _ = create(S.QUEUED, now=to_storage(utcnow()))
    queued = execution(record)
    await Dispatcher(queue).publish(queued, DispatchMarker(1))
    [untraced] = await queue.receive(lease_seconds=30)
    assert dict(untraced.message.properties) == {
        "model": HTTP_JSON_ASYNC,
        "profile": "async",
        "priority": "NORMAL",
        "tenant": "tenant-a",
    }
    await queue.complete(untraced)

    async with OtlpReceiver() as receiver:
        configured = telemetry.configure_telemetry("execution", env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
        try:
            again = dataclasses.replace(queued, id="1c8f6a1d-2e3f-4a5b-9c0d-1e2f3a4b5c6d")
            await Dispatcher(queue).publish(again, DispatchMarker(1))
            assert configured.provider is not None
            await asyncio.to_thread(configured.provider.force_flush)
            [producer] = await receiver.wait_for(lambda spans: len(spans) >= 1, within=10)
        finally:
            await asyncio.to_thread(telemetry.shutdown_telemetry)
    [traced] = await queue.receive(lease_seconds=30)
    properties = dict(traced.message.properties)
    version, trace_id, parent, flags = properties["traceparent"].split("-")
    assert (version, trace_id, parent) == ("00", producer.trace_id, producer.span_id)
    assert int(flags, 16) & 1, "sampled"
    assert (producer.name, producer.kind) == ("send execution-requests", "producer")
    assert producer.attributes["messaging.message.id"] == traced.message.message_id
    assert producer.attributes["exthub.execution"] == again.name


async def test_the_sweeper_traces_a_pass_that_moves_something_and_the_relay_joins_it(tmp_path: Path) -> None:
    hub = build(tmp_path)
    hub.catalog.add(echo_version())
    alice = Principal(subject="alice", tenant="tenant-a", user="alice", roles=frozenset({EXECUTIONS_RUN}))
    registry = CollectorRegistry()
    async with OtlpReceiver() as receiver:
        configured = telemetry.configure_telemetry("execution", env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
        try:
            pending = await create_execution(
                hub.ctx,
                alice,
                ExecutionDraft(extension_version="extensions/echo/versions/1.0.0", expected_inputs=("document",)),
                request_id="",
                authorization="Bearer caller",
                caller_remaining=None,
            )
            await hub.relay.settle()
            sweeper = Sweeper(hub.ctx, hub.relay, interval_seconds=60, metrics=ExecutionMetrics(registry))
            assert await sweeper.sweep_once() == 0, "nothing due yet"
            hub.clock.advance(timedelta(hours=24).total_seconds())
            assert await sweeper.sweep_once() == 1
            await hub.relay.settle()
            assert configured.provider is not None
            await asyncio.to_thread(configured.provider.force_flush)
            spans = await receiver.wait_for(lambda found: any(s.name == "sweep" for s in found), within=10)
        finally:
            await asyncio.to_thread(telemetry.shutdown_telemetry)
    [sweep] = [s for s in spans if s.name == "sweep"]
    assert (sweep.kind, sweep.parent_span_id, sweep.service) == ("internal", "", "exthub-execution"), "a trace per pass"
    assert sweep.attributes["exthub.sweep.candidates"] == 1
    relays = [s for s in spans if s.name == "outbox relay" and s.attributes["exthub.execution"] == pending.name]
    assert [s.kind for s in relays] == ["internal", "internal"], "the create's outbox and the timeout's"
    assert [s for s in relays if s.parent_span_id == sweep.span_id and s.trace_id == sweep.trace_id], (
        "the relay of the TIMED_OUT write runs in the sweep's trace"
    )
    assert value(registry, "exthub_sweeper_actions_total", action="timed_out", from_state="PENDING_INPUTS") == 1
