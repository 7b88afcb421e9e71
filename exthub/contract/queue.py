"""The work-queue message of one asynchronous attempt, as the execution service sends it and agents read it.

The body is ``{"execution": "executions/<id>", "attempt": n}`` (compact JSON) and nothing else; the message
id ``<id>:<attempt>`` lets the queue drop duplicates; the routing properties (``model``, ``profile``,
``priority``, ``tenant``) let agents and operators filter. Never a secret: the status-update key of the
attempt travels only in the ``ClaimExecution`` answer.
"""

from __future__ import annotations

import json

__all__ = [
    "MODEL_PROPERTY",
    "PRIORITY_PROPERTY",
    "PROFILE_PROPERTY",
    "TENANT_PROPERTY",
    "message_body",
    "message_id",
    "parse_message",
    "routing_properties",
]

MODEL_PROPERTY = "model"
PROFILE_PROPERTY = "profile"
PRIORITY_PROPERTY = "priority"
TENANT_PROPERTY = "tenant"


def message_id(execution_id: str, attempt: int) -> str:
    """The queue message id of one attempt (the queue deduplicates on it)."""
    return f"{execution_id}:{attempt}"


def message_body(execution_name: str, attempt: int) -> bytes:
    """The message body: the execution's name and the attempt, nothing else."""
    return json.dumps({"execution": execution_name, "attempt": attempt}, separators=(",", ":")).encode()


def parse_message(body: bytes) -> tuple[str, int]:
    """``(execution name, attempt)`` of a message body; ``ValueError`` when it is not one of ours."""
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError("the message body is not a JSON object")  # noqa: TRY004 - one error type for callers
    name, attempt = document.get("execution"), document.get("attempt")
    if not isinstance(name, str) or not name.startswith("executions/"):
        raise ValueError("the message names no execution")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError("the message has no valid attempt")
    return name, attempt


def routing_properties(*, model: str, profile: str, priority: str, tenant: str) -> dict[str, str]:
    """The routing properties of an attempt's message."""
    return {MODEL_PROPERTY: model, PROFILE_PROPERTY: profile, PRIORITY_PROPERTY: priority, TENANT_PROPERTY: tenant}
