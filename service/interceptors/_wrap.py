"""Run a guard before every call of a method handler.

Interceptors that must see the deserialized request, or set a ContextVar the
servicer reads, cannot act in `intercept_service` (it runs before the request is
read, outside the handler's task). They wrap the handler instead: the guard runs in
the handler's own task with the request, before the servicer; it refuses a call by
aborting the context, and may return a function to run when the servicer returns,
raises or the stream ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
Guard = Callable[[Any, Context], Awaitable[Callable[[], None] | None]]
"""(request, context) -> what to run after the call (or None); for client-streaming
methods the "request" is the request iterator."""


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], guard: Guard
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with ``guard(request, context)`` run before each call."""
    # The stubs type handler behaviours as sync; under grpc.aio they are coroutines
    # (or async generators for server-streaming methods; the wrapper of a streaming
    # one is a coroutine that writes their items: `send_stream`).
    options: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            after = await guard(request, context)
            try:
                return await unary(request, context)
            finally:
                if after is not None:
                    after()

        return grpc.unary_unary_rpc_method_handler(unary_unary, **options)
    if handler.stream_unary is not None:
        client_stream: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: Context) -> Any:
            after = await guard(requests, context)
            try:
                return await client_stream(requests, context)
            finally:
                if after is not None:
                    after()

        return grpc.stream_unary_rpc_method_handler(stream_unary, **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, guard), **options
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, guard), **options
        )
    return handler


def _streaming(inner: Any, guard: Guard) -> Any:
    async def stream(request: Any, context: Context) -> None:
        after = await guard(request, context)
        try:
            await send_stream(inner(request, context), context.write)
        finally:
            if after is not None:
                after()

    return stream


async def send_stream(result: Any, write: Callable[[Any], Awaitable[None]]) -> None:
    """Send what a streaming handler returned: each item of an async iterator with
    ``write``, or nothing more for a handler that wrote with ``context.write()`` and
    returned None (a coroutine, awaited here).

    NOTE: written here rather than yielded to gRPC, which never closes a generator it
    iterates: a call that ends while sending (cancelled, past its deadline) would leave
    the servicer's generator (its subscriptions, its `finally`) to the garbage
    collector, whose finalizer runs it later, in another context. Here it is closed at
    once, in the call's own task.
    """
    if hasattr(result, "__aiter__"):
        async with contextlib.aclosing(result) as items:
            async for item in items:
                await write(item)
    else:
        await result
