"""Resource names and ids of the execution service: ``executions/{uuid}``, ``extensions/{e}/versions/{v}``."""

from __future__ import annotations

import os
import re
import uuid

from services.platform.errors import InvalidArgument

__all__ = ["new_execution_id", "parse_execution_name", "parse_version_name", "validate_request_id"]

_EXECUTION_NAME = re.compile(r"^executions/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
_VERSION_NAME = re.compile(r"^extensions/([a-z][a-z0-9-]{1,62})/versions/([0-9A-Za-z.+-]{1,128})$")


def parse_execution_name(name: str, *, field: str = "name") -> str:
    """The id of ``executions/{uuid}``; INVALID_ARGUMENT otherwise."""
    match = _EXECUTION_NAME.fullmatch(name or "")
    if match is None:
        raise InvalidArgument.field(field, "must be executions/{execution} with a UUID id")
    return match.group(1)


def parse_version_name(name: str, *, field: str = "execution.extension_version") -> tuple[str, str]:
    """``(extension_id, version_id)`` of ``extensions/{e}/versions/{v}`` (``v`` may be ``latest``)."""
    match = _VERSION_NAME.fullmatch(name or "")
    if match is None:
        raise InvalidArgument.field(field, "must be extensions/{extension}/versions/{version}")
    return match.group(1), match.group(2)


def new_execution_id() -> str:
    """A server-generated id (lower-case UUID4: 122 random bits, the version and variant bits set)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def validate_request_id(request_id: str, *, field: str = "request_id") -> str:
    """A canonical lower-case UUID, or INVALID_ARGUMENT."""
    try:
        return str(uuid.UUID(request_id))
    except ValueError:
        raise InvalidArgument.field(field, "must be a UUID") from None
