"""Server interceptors, outermost first as listed in `service.server`."""

from ._accesslog import AccessLogInterceptor
from ._admission import (
    MALFORMED_REQUEST,
    Admission,
    AdmissionLimits,
    MalformedRequest,
    Refusals,
    RequestCheck,
)
from ._auth import AuthInterceptor, FailedAuthLimit, bearer_token
from ._builds import BuildMetricsInterceptor
from ._chain import InterceptorChain, Stage
from ._metrics import MetricsInterceptor
from ._observe import ObservedContext, ObserverGroup, ObservingInterceptor
from ._ratelimit import PeerAuthFailures, RateLimitInterceptor, peer_address, wallet_of
from ._tracing import REQUEST_ID_KEY, TracingInterceptor
from ._wrap import wrap_handler

__all__ = [
    "MALFORMED_REQUEST",
    "REQUEST_ID_KEY",
    "AccessLogInterceptor",
    "Admission",
    "AdmissionLimits",
    "AuthInterceptor",
    "BuildMetricsInterceptor",
    "FailedAuthLimit",
    "InterceptorChain",
    "MalformedRequest",
    "MetricsInterceptor",
    "ObservedContext",
    "ObserverGroup",
    "ObservingInterceptor",
    "PeerAuthFailures",
    "RateLimitInterceptor",
    "Refusals",
    "RequestCheck",
    "Stage",
    "TracingInterceptor",
    "bearer_token",
    "peer_address",
    "wallet_of",
    "wrap_handler",
]
