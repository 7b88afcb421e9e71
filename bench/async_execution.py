"""Asynchronous execution benchmark: Exthub with 1 and 2 agents against Celery + Redis, in the same run.

Run: ``.venv/bin/python -m bench.async_execution`` (options: ``--executions N --concurrency K --slots S
--poll-seconds P --warmup W --profile embedded|azure``). ``--profile azure`` adds the two Exthub rows on the Azure
adapters (Cosmos DB, Service Bus, Entra ID tokens) against the emulators of ``exthub up --backend azure
--emulators``, in the same run, and the Cosmos DB request units per execution. With ``--tracing`` it measures the
cost of tracing instead: Exthub with 1 agent on fresh hubs in the same run (``--rounds`` pairs, alternated), with
trace export off (no ``OTEL_*`` variable: nothing is installed) and on (every part, echo included, exporting every
span over OTLP/HTTP with the default batch processor to a local receiver process, ``python -m tools.otlp_receiver
--count-only``); prints on ÷ off. ``--celery-scaling`` adds a row of Celery with 2 worker processes, right after the
baseline, and its 2 workers ÷ 1 worker beside Exthub's 2 agents ÷ 1 agent: Celery's workers share nothing but
Redis, so a second one adds capacity where the machine has it; Exthub's agents share the execution service, whose
one event loop is the bottleneck of these rows, so a second agent can only add cost there.

What one measured execution is, end to end (client clock, from the create call to the observed terminal state):

* **Exthub** (the rows measured against the baseline): ``CreateExecution`` (profile ``async``, priority
  NORMAL) of ``echo-plain`` (no inputs, so it goes straight to QUEUED) → the execution service writes QUEUED
  and its dispatcher publishes to the SQLite work queue → an agent process receives it and claims it (QUEUED →
  RUNNING; the claim carries the signed extension request), the signed POST to echo, the report (SUCCEEDED;
  claims and reports of an agent go in batches when several are ready) → the create answers with the ended
  execution: like the Exthub client's ``HubClient.create_and_wait``, the client asks the create itself to wait
  for the end (``wait_timeout``), and calls ``WaitExecution`` only if that answer comes back before the end
  (like Celery's ``AsyncResult.get``, it waits for the outcome only).
  Queue-to-start: the execution's ``create_time`` to its ``start_time`` (first RUNNING); run: ``start_time``
  to ``end_time`` (all stamped by the execution service).
* **Celery + Redis** (the baseline): ``apply_async`` of :func:`bench.celery_echo.call_echo` → Redis broker →
  a Celery worker runs the task: it builds the same request body, signs it with the benchmark's ES256 key and
  POSTs it to the same echo → the result is stored in the Redis result backend → the client's
  ``AsyncResult.get`` returns. Queue-to-start: the client's ``time.time()`` just before ``apply_async`` to the
  task's ``time.time()`` at its start (same machine, same clock); run: the task body (sign + POST).

Besides the latency table, a second table shows the CPU time each process spent per measured execution
(``/proc/<pid>/stat``, user + system, idle processes included): it tells where the time goes.

Fairness: ONE echo process serves both sides (``--jwks-file`` holding the hub's public keys and the
benchmark's key), so "the same echo extension" is literally the same process and endpoint. The Celery worker
uses the threads pool with ``--concurrency`` = the agent's slots (one process running S calls at once, like
one agent process with S slots; prefork would mean S processes on a 2-core machine), acknowledges late and
prefetches one message per slot (as an agent completes its queue message after the report and receives only
for a free slot). The Celery worker is stopped before the Exthub rows run; the idle hub processes and Redis
stay up throughout. Everything listens on 127.0.0.1; the Redis server (``redis-server`` from the Debian
packages, installed with apt-get when missing and running as root) is started on a free port with no
persistence and stopped by pid. Every wait is bounded and every child is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from rich.console import Console
from rich.table import Table

from bench import celery_echo
from bench.harness import CLIENT, SERVICE_PYTHON, console, cpu_snapshot, free_port, median, p99, py_spy
from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.client import is_terminal_state
from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.roles import EXECUTIONS_RUN, EXTENSIONS_PUBLISH
from exthub.execution.v1 import execution_pb2, execution_service_pb2, execution_service_pb2_grpc
from exthub.type.v1 import types_pb2
from services.echo.registration import register_echo
from services.execution.adapters.documents import COLLECTION as EXECUTION_COLLECTION
from services.execution.invariants import check_invariants
from services.execution.repository import ExecutionRepository
from services.execution.signing import SigningKeyRing
from services.execution.store import DATABASE_FILE as EXECUTION_DATABASE_FILE
from services.platform.backends import COSMOS_CHARGES_EVENT
from services.platform.docstore.sqlite import SqliteDocumentStore
from tools.emulators.stack import EmulatorStack, ServiceName

if TYPE_CHECKING:
    from exthub.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub

REPO_ROOT = Path(__file__).resolve().parent.parent
EXTENSION_ID = "echo-plain"
AGENT_PREFIX = "agent-"
VERSION = f"extensions/{EXTENSION_ID}/versions/1.0.0"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
CALL_TIMEOUT_SECONDS = 30.0
#: The longest one execution may take, end to end, before it counts as ``CLIENT_TIMEOUT``.
EXECUTION_TIMEOUT_SECONDS = 120.0
APT_TIMEOUT_SECONDS = 900.0

ONE_AGENT = "Exthub 1 agent"
TWO_AGENTS = "Exthub 2 agents"
CELERY_WORKER_PREFIX = "celery-worker-"
#: the CPU table's group of the Celery worker processes
CELERY_WORKERS = "celery-worker"
#: appended to the row names of the Azure profile
AZURE_SUFFIX = " · azure"
SETTLE_TIMEOUT_SECONDS = 30.0
SETTLE_POLL_SECONDS = 0.5

_GRPC_ADDRESS = re.compile(r"serving on (\S+)")
_OBJECTS_URL = re.compile(r"objects serving on (\S+)")
_HTTP_URL = re.compile(r" http serving on (\S+)")
_RPC_COUNT = re.compile(r'^rpc_server_duration_seconds_count\{[^}]*rpc_method="([^"]+)"[^}]*\} (\S+)$', re.MULTILINE)
_ECHO_URL = re.compile(r"^(http://\S+)")
_REDIS_READY = re.compile(r"Ready to accept connections")
_AGENT_READY = re.compile(r"consuming the work queue")
_CELERY_READY = re.compile(re.escape(celery_echo.READY_LINE))
_RECEIVER_URL = re.compile(r"OTLP/HTTP receiver on (\S+)")
_RECEIVED = re.compile(r"received (\d+) spans in (\d+) traces")
RECEIVER = "otlp-receiver"


# ---- measurements --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One execution: end-to-end latency, queue-to-start and start-to-end latencies (None if it never
    started or ended) and the final outcome."""

    end_to_end_ms: float
    queue_to_start_ms: float | None
    run_ms: float | None
    outcome: str
    execution: str = ""  # the name the hub returned (Exthub rows), for the invariant check


