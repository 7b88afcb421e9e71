"""Work queue benchmark: the embedded SQLite leased queue against plain SQLite writes on the same disk.

Run: ``.venv/bin/python -m bench.queue`` (options: ``--messages N --poll-interval S --batch N``).

Rows (all in one run, on a fresh database file each):

* baseline ``sqlite INSERT+DELETE``: one autocommit INSERT and one autocommit DELETE per message on a plain
  WAL table (same pragmas) — the floor for "enqueue + settle" on this disk;
* ``publish``: ``WorkQueue.publish`` one after another (latency per call);
* ``receive+complete (backlog)``: drain a full queue in-process, one ``receive`` + ``complete`` per message;
* ``end-to-end saturated, K consumer process(es)``: this process publishes as fast as it can while K spawned
  processes receive (long poll) and complete: req/s is the sustained throughput (first publish to last
  completion); the latency there mostly measures the backlog that builds up;
* ``end-to-end paced R/s, K consumer process(es)``: the same at a fixed publish rate below capacity, so the
  publish → receive latency (wall clock, same machine) is the queue's own delivery latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosqlite

from bench.harness import Result, console, report
from exthub.contract.execution import HTTP_JSON_ASYNC
from exthub.contract.queue import MODEL_PROPERTY, PROFILE_PROPERTY, TENANT_PROPERTY
from services.platform.workqueue.port import Priority
from services.platform.workqueue.sqlite import SqliteWorkQueue

PROPERTIES = {MODEL_PROPERTY: HTTP_JSON_ASYNC, PROFILE_PROPERTY: "async", TENANT_PROPERTY: "bench"}


async def baseline(path: Path, messages: int) -> Result:
    """One autocommit INSERT then one autocommit DELETE per message."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000"):
            await conn.execute(f"PRAGMA {pragma}")
        await conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, body BLOB NOT NULL, properties TEXT NOT NULL)")
        props = json.dumps(PROPERTIES)
        latencies: list[float] = []
        started = time.perf_counter()
        for i in range(messages):
            t0 = time.perf_counter()
            await conn.execute("INSERT INTO t (id, body, properties) VALUES (?, ?, ?)", (f"m{i}", b"{}", props))
            await conn.execute("DELETE FROM t WHERE id = ?", (f"m{i}",))
            latencies.append((time.perf_counter() - t0) * 1000)
        return Result("sqlite INSERT+DELETE (baseline)", latencies, time.perf_counter() - started)
    finally:
        await conn.close()


async def publish_then_drain(path: Path, messages: int) -> tuple[Result, Result]:
    """Publish ``messages`` one by one, then receive + complete them one by one."""
    queue = await SqliteWorkQueue.open(path)
    try:
        publish_ms: list[float] = []
        started = time.perf_counter()
        for i in range(messages):
            t0 = time.perf_counter()
            await queue.publish(f"m{i}", b"{}", priority=Priority(1 + i % 3), properties=PROPERTIES)
            publish_ms.append((time.perf_counter() - t0) * 1000)
        publish = Result("publish", publish_ms, time.perf_counter() - started)
        drain_ms: list[float] = []
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            leases = await queue.receive(lease_seconds=60)
            if not leases:
                break
            await queue.complete(leases[0])
            drain_ms.append((time.perf_counter() - t0) * 1000)
        return publish, Result("receive+complete (backlog)", drain_ms, time.perf_counter() - started)
    finally:
        await queue.close()


async def _consume(path: str, expected: int, batch: int, poll: float, barrier: Any, done: Any) -> list[float]:
    queue = await SqliteWorkQueue.open(Path(path), poll_interval_seconds=poll)
    latencies: list[float] = []
    try:
        barrier.wait(60)
        while done.value < expected:
            for lease in await queue.receive(max_messages=batch, lease_seconds=60, wait_seconds=0.5):
                received = time.time()
                latencies.append((received - json.loads(lease.message.body)["t"]) * 1000)
                await queue.complete(lease)
                with done.get_lock():
                    done.value += 1
    finally:
        await queue.close()
    return latencies


def consume(path: str, expected: int, batch: int, poll: float, barrier: Any, done: Any, results: Any) -> None:
    """A consumer process: receive + complete until ``expected`` messages are done across all consumers."""
    results.put(asyncio.run(_consume(path, expected, batch, poll, barrier, done)))


def end_to_end(path: Path, messages: int, consumers: int, batch: int, poll: float, rate: float | None) -> Result:
    """Publish here (as fast as possible, or paced at ``rate`` per second) while ``consumers`` spawned
    processes drain the queue."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(consumers + 1)
    done = ctx.Value("i", 0)
    results = ctx.Queue()
    asyncio.run(_create(path))
    workers = [
        ctx.Process(target=consume, args=(str(path), messages, batch, poll, barrier, done, results))
        for _ in range(consumers)
    ]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(60)
        started = time.perf_counter()
        asyncio.run(_produce(path, messages, rate))
        latencies = [value for _ in workers for value in results.get(timeout=300)]
        seconds = time.perf_counter() - started
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    plural = "es" if consumers > 1 else ""
    mode = "saturated" if rate is None else f"paced {rate:g}/s"
    return Result(f"end-to-end {mode}, {consumers} consumer process{plural}", latencies, seconds)


async def _create(path: Path) -> None:
    await (await SqliteWorkQueue.open(path)).close()


async def _produce(path: Path, messages: int, rate: float | None) -> None:
    queue = await SqliteWorkQueue.open(path)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for i in range(messages):
            if rate is not None:  # open-loop pacing: message i is due at started + i / rate
                await asyncio.sleep(max(0.0, started + i / rate - loop.time()))
            body = json.dumps({"execution": f"executions/{i}", "attempt": 1, "t": time.time()}).encode()
            await queue.publish(f"e{i}", body, priority=Priority(1 + i % 3), properties=PROPERTIES)
    finally:
        await queue.close()


def main() -> None:
    """Run every scenario and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1, help="max_messages per receive in the consumer processes")
    parser.add_argument("--rate", type=float, default=200.0, help="publish rate of the paced scenarios (msg/s)")
    parser.add_argument("--paced-messages", type=int, default=400)
    parser.add_argument("--poll-interval", type=float, default=0.05, help="consumer poll interval (s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="exthub-bench-queue-") as directory:
        root = Path(directory)
        console.print(f"[bold]work queue[/bold]: {args.messages} messages per scenario, files under {root}")
        base = asyncio.run(baseline(root / "baseline.db", args.messages))
        publish, drain = asyncio.run(publish_then_drain(root / "inproc.db", args.messages))
        e2e = [
            end_to_end(root / f"e2e-{mode}-{k}.db", count, k, args.batch, args.poll_interval, rate)
            for mode, count, rate in (("sat", args.messages, None), ("paced", args.paced_messages, args.rate))
            for k in (1, 2)
        ]
    report(
        "Exthub SQLite work queue",
        [publish, drain, *e2e],
        base,
        notes=(
            "baseline/publish/receive+complete: latency of one call (pair); end-to-end: publish → receive latency "
            "(wall clock), req/s from the first publish to the last completion (paced rows: capped by the rate); "
            f"consumers receive "
            f"max_messages={args.batch}, poll interval {args.poll_interval}s, lease 60s; WAL, synchronous=NORMAL."
        ),
    )


if __name__ == "__main__":
    main()
