"""Watching calls from the outside: the machinery of the tracing, metrics and access
log interceptors.

The outermost observing interceptor creates the call's :class:`CallInfo` (kept in
``current_call``) and an :class:`ObservedContext`, which every interceptor and the
servicer inside then use. The observed context

- records how the call ended (``abort``, ``set_code``) and the ErrorInfo reason in the
  ``grpc-status-details-bin`` trailer;
- is the one place where response metadata is gathered: what the interceptors add
  (``x-request-id``, ``x-ratelimit-*``) goes out with the trailers, merged into
  whatever trailers the call ends with, aborts included. A unary response then costs
  one send, message, status and trailers together, as without interceptors (grpc.aio
  cannot add initial metadata to that send: a send of its own would cost a second
  batch per call). Streaming responses also carry it in the initial metadata, sent
  before the first message, and so does a servicer that sends its own.

Each observing interceptor sees every message that passes through it and the call's
final status, computed the same way at every level before the call's answer leaves
(its trailers, its duration). What the observers then do with it (the access log
line, the metrics) runs after the answer has gone to gRPC, in the call's context (its
ids, its logs' fields): none of it is on the client's wait. Server streams are
written through the observed context (never handed to gRPC as a generator), so a
stream that ends in any way closes the servicer's generator in its own call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextvars import Token, copy_context
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn
from urllib.parse import unquote

import grpc
from google.rpc import error_details_pb2, status_pb2

from service.telemetry import CallInfo, current_call

from ._chain import Stage
from ._wrap import send_stream

log = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"
Metadata = tuple[tuple[str, str | bytes], ...]


class ObservedContext(grpc.aio.ServicerContext[Any, Any]):
    """The servicer context, observed (see the module docstring). Everything else is
    passed through to the real context."""

    def __init__(self, inner: grpc.aio.ServicerContext[Any, Any], call: CallInfo) -> None:
        self.inner = inner
        self.call = call
        self.observers: list[ObservingInterceptor] = []
        self.code_set: grpc.StatusCode | None = None
        self.details_set = ""
        self.aborted = False
        self.headers_sent = False
        self._headers: list[tuple[str, str]] = []
        self._trailers: list[tuple[str, str]] = []
        self._user_trailers: Metadata = ()
        self._final_trailers: Metadata = ()
        self._trailers_applied = False
        self._metadata: Any = None

    # --- what the observers add ----------------------------------------------------

    def add_metadata(self, key: str, value: str) -> None:
        """Give the client ``key: value``: among the trailers however the call ends, and
        in the initial metadata when that goes out before the end (see the module
        docstring)."""
        self._trailers.append((key, value))
        if not self.headers_sent:
            self._headers.append((key, value))

    async def flush_headers(self) -> None:
        """Streaming responses: send the gathered initial metadata now unless it has
        gone out."""
        if not self.headers_sent and not self.aborted:
            self.headers_sent = True
            if self._headers:
                await self.inner.send_initial_metadata(tuple(self._headers))

    def apply_trailers(self) -> None:
        """Make the gathered trailers part of the call's end (idempotent)."""
        if not self._trailers_applied and not self.aborted:
            self._trailers_applied = True
            self._final_trailers = (*self._user_trailers, *self._trailers)
            if self._final_trailers:
                self.inner.set_trailing_metadata(self._final_trailers)

    def error_reason(self) -> str | None:
        """The ErrorInfo reason the call failed with, if it carried one."""
        for key, value in self._final_trailers:
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                return _error_info_reason(value)
        return None

    # --- observed ---------------------------------------------------------------------

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        self.aborted = True
        self.code_set = code
        self.details_set = details
        own: Metadata = tuple(trailing_metadata) if trailing_metadata else self._user_trailers
        self._final_trailers = (*own, *self._trailers)
        self._trailers_applied = True
        await self.inner.abort(code, details, self._final_trailers)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code_set = code
        self.inner.set_code(code)

    def set_details(self, details: str) -> None:
        self.details_set = details
        self.inner.set_details(details)

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        self.headers_sent = True
        await self.inner.send_initial_metadata((*self._headers, *tuple(initial_metadata)))

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._user_trailers = tuple(trailing_metadata)
        self._final_trailers = (*self._user_trailers, *self._trailers)
        self.inner.set_trailing_metadata(self._final_trailers)

    async def write(self, message: Any) -> None:
        await self.flush_headers()
        for observer in self.observers:
            observer.sent(self.call)
        await self.inner.write(message)

    async def read(self) -> Any:
        message = await self.inner.read()
        if message is not grpc.aio.EOF:
            for observer in self.observers:
                observer.received(self.call)
        return message

    # --- passed through -------------------------------------------------------------

    async def abort_with_status(self, status: Any) -> NoReturn:  # pragma: no cover
        await self.inner.abort_with_status(status)
        raise AssertionError("unreachable: abort raises")

    def invocation_metadata(self) -> Any:
        # grpc decodes the metadata anew on each call; tracing and auth both read it.
        if self._metadata is None:
            self._metadata = self.inner.invocation_metadata()
        return self._metadata

    def set_compression(self, compression: grpc.Compression) -> None:
        self.inner.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self.inner.disable_next_message_compression()

    def peer(self) -> str:
        return self.inner.peer()

    def peer_identities(self) -> Any:
        return self.inner.peer_identities()

    def peer_identity_key(self) -> str | None:
        return self.inner.peer_identity_key()

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self.inner.auth_context()

    def time_remaining(self) -> Any:
        return self.inner.time_remaining()

    def trailing_metadata(self) -> Any:
        return self.inner.trailing_metadata()

    def code(self) -> Any:
        return self.inner.code()

    def details(self) -> str:
        return self.inner.details()

    def add_done_callback(self, callback: Any) -> None:
        self.inner.add_done_callback(callback)

    def cancelled(self) -> bool:
        return self.inner.cancelled()

    def done(self) -> bool:
        return self.inner.done()