@dataclass
class Row:
    """The samples of one system, how long the measured part took and the CPU each process spent on it."""

    name: str
    samples: list[Sample]
    seconds: float
    outcomes: Counter[str] = field(default_factory=Counter)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    #: Exthub rows: the execution service's gRPC calls per execution, by method (warm-up included)
    calls: dict[str, float] = field(default_factory=dict)

    @property
    def executions_per_second(self) -> float:
        """Succeeded executions per second of wall time."""
        return self.outcomes["SUCCEEDED"] / self.seconds if self.seconds > 0 else 0.0

    def end_to_end(self) -> list[float]:
        """End-to-end latencies (ms) of the succeeded executions."""
        return [s.end_to_end_ms for s in self.samples if s.outcome == "SUCCEEDED"]

    def queue_to_start(self) -> list[float]:
        """Queue-to-start latencies (ms) of the executions that started."""
        return [s.queue_to_start_ms for s in self.samples if s.queue_to_start_ms is not None]

    def run(self) -> list[float]:
        """Start-to-end latencies (ms) of the succeeded executions."""
        return [s.run_ms for s in self.samples if s.run_ms is not None and s.outcome == "SUCCEEDED"]


async def drive(
    name: str,
    one: Callable[[int], Awaitable[Sample]],
    *,
    executions: int,
    concurrency: int,
    warmup: int,
    processes: Mapping[str, Sequence[int]],
    profile_dir: Path | None = None,
    profile_native: bool = False,
) -> Row:
    """Runs ``warmup`` unmeasured executions, then ``executions`` with ``concurrency`` in flight; records the
    CPU time each group of ``processes`` spent during the measured part (and samples them with py-spy into
    ``profile_dir`` when given)."""
    warm = iter(range(warmup))

    async def warm_worker() -> None:
        for index in warm:
            await one(index)

    await asyncio.gather(*(warm_worker() for _ in range(min(concurrency, max(warmup, 1)))))
    counter = iter(range(executions))

    async def worker() -> list[Sample]:
        return [await one(index) for index in counter]

    async with py_spy(processes, profile_dir, name, native=profile_native):
        cpu_before = cpu_snapshot(processes)
        started = time.perf_counter()
        per_worker = await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu_after = cpu_snapshot(processes)
    samples = [sample for done in per_worker for sample in done]
    cpu_ms = {
        group: (cpu_after[group] - cpu_before[group]) * 1000 / max(1, len(samples))
        for group in cpu_after
        if group in cpu_before
    }
    return Row(name, samples, seconds, Counter(sample.outcome for sample in samples), cpu_ms)


def _ratio(value: float, baseline: float) -> str:
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return "-"
    return f"{value / baseline:.2f}"


EXECUTION_GROUP = "execution"


