"""OpenTelemetry tracing: the tracer provider the settings describe.

The provider is built per server and handed to whatever makes spans (interceptors,
the Solana failover manager, the key manager, the rate limiter), never installed
globally: several servers in one process (tests) keep their own exporters.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased


def span_exporter(
    exporter: str, endpoint: str = "", headers: Mapping[str, str] | None = None
) -> SpanExporter | None:
    """The OTLP exporter called ``exporter`` (``none``, ``otlp-grpc``, ``otlp-http``).

    Without ``endpoint`` the exporter takes OpenTelemetry's standard
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``/``OTEL_EXPORTER_OTLP_ENDPOINT``, else
    ``http://localhost:4317`` (gRPC) or ``http://localhost:4318/v1/traces`` (HTTP).

    Raises:
        ValueError: unknown exporter.
    """
    if exporter == "none":
        return None
    if exporter == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(
            endpoint=endpoint or None,
            insecure=endpoint.startswith("http://") if endpoint else None,
            headers=dict(headers) if headers else None,
        )
    if exporter == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter(endpoint=endpoint or None, headers=dict(headers) if headers else None)
    raise ValueError(f"unknown tracing exporter {exporter!r} (none, otlp-grpc, otlp-http)")


def tracer_provider(
    *,
    service_name: str = "agent-staking",
    sample_ratio: float = 1.0,
    exporter: SpanExporter | None = None,
    processors: tuple[SpanProcessor, ...] = (),
) -> TracerProvider:
    """A provider sampling ``sample_ratio`` of new traces (callers' sampled traces always).

    Args:
        service_name: ``service.name`` resource attribute.
        sample_ratio: Share of root traces recorded (0 to 1). Unsampled calls still get
            a trace id (logs, ``x-request-id``), only no spans are recorded.
        exporter: Batched exporter of finished spans, if any.
        processors: Further span processors (tests add an in-memory exporter).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        service_version = version("agent-staking")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        service_version = "0"
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service_name, "service.version": service_version}
        ),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider
