"""Errors of the rate limiter; ``service.api`` maps them to gRPC statuses."""

from __future__ import annotations

from typing import Any

from service.core.errors import DomainError, ErrorKind

from ._gcra import Limit

RATE_LIMITED = "RATE_LIMITED"
RATE_LIMITER_UNAVAILABLE = "RATE_LIMITER_UNAVAILABLE"


class RateLimitedError(DomainError):
    """A call over one of its limits: RESOURCE_EXHAUSTED with RetryInfo and QuotaFailure.

    Args:
        dimension: ``api_key``, ``wallet`` or ``peer``.
        subject: The key id, wallet address or peer address that is over its limit.
        rpc_class: ``builds``, ``submits``, ``reads``, ``admin`` or ``auth_failures``.
        limit: The limit that was exceeded.
        retry_after: Seconds after which the same call is allowed.
    """

    kind = ErrorKind.RESOURCE_EXHAUSTED
    default_reason = RATE_LIMITED
    default_hint = "Wait for the delay in RetryInfo before calling again."

    def __init__(
        self, *, dimension: str, subject: str, rpc_class: str, limit: Limit, retry_after: float
    ) -> None:
        rate = f"{limit.per_minute:g} {rpc_class.replace('_', ' ')} per minute, burst {limit.burst}"
        super().__init__(
            f"rate limit of {dimension} {subject} exceeded ({rate}); retry in {retry_after:.3f} s",
            metadata={
                "dimension": dimension,
                "subject": subject,
                "rpc_class": rpc_class,
                "limit_per_minute": f"{limit.per_minute:g}",
                "burst": limit.burst,
                "retry_after_ms": max(1, round(retry_after * 1000)),
            },
        )
        self.dimension = dimension
        self.retry_after = retry_after
        # Read by `service.api.status_for` (google.rpc.QuotaFailure.Violation fields).
        self.quota_violations: tuple[dict[str, Any], ...] = (
            {
                "subject": f"{dimension}:{subject}",
                "description": f"{rate} per {dimension}",
                "quota_metric": f"agentstaking.v1/{rpc_class}",
                "quota_id": f"{rpc_class}-per-{dimension}",
                "quota_dimensions": {dimension: subject},
                "quota_value": limit.burst,
            },
        )


class RateLimiterUnavailableError(DomainError):
    """Redis is unreachable and the outage policy is fail-closed."""

    kind = ErrorKind.UNAVAILABLE
    default_reason = RATE_LIMITER_UNAVAILABLE
    default_hint = "The shared rate limiter is unreachable; retry after the delay in RetryInfo."

    def __init__(self, *, retry_after: float) -> None:
        super().__init__("the rate limiter is unavailable; calls are refused until it is back")
        self.retry_after = retry_after
