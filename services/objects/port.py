"""The object provider port: short-lived accessors for the inputs and outputs of executions.

A provider hands out accessors: a URL plus the method and headers to use with it, valid for one object and one
direction until ``expire_time``. ``local/v1`` signs URLs to its own HTTP endpoint; ``az-blob/v1`` returns
Blob Storage user-delegation SAS URLs (with ``x-ms-blob-type: BlockBlob`` in ``headers`` for uploads).

Inputs are **sealed**: a client uploads an input through its upload accessor to a staging object; sealing
(at ``:continue``) moves what was uploaded to the input's final object, which no upload accessor ever names, and
records its size and SHA-256. From then on a PUT through an old upload accessor cannot change what a download
accessor of that input returns. Bodies are stored as sent (a ``Content-Encoding`` is never undone).
Outputs are written by the extension straight to their final object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from services.platform.errors import InvalidArgument

ObjectKind = Literal["input", "output"]
AccessMode = Literal["READ_ONLY", "WRITE_ONLY"]
HttpMethod = Literal["GET", "PUT"]

# Execution ids are server-generated UUIDs (lower case); shorter slugs are allowed for tests and tools.
_EXECUTION_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_OBJECT_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")


def validate_execution_id(execution: str) -> str:
    """Return ``execution`` if it is a valid execution id (``[a-z0-9][a-z0-9-]{0,63}``), else InvalidArgument."""
    if not isinstance(execution, str) or not _EXECUTION_ID.fullmatch(execution):
        raise InvalidArgument.field("object.execution", "must match [a-z0-9][a-z0-9-]{0,63}")
    return execution


def validate_object_name(name: str) -> str:
    """Return ``name`` if it is a valid object name (``^[a-z][a-z0-9_.-]{0,62}$``), else InvalidArgument."""
    if not isinstance(name, str) or not _OBJECT_NAME.fullmatch(name):
        raise InvalidArgument.field("object.name", "must match ^[a-z][a-z0-9_.-]{0,62}$")
    return name


def validate_kind(kind: str) -> ObjectKind:
    """Return ``kind`` narrowed to :data:`ObjectKind`, else InvalidArgument."""
    if kind == "input":
        return "input"
    if kind == "output":
        return "output"
    raise InvalidArgument.field("object.kind", "must be input or output")


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One object of one execution. Validated on construction (InvalidArgument when malformed)."""

    execution: str
    kind: ObjectKind
    name: str

    def __post_init__(self) -> None:
        validate_execution_id(self.execution)
        validate_kind(self.kind)
        validate_object_name(self.name)

    @property
    def key(self) -> str:
        """The provider-neutral object key ``<execution>/<kind>/<name>`` (for logs; providers lay out storage)."""
        return f"{self.execution}/{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class Accessor:
    """How to reach one object in one direction: ``method`` ``uri`` with ``headers``, until ``expire_time``."""

    uri: str
    method: HttpMethod
    headers: dict[str, str]
    expire_time: datetime
    access_mode: AccessMode

    def to_json(self) -> dict[str, Any]:
        """The REST/extension JSON shape (lowerCamel, RFC 3339 UTC ``expireTime``)."""
        return {
            "uri": self.uri,
            "method": self.method,
            "headers": dict(self.headers),
            "expireTime": format_rfc3339(self.expire_time),
            "accessMode": self.access_mode,
        }


def format_rfc3339(moment: datetime) -> str:
    """Fixed-width RFC 3339 UTC (``2026-11-21T06:01:24.000000Z``), as the architecture rules ask."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class SealedObject:
    """A sealed input: its size in bytes and the lower-case hex SHA-256 of its bytes (as uploaded)."""

    size: int
    sha256: str


@runtime_checkable
class ObjectProvider(Protocol):
    """A named object provider (``local/v1``, ``az-blob/v1``).

    Accessors are bound to one object and one direction: ``upload_accessor`` is write-only (PUT),
    ``download_accessor`` read-only (GET). ``ttl`` must be positive; providers may cap it.
    """

    name: str

    async def upload_accessor(self, ref: ObjectRef, ttl: timedelta) -> Accessor:
        """A write-only PUT accessor for ``ref``, valid for ``ttl`` (for an input: its staging object)."""
        ...

    async def download_accessor(self, ref: ObjectRef, ttl: timedelta) -> Accessor:
        """A read-only GET accessor for ``ref``, valid for ``ttl`` (issued whether or not it exists yet; for an
        input: its sealed object)."""
        ...

    async def exists(self, ref: ObjectRef) -> bool:
        """Whether the object has been uploaded (completely); an input counts once uploaded or sealed."""
        ...

    async def size(self, ref: ObjectRef) -> int | None:
        """The object's size in bytes (an input: sealed if it is, else as uploaded), None when missing."""
        ...

    async def seal_input(self, ref: ObjectRef) -> SealedObject | None:
        """Seal the uploaded input ``ref`` and return its size and SHA-256; None when nothing was uploaded.

        Idempotent, and the first seal wins: once sealed, the input never changes again (a later seal returns
        the same values, whatever is uploaded meanwhile). InvalidArgument for an output.
        """
        ...

    async def delete_execution(self, execution: str) -> None:
        """Delete every object of ``execution`` (idempotent)."""
        ...
