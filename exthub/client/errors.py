"""Errors the client raises, and a readable form of a failed RPC's ``google.rpc.Status``."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from exthub.contract.errors import call_status, error_info, field_violations

__all__ = ["ExecutionWaitTimeout", "ObjectTransferError", "RpcErrorDetails", "rpc_error_details"]


@dataclass(frozen=True)
class RpcErrorDetails:
    """The canonical code, message, ``ErrorInfo`` and ``BadRequest`` field violations of a failed call."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[tuple[str, str]] = field(default_factory=list)

    def one_line(self) -> str:
        """``CODE: message [REASON] (field: why; …)`` for people and logs."""
        text = f"{self.code.name}: {self.message or 'no message'}"
        if self.reason:
            text += f" [{self.reason}]"
        if self.field_violations:
            text += " (" + "; ".join(f"{f}: {d}" for f, d in self.field_violations) + ")"
        return text


def rpc_error_details(error: grpc.aio.AioRpcError) -> RpcErrorDetails:
    """Parse the rich status (``grpc-status-details-bin``) of ``error``; falls back to code and details."""
    status = call_status(error)
    if status is None:
        return RpcErrorDetails(code=error.code(), message=error.details() or "")
    info = error_info(status)
    return RpcErrorDetails(
        code=error.code(),
        message=status.message or error.details() or "",
        reason=info.reason if info is not None else "",
        metadata=dict(info.metadata) if info is not None else {},
        field_violations=field_violations(status),
    )


class ObjectTransferError(Exception):
    """An upload or download through an object accessor failed (HTTP status, reason, message)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class ExecutionWaitTimeout(Exception):
    """An execution did not reach a terminal state within the time given; it keeps running on the hub."""

    def __init__(self, name: str, state: str, timeout: float) -> None:
        super().__init__(f"{name} did not finish within {round(timeout, 1):g} s (still {state})")
        self.name = name
        self.state = state
        self.timeout = timeout
