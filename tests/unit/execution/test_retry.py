"""Retry backoff and the classification of extension HTTP replies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.execution.domain.retry import RetryPolicy
from services.platform.errors import InvalidArgument


def test_backoff_grows_then_caps() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff_s=1.0, max_backoff_s=10.0, multiplier=2.0)
    assert [policy.backoff_for(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_backoff_of_huge_attempt_does_not_overflow() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=30.0, multiplier=3.0)
    assert policy.backoff_for(100_000) == 30.0


def test_constant_backoff() -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=2.0, max_backoff_s=2.0, multiplier=1.0)
    assert {policy.backoff_for(n) for n in range(1, 20)} == {2.0}


@given(
    initial=st.floats(min_value=0, max_value=100),
    extra=st.floats(min_value=0, max_value=1000),
    multiplier=st.floats(min_value=1, max_value=10),
    attempt=st.integers(min_value=1, max_value=10_000),
)
def test_backoff_is_bounded_and_monotonic(initial: float, extra: float, multiplier: float, attempt: int) -> None:
    policy = RetryPolicy(
        max_attempts=3, initial_backoff_s=initial, max_backoff_s=initial + extra, multiplier=multiplier
    )
    delay = policy.backoff_for(attempt)
    assert initial <= delay <= initial + extra
    assert policy.backoff_for(1) == initial
    assert policy.backoff_for(attempt + 1) >= delay


def test_backoff_needs_a_real_attempt() -> None:
    with pytest.raises(ValueError, match="1-based"):
        RetryPolicy().backoff_for(0)


def test_can_retry() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.can_retry(n) for n in (1, 2, 3, 4)] == [True, True, False, False]
    assert not RetryPolicy(max_attempts=1).can_retry(1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "retry_policy.max_attempts"),
        ({"max_attempts": True}, "retry_policy.max_attempts"),
        ({"initial_backoff_s": -1.0}, "retry_policy.initial_backoff_s"),
        ({"initial_backoff_s": float("nan")}, "retry_policy.initial_backoff_s"),
        ({"max_backoff_s": float("inf")}, "retry_policy.max_backoff_s"),
        ({"initial_backoff_s": 5.0, "max_backoff_s": 1.0}, "retry_policy.max_backoff_s"),
        ({"multiplier": 0.5}, "retry_policy.multiplier"),
    ],
)
def test_invalid_policy(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.metadata == {"field": field}