def add_response_metadata(
    context: grpc.aio.ServicerContext[Any, Any], metadata: Iterable[tuple[str, str]]
) -> None:
    """Give the client ``metadata`` with the response: gathered by the observing
    interceptors' context (:meth:`ObservedContext.add_metadata`); without them, as the
    call's trailers."""
    if isinstance(context, ObservedContext):
        for key, value in metadata:
            context.add_metadata(key, value)
    else:
        context.set_trailing_metadata(tuple(metadata))


def _error_info_reason(packed: bytes) -> str | None:
    try:
        status = status_pb2.Status.FromString(packed)
    except Exception:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason or None
    return None


def _finish(call: CallInfo, context: ObservedContext, error: BaseException | None) -> None:
    """Record how the call ended; the first observer out decides, the others agree."""
    if call.code is not None:
        return
    call.duration = time.perf_counter() - call.started
    if error is None:
        context.apply_trailers()
        call.code = context.code_set or grpc.StatusCode.OK
        call.details = context.details_set
    elif context.aborted:
        call.code = context.code_set or grpc.StatusCode.UNKNOWN
        call.details = context.details_set
    elif isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        call.code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    else:
        # grpc answers UNKNOWN (or a code the servicer set) with the exception's text;
        # the trailers set here go with it.
        context.apply_trailers()
        code = context.code_set
        call.code = code if code not in (None, grpc.StatusCode.OK) else grpc.StatusCode.UNKNOWN
        call.details = f"unexpected {type(error).__name__}"
        call.error = error
    if call.code is not grpc.StatusCode.OK:
        call.reason = context.error_reason()


def parse_peer(peer: str) -> tuple[str, int | None]:
    """``ipv4:1.2.3.4:5`` / ``ipv6:[::1]:5`` -> (address, port); ``unix:...`` -> (path, None)."""
    kind, _, rest = unquote(peer).partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        return host.strip("[]"), int(port) if port.isdigit() else None
    return rest or peer, None


