"""The work queue port: leased, prioritised, at-least-once delivery of small execution requests.

Shaped after Azure Service Bus peek-lock: the Azure adapter is the topic
``execution-requests`` with one subscription per priority; the embedded default is a leased SQLite queue.
Every adapter passes ``tests/contract/workqueue``.

Contract
--------
* ``publish`` is idempotent on ``message_id`` (duplicate detection): a second publish with the same id
  while the first is queued or dead-lettered, or within the adapter's duplicate-detection window, is a
  silent no-op (the first body and properties win).
* ``receive`` hands out at most ``max_messages`` messages, each under a **lease** (a peek-lock) that ends at
  ``locked_until``. ``locked_until`` is authoritative: an adapter may round ``lease_seconds`` (Service Bus
  uses the subscription's ``LockDuration``). Each receive increments ``delivery_count`` (1 on the first).
* Order: higher *effective priority* first; ties in publish order (FIFO within a priority). Effective
  priority ages, so LOW cannot starve (see :func:`effective_priority`). Only messages whose ``not_before``
  has passed and whose lease is free or expired are handed out.
* A lease is held by its random ``lease_token``. ``renew``, ``complete``, ``abandon`` and ``dead_letter``
  need a live lease: when it expired (whether or not someone else received the message since) or the
  message was already settled, they raise :class:`LeaseLost` (FAILED_PRECONDITION / ``LEASE_LOST``),
  exactly like Service Bus' ``MessageLockLost``.
* ``abandon(delay_seconds=d)`` makes the message visible again after ``d`` (backoff between attempts).
* A message whose ``delivery_count`` already reached ``max_delivery_count`` is not delivered again: the
  next receive that would hand it out moves it to the dead letters with reason
  ``MaxDeliveryCountExceeded`` (Service Bus semantics).
* Dead letters keep the message, a reason and a description; ``redrive`` puts one back on the active
  queue as a fresh delivery (``delivery_count`` 0, ageing restarts).
* Routing properties are small string maps (model, profile, priority, tenant, …) used by ``filter``; they
  must never carry secrets (keys that look like secrets are refused, see :func:`validate_properties`). The
  W3C trace context of the publisher (``traceparent``, ``tracestate``) travels as properties too.

Optional capability: stats
--------------------------
An adapter that can count its messages cheaply with the rights it already holds also implements
:class:`QueueStatsSource`: ``stats`` reads, per priority, how many messages are *active* (receivable now or leased:
Service Bus' ``ActiveMessageCount``), *scheduled* (waiting for ``not_before`` or an abandon delay), dead-lettered,
and the publish time of the oldest active one — what operators watch (queue depth, oldest-message age). A read
only: it changes nothing and never takes a lease. Callers check for it with ``isinstance(queue,
QueueStatsSource)``; an adapter without it offers no stats at all (never zeros).

The SQLite queue implements it. The Service Bus queue does not: subscription runtime properties come from the
management (ATOM) API, which needs *Manage* rights the services' least-privilege identities do not hold; on Azure
these numbers are Azure Monitor's Service Bus metrics (``ActiveMessages``, ``DeadletteredMessages``,
``ScheduledMessages`` per entity), which operators chart and KEDA scales on.

Ageing
------
Levels are ``LOW = 0``, ``NORMAL = 1``, ``HIGH = 2``. A message available since ``t0`` (its publish time,
or ``not_before`` when later) has, at time ``now``::

    effective_priority = level + (now - t0) / ageing_period

so a message gains one level per ``ageing_period`` of waiting: a LOW that waited one period ties a fresh
NORMAL, and after two periods it beats a fresh HIGH. Because every message ages at the same rate, the
order is the same at every instant and equals the ascending order of the time-invariant
:func:`rank_time` ``= t0 - level * ageing_period`` (an indexable column). The rank is fixed when the
message is published (lease expiry and abandon keep it; a redrive computes a new one).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from services.platform.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = [
    "DEFAULT_AGEING_SECONDS",
    "DEFAULT_DUPLICATE_WINDOW_SECONDS",
    "DEFAULT_MAX_DELIVERY_COUNT",
    "MAX_BODY_BYTES",
    "MAX_DEAD_LETTER_DESCRIPTION",
    "MAX_DEAD_LETTER_REASON",
    "MAX_DELIVERY_COUNT_EXCEEDED",
    "MAX_LEASE_SECONDS",
    "MAX_MESSAGE_ID_LENGTH",
    "MAX_PROPERTIES",
    "MAX_PROPERTY_VALUE_LENGTH",
    "MAX_RECEIVE_MESSAGES",
    "MAX_WAIT_SECONDS",
    "WORK_QUEUE_NAME",
    "DeadLetter",
    "LeaseLost",
    "LeasedMessage",
    "Priority",
    "PriorityStats",
    "QueueStats",
    "QueueStatsSource",
    "WorkMessage",
    "WorkQueue",
    "dead_letter_not_found",
    "effective_priority",
    "rank_time",
    "validate_body",
    "validate_dead_letter_reason",
    "validate_delay",
    "validate_filter",
    "validate_lease_seconds",
    "validate_max_messages",
    "validate_message_id",
    "validate_properties",
    "validate_wait_seconds",
]

MAX_BODY_BYTES = 256 * 1024  # Service Bus standard tier message size
MAX_MESSAGE_ID_LENGTH = 128  # Service Bus MessageId limit
MAX_PROPERTIES = 32
MAX_PROPERTY_KEY_LENGTH = 64
MAX_PROPERTY_VALUE_LENGTH = 256
MAX_LEASE_SECONDS = 300.0  # Service Bus LockDuration maximum (5 min); renew for longer work
MAX_WAIT_SECONDS = 300.0
MAX_DELAY_SECONDS = 14 * 24 * 3600.0
MAX_RECEIVE_MESSAGES = 100
MAX_DEAD_LETTER_REASON = 256
MAX_DEAD_LETTER_DESCRIPTION = 4096
DEFAULT_MAX_DELIVERY_COUNT = 10  # Service Bus default
DEFAULT_AGEING_SECONDS = 60.0
DEFAULT_DUPLICATE_WINDOW_SECONDS = 600.0  # Service Bus default duplicate-detection window (10 min)
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
#: The queue's name (the Service Bus topic of execution requests; the destination in traces).
WORK_QUEUE_NAME = "execution-requests"

_MESSAGE_ID_RE = re.compile(r"[!-~]{1,128}", re.ASCII)  # printable ASCII, no spaces
_PROPERTY_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", re.ASCII)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SECRET_SEGMENTS = frozenset(
    {"secret", "password", "passwd", "token", "key", "credential", "credentials", "authorization", "sas"}
)
_SEGMENT_SPLIT_RE = re.compile(r"[_.\-]|(?<=[a-z0-9])(?=[A-Z])")
RESERVED_PROPERTY_PREFIX = "x-exthub-"


class Priority(enum.IntEnum):
    """Execution priority; the values match ``exthub.type.v1.Priority``."""

    LOW = 1
    NORMAL = 2
    HIGH = 3

    @property
    def level(self) -> int:
        """The ageing level: LOW 0, NORMAL 1, HIGH 2."""
        return int(self) - 1


@dataclass(frozen=True)
class WorkMessage:
    """A queued message as a receiver sees it."""

    message_id: str
    body: bytes
    properties: Mapping[str, str]
    priority: Priority
    enqueued_time: datetime
    delivery_count: int


@dataclass(frozen=True)
class LeasedMessage:
    """A received message and the lease (peek-lock) that the receiver now holds on it."""

    message: WorkMessage
    lease_token: str = field(repr=False)
    locked_until: datetime


@dataclass(frozen=True)
class PriorityStats:
    """The messages of one priority at one instant (see :meth:`QueueStatsSource.stats`)."""

    active: int = 0
    scheduled: int = 0
    dead_lettered: int = 0
    oldest_enqueued_time: datetime | None = None


@dataclass(frozen=True)
class QueueStats:
    """What :meth:`QueueStatsSource.stats` reads: each priority (zeros when it has no message) and the queue's clock."""

    priorities: Mapping[Priority, PriorityStats]
    measured_time: datetime

    def oldest_age_seconds(self, priority: Priority) -> float:
        """How long the oldest active message of ``priority`` has waited since it was published (0 when none)."""
        oldest = self.priorities[priority].oldest_enqueued_time
        return 0.0 if oldest is None else max(0.0, (self.measured_time - oldest).total_seconds())


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered message with why it was set aside."""

    message: WorkMessage
    reason: str
    description: str
    dead_lettered_time: datetime


class LeaseLost(FailedPrecondition):
    """The lease expired or the message was settled: the caller no longer owns it (``LEASE_LOST``)."""

    default_reason = "LEASE_LOST"

    @classmethod
    def for_message(cls, message_id: str) -> LeaseLost:
        """The error for ``message_id``."""
        return cls(f"the lease on message {message_id!r} was lost", metadata={"messageId": message_id})


def dead_letter_not_found(message_id: str) -> NotFound:
    """NOT_FOUND / ``DEAD_LETTER_NOT_FOUND`` for ``redrive`` of an unknown dead letter."""
    return NotFound(
        f"no dead-lettered message {message_id!r}",
        reason="DEAD_LETTER_NOT_FOUND",
        metadata={"messageId": message_id},
    )


@runtime_checkable
class WorkQueue(Protocol):
    """A leased work queue (see the module docstring for the contract)."""

    @property
    def max_delivery_count(self) -> int:
        """Deliveries after which a message is dead-lettered with ``MaxDeliveryCountExceeded``."""
        ...

    async def publish(
        self,
        message_id: str,
        body: bytes,
        *,
        priority: Priority,
        properties: Mapping[str, str],
        not_before: datetime | None = None,
    ) -> None:
        """Enqueue (idempotent on ``message_id``); not receivable before ``not_before`` when given."""
        ...

    async def receive(
        self,
        *,
        max_messages: int = 1,
        lease_seconds: float,
        wait_seconds: float = 0,
        filter: Mapping[str, str] | None = None,
    ) -> list[LeasedMessage]:
        """Lease up to ``max_messages`` in priority order (with ageing), long-polling up to ``wait_seconds``
        when none is available; ``filter`` keeps messages whose routing properties equal every given pair."""
        ...

    async def renew(self, lease: LeasedMessage) -> datetime:
        """Extend the lease by its original duration from now; the new ``locked_until``. LeaseLost."""
        ...

    async def complete(self, lease: LeasedMessage) -> None:
        """Settle: remove the message for good. LeaseLost."""
        ...

    async def abandon(self, lease: LeasedMessage, *, delay_seconds: float = 0) -> None:
        """Release the lease; the message is receivable again after ``delay_seconds``. LeaseLost."""
        ...

    async def dead_letter(self, lease: LeasedMessage, *, reason: str, description: str) -> None:
        """Move the message to the dead letters. LeaseLost."""
        ...

    async def list_dead_letters(
        self, *, page_size: int = 0, page_token: str | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        """A page of dead letters (oldest first) and the next page token (None on the last page)."""
        ...

    async def redrive(self, message_id: str) -> None:
        """Move a dead letter back to the active queue. NotFound(DEAD_LETTER_NOT_FOUND)."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...


