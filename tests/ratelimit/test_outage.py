"""Redis stopped, slowed and back, as two replicas' limiters see it (a Redis of our own)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio as aioredis

from service.ratelimit import (
    Dimension,
    FallbackBackend,
    Limit,
    MemoryBackend,
    RateLimiter,
    RateLimiterUnavailableError,
    RateLimitPolicy,
    RedisBackend,
    RpcClass,
    Subject,
    Tier,
)

from .conftest import RedisProcess

POLICY = RateLimitPolicy(key=Tier(60, 10), wallet=Tier(60, 10), peer=Tier(60, 10))
RECHECK = 0.2
# No refill during a test: one token a minute.
FOUR = Limit(per_minute=1, burst=4)


def _replica(redis: RedisProcess, *, fail_open: bool = True, timeout: float = 2.0) -> RateLimiter:
    shared = RedisBackend.from_url(redis.url, prefix="outage:", timeout=timeout)
    backend = FallbackBackend(shared, MemoryBackend(), fail_open=fail_open, recheck=RECHECK)
    return RateLimiter(backend, POLICY)


def _wallet(name: str) -> list[Subject]:
    return [
        Subject(dimension=Dimension.WALLET, identity=name, rpc_class=RpcClass.BUILDS, limit=FOUR)
    ]


async def _served(limiter: RateLimiter, name: str) -> bool:
    return (await limiter.check(_wallet(name))).allowed


async def _until_recovered(limiter: RateLimiter, name: str) -> bool:
    """Calls until the limiter has tried Redis again (bounded); the last call's answer."""
    for _ in range(100):
        await asyncio.sleep(RECHECK / 2)
        allowed = await _served(limiter, name)
        if limiter.stats().shared_up:
            return allowed
    raise AssertionError("the limiter never went back to Redis")


async def test_fail_open_serves_locally_then_shares_again(
    own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = _replica(own_redis), _replica(own_redis)
    try:
        # Shared: two replicas, one combined limit of 4.
        assert [await _served(a, "w1"), await _served(b, "w1")] == [True, True]
        assert [await _served(a, "w1"), await _served(b, "w1")] == [True, True]
        assert not await _served(a, "w1") and not await _served(b, "w1")

        await own_redis.stop()
        caplog.set_level(logging.WARNING, logger="service.ratelimit")
        # Fail-open: each replica keeps limiting on its own (4 each), calls are answered.
        answers = [await _served(a, "w2") for _ in range(5)]
        assert answers == [True, True, True, True, False]
        assert [await _served(b, "w2") for _ in range(5)] == answers
        stats = a.stats()
        assert not stats.shared_up and stats.outages == 1 and stats.redis_errors >= 1
        assert stats.local_decisions >= 5 and stats.refused_unavailable == 0
        down = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(down) == 2, "one log line per replica and transition, not per call"

        await own_redis.start()  # empty: Redis keeps nothing
        assert await _until_recovered(a, "w3")
        assert await _until_recovered(b, "w3")
        assert a.stats().recoveries == 1
        assert [r for r in caplog.records if "is back" in r.getMessage()]
        # Shared again: 2 taken above, 2 more between them, then both refuse.
        assert [await _served(a, "w3"), await _served(b, "w3")] == [True, True]
        assert not await _served(a, "w3") and not await _served(b, "w3")
    finally:
        await a.close()
        await b.close()


async def test_fail_closed_refuses_until_redis_is_back(own_redis: RedisProcess) -> None:
    limiter = _replica(own_redis, fail_open=False)
    try:
        assert await _served(limiter, "w")
        await own_redis.stop()
        for _ in range(3):
            with pytest.raises(RateLimiterUnavailableError) as caught:
                await _served(limiter, "w")
            assert 0 < caught.value.retry_after <= RECHECK
        assert limiter.stats().refused_unavailable == 3
        await own_redis.start()
        for _ in range(100):
            await asyncio.sleep(RECHECK / 2)
            try:
                assert await _served(limiter, "w")
                break
            except RateLimiterUnavailableError:
                continue
        stats = limiter.stats()
        assert stats.shared_up and stats.recoveries == 1
    finally:
        await limiter.close()


async def test_a_slow_redis_does_not_stall_calls(own_redis: RedisProcess) -> None:
    limiter = _replica(own_redis, timeout=0.05)
    pauser = aioredis.Redis.from_url(own_redis.url)
    try:
        assert await _served(limiter, "w")
        # Redis holds every command for 1.5 s (as a stalled server would).
        await pauser.client_pause(1500, all=True)
        started = time.monotonic()
        assert await _served(limiter, "w")  # decided locally after the 50 ms timeout
        assert time.monotonic() - started < 1.2  # long before Redis answers again
        assert not limiter.stats().shared_up
    finally:
        await pauser.aclose()
        await limiter.close()


async def test_unreachable_at_start_is_an_outage_from_the_first_call(
    own_redis: RedisProcess,
) -> None:
    await own_redis.stop()
    limiter = _replica(own_redis, timeout=0.2)
    try:
        await limiter.start()
        assert not limiter.stats().shared_up
        assert await _served(limiter, "w")  # fail-open
        await own_redis.start()
        assert await _until_recovered(limiter, "w")
    finally:
        await limiter.close()
