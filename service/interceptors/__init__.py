"""Server interceptors, outermost first as listed in `service.server`."""

from ._auth import AuthInterceptor, FailedAuthLimit, bearer_token
from ._ratelimit import PeerAuthFailures, RateLimitInterceptor, peer_address, wallet_of
from ._wrap import wrap_handler

__all__ = [
    "AuthInterceptor",
    "FailedAuthLimit",
    "PeerAuthFailures",
    "RateLimitInterceptor",
    "bearer_token",
    "peer_address",
    "wallet_of",
    "wrap_handler",
]
