"""The retry policy of a profile: how many attempts, and the backoff between them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from services.platform.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """A profile's retry policy as configured; unset values (0 / ``None``) take :class:`RetryPolicy`'s
    defaults (see ``scheduling.retry_policy_from``)."""

    max_attempts: int = 0
    initial_backoff: timedelta | None = None
    max_backoff: timedelta | None = None
    multiplier: float = 0.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A profile's ``retry_policy``: how many attempts in all, and the exponential backoff between them.

    Invalid values raise ``InvalidArgument`` on the field ``retry_policy.<name>``.
    """

    max_attempts: int = 3
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidArgument.field("retry_policy.max_attempts", "must be an integer of 1 or more")
        for name in ("initial_backoff_s", "max_backoff_s", "multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidArgument.field(f"retry_policy.{name}", "must be a finite number")
        if self.initial_backoff_s < 0:
            raise InvalidArgument.field("retry_policy.initial_backoff_s", "must not be negative")
        if self.max_backoff_s < self.initial_backoff_s:
            raise InvalidArgument.field("retry_policy.max_backoff_s", "must not be below initial_backoff")
        if self.multiplier < 1:
            raise InvalidArgument.field("retry_policy.multiplier", "must be 1 or more")

    def can_retry(self, attempt: int) -> bool:
        """Whether another attempt may follow the failed ``attempt`` (1-based)."""
        return attempt < self.max_attempts

    def backoff_for(self, attempt: int) -> float:
        """Seconds to wait after the failed ``attempt`` (1-based) before the next one.

        ``initial * multiplier ** (attempt - 1)``, capped at ``max_backoff_s``: the first retry waits
        ``initial_backoff_s``.
        """
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        try:
            delay = self.initial_backoff_s * self.multiplier ** (attempt - 1)
        except OverflowError:
            return float(self.max_backoff_s)
        return float(min(delay, self.max_backoff_s))
