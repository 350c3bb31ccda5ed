"""A Solana JSON-RPC client for one endpoint: keep-alive pooled HTTP, per-call timeouts."""

from __future__ import annotations

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

    def __init__(self, detail: str) -> None:
        super().__init__(f"the Solana RPC endpoint is unavailable: {detail}")


class SolanaRpc(Protocol):
    """What the rest of the service needs from Solana: one JSON-RPC call.

    The single-endpoint client implements it, and so will the failover manager
    that fronts several endpoints.
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

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=30),
                json_serialize=_dumps,
            )
        return self._session

    async def call(self, method: str, params: list[Any], *, timeout: float | None = None) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        limit = aiohttp.ClientTimeout(total=timeout if timeout is not None else self._timeout)
        try:
            async with self._client().post(self.url, json=body, timeout=limit) as response:
                if response.status != 200:
                    raise ChainUnavailable(f"{method}: HTTP {response.status}")
                answer = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise ChainUnavailable(f"{method}: {type(exc).__name__}") from exc
        if not isinstance(answer, dict):
            raise ChainUnavailable(f"{method}: malformed answer")
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


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))
