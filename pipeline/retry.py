"""How often, and how long apart, a failed attempt is tried again.

Bounded exponential backoff with jitter: the ``n``-th retry waits
``min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1))``, spread by ``jitter`` (a
fraction) so that many keys failing together do not retry in lock-step. After ``max_attempts``
attempts in all, the event is dead-lettered.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["RetryPolicy"]

_LONGEST_S = 100 * 365.25 * 24 * 3600


class RetryPolicy(BaseModel):
    """Attempts and backoff of one event; a frozen value object."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: Attempts in all, the first included; 1 means no retry.
    max_attempts: int = Field(default=5, ge=1, le=1000)
    # At most 100 years, as every duration setting (pipeline.settings.LONGEST_S, which this
    # foundation cannot import): 1e20 s was taken, and logged as "retrying in 1e20 s".
    initial_backoff_s: float = Field(default=0.2, ge=0, le=_LONGEST_S)
    max_backoff_s: float = Field(default=10.0, ge=0, le=_LONGEST_S)
    multiplier: float = Field(default=2.0, ge=1)
    #: Each wait is drawn from ``[delay * (1 - jitter), delay * (1 + jitter)]``.
    jitter: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _bounded(self) -> RetryPolicy:
        if self.initial_backoff_s > self.max_backoff_s:
            raise ValueError("initial_backoff_s must not exceed max_backoff_s")
        return self

    def exhausted(self, attempts: int) -> bool:
        """Whether ``attempts`` failed attempts leave none to make."""
        return attempts >= self.max_attempts

    def delay(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure (1 for the first)."""
        if failed_attempts < 1:
            raise ValueError(f"failed_attempts must be >= 1, got {failed_attempts}")
        exponent = min(failed_attempts - 1, 64)  # beyond this every delay is capped anyway
        try:
            grown = self.initial_backoff_s * self.multiplier**exponent
        except OverflowError:  # a huge multiplier: far beyond any cap
            grown = self.max_backoff_s if self.initial_backoff_s else 0.0
        base = min(self.max_backoff_s, grown)
        if self.jitter == 0 or base == 0:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return min(self.max_backoff_s, base * (1 + spread))
