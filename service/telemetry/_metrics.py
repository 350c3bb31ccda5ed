"""Prometheus metrics: every metric of the service and the registry ``/metrics`` reads.

Two kinds:

- **counted per event**, here (prometheus_client counters and histograms): the gRPC
  server metrics with go-grpc-prometheus's names and labels, builds, service fees,
  Solana requests, authentication failures, rate-limit rejections;
- **read at scrape time** from the components' ``stats()`` (``_collectors``): Solana
  endpoint health and breakers, failovers, blockhash age, relay outcomes and time to
  confirm, the rate limiter's backend, API keys; plus the process metrics.

Several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set in the environment
(prometheus_client's own switch, read when it is first imported) the per-event metrics
live in that directory's memory-mapped files, and the scrape-time families are
published there as snapshots (``_multiprocess``); any process's ``/metrics`` serves
the merged view of all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import _collectors
from ._context import CallInfo
from ._multiprocess import SnapshotCollector, write_snapshot

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

    from service.chain import ChainContext, FailoverRpc, Relay
    from service.events import Events
    from service.keys import KeyManager
    from service.ratelimit import RateLimiter
    from service.store import Database

log = logging.getLogger(__name__)

# prometheus.DefBuckets, as go-grpc-prometheus uses them.
GRPC_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Finer around the 200 ms build objective (the alert reads its p95).
BUILD_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
SOLANA_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PUBLISH_SECONDS: Final = 5.0
REFUSAL_REASONS: Final = ("overloaded", "waiting_evicted", "request_timeout", "incomplete_request")
"""Why admission refuses a call (``agent_staking_calls_refused_total{reason}``)."""
"""How often a worker publishes its scrape-time families (multiprocess mode)."""

# grpc_code values as Go spells them (codes.Code.String()), so dashboards and alerts
# written for go-grpc-prometheus work unchanged.
GO_CODE_NAMES: Final[dict[grpc.StatusCode, str]] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


def multiprocess_mode() -> bool:
    """Whether prometheus_client writes to ``PROMETHEUS_MULTIPROC_DIR``."""
    return values.ValueClass is not values.MutexValue


def build_kind(method: str) -> str | None:
    """``BuildStakeTransaction`` -> ``stake``; None for other methods."""
    if method.startswith("Build") and method.endswith("Transaction") and len(method) > 16:
        return method[len("Build") : -len("Transaction")].lower()
    return None


class GrpcSeries:
    """The gRPC server series of one method, bound once: ``labels()`` on every call
    costs a lock and the label values checked anew."""

    __slots__ = ("_by_code", "_handled", "_labels", "received", "seconds", "sent", "started")

    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self._labels = labels
        self._handled = metrics.grpc_handled
        self._by_code: dict[grpc.StatusCode, Any] = {}
        self.started = metrics.grpc_started.labels(*labels)
        self.received = metrics.grpc_received.labels(*labels)
        self.sent = metrics.grpc_sent.labels(*labels)
        self.seconds = metrics.grpc_seconds.labels(*labels)

    def finished(self, call: CallInfo) -> None:
        code = call.code if call.code is not None else grpc.StatusCode.UNKNOWN
        handled = self._by_code.get(code)
        if handled is None:
            handled = self._by_code[code] = self._handled.labels(*self._labels, GO_CODE_NAMES[code])
        handled.inc()
        self.seconds.observe(call.duration)


class BuildSeries:
    """The build series of one kind of build, bound once (see :class:`GrpcSeries`)."""

    __slots__ = ("_builds", "_kind", "fee_transactions", "fees_quoted", "ok", "seconds")

    def __init__(self, metrics: Metrics, kind: str) -> None:
        self._builds = metrics.builds
        self._kind = kind
        self.ok = metrics.builds.labels(kind, "ok")
        self.seconds = metrics.build_seconds.labels(kind)
        self.fees_quoted = metrics.fees_quoted.labels(kind)
        self.fee_transactions = metrics.fee_transactions.labels(kind)

    def finished(self, outcome: str, seconds: float, fee: int | None) -> None:
        (self.ok if outcome == "ok" else self._builds.labels(self._kind, outcome)).inc()
        self.seconds.observe(seconds)
        if fee:
            self.fees_quoted.inc(fee)
            self.fee_transactions.inc()


class _ScrapeTime(Collector):
    """The families read from ``stats()`` when scraped."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], list[Metric]]] = []

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            try:
                yield from source()
            except Exception:  # one broken source must not empty the whole scrape
                log.exception("metrics source failed")


