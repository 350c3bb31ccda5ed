"""A client-side interceptor that sends an API key with every call (as agents do)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


def _with_key(details: grpc.aio.ClientCallDetails, key: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {key}")
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class UnaryUnaryKey(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, key: str) -> None:
        self.key = key

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_key(details, self.key), request)


class UnaryStreamKey(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, key: str) -> None:
        self.key = key

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_key(details, self.key), request)


def keyed_channel(address: str, key: str, *extra: grpc.aio.ClientInterceptor) -> grpc.aio.Channel:
    """A channel whose every call carries `authorization: Bearer <key>` (and goes
    through the ``extra`` interceptors, e.g. a receipt check)."""
    return grpc.aio.insecure_channel(
        address, interceptors=[UnaryUnaryKey(key), UnaryStreamKey(key), *extra]
    )
