"""The Azure Service Bus work queue: topic ``execution-requests``, one subscription per priority.

Mapping of the :class:`~services.platform.workqueue.port.WorkQueue` contract
-------------------------------------------------------------------------------
* **Publish** sends one message to the topic with ``MessageId`` = the port's ``message_id`` (the topic's
  duplicate detection makes a second publish within its window a no-op) and the routing properties as
  application properties. The application property ``priority`` (``HIGH``/``NORMAL``/``LOW``) is always set:
  each subscription (``high``, ``normal``, ``low``) keeps one priority with a ``CorrelationRuleFilter`` on it.
  ``not_before`` schedules the message (``ScheduledEnqueueTimeUtc``).
* **Receive** drains the subscriptions by **weight**: each call has a preferred priority taken from the
  cycle ``HIGH x6, NORMAL x3, LOW x1`` (default weights) and tries it first, then the others from HIGH to LOW.
  A backlog in every priority is therefore served 6:3:1, so LOW never starves (at least one receive in ten
  prefers it), while a small backlog still comes out HIGH, NORMAL, LOW. There is no ageing inside a
  subscription: Service Bus hands out each subscription in sequence order.
  The cycle moves on only when a receive took its messages while another subscription may have had work
  (one was buffered, or it had work when last asked), so a burst after a quiet spell starts with HIGH, and a
  lower subscription answering first does not jump the order: before taking from it, a higher one asked at
  the same time gets as long as a fetch usually needs to deliver.
  One fetch per subscription runs at a time (peek-lock, no prefetch); it long-polls while a caller waits.
  Nothing stays locked for nobody: when the last waiting caller returns, what the subscriptions buffered is
  released (AMQP ``released``: back at once, the delivery count unchanged) and the links' credit is drained,
  and a fetch still running then does the same with what it brings. (A buffered message whose lock ran out is
  dropped: Service Bus already redelivers it.)
* **Leases** are Service Bus peek-locks: ``lease_seconds`` is advisory, ``locked_until`` is the subscription's
  ``LockDuration`` from the broker. ``renew`` is ``renew_message_lock`` (the worker's heartbeat); ``complete``,
  ``abandon`` and ``dead_letter`` settle on the receive link; a lock the broker no longer holds raises
  :class:`LeaseLost`. A lease is settled through the queue instance that received it.
* **Backoff**: ``abandon(delay_seconds=0)`` is Service Bus' abandon (delivery count + 1, visible at once).
  With a delay, the adapter schedules a copy at ``now + delay`` and then completes the original. The copy
  carries the original message id, enqueued time and delivery count in reserved ``x-exthub-*`` application
  properties (its own ``MessageId`` is derived, so duplicate detection does not drop it), and the adapter
  adds the carried count to what Service Bus reports. A copy is not created once the delivery count reached
  ``max_delivery_count``: the message is dead-lettered with ``MaxDeliveryCountExceeded`` instead.
* **Dead letters** are the subscriptions' ``$DeadLetterQueue`` with ``DeadLetterReason`` and
  ``DeadLetterErrorDescription``; the subscription's ``MaxDeliveryCount`` (10) dead-letters a message after
  that many deliveries, and the adapter does the same for a backoff copy whose carried count passed
  ``max_delivery_count``. ``list_dead_letters`` pages through the dead-letter queues HIGH, NORMAL, LOW, each
  in the order set aside; ``dead_lettered_time`` is the message's enqueued time as Service Bus reports it
  (Service Bus keeps no dead-lettering time). ``redrive`` re-sends the message to the topic (a derived
  ``MessageId``, the original one carried) and then completes the dead letter.

Differences from the embedded queue, by design: no ageing within a priority (weights instead), duplicate
detection only within the topic's window, ``filter`` only on ``priority`` (route other properties with a
subscription), leases settled by the instance that received them.

Every SDK call is bounded by ``operation_timeout`` (a broken link can otherwise hang for minutes); a failure
of Service Bus surfaces as :class:`~services.platform.errors.Unavailable` (``BACKEND_UNAVAILABLE``). The
client is built from a fully qualified namespace and an ``AsyncTokenCredential``: no key or connection string.
TLS trusts the system store (``SSL_CERT_FILE`` honoured) unless an ``ssl_context`` is given.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import re
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import MessageAlreadySettled, MessageLockLostError, MessageSizeExceededError

from services.platform import timefmt
from services.platform.errors import HubError, InvalidArgument
from services.platform.logging import get_logger
from services.platform.paging import invalid_page_token, resolve_page_size
from services.platform.servicebus import (
    DEFAULT_OPERATION_TIMEOUT_SECONDS,
    bounded,
    close_handlers,
    open_client,
    unavailable,
)
from services.platform.workqueue.port import (
    DEFAULT_MAX_DELIVERY_COUNT,
    MAX_DELIVERY_COUNT_EXCEEDED,
    DeadLetter,
    LeasedMessage,
    LeaseLost,
    Priority,
    WorkMessage,
    dead_letter_not_found,
    validate_body,
    validate_dead_letter_reason,
    validate_delay,
    validate_filter,
    validate_lease_seconds,
    validate_max_messages,
    validate_message_id,
    validate_properties,
    validate_wait_seconds,
)

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

__all__ = [
    "DEFAULT_TOPIC",
    "DEFAULT_WEIGHTS",
    "SUBSCRIPTIONS",
    "ServiceBusWorkQueue",
    "weighted_cycle",
]

DEFAULT_TOPIC = "execution-requests"
SUBSCRIPTIONS: Mapping[Priority, str] = {Priority.HIGH: "high", Priority.NORMAL: "normal", Priority.LOW: "low"}
DEFAULT_WEIGHTS: Mapping[Priority, int] = {Priority.HIGH: 6, Priority.NORMAL: 3, Priority.LOW: 1}
DEFAULT_PROBE_SECONDS = 0.25
DEFAULT_SOCKET_TIMEOUT_SECONDS = 0.05
_CLOSE_TIMEOUT_SECONDS = 2.0
_MAX_FETCH = 100
_SDK_FURTHER_PULL_SECONDS = 0.2
_MAX_PATIENCE_SECONDS = 2.0
_COLD_FETCH_SECONDS = 1.0
_ORIGINAL_ID = "x-exthub-message-id"
_CARRIED_DELIVERIES = "x-exthub-deliveries"
_ORIGINAL_ENQUEUED = "x-exthub-enqueued"
_IMPLICIT_PRIORITY = "x-exthub-implicit-priority"
_RESERVED = frozenset({_ORIGINAL_ID, _CARRIED_DELIVERIES, _ORIGINAL_ENQUEUED, _IMPLICIT_PRIORITY})
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_log = get_logger("exthub.platform.workqueue.servicebus")

Clock = Callable[[], datetime]
T = TypeVar("T")


def weighted_cycle(weights: Mapping[Priority, int]) -> tuple[Priority, ...]:
    """The preference cycle: each priority ``weight`` times, highest first (``Hx6, Nx3, Lx1`` by default)."""
    cycle: list[Priority] = []
    for priority in sorted(weights, key=int, reverse=True):
        weight = weights[priority]
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ValueError("every weight must be a positive integer")
        cycle.extend([priority] * weight)
    if not cycle:
        raise ValueError("at least one priority needs a weight")
    return tuple(cycle)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)


def _to_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _derived_id(kind: str, original: str, number: int) -> str:
    digest = hashlib.sha256(original.encode("utf-8")).hexdigest()[:40]
    return f"~{kind}{number}~{digest}"


def _body(message: ServiceBusReceivedMessage) -> bytes:
    body = message.body
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    return b"".join(bytes(part) for part in body)


@dataclass
class _Received:
    """A message received from one subscription, decoded for the port."""

    work: WorkMessage
    raw: ServiceBusReceivedMessage
    lane: _Lane
    carried: int


@dataclass(eq=False)
class _Lane:
    """One priority subscription: its receiver, its single fetch in flight and what it buffered."""

    priority: Priority
    subscription: str
    receiver: ServiceBusReceiver | None = None
    opening: asyncio.Lock = field(default_factory=asyncio.Lock)
    transfers: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One management request (a transfer) at a time on this receiver's session."""
    ready: deque[ServiceBusReceivedMessage] = field(default_factory=deque)
    fetch: asyncio.Task[None] | None = None
    patience_until: float = 0.0
    fetch_started: float = 0.0
    fetch_size: int = 0
    kicks: int = 0
    releasing: bool = False
    """The task in ``fetch`` is giving back what nobody asked for (short: a caller waits for it)."""
    found_empty: int = 0
    hit: bool | None = None
    error: BaseException | None = None