class ObservingInterceptor(Stage):
    """Base of the interceptors that watch calls: override the hooks.

    Hooks run in the handler's task, in this order: :meth:`scope` entered,
    :meth:`started`, :meth:`received`/:meth:`sent` per message, :meth:`scope` exited
    (the call's code, reason and duration set). :meth:`finished` runs last, once the
    handler has handed gRPC the call's answer, in a copy of the call's context as it
    was before the scopes exited (it sees what the call's logs see). Observers in one
    :class:`ObserverGroup` run as if nested, the first outermost (``finished``: inner
    observers first). A hook left as it is here is not called at all.
    """

    def for_method(self, service: str, method: str, rpc_type: str) -> ObservingInterceptor:
        """The observer of one method's calls, asked once per method: this one, or one
        with what it needs per call (metric series, say) found in advance."""
        return self

    def scope(
        self, call: CallInfo, context: ObservedContext
    ) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def started(self, call: CallInfo) -> None:
        pass

    def received(self, call: CallInfo) -> None:
        pass

    def sent(self, call: CallInfo) -> None:
        pass

    def finished(self, call: CallInfo) -> None:
        pass

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return _observed_handler(handler, service, method, (self,))

    def merge(self, inner: Stage) -> Stage | None:
        return ObserverGroup((self, inner)) if isinstance(inner, ObservingInterceptor) else None


class ObserverGroup(Stage):
    """Several observers around a handler with one wrapper, outermost first."""

    def __init__(self, observers: tuple[ObservingInterceptor, ...]) -> None:
        self.observers = observers

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return _observed_handler(handler, service, method, self.observers)

    def merge(self, inner: Stage) -> Stage | None:
        if isinstance(inner, ObservingInterceptor):
            return ObserverGroup((*self.observers, inner))
        return None


Hook = Callable[[CallInfo], None]


def _overrides(observer: ObservingInterceptor, hook: str) -> bool:
    return getattr(type(observer), hook) is not getattr(ObservingInterceptor, hook)


@dataclass(frozen=True, slots=True)
class _Plan:
    """One method's observers and the hooks they override, found once per method."""

    service: str
    method: str
    rpc_type: str
    observers: tuple[ObservingInterceptor, ...]
    # Per observer, outermost first: (observer, its scope, started, finished), None
    # where it keeps the base class's no-op.
    steps: tuple[
        tuple[
            ObservingInterceptor,
            Callable[[CallInfo, ObservedContext], contextlib.AbstractContextManager[Any]] | None,
            Hook | None,
            Hook | None,
        ],
        ...,
    ]
    received: tuple[Hook, ...]
    sent: tuple[Hook, ...]

    @classmethod
    def of(
        cls,
        observers: tuple[ObservingInterceptor, ...],
        service: str,
        method: str,
        rpc_type: str,
    ) -> _Plan:
        bound = tuple(o.for_method(service, method, rpc_type) for o in observers)
        return cls(
            service=service,
            method=method,
            rpc_type=rpc_type,
            observers=bound,
            steps=tuple(
                (
                    o,
                    o.scope if _overrides(o, "scope") else None,
                    o.started if _overrides(o, "started") else None,
                    o.finished if _overrides(o, "finished") else None,
                )
                for o in bound
            ),
            received=tuple(o.received for o in bound if _overrides(o, "received")),
            sent=tuple(o.sent for o in bound if _overrides(o, "sent")),
        )


class _Watch:
    """Watch one call: scopes entered and hooks run as if each observer wrapped the
    next, inner observers finishing first. (A class: a generator-based context manager
    costs a generator and a StopIteration on every call.)"""

    __slots__ = ("_context", "_entered", "_observed", "_plan", "_token")

    def __init__(self, plan: _Plan, context: Any) -> None:
        self._plan = plan
        self._context = context
        self._entered: list[tuple[Hook | None, contextlib.AbstractContextManager[Any] | None]] = []
        self._token: Token[CallInfo | None] | None = None

    def __enter__(self) -> ObservedContext:
        plan, context = self._plan, self._context
        if isinstance(context, ObservedContext):
            observed = context
        else:
            call = CallInfo(
                service=plan.service,
                method=plan.method,
                rpc_type=plan.rpc_type,
                peer=context.peer(),
            )
            observed = ObservedContext(context, call)
            self._token = current_call.set(call)
        self._observed = observed
        call = observed.call
        entered = self._entered
        try:
            for observer, scoped, started, finished in plan.steps:
                scope = scoped(call, observed) if scoped is not None else None
                if scope is not None:
                    scope.__enter__()
                entered.append((finished, scope))
                observed.observers.append(observer)
                if started is not None:
                    _safely(started, call)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return observed

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            _leave(self._observed.call, self._observed, self._entered, error)
        finally:
            if self._token is not None:
                current_call.reset(self._token)


