"""Small, bounded load generator and report table shared by the benchmarks (loopback only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

from services.platform.entrypoint import INTERPRETER_OPTIONS

#: How a benchmark starts a service process: as ``exthub up`` and the image do.
SERVICE_PYTHON = (sys.executable, *INTERPRETER_OPTIONS)

console = Console()


def free_port() -> int:
    """A loopback port the OS has just handed out (for a process that must be told its port before it starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def p99(values: Sequence[float]) -> float:
    """The 99th percentile (nearest rank), NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@dataclass
class Result:
    """Latencies (ms) of one measured call and how long the whole run took."""

    name: str
    latencies_ms: list[float]
    seconds: float
    codes: Counter[str] = field(default_factory=Counter)

    @property
    def median(self) -> float:
        """Median latency in ms."""
        return median(self.latencies_ms)

    @property
    def p99(self) -> float:
        """99th percentile latency in ms."""
        return p99(self.latencies_ms)

    @property
    def throughput(self) -> float:
        """Completed calls per second."""
        return len(self.latencies_ms) / self.seconds


async def measure(
    name: str, call: Callable[[int], Awaitable[object]], *, requests: int, concurrency: int, warmup: int = 200
) -> Result:
    """Runs ``requests`` calls with ``concurrency`` in flight (after a warm-up), counting status codes."""
    for index in range(warmup):
        await call(index)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    counter = iter(range(requests))

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            try:
                await call(index)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, latencies, time.perf_counter() - started, codes)


def report(title: str, results: list[Result], baseline: Result, notes: str = "") -> None:
    """Prints medians, p99s, throughput and ratios against the baseline measured in the same run."""
    table = Table(title=title)
    for column in (
        "call",
        "requests",
        "median ms",
        "p99 ms",
        "req/s",
        "median / baseline",
        "req/s / baseline",
        "codes",
    ):
        table.add_column(column, justify="right" if column != "call" else "left")
    for result in [baseline, *results]:
        table.add_row(
            result.name,
            str(len(result.latencies_ms)),
            f"{result.median:.3f}",
            f"{result.p99:.3f}",
            f"{result.throughput:,.0f}",
            f"{result.median / baseline.median:.2f}",
            f"{result.throughput / baseline.throughput:.2f}",
            ", ".join(f"{k}={v}" for k, v in sorted(result.codes.items())),
        )
    console.print(table)
    if notes:
        console.print(notes)


def start_service(
    module: str, env: Mapping[str, str], ready: re.Pattern[str], timeout: float = 30
) -> tuple[subprocess.Popen[str], re.Match[str]]:
    """Starts ``python -m module`` and waits (bounded) for the line matching ``ready`` on stdout."""
    process = subprocess.Popen(
        [*SERVICE_PYTHON, "-m", module],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = ready.search(line)
        if match:
            return process, match
    process.kill()
    raise RuntimeError(f"{module} did not become ready within {timeout}s")


def stop_service(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if it does not exit within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


PY_SPY_RATE = 250
PY_SPY_STOP_SECONDS = 30.0


@contextlib.asynccontextmanager
async def py_spy(
    processes: Mapping[str, Sequence[int]], out_dir: Path | None, label: str, *, native: bool = False
) -> AsyncIterator[None]:
    """Samples every process of ``processes`` with ``py-spy record`` (collapsed stacks) while the block runs,
    into ``out_dir/<label>-<group>-<pid>.txt``; does nothing when ``out_dir`` is None. Without ``native`` the
    processes are sampled without being paused; with it (C frames too, e.g. inside grpc) each sample pauses
    them, which slows them down."""
    if out_dir is None:
        yield
        return
    binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if binary is None:
        raise RuntimeError("py-spy is not installed (it is in the dev dependencies)")
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()
    recorders: list[asyncio.subprocess.Process] = []
    for group, pids in processes.items():
        for pid in pids:
            output = out_dir / f"{slug}-{re.sub(r'[^A-Za-z0-9]+', '-', group)}-{pid}.txt"
            argv = ["record", "--pid", str(pid), "--format", "raw", "--rate", str(PY_SPY_RATE), "--output", str(output)]
            argv.append("--native" if native else "--nonblocking")
            recorders.append(
                await asyncio.create_subprocess_exec(
                    binary,
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
    try:
        yield
    finally:
        for recorder in recorders:  # SIGINT: py-spy writes what it sampled and exits
            with contextlib.suppress(ProcessLookupError):
                recorder.send_signal(signal.SIGINT)
        for recorder in recorders:
            try:
                async with asyncio.timeout(PY_SPY_STOP_SECONDS):
                    _, errors = await recorder.communicate()
                if recorder.returncode:
                    console.print(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    recorder.kill()
                await recorder.wait()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (``/proc``; None where unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("ascii")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; field 3 (state) is index 0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


CLIENT = "client (this process)"


def cpu_snapshot(processes: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """CPU seconds so far per group of processes, plus this process (the load generator)."""
    snapshot = {CLIENT: time.process_time()}
    for group, pids in processes.items():
        seconds = [process_cpu_seconds(pid) for pid in pids]
        if all(value is not None for value in seconds):
            snapshot[group] = sum(value for value in seconds if value is not None)
    return snapshot