class ServiceBusWorkQueue:
    """A :class:`~services.platform.workqueue.port.WorkQueue` on a Service Bus topic (see the module docstring)."""

    def __init__(
        self,
        client: ServiceBusClient,
        *,
        topic: str,
        priorities: Sequence[Priority],
        weights: Mapping[Priority, int],
        max_delivery_count: int,
        clock: Clock,
        operation_timeout: float,
        probe_seconds: float,
        socket_timeout: float,
    ) -> None:
        self._client = client
        self._socket_timeout = socket_timeout
        self._topic = topic
        self._lanes = {p: _Lane(p, SUBSCRIPTIONS[p]) for p in sorted(set(priorities), key=int, reverse=True)}
        self._dead_lanes = {p: _Lane(p, SUBSCRIPTIONS[p]) for p in self._lanes}
        self._cycle = weighted_cycle({p: w for p, w in weights.items() if p in self._lanes} or weights)
        self._slot = 0
        self._max_delivery_count = max_delivery_count
        self._clock = clock
        self._timeout = operation_timeout
        self._probe = probe_seconds
        self._latency = 0.0  # smoothed time a fetch took to bring a message
        self._sender: ServiceBusSender | None = None
        self._sender_lock = asyncio.Lock()
        # The SDK numbers transfers per AMQP session: two coroutines sending on one handler at once can put
        # them out of order, and the broker then closes the connection. One transfer at a time per handler.
        self._sending = asyncio.Lock()
        self._outbox: deque[tuple[ServiceBusMessage, asyncio.Future[None]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._held: dict[str, _Received] = {}
        self._wakeup = asyncio.Event()
        self._demand = 0
        self._closed = False

    @classmethod
    async def open(
        cls,
        namespace: str,
        credential: AsyncTokenCredential,
        *,
        priorities: Sequence[Priority | str] = (Priority.HIGH, Priority.NORMAL, Priority.LOW),
        topic: str = DEFAULT_TOPIC,
        endpoint: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        weights: Mapping[Priority, int] = DEFAULT_WEIGHTS,
        max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT,
        clock: Clock = timefmt.utcnow,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT_SECONDS,
        probe_seconds: float = DEFAULT_PROBE_SECONDS,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_SECONDS,
    ) -> ServiceBusWorkQueue:
        """A queue on ``topic`` of ``namespace`` draining the subscriptions of ``priorities``.

        Connections open lazily on first use. ``max_delivery_count`` must not exceed the subscriptions'
        ``MaxDeliveryCount``; ``socket_timeout`` bounds how long a waiting fetch holds the connection's socket
        before a settlement on the same receiver may write.
        """
        wanted = [p if isinstance(p, Priority) else Priority[str(p).upper()] for p in priorities]
        if not wanted:
            raise ValueError("the queue must drain at least one priority")
        if isinstance(max_delivery_count, bool) or not isinstance(max_delivery_count, int) or max_delivery_count < 1:
            raise ValueError("max_delivery_count must be an integer of 1 or more")
        for name, value in (("operation_timeout", operation_timeout), ("probe_seconds", probe_seconds)):
            if not value > 0:
                raise ValueError(f"{name} must be positive")
        client = await open_client(namespace, credential, endpoint=endpoint, ssl_context=ssl_context)
        return cls(
            client,
            topic=topic,
            priorities=wanted,
            weights=weights,
            max_delivery_count=max_delivery_count,
            clock=clock,
            operation_timeout=operation_timeout,
            probe_seconds=probe_seconds,
            socket_timeout=socket_timeout,
        )

    @property
    def max_delivery_count(self) -> int:
        """Deliveries after which a message is dead-lettered (``MaxDeliveryCountExceeded``)."""
        return self._max_delivery_count

    @property
    def priorities(self) -> tuple[Priority, ...]:
        """The priorities this instance drains, highest first."""
        return tuple(self._lanes)

    # -- publishing ---------------------------------------------------------------------------------

    async def publish(
        self,
        message_id: str,
        body: bytes,
        *,
        priority: Priority,
        properties: Mapping[str, str],
        not_before: datetime | None = None,
    ) -> None:
        """Send to the topic (idempotent on ``message_id`` within the duplicate-detection window)."""
        validate_message_id(message_id)
        data = validate_body(body)
        props = validate_properties(properties)
        try:
            level = Priority(priority)
        except ValueError:
            raise InvalidArgument.field("priority", "must be LOW, NORMAL or HIGH") from None
        if "priority" in props and props["priority"] != level.name:
            raise InvalidArgument.field("properties.priority", "must equal the message priority")
        if not_before is not None and (not_before.tzinfo is None or not_before.tzinfo.utcoffset(not_before) is None):
            raise InvalidArgument.field("not_before", "must be timezone-aware")
        application: dict[str | bytes, Any] = {key: value for key, value in props.items()}
        if "priority" not in props:
            application[_IMPLICIT_PRIORITY] = "1"
        application["priority"] = level.name
        message = ServiceBusMessage(data, message_id=message_id, application_properties=application)
        await self._send(message, not_before)

    async def _send(self, message: ServiceBusMessage, not_before: datetime | None) -> list[int]:
        self._check_open()
        sender = await self._get_sender()
        if not_before is not None:
            async with self._sending:
                return await self._call("schedule", sender.schedule_messages(message, not_before))
        if not self._outbox and not self._sending.locked():
            async with self._sending:  # nothing in flight: send at once
                await self._call("send", sender.send_messages(message))
            return []
        # Group commit: publishes that arrive while a send is in flight go out together in one batch.
        done = asyncio.get_running_loop().create_future()
        self._outbox.append((message, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(sender))
        await done
        return []

    async def _flush(self, sender: ServiceBusSender) -> None:
        while self._outbox:
            async with self._sending:
                taken: list[asyncio.Future[None]] = []
                try:
                    batch = await self._call("create batch", sender.create_message_batch())
                    while self._outbox:
                        message, done = self._outbox[0]
                        try:
                            batch.add_message(message)
                        except MessageSizeExceededError:
                            if taken:
                                break  # the rest goes in the next batch
                            self._outbox.popleft()
                            _settle_future(
                                done, error=InvalidArgument("the message is too large", reason="MESSAGE_TOO_LARGE")
                            )
                            continue
                        taken.append(self._outbox.popleft()[1])
                    if taken:
                        await self._call("send", sender.send_messages(batch))
                except HubError as error:
                    for done in taken:
                        _settle_future(done, error=error)
                    while self._outbox:  # the same failure would meet the rest: report it to them too
                        _settle_future(self._outbox.popleft()[1], error=error)
                    return
                for done in taken:
                    _settle_future(done)

    async def _get_sender(self) -> ServiceBusSender:
        if self._sender is not None:
            return self._sender
        async with self._sender_lock:
            if self._sender is None:
                sender = self._client.get_topic_sender(self._topic, socket_timeout=self._socket_timeout)
                await self._call("open sender", sender.__aenter__())
                self._sender = sender
        return self._sender

    # -- receiving ----------------------------------------------------------------------------------

    async def receive(
        self,
        *,
        max_messages: int = 1,
        lease_seconds: float,
        wait_seconds: float = 0,
        filter: Mapping[str, str] | None = None,
    ) -> list[LeasedMessage]:
        """Lease up to ``max_messages`` by weighted draining of the priority subscriptions, long-polling.

        ``lease_seconds`` is advisory (the subscription's lock duration applies); ``filter`` may only name
        ``priority``. An empty answer means that every subscription, asked after the call began, had nothing
        (a fetch came back empty, or one in flight had ``probe_seconds`` to deliver) and ``wait_seconds`` passed.
        """
        count = validate_max_messages(max_messages)
        validate_lease_seconds(lease_seconds)
        wait = validate_wait_seconds(wait_seconds)
        lanes = self._select(validate_filter(filter))
        order = self._order(lanes)
        try:
            await asyncio.gather(*(self._ensure_receiver(lane) for lane in lanes))
        except _Closed:
            return []
        # The wait counts from here: opening links is not waiting for messages.
        self._demand += count
        try:
            return await self._receive(lanes, order, count, wait)
        finally:
            self._demand -= count
            if self._demand == 0 and not self._closed:
                self._return_unasked()

    async def _receive(self, lanes: list[_Lane], order: list[_Lane], count: int, wait: float) -> list[LeasedMessage]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + wait
        giving_back = {lane.fetch for lane in lanes if lane.releasing and lane.fetch is not None}
        if giving_back:  # the subscriptions are asked afresh once their links are clear
            await asyncio.wait(giving_back, timeout=self._timeout)
        asked_before = {id(lane): lane.kicks for lane in lanes}
        taken: list[LeasedMessage] = []
        while not self._closed:
            wakeup = self._wakeup  # taken before looking, so a fetch finishing meanwhile is not missed
            for lane in lanes:
                if not lane.ready and lane.fetch is None and lane.receiver is not None:
                    # A subscription never asked yet gets longer to answer: nothing is known of the latency.
                    floor = self._patience() if lane.hit is not None else max(self._patience(), _COLD_FETCH_SECONDS)
                    self._kick(lane, self._fetch_size(lane), max(deadline - loop.time(), floor))
            index = 0
            while index < len(order) and len(taken) < count:
                lane = order[index]
                if not lane.ready and lane.fetch is None and lane.hit and taken:
                    # It just had work and the batch is not full: ask it for the rest.
                    self._kick(lane, count - len(taken), max(deadline - loop.time(), self._patience()))
                if not lane.ready and lane.fetch is not None and lane.hit is not False:
                    # Likely to have work (it just had some, or it was never asked): give it a moment.
                    patience = lane.patience_until - loop.time()
                    if patience > 0:
                        await asyncio.wait({lane.fetch}, timeout=patience)
                if not lane.ready:
                    index += 1
                    continue
                if await self._earlier_answer(order[:index]):
                    index = 0  # one that comes first in this call's order has work now: take that first
                    continue
                got = await self._take(lane, count - len(taken))
                taken.extend(got)
                if not got:
                    index += 1
            if taken:
                if self._competed(lanes, taken):
                    self._slot += 1
                return taken
            failed = [lane for lane in lanes if lane.error is not None]
            if failed:
                error = failed[0].error
                for lane in failed:
                    lane.error = None
                raise unavailable("receive", error)
            now = loop.time()
            # When will every subscription have been asked since this call began?
            waits = [deadline] if deadline > now else []
            for lane in lanes:
                if lane.found_empty > asked_before[id(lane)]:
                    continue  # asked since this call began, and it had nothing
                if lane.fetch is None:
                    waits.append(now)  # it had work (others took it), or was last asked before: ask again
                else:
                    # A fetch in flight holds credit: after probe_seconds anything available has reached it.
                    ready_at = max(started, lane.fetch_started) + self._patience()
                    if ready_at > now:
                        waits.append(ready_at)
            if not waits:
                return []
            if min(waits) <= now:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(waits) - now):
                    await wakeup.wait()
        return []

    def _notify(self) -> None:
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    def _select(self, wanted: Mapping[str, str]) -> list[_Lane]:
        unknown = sorted(set(wanted) - {"priority"})
        if unknown:
            raise InvalidArgument.field(
                f"filter.{unknown[0]}", "the Service Bus work queue filters on priority only (a subscription per route)"
            )
        if "priority" not in wanted:
            return list(self._lanes.values())
        try:
            priority = Priority[wanted["priority"]]
        except KeyError:
            raise InvalidArgument.field("filter.priority", "must be LOW, NORMAL or HIGH") from None
        lane = self._lanes.get(priority)
        if lane is None:
            raise InvalidArgument.field("filter.priority", "this queue does not drain that priority")
        return [lane]

    def _order(self, lanes: list[_Lane]) -> list[_Lane]:
        preferred = self._cycle[self._slot % len(self._cycle)]
        first = [lane for lane in lanes if lane.priority is preferred]
        return first + [lane for lane in lanes if lane.priority is not preferred]

    async def _earlier_answer(self, earlier: list[_Lane]) -> bool:
        """Whether one of ``earlier`` (lanes this call prefers to the one about to be taken from) has work, after
        giving those asked only just now as long as a fetch usually takes to deliver."""
        if any(lane.ready for lane in earlier):
            return True
        now = asyncio.get_running_loop().time()
        grace = min(self._patience(), 2 * self._latency) if self._latency else self._patience()
        asked = [lane for lane in earlier if lane.fetch is not None and lane.fetch_started + grace > now]
        if not asked:
            return False
        until = max(lane.fetch_started for lane in asked) + grace
        pending = {lane.fetch for lane in asked if lane.fetch is not None}
        while pending and not any(lane.ready for lane in asked):
            remaining = until - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        return any(lane.ready for lane in earlier)

    @staticmethod
    def _competed(lanes: list[_Lane], taken: list[LeasedMessage]) -> bool:
        """Whether a subscription other than those taken from may have had work (the weighted turn was used)."""
        took = {lease.message.priority for lease in taken}
        return any(lane.ready or lane.hit is not False for lane in lanes if lane.priority not in took)

    def _return_unasked(self) -> None:
        """Nobody waits any more: give back what the subscriptions buffered and drain their links' credit (a
        fetch still running does the same when it ends)."""
        loop = asyncio.get_running_loop()
        for lane in self._lanes.values():
            if lane.fetch is None and lane.receiver is not None and (lane.ready or _credit(lane.receiver) > 0):
                lane.fetch_started = loop.time()
                lane.patience_until = lane.fetch_started
                lane.releasing = True
                lane.fetch = loop.create_task(self._give_back(lane))

    async def _give_back(self, lane: _Lane) -> None:
        try:
            await self._release(lane, [])
        finally:
            lane.releasing = False
            lane.fetch = None
            self._notify()

    async def _release(self, lane: _Lane, found: list[ServiceBusReceivedMessage]) -> None:
        """Release ``found`` and what ``lane`` buffered (back at once, delivery count unchanged), then drain the
        link's credit so the broker locks nothing more for this receiver until it is asked again."""
        messages = [*lane.ready, *found]
        lane.ready.clear()
        receiver = lane.receiver
        # The SDK settles with ``released`` and drains only when a receiver closes; the same calls, here.
        handler = getattr(receiver, "_handler", None)
        transport = getattr(receiver, "_amqp_transport", None)
        if handler is None or transport is None:
            return  # not open (or another transport): the locks run out by themselves
        try:
            async with asyncio.timeout(self._timeout):
                for raw in messages:
                    if raw.locked_until_utc is None or raw.locked_until_utc > self._clock():
                        await handler.settle_messages_async(
                            getattr(raw, "_delivery_id", None),
                            getattr(raw, "_delivery_tag", None),
                            "released",
                            await_outcome=True,  # settled before this lane fetches again: order kept
                            outcome_timeout=self._timeout,
                        )
                await transport.drain_and_release_messages_async(handler)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the locks run out by themselves; the next fetch reports a broken link
            _log.info("service bus release failed", subscription=lane.subscription, error=type(error).__name__)

    async def _ensure_receiver(self, lane: _Lane, *, dead_letters: bool = False) -> ServiceBusReceiver:
        """The lane's receiver (opened on first use): its subscription, or that subscription's dead letters."""
        if lane.receiver is not None:
            return lane.receiver
        async with lane.opening:
            if lane.receiver is None:
                self._check_open()
                receiver = self._client.get_subscription_receiver(
                    self._topic,
                    lane.subscription,
                    sub_queue=ServiceBusSubQueue.DEAD_LETTER if dead_letters else None,
                    receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                    prefetch_count=0,
                    socket_timeout=self._socket_timeout,
                )
                what = "open dead-letter receiver" if dead_letters else "open receiver"
                await self._call(what, receiver.__aenter__())
                lane.receiver = receiver
        return lane.receiver

    def _patience(self) -> float:
        """How long a subscription gets to deliver before it counts as empty: ``probe_seconds``, or four times
        the smoothed time fetches have needed to bring a message when the broker (or this process) is slow."""
        return min(max(self._probe, 4 * self._latency), _MAX_PATIENCE_SECONDS)

    def _fetch_size(self, lane: _Lane) -> int:
        """How many messages to ask ``lane`` for: one fetch serves every caller waiting now, but only a
        subscription that just had work is asked for more than one (what is fetched stays locked here)."""
        if not lane.hit:
            return 1
        lanes = self._lanes.values()
        covered = sum(len(other.ready) + (other.fetch_size if other.fetch else 0) for other in lanes)
        return max(1, min(self._demand - covered, _MAX_FETCH))

    def _kick(self, lane: _Lane, count: int, max_wait: float) -> None:
        loop = asyncio.get_running_loop()
        count = max(count, 1)
        lane.fetch_size = count
        lane.kicks += 1
        lane.fetch_started = loop.time()
        # After its first message the SDK waits a little longer for more when it was asked for several.
        lane.patience_until = loop.time() + self._patience() + (_SDK_FURTHER_PULL_SECONDS if count > 1 else 0)
        lane.fetch = loop.create_task(self._fetch(lane, lane.kicks, count, max_wait))

    async def _fetch(self, lane: _Lane, number: int, count: int, max_wait: float) -> None:
        try:
            receiver = lane.receiver
            assert receiver is not None
            began = asyncio.get_running_loop().time()
            async with asyncio.timeout(max_wait + self._timeout):
                found = await receiver.receive_messages(max_message_count=count, max_wait_time=max_wait)
            if found and count == 1:
                took = asyncio.get_running_loop().time() - began
                self._latency = took if not self._latency else 0.8 * self._latency + 0.2 * took
            lane.hit = bool(found)
            if self._demand == 0 and not self._closed:
                lane.releasing = True
                await self._release(lane, found)  # its caller is gone and nobody else waits
            else:
                lane.ready.extend(found)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # every failure of the SDK is the backend's
            lane.error = error
            lane.hit = None
            _log.warning("service bus receive failed", subscription=lane.subscription, error=type(error).__name__)
        finally:
            lane.releasing = False
            lane.fetch = None
            if lane.hit is False:
                lane.found_empty = number
            self._notify()

    async def _take(self, lane: _Lane, count: int) -> list[LeasedMessage]:
        taken: list[LeasedMessage] = []
        now = self._clock()
        while lane.ready and len(taken) < count:
            raw = lane.ready.popleft()
            locked_until = raw.locked_until_utc
            if locked_until is not None and locked_until <= now:
                continue  # buffered past its lock: Service Bus redelivers it
            received = self._decode(raw, lane)
            if received.work.delivery_count > self._max_delivery_count:
                await self._settle_dead_letter(
                    received,
                    MAX_DELIVERY_COUNT_EXCEEDED,
                    f"the message was delivered {received.work.delivery_count - 1} times "
                    f"(max_delivery_count {self._max_delivery_count})",
                )
                continue
            token = str(raw.lock_token)
            self._held[token] = received
            taken.append(LeasedMessage(received.work, token, locked_until or now))
        return taken

    def _decode(self, raw: ServiceBusReceivedMessage, lane: _Lane) -> _Received:
        work, carried = _work_message(raw, lane.priority)
        return _Received(work, raw, lane, carried)

    # -- settling -----------------------------------------------------------------------------------

    def _holding(self, lease: LeasedMessage) -> _Received:
        received = self._held.get(lease.lease_token)
        if received is None:
            raise LeaseLost.for_message(lease.message.message_id)
        return received

    async def renew(self, lease: LeasedMessage) -> datetime:
        """Renew the peek-lock by the subscription's lock duration; LeaseLost when the broker lost it."""
        received = self._holding(lease)
        receiver = received.lane.receiver
        if receiver is None:
            self._held.pop(lease.lease_token, None)
            raise LeaseLost.for_message(lease.message.message_id)
        try:
            async with received.lane.transfers:
                return await self._call("renew", receiver.renew_message_lock(received.raw))
        except LeaseLost:
            self._held.pop(lease.lease_token, None)
            raise LeaseLost.for_message(lease.message.message_id) from None

    async def complete(self, lease: LeasedMessage) -> None:
        """Complete (remove) the message; LeaseLost when the lock is gone."""
        received = self._holding(lease)
        await self._settle(lease, received, lambda r: r.complete_message(received.raw))

    async def abandon(self, lease: LeasedMessage, *, delay_seconds: float = 0) -> None:
        """Abandon now, or complete and schedule a copy after ``delay_seconds`` (see the module docstring)."""
        delay = validate_delay(delay_seconds)
        received = self._holding(lease)
        if delay == 0:
            await self._settle(lease, received, lambda r: r.abandon_message(received.raw))
            return
        work = received.work
        if work.delivery_count >= self._max_delivery_count:
            await self._settle(
                lease,
                received,
                lambda r: r.dead_letter_message(
                    received.raw,
                    reason=MAX_DELIVERY_COUNT_EXCEEDED,
                    error_description=f"the message was delivered {work.delivery_count} times "
                    f"(max_delivery_count {self._max_delivery_count})",
                ),
            )
            return
        locked_until = received.raw.locked_until_utc
        now = self._clock()
        if locked_until is not None and locked_until <= now:
            self._held.pop(lease.lease_token, None)
            raise LeaseLost.for_message(work.message_id)
        copy = _copy_message(work, _derived_id("b", work.message_id, work.delivery_count), work.delivery_count)
        sequence_numbers = await self._send(copy, now + timedelta(seconds=delay))
        try:
            await self._settle(lease, received, lambda r: r.complete_message(received.raw))
        except LeaseLost:
            # The original comes back by itself: withdraw the copy. (When the outcome is unknown, the copy stays:
            # a duplicate delivery is better than a lost one.)
            with contextlib.suppress(HubError):
                sender = await self._get_sender()
                async with self._sending:
                    await self._call("cancel", sender.cancel_scheduled_messages(sequence_numbers))
            raise

    async def dead_letter(self, lease: LeasedMessage, *, reason: str, description: str) -> None:
        """Move the message to its subscription's dead-letter queue; LeaseLost when the lock is gone."""
        reason, description = validate_dead_letter_reason(reason, description)
        received = self._holding(lease)
        await self._settle(
            lease,
            received,
            lambda r: r.dead_letter_message(received.raw, reason=reason, error_description=description),
        )

    async def _settle_dead_letter(self, received: _Received, reason: str, description: str) -> None:
        receiver = received.lane.receiver
        if receiver is None:
            return
        with contextlib.suppress(LeaseLost):
            await self._call(
                "dead-letter",
                receiver.dead_letter_message(received.raw, reason=reason, error_description=description),
            )

    async def _settle(
        self,
        lease: LeasedMessage,
        received: _Received,
        operation: Callable[[ServiceBusReceiver], Awaitable[None]],
    ) -> None:
        receiver = received.lane.receiver
        if receiver is None:
            self._held.pop(lease.lease_token, None)
            raise LeaseLost.for_message(lease.message.message_id)
        try:
            await self._call("settle", operation(receiver))
        except LeaseLost:
            raise LeaseLost.for_message(lease.message.message_id) from None
        finally:
            # Settled, refused, or cut short (its outcome unknown): the lease cannot be settled again.
            self._held.pop(lease.lease_token, None)

    # -- dead letters -------------------------------------------------------------------------------

    async def list_dead_letters(
        self, *, page_size: int = 0, page_token: str | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        """Dead letters of each priority's subscription (HIGH first), each in the order set aside."""
        size = resolve_page_size(page_size)
        lanes = list(self._dead_lanes.values())
        lane_index, sequence = (0, 1) if not page_token else _decode_token(page_token, len(lanes))
        letters: list[DeadLetter] = []
        while lane_index < len(lanes):
            lane = lanes[lane_index]
            receiver = await self._ensure_receiver(lane, dead_letters=True)
            wanted = size - len(letters) + 1  # one more than the page holds: is there a next page?
            async with lane.transfers:
                peeked = await self._call(
                    "peek", receiver.peek_messages(max_message_count=wanted, sequence_number=sequence)
                )
            for raw in peeked:
                if len(letters) == size:
                    return letters, _encode_token(lane_index, int(raw.sequence_number or 0))
                letters.append(_dead_letter(raw, lane.priority))
            lane_index, sequence = lane_index + 1, 1
        return letters, None

    async def redrive(self, message_id: str) -> None:
        """Re-send a dead letter to the topic (fresh delivery count), then complete it in the dead-letter queue."""
        validate_message_id(message_id)
        for lane in self._dead_lanes.values():
            receiver = await self._ensure_receiver(lane, dead_letters=True)
            async with lane.transfers:
                target = await self._find_dead_letter(receiver, message_id)
                if target is None:
                    continue
                await self._redrive_one(receiver, lane.priority, message_id, target)
            return
        raise dead_letter_not_found(message_id)

    async def _find_dead_letter(self, receiver: ServiceBusReceiver, message_id: str) -> int | None:
        sequence = 1
        while True:
            peeked = await self._call("peek", receiver.peek_messages(max_message_count=100, sequence_number=sequence))
            for raw in peeked:
                if _original_id(raw) == message_id:
                    return int(raw.sequence_number or 0)
            if len(peeked) < 100:
                return None
            sequence = int(peeked[-1].sequence_number or 0) + 1

    async def _redrive_one(self, receiver: ServiceBusReceiver, priority: Priority, message_id: str, seq: int) -> None:
        # Service Bus cannot receive one chosen message: take the dead letters in order up to it and put the
        # others back (abandon) at once.
        while True:
            batch = await self._call("receive", receiver.receive_messages(max_message_count=50, max_wait_time=1))
            if not batch:
                raise dead_letter_not_found(message_id)
            target = next((raw for raw in batch if int(raw.sequence_number or 0) == seq), None)
            for raw in batch:
                if raw is not target:
                    with contextlib.suppress(LeaseLost):
                        await self._call("abandon", receiver.abandon_message(raw))
            if target is not None:
                work, _ = _work_message(target, priority)
                fresh = WorkMessage(work.message_id, work.body, work.properties, priority, work.enqueued_time, 0)
                await self._send(_copy_message(fresh, _derived_id("r", message_id, seq), 0), None)
                await self._call("complete", receiver.complete_message(target))
                return
            if any(int(raw.sequence_number or 0) > seq for raw in batch):
                raise dead_letter_not_found(message_id)

    # -- plumbing -----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop fetches, abandon buffered messages, close every link and the client (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._notify()
        lanes = [*self._lanes.values(), *self._dead_lanes.values()]
        # Put buffered messages back first (a fetch in flight does not block a settlement), then stop fetching.
        await asyncio.gather(*(self._abandon_buffered(lane) for lane in self._lanes.values()))
        fetches = {lane.fetch for lane in lanes if lane.fetch is not None}
        for fetch in fetches:
            fetch.cancel()
        if fetches:
            await asyncio.wait(fetches, timeout=_CLOSE_TIMEOUT_SECONDS)
        self._held.clear()
        handlers: list[Any] = [lane.receiver for lane in lanes if lane.receiver is not None]
        if self._sender is not None:
            handlers.append(self._sender)
        await close_handlers(handlers)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT_SECONDS):
                await self._client.close()

    @staticmethod
    async def _abandon_buffered(lane: _Lane) -> None:
        receiver = lane.receiver
        while receiver is not None and lane.ready:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT_SECONDS):
                    await receiver.abandon_message(lane.ready.popleft())

    def _check_open(self) -> None:
        if self._closed:
            raise _Closed("the work queue is closed")

    async def _call(self, what: str, operation: Awaitable[T]) -> T:
        """Await one SDK operation within the operation timeout, mapping its failures onto the port's errors."""
        try:
            return await bounded(
                what, operation, self._timeout, passthrough=(MessageLockLostError, MessageAlreadySettled, _Closed)
            )
        except (MessageLockLostError, MessageAlreadySettled):
            raise LeaseLost("the lease was lost") from None


def _credit(receiver: ServiceBusReceiver) -> int:
    """The link credit the receiver has left with the broker (0 when unknown)."""
    link = getattr(getattr(receiver, "_handler", None), "_link", None)
    credit = getattr(link, "current_link_credit", 0)
    return credit if isinstance(credit, int) else 0


def _settle_future(future: asyncio.Future[None], *, error: BaseException | None = None) -> None:
    if future.done():
        return  # its caller gave up waiting
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class _Closed(RuntimeError):
    """The queue was closed while the call was under way."""


def _properties(raw: ServiceBusReceivedMessage) -> tuple[dict[str, str], dict[str, str]]:
    public: dict[str, str] = {}
    reserved: dict[str, str] = {}
    for key, value in (raw.application_properties or {}).items():
        name = _text(key)
        if name in ("DeadLetterReason", "DeadLetterErrorDescription"):
            continue
        (reserved if name in _RESERVED else public)[name] = _text(value)
    if reserved.get(_IMPLICIT_PRIORITY):
        public.pop("priority", None)
    return public, reserved


def _original_id(raw: ServiceBusReceivedMessage) -> str:
    value = (raw.application_properties or {}).get(_ORIGINAL_ID.encode()) or (raw.application_properties or {}).get(
        _ORIGINAL_ID
    )
    return _text(value) if value is not None else str(raw.message_id)


def _work_message(raw: ServiceBusReceivedMessage, fallback: Priority) -> tuple[WorkMessage, int]:
    public, reserved = _properties(raw)
    carried = int(reserved.get(_CARRIED_DELIVERIES, "0") or 0)
    priority_name = _text((raw.application_properties or {}).get(b"priority", b"")) or fallback.name
    try:
        priority = Priority[priority_name]
    except KeyError:
        priority = fallback
    enqueued = raw.enqueued_time_utc or _EPOCH
    if _ORIGINAL_ENQUEUED in reserved:
        enqueued = _EPOCH + timedelta(milliseconds=int(reserved[_ORIGINAL_ENQUEUED]))
    work = WorkMessage(
        message_id=reserved.get(_ORIGINAL_ID) or str(raw.message_id),
        body=_body(raw),
        properties=public,
        priority=priority,
        enqueued_time=enqueued,
        delivery_count=carried + int(raw.delivery_count or 0) + 1,
    )
    return work, carried


def _dead_letter(raw: ServiceBusReceivedMessage, priority: Priority) -> DeadLetter:
    work, carried = _work_message(raw, priority)
    # A peeked message reports the deliveries so far; a received one, the deliveries before this one.
    counted = WorkMessage(
        work.message_id,
        work.body,
        work.properties,
        work.priority,
        work.enqueued_time,
        carried + int(raw.delivery_count or 0),
    )
    return DeadLetter(
        message=counted,
        reason=str(raw.dead_letter_reason or ""),
        description=str(raw.dead_letter_error_description or ""),
        dead_lettered_time=raw.enqueued_time_utc or work.enqueued_time,
    )


def _copy_message(work: WorkMessage, sb_message_id: str, carried: int) -> ServiceBusMessage:
    application: dict[str | bytes, Any] = {key: value for key, value in work.properties.items()}
    if "priority" not in work.properties:
        application[_IMPLICIT_PRIORITY] = "1"
    application["priority"] = work.priority.name
    application[_ORIGINAL_ID] = work.message_id
    application[_ORIGINAL_ENQUEUED] = str(_to_ms(work.enqueued_time))
    if carried:
        application[_CARRIED_DELIVERIES] = str(carried)
    return ServiceBusMessage(work.body, message_id=sb_message_id, application_properties=application)


def _encode_token(lane_index: int, sequence: int) -> str:
    raw = json.dumps({"l": lane_index, "s": sequence}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_token(token: str, lanes: int) -> tuple[int, int]:
    if not _TOKEN_RE.fullmatch(token):
        raise invalid_page_token("malformed page token")
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        raise invalid_page_token("malformed page token") from None
    lane = payload.get("l") if isinstance(payload, dict) else None
    sequence = payload.get("s") if isinstance(payload, dict) else None
    if not (_valid_index(lane, lanes) and _valid_index(sequence, 2**63)):
        raise invalid_page_token("malformed page token")
    return int(lane), int(sequence)  # type: ignore[arg-type]


def _valid_index(value: Any, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value < high
