"""Metrics read at scrape time from the components' own ``stats()`` snapshots.

Each function turns one snapshot into metric families; nothing is counted twice and
the components keep no Prometheus code. :data:`MULTIPROCESS_MODES` says how a family
of gauges is merged when several worker processes report it (see ``_multiprocess``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from service.chain import FailoverStats, RelayStats
    from service.chain._context import ChainContextStats
    from service.events import EventStats
    from service.keys._manager import KeyStats
    from service.ratelimit import LimiterStats
    from service.store import DatabaseStats

PREFIX: Final = "agent_staking_"

MULTIPROCESS_MODES: Final[dict[str, str]] = {}
"""Family name -> how gauges of several processes merge: ``pid`` (one series per live
process, labelled ``pid``), ``sum``, ``max`` or ``min`` (over live processes).
Counters and histograms are always summed (over every process that ever reported)."""


LABEL_NAMES: Final[dict[str, tuple[str, ...]]] = {}
"""Sample name -> label names, of every family built here so far."""


def _gauge(name: str, doc: str, labels: Iterable[str] = (), *, mode: str) -> GaugeMetricFamily:
    MULTIPROCESS_MODES[PREFIX + name] = mode
    LABEL_NAMES[PREFIX + name] = tuple(labels)
    return GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    LABEL_NAMES[PREFIX + name + "_total"] = tuple(labels)
    return CounterMetricFamily(PREFIX + name, doc, labels=list(labels))


def _counters(rows: Iterable[tuple[str, int, str]]) -> list[Metric]:
    """One label-less counter family per (name, value, help) row."""
    families: list[Metric] = []
    for name, value, doc in rows:
        counter = _counter(name, doc)
        counter.add_metric([], value)
        families.append(counter)
    return families


def _process_gauge(name: str, doc: str, value: float) -> list[Metric]:
    """One label-less gauge of this process (one series per process with workers)."""
    gauge = _gauge(name, doc, mode="pid")
    gauge.add_metric([], value)
    return [gauge]


def event_loop_families(tasks: int) -> list[Metric]:
    """The server's event loop: tasks alive (a leak shows as steady growth)."""
    return _process_gauge(
        "event_loop_tasks", "asyncio tasks alive on the server's event loop.", tasks
    )


def heap_families(frozen: int) -> list[Metric]:
    """The objects kept out of the cyclic garbage collector's passes."""
    return _process_gauge(
        "gc_frozen_objects",
        "Objects the garbage collector's passes skip: what start-up made, frozen once the "
        "server serves (0 before; without it a full collection walks them all).",
        frozen,
    )


def admission_families(stats: Mapping[str, int]) -> list[Metric]:
    """Admission control: calls in the service and calls still waiting for their request."""
    in_flight = _gauge(
        "calls_in_flight",
        "Calls in the service now, by kind (unary, or server_stream such as watches); "
        "compare with max_concurrent_rpcs and max_concurrent_watches.",
        ["kind"],
        mode="sum",
    )
    in_flight.add_metric(["unary"], stats["unary_in_flight"])
    in_flight.add_metric(["server_stream"], stats["streams_in_flight"])
    waiting = _gauge(
        "calls_waiting_for_request",
        "Calls whose headers arrived but whose request message has not (max_waiting_requests).",
        mode="sum",
    )
    waiting.add_metric([], stats["waiting_for_request"])
    return [in_flight, waiting]


def tls_families(not_after: float) -> list[Metric]:
    """The serving certificate: when it expires (alert well before)."""
    expiry = _gauge(
        "tls_certificate_expiry_timestamp_seconds",
        "Unix time at which the certificate the server presents expires.",
        mode="min",
    )
    expiry.add_metric([], not_after)
    return [expiry]


