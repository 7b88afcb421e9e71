"""Cold start of ``exthub up`` to ready, and the memory of each of its processes.

``python -m bench.cold_start [--runs N]`` starts the hub N times on a fresh data directory (first start:
keys, SQLite files, echo registration) and N times on a used one (restart), timing the moment the gateway URL
line appears; as a baseline it starts one bare service (``python -m services.catalog``) to its ready line in
the same run. Then it reads the memory of every process of the last running hub from ``/proc`` while it idles
right after start: RSS (what the target is about), the private part (pages no other process shares) and PSS
(shared pages split between the processes mapping them), next to a bare interpreter measured in the same run,
and whether each Python service meets the idle RSS target. Loopback only.

The hub's Python sources (and, for the services' ``-OO``, the installed packages) are byte-compiled first
(into their ``__pycache__``, as ``python -m compileall``), as the setup and the image do: a process that finds
no ``.pyc`` (``PYTHONDONTWRITEBYTECODE`` set, a fresh checkout) compiles every module it imports at each start,
which costs start time and about 1.3 MiB RSS per service that the deployed services never pay. ``--no-compile``
measures without that step.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from bench.harness import console, start_service, stop_service

EXTHUB = [sys.executable, "-m", "exthub.cli"]
READY_TIMEOUT_SECONDS = 60.0
#: Idle RSS target of each Python service of the hub.
RSS_TARGET_MIB = 80.0
PYTHON_SERVICES = ("services.catalog", "services.execution", "services.agent")
_URL = re.compile(r"^http://127\.0\.0\.1:\d+$")
_ROOT = Path(__file__).resolve().parents[1]
#: What the hub's processes import from the checkout (the image byte-compiles services/ and gen/python/).
SOURCE_DIRS = ("services", "exthub", "gateway", "tools", "gen/python")


def _byte_compile() -> bool:
    """Byte-compiles the hub's sources for the CLI (``.pyc``) and for the services, which run with ``-OO``
    (``INTERPRETER_OPTIONS``: ``.opt-2.pyc``), and the installed packages for the services, as the setup and the
    image do (only what changed since the last run); True if all compiled."""
    sources = all(
        compileall.compile_dir(_ROOT / name, quiet=1, optimize=level) for name in SOURCE_DIRS for level in (0, 2)
    )
    packages = compileall.compile_dir(sysconfig.get_paths()["purelib"], quiet=1, optimize=2, workers=0)
    return sources and bool(packages)


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


@dataclass(frozen=True)
class Memory:
    """One process's memory in MiB: resident, private (not shared with any process) and proportional."""

    rss: float
    private: float
    pss: float


def _memory(pid: int) -> Memory:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return Memory(fields.get("Rss", 0) / 1024, private / 1024, fields.get("Pss", 0) / 1024)


def _bare_interpreter() -> Memory:
    """A Python interpreter of the same venv that imported nothing (reads stdin until closed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    process.stdout.readline()
    memory = _memory(process.pid)
    process.stdin.close()
    process.wait(timeout=30)
    return memory


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
    parser.add_argument(
        "--no-compile", action="store_true", help="do not byte-compile the sources first (each start compiles them)"
    )
    args = parser.parse_args()
    if not args.no_compile and not _byte_compile():
        raise SystemExit("byte-compiling the sources failed")
    baseline = _baseline(args.runs)
    first: list[float] = []
    again: list[float] = []
    memory: list[tuple[str, Memory]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            data_dir = Path(tmp) / f"fresh-{run}"
            process, seconds = _start_hub(data_dir)
            first.append(seconds)
            _stop_hub(process)
            process, seconds = _start_hub(data_dir)
            again.append(seconds)
            if run == args.runs - 1:
                memory = [("exthub up", _memory(process.pid))]
                memory += [(_label(pid), _memory(pid)) for pid in _children(process.pid)]
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
    bare = _bare_interpreter()
    bytecode = "sources compiled at each start" if args.no_compile else "sources byte-compiled first, as in the image"
    rss = Table(title=f"memory of a running hub, idle right after start (MiB; {bytecode})")
    for column in ("process", "RSS", "private", "PSS"):
        rss.add_column(column, justify="left" if column == "process" else "right")
    rss.add_row("baseline: bare python interpreter", f"{bare.rss:.1f}", f"{bare.private:.1f}", f"{bare.pss:.1f}")
    for name, mib in memory:
        rss.add_row(name, f"{mib.rss:.1f}", f"{mib.private:.1f}", f"{mib.pss:.1f}")
    rss.add_row(
        "total",
        f"{sum(m.rss for _, m in memory):.1f}",
        f"{sum(m.private for _, m in memory):.1f}",
        f"{sum(m.pss for _, m in memory):.1f}",
    )
    services = [m.rss for name, m in memory if name in PYTHON_SERVICES]
    worst = max(services, default=float("nan"))
    met = "yes" if len(services) == len(PYTHON_SERVICES) and worst <= RSS_TARGET_MIB else "no"
    rss.add_row(f"target: each Python service RSS <= {RSS_TARGET_MIB:.0f} MiB (largest {worst:.1f})", f"met: {met}")
    console.print(rss)


if __name__ == "__main__":
    main()
