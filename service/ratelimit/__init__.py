"""Rate limits: GCRA buckets per API key, per wallet and per peer, in memory or in Redis.

:func:`open_limiter` builds the :class:`RateLimiter` the settings describe: a
:class:`MemoryBackend` (the embedded default: limits per replica) or a
:class:`RedisBackend` (one atomic Lua script on the Redis clock: one limit for every
replica) behind a :class:`FallbackBackend` that fails open to a local limiter (or
closed) while Redis is out. The interceptors in ``service.interceptors`` decide which
:class:`Subject` each call is charged to.
"""

from ._backends import (
    GCRA_SCRIPT,
    Backend,
    BackendUnavailableError,
    Bucket,
    MemoryBackend,
    RedisBackend,
)
from ._errors import (
    RATE_LIMITED,
    RATE_LIMITER_UNAVAILABLE,
    RateLimitedError,
    RateLimiterUnavailableError,
)
from ._fallback import FallbackBackend
from ._gcra import Decision, Limit, evaluate
from ._limiter import (
    LIMIT_HEADER,
    REMAINING_HEADER,
    RESET_HEADER,
    LimiterStats,
    RateLimiter,
    Subject,
    Verdict,
    headers,
    open_limiter,
)
from ._policy import DEFAULT_FACTORS, Dimension, RateLimitPolicy, RpcClass, Tier, classify

__all__ = [
    "DEFAULT_FACTORS",
    "GCRA_SCRIPT",
    "LIMIT_HEADER",
    "RATE_LIMITED",
    "RATE_LIMITER_UNAVAILABLE",
    "REMAINING_HEADER",
    "RESET_HEADER",
    "Backend",
    "BackendUnavailableError",
    "Bucket",
    "Decision",
    "Dimension",
    "FallbackBackend",
    "Limit",
    "LimiterStats",
    "MemoryBackend",
    "RateLimitPolicy",
    "RateLimitedError",
    "RateLimiter",
    "RateLimiterUnavailableError",
    "RedisBackend",
    "RpcClass",
    "Subject",
    "Tier",
    "Verdict",
    "classify",
    "evaluate",
    "headers",
    "open_limiter",
]