def failover_families(stats: FailoverStats) -> list[Metric]:
    """Solana endpoints: health, breaker, routing, lag, probes, failovers."""
    healthy = _gauge(
        "solana_endpoint_healthy", "1 while the endpoint takes traffic.", ["endpoint"], mode="pid"
    )
    breaker = _gauge(
        "solana_endpoint_breaker_state",
        "Circuit breaker state of the endpoint: 1 for the current state.",
        ["endpoint", "state"],
        mode="pid",
    )
    preferred = _gauge(
        "solana_endpoint_preferred",
        "1 for the endpoint traffic goes to first.",
        ["endpoint"],
        mode="pid",
    )
    lag = _gauge(
        "solana_endpoint_slot_lag",
        "Slots the endpoint is behind the best endpoint.",
        ["endpoint"],
        mode="pid",
    )
    in_flight = _gauge(
        "solana_endpoint_in_flight", "Requests waiting for an answer.", ["endpoint"], mode="sum"
    )
    latency = _gauge(
        "solana_endpoint_latency_ewma_seconds",
        "Moving average of the endpoint's answer time (requests and probes).",
        ["endpoint"],
        mode="pid",
    )
    probes = _counter("solana_probes", "Health probes sent (getHealth + getSlot).", ["endpoint"])
    probe_failures = _counter(
        "solana_probe_failures",
        "Health probes that failed or found the node unhealthy.",
        ["endpoint"],
    )
    failovers = _counter(
        "solana_failovers",
        "Calls that failed on this endpoint and moved on to another.",
        ["endpoint"],
    )
    for endpoint in stats.endpoints:
        name = [endpoint.name]
        healthy.add_metric(name, float(endpoint.healthy))
        for state in ("closed", "open", "half_open"):
            breaker.add_metric([endpoint.name, state], float(endpoint.breaker.value == state))
        preferred.add_metric(name, float(endpoint.preferred))
        lag.add_metric(name, endpoint.slot_lag)
        in_flight.add_metric(name, endpoint.in_flight)
        if endpoint.latency_ewma_seconds is not None:
            latency.add_metric(name, endpoint.latency_ewma_seconds)
        probes.add_metric(name, endpoint.probes)
        probe_failures.add_metric(name, endpoint.probe_failures)
        failovers.add_metric(name, endpoint.failovers)
    count = _gauge("solana_healthy_endpoints", "Solana endpoints that take traffic.", mode="pid")
    count.add_metric([], sum(e.healthy for e in stats.endpoints))
    switches = _counter("solana_endpoint_switches", "Times the preferred Solana endpoint changed.")
    switches.add_metric([], stats.switches)
    return [
        healthy,
        breaker,
        preferred,
        lag,
        in_flight,
        latency,
        count,
        probes,
        probe_failures,
        failovers,
        switches,
    ]


def chain_families(stats: ChainContextStats) -> list[Metric]:
    """The cached chain context: blockhash age, health, slot and epoch."""
    healthy = _gauge(
        "chain_healthy", "1 while the cached chain context can be trusted.", mode="min"
    )
    healthy.add_metric([], float(stats.healthy))
    age = _gauge(
        "blockhash_age_seconds",
        "Seconds since the cached blockhash was fetched.",
        mode="max",
    )
    remaining = _gauge(
        "blockhash_remaining_blocks",
        "Estimated blocks before the cached blockhash expires.",
        mode="min",
    )
    slot = _gauge("chain_slot", "Slot at the last chain context refresh.", mode="max")
    epoch = _gauge("chain_epoch", "Epoch at the last chain context refresh.", mode="max")
    failures = _gauge(
        "chain_refresh_failures",
        "Chain context refreshes failed in a row.",
        mode="max",
    )
    failures.add_metric([], stats.consecutive_failures)
    if stats.blockhash_age_seconds is not None:
        age.add_metric([], stats.blockhash_age_seconds)
    if stats.remaining_blocks is not None:
        remaining.add_metric([], stats.remaining_blocks)
    if stats.slot is not None:
        slot.add_metric([], stats.slot)
    if stats.epoch is not None:
        epoch.add_metric([], stats.epoch)
    return [healthy, age, remaining, slot, epoch, failures]


RELAY_EVENTS: Final = (
    "submitted",
    "duplicate",
    "rejected",
    "sent",
    "rebroadcast",
    "processed",
    "confirmed",
    "finalized",
    "failed",
    "expired",
    "dropped",
    "taken_over",
    "released",
    "lost",
)


