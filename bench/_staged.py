"""``python -m service`` keeping only the interceptor stages named in ``BENCH_STAGES``
(class names, comma-separated; unset: every stage), for ``bench.stages``. With
``BENCH_SEPARATE=1`` the stages run as separate grpc interceptors, each
``intercept_service`` on every call, instead of the service's one chain."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

import service.server
from service.cli import main
from service.interceptors import InterceptorChain, Stage


def _selected(stages: Sequence[Stage]) -> list[Stage]:
    names = os.environ.get("BENCH_STAGES")
    if names is None:
        return list(stages)
    wanted = {name for name in names.split(",") if name}
    return [stage for stage in stages if type(stage).__name__ in wanted]


class _Chain(InterceptorChain):
    def __init__(self, stages: Sequence[Stage]) -> None:
        super().__init__(_selected(stages))


class _Separate(grpc.aio.ServerInterceptor):
    """The stages as grpc.aio runs a list of interceptors: one after the other."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self._stages = _selected(stages)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        async def run(
            index: int, details: grpc.HandlerCallDetails
        ) -> grpc.RpcMethodHandler[Any, Any] | None:
            if index == len(self._stages):
                return await continuation(details)
            return await self._stages[index].intercept_service(
                functools.partial(run, index + 1), details
            )

        return await run(0, handler_call_details)


# The server builds its interceptor from this name when it starts.
interceptor: Any = _Separate if os.environ.get("BENCH_SEPARATE") else _Chain
service.server.InterceptorChain = interceptor  # type: ignore[attr-defined]

if __name__ == "__main__":
    sys.exit(main())
