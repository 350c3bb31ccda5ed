"""Metrics: go-grpc-prometheus's gRPC server metrics, auth failures, rate-limit rejections."""

from __future__ import annotations

from service.telemetry import CallInfo, Metrics

from ._observe import ObservingInterceptor


class MetricsInterceptor(ObservingInterceptor):
    """Counts every call: started, handled by code, latency, messages each way; and
    the calls refused by authentication (by reason) or a rate limit (by dimension)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def started(self, call: CallInfo) -> None:
        self._metrics.call_started(call)

    def received(self, call: CallInfo) -> None:
        self._metrics.message_received(call)

    def sent(self, call: CallInfo) -> None:
        self._metrics.message_sent(call)

    def finished(self, call: CallInfo) -> None:
        self._metrics.call_finished(call)
