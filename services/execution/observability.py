"""The execution service's own Prometheus series, kept where the work already happens.

* :meth:`ExecutionMetrics.relayed` — called by the outbox relay for the events it has just stored and published
  (every state change of every execution passes there exactly once, whichever process or path wrote it): executions
  created (by first state) and finished (by terminal state), attempts started (each entry into RUNNING), the
  create-to-end duration, and the outbox lag of each event (its write → relayed);
* :meth:`ExecutionMetrics.dispatched` — the lag of an attempt from its QUEUED write to its publication;
* :meth:`ExecutionMetrics.swept` — what the sweeper did (TIMED_OUT, CANCELLED) and from which state;
* :class:`QueueMetrics` — queue depth, scheduled messages, dead letters and the oldest message's age per
  priority, read from the work queue when Prometheus scrapes. Only a queue that offers stats
  (:class:`~services.platform.workqueue.port.QueueStatsSource`: the SQLite queue) gets these series
  (:func:`watch_queue`); on Service Bus they do not exist here, Azure Monitor's Service Bus metrics hold them.

No store is read and no write is added: the hooks take values the caller holds. Labels are bounded: the execution
model is one of :data:`KNOWN_MODELS` (any other is ``_OTHER``: models are publisher-supplied strings), the priority
and the state are enums; never an id, tenant or user.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.execution.domain.model import DispatchMarker, Execution
from services.execution.domain.state_machine import ExecutionEvent
from services.execution.domain.states import TERMINAL_STATES, EventType, ExecutionState
from services.platform.metrics import OTHER, ServiceMetrics
from services.platform.timefmt import from_storage
from services.platform.workqueue.port import Priority, QueueStatsSource, WorkQueue

__all__ = ["KNOWN_MODELS", "ExecutionMetrics", "QueueMetrics", "watch_queue"]

#: Execution models used as label values as they are (the ones the hub's agents implement or will).
KNOWN_MODELS = frozenset({"http-json/sync/v1", "http-json/async/v1", "grpc/sync/v1", "grpc/async/v1"})
#: Seconds from create to the terminal state: sub-second synchronous runs to hour-long ones.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Seconds from a write to its relay: milliseconds normally, the sweep interval after a failure or a restart.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SWEEP_ACTIONS = {ExecutionState.TIMED_OUT: "timed_out", ExecutionState.CANCELLED: "cancelled"}


def model_label(execution_model: str) -> str:
    """The execution model as a label value (``_OTHER`` unless it is one of :data:`KNOWN_MODELS`)."""
    return execution_model if execution_model in KNOWN_MODELS else OTHER


class ExecutionMetrics:
    """The series of the execution service, registered on its registry (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["execution_model", "priority"]
        self.created = Counter(
            "exthub_executions_created",
            "Executions created, by execution model, priority and first state.",
            [*labels, "state"],
            registry=registry,
        )
        self.finished = Counter(
            "exthub_executions_finished",
            "Executions that reached a terminal state, by execution model, priority and that state.",
            [*labels, "state"],
            registry=registry,
        )
        self.duration = Histogram(
            "exthub_execution_duration_seconds",
            "Time from create to the terminal state, by execution model, priority and terminal state.",
            [*labels, "state"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.attempts = Counter(
            "exthub_execution_attempts",
            "Attempts started (each entry into RUNNING), by execution model and priority.",
            labels,
            registry=registry,
        )
        self.outbox_lag = Histogram(
            "exthub_outbox_lag_seconds",
            "Time from a write to its relay: an event stored and published, or an attempt published to the queue.",
            ["kind"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.sweeper_actions = Counter(
            "exthub_sweeper_actions",
            "Executions the sweeper moved: timed out or cancelled (an unacknowledged cancel), by the state left.",
            ["action", "from_state"],
            registry=registry,
        )

    def relayed(self, execution: Execution, events: Sequence[ExecutionEvent], now: datetime) -> None:
        """Count ``events`` of ``execution``, just stored and published by the outbox relay at ``now``."""
        lag = self.outbox_lag.labels("event")
        for event in events:
            lag.observe(max(0.0, (now - from_storage(event.time)).total_seconds()))
        self.counted(execution, events)

    def counted(self, execution: Execution, events: Sequence[ExecutionEvent]) -> None:
        """Count ``events`` of ``execution`` (relayed, or kept in its document: no relay lag)."""
        model, priority = model_label(execution.profile.execution_model), execution.request.priority.name
        for event in events:
            if event.type is EventType.PROGRESS:
                continue
            if event.type is EventType.CREATED:
                self.created.labels(model, priority, event.state.value).inc()
            if event.state is ExecutionState.RUNNING:
                self.attempts.labels(model, priority).inc()
            elif event.state in TERMINAL_STATES:
                self.finished.labels(model, priority, event.state.value).inc()
                elapsed = (from_storage(event.time) - from_storage(execution.record.create_time)).total_seconds()
                self.duration.labels(model, priority, event.state.value).observe(max(0.0, elapsed))

    def dispatched(self, execution: Execution, marker: DispatchMarker, now: datetime) -> None:
        """An attempt was published to the work queue at ``now`` (its QUEUED write: ``record.state_time``)."""
        del marker  # the attempt published is the QUEUED one: its write is the state's entry
        waited = (now - from_storage(execution.record.state_time)).total_seconds()
        self.outbox_lag.labels("dispatch").observe(max(0.0, waited))

    def swept(self, before: ExecutionState, after: ExecutionState) -> None:
        """The sweeper moved an execution from ``before`` to ``after``."""
        self.sweeper_actions.labels(_SWEEP_ACTIONS.get(after, OTHER), before.value).inc()


class QueueMetrics:
    """The work queue's gauges, read from ``queue.stats()`` before each scrape (see :func:`watch_queue`)."""

    def __init__(self, registry: CollectorRegistry, queue: QueueStatsSource) -> None:
        self._queue = queue
        self.queue_messages = Gauge(
            "exthub_queue_messages",
            "Messages in the work queue by priority: active (ready or leased) or scheduled (waiting for a backoff).",
            ["priority", "state"],
            registry=registry,
        )
        self.queue_oldest_age = Gauge(
            "exthub_queue_oldest_message_age_seconds",
            "How long the oldest active message of each priority has waited since it was published.",
            ["priority"],
            registry=registry,
        )
        self.queue_dead_letters = Gauge(
            "exthub_queue_dead_letters",
            "Dead-lettered messages of each priority.",
            ["priority"],
            registry=registry,
        )
        for priority in Priority:
            for state in ("active", "scheduled"):
                self.queue_messages.labels(priority.name, state).set(0)
            self.queue_oldest_age.labels(priority.name).set(0)
            self.queue_dead_letters.labels(priority.name).set(0)

    async def refresh(self) -> None:
        """Read the queue's depth, scheduled messages, dead letters and oldest age per priority (a scrape)."""
        stats = await self._queue.stats()
        for priority, counts in stats.priorities.items():
            self.queue_messages.labels(priority.name, "active").set(counts.active)
            self.queue_messages.labels(priority.name, "scheduled").set(counts.scheduled)
            self.queue_dead_letters.labels(priority.name).set(counts.dead_lettered)
            self.queue_oldest_age.labels(priority.name).set(stats.oldest_age_seconds(priority))


def watch_queue(metrics: ServiceMetrics, queue: WorkQueue) -> QueueMetrics | None:
    """The queue gauges on ``metrics``, refreshed at each scrape, when ``queue`` offers stats; else None (no series:
    a queue that cannot count its messages gets no gauges rather than zeros)."""
    if not isinstance(queue, QueueStatsSource):
        return None
    found = QueueMetrics(metrics.registry, queue)
    metrics.add_refresher(found.refresh)
    return found
