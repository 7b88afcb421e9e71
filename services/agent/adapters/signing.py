"""Where the ``Exthub-Signature`` of an extension request comes from.

The hub's private signing key never leaves the execution service. The agent builds the exact request body
(deterministic JSON, with the extension service contexts) and asks a :class:`BodySigner` to sign those bytes:

- in production, :class:`services.agent.execution_client.ExecutionServiceSigner` calls
  ``AgentTaskService.SignExtensionRequest`` (role Agent), which checks that the attempt is current and RUNNING
  and that the body names that execution and attempt;
- :class:`KeyRingBodySigner` signs with a key ring held in this process (tests, an all-in-one embedding).

When the task carries the request signed ahead by the execution service (``ExecutionTask.signed_request``)
and the agent's own body is byte for byte that one, its signature is used and the signer is not asked.

Unsigned requests are sent only when explicitly configured (``sign=False``, for tests against extensions
that do not verify). With neither a signer nor ``sign=False`` the attempt fails with ``REQUEST_NOT_SIGNED``:
the agent never sends an unsigned request by accident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "BodySigner",
    "KeyRingBodySigner",
    "PreparedRequest",
    "SigningRefused",
    "SupportsSignExtensionRequest",
    "audience_of",
]


class SigningRefused(Exception):
    """The signer refused for a reason a retry of the same attempt cannot fix (stale attempt, execution no
    longer RUNNING, malformed body). Any other exception from a signer counts as transient."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class BodySigner(Protocol):
    """Signs the exact bytes of the request body of one attempt."""

    async def sign(self, execution: str, attempt: int, body: bytes) -> str:
        """The ``Exthub-Signature`` value (a JWS with detached payload over exactly ``body``) for the attempt
        ``attempt`` of ``execution`` (``executions/{id}``). Raises :class:`SigningRefused` for a permanent
        refusal."""
        ...


class SupportsSignExtensionRequest(Protocol):
    """Anything with ``sign_extension_request`` (``services.execution.signing.SigningKeyRing``)."""

    def sign_extension_request(self, body: bytes, *, audience: str, execution: str, attempt: int, now: datetime) -> str:
        """A detached JWS over exactly ``body`` bound to the audience, the attempt and a short lifetime."""
        ...


def audience_of(body: bytes) -> str:
    """The audience of a request body's signature: its extension, ``extensions/{extensionId}``."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    extension = document.get("extensionId") if isinstance(document, dict) else None
    if not isinstance(extension, str) or not extension:
        raise SigningRefused("the request body names no extension", reason="INVALID_BODY")
    return f"extensions/{extension}"


class KeyRingBodySigner:
    """A :class:`BodySigner` over a key ring held in this process (ES256 signing takes microseconds)."""

    def __init__(self, ring: SupportsSignExtensionRequest) -> None:
        self._ring = ring

    async def sign(self, execution: str, attempt: int, body: bytes) -> str:
        return self._ring.sign_extension_request(
            body, audience=audience_of(body), execution=execution, attempt=attempt, now=datetime.now(UTC)
        )


@dataclass(frozen=True)
class PreparedRequest:
    """The bytes to POST and the signature header value (None: send unsigned)."""

    body: bytes
    signature: str | None