@runtime_checkable
class QueueStatsSource(Protocol):
    """The optional stats capability of a work queue (see "Optional capability: stats" in the module docstring)."""

    async def stats(self) -> QueueStats:
        """Depth, scheduled and dead-lettered counts and the oldest active message, per priority (a read)."""
        ...


def effective_priority(priority: Priority, waited: timedelta, ageing_period: timedelta) -> float:
    """``level + waited / ageing_period`` (see the module docstring)."""
    return priority.level + waited / ageing_period


def rank_time(available_from: datetime, priority: Priority, ageing_period: timedelta) -> datetime:
    """The time-invariant sort key: ascending rank time ⇔ descending effective priority."""
    return available_from - priority.level * ageing_period


def validate_message_id(message_id: str) -> str:
    """1 to 128 printable ASCII characters without spaces."""
    if not isinstance(message_id, str) or not _MESSAGE_ID_RE.fullmatch(message_id):
        raise InvalidArgument.field("message_id", f"must be 1 to {MAX_MESSAGE_ID_LENGTH} printable ASCII characters")
    return message_id


def validate_body(body: bytes | bytearray | memoryview) -> bytes:
    """Bytes, at most 256 KiB."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise InvalidArgument.field("body", "must be bytes")
    data = bytes(body)
    if len(data) > MAX_BODY_BYTES:
        raise InvalidArgument(
            f"the message body is too large ({len(data)} bytes, at most {MAX_BODY_BYTES})",
            reason="MESSAGE_TOO_LARGE",
            metadata={"field": "body"},
        )
    return data


def _looks_secret(key: str) -> bool:
    return any(part.lower() in _SECRET_SEGMENTS for part in _SEGMENT_SPLIT_RE.split(key) if part)


def _validate_pairs(name: str, pairs: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(pairs, Mapping):
        raise InvalidArgument.field(name, "must be a mapping of strings to strings")
    if len(pairs) > MAX_PROPERTIES:
        raise InvalidArgument.field(name, f"at most {MAX_PROPERTIES} entries")
    out: dict[str, str] = {}
    for key, value in pairs.items():
        if not isinstance(key, str) or not _PROPERTY_KEY_RE.fullmatch(key):
            raise InvalidArgument.field(
                name, f"keys are 1 to {MAX_PROPERTY_KEY_LENGTH} characters: a letter, then letters, digits, _ . -"
            )
        if key.lower().startswith(RESERVED_PROPERTY_PREFIX):
            raise InvalidArgument.field(f"{name}.{key}", f"the prefix {RESERVED_PROPERTY_PREFIX!r} is reserved")
        if _looks_secret(key):
            raise InvalidArgument.field(f"{name}.{key}", "routing properties must not carry secrets")
        if not isinstance(value, str) or len(value) > MAX_PROPERTY_VALUE_LENGTH or _CONTROL_RE.search(value):
            raise InvalidArgument.field(
                f"{name}.{key}", f"values are strings of at most {MAX_PROPERTY_VALUE_LENGTH} characters, no controls"
            )
        out[key] = value
    return out


def validate_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """At most 32 string pairs; keys ``[A-Za-z][A-Za-z0-9_.-]{0,63}`` not starting with ``x-exthub-`` and
    without a secret-like segment (``key``, ``token``, ``secret``, ``password``, ``credential``, ``sas``,
    ``authorization``); values at most 256 characters without control characters."""
    return _validate_pairs("properties", properties)


def validate_filter(filter: Mapping[str, str] | None) -> dict[str, str]:
    """The same rules as the properties (an empty or missing filter matches everything)."""
    return {} if filter is None else _validate_pairs("filter", filter)


def _finite_number(name: str, value: float, low: float, high: float, *, low_inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument.field(name, "must be a number")
    number = float(value)
    ok = (number >= low if low_inclusive else number > low) and number <= high
    if not ok:  # also refuses NaN
        bound = "[" if low_inclusive else "("
        raise InvalidArgument.field(name, f"must be in {bound}{low:g}, {high:g}]")
    return number


def validate_lease_seconds(lease_seconds: float) -> float:
    """``0 < lease_seconds <= 300``."""
    return _finite_number("lease_seconds", lease_seconds, 0, MAX_LEASE_SECONDS, low_inclusive=False)


def validate_wait_seconds(wait_seconds: float) -> float:
    """``0 <= wait_seconds <= 300``."""
    return _finite_number("wait_seconds", wait_seconds, 0, MAX_WAIT_SECONDS, low_inclusive=True)


def validate_delay(delay_seconds: float) -> float:
    """``0 <= delay_seconds <= 14 days``."""
    return _finite_number("delay_seconds", delay_seconds, 0, MAX_DELAY_SECONDS, low_inclusive=True)


def validate_max_messages(max_messages: int) -> int:
    """``1 <= max_messages <= 100``."""
    if isinstance(max_messages, bool) or not isinstance(max_messages, int) or not 1 <= max_messages <= 100:
        raise InvalidArgument.field("max_messages", f"must be an integer from 1 to {MAX_RECEIVE_MESSAGES}")
    return max_messages


def validate_dead_letter_reason(reason: str, description: str) -> tuple[str, str]:
    """A non-empty reason of at most 256 characters; the description is truncated to 4096 characters."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_DEAD_LETTER_REASON:
        raise InvalidArgument.field("reason", f"must be 1 to {MAX_DEAD_LETTER_REASON} characters")
    if not isinstance(description, str):
        raise InvalidArgument.field("description", "must be a string")
    return reason, description[:MAX_DEAD_LETTER_DESCRIPTION]
