"""Where bucket state lives: process memory (the embedded default) or Redis (shared).

Both run the same GCRA (`_gcra`): the memory backend in Python on an injectable
clock, the Redis backend as one Lua script on the Redis server's clock (``TIME``), so
every replica sharing the Redis enforces one limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ._gcra import MICROS, Decision, Limit, evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bucket:
    """One bucket to charge: its key (unique per dimension, class and subject) and limit."""

    key: str
    limit: Limit


class BackendUnavailableError(Exception):
    """The shared backend did not answer in time (or at all)."""


class Backend(Protocol):
    """Charges one call against several buckets, all or nothing."""

    async def acquire(self, buckets: Sequence[Bucket]) -> list[Decision]:
        """One decision per bucket; the call went through when every one is allowed.

        Raises:
            BackendUnavailableError: the backend could not decide.
        """
        ...

    async def ping(self) -> None:
        """Raises BackendUnavailableError when the backend does not answer."""
        ...

    async def close(self) -> None: ...


class MemoryBackend:
    """Buckets in a dict, for one process. Coroutines never interleave inside `acquire`.

    Args:
        clock: Seconds of a monotonic clock (injectable for tests).
        sweep_every: Expired (full) buckets are dropped once this many were added
            since the last sweep, so memory stays bounded by the live buckets.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sweep_every: int = 10_000
    ) -> None:
        self._clock = clock
        self._tats: dict[str, int] = {}
        self._sweep_every = sweep_every
        self._added = 0

    def now_us(self) -> int:
        return round(self._clock() * MICROS)

    def __len__(self) -> int:
        return len(self._tats)

    async def acquire(self, buckets: Sequence[Bucket]) -> list[Decision]:
        return self.acquire_now(buckets)

    def acquire_now(self, buckets: Sequence[Bucket]) -> list[Decision]:
        """`acquire` without awaiting (for callers outside a coroutine)."""
        now = self.now_us()
        stored, decisions = evaluate(
            [self._tats.get(b.key) for b in buckets], now, [b.limit for b in buckets]
        )
        if stored is not None:
            for bucket, tat in zip(buckets, stored, strict=True):
                if bucket.key not in self._tats:
                    self._added += 1
                self._tats[bucket.key] = tat
            if self._added >= self._sweep_every:
                self._sweep(now)
        return decisions

    async def ping(self) -> None:
        return None

    def _sweep(self, now: int) -> None:
        self._added = 0
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]

    async def close(self) -> None:
        self._tats.clear()


# KEYS[i]: bucket i. ARGV[2i-1], ARGV[2i]: interval (µs) and burst of bucket i.
# Returns 4 integers per bucket: allowed (1/0), remaining, reset (µs), next token (µs).
# Mirrors `_gcra.evaluate`: all or nothing; a refused call stores nothing.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tats, fits = {}, {}
local all = true
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  fits[i] = tat + interval - burst * interval <= now
  if not fits[i] then all = false end
end
local out = {}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tats[i]
  local allowed = fits[i]
  if all then
    tat = tat + interval
    redis.call('SET', KEYS[i], string.format('%d', tat),
               'PX', string.format('%d', math.ceil((tat - now) / 1000)))
  end
  local remaining = math.floor((now - (tat - burst * interval)) / interval)
  if remaining < 0 then remaining = 0 end
  local next_token = tat + interval - burst * interval - now
  if next_token < 0 then next_token = 0 end
  out[#out + 1] = allowed and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = tat - now
  out[#out + 1] = next_token
end
return out
"""


class RedisBackend:
    """Buckets in Redis, decided by one atomic Lua script on the Redis clock.

    The script is sent with EVALSHA (loaded again after a Redis restart flushed it).
    Each bucket is a string key holding its TAT, with a TTL that drops it once full.

    Args:
        client: A `redis.asyncio` client (see :meth:`from_url`).
        prefix: Prepended to every bucket key (one namespace per deployment).
        timeout: Upper bound of one decision, seconds: a slow Redis never stalls calls.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str, timeout: float) -> None:
        self._client = client
        self._prefix = prefix
        self._timeout = timeout
        self._script = client.register_script(GCRA_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str, timeout: float) -> RedisBackend:
        """A backend on a new client for ``redis://`` / ``rediss://`` / ``unix://`` URLs."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # NOTE: no hidden retries inside the client; an outage is the caller's to handle.
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        return cls(client, prefix=prefix, timeout=timeout)

    async def acquire(self, buckets: Sequence[Bucket]) -> list[Decision]:
        keys = [self._prefix + b.key for b in buckets]
        args: list[int] = []
        for bucket in buckets:
            args += [bucket.limit.interval_us, bucket.limit.burst]
        try:
            async with asyncio.timeout(self._timeout):
                raw: Any = await self._script(keys=keys, args=args)
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            raise BackendUnavailableError(f"{type(exc).__name__}: {exc}") from exc
        values = [int(v) for v in raw]
        return [
            Decision(
                allowed=values[4 * i] == 1,
                limit=bucket.limit.burst,
                remaining=values[4 * i + 1],
                reset_after=values[4 * i + 2] / MICROS,
                retry_after=values[4 * i + 3] / MICROS,
            )
            for i, bucket in enumerate(buckets)
        ]

    async def ping(self) -> None:
        """Raises BackendUnavailableError when Redis does not answer in time."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.ping()
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            raise BackendUnavailableError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()
