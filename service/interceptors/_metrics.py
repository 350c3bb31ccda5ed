"""Metrics: go-grpc-prometheus's gRPC server metrics, auth failures, rate-limit rejections."""

from __future__ import annotations

from service.telemetry import CallInfo, GrpcSeries, Metrics

from ._observe import ObservingInterceptor


class MetricsInterceptor(ObservingInterceptor):
    """Counts every call: started, handled by code, latency, messages each way; and
    the calls refused by authentication (by reason) or a rate limit (by dimension)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def for_method(self, service: str, method: str, rpc_type: str) -> ObservingInterceptor:
        return _MethodMetrics(self._metrics, self._metrics.grpc_series(rpc_type, service, method))


class _MethodMetrics(ObservingInterceptor):
    """The metrics of one method's calls, their series bound in advance."""

    def __init__(self, metrics: Metrics, series: GrpcSeries) -> None:
        self._metrics = metrics
        self._series = series

    def started(self, call: CallInfo) -> None:
        self._series.started.inc()

    def received(self, call: CallInfo) -> None:
        self._series.received.inc()

    def sent(self, call: CallInfo) -> None:
        self._series.sent.inc()

    def finished(self, call: CallInfo) -> None:
        self._series.finished(call)
        self._metrics.call_refused(call)
