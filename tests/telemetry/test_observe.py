"""The observing interceptors on a bare server: every kind of method and ending, each
as its own grpc interceptor and together in one InterceptorChain (as the service
runs them)."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service.interceptors import (
    AccessLogInterceptor,
    InterceptorChain,
    MetricsInterceptor,
    ObserverGroup,
    ObservingInterceptor,
    Stage,
    TracingInterceptor,
    wrap_handler,
)
from service.telemetry import CallInfo, Metrics, current_call, tracer_provider

from .conftest import Scrape, all_handled, parse_scrape, settled

SERVICE = "test.Echo"


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _fail(request: bytes, context: Any) -> bytes:
    raise RuntimeError("boom")


async def _not_found(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "nothing here", (("x-extra", "1"),))
    raise AssertionError("unreachable")


async def _logged(request: bytes, context: Any) -> bytes:
    logging.getLogger("tests.telemetry.observed").info("inside the call")
    return request


async def _own_headers(request: bytes, context: Any) -> bytes:
    await context.send_initial_metadata((("x-custom", "yes"),))
    return request


async def _set_code(request: bytes, context: Any) -> bytes:
    context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
    context.set_details("not now")
    return b""


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(3):
        yield bytes([i])


async def _writes(request: bytes, context: Any) -> None:
    for _ in range(2):
        await context.write(b"w")


async def _forever(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"first"
    await asyncio.Event().wait()


flooding: ContextVar[bool] = ContextVar("flooding", default=False)
# How each Flood stream's generator ended: the call it saw in its `finally`, or None
# when that ran in another context (a garbage collector's finalizer).
flood_ends: list[CallInfo | None] = []


async def _flood(request: bytes, context: Any) -> AsyncIterator[bytes]:
    """Messages as fast as the client takes them: the generator never waits, so the
    handler is always sending, the generator suspended at its `yield`."""
    token = flooding.set(True)  # as a servicer's span or scope would
    try:
        while True:
            yield bytes(16 * 1024)
    finally:
        try:
            flooding.reset(token)
        except ValueError:  # "created in a different Context"
            flood_ends.append(None)
        else:
            flood_ends.append(current_call.get())


async def _count(requests: AsyncIterator[bytes], context: Any) -> bytes:
    seen = 0
    async for _ in requests:
        seen += 1
    return bytes([seen])


HANDLERS = grpc.method_handlers_generic_handler(
    SERVICE,
    {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Logged": grpc.unary_unary_rpc_method_handler(_logged),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
        "NotFound": grpc.unary_unary_rpc_method_handler(_not_found),
        "OwnHeaders": grpc.unary_unary_rpc_method_handler(_own_headers),
        "SetCode": grpc.unary_unary_rpc_method_handler(_set_code),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        "Writes": grpc.unary_stream_rpc_method_handler(_writes),
        "Forever": grpc.unary_stream_rpc_method_handler(_forever),
        "Flood": grpc.unary_stream_rpc_method_handler(_flood),
        "Count": grpc.stream_unary_rpc_method_handler(_count),
    },
)


@dataclass
class Bare:
    channel: grpc.aio.Channel
    spans: InMemorySpanExporter
    metrics: Metrics

    async def scrape(self) -> Scrape:
        """The metrics once every call has been handled."""

        def scrape() -> Scrape:
            body, _ = self.metrics.exposition()
            return all_handled(parse_scrape(body.decode()))

        return await settled(scrape)

    async def span(self, request_id: str) -> ReadableSpan:
        def find() -> ReadableSpan:
            (span,) = (
                s
                for s in self.spans.get_finished_spans()
                if s.kind is SpanKind.SERVER and s.context.trace_id == int(request_id, 16)
            )
            return span

        return await settled(find)


guarded_call: ContextVar[str | None] = ContextVar("guarded_call", default=None)
# Each guarded call's end, as the guard's `after` saw it.
guard_ends: list[str] = []


class Guard(Stage):
    """Guards calls as authentication and rate limits do (`wrap_handler`): sets a
    ContextVar for the servicer and resets it once the call is done."""

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        async def guard(request: Any, context: Any) -> Callable[[], None]:
            token = guarded_call.set(method)

            def after() -> None:
                guarded_call.reset(token)  # fails in another context
                guard_ends.append(method)

            return after

        return wrap_handler(handler, guard)


async def _serve(
    sample_ratio: float = 1.0,
    *,
    chained: bool = False,
    exported: bool = True,
    guarded: bool = False,
) -> AsyncIterator[Bare]:
    spans = InMemorySpanExporter()
    provider = tracer_provider(sample_ratio=sample_ratio, processors=(SimpleSpanProcessor(spans),))
    metrics = Metrics()
    stages: list[Stage] = [
        TracingInterceptor(provider.get_tracer("test"), spans=exported),
        MetricsInterceptor(metrics),
        AccessLogInterceptor(),
        *([Guard()] if guarded else []),
    ]
    server = grpc.aio.server(interceptors=[InterceptorChain(stages)] if chained else stages)
    server.add_generic_rpc_handlers((HANDLERS,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Bare(channel=channel, spans=spans, metrics=metrics)
    finally:
        await channel.close()
        await server.stop(0)
        provider.shutdown()


@pytest.fixture(params=["separate", "chained"])
async def bare(request: pytest.FixtureRequest) -> AsyncIterator[Bare]:
    async for item in _serve(chained=request.param == "chained"):
        yield item


def _unary(bare: Bare, method: str) -> Any:
    return bare.channel.unary_unary(f"/{SERVICE}/{method}")


def _server_stream(bare: Bare, method: str) -> Any:
    return bare.channel.unary_stream(f"/{SERVICE}/{method}")


def _request_id(metadata: Any) -> str:
    return str(dict(metadata or ())["x-request-id"])


def _labels(method: str, rpc_type: str = "unary") -> dict[str, str]:
    return {"grpc_type": rpc_type, "grpc_service": SERVICE, "grpc_method": method}


async def test_unary_ok(bare: Bare) -> None:
    call = _unary(bare, "Echo")(b"hi")
    assert await call == b"hi"
    request_id = _request_id(await call.trailing_metadata())
    assert dict(await call.initial_metadata() or ()) == {}  # one send, with the status
    span = await bare.span(request_id)
    assert span.name == f"{SERVICE}/Echo"
    assert dict(span.attributes or {})["rpc.grpc.status_code"] == 0
    scrape = await bare.scrape()
    labels = _labels("Echo")
    assert scrape.value("grpc_server_handled_total", **labels, grpc_code="OK") == 1
    assert scrape.value("grpc_server_msg_received_total", **labels) == 1
    assert scrape.value("grpc_server_msg_sent_total", **labels) == 1


async def test_servicer_headers_go_out_with_the_request_id(bare: Bare) -> None:
    call = _unary(bare, "OwnHeaders")(b"x")
    await call
    initial = dict(await call.initial_metadata() or ())
    assert initial["x-custom"] == "yes"
    assert len(initial["x-request-id"]) == 32


async def test_unexpected_exception_is_unknown_and_an_error_span(bare: Bare) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(bare, "Fail")(b"x")
    assert caught.value.code() is grpc.StatusCode.UNKNOWN
    request_id = _request_id(caught.value.trailing_metadata())
    span = await bare.span(request_id)
    assert dict(span.attributes or {})["rpc.grpc.status_code"] == 2
    assert dict(span.attributes or {})["error.type"] == "UNKNOWN"
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    labels = _labels("Fail")
    assert (await bare.scrape()).value(
        "grpc_server_handled_total", **labels, grpc_code="Unknown"
    ) == 1
    assert (await bare.scrape()).get("grpc_server_msg_sent_total", **labels) == 0


async def test_abort_keeps_its_trailers_and_adds_the_request_id(bare: Bare) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(bare, "NotFound")(b"x")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "nothing here"
    trailers = dict(caught.value.trailing_metadata() or ())
    assert trailers["x-extra"] == "1"
    span = await bare.span(str(trailers["x-request-id"]))
    assert span.status.status_code is StatusCode.UNSET
    labels = _labels("NotFound")
    assert (await bare.scrape()).value(
        "grpc_server_handled_total", **labels, grpc_code="NotFound"
    ) == 1


async def test_code_set_without_abort(bare: Bare) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(bare, "SetCode")(b"x")
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    labels = _labels("SetCode")
    scrape = await bare.scrape()
    assert scrape.value("grpc_server_handled_total", **labels, grpc_code="FailedPrecondition") == 1


@pytest.mark.parametrize(("method", "count"), [("Stream", 3), ("Writes", 2)])
async def test_server_streams_count_messages(bare: Bare, method: str, count: int) -> None:
    call = _server_stream(bare, method)(b"x")
    assert len([item async for item in call]) == count
    # Before the first message (a stream may last), and with the status.
    request_id = _request_id(await call.initial_metadata())
    assert len(request_id) == 32
    assert _request_id(await call.trailing_metadata()) == request_id
    labels = _labels(method, "server_stream")
    scrape = await bare.scrape()
    assert scrape.value("grpc_server_msg_sent_total", **labels) == count
    assert scrape.value("grpc_server_msg_received_total", **labels) == 1
    assert scrape.value("grpc_server_handled_total", **labels, grpc_code="OK") == 1


async def test_client_stream_counts_messages(bare: Bare) -> None:
    async def requests() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"r"

    count: Any = bare.channel.stream_unary(f"/{SERVICE}/Count")
    assert await count(requests()) == bytes([4])
    labels = _labels("Count", "client_stream")
    assert (await bare.scrape()).value("grpc_server_msg_received_total", **labels) == 4
    assert (await bare.scrape()).value("grpc_server_msg_sent_total", **labels) == 1


async def test_cancelled_stream_is_counted_as_canceled(bare: Bare) -> None:
    call = _server_stream(bare, "Forever")(b"x")
    assert await call.read() == b"first"
    call.cancel()
    labels = _labels("Forever", "server_stream")
    assert (await bare.scrape()).value(
        "grpc_server_handled_total", **labels, grpc_code="Canceled"
    ) == 1


@pytest.mark.parametrize("stages", ["separate", "chained", "chained with a guard"])
async def test_a_cancelled_stream_closes_the_servicers_generator_in_its_own_call(
    stages: str,
) -> None:
    """Cancelled while sending, the servicer's generator is closed at once, in the
    call's context, and the guards' `after` run there: not left to the garbage
    collector, whose finalizer would run them later, in another context."""
    flood_ends.clear()
    guard_ends.clear()
    async for bare in _serve(chained=stages != "separate", guarded="guard" in stages):
        call = _server_stream(bare, "Flood")(b"x")
        assert len(await call.read()) == 16 * 1024
        request_id = _request_id(await call.initial_metadata())

        def ended() -> None:
            assert flood_ends, "the servicer's generator is still open"
            assert guard_ends or "guard" not in stages, "the guard's after has not run"

        gc.disable()  # what only the garbage collector would close stays open
        try:
            call.cancel()
            await settled(ended)
        finally:
            gc.enable()
        (seen,) = flood_ends
        assert seen is not None and seen.request_id == request_id
        assert guard_ends == (["Flood"] if "guard" in stages else [])


async def test_unsampled_calls_still_get_a_request_id() -> None:
    async for bare in _serve(sample_ratio=0.0):
        call = _unary(bare, "Echo")(b"x")
        await call
        request_id = _request_id(await call.trailing_metadata())
        assert len(request_id) == 32 and int(request_id, 16) != 0
        assert bare.spans.get_finished_spans() == ()
        # A caller's sampled trace is followed whatever the ratio.
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        await _unary(bare, "Echo")(b"x", metadata=(("traceparent", traceparent),))
        span = await bare.span("0af7651916cd43dd8448eb211c80319c")
        assert span.name == f"{SERVICE}/Echo"


@pytest.mark.parametrize("exported", [True, False], ids=["unsampled", "no-exporter"])
async def test_unsampled_calls_have_one_trace_id_in_trailers_and_logs(
    exported: bool, captured_logs: io.StringIO
) -> None:
    caller_trace, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    async for bare in _serve(sample_ratio=0.0, exported=exported, chained=True):
        call = _unary(bare, "Logged")(b"x")
        await call
        fresh = _request_id(await call.trailing_metadata())
        assert len(fresh) == 32 and int(fresh, 16) != 0
        # A caller's unsampled trace is continued, unsampled.
        unsampled = f"00-{caller_trace}-{caller_span}-00"
        continued = _unary(bare, "Logged")(b"x", metadata=(("traceparent", unsampled),))
        await continued
        assert _request_id(await continued.trailing_metadata()) == caller_trace

        def lines(wanted: tuple[str, ...] = (fresh, caller_trace)) -> dict[str, list[Any]]:
            by_id: dict[str, list[Any]] = {}
            for text in captured_logs.getvalue().splitlines():
                line = json.loads(text)
                if line["logger"] in ("tests.telemetry.observed", "service.access"):
                    by_id.setdefault(line["request_id"], []).append(line)
            assert all(len(by_id.get(i, ())) == 2 for i in wanted)
            return by_id

        by_id = await settled(lines)
        for request_id in (fresh, caller_trace):
            inside, access = by_id[request_id]
            assert inside["message"] == "inside the call"
            assert access["logger"] == "service.access"
            # The servicer's line and the access line: the call's trace and its span.
            assert inside["trace_id"] == access["trace_id"] == request_id
            assert inside["span_id"] == access["span_id"] != caller_span
            assert len(inside["span_id"]) == 16 and int(inside["span_id"], 16) != 0
        assert bare.spans.get_finished_spans() == ()
        # A caller's sampled trace: a recorded span when spans are exported; without an
        # exporter none is made, and the ids are the same as ever.
        sampled = f"00-{caller_trace}-{caller_span}-01"
        followed = _unary(bare, "Echo")(b"x", metadata=(("traceparent", sampled),))
        await followed
        assert _request_id(await followed.trailing_metadata()) == caller_trace
        if exported:
            span = await bare.span(caller_trace)
            assert dict(span.attributes or {})["rpc.method"] == "Echo"
        else:
            await bare.scrape()  # the call is over
            assert bare.spans.get_finished_spans() == ()


async def test_chain_wraps_each_method_once_and_merges_the_observers() -> None:
    tracing = TracingInterceptor(tracer_provider(sample_ratio=0.0).get_tracer("test"))
    metrics = MetricsInterceptor(Metrics())
    access = AccessLogInterceptor()
    merged = tracing.merge(metrics)
    assert isinstance(merged, ObserverGroup)
    assert isinstance(merged.merge(access), ObserverGroup)
    assert merged.merge(access).observers == (tracing, metrics, access)  # type: ignore[union-attr]
    chain = InterceptorChain([tracing, metrics, access])
    echo: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(_echo)
    registered: dict[str, Any] = {"/test.Echo/Echo": echo}

    async def lookup(details: grpc.HandlerCallDetails) -> Any:
        return registered.get(details.method)

    def details(method: str) -> grpc.HandlerCallDetails:
        return Details(method=method, invocation_metadata=())

    first = await chain.intercept_service(lookup, details("/test.Echo/Echo"))
    assert first is not None and first is not echo
    assert await chain.intercept_service(lookup, details("/test.Echo/Echo")) is first
    assert await chain.intercept_service(lookup, details("/test.Echo/Missing")) is None
    registered["/test.Echo/Echo"] = grpc.unary_unary_rpc_method_handler(_echo)
    replaced = await chain.intercept_service(lookup, details("/test.Echo/Echo"))
    assert replaced is not None and replaced is not first


class _HoldsTheLoop(ObservingInterceptor):
    """Blocks the server's event loop in :meth:`finished` until a client in another
    thread has its answer (or ``patience`` runs out)."""

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self.answered = threading.Event()
        # Per call: whether the client had its answer, and whether the hook saw the
        # call's own context.
        self.seen: list[tuple[bool, bool]] = []

    def finished(self, call: CallInfo) -> None:
        self.seen.append((self.answered.wait(self.patience), current_call.get() is call))


async def test_the_client_has_its_answer_before_the_observers_finish() -> None:
    # The observers' closing work (the access line, the metrics) is not part of the
    # client's wait: with it in the handler, the answer would wait for the hook, and
    # the hook would give up waiting for the answer.
    holder = _HoldsTheLoop(patience=30.0)
    stages: list[Stage] = [
        TracingInterceptor(tracer_provider(sample_ratio=0.0).get_tracer("test"), spans=False),
        AccessLogInterceptor(),
        holder,
    ]
    server = grpc.aio.server(interceptors=[InterceptorChain(stages)])
    server.add_generic_rpc_handlers((HANDLERS,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    def call() -> bytes:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo: Any = channel.unary_unary(f"/{SERVICE}/Echo")
            answer: bytes = echo(b"hi", timeout=60)
        holder.answered.set()
        return answer

    try:
        assert await asyncio.to_thread(call) == b"hi"
    finally:
        await server.stop(0)
    assert holder.seen == [(True, True)]


@dataclass(frozen=True)
class Details(grpc.HandlerCallDetails):
    method: str
    invocation_metadata: Any
