"""What this host says about its processes: the host's identity, a process's start time, whether it still runs.

Used to tell a crashed execution service process from a live one without waiting for its lease (see
:mod:`services.execution.domain.instances`). Linux reads ``/proc``; elsewhere the start time is unknown ("")
and only the pid is checked.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["host_identity", "process_running", "process_start_token"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def host_identity() -> str:
    """This host: its name (a pod's name on Kubernetes) and the kernel's boot id (a reboot is another host)."""
    try:
        boot = _BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}" if boot else socket.gethostname()


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def process_start_token(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot, from ``/proc``), or "" where that is unknown."""
    fields = _stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else ""


def process_running(pid: int, start_token: str) -> bool:
    """Whether the process ``pid`` that started at ``start_token`` still runs here (not exited, not a zombie,
    not another process that got the same pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    fields = _stat_fields(pid)
    if fields is None:
        return not Path("/proc/self/stat").exists()  # no /proc at all: the pid check is all there is
    if fields[0] in ("Z", "X"):
        return False
    return not start_token or process_start_token(pid) == start_token
