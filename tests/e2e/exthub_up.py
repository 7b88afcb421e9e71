"""`exthub up` as a user runs it: a real subprocess on an OS-chosen port, stopped with SIGTERM by its pid."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

EXTHUB = [sys.executable, "-m", "exthub.cli"]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def children(pid: int) -> list[int]:
    """The direct child processes of ``pid``."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def command_lines(pids: list[int]) -> set[str]:
    """The command lines of ``pids``, arguments joined by spaces."""
    return {Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in pids}


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


class RunningHub:
    """A running ``exthub up --port PORT [args]`` (0: chosen by the OS) and the gateway URL it printed; its progress
    output goes to a file (``log``); ``env`` adds variables every part inherits (``EXTHUB_*`` settings, ``OTEL_*``)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        log: Path | None = None,
        args: Sequence[str] = (),
        start_timeout: float = START_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.log = log or data_dir.parent / f"{data_dir.name}-exthub-up.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._start_timeout = start_timeout
        with self.log.open("ab") as err:
            self.process = subprocess.Popen(
                [*EXTHUB, "up", "--data-dir", str(data_dir), "--port", str(port), *args],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={**os.environ, **(env or {})},
            )
        self.url = self._read_url()
        self.address = self.url.removeprefix("http://")

    def _read_url(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + self._start_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if not ready:
                break
            line = self.process.stdout.readline().strip()
            if line.startswith("http://127.0.0.1:"):
                return line
            if not line and self.process.poll() is not None:
                break
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)
        raise AssertionError(f"exthub up printed no gateway URL; its output:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        """SIGTERM, then the exit code (bounded)."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT)


#: What each part's command line contains (to find its pid among ``exthub up``'s children).
PARTS = {
    "catalog": "services.catalog",
    "agent": "services.agent",
    "echo": "services.echo",
    "execution": "services.execution",
    "gateway": "envoy",
}
RECOVERY_TIMEOUT = 60.0


def part_pid(hub: RunningHub, part: str) -> int | None:
    """The pid of a running part of ``hub`` (None while it is down)."""
    for pid in children(hub.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        except FileNotFoundError:
            continue
        if PARTS[part] in command and alive(pid):
            return pid
    return None


def poll_interval(hub: RunningHub) -> None:
    """Between two looks at a condition: up to 0.2 s, cut short (and failing) if `exthub up` exits."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        hub.process.wait(timeout=0.2)
    assert hub.process.poll() is None, f"exthub up exited:\n{hub.log.read_text()[-3000:]}"


def wait_new_pid(hub: RunningHub, part: str, old: int) -> int:
    """The pid of ``part`` once the supervisor has restarted it (``old`` was killed)."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while time.monotonic() < deadline:
        pid = part_pid(hub, part)
        if pid is not None and pid != old:
            return pid
        poll_interval(hub)
    raise AssertionError(f"{part} was not restarted:\n{hub.log.read_text()[-3000:]}")


def dev_token(data_dir: Path, *roles: str, timeout: float = 30) -> str:
    """``exthub token --roles …`` for the hub of ``data_dir`` (which knows whether it runs the emulator profile)."""
    result = subprocess.run(
        [*EXTHUB, "token", "--data-dir", str(data_dir), "--roles", ",".join(roles)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return result.stdout.strip()
