"""GCRA (generic cell rate algorithm): a token bucket kept as one timestamp per bucket.

A bucket with a sustained rate of ``per_minute`` calls and a capacity of ``burst``
calls emits one token every ``interval = 60 s / per_minute``. Its whole state is the
*theoretical arrival time* (TAT): the instant at which the bucket will be full again
(a bucket whose TAT is in the past is full). A call at ``now`` is allowed when

    max(TAT, now) + interval - burst * interval <= now

and then moves the TAT to ``max(TAT, now) + interval``. So a full bucket allows exactly
``burst`` calls at once, then one call per ``interval``.

Times are integer microseconds so the memory backend (Python ints) and the Redis
backend (Lua doubles, exact below 2**53) compute the same numbers; the interval is
rounded *up* to a whole microsecond (a limit is never looser than configured).
This module is pure: the clock is an argument.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

MICROS = 1_000_000


@dataclass(frozen=True, kw_only=True)
class Limit:
    """A sustained rate and a burst capacity.

    Attributes:
        per_minute: Sustained calls per minute (> 0; fractions allowed).
        burst: Calls allowed at once from a full bucket (>= 1).
    """

    per_minute: float
    burst: int

    def __post_init__(self) -> None:
        if not self.per_minute > 0 or not math.isfinite(self.per_minute):
            raise ValueError(f"per_minute must be a positive number, got {self.per_minute!r}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst!r}")

    @functools.cached_property
    def interval_us(self) -> int:
        """Microseconds between two tokens."""
        return max(1, math.ceil(60 * MICROS / self.per_minute))

    def scaled(self, factor: float) -> Limit:
        """This limit with rate and burst multiplied by ``factor`` (burst at least 1)."""
        return Limit(per_minute=self.per_minute * factor, burst=max(1, int(self.burst * factor)))


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What one bucket says about one call.

    Attributes:
        allowed: The bucket had room for the call (whether the call went through also
            depends on the other buckets checked with it: all or nothing).
        limit: The bucket's burst capacity.
        remaining: Calls the bucket allows right now, after this decision.
        reset_after: Seconds until the bucket is full again.
        retry_after: Seconds until the bucket allows one more call: 0 while
            ``remaining`` > 0; for a refused call, how long to wait before retrying.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float


def decision(*, tat: int, now: int, limit: Limit, allowed: bool) -> Decision:
    """The decision a bucket whose (stored, post-call) TAT is ``tat`` reports at ``now``."""
    interval = limit.interval_us
    tat = max(tat, now)
    # Room left: how many intervals separate now from the instant the bucket is empty.
    remaining = max(0, (now - (tat - limit.burst * interval)) // interval)
    next_token = max(0, tat + interval - limit.burst * interval - now)
    return Decision(
        allowed=allowed,
        limit=limit.burst,
        remaining=remaining,
        reset_after=(tat - now) / MICROS,
        retry_after=next_token / MICROS,
    )


def evaluate(
    tats: Sequence[int | None], now: int, limits: Sequence[Limit]
) -> tuple[list[int] | None, list[Decision]]:
    """One call against several buckets, all or nothing.

    Args:
        tats: Each bucket's stored TAT (µs), None for a bucket never seen (full).
        now: The clock (µs).
        limits: Each bucket's limit.

    Returns:
        The TATs to store (None when the call is refused: nothing is consumed, in any
        bucket) and one decision per bucket.
    """
    current = [now if tat is None else max(tat, now) for tat in tats]
    fits = [
        tat + lim.interval_us - lim.burst * lim.interval_us <= now
        for tat, lim in zip(current, limits, strict=True)
    ]
    if all(fits):
        stored = [tat + lim.interval_us for tat, lim in zip(current, limits, strict=True)]
        return stored, [
            decision(tat=tat, now=now, limit=lim, allowed=True)
            for tat, lim in zip(stored, limits, strict=True)
        ]
    return None, [
        decision(tat=tat, now=now, limit=lim, allowed=fit)
        for tat, lim, fit in zip(current, limits, fits, strict=True)
    ]
