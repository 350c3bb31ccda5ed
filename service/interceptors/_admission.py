"""Admission: what happens to a call before it enters the service.

grpc.aio reads a unary request itself, before any interceptor's wrapper runs, and
waits for it as long as the client likes: a stream that sends HEADERS and never a
message holds a task and its memory until the client goes away, and a message that
does not decode is answered UNKNOWN with a traceback logged by grpc. So the outermost
stage registers every method as request-streaming (the wire format is the same: one
length-prefixed message, then the end of the stream) and reads the request itself:

- **overload**: while ``max_concurrent_rpcs`` unary calls (or ``max_concurrent_streams``
  server-streaming calls) are in the service, a new one is refused at once with
  RESOURCE_EXHAUSTED and RetryInfo, before its request is even read;
- **a request that never completes** is answered DEADLINE_EXCEEDED after
  ``request_timeout`` seconds; at most ``max_waiting`` calls wait for their request at
  once, and the one that has waited longest is refused when another arrives, so
  header-only streams cannot pile up (a real client's request arrives with its
  headers and never waits long);
- **a message that does not decode** (bytes of another message, invalid UTF-8 in a
  string field) reaches the inner stages as a :class:`MalformedRequest`, so it is
  authenticated, rate limited, counted and logged like any call before
  :class:`RequestCheck` refuses it with INVALID_ARGUMENT and BadRequest;
- **a call without a deadline** gets ``default_deadline`` (unary) or
  ``default_stream_deadline`` (server streaming) seconds, which the Solana RPCs it
  makes also fit into.

Health checks are never refused for overload: a probe must tell the truth about a
busy server, and answering one costs next to nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any, Final, NoReturn, Protocol

import grpc
from google.protobuf.message import DecodeError

from service.api import abort_with, status_for
from service.chain import rpc_deadline
from service.core.errors import DomainError, ErrorKind, FieldViolation, InvalidArgumentError

from ._chain import Stage
from ._wrap import Context, wrap_handler

log = logging.getLogger(__name__)

MALFORMED_REQUEST: Final = "MALFORMED_REQUEST"


class OverloadedError(DomainError):
    """The server is at one of its limits; retrying after a short delay helps."""

    kind = ErrorKind.RESOURCE_EXHAUSTED
    default_reason = "SERVER_OVERLOADED"
    default_hint = "Retry after the delay in RetryInfo, with backoff."

    def __init__(self, message: str, *, retry_after: float, metadata: dict[str, str]) -> None:
        super().__init__(message, metadata=metadata)
        self.retry_after = retry_after


class CallTimeoutError(DomainError):
    """The call ran out of time the server allows it."""

    kind = ErrorKind.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """A request message that did not decode: what the inner stages see instead."""

    message_type: str
    error: str

    def violation(self) -> FieldViolation:
        return FieldViolation(
            field="request",
            description=f"not a valid {self.message_type} message: {self.error}",
            reason=MALFORMED_REQUEST,
        )


class Refusals(Protocol):
    """Where admission reports what it refused (the metrics)."""

    def refused(
        self, rpc_type: str, service: str, method: str, code: grpc.StatusCode, reason: str
    ) -> None:
        """One call of ``service``/``method`` ended with ``code`` before entering, for
        ``reason`` (overloaded, waiting_evicted, request_timeout, incomplete_request)."""


class _Uncounted:
    def refused(
        self, rpc_type: str, service: str, method: str, code: grpc.StatusCode, reason: str
    ) -> None:
        pass


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionLimits:
    """The bounds admission keeps (see the module docstring); 0 turns one off."""

    max_concurrent_rpcs: int = 1000
    max_concurrent_streams: int = 10_000
    request_timeout: float = 10.0
    max_waiting: int = 1000
    default_deadline: float = 30.0
    default_stream_deadline: float = 3600.0
    overload_retry_after: float = 1.0


class _Waiting:
    """Calls waiting for their request, oldest first; each can be cut short."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._calls: collections.OrderedDict[int, asyncio.Timeout] = collections.OrderedDict()
        self._next = 0
        self.evicted: set[int] = set()

    def enter(self, timeout: asyncio.Timeout) -> int:
        ticket = self._next
        self._next += 1
        self._calls[ticket] = timeout
        if self._limit and len(self._calls) > self._limit:
            oldest, cut = self._calls.popitem(last=False)
            try:
                cut.reschedule(asyncio.get_running_loop().time())
            except RuntimeError:
                pass  # already timing out on its own: it leaves as a timeout
            else:
                self.evicted.add(oldest)
        return ticket

    def leave(self, ticket: int) -> bool:
        """Forget the call; True when it was cut short to make room for another."""
        self._calls.pop(ticket, None)
        if ticket in self.evicted:
            self.evicted.discard(ticket)
            return True
        return False

    def __len__(self) -> int:
        return len(self._calls)


