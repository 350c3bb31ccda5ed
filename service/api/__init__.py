"""gRPC servicers: proto <-> domain conversion, validation, error mapping."""

from ._errors import abort_with, handle_errors, handle_stream_errors, status_for
from ._event_converters import event_json
from ._events import EventServicer
from ._intents import BUILD_RPC_MARK, BuildGate, build_rpc
from ._keys import KeyServicer
from ._principal import PermissionDeniedError, current_principal
from ._reflection import add_reflection
from ._serving import add_servicer
from ._staking import StakingServicer

__all__ = [
    "BUILD_RPC_MARK",
    "BuildGate",
    "EventServicer",
    "KeyServicer",
    "PermissionDeniedError",
    "StakingServicer",
    "abort_with",
    "add_reflection",
    "add_servicer",
    "build_rpc",
    "current_principal",
    "event_json",
    "handle_errors",
    "handle_stream_errors",
    "status_for",
]