def relay_families(stats: RelayStats) -> list[Metric]:
    """The relay: outcomes, rejections by reason, time to confirm, work in flight."""
    events = _counter(
        "relay_transactions",
        "Relay events: submitted, duplicate, rejected, sent, rebroadcast, processed, "
        "confirmed, finalized, failed, expired, dropped, taken_over (from a replica "
        "gone), released (at a graceful stop), lost (taken by another replica).",
        ["event"],
    )
    for event in RELAY_EVENTS:
        events.add_metric([event], stats.counters.get(event, 0))
    rejections = _counter(
        "relay_rejections", "Submissions refused, by ErrorInfo reason.", ["reason"]
    )
    for reason, count in sorted(stats.rejections.items()):
        rejections.add_metric([reason], count)
    confirm = HistogramMetricFamily(
        PREFIX + "relay_time_to_confirm_seconds",
        "Seconds from receipt to the first confirmed (or finalized) status.",
    )
    confirm.add_metric(
        [],
        [(_bound(bound), count) for bound, count in stats.time_to_confirm_buckets],
        stats.time_to_confirm_sum,
    )
    families: list[Metric] = [events, rejections, confirm]
    for name, value, doc in (
        ("relay_pending", stats.pending, "Transactions in flight (sent, not yet final)."),
        ("relay_retained", stats.retained, "Outcomes remembered for status lookups."),
        ("relay_observed", stats.observed, "Signatures polled because they are watched."),
        ("relay_watchers", stats.watchers, "Open WatchTransaction subscriptions."),
    ):
        gauge = _gauge(name, doc, mode="sum")
        gauge.add_metric([], value)
        families.append(gauge)
    return families


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def limiter_families(stats: LimiterStats) -> list[Metric]:
    """The rate limiter's backend: decisions, Redis health and outages."""
    up = _gauge(
        "ratelimit_backend_up",
        "1 while the rate limiter's backend answers (always 1 in memory).",
        ["backend"],
        mode="min",
    )
    up.add_metric([stats.backend], float(stats.shared_up))
    return [
        up,
        *_counters(
            (
                ("ratelimit_allowed", stats.allowed, "Calls the rate limiter let through."),
                ("ratelimit_redis_errors", stats.redis_errors, "Redis decisions that failed."),
                ("ratelimit_outages", stats.outages, "Times Redis became unreachable."),
                ("ratelimit_recoveries", stats.recoveries, "Times Redis came back."),
                (
                    "ratelimit_local_decisions",
                    stats.local_decisions,
                    "Calls decided by the local limiter while Redis was out (fail-open).",
                ),
                (
                    "ratelimit_unavailable_refusals",
                    stats.refused_unavailable,
                    "Calls refused while Redis was out (fail-closed).",
                ),
            )
        ),
    ]


def key_families(stats: KeyStats) -> list[Metric]:
    """API keys per state and overdue for rotation (as of the last scan)."""
    keys = _gauge(
        "api_keys", "API keys in the store, by state (at the last scan).", ["state"], mode="max"
    )
    for state, count in sorted(stats.by_state.items()):
        keys.add_metric([state], count)
    overdue = _gauge(
        "api_keys_overdue_rotation",
        "Active API keys past their rotation time (at the last scan).",
        mode="max",
    )
    overdue.add_metric([], stats.overdue)
    cached = _gauge(
        "api_key_cache_entries", "Verified API keys cached by this process.", mode="sum"
    )
    cached.add_metric([], stats.cached_tokens)
    unflushed = _gauge(
        "api_key_usage_unflushed",
        "Authenticated calls counted and not yet written to the database (what a crash "
        "would lose; grows during a database outage).",
        mode="sum",
    )
    unflushed.add_metric([], stats.unflushed_calls)
    return [
        keys,
        overdue,
        cached,
        unflushed,
        *_counters(
            (
                (
                    "api_key_stale_authentications",
                    stats.stale_authentications,
                    "Calls authenticated from an expired cache entry while the database was "
                    "unavailable (key_outage_grace_seconds).",
                ),
                (
                    "api_key_usage_flush_failures",
                    stats.usage_flush_failures,
                    "Writes of usage counts that failed (the counts were kept for the next).",
                ),
            )
        ),
    ]


