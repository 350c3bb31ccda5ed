"""The limiter the interceptors call: subjects in, one all-or-nothing verdict out."""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from opentelemetry import trace

from ._backends import Backend, BackendUnavailableError, Bucket, MemoryBackend, RedisBackend
from ._errors import RateLimitedError, RateLimiterUnavailableError
from ._fallback import FallbackBackend
from ._gcra import Decision, Limit
from ._policy import Dimension, RateLimitPolicy, RpcClass, Tier

if TYPE_CHECKING:
    from service.config import Settings

LIMIT_HEADER = "x-ratelimit-limit"
REMAINING_HEADER = "x-ratelimit-remaining"
RESET_HEADER = "x-ratelimit-reset"


@dataclass(frozen=True, kw_only=True)
class Subject:
    """One bucket a call is charged to: a dimension's subject, for the call's class."""

    dimension: Dimension
    identity: str
    """The key id, wallet address or peer address."""
    rpc_class: RpcClass
    limit: Limit

    @property
    def bucket(self) -> Bucket:
        return Bucket(_PREFIXES[self.dimension, self.rpc_class] + self.identity, self.limit)


# "<dimension>:<class>:", the start of a bucket's key, by dimension and class.
_PREFIXES: Final = {
    (dimension, rpc_class): f"{dimension.value}:{rpc_class.value}:"
    for dimension in Dimension
    for rpc_class in RpcClass
}


@dataclass(frozen=True)
class Verdict:
    """The decisions of every bucket a call was charged to (all or nothing)."""

    subjects: tuple[Subject, ...]
    decisions: tuple[Decision, ...]

    @property
    def allowed(self) -> bool:
        return all(d.allowed for d in self.decisions)

    @property
    def binding(self) -> tuple[Subject, Decision]:
        """The most constraining bucket: of the refusing ones the longest wait; otherwise
        the fewest calls remaining (then the longest time to full)."""
        pairs = list(zip(self.subjects, self.decisions, strict=True))
        refused = [pair for pair in pairs if not pair[1].allowed]
        if refused:
            return max(refused, key=lambda pair: pair[1].retry_after)
        return min(pairs, key=lambda pair: (pair[1].remaining, -pair[1].reset_after))

    @property
    def retry_after(self) -> float:
        return max((d.retry_after for d in self.decisions if not d.allowed), default=0.0)

    def error(self) -> RateLimitedError:
        """The error of a refused call, naming the most constraining bucket."""
        subject, decision = self.binding
        return RateLimitedError(
            dimension=subject.dimension.value,
            subject=subject.identity,
            rpc_class=subject.rpc_class.value,
            limit=subject.limit,
            retry_after=decision.retry_after,
        )

    def headers(self) -> tuple[tuple[str, str], ...]:
        """``x-ratelimit-*`` of the most constraining bucket (see :func:`headers`)."""
        return headers(self.binding[1])


def headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    """The ``x-ratelimit-*`` metadata of one decision.

    ``limit``: the bucket's burst capacity (calls allowed at once from full);
    ``remaining``: calls allowed right now; ``reset``: whole seconds (rounded up) until
    the bucket is full again.
    """
    return (
        (LIMIT_HEADER, str(decision.limit)),
        (REMAINING_HEADER, str(decision.remaining)),
        (RESET_HEADER, str(math.ceil(decision.reset_after))),
    )


@dataclass(frozen=True, kw_only=True)
class LimiterStats:
    """Counters since start, ready to export as metrics."""

    backend: str
    """``memory`` or ``redis``."""
    shared_up: bool
    """Redis answers (always True for the memory backend)."""
    allowed: int
    refused: Mapping[str, int]
    """Refused calls per dimension (the binding one)."""
    redis_errors: int
    """Redis decisions that failed (timeouts, connection errors)."""
    outages: int
    """Times Redis became unreachable."""
    recoveries: int
    """Times it came back."""
    local_decisions: int
    """Calls decided by the local limiter during outages (fail-open)."""
    refused_unavailable: int
    """Calls refused during outages (fail-closed)."""


