"""GCRA burst and refill boundaries: one suite, run on the memory and the Redis backend.

Memory runs on a fake clock, so every number is exact to the microsecond. Redis runs
on its own clock (``TIME``) in short real windows: a number read ``e`` seconds after
the window began is checked to lie in ``[expected - e, expected]`` (plus 2 ms for
rounding), which is what the algorithm guarantees whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from service.ratelimit import Backend, Bucket, Decision, Limit, MemoryBackend, RedisBackend

from .conftest import REDIS_URL, FakeClock, redis_namespace

T = 0.5  # seconds between tokens in this suite
EVERY_HALF_SECOND = Limit(per_minute=60 / T, burst=3)


class Harness:
    def __init__(self, backend: Backend, clock: FakeClock | None) -> None:
        self.backend = backend
        self.clock = clock
        self._mark = time.monotonic()

    @property
    def exact(self) -> bool:
        return self.clock is not None

    def mark(self) -> None:
        """Start of a window: later readings may be this much older than expected."""
        self._mark = time.monotonic()

    async def advance(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    async def one(self, *buckets: Bucket) -> list[Decision]:
        return await self.backend.acquire(list(buckets))

    def near(self, actual: float, expected: float, *, exact: float | None = None) -> None:
        """``actual`` is ``expected`` (``exact`` if given, on the fake clock); on a real
        clock it may be up to the time elapsed since `mark` smaller."""
        if self.exact:
            assert actual == pytest.approx(expected if exact is None else exact, abs=1e-9)
        else:
            late = time.monotonic() - self._mark
            assert expected - late - 0.002 <= actual <= expected + 0.002, (actual, expected, late)


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()
        yield Harness(MemoryBackend(clock=clock), clock)
        return
    async with redis_namespace() as prefix:
        backend = RedisBackend.from_url(REDIS_URL, prefix=prefix, timeout=2.0)
        yield Harness(backend, None)
        await backend.close()


async def test_a_full_bucket_allows_exactly_burst_calls(harness: Harness) -> None:
    a = Bucket("a", EVERY_HALF_SECOND)
    harness.mark()
    seen = [(await harness.one(a))[0] for _ in range(3)]
    assert [d.allowed for d in seen] == [True, True, True]
    assert [d.remaining for d in seen] == [2, 1, 0]
    assert [d.limit for d in seen] == [3, 3, 3]
    # Time until full grows by one interval per call; a next token is due only when empty.
    for decision, full_in in zip(seen, [T, 2 * T, 3 * T], strict=True):
        harness.near(decision.reset_after, full_in)
    assert seen[0].retry_after == seen[1].retry_after == 0
    harness.near(seen[2].retry_after, T)

    refused = (await harness.one(a))[0]
    assert not refused.allowed and refused.remaining == 0
    harness.near(refused.retry_after, T)
    harness.near(refused.reset_after, 3 * T)  # a refused call consumes nothing


async def test_refill_gives_one_call_per_interval_exactly_at_the_boundary(
    harness: Harness,
) -> None:
    a = Bucket("a", EVERY_HALF_SECOND)
    for _ in range(3):
        assert (await harness.one(a))[0].allowed
    harness.mark()
    refused = (await harness.one(a))[0]
    assert not refused.allowed
    if harness.exact:
        # One microsecond short of the boundary: still refused, told to wait 1 µs.
        await harness.advance(refused.retry_after - 1e-6)
        early = (await harness.one(a))[0]
        assert not early.allowed and early.retry_after == pytest.approx(1e-6, abs=1e-12)
        await harness.advance(1e-6)
    else:
        await harness.advance(refused.retry_after)
    # At the boundary: exactly one call, then the next one waits a whole interval
    # counted from the boundary (on a real clock, less the time slept past it).
    admitted = (await harness.one(a))[0]
    assert admitted.allowed and admitted.remaining == 0
    again = (await harness.one(a))[0]
    assert not again.allowed
    harness.near(again.retry_after, T + refused.retry_after, exact=T)


async def test_after_burst_intervals_the_bucket_is_full_again(harness: Harness) -> None:
    a = Bucket("a", EVERY_HALF_SECOND)
    harness.mark()
    for _ in range(3):
        assert (await harness.one(a))[0].allowed
    last = (await harness.one(a))[0]
    assert not last.allowed
    await harness.advance(last.reset_after)
    harness.mark()
    burst = [(await harness.one(a))[0] for _ in range(4)]
    assert [d.allowed for d in burst] == [True, True, True, False]
    assert [d.remaining for d in burst[:3]] == [2, 1, 0]


async def test_several_buckets_are_charged_all_or_nothing(harness: Harness) -> None:
    narrow = Bucket("narrow", Limit(per_minute=60, burst=1))
    wide = Bucket("wide", Limit(per_minute=60, burst=5))
    first = await harness.one(narrow, wide)
    assert [d.allowed for d in first] == [True, True]
    assert [d.remaining for d in first] == [0, 4]
    refused = await harness.one(narrow, wide)
    # The wide bucket had room but the call was refused: it is not charged.
    assert [d.allowed for d in refused] == [False, True]
    assert [d.remaining for d in refused] == [0, 4]
    alone = await harness.one(wide)
    assert alone[0].allowed and alone[0].remaining == 3


async def test_buckets_are_independent(harness: Harness) -> None:
    tight = Limit(per_minute=60, burst=1)
    assert (await harness.one(Bucket("wallet-1", tight)))[0].allowed
    assert not (await harness.one(Bucket("wallet-1", tight)))[0].allowed
    other = (await harness.one(Bucket("wallet-2", tight)))[0]
    assert other.allowed and other.remaining == 0


async def test_fractional_rates_round_the_interval_up_to_a_microsecond(harness: Harness) -> None:
    seven = Bucket("seven", Limit(per_minute=7, burst=1))
    assert seven.limit.interval_us == 8_571_429  # 60 s / 7, rounded up
    harness.mark()
    assert (await harness.one(seven))[0].allowed
    refused = (await harness.one(seven))[0]
    harness.near(refused.retry_after, 8.571429)


async def test_redis_state_expires_once_the_bucket_is_full(redis_prefix: str) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix, timeout=2.0)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        decision = (await backend.acquire([Bucket("ttl", Limit(per_minute=600, burst=2))]))[0]
        ttl_ms = await client.pttl(f"{redis_prefix}ttl")
        assert 0 < ttl_ms <= decision.reset_after * 1000 + 1
        await asyncio.sleep(decision.reset_after + 0.05)
        assert await client.exists(f"{redis_prefix}ttl") == 0
        # The script is cached by SHA; flushed (as by a restart) it is loaded again.
        await client.script_flush()
        again = (await backend.acquire([Bucket("ttl", Limit(per_minute=600, burst=2))]))[0]
        assert again.allowed and again.remaining == 1
    finally:
        await client.aclose()
        await backend.close()


def test_memory_backend_drops_full_buckets() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock, sweep_every=100)
    limit = Limit(per_minute=60, burst=1)
    for n in range(99):
        backend.acquire_now([Bucket(f"peer-{n}", limit)])
    assert len(backend) == 99
    clock.advance(1.0)  # every bucket is full again
    backend.acquire_now([Bucket("peer-last", limit)])
    assert len(backend) == 1


def test_limits_are_validated_and_scaled() -> None:
    with pytest.raises(ValueError):
        Limit(per_minute=0, burst=1)
    with pytest.raises(ValueError):
        Limit(per_minute=10, burst=0)
    tripled = Limit(per_minute=10, burst=10).scaled(3)
    assert (tripled.per_minute, tripled.burst) == (30, 30)
    assert Limit(per_minute=10, burst=5).scaled(0.1).burst == 1  # never below one call