def report_targets(rows: Sequence[Row], baseline: Row, *, suffix: str = "") -> None:
    """The target ratios of one profile's rows (``suffix`` of their names): Exthub 1 agent ÷ Celery, 2 agents ÷
    1 agent (exec/s), execution-service CPU per execution; and, without a target, Celery's 2 workers ÷ 1 worker
    when that row was measured (what a second worker process does where no central service is the bottleneck)."""
    celery_two = next((row for row in rows if row.name == celery_row_name(2)), None)
    rows = [
        row
        for row in rows
        if row.name.startswith((ONE_AGENT, TWO_AGENTS))
        and row.name.endswith(suffix)
        and (suffix or not row.name.endswith(AZURE_SUFFIX))
    ]
    by_name = {row.name: row for row in rows}
    one, two = by_name.get(ONE_AGENT + suffix), by_name.get(TWO_AGENTS + suffix)
    figures: list[tuple[str, float, float | None, bool]] = []
    if one is not None:
        figures.append(
            (
                f"exec/s: Exthub 1 agent{suffix} ÷ Celery",
                one.executions_per_second / baseline.executions_per_second
                if baseline.executions_per_second
                else math.nan,
                1.0,
                True,
            )
        )
    if one is not None and two is not None:
        ratio = two.executions_per_second / one.executions_per_second if one.executions_per_second else math.nan
        figures.append((f"exec/s: 2 agents ÷ 1 agent{suffix}", ratio, 1.0, True))
    if celery_two is not None and not suffix:
        ratio = (
            celery_two.executions_per_second / baseline.executions_per_second
            if baseline.executions_per_second
            else math.nan
        )
        figures.append(("exec/s: Celery 2 workers ÷ 1 worker (no target)", ratio, None, True))
    figures.extend(
        (f"execution CPU ms per execution ({row.name})", row.cpu_ms.get(EXECUTION_GROUP, math.nan), 2.5, False)
        for row in rows
    )
    table = Table(title="Targets (this run)")
    for column in ("figure", "value", "target", "met"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for label, value, target, higher in figures:
        if target is None:
            table.add_row(label, f"{value:.3f}", "-", "-")
            continue
        met = not math.isnan(value) and ((value >= target) if higher else (value <= target))
        table.add_row(label, f"{value:.3f}", f"{'≥' if higher else '≤'} {target:g}", "yes" if met else "no")
    Console(width=max(console.width, 200)).print(table)


def report(rows: Sequence[Row], baseline: Row, notes: str) -> None:
    """The table: throughput, end-to-end and queue-to-start median/p99, ratios against the baseline; then the
    CPU each process spent per measured execution."""
    out = Console(width=max(console.width, 200))
    table = Table(title="Asynchronous executions of echo, end to end (create → queued → run → succeeded)")
    columns = (
        "system",
        "execs",
        "exec/s",
        "e2e med ms",
        "e2e p99 ms",
        "q→start med ms",
        "q→start p99 ms",
        "run med ms",
        "exec/s ÷ base",
        "e2e med ÷ base",
        "q→start med ÷ base",
        "outcomes",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("system", "outcomes") else "right")
    base_e2e = median(baseline.end_to_end())
    base_q2s = median(baseline.queue_to_start())
    for row in [baseline, *rows]:
        e2e, q2s = row.end_to_end(), row.queue_to_start()
        table.add_row(
            row.name,
            str(len(row.samples)),
            f"{row.executions_per_second:,.1f}",
            f"{median(e2e):.1f}",
            f"{p99(e2e):.1f}",
            f"{median(q2s):.1f}",
            f"{p99(q2s):.1f}",
            f"{median(row.run()):.1f}",
            _ratio(row.executions_per_second, baseline.executions_per_second),
            _ratio(median(e2e), base_e2e),
            _ratio(median(q2s), base_q2s),
            ", ".join(f"{k}={v}" for k, v in sorted(row.outcomes.items())),
        )
    out.print(table)
    groups = list(dict.fromkeys(group for row in [baseline, *rows] for group in row.cpu_ms))
    cpu = Table(title="CPU ms per measured execution, per process (user + system; idle processes included)")
    cpu.add_column("system")
    for group in [*groups, "total"]:
        cpu.add_column(group, justify="right")
    for row in [baseline, *rows]:
        values = [f"{row.cpu_ms[group]:.2f}" if group in row.cpu_ms else "-" for group in groups]
        cpu.add_row(row.name, *values, f"{sum(row.cpu_ms.values()):.2f}")
    out.print(cpu)
    counted = [row for row in rows if row.calls]
    methods = sorted({method for row in counted for method in row.calls})
    if counted:
        calls = Table(title="gRPC calls the execution service handled per execution, by method")
        calls.add_column("system")
        for method in [*methods, "total"]:
            calls.add_column(method, justify="right")
        for row in counted:
            values = [f"{row.calls[method]:.2f}" if method in row.calls else "-" for method in methods]
            calls.add_row(row.name, *values, f"{sum(row.calls.values()):.2f}")
        out.print(calls)
    out.print(notes)


# ---- child processes -----------------------------------------------------------------------------------------


@dataclass
class Child:
    """A child process started by this benchmark (stdout drained in the background, stderr in ``log``)."""

    name: str
    process: asyncio.subprocess.Process
    log: Path
    lines: list[str]
    drain: asyncio.Task[None] | None = None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of what it wrote on stderr."""
        try:
            return self.log.read_text("utf-8", errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


async def _drain(child: Child, stream: asyncio.StreamReader) -> None:
    while raw := await stream.readline():
        child.lines.append(raw.decode("utf-8", errors="replace").rstrip())


async def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    ready: re.Pattern[str],
    log_dir: Path,
    ready_within: float = READY_TIMEOUT_SECONDS,
) -> Child:
    """Starts ``argv`` and waits (bounded) for a stdout line matching ``ready``; the lines read so far are kept."""
    log = log_dir / f"{name}.log"
    with log.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    child = Child(name, process, log, [])
    assert process.stdout is not None
    try:
        async with asyncio.timeout(ready_within):
            await _wait_ready(child, process.stdout, ready)
    except BaseException:
        await stop(child)
        raise
    child.drain = asyncio.create_task(_drain(child, process.stdout))
    return child


async def stop(child: Child) -> None:
    """SIGTERM by pid, SIGKILL if it has not exited within ``STOP_TIMEOUT_SECONDS``; then reap."""
    process = child.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await process.wait()
    if child.drain is not None:
        child.drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await child.drain


async def _wait_ready(child: Child, stdout: asyncio.StreamReader, ready: re.Pattern[str]) -> None:
    while True:
        raw = await stdout.readline()
        if not raw:
            raise RuntimeError(f"{child.name} exited before it was ready:\n{child.log_tail()}")
        line = raw.decode("utf-8", errors="replace").rstrip()
        child.lines.append(line)
        if ready.search(line):
            return


def _match(child: Child, pattern: re.Pattern[str]) -> str:
    for line in child.lines:
        found = pattern.search(line)
        if found:
            return found.group(1)
    raise RuntimeError(f"{child.name} did not announce {pattern.pattern!r}: {child.lines}")


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``EXTHUB_*`` or ``OTEL_*`` variable, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EXTHUB_", "OTEL_"))}
    env.update(extra)
    return env


def redis_server_binary() -> str:
    """The ``redis-server`` binary; installed with apt-get when missing and running as root, else exits."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(
            "redis-server is not installed and this is not root with apt-get: install the Debian package "
            "first (sudo apt-get install -y redis-server), then run the benchmark again"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "redis-server"]
    for commands in ([install], [["apt-get", "update"], install]):
        for command in commands:
            console.print(f"redis-server is missing: running {' '.join(command)}")
            subprocess.run(command, env=env, check=False, timeout=APT_TIMEOUT_SECONDS)
        found = shutil.which("redis-server")
        if found:
            return found
    raise SystemExit("apt-get could not install redis-server; install it by hand and run the benchmark again")


