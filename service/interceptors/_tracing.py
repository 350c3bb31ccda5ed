"""Tracing: one server span per call, following OpenTelemetry's RPC conventions.

Spans cost: a sampled call's span is made in full (attributes, status, export); an
unsampled one is the SDK's non-recording span, without attributes; and with no
exporter at all no span is made, only its ids (see :class:`TracingInterceptor`).

The span continues the caller's W3C trace context (``traceparent``/``tracestate``
metadata); its trace id is the call's request id: in the logs, in the
``x-request-id`` response metadata (always in the trailers; in the initial metadata
too when that goes out before the end, as with streaming responses) so a client can
quote it.

Why not ``opentelemetry-instrumentation-grpc``'s aio server interceptor: it names the
span with a leading ``/`` and uses the deprecated ``net.peer.*`` attributes; a call
that fails with an unexpected exception keeps ``rpc.grpc.status_code`` 0 (OK) while
the client gets UNKNOWN, and a cancelled call looks successful; its streaming wrapper
breaks servicers that write with ``context.write()``; and it offers no way to hand
the trace id to the response metadata and the logs. The span itself is the same.
"""

from __future__ import annotations

import contextlib
import random
import secrets
from contextvars import Token
from typing import Any, Final

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.telemetry import CallInfo

from ._observe import ObservedContext, ObservingInterceptor, parse_peer

REQUEST_ID_KEY: Final = "x-request-id"
# Codes that make a server span an error (OpenTelemetry gRPC conventions): the
# others are the caller's mistakes, not the server's.
SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TracingInterceptor(ObservingInterceptor):
    """A server span per call; sets the request id (see the module docstring).

    Args:
        tracer: Makes the spans (the server's provider decides sampling and export).
        propagator: Reads the caller's trace context; default W3C Trace Context.
        spans: Whether spans go anywhere (an exporter). Without, no span is made: each
            call gets the ids only, a trace id (the caller's, else a new one) and a
            span id, current for the call's logs and the spans made inside it, which
            costs a fraction of an unsampled SDK span.
    """

    def __init__(
        self,
        tracer: trace.Tracer,
        propagator: TextMapPropagator | None = None,
        *,
        spans: bool = True,
    ) -> None:
        self._tracer = tracer
        self._propagator = propagator or TraceContextTextMapPropagator()
        self._fields = frozenset(self._propagator.fields)
        self._spans = spans

    def scope(
        self, call: CallInfo, context: ObservedContext
    ) -> contextlib.AbstractContextManager[Any]:
        parent = self._parent(context)
        if self._spans:
            span = self._tracer.start_span(
                f"{call.service}/{call.method}",
                context=parent,
                kind=trace.SpanKind.SERVER,
                record_exception=False,
                set_status_on_exception=False,
            )
            # Attributes only for a span that keeps them (a sampled one).
            if span.is_recording():
                span.set_attributes(_attributes(call))
        else:
            span = _ids_only(parent)
        ids = span.get_span_context()
        # A no-op tracer has no ids: the request still gets one.
        call.request_id = f"{ids.trace_id:032x}" if ids.is_valid else secrets.token_hex(16)
        context.add_metadata(REQUEST_ID_KEY, call.request_id)
        return _Current(span, call)

    def _parent(self, context: ObservedContext) -> otel_context.Context:
        """The caller's trace context, read only when the call carries one."""
        carrier: dict[str, str] | None = None
        fields = self._fields
        for key, value in context.invocation_metadata() or ():
            if key in fields and isinstance(value, str):
                if carrier is None:
                    carrier = {}
                carrier[key] = value
        if carrier is None:
            return _ROOT
        return self._propagator.extract(carrier)


_ROOT: Final = otel_context.Context()
"""No caller's trace: the span starts one."""


def _attributes(call: CallInfo) -> dict[str, Any]:
    address, port = parse_peer(call.peer)
    attributes: dict[str, Any] = {
        "rpc.system": "grpc",
        "rpc.service": call.service,
        "rpc.method": call.method,
        "network.transport": "tcp" if port is not None else "unix",
        "network.peer.address": address,
        "client.address": address,
    }
    if port is not None:
        attributes["network.peer.port"] = port
    return attributes


def _ids_only(parent: otel_context.Context) -> trace.Span:
    """A span that records nothing: the caller's trace id and sampling flags (spans made
    inside the call follow them, as under the SDK's parent-based sampler), else a new
    unsampled trace; a new span id."""
    remote = trace.get_current_span(parent).get_span_context()
    if remote.is_valid:
        trace_id, flags, state = remote.trace_id, remote.trace_flags, remote.trace_state
    else:
        trace_id, flags, state = _random_id(128), trace.TraceFlags(trace.TraceFlags.DEFAULT), None
    return trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id, _random_id(64), is_remote=False, trace_flags=flags, trace_state=state
        )
    )


def _random_id(bits: int) -> int:
    # As the SDK's RandomIdGenerator: never the invalid id 0.
    while True:
        value = random.getrandbits(bits)
        if value:
            return value


class _Current:
    """``span`` current for the call (its logs, the spans made inside it); ended with
    the call's outcome."""

    __slots__ = ("_call", "_span", "_token")

    def __init__(self, span: trace.Span, call: CallInfo) -> None:
        self._span = span
        self._call = call
        self._token: Token[otel_context.Context] | None = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(self, *exc_info: object) -> None:
        try:
            _end(self._span, self._call)
            self._span.end()
        finally:
            if self._token is not None:
                otel_context.detach(self._token)


def _end(span: trace.Span, call: CallInfo) -> None:
    if not span.is_recording():
        return
    code = call.code or grpc.StatusCode.UNKNOWN
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if call.key_id is not None:
        span.set_attribute("agentstaking.key_id", call.key_id)
    if call.wallet is not None:
        span.set_attribute("agentstaking.wallet", call.wallet)
    if call.reason is not None:
        span.set_attribute("agentstaking.error.reason", call.reason)
    if call.error is not None:
        span.record_exception(call.error)
    if code in SERVER_ERRORS:
        span.set_attribute("error.type", code.name)
        span.set_status(trace.StatusCode.ERROR, f"{code.name}: {call.details}")
