"""The canonical status codes an execution's ``error`` carries (the numbers of ``google.rpc.Code``).

The domain names codes through :class:`Code`; only the gRPC edge converts from and to ``google.rpc`` (and a
test checks that every member has the number ``google.rpc.code_pb2`` gives it).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Code"]


class Code(IntEnum):
    """Canonical error codes (``google.rpc.Code``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def of(cls, number: int) -> Code:
        """The member for ``number``; an unknown number (a foreign status) is UNKNOWN."""
        try:
            return cls(number)
        except ValueError:
            return cls.UNKNOWN