# ---- the hub (catalog + execution + agents), echo, Redis, the Celery worker --------------------------------------


@dataclass
class Stack:
    """Everything one run starts, stopped in reverse order by :func:`running_stack`."""

    data_dir: Path
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    catalog_address: str = ""
    execution_address: str = ""
    execution_metrics_url: str = ""
    echo_url: str = ""
    redis_url: str = ""
    hub_jwks_url: str = ""
    key_dir: Path = Path()
    #: echo's port, chosen first: the hub allow-lists it (the one internal destination it may call)
    echo_port: int = 0
    #: the Azure profile: the emulator stack the services use (None: the embedded profile)
    emulators: EmulatorStack | None = None
    #: ``OTEL_*`` variables of the hub's processes and echo (empty: tracing off)
    telemetry_env: dict[str, str] = field(default_factory=dict)

    def backend_env(self, service: ServiceName) -> dict[str, str]:
        """``EXTHUB_*`` backend settings and the service identity's standard variables (the Azure profile)."""
        if self.emulators is None:
            return {"EXTHUB_BACKEND": "local"}
        return {**self.emulators.hub_environment(), **self.emulators.service_environment(service)}

    def token(self, roles: Sequence[str], user: str) -> str:
        """A user token this stack's hub accepts."""
        if self.emulators is None:
            issuer = DevIssuer.load_or_create(self.data_dir)
            return issuer.issue(tenant="bench", user=user, roles=list(roles))
        return self.emulators.user_token(roles=roles, tenant="bench", user=user)

    async def start(self, child: Awaitable[Child]) -> Child:
        """Awaits ``child`` and remembers it for the final stop."""
        started = await child
        self.children.append(started)
        return started

    async def stop_child(self, child: Child) -> None:
        """Stops one child now (by pid) and forgets it."""
        await stop(child)
        self.children.remove(child)


@contextlib.asynccontextmanager
async def running_stack(
    redis_server: str | None, poll_seconds: float, *, azure: bool = False, traced: bool = False
) -> AsyncIterator[Stack]:
    """Redis (when ``redis_server`` is given), catalog, execution service and echo (trusting the hub's keys and
    the benchmark's key); ``azure``: on the Azure adapters, against the emulator stack of ``exthub up --backend
    azure --emulators`` (started first, stopped last); ``traced``: first an OTLP/HTTP receiver process, and every
    part exports its spans to it."""
    with tempfile.TemporaryDirectory(prefix="exthub-async-bench-") as tmp:
        stack = Stack(data_dir=Path(tmp) / "data", log_dir=Path(tmp) / "logs", key_dir=Path(tmp) / "bench-keys")
        stack.data_dir.mkdir()
        stack.log_dir.mkdir()
        stack.echo_port = free_port()  # chosen first: the hub's egress allow-list names it
        try:
            if azure:
                stack.emulators = await asyncio.to_thread(EmulatorStack.start, stack.data_dir)
            if redis_server is not None:
                await _start_redis(stack, redis_server)
            if traced:
                await _start_receiver(stack)
            await _start_hub(stack, poll_seconds)
            await _start_echo(stack)
            yield stack
        finally:
            for child in reversed(stack.children):
                await stop(child)
            if stack.emulators is not None:
                await asyncio.to_thread(stack.emulators.stop)


async def _start_redis(stack: Stack, redis_server: str) -> None:
    port = free_port()
    argv = [
        redis_server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--dir",
        str(stack.data_dir),
        "--loglevel",
        "notice",
    ]
    await stack.start(spawn("redis", argv, env=_clean_env(), ready=_REDIS_READY, log_dir=stack.log_dir))
    stack.redis_url = f"redis://127.0.0.1:{port}/0"


async def _start_receiver(stack: Stack) -> None:
    argv = [sys.executable, "-m", "tools.otlp_receiver", "--port", "0", "--count-only"]
    receiver = await stack.start(spawn(RECEIVER, argv, env=_clean_env(), ready=_RECEIVER_URL, log_dir=stack.log_dir))
    stack.telemetry_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": _match(receiver, _RECEIVER_URL)}


def _hub_env(stack: Stack, service: ServiceName, poll_seconds: float, **extra: str) -> dict[str, str]:
    # on Azure the catalog and the execution service log at INFO: their Cosmos DB request units since start are
    # one INFO line when they stop (it adds the per-call access log line to their work)
    level = "INFO" if stack.emulators is not None and service != "agent" else "WARNING"
    return _clean_env(
        **stack.telemetry_env,
        **stack.backend_env(service),
        EXTHUB_DATA_DIR=str(stack.data_dir),
        EXTHUB_HOST="127.0.0.1",
        EXTHUB_LOG_LEVEL=level,
        EXTHUB_EGRESS__ALLOW=f"127.0.0.1:{stack.echo_port}",
        EXTHUB_CATALOG_PORT="0",
        EXTHUB_EXECUTION_PORT="0",
        EXTHUB_AGENT_PORT="0",
        EXTHUB_OBJECTS_PORT="0",
        EXTHUB_QUEUE_POLL_SECONDS=str(poll_seconds),
        **extra,
    )


