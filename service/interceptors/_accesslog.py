"""The access log: one line per call on the ``service.access`` logger.

Refusals a client can repeat in a loop at no cost to itself (a message that does not
decode, a failed authentication, a rate limit) are written at most once per peer
address and interval; the line that ends a quiet interval says how many were left out
(``suppressed``). Metrics still count every call.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Final

import grpc

from service.telemetry import CallInfo

from ._admission import MALFORMED_REQUEST
from ._observe import ObservingInterceptor
from ._ratelimit import peer_address

# Codes that mean the service (or a dependency) failed, not the caller.
_SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


class AccessLogInterceptor(ObservingInterceptor):
    """Writes one line per call: method, status code, duration, peer, error reason (and,
    through the log formatter, trace and request ids, key id and wallet).

    Args:
        quiet_services: Services logged at DEBUG only (health checks every few seconds).
        logger: Where the lines go.
    """

    def __init__(
        self,
        *,
        quiet_services: Collection[str] = ("grpc.health.v1.Health",),
        logger: logging.Logger | None = None,
        refusal_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quiet = frozenset(quiet_services)
        self._log = logger or logging.getLogger("service.access")
        self._refusals = _PeerQuota(refusal_interval, clock)

    def finished(self, call: CallInfo) -> None:
        code = call.code or grpc.StatusCode.UNKNOWN
        suppressed = 0
        if _repeatable_refusal(call, code):
            allowed, suppressed = self._refusals.take(peer_address(call.peer))
            if not allowed:
                return
        if call.service in self._quiet and code is grpc.StatusCode.OK:
            level = logging.DEBUG
        elif code in _SERVER_ERRORS:
            level = logging.WARNING
        else:
            level = logging.INFO
        logger = self._log
        if not logger.isEnabledFor(level):
            return
        duration_ms = round(call.duration * 1000, 3)
        name = _CODE_NAMES[code]
        extra: dict[str, object] = {
            "grpc_type": call.rpc_type,
            "grpc_code": name,
            "duration_ms": duration_ms,
            "peer": call.peer,
        }
        if call.reason is not None:
            extra["error_reason"] = call.reason
        if call.rate_limited is not None:
            extra["ratelimit_dimension"] = call.rate_limited[0]
        if suppressed:
            extra["suppressed"] = suppressed
        # The record made directly: Logger.log would look up the caller's file and line,
        # walking the stack, on every call, for a line that always comes from here.
        record = logger.makeRecord(
            logger.name,
            level,
            __file__,
            0,
            "%s/%s %s %.1f ms",
            (call.service, call.method, name, duration_ms),
            None,
            "finished",
            extra,
        )
        logger.handle(record)


_CODE_NAMES: Final = {code: code.name for code in grpc.StatusCode}


def _repeatable_refusal(call: CallInfo, code: grpc.StatusCode) -> bool:
    return (
        call.reason == MALFORMED_REQUEST
        or code is grpc.StatusCode.UNAUTHENTICATED
        or call.rate_limited is not None
    )


class _PeerQuota:
    """One line per peer and interval; counts what it held back."""

    def __init__(self, interval: float, clock: Callable[[], float], max_peers: int = 10_000):
        self._interval = interval
        self._clock = clock
        self._max_peers = max_peers
        # peer -> (when its last line was written, lines held back since)
        self._peers: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def take(self, peer: str) -> tuple[bool, int]:
        """(write this line?, lines held back before it)."""
        now = self._clock()
        last = self._peers.get(peer)
        if last is not None and now - last[0] < self._interval:
            self._peers[peer] = (last[0], last[1] + 1)
            return False, 0
        self._peers[peer] = (now, 0)
        self._peers.move_to_end(peer)
        while len(self._peers) > self._max_peers:
            self._peers.popitem(last=False)
        return True, last[1] if last is not None else 0
