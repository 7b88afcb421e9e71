"""Where the ``Exthub-Signature`` of an extension request comes from.

The hub's private signing key never leaves the execution service. The agent builds the exact request body
(deterministic JSON, with the extension service contexts) and asks a :class:`BodySigner` to sign those bytes:

- in production, :class:`services.agent.execution_client.ExecutionServiceSigner` calls
  ``AgentTaskService.SignExtensionRequest`` (role Agent), which checks that the attempt is current and RUNNING
  and that the body names that execution and attempt;
- :class:`KeyRingBodySigner` signs with a key ring held in this process (tests, an all-in-one embedding).

Unsigned requests are sent only when explicitly configured (``sign=False``, for tests against extensions
that do not verify). With neither a signer nor ``sign=False`` the attempt fails with ``REQUEST_NOT_SIGNED``:
the agent never sends an unsigned request by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["BodySigner", "KeyRingBodySigner", "PreparedRequest", "SigningRefused", "SupportsSignBody"]


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


class SupportsSignBody(Protocol):
    """Anything with ``sign_body`` (``services.execution.signing.SigningKeyRing``)."""

    def sign_body(self, body: bytes) -> str:
        """A detached JWS over exactly ``body``."""
        ...


class KeyRingBodySigner:
    """A :class:`BodySigner` over a key ring held in this process (ES256 signing takes microseconds)."""

    def __init__(self, ring: SupportsSignBody) -> None:
        self._ring = ring

    async def sign(self, execution: str, attempt: int, body: bytes) -> str:
        return self._ring.sign_body(body)


@dataclass(frozen=True)
class PreparedRequest:
    """The bytes to POST and the signature header value (None: send unsigned)."""

    body: bytes
    signature: str | None