async def _start_hub(stack: Stack, poll_seconds: float) -> None:
    catalog = await stack.start(
        spawn(
            "catalog",
            [*SERVICE_PYTHON, "-m", "services.catalog"],
            env=_hub_env(stack, "catalog", poll_seconds),
            ready=_GRPC_ADDRESS,
            log_dir=stack.log_dir,
        )
    )
    stack.catalog_address = _match(catalog, _GRPC_ADDRESS)
    execution = await stack.start(
        spawn(
            "execution",
            [*SERVICE_PYTHON, "-m", "services.execution"],
            env=_hub_env(stack, "execution", poll_seconds, EXTHUB_CATALOG_ADDRESS=stack.catalog_address),
            ready=_OBJECTS_URL,
            log_dir=stack.log_dir,
        )
    )
    stack.execution_address = _match(execution, _GRPC_ADDRESS)
    stack.execution_metrics_url = f"{_match(execution, _HTTP_URL)}/metrics"
    stack.hub_jwks_url = f"{_match(execution, _OBJECTS_URL)}/v1/signingKeys"


async def _fetch_text(url: str) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(url) as response,
    ):
        response.raise_for_status()
        return await response.text()


async def _fetch_json(url: str) -> dict[str, Any]:
    document = json.loads(await _fetch_text(url))
    if not isinstance(document, dict):
        raise TypeError(f"{url} did not answer a JSON object")
    return document


async def _start_echo(stack: Stack) -> None:
    """One echo trusting a JWKS file with the hub's public keys and the benchmark's own key."""
    hub_jwks = await _fetch_json(stack.hub_jwks_url)
    ring = await asyncio.to_thread(SigningKeyRing.load_or_create, stack.key_dir, hub_id=celery_echo.KEY_RING_ID)
    jwks_file = stack.data_dir / "echo-jwks.json"
    document = {"keys": [*hub_jwks.get("keys", []), *ring.jwks()["keys"]]}
    await asyncio.to_thread(jwks_file.write_text, json.dumps(document), "utf-8")
    echo = await stack.start(
        spawn(
            "echo",
            [*SERVICE_PYTHON, "-m", "services.echo", "--port", str(stack.echo_port), "--jwks-file", str(jwks_file)],
            env=_clean_env(**stack.telemetry_env),
            ready=_ECHO_URL,
            log_dir=stack.log_dir,
        )
    )
    stack.echo_url = _match(echo, _ECHO_URL)


async def start_agent(stack: Stack, agent_id: str, *, slots: int, poll_seconds: float) -> Child:
    """``python -m services.agent`` with its queue worker, for the hub of ``stack``."""
    env = _hub_env(
        stack,
        "agent",
        poll_seconds,
        EXTHUB_EXECUTION_ADDRESS=stack.execution_address,
        EXTHUB_AGENT_ID=agent_id,
        EXTHUB_AGENT_WORKER="true",
        EXTHUB_AGENT_WORKER_SLOTS=str(slots),
        EXTHUB_AGENT_RECEIVE_WAIT_SECONDS="1",
    )
    return await stack.start(
        spawn(agent_id, [*SERVICE_PYTHON, "-m", "services.agent"], env=env, ready=_AGENT_READY, log_dir=stack.log_dir)
    )


