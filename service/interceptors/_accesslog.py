"""The access log: one line per call on the ``service.access`` logger."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Final

import grpc

from service.telemetry import CallInfo

from ._observe import ObservingInterceptor

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
    ) -> None:
        self._quiet = frozenset(quiet_services)
        self._log = logger or logging.getLogger("service.access")

    def finished(self, call: CallInfo) -> None:
        code = call.code or grpc.StatusCode.UNKNOWN
        if call.service in self._quiet and code is grpc.StatusCode.OK:
            level = logging.DEBUG
        elif code in _SERVER_ERRORS:
            level = logging.WARNING
        else:
            level = logging.INFO
        if not self._log.isEnabledFor(level):
            return
        duration_ms = round(call.duration * 1000, 3)
        extra: dict[str, object] = {
            "grpc_type": call.rpc_type,
            "grpc_code": code.name,
            "duration_ms": duration_ms,
            "peer": call.peer,
        }
        if call.reason is not None:
            extra["error_reason"] = call.reason
        if call.rate_limited is not None:
            extra["ratelimit_dimension"] = call.rate_limited[0]
        self._log.log(
            level,
            "%s/%s %s %.1f ms",
            call.service,
            call.method,
            code.name,
            duration_ms,
            extra=extra,
        )
