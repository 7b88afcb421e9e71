"""Domain errors and their one mapping to ``google.rpc.Status``.

Every layer raises a :class:`HubError` subclass; only the gRPC edge turns it into a status with an
``ErrorInfo`` (domain ``exthub.io``), a ``BadRequest`` when fields are invalid and a ``PreconditionFailure``
when named preconditions are not met. The details are packed by :func:`exthub.contract.errors.error_status`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.rpc import status_pb2

from exthub.contract.errors import error_status

_REASON = re.compile(r"[A-Z][A-Z0-9_]*[A-Z0-9]")
_METADATA_KEY = re.compile(r"[a-z][A-Za-z0-9]*")


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field: its path (AIP-193 style, e.g. ``extension.display_name``) and why."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition (AIP-193 ``PreconditionFailure``): its type (UPPER_SNAKE), subject and why."""

    type: str
    subject: str
    description: str


class HubError(Exception):
    """Base of every error a client may see. Subclasses fix the gRPC code and a default reason."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        precondition_violations: Iterable[PreconditionViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        # AIP-193: reasons are UPPER_SNAKE_CASE, metadata keys lowerCamelCase; a wrong one is a programming error
        if not _REASON.fullmatch(self.reason):
            raise ValueError(f"error reason {self.reason!r} is not UPPER_SNAKE_CASE")
        for key in self.metadata:
            if not _METADATA_KEY.fullmatch(key):
                raise ValueError(f"error metadata key {key!r} is not lowerCamelCase")
        self.field_violations: list[FieldViolation] = list(field_violations)
        self.precondition_violations: list[PreconditionViolation] = list(precondition_violations)
        for violation in self.precondition_violations:
            if not _REASON.fullmatch(violation.type):
                raise ValueError(f"precondition type {violation.type!r} is not UPPER_SNAKE_CASE")

    def within(self, prefix: str) -> HubError:
        """The same error about a field of a nested request (a batch item): every field path, and the
        ``field`` metadata, gains ``prefix`` (e.g. ``requests[2]``)."""
        if not self.field_violations:
            return self
        metadata = dict(self.metadata)
        if "field" in metadata:
            metadata["field"] = f"{prefix}.{metadata['field']}"
        nested = type(self).__new__(type(self))
        HubError.__init__(
            nested,
            self.message,
            reason=self.reason,
            metadata=metadata,
            field_violations=[FieldViolation(f"{prefix}.{v.field}", v.description) for v in self.field_violations],
            precondition_violations=self.precondition_violations,
        )
        return nested

    def to_status(self) -> status_pb2.Status:
        """The ``google.rpc.Status`` with ``ErrorInfo``, ``BadRequest`` (invalid fields) and
        ``PreconditionFailure`` (unmet preconditions)."""
        return error_status(
            self.code,
            self.message,
            self.reason,
            self.metadata,
            field_violations=[(v.field, v.description) for v in self.field_violations],
            precondition_violations=[(v.type, v.subject, v.description) for v in self.precondition_violations],
        )


class InvalidArgument(HubError):
    """A malformed field, filter, order or page token (INVALID_ARGUMENT)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_FIELD"

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """Shorthand for one invalid field."""
        return cls(
            f"invalid {field}: {description}",
            reason=reason,
            metadata={"field": field},
            field_violations=[FieldViolation(field, description)],
        )


class Unauthenticated(HubError):
    """Missing, expired or otherwise invalid bearer token."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "TOKEN_INVALID"


class PermissionDenied(HubError):
    """The caller is known but may not do this (role, ownership, status-update key)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "ROLE_REQUIRED"


class NotFound(HubError):
    """An unknown resource, or one the caller may not see (another tenant's execution)."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(HubError):
    """A resource with this id already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class Aborted(HubError):
    """A conditional write lost: the etag no longer matches (AIP-154)."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ETAG_MISMATCH"


class FailedPrecondition(HubError):
    """The resource is not in a state that allows this (transition, lifecycle, missing inputs, …)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(HubError):
    """A quota or size limit was exceeded."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(HubError):
    """A backend is briefly unavailable; the call may be retried."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "BACKEND_UNAVAILABLE"


class DeadlineExceeded(HubError):
    """The work did not finish within the deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Internal(HubError):
    """An unexpected fault; the message shown to clients never carries internals."""

    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"


def internal_status() -> status_pb2.Status:
    """The status sent for an unexpected exception: generic message, no stack trace, no secret."""
    return Internal("internal error").to_status()
