"""Run every call of a method handler inside a per-call async context manager.

Interceptors that must see the deserialized request, or set a ContextVar the
servicer reads, cannot act in `intercept_service` (it runs before the request is
read, outside the handler's task). They wrap the handler instead: the scope is
entered in the handler's own task with the request, before the servicer runs, and
exited when the servicer returns, raises or the stream ends. A scope refuses a call
by aborting the context before it yields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
CallScope = Callable[[Any, Context], AbstractAsyncContextManager[None]]
"""(request, context) -> the context manager around one call; for client-streaming
methods the "request" is the request iterator."""


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], scope: CallScope
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with each call run inside ``scope(request, context)``."""
    # The stubs type handler behaviours as sync; under grpc.aio they are coroutines
    # (or async generators for server-streaming methods).
    options: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            async with scope(request, context):
                return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **options)
    if handler.stream_unary is not None:
        client_stream: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: Context) -> Any:
            async with scope(requests, context):
                return await client_stream(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, scope), **options
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, scope), **options
        )
    return handler


def _streaming(inner: Any, scope: CallScope) -> Any:
    async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
        async with scope(request, context):
            result = inner(request, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:  # a servicer that writes with context.write() and returns None
                await result

    return stream
