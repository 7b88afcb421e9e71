"""Reading and building the hub's errors: a ``google.rpc.Status`` with an ``ErrorInfo`` (domain ``exthub.io``).

Every error the hub returns carries an ``ErrorInfo`` whose ``reason`` (UPPER_SNAKE) tells the case apart and
whose ``metadata`` has stable lowerCamel keys; invalid requests add a ``BadRequest``. The same shape is stored
in an execution's ``error``. This module is the one place that packs and unpacks those details.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "ERROR_DOMAIN",
    "call_error_info",
    "call_status",
    "code_number",
    "error_info",
    "error_status",
    "field_violations",
    "precondition_violations",
]

#: The ``ErrorInfo.domain`` of every error the hub raises.
ERROR_DOMAIN = "exthub.io"


def code_number(code: grpc.StatusCode) -> int:
    """The canonical number of a gRPC status code (``google.rpc.Code``), e.g. 14 for UNAVAILABLE."""
    number: int = code.value[0]
    return number


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """The ``ErrorInfo`` detail of a ``google.rpc.Status``, if it carries one."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def field_violations(status: status_pb2.Status) -> list[tuple[str, str]]:
    """``(field, description)`` of every ``BadRequest`` field violation in a ``google.rpc.Status``."""
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    return violations


def precondition_violations(status: status_pb2.Status) -> list[tuple[str, str, str]]:
    """``(type, subject, description)`` of every ``PreconditionFailure`` violation in a ``google.rpc.Status``."""
    violations: list[tuple[str, str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            violations.extend((v.type, v.subject, v.description) for v in failure.violations)
    return violations


def call_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The rich status (``grpc-status-details-bin``) of a failed call; None when it has none, or when it
    contradicts the call's own code (then the call's code and details are all there is)."""
    try:
        return rpc_status.from_call(error)
    except ValueError:
        return None


def call_error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The ``ErrorInfo`` of a failed call, if its rich status carries one."""
    status = call_status(error)
    return error_info(status) if status is not None else None


def error_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: Mapping[str, str] | None = None,
    *,
    field_violations: Iterable[tuple[str, str]] = (),
    precondition_violations: Iterable[tuple[str, str, str]] = (),
) -> status_pb2.Status:
    """A ``google.rpc.Status`` with an ``ErrorInfo`` of ``reason`` (domain ``exthub.io``) and ``metadata``, plus a
    ``BadRequest`` for ``field_violations`` (``(field, description)``) and a ``PreconditionFailure`` for
    ``precondition_violations`` (``(type, subject, description)``) when there are any."""
    status = status_pb2.Status(code=code_number(code), message=message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=dict(metadata or {}))
    )
    bad_fields = [error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in field_violations]
    if bad_fields:
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=bad_fields))
    unmet = [
        error_details_pb2.PreconditionFailure.Violation(type=t, subject=s, description=d)
        for t, s, d in precondition_violations
    ]
    if unmet:
        status.details.add().Pack(error_details_pb2.PreconditionFailure(violations=unmet))
    return status
