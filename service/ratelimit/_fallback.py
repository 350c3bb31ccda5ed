"""The Redis outage policy: fail open to a local limiter (default) or fail closed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ._backends import Backend, BackendUnavailableError, Bucket, MemoryBackend
from ._errors import RateLimiterUnavailableError
from ._gcra import Decision

log = logging.getLogger(__name__)


class FallbackBackend:
    """A shared backend, with a local one for when it is unreachable.

    While the shared backend fails, calls are decided by ``local`` (fail-open: each
    replica enforces the limits on its own) or refused (fail-closed:
    :class:`RateLimiterUnavailableError`). One call per ``recheck`` seconds tries the
    shared backend again; the first that succeeds ends the outage. Each transition is
    logged once; the counters are in :meth:`stats`.

    Args:
        shared: The shared backend (Redis).
        local: The per-process backend used while the shared one is out (fail-open).
        fail_open: Decide locally during an outage (True) or refuse calls (False).
        recheck: Seconds between two tries of the shared backend during an outage.
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        shared: Backend,
        local: MemoryBackend,
        *,
        fail_open: bool = True,
        recheck: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.local = local
        self._fail_open = fail_open
        self._recheck = recheck
        self._clock = clock
        self._down_since: float | None = None
        self._next_try = 0.0
        self.outages = 0
        self.recoveries = 0
        self.errors = 0
        self.local_decisions = 0
        self.refused_unavailable = 0

    @property
    def shared_up(self) -> bool:
        return self._down_since is None

    async def probe(self) -> None:
        """Try the shared backend now (at start): an outage begins if it does not answer."""
        try:
            await self.shared.ping()
        except BackendUnavailableError as exc:
            self._failed(exc)

    async def acquire(self, buckets: Sequence[Bucket]) -> list[Decision]:
        now = self._clock()
        if self._down_since is not None and now < self._next_try:
            return self._outage(buckets, now)
        if self._down_since is not None:
            self._next_try = now + self._recheck  # this call is the one try
        try:
            decisions = await self.shared.acquire(buckets)
        except BackendUnavailableError as exc:
            self._failed(exc)
            return self._outage(buckets, self._clock())
        if self._down_since is not None:
            self.recoveries += 1
            log.warning(
                "rate limiter: Redis is back after %.1f s; limits are shared again",
                self._clock() - self._down_since,
            )
            self._down_since = None
        return decisions

    def _failed(self, exc: BackendUnavailableError) -> None:
        self.errors += 1
        if self._down_since is None:
            self.outages += 1
            self._down_since = self._clock()
            self._next_try = self._down_since + self._recheck
            log.error(
                "rate limiter: Redis unreachable (%s); %s until it is back",
                exc,
                "each replica limits on its own (fail-open)"
                if self._fail_open
                else "calls are refused (fail-closed)",
            )

    def _outage(self, buckets: Sequence[Bucket], now: float) -> list[Decision]:
        if self._fail_open:
            self.local_decisions += 1
            return self.local.acquire_now(buckets)
        self.refused_unavailable += 1
        raise RateLimiterUnavailableError(retry_after=max(0.001, self._next_try - now))

    async def ping(self) -> None:
        await self.shared.ping()

    async def close(self) -> None:
        await self.shared.close()
        await self.local.close()