def _leave(
    call: CallInfo,
    observed: ObservedContext,
    entered: list[tuple[Hook | None, contextlib.AbstractContextManager[Any] | None]],
    error: BaseException | None,
) -> None:
    # The context as the call's own logs see it, taken before the scopes reset theirs.
    seen = copy_context()
    finishing: list[Hook] = []
    for finished, scope in reversed(entered):
        _finish(call, observed, error)
        if finished is not None:
            finishing.append(finished)
        observed.observers.pop()
        if scope is not None:
            if error is None:
                scope.__exit__(None, None, None)
            else:
                scope.__exit__(type(error), error, error.__traceback__)
    if finishing:
        # Run once this task yields: grpc.aio sends a handler's answer (message, status,
        # trailers) before its task next waits, so the hooks' work (the access line, the
        # metrics: 0.1-0.15 ms of a build's 1.5 ms at a low rate) is not part of the
        # client's wait.
        asyncio.get_running_loop().call_soon(_finished, finishing, call, context=seen)


def _finished(hooks: list[Hook], call: CallInfo) -> None:
    for hook in hooks:
        _safely(hook, call)


def _safely(hook: Hook, call: CallInfo) -> None:
    # Watching a call must never break it.
    try:
        hook(call)
    except Exception:
        log.exception("%s failed on %s", hook.__qualname__, call.full_method)


def _observed_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    service: str,
    method: str,
    observers: tuple[ObservingInterceptor, ...],
) -> grpc.RpcMethodHandler[Any, Any]:
    options: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    # The stubs type handler behaviours as sync; under grpc.aio they are coroutines
    # (or async generators for server-streaming methods).
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary
        plan = _Plan.of(observers, service, method, "unary")

        async def unary_unary(request: Any, context: Any) -> Any:
            with _Watch(plan, context) as observed:
                call = observed.call
                for received in plan.received:
                    received(call)
                response = await unary(request, observed)
                for sent in plan.sent:
                    sent(call)
                return response

        return grpc.unary_unary_rpc_method_handler(unary_unary, **options)
    if handler.stream_unary is not None:
        client_stream: Any = handler.stream_unary
        plan = _Plan.of(observers, service, method, "client_stream")

        async def stream_unary(requests: Any, context: Any) -> Any:
            with _Watch(plan, context) as observed:
                response = await client_stream(_counted(requests, plan, observed), observed)
                for sent in plan.sent:
                    sent(observed.call)
                return response

        return grpc.stream_unary_rpc_method_handler(stream_unary, **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(
                handler.unary_stream, _Plan.of(observers, service, method, "server_stream"), False
            ),
            **options,
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _streaming(
                handler.stream_stream, _Plan.of(observers, service, method, "bidi_stream"), True
            ),
            **options,
        )
    return handler


def _streaming(inner: Any, plan: _Plan, client_streaming: bool) -> Any:
    async def stream(request: Any, context: Any) -> None:
        with _Watch(plan, context) as observed:
            if client_streaming:
                request = _counted(request, plan, observed)
            else:
                for received in plan.received:
                    received(observed.call)
            # Each message goes out through the observed context (and is seen there).
            await send_stream(inner(request, observed), observed.write)

    return stream


async def _counted(requests: Any, plan: _Plan, observed: ObservedContext) -> AsyncIterator[Any]:
    async for request in requests:
        for received in plan.received:
            received(observed.call)
        yield request