class Metrics:
    """The service's metrics; one per server (tests run several in one process).

    Args:
        multiprocess_dir: Where worker processes meet (default: prometheus_client's
            ``PROMETHEUS_MULTIPROC_DIR`` when its multiprocess mode is on; None in
            single-process mode).
    """

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        # Go's client exposes no `_created` series; neither do we.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiprocess = multiprocess_mode()
        if self.multiprocess and multiprocess_dir is None:
            # NOTE: prometheus_client's own switch, read by it at import: not a setting.
            multiprocess_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        self.multiprocess_dir = multiprocess_dir if self.multiprocess else None
        self._scrape_time = _ScrapeTime()
        self._process: list[Collector] = []
        if self.multiprocess_dir is not None:
            # Per-event metrics live in the shared files: register them nowhere.
            events: CollectorRegistry | None = None
            self.registry = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self.registry, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
            self.registry.register(
                SnapshotCollector(self.multiprocess_dir, stale_after=3 * PUBLISH_SECONDS)
            )
            # Published with the snapshots instead, labelled by pid.
            unregistered = CollectorRegistry()
            self._process = [
                ProcessCollector(registry=unregistered),
                PlatformCollector(registry=unregistered),
                GCCollector(registry=unregistered),
            ]
        else:
            self.registry = events = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
            self.registry.register(self._scrape_time)
        self._event_labels: dict[str, tuple[str, ...]] = {}

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            self._event_labels[name + "_total"] = labels
            return Counter(name, doc, labels, registry=events)

        def histogram(
            name: str, doc: str, labels: tuple[str, ...], *, buckets: tuple[float, ...]
        ) -> Histogram:
            self._event_labels[name + "_bucket"] = (*labels, "le")
            self._event_labels[name + "_sum"] = self._event_labels[name + "_count"] = labels
            return Histogram(name, doc, labels, buckets=buckets, registry=events)

        grpc_labels = ("grpc_type", "grpc_service", "grpc_method")
        self.grpc_started = counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            grpc_labels,
        )
        self.grpc_handled = counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*grpc_labels, "grpc_code"),
        )
        self.grpc_received = counter(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            grpc_labels,
        )
        self.grpc_sent = counter(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            grpc_labels,
        )
        self.grpc_seconds = histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            grpc_labels,
            buckets=GRPC_BUCKETS,
        )
        self.builds = counter(
            "agent_staking_transactions_built",
            "Build*Transaction calls that reached the builder, by kind and outcome "
            "(`ok` or the ErrorInfo reason).",
            ("kind", "outcome"),
        )
        self.build_seconds = histogram(
            "agent_staking_build_duration_seconds",
            "Time the builder took for a Build*Transaction call (after auth and rate limits).",
            ("kind",),
            buckets=BUILD_BUCKETS,
        )
        self.fees_quoted = counter(
            "agent_staking_service_fees_quoted_lamports",
            "Service fees in the transactions built, lamports.",
            ("kind",),
        )
        self.fee_transactions = counter(
            "agent_staking_service_fee_quotes",
            "Built transactions that charge a service fee.",
            ("kind",),
        )
        self.auth_failures = counter(
            "agent_staking_auth_failures",
            "Calls refused by authentication or authorization, by ErrorInfo reason.",
            ("reason",),
        )
        self.ratelimit_rejections = counter(
            "agent_staking_ratelimit_rejections",
            "Calls refused by a rate limit, by the bucket's dimension and RPC class.",
            ("dimension", "rpc_class"),
        )
        self.refusals = counter(
            "agent_staking_calls_refused",
            "Calls refused before entering the service, by reason: overloaded (a concurrency "
            "limit), waiting_evicted (too many calls waiting for their request), "
            "request_timeout (the request never fully arrived), incomplete_request.",
            ("reason",),
        )
        self.solana_requests = counter(
            "agent_staking_solana_rpc_requests",
            "Solana JSON-RPC requests made for callers (probes excluded), counted once "
            "answered or failed: those still in flight are in "
            "agent_staking_solana_endpoint_in_flight.",
            ("endpoint", "method"),
        )
        self.solana_errors = counter(
            "agent_staking_solana_rpc_errors",
            "Solana JSON-RPC requests without a result: timeout, connection, http, "
            "malformed, node_unhealthy, rpc_error (an error object), other.",
            ("endpoint", "method", "error"),
        )
        self.solana_seconds = histogram(
            "agent_staking_solana_rpc_duration_seconds",
            "Time to the answer (or failure) of a Solana JSON-RPC request.",
            ("endpoint", "method"),
            buckets=SOLANA_BUCKETS,
        )
        self._publisher: asyncio.Task[None] | None = None
        self._grpc_series: dict[tuple[str, str, str], GrpcSeries] = {}
        self._build_series: dict[str, BuildSeries] = {}

    @property
    def label_names(self) -> dict[str, tuple[str, ...]]:
        """Sample name -> label names of our metrics (those read at scrape time once
        scraped): what a series without samples yet would carry."""
        return {**_collectors.LABEL_NAMES, **self._event_labels}

    # --- per-event ----------------------------------------------------------------

    def initialize(self, services: Iterable[ServiceDescriptor]) -> None:
        """Create the zero series of every method (as go-grpc-prometheus does), so
        rates and ratios exist before the first call."""
        for service in services:
            for method in service.methods:
                labels = (rpc_type(method), service.full_name, method.name)
                self.grpc_started.labels(*labels)
                self.grpc_handled.labels(*labels, "OK")
                self.grpc_received.labels(*labels)
                self.grpc_sent.labels(*labels)
                self.grpc_seconds.labels(*labels)
                kind = build_kind(method.name)
                if kind is not None:
                    self.builds.labels(kind, "ok")
                    self.build_seconds.labels(kind)
                    self.fees_quoted.labels(kind)
                    self.fee_transactions.labels(kind)
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)

    def grpc_series(self, rpc_type: str, service: str, method: str) -> GrpcSeries:
        """The series of one method (made on first use, then kept)."""
        key = (rpc_type, service, method)
        series = self._grpc_series.get(key)
        if series is None:
            series = self._grpc_series[key] = GrpcSeries(self, key)
        return series

    def build_series(self, kind: str) -> BuildSeries:
        """The series of one kind of build (made on first use, then kept)."""
        series = self._build_series.get(kind)
        if series is None:
            series = self._build_series[kind] = BuildSeries(self, kind)
        return series

    def call_started(self, call: CallInfo) -> None:
        self.grpc_series(call.rpc_type, call.service, call.method).started.inc()

    def call_finished(self, call: CallInfo) -> None:
        self.grpc_series(call.rpc_type, call.service, call.method).finished(call)
        self.call_refused(call)

    def call_refused(self, call: CallInfo) -> None:
        """What refused ``call``, if anything: authentication or a rate limit."""
        if call.auth_failure is not None:
            self.auth_failures.labels(call.auth_failure).inc()
        if call.rate_limited is not None:
            self.ratelimit_rejections.labels(*call.rate_limited).inc()

    def refused(
        self, rpc_type: str, service: str, method: str, code: grpc.StatusCode, reason: str
    ) -> None:
        """Admission (``service.interceptors.Refusals``): a call refused before it entered
        the service, counted as started and handled like every call."""
        labels = (rpc_type, service, method)
        self.grpc_started.labels(*labels).inc()
        self.grpc_handled.labels(*labels, GO_CODE_NAMES[code]).inc()
        self.refusals.labels(reason).inc()

    def rpc_attempt(self, endpoint: str, method: str, seconds: float, error: str | None) -> None:
        """`service.chain.RpcObserver`: one Solana request ended."""
        self.solana_requests.labels(endpoint, method).inc()
        self.solana_seconds.labels(endpoint, method).observe(seconds)
        if error is not None:
            self.solana_errors.labels(endpoint, method, error).inc()

    # --- read at scrape time --------------------------------------------------------

    def watch_event_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scrape_time.sources.append(
            lambda: _collectors.event_loop_families(len(asyncio.all_tasks(loop)))
        )

    def watch_heap(self) -> None:
        # gc.get_freeze_count walks the frozen objects: once per scrape, off the loop.
        self._scrape_time.sources.append(lambda: _collectors.heap_families(gc.get_freeze_count()))

    def watch_admission(self, stats: Callable[[], Mapping[str, int]]) -> None:
        self._scrape_time.sources.append(lambda: _collectors.admission_families(stats()))

    def watch_certificate(self, not_after: Callable[[], float]) -> None:
        self._scrape_time.sources.append(lambda: _collectors.tls_families(not_after()))

    def watch_failover(self, rpc: FailoverRpc) -> None:
        self._scrape_time.sources.append(lambda: _collectors.failover_families(rpc.stats()))

    def watch_chain(self, chain: ChainContext) -> None:
        self._scrape_time.sources.append(lambda: _collectors.chain_families(chain.stats()))

    def watch_relay(self, relay: Relay) -> None:
        self._scrape_time.sources.append(lambda: _collectors.relay_families(relay.stats()))

    def watch_limiter(self, limiter: RateLimiter) -> None:
        self._scrape_time.sources.append(lambda: _collectors.limiter_families(limiter.stats()))

    def watch_keys(self, keys: KeyManager) -> None:
        self._scrape_time.sources.append(lambda: _collectors.key_families(keys.stats()))

    def watch_events(self, events: Events) -> None:
        self._scrape_time.sources.append(lambda: _collectors.event_families(events.stats()))

    def watch_database(self, database: Database) -> None:
        self._scrape_time.sources.append(lambda: _collectors.database_families(database.stats()))

    # --- exposition ------------------------------------------------------------------

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape body and its content type (OpenMetrics when ``accept`` asks)."""
        if self.multiprocess_dir is not None:
            self.publish()  # this process's part is fresh; the others' <= PUBLISH_SECONDS
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def publish(self, *, live: bool = True) -> None:
        """Multiprocess mode: write this process's scrape-time families."""
        if self.multiprocess_dir is None:
            return
        families: list[Metric] = list(self._scrape_time.collect())
        for collector in self._process:
            families.extend(collector.collect())
        modes = dict(_collectors.MULTIPROCESS_MODES)
        for family in families:
            if family.name.startswith(("process_", "python_")):
                modes[family.name] = "pid"
        write_snapshot(self.multiprocess_dir, families, modes, live=live)

    async def start(self) -> None:
        """Multiprocess mode: publish every ``PUBLISH_SECONDS`` until :meth:`stop`."""
        if self.multiprocess_dir is not None and self._publisher is None:
            self.publish()
            self._publisher = asyncio.create_task(self._publish_loop(), name="metrics-publish")

    async def _publish_loop(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_SECONDS)
            try:
                self.publish()
            except Exception:
                log.exception("publishing this process's metrics failed")

    async def stop(self) -> None:
        """Stop publishing; the last snapshot keeps the counters, drops the gauges."""
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
            self.publish(live=False)


def rpc_type(method: Any) -> str:
    """go-grpc-prometheus's ``grpc_type`` of a method descriptor."""
    if method.client_streaming:
        return "bidi_stream" if method.server_streaming else "client_stream"
    return "server_stream" if method.server_streaming else "unary"