def database_families(stats: DatabaseStats) -> list[Metric]:
    """The service's database: up or in an outage, transactions, failures."""
    up = _gauge(
        "database_up",
        "1 while the service's database answers; 0 during an outage (and before the "
        "first connection).",
        mode="min",
    )
    up.add_metric([], float(stats.up))
    return [
        up,
        *_counters(
            (
                ("database_transactions", stats.transactions, "Database transactions run."),
                (
                    "database_errors",
                    stats.errors,
                    "Database transactions that failed: unreachable, refused or out of time.",
                ),
                (
                    "database_timeouts",
                    stats.timeouts,
                    "Database transactions that ran out of time (database_timeout_seconds).",
                ),
                (
                    "database_rejected",
                    stats.rejected,
                    "Calls refused at once, without trying, during a database outage.",
                ),
                ("database_outages", stats.outages, "Times the database became unavailable."),
            )
        ),
    ]


def event_families(stats: EventStats) -> list[Metric]:
    """Events produced, webhook deliveries by outcome, the delivery queue, the lead."""
    produced = _counter(
        "events_produced",
        "Events recorded by this replica, by type (relayed transaction outcomes where the "
        "replica relays; stake, validator and key events where it leads; test events).",
        ["type"],
    )
    for event_type, count in sorted(stats.produced.items()):
        produced.add_metric([event_type], count)
    deliveries = _counter(
        "webhook_deliveries",
        "Webhook delivery attempts by outcome (succeeded, http_error, timeout, unreachable, "
        "forbidden_address); cancelled: deliveries stopped because the owner key may no "
        "longer see the event; gave_up: deliveries whose retries ran out.",
        ["outcome"],
    )
    for outcome, count in stats.deliveries.outcomes.items():
        deliveries.add_metric([outcome], count)
    latency = HistogramMetricFamily(
        PREFIX + "webhook_delivery_duration_seconds",
        "Time of a webhook delivery attempt, to the end of the answer (or the failure).",
    )
    latency.add_metric(
        [],
        [(_bound(bound), count) for bound, count in stats.deliveries.latency_buckets],
        stats.deliveries.latency_sum,
    )
    families: list[Metric] = [produced, deliveries, latency]
    queue = stats.queue
    for name, value, doc, mode in (
        (
            "webhook_deliveries_pending",
            queue.pending,
            "Webhook deliveries not yet made (the retry queue), of enabled webhooks, "
            "deployment-wide.",
            "max",
        ),
        (
            "webhook_deliveries_due",
            queue.due,
            "Of which an attempt is due now and not yet made.",
            "max",
        ),
        (
            "webhook_oldest_pending_seconds",
            queue.oldest_pending_age,
            "Age of the oldest undelivered event of an enabled webhook (retries included).",
            "max",
        ),
        (
            "webhook_oldest_due_seconds",
            queue.oldest_due_lag,
            "How late the most overdue delivery attempt is (deliveries fall behind).",
            "max",
        ),
        (
            "webhook_deliveries_in_flight",
            stats.deliveries.in_flight,
            "Webhook delivery attempts running on this replica.",
            "sum",
        ),
        (
            "event_streams",
            stats.streams,
            "Open WatchEvents streams.",
            "sum",
        ),
        (
            "event_producer_leader",
            int(stats.leader),
            "1 on the replica that produces stake, validator and key events (exactly one should).",
            "sum",
        ),
    ):
        gauge = _gauge(name, doc, mode=mode)
        gauge.add_metric([], value)
        families.append(gauge)
    webhooks = _gauge("webhooks", "Webhooks by state, deployment-wide.", ["state"], mode="max")
    for state, count in sorted((queue.webhooks or {}).items()):
        webhooks.add_metric([state], count)
    families.append(webhooks)
    families.extend(
        _counters(
            (
                (
                    "event_producer_takeovers",
                    stats.takeovers,
                    "Times this replica took the lead of the producers.",
                ),
            )
        )
    )
    return families