async def start_celery_worker(stack: Stack, *, slots: int, number: int = 1) -> Child:
    """``python -m celery -A bench.celery_echo worker`` (threads pool, ``slots`` threads) on the stack's Redis; the
    ``number``-th worker process (each has its own node name)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.celery_echo",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(slots),
        "--prefetch-multiplier",
        "1",
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--hostname",
        f"bench-{os.getpid()}-{number}@%h",
    ]
    env = _clean_env(**{celery_echo.REDIS_URL_ENV: stack.redis_url, celery_echo.KEY_DIR_ENV: str(stack.key_dir)})
    return await stack.start(
        spawn(f"{CELERY_WORKER_PREFIX}{number}", argv, env=env, ready=_CELERY_READY, log_dir=stack.log_dir)
    )


# ---- the two sides -----------------------------------------------------------------------------------------------


def _celery_once(echo_url: str) -> Sample:
    """One Celery execution (blocking: runs in a client thread)."""
    sent = time.time()
    started = time.perf_counter()
    result = celery_echo.call_echo_task.apply_async(args=(echo_url,))
    try:
        value = result.get(timeout=EXECUTION_TIMEOUT_SECONDS, propagate=False)
    except Exception as error:  # celery's TimeoutError and the backend's connection errors
        return Sample((time.perf_counter() - started) * 1000, None, None, f"CLIENT_{type(error).__name__}")
    elapsed = (time.perf_counter() - started) * 1000
    if result.successful() and isinstance(value, dict):
        task_started, task_finished = float(value["started"]), float(value["finished"])
        return Sample(elapsed, (task_started - sent) * 1000, (task_finished - task_started) * 1000, "SUCCEEDED")
    return Sample(elapsed, None, None, str(result.state))


def _process_groups(stack: Stack) -> dict[str, list[int]]:
    """The pids of the running children, the agents in one group, the Celery workers in another."""
    groups: dict[str, list[int]] = {}
    for child in stack.children:
        group = (
            "agents"
            if child.name.startswith(AGENT_PREFIX)
            else CELERY_WORKERS
            if child.name.startswith(CELERY_WORKER_PREFIX)
            else child.name
        )
        groups.setdefault(group, []).append(child.process.pid)
    return groups


def celery_row_name(workers: int) -> str:
    """The name of the Celery + Redis row with ``workers`` worker processes (1: the baseline)."""
    return "Celery+Redis (baseline)" if workers == 1 else f"Celery+Redis {workers} workers"


async def measure_celery(
    stack: Stack, *, executions: int, concurrency: int, warmup: int, slots: int, workers: int = 1
) -> Row:
    """A Celery + Redis row: ``workers`` worker processes with ``slots`` threads each, ``concurrency`` client
    threads."""
    celery_echo.configure(stack.redis_url)
    started = [await start_celery_worker(stack, slots=slots, number=number) for number in range(1, workers + 1)]
    loop = asyncio.get_running_loop()
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="celery-client") as pool:

            async def one(_: int) -> Sample:
                return await loop.run_in_executor(pool, _celery_once, stack.echo_url)

            return await drive(
                celery_row_name(workers),
                one,
                executions=executions,
                concurrency=concurrency,
                warmup=warmup,
                processes=_process_groups(stack),
            )
    finally:
        for worker in started:
            await stack.stop_child(worker)


def _nanoseconds(timestamp: timestamp_pb2.Timestamp) -> int:
    return timestamp.seconds * 1_000_000_000 + timestamp.nanos


async def _exthub_once(stub: ExecutionServiceAsyncStub, metadata: tuple[tuple[str, str], ...]) -> Sample:
    """One Exthub execution: a create that waits until it has ended (``wait_timeout``; the hub answers before the
    call's deadline), then WaitExecution while the answer says it still runs."""
    started = time.perf_counter()
    request = execution_service_pb2.CreateExecutionRequest(
        execution=execution_pb2.Execution(extension_version=VERSION, profile="async", priority=types_pb2.NORMAL),
        wait_timeout=duration_pb2.Duration(seconds=int(CALL_TIMEOUT_SECONDS)),
    )
    outcome = "WAIT_ENDED"
    queue_to_start: float | None = None
    run_ms: float | None = None
    name = ""
    try:
        async with asyncio.timeout(EXECUTION_TIMEOUT_SECONDS):
            execution = await stub.CreateExecution(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
            name = execution.name
            while not is_terminal_state(execution.state):
                execution = await stub.WaitExecution(
                    execution_service_pb2.WaitExecutionRequest(name=name),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            outcome = execution_pb2.Execution.State.Name(execution.state)
            if execution.HasField("start_time"):
                start_ns = _nanoseconds(execution.start_time)
                queue_to_start = (start_ns - _nanoseconds(execution.create_time)) / 1e6
                run_ms = (_nanoseconds(execution.end_time) - start_ns) / 1e6
    except grpc.aio.AioRpcError as error:
        outcome = f"RPC_{error.code().name}"
    except TimeoutError:
        outcome = "CLIENT_TIMEOUT"
    return Sample((time.perf_counter() - started) * 1000, queue_to_start, run_ms, outcome, name)


async def measure_exthub(
    stack: Stack,
    name: str,
    *,
    executions: int,
    concurrency: int,
    warmup: int,
    token: str,
    profile_dir: Path | None = None,
    profile_native: bool = False,
) -> Row:
    """One Exthub row against the agents running now."""
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(stack.execution_address) as channel:
        stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)

        async def one(_: int) -> Sample:
            return await _exthub_once(stub, metadata)

        before = await execution_calls(stack)
        row = await drive(
            name,
            one,
            executions=executions,
            concurrency=concurrency,
            warmup=warmup,
            processes=_process_groups(stack),
            profile_dir=profile_dir,
            profile_native=profile_native,
        )
        after = await execution_calls(stack)
        row.calls = {m: (after[m] - before[m]) / (executions + warmup) for m in after if after[m] > before[m]}
        return row


async def execution_calls(stack: Stack) -> Counter[str]:
    """The gRPC calls the execution service has handled so far, by method (from its ``/metrics``)."""
    calls: Counter[str] = Counter()
    for method, value in _RPC_COUNT.findall(await _fetch_text(stack.execution_metrics_url)):
        calls[method] += round(float(value))
    return calls


async def check_stored_executions(stack: Stack, accepted: Sequence[str]) -> list[str]:
    """The invariant checker over the execution service's store (read while the hub runs): every violation,
    as text. Waits (bounded) for the outbox relay to settle what it is still relaying."""
    store = await SqliteDocumentStore.open(stack.data_dir / EXECUTION_DATABASE_FILE)
    try:
        repository = ExecutionRepository(store.collection(EXECUTION_COLLECTION))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + SETTLE_TIMEOUT_SECONDS
        while True:
            found = await check_invariants(repository, accepted=accepted, outbox_settled=True)
            if all(v.rule == "OUTBOX_LEFT" for v in found) and found and loop.time() < give_up:
                await asyncio.sleep(SETTLE_POLL_SECONDS)  # the relay is still relaying: look again
                continue
            return [str(violation) for violation in found]
    finally:
        await store.close()


async def register(stack: Stack) -> None:
    """Registers ``echo-plain`` (no inputs: async executions go straight to QUEUED) at the stack's echo."""
    token = await asyncio.to_thread(stack.token, [EXTENSIONS_PUBLISH], "publisher")
    async with grpc.aio.insecure_channel(stack.catalog_address) as channel:
        await register_echo(
            catalog_service_pb2_grpc.CatalogServiceStub(channel),
            echo_url=stack.echo_url,
            metadata=(("authorization", f"Bearer {token}"),),
            extension_id=EXTENSION_ID,
            with_objects=False,
        )


def cosmos_request_units(stack: Stack) -> tuple[float, int]:
    """Request units and requests the catalog and the execution service reported when they stopped."""
    units, requests = 0.0, 0
    for child in stack.children:
        if child.name not in ("catalog", "execution"):
            continue
        for line in child.log.read_text("utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == COSMOS_CHARGES_EVENT:
                    units += float(entry["request_units"])
                    requests += int(entry["requests"])
    return units, requests


async def measure_agents(
    stack: Stack,
    *,
    suffix: str,
    slots: int,
    poll_seconds: float,
    options: Mapping[str, int],
    profile_dir: Path | None = None,
    profile_native: bool = False,
) -> list[Row]:
    """The Exthub rows of one stack: 1 agent, then 2 agents (``profile_*``: py-spy sampling, see measure_exthub)."""
    token = await asyncio.to_thread(stack.token, [EXECUTIONS_RUN], "runner")
    rows: list[Row] = []
    for count in (1, 2):
        await start_agent(stack, f"{AGENT_PREFIX}{count}", slots=slots, poll_seconds=poll_seconds)
        name = (ONE_AGENT if count == 1 else TWO_AGENTS) + suffix
        rows.append(
            await measure_exthub(
                stack, name, token=token, profile_dir=profile_dir, profile_native=profile_native, **options
            )
        )
    return rows


async def run(
    redis_server: str,
    *,
    executions: int,
    concurrency: int,
    slots: int,
    poll_seconds: float,
    warmup: int,
    azure: bool = False,
    profile_dir: Path | None = None,
    profile_native: bool = False,
    celery_scaling: bool = False,
) -> None:
    """Starts everything, measures Celery, Exthub with 1 agent, then with 2 agents (and with ``azure`` the same two
    rows on the Azure adapters against the emulators, in the same run; with ``celery_scaling`` Celery with 2
    worker processes too, right after the baseline); prints the tables and the invariant checker's verdict over
    every execution the embedded hub stored."""
    options = {"executions": executions, "concurrency": concurrency, "warmup": warmup}
    cosmos: tuple[float, int, int] | None = None
    async with running_stack(redis_server, poll_seconds) as stack:
        await register(stack)
        baseline = await measure_celery(stack, slots=slots, **options)
        celery_rows = [await measure_celery(stack, slots=slots, workers=2, **options)] if celery_scaling else []
        rows = celery_rows + await measure_agents(
            stack,
            suffix="",
            slots=slots,
            poll_seconds=poll_seconds,
            options=options,
            profile_dir=profile_dir,
            profile_native=profile_native,
        )
        accepted = [sample.execution for row in rows for sample in row.samples if sample.execution]
        violations = await check_stored_executions(stack, accepted)
        if violations or any(set(row.outcomes) - {"SUCCEEDED"} for row in [baseline, *rows]):
            for child in stack.children:  # the logs go with the temporary directory: show them now
                console.print(f"--- end of the {child.name} log (stderr) ---\n{child.log_tail()}")
    if azure:
        async with running_stack(None, poll_seconds, azure=True) as stack:
            await register(stack)
            azure_rows = await measure_agents(
                stack, suffix=AZURE_SUFFIX, slots=slots, poll_seconds=poll_seconds, options=options
            )
            for child in reversed(stack.children):  # the services report their request units when they stop
                await stop(child)
            units, requests = cosmos_request_units(stack)
            cosmos = (units, requests, sum(len(row.samples) + warmup for row in azure_rows))
            if any(set(row.outcomes) - {"SUCCEEDED"} for row in azure_rows):
                for child in stack.children:
                    console.print(f"--- end of the {child.name} log (stderr) ---\n{child.log_tail()}")
        rows.extend(azure_rows)
    notes = (
        f"{executions} measured executions per row after {warmup} warm-up ones, {concurrency} in flight; "
        f"agent slots = Celery threads = {slots}; queue poll {poll_seconds}s (EXTHUB_QUEUE_POLL_SECONDS), "
        "agent receive wait 1 s. exec/s counts SUCCEEDED only; e2e = client create/apply_async → terminal "
        "state seen by the client; queue→start = Exthub create_time → start_time (first RUNNING), Celery "
        "client send → task start; run = Exthub start_time → end_time, Celery task body. Ratios: Exthub ÷ "
        "Celery (exec/s above 1 = faster; latency above 1 = slower)."
    )
    if cosmos is not None:
        units, requests, count = cosmos
        notes += (
            " · azure rows: the Azure adapters (Cosmos DB, Service Bus, Entra ID tokens) on the emulators of "
            "`exthub up --backend azure --emulators` (the Service Bus test broker, the Cosmos DB emulator); "
            f"Cosmos DB: {units / count:.1f} request units per execution ({units:,.0f} RU in {requests:,} "
            f"requests over {count} executions incl. warm-up, background polling included, as the catalog and "
            "execution service's store counted them). The emulator charges 1 RU per request: these are request "
            "counts; measure RU on a real account. The invariant checker reads the embedded hub's store only."
        )
    report(rows, baseline, notes=notes)
    report_targets(rows, baseline)
    if cosmos is not None:
        report_targets(rows, baseline, suffix=AZURE_SUFFIX)
    if violations:
        console.print(f"[red]invariant checker: {len(violations)} violation(s)[/red]")
        for line in violations[:20]:
            console.print(f"  {line}")
        raise SystemExit(1)
    console.print("invariant checker: no violation over every stored execution (outbox settled)")


async def run_tracing(
    *, executions: int, concurrency: int, slots: int, poll_seconds: float, warmup: int, rounds: int
) -> None:
    """Exthub with 1 agent, trace export off and on, each row on a fresh hub, ``rounds`` times alternately (off,
    on, off, on, …: a machine whose load drifts weighs on both alike); prints on ÷ off over the pooled rounds."""
    measured: dict[bool, list[Row]] = {False: [], True: []}
    spans = traces = 0
    for _ in range(rounds):
        for traced in (False, True):
            async with running_stack(None, poll_seconds, traced=traced) as stack:
                await register(stack)
                token = await asyncio.to_thread(stack.token, [EXECUTIONS_RUN], "runner")
                await start_agent(stack, f"{AGENT_PREFIX}1", slots=slots, poll_seconds=poll_seconds)
                name = "Exthub 1 agent, " + ("spans exported (OTLP/HTTP)" if traced else "tracing off (baseline)")
                row = await measure_exthub(
                    stack, name, token=token, executions=executions, concurrency=concurrency, warmup=warmup
                )
                measured[traced].append(row)
                if set(row.outcomes) - {"SUCCEEDED"}:
                    for child in stack.children:
                        console.print(f"--- end of the {child.name} log (stderr) ---\n{child.log_tail()}")
                if traced:
                    receiver = next(child for child in stack.children if child.name == RECEIVER)
                    for child in [c for c in reversed(stack.children) if c is not receiver]:
                        await stack.stop_child(child)  # each part exports what it still holds as it stops
                    await stack.stop_child(receiver)
                    counts = [m for line in receiver.lines if (m := _RECEIVED.search(line))]
                    if counts:
                        spans, traces = spans + int(counts[-1].group(1)), traces + int(counts[-1].group(2))
    off, on = _pooled(measured[False]), _pooled(measured[True])
    report(
        [on],
        off,
        notes=(
            f"Tracing overhead: {rounds} round(s) of off then on, each row {executions} measured executions after "
            f"{warmup} warm-up ones on a fresh hub, {concurrency} in flight, 1 agent with {slots} slots; rows pool "
            f"the rounds. The exporting hubs' receivers got {spans} spans in {traces} traces (warm-up included). "
            "Ratios: on ÷ off (exec/s below 1 = slower; latency above 1 = slower). The receiver's CPU is in its "
            "own column; CPU includes idle polling, so it follows the wall time on a loaded machine."
        ),
    )
    console.print(
        f"tracing overhead (on ÷ off): exec/s {_ratio(on.executions_per_second, off.executions_per_second)}, "
        f"e2e median {_ratio(median(on.end_to_end()), median(off.end_to_end()))}, "
        f"e2e p99 {_ratio(p99(on.end_to_end()), p99(off.end_to_end()))}, "
        f"CPU per execution (hub, echo and agent; receiver and client excluded) "
        f"{_ratio(_hub_cpu(on), _hub_cpu(off))}"
    )


def _pooled(rows: Sequence[Row]) -> Row:
    """One row of several measured alike: samples and time added, CPU per execution averaged by executions."""
    samples = [sample for row in rows for sample in row.samples]
    groups = {group for row in rows for group in row.cpu_ms}
    cpu_ms = {
        group: sum(row.cpu_ms.get(group, 0.0) * len(row.samples) for row in rows) / max(1, len(samples))
        for group in groups
    }
    outcomes: Counter[str] = Counter()
    for row in rows:
        outcomes.update(row.outcomes)
    return Row(rows[0].name, samples, sum(row.seconds for row in rows), outcomes, cpu_ms)


def _hub_cpu(row: Row) -> float:
    return sum(ms for group, ms in row.cpu_ms.items() if group not in (CLIENT, RECEIVER))


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.async_execution")
    parser.add_argument("--executions", type=int, default=1000, help="measured executions per row")
    parser.add_argument("--concurrency", type=int, default=16, help="executions in flight")
    parser.add_argument("--slots", type=int, default=16, help="agent slots = Celery worker threads")
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=0.1,
        help="EXTHUB_QUEUE_POLL_SECONDS (the product's default; receivers are woken by publishes, the poll is a "
        "fallback)",
    )
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured executions before each row")
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample every process with py-spy during the measured Exthub rows (collapsed stacks into DIR)",
    )
    parser.add_argument("--py-spy-native", action="store_true", help="with --py-spy: native frames too (slower)")
    parser.add_argument(
        "--profile",
        choices=("embedded", "azure"),
        default="embedded",
        help="azure: also run the Exthub rows on the Azure adapters against the local emulators (same run)",
    )
    parser.add_argument(
        "--tracing", action="store_true", help="measure trace export on vs off (1 agent) instead of the Celery rows"
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --tracing: off/on rounds, alternated")
    parser.add_argument(
        "--celery-scaling",
        action="store_true",
        help="also measure Celery with 2 worker processes (each with --slots threads) right after the baseline, "
        "and print its 2 workers ÷ 1 worker beside Exthub's 2 agents ÷ 1 agent",
    )
    args = parser.parse_args()
    for option in ("executions", "concurrency", "slots"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be 1 or more")
    if args.warmup < 0 or args.poll_seconds <= 0:
        parser.error("--warmup must be 0 or more and --poll-seconds positive")
    if args.tracing:
        console.print(f"tracing overhead: {args.executions} asynchronous executions per row, export off then on")
        asyncio.run(
            run_tracing(
                executions=args.executions,
                concurrency=args.concurrency,
                slots=args.slots,
                poll_seconds=args.poll_seconds,
                warmup=args.warmup,
                rounds=max(1, args.rounds),
            )
        )
        return
    redis_server = redis_server_binary()
    console.print(
        f"running {args.executions} asynchronous executions per row, {args.concurrency} in flight, {args.slots} slots"
    )
    asyncio.run(
        run(
            redis_server,
            executions=args.executions,
            concurrency=args.concurrency,
            slots=args.slots,
            poll_seconds=args.poll_seconds,
            warmup=args.warmup,
            azure=args.profile == "azure",
            profile_dir=args.py_spy,
            profile_native=args.py_spy_native,
            celery_scaling=args.celery_scaling,
        )
    )


if __name__ == "__main__":
    main()