class Admission(Stage):
    """The outermost stage: see the module docstring.

    Args:
        limits: The bounds.
        refusals: Told of every call refused here (metrics).
        exempt_services: Services never refused for overload (health checks).
        clock: Monotonic seconds (the overload log's interval).
    """

    def __init__(
        self,
        limits: AdmissionLimits,
        *,
        refusals: Refusals | None = None,
        exempt_services: Collection[str] = ("grpc.health.v1.Health",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._refusals: Refusals = refusals or _Uncounted()
        self._exempt = frozenset(exempt_services)
        self._clock = clock
        self.unary_in_flight = 0
        self.streams_in_flight = 0
        self._waiting = _Waiting(limits.max_waiting)
        self._shed_since_log = 0
        self._shed_logged = 0.0
        # What a refusal answers never changes: built once, not per refused call (a
        # flood is answered at the rate these go out).
        retry = limits.overload_retry_after
        self._overloaded = {
            kind: status_for(
                OverloadedError(
                    f"the server is at its limit of {limit} {kind} calls in flight; retry "
                    "after the delay in RetryInfo",
                    retry_after=retry,
                    metadata={"limit": name, "max_in_flight": str(limit)},
                )
            )
            for kind, name, limit in (
                ("unary", "max_concurrent_rpcs", limits.max_concurrent_rpcs),
                ("server_stream", "max_concurrent_streams", limits.max_concurrent_streams),
            )
        }
        self._evicted = status_for(
            OverloadedError(
                "too many calls are waiting for their request message; this one waited longest",
                retry_after=retry,
                metadata={"limit": "max_waiting_requests", "max_waiting": str(limits.max_waiting)},
            )
        )
        timeout = f"{limits.request_timeout:g}"
        self._timed_out = status_for(
            CallTimeoutError(
                f"the request message did not arrive within {timeout} s of the call's headers",
                reason="REQUEST_TIMEOUT",
                metadata={"request_timeout_seconds": timeout},
            )
        )

    @property
    def waiting(self) -> int:
        """Calls waiting for their request now."""
        return len(self._waiting)

    def stats(self) -> dict[str, int]:
        return {
            "unary_in_flight": self.unary_in_flight,
            "streams_in_flight": self.streams_in_flight,
            "waiting_for_request": len(self._waiting),
        }

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        decode = handler.request_deserializer
        if decode is None or handler.request_streaming:
            # Request-streaming methods (reflection) read their messages themselves:
            # they only get a decoder that refuses malformed ones cleanly.
            return _streaming_requests(handler, service, method)
        type_name = _message_type(decode)
        exempt = service in self._exempt
        if handler.unary_unary is not None:
            unary: Any = handler.unary_unary

            async def admit_unary(requests: Any, context: Context) -> Any:
                if not exempt and self.unary_in_flight >= self.limits.max_concurrent_rpcs > 0:
                    await self._shed(context, service, method, "unary")
                request = await self._read(context, decode, type_name, service, method, "unary")
                self.unary_in_flight += 1
                try:
                    if context.time_remaining() is not None or not self.limits.default_deadline:
                        return await unary(request, context)
                    return await self._within(
                        unary(request, context), self.limits.default_deadline, context
                    )
                finally:
                    self.unary_in_flight -= 1

            return grpc.stream_unary_rpc_method_handler(
                admit_unary, response_serializer=handler.response_serializer
            )
        assert handler.unary_stream is not None
        stream: Any = handler.unary_stream

        async def admit_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
            limit = self.limits.max_concurrent_streams
            if not exempt and self.streams_in_flight >= limit > 0:
                await self._shed(context, service, method, "server_stream")
            request = await self._read(context, decode, type_name, service, method, "server_stream")
            self.streams_in_flight += 1
            try:
                default = self.limits.default_stream_deadline
                if context.time_remaining() is not None or not default:
                    async for item in _items(stream(request, context)):
                        yield item
                    return
                deadline = asyncio.get_running_loop().time() + default
                with rpc_deadline(default):
                    try:
                        async with asyncio.timeout_at(deadline):
                            async for item in _items(stream(request, context)):
                                yield item
                    except TimeoutError:
                        await _deadline_exceeded(context, default)
            finally:
                self.streams_in_flight -= 1

        return grpc.stream_stream_rpc_method_handler(
            admit_stream, response_serializer=handler.response_serializer
        )

    async def _within(self, work: Any, seconds: float, context: Context) -> Any:
        with rpc_deadline(seconds):
            try:
                async with asyncio.timeout(seconds):
                    return await work
            except TimeoutError:
                await _deadline_exceeded(context, seconds)

    async def _read(
        self,
        context: Context,
        decode: Callable[[bytes], Any],
        type_name: str,
        service: str,
        method: str,
        rpc_type: str,
    ) -> Any:
        """The call's one request message (or a MalformedRequest)."""
        limit = self.limits.request_timeout or None
        evicted = False
        try:
            async with asyncio.timeout(limit) as timeout:
                ticket = self._waiting.enter(timeout)
                try:
                    raw = await context.read()
                finally:
                    evicted = self._waiting.leave(ticket)
        except TimeoutError:
            if evicted:
                self._refusals.refused(
                    rpc_type, service, method, grpc.StatusCode.RESOURCE_EXHAUSTED, "waiting_evicted"
                )
                await abort_with(context, self._evicted)
            self._refusals.refused(
                rpc_type, service, method, grpc.StatusCode.DEADLINE_EXCEEDED, "request_timeout"
            )
            await abort_with(context, self._timed_out)
        if raw is grpc.aio.EOF:
            self._refusals.refused(
                rpc_type, service, method, grpc.StatusCode.INVALID_ARGUMENT, "incomplete_request"
            )
            missing = MalformedRequest(type_name, "the stream ended without a message")
            await abort_with(context, status_for(_malformed(missing)))
        try:
            return decode(raw)
        except (DecodeError, ValueError, TypeError) as exc:
            return MalformedRequest(type_name, _decode_error_text(exc))

    async def _shed(self, context: Context, service: str, method: str, rpc_type: str) -> NoReturn:
        self._refusals.refused(
            rpc_type, service, method, grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded"
        )
        self._shed_since_log += 1
        now = self._clock()
        if now - self._shed_logged >= 10.0:
            log.warning(
                "overloaded: refused %d calls since the last report (%d unary calls and %d "
                "streams in flight)",
                self._shed_since_log,
                self.unary_in_flight,
                self.streams_in_flight,
            )
            self._shed_logged = now
            self._shed_since_log = 0
        await abort_with(context, self._overloaded[rpc_type])


class RequestCheck(Stage):
    """The innermost stage: a call whose request did not decode is refused here, after
    authentication and rate limits (so garbage costs its sender like any call)."""

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.request_streaming:
            return handler

        async def check(request: Any, context: Context) -> None:
            if isinstance(request, MalformedRequest):
                await abort_with(context, status_for(_malformed(request)))

        return wrap_handler(handler, check)


def _malformed(request: MalformedRequest) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"the request is not a valid {request.message_type} message",
        reason=MALFORMED_REQUEST,
        violations=[request.violation()],
        hint="send the message encoded with the service's protos (see server reflection)",
    )


async def _deadline_exceeded(context: Context, seconds: float) -> NoReturn:
    await abort_with(
        context,
        status_for(
            CallTimeoutError(
                f"the call brought no deadline and ran past the default of {seconds:g} s",
                metadata={"default_deadline_seconds": f"{seconds:g}"},
                hint="set a deadline (grpc-timeout) on calls that may take longer",
            )
        ),
    )


async def _items(result: Any) -> AsyncIterator[Any]:
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:  # a servicer that writes with context.write() and returns None
        await result


def _streaming_requests(
    handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    decode = handler.request_deserializer
    if decode is None:
        return handler
    type_name = _message_type(decode)

    def strict(raw: bytes) -> Any:
        try:
            return decode(raw)
        except (DecodeError, ValueError, TypeError) as exc:
            raise _Undecodable(MalformedRequest(type_name, _decode_error_text(exc))) from None

    options: dict[str, Any] = {
        "request_deserializer": None,
        "response_serializer": handler.response_serializer,
    }

    async def messages(requests: Any, context: Context) -> AsyncIterator[Any]:
        async for raw in requests:
            try:
                yield strict(raw)
            except _Undecodable as exc:
                await abort_with(context, status_for(_malformed(exc.request)))

    if handler.stream_unary is not None:
        client_stream: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: Context) -> Any:
            return await client_stream(messages(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **options)
    assert handler.stream_stream is not None
    bidi: Any = handler.stream_stream

    async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
        async for item in _items(bidi(messages(requests, context), context)):
            yield item

    return grpc.stream_stream_rpc_method_handler(stream_stream, **options)


class _Undecodable(Exception):
    def __init__(self, request: MalformedRequest) -> None:
        self.request = request


def _message_type(decode: Callable[[bytes], Any]) -> str:
    """``agentstaking.v1.BuildStakeTransactionRequest`` from a generated FromString."""
    owner = getattr(decode, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


def _decode_error_text(exc: Exception) -> str:
    # The protobuf runtime's text names the type; keep it short and free of input bytes.
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