class RateLimiter:
    """Checks calls against their buckets on a backend, under the operator's policy."""

    def __init__(self, backend: Backend, policy: RateLimitPolicy) -> None:
        self.backend = backend
        self.policy = policy
        self._allowed = 0
        self._refused: Counter[str] = Counter()
        self.tracer: trace.Tracer | None = None
        """Set by the server: shared-backend (Redis) decisions inside a served call
        become child spans of it."""

    async def start(self) -> None:
        """Check that Redis answers (an unreachable Redis starts an outage, logged)."""
        if isinstance(self.backend, FallbackBackend):
            await self.backend.probe()

    async def check(self, subjects: Sequence[Subject]) -> Verdict:
        """Charge one call to every subject's bucket, all or nothing.

        Raises:
            RateLimiterUnavailableError: Redis is out and the policy is fail-closed.
        """
        try:
            buckets = [s.bucket for s in subjects]
            backend = self.backend
            if isinstance(backend, MemoryBackend):
                # Decided here and now: no await, no span (nothing leaves the process).
                decisions = backend.acquire_now(buckets)
            else:
                with self._span(len(subjects)):
                    decisions = await backend.acquire(buckets)
        except BackendUnavailableError:
            # Only a bare shared backend (without FallbackBackend) gets here.
            raise RateLimiterUnavailableError(retry_after=1.0) from None
        verdict = Verdict(tuple(subjects), tuple(decisions))
        if verdict.allowed:
            self._allowed += 1
        else:
            self._refused[verdict.binding[0].dimension.value] += 1
        return verdict

    def _span(self, buckets: int) -> contextlib.AbstractContextManager[object]:
        if self.tracer is None or not trace.get_current_span().get_span_context().is_valid:
            return contextlib.nullcontext()
        return self.tracer.start_as_current_span(
            "ratelimit EVALSHA",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "db.system.name": "redis",
                "db.operation.name": "EVALSHA",
                "ratelimit.buckets": buckets,
            },
        )

    def stats(self) -> LimiterStats:
        backend = self.backend
        shared = backend if isinstance(backend, FallbackBackend) else None
        return LimiterStats(
            backend="memory" if isinstance(backend, MemoryBackend) else "redis",
            shared_up=shared.shared_up if shared else True,
            allowed=self._allowed,
            refused=dict(self._refused),
            redis_errors=shared.errors if shared else 0,
            outages=shared.outages if shared else 0,
            recoveries=shared.recoveries if shared else 0,
            local_decisions=shared.local_decisions if shared else 0,
            refused_unavailable=shared.refused_unavailable if shared else 0,
        )

    async def close(self) -> None:
        await self.backend.close()


def open_limiter(settings: Settings) -> RateLimiter:
    """The limiter the settings describe: in memory, or on Redis with its outage policy."""
    policy = RateLimitPolicy(
        key=Tier(settings.ratelimit_key_per_minute, settings.ratelimit_key_burst),
        wallet=Tier(settings.ratelimit_wallet_per_minute, settings.ratelimit_wallet_burst),
        peer=Tier(settings.ratelimit_peer_per_minute, settings.ratelimit_peer_burst),
        factors={
            RpcClass.BUILDS: settings.ratelimit_builds_factor,
            RpcClass.SUBMITS: settings.ratelimit_submits_factor,
            RpcClass.READS: settings.ratelimit_reads_factor,
            RpcClass.ADMIN: settings.ratelimit_admin_factor,
        },
    )
    if not settings.redis_url:
        return RateLimiter(MemoryBackend(), policy)
    shared = RedisBackend.from_url(
        settings.redis_url,
        prefix=settings.redis_key_prefix,
        timeout=settings.redis_timeout_seconds,
    )
    backend = FallbackBackend(
        shared,
        MemoryBackend(),
        fail_open=not settings.ratelimit_fail_closed,
        recheck=settings.redis_recheck_seconds,
    )
    return RateLimiter(backend, policy)
