"""Start and stop one local stand-in as a child process (development and tests only).

The child writes to a log file (never to a pipe nobody drains), runs in its own session, and is stopped by
its own pid: SIGTERM, then SIGKILL after a grace period. Readiness is a line in the log, waited for with a
deadline; an early exit or a timeout raises :class:`EmulatorStartError` with the end of the log.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
_POLL_SECONDS = 0.05


class EmulatorStartError(RuntimeError):
    """A stand-in did not come up; the message ends with the last lines of its log."""


@dataclass
class ChildProcess:
    """A started stand-in: its process and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_seconds: float = 10.0) -> int | None:
        """SIGTERM by pid, SIGKILL after ``grace_seconds``; returns the exit code (idempotent)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGCONT)  # a paused child cannot handle SIGTERM
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(grace_seconds)
        return self.popen.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_bytes().replace(b"\0", b"").decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float, *, offset: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the log after byte ``offset``, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError):
                text = self.log_path.read_bytes()[offset:].replace(b"\0", b"").decode("utf-8", "replace")
                match = pattern.search(text)
                if match:
                    return match
            if self.popen.poll() is not None:
                raise EmulatorStartError(
                    f"{self.name} exited with {self.popen.returncode} before it was ready:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self.stop(2.0)
                raise EmulatorStartError(f"{self.name} was not ready within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(_POLL_SECONDS)


def spawn(name: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None) -> ChildProcess:
    """Start ``argv`` in its own session from the repository root, appending its output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPOSITORY,
            env=dict(os.environ if env is None else env),
            start_new_session=True,
        )
    return ChildProcess(name, popen, log_path)
