"""Which execution service process owns a synchronous call, and when that process is gone (pure rules).

A synchronous execution is RUNNING while the execution service that created it (or continued it) waits for the
agent's answer. That wait lives only in the memory of one process; if the process dies, nothing would ever record
the outcome and the execution would wait for its execution timeout (an hour by default). So:

* every execution service process is an *instance* with a fresh random id, registered in the store with a
  :class:`InstanceLease`: where it runs (``host``: the machine or pod, ``pid`` and the process's start time) and
  until when it is known alive (``lease_until``, renewed every :data:`RENEW_FRACTION` of :data:`INSTANCE_LEASE`);
* a synchronous execution records the instance waiting for its call (``Execution.sync_call_owner``) with the
  write that makes it RUNNING; the terminal write clears it, and so does the write that follows an extension's
  202 (from then on the extension reports by itself: the call is no longer in flight anywhere);
* a RUNNING execution whose call owner is *gone* (:func:`instance_gone`) is ended FAILED with
  :data:`EXECUTION_INTERRUPTED`, through the state machine and a conditional write that re-checks the owner.

An instance is gone when it has no lease document (never registered, or removed after its executions were
recovered), when its lease has expired (the process stopped renewing: crashed, partitioned, scaled away, or
ended cleanly, which expires its own lease), or — without waiting for the lease — when it ran on this same host
and its process no longer exists (a process restarted in place: ``exthub up``'s supervisor, a container restarted
in its pod). The process check compares the process start time too, so a reused pid is not mistaken for the old
process. Clocks of the replicas must agree within a third of the lease (renewals happen that often).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from services.platform.timefmt import from_storage, to_storage

__all__ = [
    "EXECUTION_INTERRUPTED",
    "INSTANCE_LEASE",
    "INTERRUPTED_MESSAGE",
    "RENEW_FRACTION",
    "InstanceLease",
    "ProcessProbe",
    "instance_gone",
    "renewed",
]

#: ``ErrorInfo.reason`` of a synchronous execution whose call was lost with the process waiting for it.
EXECUTION_INTERRUPTED = "EXECUTION_INTERRUPTED"
INTERRUPTED_MESSAGE = "the execution service restarted during this synchronous call"
#: How long an instance counts as alive after its last renewal.
INSTANCE_LEASE = timedelta(seconds=30)
#: Renewals happen every ``INSTANCE_LEASE * RENEW_FRACTION``.
RENEW_FRACTION = 1 / 3

#: ``probe(pid, start_token) -> bool``: whether that process still runs on this host.
ProcessProbe = Callable[[int, str], bool]


@dataclass(frozen=True, slots=True)
class InstanceLease:
    """One execution service process as registered in the store (see the module docstring)."""

    instance: str
    host: str
    pid: int
    process_start: str
    started: str
    lease_until: str
    revision: str = ""


def renewed(lease: InstanceLease, *, now: str, duration: timedelta = INSTANCE_LEASE) -> InstanceLease:
    """The lease extended to ``now + duration``."""
    return InstanceLease(
        lease.instance,
        lease.host,
        lease.pid,
        lease.process_start,
        lease.started,
        to_storage(from_storage(now) + duration),
        lease.revision,
    )


def instance_gone(lease: InstanceLease | None, *, now: str, host: str, process_running: ProcessProbe) -> bool:
    """Whether the instance of ``lease`` can no longer be waiting for any call (see the module docstring).

    ``host`` identifies the machine this check runs on; ``process_running`` looks at its processes.
    """
    if lease is None or lease.lease_until <= now:
        return True
    return lease.host == host and not process_running(lease.pid, lease.process_start)
