"""A Solana JSON-RPC client for one endpoint: keep-alive pooled HTTP, per-call timeouts."""

from __future__ import annotations

import errno
import itertools
from typing import Any, Protocol

import aiohttp

from service.core.errors import DomainError, ErrorKind


class RpcError(Exception):
    """The endpoint answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class ChainUnavailable(DomainError):
    """No Solana endpoint could answer (refused, timed out, unhealthy)."""

    kind = ErrorKind.UNAVAILABLE
    default_reason = "SOLANA_UNAVAILABLE"
    default_hint = "retry shortly; the service recovers when an endpoint answers again"

    PREFIX = "Solana RPC unavailable: "

    def __init__(self, detail: str) -> None:
        # Re-raising an earlier error's text (as the chain context does) keeps one prefix.
        super().__init__(detail if detail.startswith(self.PREFIX) else self.PREFIX + detail)


class EndpointFailure(ChainUnavailable):
    """One endpoint gave no answer: refused, timed out, dropped, HTTP error, garbage.

    Unlike `RpcError` (the node answered), this says nothing about the request
    itself, so the failover manager may try another endpoint.
    """

    def __init__(self, method: str, failure: str, *, request_sent: bool, timeout: bool) -> None:
        """Describe one failed attempt.

        Args:
            method: the JSON-RPC method that failed.
            failure: short label for logs and error messages ("connection refused",
                "timeout", "HTTP 503", ...); never contains the URL.
            request_sent: False only when the request provably never left (no
                connection), which makes even a non-idempotent call safe to resend.
            timeout: the attempt ran out of time (the endpoint may just be slow).
        """
        super().__init__(f"{method}: {failure}")
        self.failure = failure
        self.request_sent = request_sent
        self.timeout = timeout


class SolanaRpc(Protocol):
    """What the rest of the service needs from Solana: one JSON-RPC call.

    The single-endpoint client implements it, and so does the failover manager
    (`FailoverRpc`) that fronts several endpoints.
    """

    async def call(self, method: str, params: list[Any], *, timeout: float | None = None) -> Any:
        """Send one request and return its `result`.

        Raises:
            RpcError: the node answered with an error object.
            ChainUnavailable: no answer (connection refused, timeout, HTTP error).
        """
        ...

    async def close(self) -> None: ...


class HttpSolanaRpc:
    """`SolanaRpc` over one HTTP endpoint with a pool of keep-alive connections."""

    def __init__(self, url: str, *, pool_size: int = 5, timeout: float = 10.0) -> None:
        self.url = url
        self._pool_size = pool_size
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    @property
    def pool_size(self) -> int:
        """Most connections this client holds open to its endpoint at once."""
        return self._pool_size

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=30),
                json_serialize=_dumps,
            )
        return self._session

    async def call(self, method: str, params: list[Any], *, timeout: float | None = None) -> Any:
        """Send one request and return its `result`.

        Raises:
            RpcError: the node answered with an error object.
            EndpointFailure: no usable answer (a `ChainUnavailable`).
        """
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        limit = aiohttp.ClientTimeout(total=timeout if timeout is not None else self._timeout)
        try:
            async with self._client().post(self.url, json=body, timeout=limit) as response:
                if response.status != 200:
                    raise EndpointFailure(
                        method, f"HTTP {response.status}", request_sent=True, timeout=False
                    )
                answer = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise _failure(method, exc) from exc
        if not isinstance(answer, dict):
            raise EndpointFailure(method, "malformed answer", request_sent=True, timeout=False)
        error = answer.get("error")
        if error is not None:
            raise RpcError(
                int(error.get("code", 0)), str(error.get("message", "")), error.get("data")
            )
        return answer.get("result")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _failure(method: str, exc: BaseException) -> EndpointFailure:
    # Labels only: aiohttp's own messages name the host and may carry credentials.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # Covers waiting for a free pooled connection too: nothing was sent.
        return EndpointFailure(method, "connect timeout", request_sent=False, timeout=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        refused = exc.os_error.errno == errno.ECONNREFUSED
        label = "connection refused" if refused else "cannot connect"
        return EndpointFailure(method, label, request_sent=False, timeout=False)
    if isinstance(exc, TimeoutError):
        return EndpointFailure(method, "timeout", request_sent=True, timeout=True)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return EndpointFailure(method, "disconnected", request_sent=True, timeout=False)
    if isinstance(exc, aiohttp.ClientOSError):
        return EndpointFailure(method, "connection reset", request_sent=True, timeout=False)
    if isinstance(exc, ValueError):
        return EndpointFailure(method, "malformed answer", request_sent=True, timeout=False)
    return EndpointFailure(method, type(exc).__name__, request_sent=True, timeout=False)


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))
