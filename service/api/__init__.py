"""gRPC servicers: proto <-> domain conversion, validation, error mapping."""

from ._errors import abort_with, handle_errors, handle_stream_errors, status_for
from ._reflection import add_reflection
from ._staking import StakingServicer

__all__ = [
    "StakingServicer",
    "abort_with",
    "add_reflection",
    "handle_errors",
    "handle_stream_errors",
    "status_for",
]
