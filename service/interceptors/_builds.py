"""Build metrics: transactions built by kind and outcome, build time, service fees quoted.

The innermost interceptor, so it times the builder alone (after authentication and
rate limits) and sees the response the servicer returned.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from service.telemetry import Metrics, build_kind

from ._chain import Stage
from ._observe import ObservedContext


class BuildMetricsInterceptor(Stage):
    """Records every Build*Transaction call of ``services`` that reached the servicer.

    The outcome is ``ok`` or the ErrorInfo reason of the failure (``INTERNAL`` style
    code names when there is none); the fee is the response's
    ``transaction.fees.service_fee_lamports``.
    """

    def __init__(self, metrics: Metrics, services: frozenset[str]) -> None:
        self._metrics = metrics
        self._services = services

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        kind = build_kind(method)
        if handler.unary_unary is None or kind is None or service not in self._services:
            return handler
        behaviour: Any = handler.unary_unary
        series = self._metrics.build_series(kind)

        async def unary_unary(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            try:
                response = await behaviour(request, context)
            except BaseException as exc:
                series.finished(_outcome(context, exc), _since(started), None)
                raise
            series.finished("ok", _since(started), _service_fee(response))
            return response

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _since(started: float) -> float:
    return time.perf_counter() - started


def _outcome(context: Any, error: BaseException) -> str:
    if isinstance(context, ObservedContext) and context.aborted:
        return context.error_reason() or (context.code_set or grpc.StatusCode.UNKNOWN).name
    if not isinstance(error, Exception):  # cancelled: the caller left or the deadline passed
        return "CANCELLED"
    return "UNKNOWN"


def _service_fee(response: Any) -> int | None:
    transaction = getattr(response, "transaction", None)
    fees = getattr(transaction, "fees", None)
    fee = getattr(fees, "service_fee_lamports", None)
    return fee if isinstance(fee, int) else None
