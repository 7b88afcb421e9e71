"""The work queue port and its adapters (leased SQLite queue now, Azure Service Bus later)."""

from services.platform.workqueue.port import (
    DeadLetter,
    LeasedMessage,
    LeaseLost,
    Priority,
    WorkMessage,
    WorkQueue,
)

__all__ = ["DeadLetter", "LeaseLost", "LeasedMessage", "Priority", "WorkMessage", "WorkQueue"]
