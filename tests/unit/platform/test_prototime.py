"""The one stored-time → ``Timestamp`` conversion: the values ``Timestamp.FromDatetime`` gives, at the edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from services.platform.prototime import datetime_timestamp, storage_timestamp
from services.platform.timefmt import from_storage

STORED = [
    "2026-11-21T06:01:24.123456Z",
    "1970-01-01T00:00:00.000000Z",
    "1969-12-31T23:59:59.999999Z",
    "2000-02-29T12:00:00.000001Z",
    "9999-12-31T23:59:59.999999Z",
    "0001-01-01T00:00:00.000000Z",
]


def from_datetime(moment: datetime) -> timestamp_pb2.Timestamp:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    return expected


@pytest.mark.parametrize("stored", STORED)
def test_stored_times_become_the_timestamps_from_datetime_gives(stored: str) -> None:
    assert storage_timestamp(stored) == from_datetime(from_storage(stored))


def test_missing_times_stay_missing_and_naive_ones_are_refused() -> None:
    assert storage_timestamp("") is None and storage_timestamp(None) is None
    with pytest.raises(ValueError, match="naive"):
        datetime_timestamp(datetime(2026, 1, 1))


@pytest.mark.parametrize("offset", [timedelta(hours=5, minutes=30), timedelta(hours=-8), timedelta(0)])
def test_aware_datetimes_of_any_zone_give_the_same_instant(offset: timedelta) -> None:
    moment = datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=timezone(offset))
    assert datetime_timestamp(moment) == from_datetime(moment) == from_datetime(moment.astimezone(UTC))
