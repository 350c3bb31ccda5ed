"""gRPC servicers: proto <-> domain conversion, validation, error mapping."""

from ._errors import abort_with, handle_errors, handle_stream_errors, status_for
from ._keys import KeyServicer
from ._principal import PermissionDeniedError, current_principal
from ._reflection import add_reflection
from ._staking import StakingServicer

__all__ = [
    "KeyServicer",
    "PermissionDeniedError",
    "StakingServicer",
    "abort_with",
    "add_reflection",
    "current_principal",
    "handle_errors",
    "handle_stream_errors",
    "status_for",
]
