"""The gRPC call being served: who made it, what it did and how it ended.

The outermost observing interceptor creates one :class:`CallInfo` per call and keeps
it in :data:`current_call` for the call's lifetime (set and reset in the handler's own
task). Inner interceptors add what only they learn (the API key, the wallet, why a
call was refused) through the ``note_*`` functions; the access log, the metrics and
every log line written during the call read it.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

import grpc


@dataclass(slots=True, kw_only=True)
class CallInfo:
    """One served call. Never holds a secret: keys appear by id only."""

    service: str
    """Full service name, e.g. ``agentstaking.v1.StakingService``."""
    method: str
    """Method name, e.g. ``BuildStakeTransaction``."""
    rpc_type: str
    """``unary``, ``client_stream``, ``server_stream`` or ``bidi_stream``."""
    peer: str = ""
    request_id: str = ""
    """The trace id (32 hex digits); also the ``x-request-id`` response metadata."""
    started: float = field(default_factory=time.perf_counter)
    key_id: str | None = None
    wallet: str | None = None
    auth_failure: str | None = None
    """ErrorInfo reason of a failed authentication or authorization."""
    rate_limited: tuple[str, str] | None = None
    """(dimension, rpc class) of the bucket that refused the call."""
    received: int = 0
    sent: int = 0
    code: grpc.StatusCode | None = None
    """Final status; None while the call runs."""
    details: str = ""
    reason: str | None = None
    """ErrorInfo reason of a failed call, when it carried one."""
    duration: float = 0.0
    """Seconds from the first interceptor to the end of the call."""
    error: BaseException | None = None
    """The unexpected exception the call failed with (answered UNKNOWN), if any."""

    @property
    def full_method(self) -> str:
        return f"/{self.service}/{self.method}"


current_call: ContextVar[CallInfo | None] = ContextVar("agent_staking_call", default=None)


def note_principal(key_id: str) -> None:
    """The call was authenticated with API key ``key_id``."""
    call = current_call.get()
    if call is not None:
        call.key_id = key_id


def note_wallet(wallet: str) -> None:
    """The call acts for ``wallet``."""
    call = current_call.get()
    if call is not None:
        call.wallet = wallet


def note_auth_failure(reason: str) -> None:
    """The call's authentication or authorization failed with ErrorInfo ``reason``."""
    call = current_call.get()
    if call is not None:
        call.auth_failure = reason


def note_rate_limited(dimension: str, rpc_class: str) -> None:
    """The call was refused by the rate limiter's bucket of ``dimension``."""
    call = current_call.get()
    if call is not None:
        call.rate_limited = (dimension, rpc_class)
