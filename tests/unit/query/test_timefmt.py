"""Fixed-width UTC storage timestamps and RFC 3339 parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.platform import timefmt


def test_to_storage_fixed_width_utc() -> None:
    dt = datetime(2026, 11, 21, 7, 1, 24, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert timefmt.to_storage(dt) == "2026-11-21T06:01:24.123456Z"
    assert timefmt.to_storage(datetime(5, 1, 2, tzinfo=UTC)) == "0005-01-02T00:00:00.000000Z"


def test_naive_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        timefmt.to_storage(datetime(2026, 1, 1))


@given(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC)))
def test_string_order_is_time_order(a: datetime, b: datetime) -> None:
    sa, sb = timefmt.to_storage(a), timefmt.to_storage(b)
    assert len(sa) == len(sb) == timefmt.STORAGE_LENGTH
    assert (sa < sb) == (a < b)
    back = timefmt.from_storage(sa)
    assert back == a
    assert back.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31t12:00:00z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31T12:00:00.5Z", datetime(2026, 1, 31, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2026-01-31T12:00:00.123456789Z", datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-01-31T12:00:00-04:30", datetime(2026, 1, 31, 16, 30, tzinfo=UTC)),
        ("2026-01-01T00:30:00+01:00", datetime(2025, 12, 31, 23, 30, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339(text: str, want: datetime) -> None:
    got = timefmt.parse_rfc3339(text)
    assert got == want
    assert got.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-01-31",
        "2026-01-31T12:00:00",
        "2026-02-30T00:00:00Z",
        "2026-01-31T24:00:00Z",
        "2026-01-31T23:59:60Z",
        "2026-01-31T12:00:00+25:00",
        "0001-01-01T00:00:00+01:00",
        "2026-01-31T12:00:00Z\n",
        "\uff12\uff10\uff12\uff16-01-31T12:00:00Z",  # full-width digits
        "yesterday",
    ],
)
def test_parse_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"timestamp|offset"):
        timefmt.parse_rfc3339(text)


@pytest.mark.parametrize("text", ["2026-01-31T12:00:00Z", "2026-01-31T12:00:00.000000", "x"])
def test_from_storage_is_strict(text: str) -> None:
    with pytest.raises(ValueError, match="storage"):
        timefmt.from_storage(text)


@pytest.mark.parametrize("text", ["2026-02-30T00:00:00.000000Z", "2026-01-31T24:00:00.000000Z"])
def test_from_storage_refuses_impossible_times(text: str) -> None:
    with pytest.raises(ValueError):
        timefmt.from_storage(text)


def test_utcnow_is_aware() -> None:
    assert timefmt.utcnow().tzinfo is UTC
