"""AIP-158 pagination: page-size coercion and signed, query-bound, expiring page tokens.

A page token is ``base64url(payload ‖ HMAC-SHA256(secret, payload))`` without padding, where the payload
is compact JSON ``{"v": 1, "t": issued_at, "q": query_fingerprint, "s": state}``. The state is signed,
not encrypted: put only values the caller may see (e.g. the last row's sort keys, a backend
continuation). A token reused with other query arguments, tampered with, truncated or older than the
TTL (24 h by default) is refused with INVALID_ARGUMENT / ``INVALID_PAGE_TOKEN`` on ``page_token``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from services.platform import timefmt
from services.platform.errors import FieldViolation, InvalidArgument

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_TOKEN_TTL",
    "MAX_PAGE_SIZE",
    "PageTokenCodec",
    "invalid_page_token",
    "query_fingerprint",
    "resolve_page_size",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_TOKEN_TTL = timedelta(hours=24)
_MAC_SIZE = 32
_VERSION = 1
_CLOCK_SKEW = timedelta(minutes=5)
_IGNORED_QUERY_KEYS = frozenset({"page_size", "page_token", "pageSize", "pageToken"})
_MAX_TOKEN_LENGTH = 8192
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def resolve_page_size(requested: int) -> int:
    """AIP-158: negative → INVALID_ARGUMENT, 0 → the default (50), above the maximum → 1000."""
    if requested < 0:
        raise InvalidArgument.field("page_size", f"must not be negative (got {requested})")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def invalid_page_token(description: str) -> InvalidArgument:
    """The error for an unusable page token (reason INVALID_PAGE_TOKEN, field ``page_token``)."""
    return InvalidArgument(
        f"invalid page_token: {description}",
        reason="INVALID_PAGE_TOKEN",
        metadata={"field": "page_token"},
        field_violations=[FieldViolation("page_token", description)],
    )


def query_fingerprint(query: Mapping[str, Any]) -> str:
    """A stable digest of the query arguments, ignoring ``page_size`` and ``page_token``."""
    relevant = {k: v for k, v in query.items() if k not in _IGNORED_QUERY_KEYS}
    canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()[:16]
    return _b64encode(digest)


class PageTokenCodec:
    """Encodes and verifies page tokens with an HMAC-SHA256 key (at least 16 bytes)."""

    def __init__(
        self,
        secret: bytes,
        *,
        ttl: timedelta = DEFAULT_TOKEN_TTL,
        clock: Callable[[], datetime] = timefmt.utcnow,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the page token secret must have at least 16 bytes")
        self._secret = secret
        self._ttl = ttl
        self._clock = clock

    def encode(self, state: Mapping[str, Any], *, query: Mapping[str, Any]) -> str:
        """Sign ``state`` (JSON-serialisable) for the next request with the same ``query``."""
        payload = {
            "v": _VERSION,
            "t": int(self._clock().timestamp()),
            "q": query_fingerprint(query),
            "s": dict(state),
        }
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        return _b64encode(body + self._mac(body))

    def decode(self, token: str, *, query: Mapping[str, Any]) -> dict[str, Any]:
        """Verify ``token`` against ``query`` and the clock and return its state."""
        if len(token) > _MAX_TOKEN_LENGTH or not _TOKEN_RE.fullmatch(token):
            raise invalid_page_token("malformed token")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise invalid_page_token("malformed token") from None
        if len(raw) <= _MAC_SIZE:
            raise invalid_page_token("malformed token")
        body, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise invalid_page_token("the token is corrupt or was not issued by this service")
        try:
            payload = json.loads(body)
        except ValueError:
            raise invalid_page_token("malformed token") from None
        if not isinstance(payload, dict) or payload.get("v") != _VERSION:
            raise invalid_page_token("unsupported token version")
        issued, fingerprint, state = payload.get("t"), payload.get("q"), payload.get("s")
        if not isinstance(issued, int) or not isinstance(fingerprint, str) or not isinstance(state, dict):
            raise invalid_page_token("malformed token")
        if not hmac.compare_digest(fingerprint, query_fingerprint(query)):
            raise invalid_page_token(
                "the token was issued for a different query; keep every argument except page_size "
                "unchanged, or start again without a page token"
            )
        now = self._clock().timestamp()
        if issued > now + _CLOCK_SKEW.total_seconds():
            raise invalid_page_token("the token was issued in the future")
        if now - issued > self._ttl.total_seconds():
            raise invalid_page_token("the token has expired; start again without a page token")
        return state

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
