"""Unit: the ageing formula and its time-invariant rank."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.platform.workqueue.port import Priority, effective_priority, rank_time

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD = timedelta(seconds=60)

messages = st.lists(
    st.tuples(st.sampled_from(list(Priority)), st.integers(min_value=0, max_value=10_000)),
    min_size=2,
    max_size=20,
)


def test_levels() -> None:
    assert [p.level for p in (Priority.LOW, Priority.NORMAL, Priority.HIGH)] == [0, 1, 2]
    assert [int(p) for p in (Priority.LOW, Priority.NORMAL, Priority.HIGH)] == [1, 2, 3]  # exthub.type.v1.Priority


def test_effective_priority_gains_one_level_per_period() -> None:
    assert effective_priority(Priority.LOW, timedelta(0), PERIOD) == 0
    assert effective_priority(Priority.LOW, PERIOD, PERIOD) == 1
    assert effective_priority(Priority.LOW, 2 * PERIOD, PERIOD) == effective_priority(
        Priority.HIGH, timedelta(0), PERIOD
    )
    assert effective_priority(Priority.NORMAL, PERIOD / 2, PERIOD) == 1.5


def test_rank_time() -> None:
    assert rank_time(T0, Priority.LOW, PERIOD) == T0
    assert rank_time(T0, Priority.NORMAL, PERIOD) == T0 - PERIOD
    assert rank_time(T0, Priority.HIGH, PERIOD) == T0 - 2 * PERIOD


def _exact(priority: Priority, waited: timedelta) -> Fraction:
    """The ageing formula in exact arithmetic (floats could break ties by an ulp)."""
    exact = priority.level + Fraction(waited // timedelta(microseconds=1), PERIOD // timedelta(microseconds=1))
    assert effective_priority(priority, waited, PERIOD) == pytest.approx(float(exact))
    return exact


@given(messages, st.integers(min_value=0, max_value=100_000))
def test_rank_order_is_effective_priority_order_at_any_later_instant(
    batch: list[tuple[Priority, int]], later: int
) -> None:
    batch = sorted(batch, key=lambda m: m[1])  # list position = publish order = time order (the queue's seq)
    now = T0 + timedelta(seconds=max(offset for _, offset in batch) + later)
    published = [(priority, T0 + timedelta(seconds=offset)) for priority, offset in batch]
    by_rank = sorted(range(len(batch)), key=lambda i: (rank_time(published[i][1], published[i][0], PERIOD), i))
    by_priority = sorted(range(len(batch)), key=lambda i: (-_exact(published[i][0], now - published[i][1]), i))
    assert by_rank == by_priority
