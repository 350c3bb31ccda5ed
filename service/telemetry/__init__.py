"""Observability: Prometheus metrics, JSON logs with correlation ids, OpenTelemetry traces.

:class:`Telemetry` bundles what one server uses: its tracer provider (from the
``tracing_*`` settings) and its :class:`Metrics`. Logging is process-wide and set up
by the program's ``main`` (:func:`configure_logging`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from ._collectors import MULTIPROCESS_MODES
from ._context import (
    CallInfo,
    current_call,
    note_auth_failure,
    note_principal,
    note_rate_limited,
    note_wallet,
)
from ._http import MetricsListener
from ._logging import (
    JsonFormatter,
    LogHandler,
    MetadataEncodingFilter,
    TextFormatter,
    configure_logging,
    redact,
)
from ._metrics import (
    GO_CODE_NAMES,
    BuildSeries,
    GrpcSeries,
    Metrics,
    build_kind,
    multiprocess_mode,
    rpc_type,
)
from ._multiprocess import SnapshotCollector, read_snapshots, write_snapshot
from ._stderr import StderrCapture, capture_stderr
from ._tracing import span_exporter, tracer_provider

if TYPE_CHECKING:
    from service.config import Settings


@dataclass
class Telemetry:
    """A server's tracer provider and metrics."""

    provider: TracerProvider
    metrics: Metrics = field(default_factory=Metrics)
    exports_spans: bool = True
    """Whether spans go anywhere; without an exporter calls get trace ids, no spans."""

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("service")

    @classmethod
    def from_settings(cls, settings: Settings) -> Telemetry:
        """Tracing as the ``tracing_*`` settings say; fresh metrics."""
        exporter = span_exporter(
            settings.tracing_exporter, settings.tracing_endpoint, settings.tracing_headers
        )
        return cls(
            provider=tracer_provider(
                service_name=settings.tracing_service_name,
                # Without an exporter nothing is recorded: calls still get trace ids (logs,
                # x-request-id) from the tracing interceptor, without spans.
                sample_ratio=settings.tracing_sample_ratio if exporter is not None else 0.0,
                exporter=exporter,
            ),
            exports_spans=exporter is not None,
        )

    def shutdown(self) -> None:
        """Flush and close the span exporter."""
        self.provider.shutdown()


__all__ = [
    "GO_CODE_NAMES",
    "MULTIPROCESS_MODES",
    "BuildSeries",
    "CallInfo",
    "GrpcSeries",
    "JsonFormatter",
    "LogHandler",
    "MetadataEncodingFilter",
    "Metrics",
    "MetricsListener",
    "SnapshotCollector",
    "StderrCapture",
    "Telemetry",
    "TextFormatter",
    "build_kind",
    "capture_stderr",
    "configure_logging",
    "current_call",
    "multiprocess_mode",
    "note_auth_failure",
    "note_principal",
    "note_rate_limited",
    "note_wallet",
    "read_snapshots",
    "redact",
    "rpc_type",
    "span_exporter",
    "tracer_provider",
    "write_snapshot",
]
