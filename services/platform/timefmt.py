"""Timestamps as stored in documents: RFC 3339 UTC strings of fixed width.

``to_storage`` always yields ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (27 characters), so comparing two stored
strings compares the instants they denote, in SQL as well as in Cosmos DB.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

__all__ = ["STORAGE_LENGTH", "from_storage", "parse_rfc3339", "to_storage", "utcnow"]

STORAGE_LENGTH = 27

_STORAGE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})Z$", re.ASCII)
_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$",
    re.ASCII,
)


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def to_storage(dt: datetime) -> str:
    """Format an aware datetime as the fixed-width UTC storage string. Naive datetimes are refused."""
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise ValueError("naive datetime: a timezone is required")
    return dt.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" → "Z"


@lru_cache(maxsize=8192)
def from_storage(s: str) -> datetime:
    """Parse a storage string written by :func:`to_storage` (strict); raises ValueError otherwise. (Remembers
    the last few thousand: the same stored times are read again and again, and a datetime is immutable.)"""
    if _STORAGE_RE.fullmatch(s) is None:
        raise ValueError(f"not a storage timestamp: {s!r}")
    return datetime.fromisoformat(s)  # the pattern leaves it one reading: that instant, in UTC ("Z")


def parse_rfc3339(s: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or a numeric offset) into an aware UTC datetime.

    Fractions beyond microseconds are truncated. Leap seconds (``:60``) and out-of-range values
    raise ValueError.
    """
    m = _RFC3339_RE.fullmatch(s)
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {s!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    fraction = m.group(7) or ""
    micro = int((fraction + "000000")[:6])
    if m.group(8):
        tz = UTC
    else:
        off_h, off_m = int(m.group(10)), int(m.group(11))
        if off_h > 23 or off_m > 59:
            raise ValueError(f"invalid UTC offset in {s!r}")
        delta = timedelta(hours=off_h, minutes=off_m)
        tz = timezone(-delta if m.group(9) == "-" else delta)
    try:
        local = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        return local.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"invalid timestamp {s!r}: {exc}") from None
