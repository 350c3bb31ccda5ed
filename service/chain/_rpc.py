"""A Solana JSON-RPC client for one endpoint: keep-alive pooled HTTP, per-call timeouts.

Concurrent calls of the methods in ``BATCHED_METHODS`` go out together as JSON-RPC
batches, at most ``MAX_BATCH`` calls to a request, with at most ``pool_size`` such
requests in flight (what the connection pool holds anyway): a call is sent at the
start of the next turn of the event loop when a request may go, else with the calls
that wait beside it as soon as one comes back. Nothing waits on a quiet client;
under load the calls that would have queued for a connection one by one go together.
Each call still gets its own answer, error or timeout. An endpoint that does not
take batches (it answers a batch with anything but a list, or refuses it with HTTP
400, 405, 413, 415 or 501) gets those calls again one at a time, and from then on
only single requests.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

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


class CallDeadlineExceeded(ChainUnavailable):
    """The served call's deadline (the caller's, or the server's default) passed while
    Solana was asked: the endpoints may be fine, the time was too short."""

    kind = ErrorKind.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"
    default_hint = "set a longer deadline on the call; the endpoints had no time to answer"

    PREFIX = "the call's deadline passed before Solana RPC answered: "


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


log = logging.getLogger(__name__)

# Every build of a wallet not seen for a while asks for its accounts' recent
# prioritization fees: at a high rate of new wallets, the one read many concurrent
# builds make. Sent one by one, each costs a whole HTTP exchange on both sides.
BATCHED_METHODS: Final = frozenset({"getRecentPrioritizationFees"})
# Each answer holds up to 150 slots' fees (~6 KB); a node bounds request bodies
# (50 KiB by default), and a long batch holds all its callers until its last answer.
MAX_BATCH: Final = 32
# How an endpoint that does not take batches may refuse one.
_BATCH_REFUSED: Final = frozenset({400, 405, 413, 415, 501})


@dataclass(eq=False)
class _Queued:
    """A call waiting to go out in the next batch."""

    id: int
    method: str
    params: list[Any]
    timeout: float
    answer: asyncio.Future[Any] = field(repr=False)


class HttpSolanaRpc:
    """`SolanaRpc` over one HTTP endpoint with a pool of keep-alive connections."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        timeout: float = 10.0,
        batched_methods: frozenset[str] = BATCHED_METHODS,
    ) -> None:
        self.url = url
        self._pool_size = pool_size
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._batched = batched_methods
        self._queue: list[_Queued] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._flush_scheduled = False
        self.batches_refused = False
        """The endpoint refused a batch: every call goes out alone."""

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
        """Send one request (or, for `BATCHED_METHODS`, one item of a batch) and return
        its `result`.

        Raises:
            RpcError: the node answered with an error object.
            EndpointFailure: no usable answer (a `ChainUnavailable`).
        """
        budget = timeout if timeout is not None else self._timeout
        if method not in self._batched or self.batches_refused:
            return await self._single(next(self._ids), method, params, budget)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(next(self._ids), method, params, budget, answer))
        if not self._flush_scheduled:
            # After every task that is ready now has run: their calls join this batch.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_queued)
        try:
            async with asyncio.timeout(budget):
                return await answer
        except TimeoutError:
            raise EndpointFailure(method, "timeout", request_sent=True, timeout=True) from None

    def _send_queued(self) -> None:
        """Send what waits, as far as requests may go (again when one comes back)."""
        self._flush_scheduled = False
        while self._queue and len(self._sending) < self._pool_size:
            calls, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            # Calls that gave up while waiting (timed out, cancelled) are not sent.
            calls = [call for call in calls if not call.answer.done()]
            if not calls:
                continue
            task = asyncio.create_task(self._send(calls))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._queue:
            self._send_queued()

    async def _send(self, calls: list[_Queued]) -> None:
        """Send ``calls`` (one request, or one batch) and settle each caller's answer."""
        try:
            if len(calls) > 1 and not self.batches_refused:
                answers = await self._batch(calls)
                if answers is not None:
                    for call in calls:
                        _settle_from(call, answers.get(call.id))
                    return
            await asyncio.gather(*(self._send_alone(call) for call in calls))
        except EndpointFailure as exc:
            for call in calls:
                _settle(
                    call.answer,
                    EndpointFailure(
                        call.method, exc.failure, request_sent=exc.request_sent, timeout=exc.timeout
                    ),
                )
        finally:
            # Cancelled (the client closing): nobody is left waiting for nothing.
            for call in calls:
                _settle(call.answer, _closed(call.method))

    async def _batch(self, calls: list[_Queued]) -> dict[Any, Any] | None:
        """The answers to ``calls`` sent as one batch, by id; None when the endpoint
        does not take batches (from now on, nothing is batched).

        Raises:
            EndpointFailure: no usable answer.
        """
        method = calls[0].method
        body = [
            {"jsonrpc": "2.0", "id": call.id, "method": call.method, "params": call.params}
            for call in calls
        ]
        timeout = max(call.timeout for call in calls)
        answer = await self._post(method, body, timeout, refused=_BATCH_REFUSED)
        if not isinstance(answer, list):
            if not self.batches_refused:
                log.warning(
                    "the Solana endpoint does not take batch requests: sending one at a time"
                )
            self.batches_refused = True
            return None
        return {item.get("id"): item for item in answer if isinstance(item, dict)}

    async def _send_alone(self, call: _Queued) -> None:
        try:
            result = await self._single(call.id, call.method, call.params, call.timeout)
        except (RpcError, EndpointFailure) as exc:
            _settle(call.answer, exc)
        else:
            _settle(call.answer, result=result)

    async def _single(self, request_id: int, method: str, params: list[Any], timeout: float) -> Any:
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        answer = await self._post(method, body, timeout)
        if not isinstance(answer, dict):
            raise _malformed(method)
        return _result(answer)

    async def _post(
        self, method: str, body: Any, timeout: float, *, refused: frozenset[int] = frozenset()
    ) -> Any:
        """The decoded JSON answer to ``body``; None for an HTTP status in ``refused``.

        Raises:
            EndpointFailure: no answer, another status than 200, or not JSON.
        """
        limit = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._client().post(self.url, json=body, timeout=limit) as response:
                if response.status in refused:
                    return None
                if response.status != 200:
                    raise EndpointFailure(
                        method, f"HTTP {response.status}", request_sent=True, timeout=False
                    )
                return await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise _failure(method, exc) from exc

    async def close(self) -> None:
        queued, self._queue = self._queue, []
        for call in queued:
            _settle(call.answer, _closed(call.method))
        for task in list(self._sending):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _result(answer: dict[str, Any]) -> Any:
    """The `result` of one JSON-RPC answer object.

    Raises:
        RpcError: it is an error object.
    """
    error = answer.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise RpcError(0, str(error))
        raise RpcError(int(error.get("code", 0)), str(error.get("message", "")), error.get("data"))
    return answer.get("result")


def _settle_from(call: _Queued, item: Any) -> None:
    """Settle ``call`` with its item of a batch's answer (None: missing)."""
    if item is None:
        _settle(call.answer, _malformed(call.method))
        return
    try:
        result = _result(item)
    except RpcError as exc:
        _settle(call.answer, exc)
    else:
        _settle(call.answer, result=result)


def _malformed(method: str) -> EndpointFailure:
    return EndpointFailure(method, "malformed answer", request_sent=True, timeout=False)


def _closed(method: str) -> EndpointFailure:
    return EndpointFailure(method, "client closed", request_sent=True, timeout=False)


def _settle(
    answer: asyncio.Future[Any], error: BaseException | None = None, *, result: Any = None
) -> None:
    # A caller that timed out (or was cancelled) has stopped waiting: its answer is done.
    if answer.done():
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)


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
