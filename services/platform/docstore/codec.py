"""What every document store adapter shares: the JSON form of a body, addressable paths and the keyset
continuation token.

* A body is a JSON object of at most :data:`~services.platform.docstore.port.MAX_DOCUMENT_BYTES` (UTF-8);
  NaN, infinities and lone surrogates are refused (``ValueError``), a non-mapping is a ``TypeError``.
* A continuation is opaque to callers: URL-safe base64 of the query's fingerprint, the sort values of the
  last row and its id and partition. A token from another query, or a damaged one, is INVALID_ARGUMENT
  ``INVALID_PAGE_TOKEN``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from services.platform.docstore.port import MAX_DOCUMENT_BYTES, Query
from services.platform.errors import InvalidArgument
from services.platform.paging import invalid_page_token

__all__ = [
    "PartlyEncoded",
    "SortValue",
    "check_path",
    "decode_continuation",
    "dump_body",
    "encode_continuation",
    "encode_members",
    "fingerprint",
    "load_body",
]

SortValue = str | int | float | None
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,8192}")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-@:]{0,254}")


def check_path(path: Sequence[str]) -> None:
    """Refuse a document path no adapter can address safely (``ValueError``): every segment must match
    ``[A-Za-z0-9_][A-Za-z0-9_.-@:]{0,254}`` (filters validate user-given keys long before this)."""
    if not path:
        raise ValueError("empty document path")
    for segment in path:
        if not isinstance(segment, str) or not _SEGMENT_RE.fullmatch(segment):
            raise ValueError(f"unsupported document path segment {segment!r}")


class PartlyEncoded(dict[str, Any]):
    """A body some of whose members were encoded before (:func:`encode_members`), e.g. the members of a document
    that never change, encoded once for all its writes. It holds every member (for adapters that take the
    values); :func:`dump_body` encodes only ``rest`` and appends ``encoded``, whose keys must not be in ``rest``."""

    __slots__ = ("encoded", "rest")

    def __init__(self, rest: dict[str, Any], members: Mapping[str, Any], encoded: str) -> None:
        super().__init__(rest)
        self.update(members)
        self.rest = rest
        self.encoded = encoded


#: One encoder for every body (``json.dumps`` with options builds one per call). Bodies are trees built from
#: messages and domain values, so it skips the check for reference cycles; a cycle would still be refused, as a
#: ``RecursionError`` that :func:`_dumps` reports like any other body that is not JSON.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False)


def _dumps(value: dict[str, Any]) -> str:
    try:
        return _ENCODER.encode(value)
    except RecursionError:
        raise ValueError("a value nests too deeply (or refers to itself)") from None


def encode_members(members: Mapping[str, Any]) -> str:
    """The JSON text of ``members`` for a :class:`PartlyEncoded` body (an object's members, without braces);
    ``ValueError`` for what :func:`dump_body` refuses."""
    try:
        return _dumps(dict(members))[1:-1]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the document body is not valid JSON: {exc}") from None


def dump_body(body: Mapping[str, Any]) -> str:
    """The stored JSON text of a body (compact, UTF-8); refuses what is not a JSON object or too large."""
    if not isinstance(body, Mapping):
        raise TypeError("a document body must be a JSON object (a mapping)")
    try:
        if isinstance(body, PartlyEncoded) and body.encoded:
            text = _dumps(body.rest)
            text = f"{text[:-1]},{body.encoded}}}" if body.rest else f"{{{body.encoded}}}"
        else:
            text = _dumps(dict(body))
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the document body is not valid JSON: {exc}") from None
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(
            f"the document is too large ({size} bytes, at most {MAX_DOCUMENT_BYTES})",
            reason="DOCUMENT_TOO_LARGE",
        )
    return text


def load_body(text: str) -> dict[str, Any]:
    """The body of stored JSON text (a fresh object on every call)."""
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


def fingerprint(collection: str, query: Query) -> str:
    """A short digest of the query's shape: a continuation only continues the query it came from."""
    shape = [
        collection,
        query.partition,
        repr(query.where),
        [[list(key.path), key.descending] for key in query.order_by],
    ]
    digest = hashlib.sha256(json.dumps(shape, separators=(",", ":")).encode()).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode("ascii")


def encode_continuation(query_fingerprint: str, values: Sequence[SortValue], id: str, partition: str) -> str:
    """The token that resumes after the row ``(values, id, partition)``."""
    payload = {"f": query_fingerprint, "k": list(values), "i": id, "p": partition}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_continuation(token: str, query_fingerprint: str, n_keys: int) -> tuple[list[SortValue], str, str]:
    """``(sort values, id, partition)`` of a token made by :func:`encode_continuation` for this query."""
    if not _TOKEN_RE.fullmatch(token):
        raise invalid_page_token("malformed continuation")
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        raise invalid_page_token("malformed continuation") from None
    if not isinstance(payload, dict) or payload.get("f") != query_fingerprint:
        raise invalid_page_token("the continuation belongs to a different query")
    values, last_id, last_partition = payload.get("k"), payload.get("i"), payload.get("p")
    if not isinstance(values, list) or len(values) != n_keys:
        raise invalid_page_token("malformed continuation")
    if not isinstance(last_id, str) or not isinstance(last_partition, str):
        raise invalid_page_token("malformed continuation")
    for value in values:
        if isinstance(value, bool) or not (value is None or isinstance(value, str | int | float)):
            raise invalid_page_token("malformed continuation")
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid_page_token("malformed continuation")
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise invalid_page_token("malformed continuation")
    return values, last_id, last_partition
