"""The server's interceptors as one grpc interceptor.

grpc.aio runs each interceptor's ``intercept_service`` on every call, and a wrapping
interceptor then builds a new method handler per call: with six interceptors that
bookkeeping cost more than the build it surrounds. Here each interceptor is a
:class:`Stage` that wraps a method's handler once; :class:`InterceptorChain` keeps the
wrapped handler per method, so a call only runs the wrappers themselves. Consecutive
observing stages (tracing, metrics, access log) share one wrapper.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc


class Stage(grpc.aio.ServerInterceptor):
    """An interceptor defined by how it wraps one method's handler.

    Usable alone as a grpc interceptor (wrapping on every call) or, cheaper, in an
    :class:`InterceptorChain`.
    """

    @abc.abstractmethod
    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` of ``service``/``method`` with this stage around its calls."""

    def merge(self, inner: Stage) -> Stage | None:
        """One stage doing the work of this one and ``inner`` (next inside it) with a
        single wrapper, or None when they do not combine."""
        return None

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        _, service, method = handler_call_details.method.split("/", 2)
        return self.wrap(handler, service, method)


class InterceptorChain(grpc.aio.ServerInterceptor):
    """``stages``, outermost first, applied once per method and reused for its calls."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        grouped: list[Stage] = []
        for stage in stages:
            merged = grouped[-1].merge(stage) if grouped else None
            if merged is None:
                grouped.append(stage)
            else:
                grouped[-1] = merged
        self._stages = tuple(reversed(grouped))  # innermost first: the order of wrapping
        # full method -> (the registered handler, the wrapped one); a handler replaced
        # under the same name is wrapped again.
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full_method = handler_call_details.method
        known = self._wrapped.get(full_method)
        if known is not None and known[0] is handler:
            return known[1]
        _, service, method = full_method.split("/", 2)
        wrapped = handler
        for stage in self._stages:
            wrapped = stage.wrap(wrapped, service, method)
        self._wrapped[full_method] = (handler, wrapped)
        return wrapped
