"""Turn an error answered by another Exthub service into the :class:`HubError` to raise here."""

from __future__ import annotations

import grpc

from exthub.contract.errors import call_error_info
from services.platform.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    HubError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

#: The client errors passed through with their code and reason (each HubError class knows its code).
_PASSED_THROUGH: tuple[type[HubError], ...] = (
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    Aborted,
)
_BY_CODE: dict[grpc.StatusCode, type[HubError]] = {kind.code: kind for kind in _PASSED_THROUGH}


def hub_error_from_rpc(error: grpc.aio.AioRpcError, *, backend: str) -> HubError:
    """The same canonical code and reason for client errors; ``UNAVAILABLE`` (BACKEND_UNAVAILABLE) otherwise."""
    kind = _BY_CODE.get(error.code())
    if kind is None:
        return Unavailable(f"the {backend} is unavailable", metadata={"backend": backend})
    info = call_error_info(error)
    reason = info.reason if info is not None and info.reason else None
    metadata = dict(info.metadata) if info is not None else {}
    return kind(error.details() or f"the {backend} refused the call", reason=reason, metadata=metadata)
