"""Tracing: one server span per call, following OpenTelemetry's RPC conventions.

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
import secrets
from collections.abc import Iterator
from typing import Any, Final

import grpc
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
    """

    def __init__(self, tracer: trace.Tracer, propagator: TextMapPropagator | None = None) -> None:
        self._tracer = tracer
        self._propagator = propagator or TraceContextTextMapPropagator()

    @contextlib.contextmanager
    def scope(self, call: CallInfo, context: ObservedContext) -> Iterator[None]:
        carrier = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        parent = self._propagator.extract(carrier)
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
        with self._tracer.start_as_current_span(
            f"{call.service}/{call.method}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            ids = span.get_span_context()
            # A no-op tracer has no ids: the request still gets one.
            call.request_id = f"{ids.trace_id:032x}" if ids.is_valid else secrets.token_hex(16)
            context.add_metadata(REQUEST_ID_KEY, call.request_id)
            try:
                yield
            finally:
                _end(span, call)


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
