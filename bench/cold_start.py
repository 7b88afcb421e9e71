"""Cold start of ``exthub up`` to ready, and the memory of each of its processes.

``python -m bench.cold_start [--runs N]`` starts the hub N times on a fresh data directory (first start:
keys, SQLite files, echo registration) and N times on a used one (restart), timing the moment the gateway URL
line appears; as a baseline it starts one bare service (``python -m services.catalog``) to its ready line in
the same run. Then it reads VmRSS of every process of the last running hub from ``/proc``. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

from bench.harness import console, start_service, stop_service

EXTHUB = [sys.executable, "-m", "exthub.cli"]
READY_TIMEOUT_SECONDS = 60.0
_URL = re.compile(r"^http://127\.0\.0\.1:\d+$")


def _start_hub(data_dir: Path) -> tuple[subprocess.Popen[str], float]:
    began = time.perf_counter()
    process = subprocess.Popen(
        [*EXTHUB, "up", "--data-dir", str(data_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if _URL.match(line.strip()):
            return process, time.perf_counter() - began
    process.kill()
    raise RuntimeError("exthub up did not print its URL in time")


def _stop_hub(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _label(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    if "-m" in argv:
        return argv[argv.index("-m") + 1]
    return Path(argv[0]).name


def _baseline(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            process, _ = start_service(
                "services.catalog",
                {"EXTHUB_DATA_DIR": tmp, "EXTHUB_CATALOG_PORT": "0", "EXTHUB_LOG_FORMAT": "json"},
                re.compile(r"catalog serving on (\S+)"),
            )
            times.append(time.perf_counter() - began)
            stop_service(process)
    return times


def main() -> None:
    """Runs the measurement and prints the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="starts per scenario (default 5)")
    args = parser.parse_args()
    baseline = _baseline(args.runs)
    first: list[float] = []
    again: list[float] = []
    memory: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            data_dir = Path(tmp) / f"fresh-{run}"
            process, seconds = _start_hub(data_dir)
            first.append(seconds)
            _stop_hub(process)
            process, seconds = _start_hub(data_dir)
            again.append(seconds)
            if run == args.runs - 1:
                memory = [("exthub up", _rss_mib(process.pid))]
                memory += [(_label(pid), _rss_mib(pid)) for pid in _children(process.pid)]
            _stop_hub(process)

    table = Table(title=f"exthub up: start to gateway URL ({args.runs} runs each, {os.cpu_count()} CPUs)")
    for column in ("scenario", "median s", "min s", "max s", "median / baseline"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    base = statistics.median(baseline)
    for name, values in (
        ("baseline: one bare service (catalog) to ready", baseline),
        ("exthub up, fresh data dir", first),
        ("exthub up, restart on the same data dir", again),
    ):
        median = statistics.median(values)
        table.add_row(name, f"{median:.2f}", f"{min(values):.2f}", f"{max(values):.2f}", f"{median / base:.1f}")
    console.print(table)
    rss = Table(title="memory of a running hub (VmRSS)")
    rss.add_column("process")
    rss.add_column("MiB", justify="right")
    for name, mib in memory:
        rss.add_row(name, f"{mib:.1f}")
    rss.add_row("total", f"{sum(m for _, m in memory):.1f}")
    console.print(rss)


if __name__ == "__main__":
    main()
