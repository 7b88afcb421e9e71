"""Service Bus work queue and event publisher through the local test broker, against the SQLite queue.

Run: ``.venv/bin/python -m bench.servicebus_queue`` (options: ``--messages N --publishers P --events N``).

Rows (one run; the baseline first):

* baseline ``sqlite publish→receive→complete``: the embedded queue in this process. ``P`` tasks publish
  ``N`` messages (priorities round-robin) while one receive loop (``max_messages=1``, long poll, as the agent's
  worker does) hands each message to a task that completes it; latency = publish start → complete done.
* ``servicebus publish→receive→complete``: the same through ``ServiceBusWorkQueue`` (AMQPS, CBS token,
  weighted draining of the three priority subscriptions) against the test broker on 127.0.0.1.
* ``servicebus events publish (batches of 50) → SDK receive→complete``: ``ServiceBusEventPublisher`` sends
  the CloudEvents of ``--events`` execution events; an SDK receiver on ``execution-events/all`` takes them;
  latency = the batch's publish start → the event's completion.

What it means and does not: the Service Bus rows run the real client path (the unmodified SDK, TLS,
settlement echoes, lock renewal plumbing) against a single-threaded Python broker on loopback. They show the
adapter's own overhead and that nothing serialises on the client side; they are NOT Azure's throughput or
latency (Azure adds network round trips of milliseconds per operation and has its own limits, and the
broker's CPU per message, printed below, is the test double's cost, not the client's).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import tempfile
import time
from pathlib import Path

from bench.harness import Result, console, report
from services.platform.events.cloudevent import ExecutionEventFacts, to_cloudevent
from services.platform.events.servicebus import ServiceBusEventPublisher
from services.platform.servicebus import close_handlers, open_client
from services.platform.workqueue.port import LeasedMessage, Priority, WorkQueue
from services.platform.workqueue.servicebus import ServiceBusWorkQueue
from services.platform.workqueue.sqlite import SqliteWorkQueue
from tools.emulators.certs import load_or_create
from tools.emulators.servicebus_broker import BrokerProcess, BrokerTokenCredential

PROPERTIES = {"model": "http-json/async/v1", "profile": "async", "tenant": "bench"}
PRIORITIES = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
CLIENT_CPU_MS: dict[str, float] = {}  # this process's CPU per message, by row


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def pipeline(name: str, queue: WorkQueue, messages: int, publishers: int, tag: str) -> Result:
    """Publish ``messages`` from ``publishers`` tasks while one receive loop completes them."""
    started_at: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    completions: set[asyncio.Task[None]] = set()

    async def publish(worker: int) -> None:
        for i in range(worker, messages, publishers):
            message_id = f"{tag}-{i}"
            started_at[message_id] = time.perf_counter()
            properties = {**PROPERTIES, "priority": PRIORITIES[i % 3].name}
            await queue.publish(
                message_id, b'{"execution":"x","attempt":1}', priority=PRIORITIES[i % 3], properties=properties
            )

    async def complete(lease: LeasedMessage) -> None:
        await queue.complete(lease)
        latencies.append((time.perf_counter() - started_at[lease.message.message_id]) * 1000)
        if len(latencies) == messages:
            done.set()

    async def consume() -> None:
        while not done.is_set():
            for lease in await queue.receive(lease_seconds=60, wait_seconds=1):
                task = asyncio.get_running_loop().create_task(complete(lease))
                completions.add(task)
                task.add_done_callback(completions.discard)

    started = time.perf_counter()
    cpu = time.process_time()
    consumer = asyncio.get_running_loop().create_task(consume())
    await asyncio.gather(*(publish(w) for w in range(publishers)))
    await asyncio.wait_for(done.wait(), 600)
    seconds = time.perf_counter() - started
    CLIENT_CPU_MS[name] = (time.process_time() - cpu) * 1000 / messages
    consumer.cancel()
    await asyncio.gather(consumer, *completions, return_exceptions=True)
    return Result(name, latencies, seconds)


async def events(broker: BrokerProcess, count: int) -> Result:
    """Publish ``count`` CloudEvents in batches of 50; an SDK receiver completes them."""
    namespace = "bench-events.servicebus.test"
    tls = broker.ssl_context()
    publisher = await ServiceBusEventPublisher.open(
        namespace, BrokerTokenCredential(), endpoint=broker.endpoint, ssl_context=tls
    )
    client = await open_client(namespace, BrokerTokenCredential(), endpoint=broker.endpoint, ssl_context=tls)
    receiver = client.get_subscription_receiver("execution-events", "all")
    await receiver.__aenter__()
    started_at: dict[str, float] = {}
    latencies: list[float] = []
    try:
        cloud = [
            to_cloudevent(
                ExecutionEventFacts(
                    name=f"executions/e-{i // 5}/events/{i % 5 + 1}",
                    type="STATE_CHANGED",
                    time=datetime.datetime.now(datetime.UTC),
                    execution=f"executions/e-{i // 5}",
                    sequence=i % 5 + 1,
                    state="RUNNING",
                    attempt=1,
                    extension="extensions/echo",
                    version="1.0.0",
                    profile="async",
                    execution_model="http-json/async/v1",
                    priority="NORMAL",
                    tenant="bench",
                    user="bench",
                ),
                source="https://bench.example",
            )
            for i in range(count)
        ]

        async def consume() -> None:
            while len(latencies) < count:
                for message in await receiver.receive_messages(max_message_count=100, max_wait_time=1):
                    await receiver.complete_message(message)
                    latencies.append((time.perf_counter() - started_at[str(message.message_id)]) * 1000)

        started = time.perf_counter()
        consumer = asyncio.get_running_loop().create_task(consume())
        for first in range(0, count, 50):
            batch = cloud[first : first + 50]
            now = time.perf_counter()
            for item in batch:
                started_at[item.get_id()] = now
            await publisher.publish(batch)
        await asyncio.wait_for(consumer, 600)
        return Result(
            "servicebus events publish (batches of 50) → SDK receive→complete", latencies, time.perf_counter() - started
        )
    finally:
        await close_handlers([receiver, client])
        await publisher.close()


async def run(messages: int, publishers: int, event_count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="exthub-bench-sb-") as tmp:
        root = Path(tmp)
        await asyncio.to_thread(load_or_create, root / "certs")
        sqlite = await SqliteWorkQueue.open(root / "queue.db", poll_interval_seconds=0.01)
        try:
            baseline = await pipeline("sqlite publish→receive→complete (baseline)", sqlite, messages, publishers, "s")
        finally:
            await sqlite.close()
        broker = await asyncio.to_thread(BrokerProcess.start, root / "certs")
        try:
            queue = await ServiceBusWorkQueue.open(
                "bench.servicebus.test",
                BrokerTokenCredential(),
                endpoint=broker.endpoint,
                ssl_context=broker.ssl_context(),
            )
            try:
                await pipeline("warm-up", queue, 50, publishers, "w")
                cpu_before = _cpu_seconds(broker.pid)
                servicebus = await pipeline(
                    "servicebus publish→receive→complete (test broker)", queue, messages, publishers, "b"
                )
                broker_cpu_ms = (_cpu_seconds(broker.pid) - cpu_before) * 1000 / messages
            finally:
                await queue.close()
            cpu_before = _cpu_seconds(broker.pid)
            published = await events(broker, event_count)
            event_cpu_ms = (_cpu_seconds(broker.pid) - cpu_before) * 1000 / event_count
        finally:
            broker.stop()
    report(
        f"Service Bus adapters through the Python test broker ({messages} messages, {publishers} publishers)",
        [servicebus, published],
        baseline,
        notes=(
            "client CPU per message (this process, publishing and consuming): "
            + ", ".join(
                f"{name.split(' (')[0]}: {ms:.2f} ms" for name, ms in CLIENT_CPU_MS.items() if name != "warm-up"
            )
            + f"\ntest broker CPU per queue message: {broker_cpu_ms:.2f} ms; per event: {event_cpu_ms:.2f} ms "
            "(the Python test double's cost, not the client's). Latencies include the backlog the publishers "
            "build. Not Azure numbers: see the module docstring."
        ),
    )


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    console.print("[bold]bench.servicebus_queue[/bold]")
    asyncio.run(run(args.messages, args.publishers, args.events))


if __name__ == "__main__":
    main()
