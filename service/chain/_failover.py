"""The RPC failover manager: several Solana endpoints that look like one healthy endpoint.

`FailoverRpc` implements `SolanaRpc`, so the chain context and the build shell use
it unchanged; a single-endpoint deployment runs the same code with one endpoint.

- Endpoints come from configuration (`parse_endpoints`): URL, name, priority. Each
  has its own `HttpSolanaRpc` with a bounded pool of keep-alive connections.
- Health: a background task probes every endpoint (getHealth, getSlot). An
  endpoint is healthy while its circuit breaker is closed, the node does not call
  itself unhealthy and its slot is within `max_slot_lag` of the best endpoint's.
  Consecutive failures (calls or probes) open the breaker; after a cooldown the
  next probe is a half-open trial that closes it or opens it again.
- Routing: only healthy endpoints get traffic, in the order the policy gives.
  With none healthy a call fails at once with `ChainUnavailable` naming every
  endpoint's state (which also makes the chain context report NOT_SERVING).
- Retries: idempotent reads and sendTransaction (same signed bytes, same
  signature) move on to the next endpoint while the deadline allows; anything
  else is resent only when it provably never left. A JSON-RPC error is an answer,
  except node-unhealthy and min-context-slot errors, which mean "ask another node".
- Deadline: `call_deadline` holds the gRPC call's absolute deadline; every
  attempt's timeout fits inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, urlsplit

from opentelemetry import trace

from ._rpc import (
    CallDeadlineExceeded,
    ChainUnavailable,
    EndpointFailure,
    HttpSolanaRpc,
    RpcError,
)

log = logging.getLogger(__name__)

call_deadline: ContextVar[float | None] = ContextVar("call_deadline", default=None)
"""Absolute `time.monotonic()` deadline of the gRPC call being served, if it has one."""


@contextlib.contextmanager
def rpc_deadline(seconds: float | None) -> Iterator[None]:
    """Fit every Solana RPC made inside the block into `seconds` from now.

    Nested blocks keep the earlier deadline; `None` (a call without a deadline)
    adds no bound.
    """
    if seconds is None:
        yield
        return
    deadline = time.monotonic() + seconds
    outer = call_deadline.get()
    token = call_deadline.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        call_deadline.reset(token)


READ_METHODS: Final = frozenset(
    {
        "getAccountInfo",
        "getBalance",
        "getBlock",
        "getBlockHeight",
        "getBlockTime",
        "getBlocks",
        "getClusterNodes",
        "getEpochInfo",
        "getEpochSchedule",
        "getFeeForMessage",
        "getFirstAvailableBlock",
        "getGenesisHash",
        "getHealth",
        "getIdentity",
        "getInflationGovernor",
        "getInflationRate",
        "getInflationReward",
        "getLatestBlockhash",
        "getLeaderSchedule",
        "getMinimumBalanceForRentExemption",
        "getMultipleAccounts",
        "getProgramAccounts",
        "getRecentPerformanceSamples",
        "getRecentPrioritizationFees",
        "getSignatureStatuses",
        "getSignaturesForAddress",
        "getSlot",
        "getStakeMinimumDelegation",
        "getSupply",
        "getTokenAccountBalance",
        "getTransaction",
        "getVersion",
        "getVoteAccounts",
        "isBlockhashValid",
    }
)
"""Idempotent reads: asking another endpoint after a failure changes nothing."""

RETRYABLE_METHODS: Final = READ_METHODS | {"sendTransaction"}
"""Methods retried on another endpoint. A signed transaction lands at most once (its
signature is its identity), so resending the same bytes is safe; simulateTransaction,
requestAirdrop and unknown methods are not retried blindly."""

NODE_UNHEALTHY: Final = -32005
MIN_CONTEXT_SLOT_NOT_REACHED: Final = -32016
# JSON-RPC errors that are about the node, not the request: ask another node.
_ASK_ANOTHER_NODE: Final = frozenset({NODE_UNHEALTHY, MIN_CONTEXT_SLOT_NOT_REACHED})

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_ENDPOINT_OPTIONS: Final = frozenset({"name", "priority"})
# Latency EWMA weight of the newest sample.
_LATENCY_ALPHA: Final = 0.2
# Latency routing moves off the current endpoint only when another is clearly faster:
# more than 25 % and 2 ms better, so jitter between similar endpoints cannot flap.
_LATENCY_SWITCH_RATIO: Final = 1.25
_LATENCY_SWITCH_FLOOR: Final = 0.002


class RpcObserver(Protocol):
    """Told about every attempt sent for a caller (probes excluded): metrics."""

    def rpc_attempt(self, endpoint: str, method: str, seconds: float, error: str | None) -> None:
        """One attempt ended after ``seconds``; ``error`` is None when it was answered
        with a result, else ``timeout``, ``connection``, ``http``, ``malformed``,
        ``node_unhealthy``, ``rpc_error`` (the node answered with an error object) or
        ``other``."""


def _error_label(exc: Exception) -> str:
    if isinstance(exc, RpcError):
        return "node_unhealthy" if exc.code == NODE_UNHEALTHY else "rpc_error"
    if isinstance(exc, EndpointFailure):
        failure = exc.failure
        if exc.timeout:
            return "timeout"
        if failure.startswith("HTTP"):
            return "http"
        if failure == "malformed answer":
            return "malformed"
        if failure in ("connection refused", "cannot connect", "disconnected", "connection reset"):
            return "connection"
    return "other"


class Routing(enum.Enum):
    """How traffic is spread over the healthy endpoints."""

    PRIMARY = "primary"
    """Best priority first; go back to a recovered endpoint once it has stayed healthy
    for `failback_after` seconds."""
    STICKY = "sticky"
    """Stay on the current endpoint while it is healthy; recovery alone moves nothing."""
    LATENCY = "latency"
    """Lowest latency (EWMA) first, switching only for a clear gain."""


class BreakerState(enum.Enum):
    """Circuit breaker of one endpoint."""

    CLOSED = "closed"
    """Traffic flows."""
    OPEN = "open"
    """Too many consecutive failures: no traffic until a trial probe succeeds."""
    HALF_OPEN = "half_open"
    """Cooldown over: the next probe decides."""


def redact_url(url: str) -> str:
    """`url` reduced to what is safe to log: scheme, host and port.

    Credentials, path (providers put API keys there) and query are left out.
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    hidden = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


@dataclass(frozen=True, kw_only=True)
class EndpointConfig:
    """One Solana JSON-RPC endpoint as configured.

    Attributes:
        name: used in logs, metrics and error messages (the URL never is).
        url: what requests are sent to; may hold credentials.
        priority: lower is preferred by the `primary` and `sticky` routings.
    """

    name: str
    url: str
    priority: int = 0

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"endpoint name {self.name!r}: 1-32 letters, digits, '_', '.', '-'")
        parts = urlsplit(self.url)
        try:
            parts.port  # noqa: B018 - parsing the port validates it
        except ValueError:
            raise ValueError(f"endpoint {self.name}: invalid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Never echo the URL: it may carry credentials.
            raise ValueError(f"endpoint {self.name}: expected an http:// or https:// URL")

    @property
    def redacted_url(self) -> str:
        """The URL without credentials, path or query."""
        return redact_url(self.url)


def parse_endpoint(spec: str, *, index: int = 0) -> EndpointConfig:
    """One `--rpc-url` value: `URL[#name=NAME&priority=N]`.

    Options travel in the URL fragment because HTTP clients never send it. Without
    them the endpoint is named `rpc<index>` and its priority is `index`, so the
    first URL given is the primary.

    Raises:
        ValueError: unknown option, bad name or priority, not an http(s) URL. The
            message never contains the URL.
    """
    url, _, fragment = spec.partition("#")
    options: dict[str, str] = {}
    for key, value in parse_qsl(fragment, keep_blank_values=True):
        if key not in _ENDPOINT_OPTIONS:
            raise ValueError(
                f"endpoint #{index + 1}: unknown option {key!r} (use name=, priority=)"
            )
        options[key] = value
    name = options.get("name", f"rpc{index}")
    try:
        priority = int(options.get("priority", index))
    except ValueError:
        raise ValueError(f"endpoint {name}: priority must be an integer") from None
    return EndpointConfig(name=name, url=url, priority=priority)


def parse_endpoints(specs: Sequence[str]) -> list[EndpointConfig]:
    """Every `--rpc-url` value, in order (see `parse_endpoint`).

    Raises:
        ValueError: none given, an invalid one, or two with the same name.
    """
    endpoints = [parse_endpoint(spec, index=i) for i, spec in enumerate(specs)]
    _check_endpoints(endpoints)
    return endpoints


def _check_endpoints(endpoints: Sequence[EndpointConfig]) -> None:
    if not endpoints:
        raise ValueError("at least one Solana RPC endpoint is needed")
    names = [e.name for e in endpoints]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Solana endpoint names must be unique: {', '.join(duplicates)}")


@dataclass(frozen=True, kw_only=True)
class FailoverPolicy:
    """How endpoints are checked and chosen.

    Attributes:
        routing: see `Routing`.
        probe_interval: seconds between health probes of each endpoint.
        max_slot_lag: an endpoint whose slot is further behind the best endpoint's
            is out of rotation.
        breaker_failures: consecutive failures (calls or probes) that open the breaker.
        breaker_cooldown: seconds an open breaker waits before its trial probe.
        failback_after: `primary` routing returns to a recovered endpoint only after
            it has been healthy this long (no flapping on a shaky recovery).
    """

    routing: Routing = Routing.PRIMARY
    probe_interval: float = 1.0
    max_slot_lag: int = 50
    breaker_failures: int = 3
    breaker_cooldown: float = 2.0
    failback_after: float = 10.0

    def __post_init__(self) -> None:
        if self.probe_interval <= 0 or self.breaker_cooldown <= 0:
            raise ValueError("probe interval and breaker cooldown must be positive")
        if self.max_slot_lag < 0 or self.failback_after < 0:
            raise ValueError("max slot lag and failback delay cannot be negative")
        if self.breaker_failures < 1:
            raise ValueError("the breaker needs at least one failure to open")


@dataclass(frozen=True, kw_only=True)
class EndpointStats:
    """Metrics-ready state of one endpoint (counters since start)."""

    name: str
    url: str
    """Redacted: scheme, host, port."""
    priority: int
    healthy: bool
    state: str
    """Human-readable: "healthy", "breaker open: timeout", "lagging 400 slots", ..."""
    breaker: BreakerState
    preferred: bool
    """Receives traffic first right now."""
    requests: int
    """Attempts sent for callers (probes not included)."""
    errors: int
    """Attempts that got no usable answer (or a node-unhealthy error)."""
    probes: int
    probe_failures: int
    failovers: int
    """Calls that failed here and moved on to another endpoint."""
    consecutive_failures: int
    in_flight: int
    latency_ewma_seconds: float | None
    slot: int | None
    slot_lag: int


@dataclass(frozen=True, kw_only=True)
class FailoverEvent:
    """A call that was answered by another endpoint after failing on one or more."""

    at: float
    """`time.monotonic()` when the answer came."""
    method: str
    failed: tuple[str, ...]
    """Names of the endpoints that failed first, with what went wrong."""
    answered_by: str
    penalty_seconds: float
    """Time lost on the failed attempts: the latency cost of the failover."""


@dataclass(frozen=True, kw_only=True)
class FailoverStats:
    """Metrics-ready state of the manager."""

    routing: Routing
    healthy: bool
    """At least one endpoint can take traffic."""
    preferred: str | None
    """The endpoint traffic goes to first."""
    switches: int
    """How often the preferred endpoint changed."""
    endpoints: tuple[EndpointStats, ...]
    recent_failovers: tuple[FailoverEvent, ...]
    """The last 32 failed-over calls, oldest first."""

    def endpoint(self, name: str) -> EndpointStats:
        """The stats of the endpoint called `name`.

        Raises:
            KeyError: no such endpoint.
        """
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint
        raise KeyError(name)


class _Endpoint:
    """Mutable state of one endpoint; only the manager's event loop touches it."""

    def __init__(self, config: EndpointConfig, index: int, client: HttpSolanaRpc) -> None:
        self.config = config
        self.index = index
        self.client = client
        self.breaker = BreakerState.CLOSED
        self.opened_at = -math.inf
        self.failures = 0
        self.last_failure = ""
        self.node_unhealthy = False
        self.slot: int | None = None
        self.lag = 0
        self.latency: float | None = None
        self.healthy = True
        # -inf: healthy from the start, so no failback wait before first use.
        self.healthy_since = -math.inf
        self.requests = 0
        self.errors = 0
        self.probes = 0
        self.probe_failures = 0
        self.failovers = 0
        self.in_flight = 0

    @property
    def name(self) -> str:
        return self.config.name

    def observe_latency(self, seconds: float) -> None:
        if self.latency is None:
            self.latency = seconds
        else:
            self.latency += _LATENCY_ALPHA * (seconds - self.latency)

    def state(self, max_lag: int) -> str:
        if self.breaker is BreakerState.OPEN:
            return f"breaker open: {self.last_failure}"
        if self.breaker is BreakerState.HALF_OPEN:
            return f"breaker half-open, probing after: {self.last_failure}"
        if self.node_unhealthy:
            return "node reports unhealthy"
        if self.lag > max_lag:
            return f"lagging {self.lag} slots"
        if self.failures:
            return f"healthy, {self.failures} recent failure(s): {self.last_failure}"
        return "healthy"


class FailoverRpc:
    """`SolanaRpc` over several endpoints: probed, routed, failed over.

    Call `start()` to probe once and start the background probes; `close()` stops
    them and closes every connection pool.
    """

    def __init__(
        self,
        endpoints: Sequence[EndpointConfig],
        *,
        policy: FailoverPolicy | None = None,
        pool_size: int = 5,
        timeout: float = 10.0,
        tracer: trace.Tracer | None = None,
        observer: RpcObserver | None = None,
    ) -> None:
        """Create the manager (no I/O until `start` or `call`).

        Args:
            endpoints: at least one; unique names.
            policy: probing, breaker and routing settings.
            pool_size: keep-alive connections per endpoint (an upper bound).
            timeout: default budget of one `call` over all its attempts.
            tracer: records each attempt made while a gRPC call is served as a child
                span of it (background probes and refreshes are not traced).
            observer: told about every attempt (metrics).

        Raises:
            ValueError: no endpoint, duplicate names, bad pool size or timeout.
        """
        _check_endpoints(endpoints)
        if pool_size < 1 or timeout <= 0:
            raise ValueError("pool size and timeout must be positive")
        self._policy = policy or FailoverPolicy()
        self._timeout = timeout
        # A probe gets what a first attempt gets (half the budget, see `call`): an
        # endpoint too slow for real calls must fail its probes too, or the breaker
        # would close on every trial and open again on the next calls (flapping).
        self._probe_timeout = timeout / 2
        self._endpoints = [
            _Endpoint(config, i, HttpSolanaRpc(config.url, pool_size=pool_size, timeout=timeout))
            for i, config in enumerate(endpoints)
        ]
        self._preferred: _Endpoint | None = None
        self._switches = 0
        self._events: deque[FailoverEvent] = deque(maxlen=32)
        self._any_healthy = True
        self._task: asyncio.Task[None] | None = None
        self._tracer = tracer
        self._observer = observer

    @property
    def policy(self) -> FailoverPolicy:
        return self._policy

    @property
    def healthy(self) -> bool:
        """At least one endpoint can take traffic."""
        return any(e.healthy for e in self._endpoints)

    def describe(self) -> str:
        """The endpoints for a log line: names, redacted URLs, priorities."""
        return ", ".join(
            f"{e.name}={e.config.redacted_url} (priority {e.config.priority})"
            for e in self._endpoints
        )

    async def start(self) -> None:
        """Probe every endpoint once, then keep probing in the background."""
        log.info("Solana endpoints (%s routing): %s", self._policy.routing.value, self.describe())
        await self.probe()
        self._task = asyncio.create_task(self._probe_loop(), name="solana-rpc-probes")

    async def close(self) -> None:
        """Stop probing and close every endpoint's connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for endpoint in self._endpoints:
            await endpoint.client.close()

    async def call(self, method: str, params: list[Any], *, timeout: float | None = None) -> Any:
        """Send one request to the best healthy endpoint, failing over when allowed.

        The whole call, every attempt included, ends within `timeout` (default: the
        manager's) and within the current gRPC call's deadline (`call_deadline`).

        Raises:
            RpcError: an endpoint answered with an error object (not retried, except
                node-unhealthy and min-context-slot errors).
            ChainUnavailable: no healthy endpoint (immediately, no attempt), or no
                endpoint answered in time; the message names each endpoint's state.
            CallDeadlineExceeded: (a ChainUnavailable) the served call's deadline,
                shorter than the manager's timeout, passed first.
        """
        started = time.monotonic()
        own = started + (self._timeout if timeout is None else timeout)
        outer = call_deadline.get()
        deadline = own if outer is None else min(own, outer)
        candidates = self._route(started)
        if not candidates:
            raise ChainUnavailable(self._unhealthy_summary())
        retryable = method in RETRYABLE_METHODS
        failed: list[tuple[_Endpoint, str]] = []
        stopped = ""
        for position, endpoint in enumerate(candidates):
            if failed and not endpoint.healthy:
                continue  # went out of rotation while the others were tried
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped = "deadline reached"
                break
            if failed:
                failed[-1][0].failovers += 1
            # Keep half the time for the next endpoint when a retry is possible, so one
            # hung endpoint cannot use up the caller's whole deadline.
            more = retryable and position < len(candidates) - 1
            attempt_started = time.monotonic()
            try:
                result = await self._attempt(
                    endpoint, method, params, remaining / 2 if more else remaining, position
                )
            except RpcError as exc:
                if exc.code not in _ASK_ANOTHER_NODE:
                    self._note_failover(method, failed, endpoint, attempt_started - started)
                    raise
                failed.append((endpoint, f"error {exc.code}: {exc.message}"))
            except EndpointFailure as exc:
                failed.append((endpoint, exc.failure))
                if exc.request_sent and not retryable:
                    stopped = f"{method} is not retried once sent"
                    break
            else:
                self._note_failover(method, failed, endpoint, attempt_started - started)
                return result
        summary = self._failed_summary(method, failed, stopped)
        if outer is not None and outer <= own and time.monotonic() >= outer:
            # The served call ran out of time, not the endpoints out of health.
            raise CallDeadlineExceeded(summary)
        raise ChainUnavailable(summary)

    def _note_failover(
        self, method: str, failed: list[tuple[_Endpoint, str]], answered: _Endpoint, lost: float
    ) -> None:
        if failed:
            self._events.append(
                FailoverEvent(
                    at=time.monotonic(),
                    method=method,
                    failed=tuple(f"{e.name} ({why})" for e, why in failed),
                    answered_by=answered.name,
                    penalty_seconds=lost,
                )
            )

    async def _attempt(
        self,
        endpoint: _Endpoint,
        method: str,
        params: list[Any],
        timeout: float,
        position: int = 0,
    ) -> Any:
        with self._span(endpoint, method, position) as span:
            started = time.monotonic()
            error: str | None = None
            try:
                return await self._attempt_once(endpoint, method, params, timeout)
            except (RpcError, EndpointFailure) as exc:
                error = _error_label(exc)
                if span is not None:
                    if isinstance(exc, RpcError):
                        span.set_attribute("rpc.jsonrpc.error_code", exc.code)
                    span.set_attribute("error.type", error)
                    span.set_status(trace.StatusCode.ERROR, error)
                raise
            finally:
                if self._observer is not None:
                    self._observer.rpc_attempt(
                        endpoint.name, method, time.monotonic() - started, error
                    )

    @contextlib.contextmanager
    def _span(self, endpoint: _Endpoint, method: str, position: int) -> Iterator[Any]:
        # Child spans only: calls made outside a served call (probes, the chain context
        # refresher, the relay's landing loop) would each start a trace of their own.
        if self._tracer is None or not trace.get_current_span().get_span_context().is_valid:
            yield None
            return
        parts = urlsplit(endpoint.config.url)
        attributes: dict[str, Any] = {
            "rpc.system": "jsonrpc",
            "rpc.jsonrpc.version": "2.0",
            "rpc.method": method,
            "server.address": parts.hostname or "",
            "solana.endpoint": endpoint.name,
            "solana.attempt": position + 1,
        }
        with contextlib.suppress(ValueError):
            attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        with self._tracer.start_as_current_span(
            method,
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    async def _attempt_once(
        self, endpoint: _Endpoint, method: str, params: list[Any], timeout: float
    ) -> Any:
        endpoint.requests += 1
        endpoint.in_flight += 1
        started = time.monotonic()
        try:
            result = await endpoint.client.call(method, params, timeout=timeout)
        except RpcError as exc:
            endpoint.observe_latency(time.monotonic() - started)
            if exc.code == NODE_UNHEALTHY:
                endpoint.errors += 1
                endpoint.node_unhealthy = True  # until a probe says otherwise
                self._update_health(endpoint)
            else:
                self._succeeded(endpoint)  # an answer is an answer
            raise
        except EndpointFailure as exc:
            endpoint.errors += 1
            if exc.timeout:
                endpoint.observe_latency(time.monotonic() - started)
            # A timeout much shorter than a probe's comes from the caller's deadline, not
            # proof that the endpoint is slow: it must not open the breaker (a client
            # with tiny deadlines could otherwise take every endpoint out).
            if not exc.timeout or timeout >= 0.9 * self._probe_timeout:
                self._failed(endpoint, exc.failure)
            raise
        finally:
            endpoint.in_flight -= 1
        endpoint.observe_latency(time.monotonic() - started)
        self._succeeded(endpoint)
        return result

    async def probe(self) -> None:
        """Probe every endpoint that is due, once, then re-rank.

        The background task calls this every `probe_interval`; an open breaker is
        probed (half-open) only after its cooldown.
        """
        now = time.monotonic()
        due: list[_Endpoint] = []
        for endpoint in self._endpoints:
            if endpoint.breaker is BreakerState.OPEN:
                if now - endpoint.opened_at < self._policy.breaker_cooldown:
                    continue
                endpoint.breaker = BreakerState.HALF_OPEN
            due.append(endpoint)
        slots = await asyncio.gather(*(self._probe_one(e) for e in due))
        answered = [(e, slot) for e, slot in zip(due, slots, strict=True) if slot is not None]
        if answered:
            # Lag is measured within one round: every slot was read at about the same time.
            best = max(slot for _, slot in answered)
            for endpoint, slot in answered:
                endpoint.slot = slot
                endpoint.lag = best - slot
        now = time.monotonic()
        for endpoint in self._endpoints:
            self._update_health(endpoint, now)
        self._route(now)

    async def _probe_one(self, endpoint: _Endpoint) -> int | None:
        endpoint.probes += 1
        started = time.monotonic()
        outcomes: list[object] = await asyncio.gather(
            endpoint.client.call("getHealth", [], timeout=self._probe_timeout),
            endpoint.client.call(
                "getSlot", [{"commitment": "confirmed"}], timeout=self._probe_timeout
            ),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
        health, slot = outcomes
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, RpcError | EndpointFailure
            ):
                raise outcome
        failure = next((o for o in outcomes if isinstance(o, EndpointFailure)), None)
        if failure is not None or not isinstance(slot, int):
            endpoint.probe_failures += 1
            if failure is not None and failure.timeout:
                endpoint.observe_latency(elapsed)
            self._failed(endpoint, failure.failure if failure is not None else "no slot")
            return None
        # Other getHealth errors (a provider without the method) say nothing about health.
        endpoint.node_unhealthy = isinstance(health, RpcError) and health.code == NODE_UNHEALTHY
        if endpoint.node_unhealthy:
            endpoint.probe_failures += 1
        endpoint.observe_latency(elapsed)
        self._succeeded(endpoint)
        return slot

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self._policy.probe_interval)
            try:
                await self.probe()
            except Exception:
                log.exception("Solana endpoint probes failed")

    def _succeeded(self, endpoint: _Endpoint) -> None:
        endpoint.failures = 0
        if endpoint.breaker is BreakerState.HALF_OPEN:
            endpoint.breaker = BreakerState.CLOSED
            log.info("Solana endpoint %s: breaker closed (trial probe answered)", endpoint.name)
        self._update_health(endpoint)

    def _failed(self, endpoint: _Endpoint, failure: str) -> None:
        endpoint.failures += 1
        endpoint.last_failure = failure
        opening = endpoint.breaker is BreakerState.HALF_OPEN or (
            endpoint.breaker is BreakerState.CLOSED
            and endpoint.failures >= self._policy.breaker_failures
        )
        if opening:
            if endpoint.breaker is BreakerState.CLOSED:
                log.warning(
                    "Solana endpoint %s: breaker open after %d consecutive failures (%s)",
                    endpoint.name,
                    endpoint.failures,
                    failure,
                )
            endpoint.breaker = BreakerState.OPEN
            endpoint.opened_at = time.monotonic()
        self._update_health(endpoint)

    def _update_health(self, endpoint: _Endpoint, now: float | None = None) -> None:
        healthy = (
            endpoint.breaker is BreakerState.CLOSED
            and not endpoint.node_unhealthy
            and endpoint.lag <= self._policy.max_slot_lag
        )
        if healthy != endpoint.healthy:
            endpoint.healthy = healthy
            if healthy:
                endpoint.healthy_since = time.monotonic() if now is None else now
                log.info("Solana endpoint %s is healthy again", endpoint.name)
            else:
                log.warning(
                    "Solana endpoint %s out of rotation: %s",
                    endpoint.name,
                    endpoint.state(self._policy.max_slot_lag),
                )
        any_healthy = self.healthy
        if any_healthy != self._any_healthy:
            self._any_healthy = any_healthy
            if any_healthy:
                log.info("a Solana endpoint is healthy again: %s", endpoint.name)
            else:
                log.error("%s", self._unhealthy_summary())

    def _route(self, now: float) -> list[_Endpoint]:
        """Healthy endpoints, best first, by the routing policy."""
        healthy = [e for e in self._endpoints if e.healthy]
        if not healthy:
            return []
        policy = self._policy

        def rank(e: _Endpoint) -> tuple[bool, int, int]:
            # Recently recovered endpoints wait behind the stable ones.
            return (now - e.healthy_since < policy.failback_after, e.config.priority, e.index)

        current = self._preferred if self._preferred in healthy else None
        if policy.routing is Routing.LATENCY:
            ordered = sorted(
                healthy,
                key=lambda e: (math.inf if e.latency is None else e.latency, rank(e)),
            )
            best = ordered[0].latency
            mine = current.latency if current is not None else None
            if (
                current is not None
                and best is not None
                and mine is not None
                and mine <= best * _LATENCY_SWITCH_RATIO + _LATENCY_SWITCH_FLOOR
            ):
                ordered.remove(current)
                ordered.insert(0, current)
        else:
            ordered = sorted(healthy, key=rank)
            if policy.routing is Routing.STICKY and current is not None:
                ordered.remove(current)
                ordered.insert(0, current)
        first = ordered[0]
        if first is not self._preferred:
            previous = self._preferred
            self._preferred = first
            if previous is not None:
                self._switches += 1
                log.warning(
                    "Solana traffic moves from %s (%s) to %s",
                    previous.name,
                    previous.state(policy.max_slot_lag),
                    first.name,
                )
        return ordered

    def _unhealthy_summary(self) -> str:
        states = ", ".join(
            f"{e.name} ({e.state(self._policy.max_slot_lag)})" for e in self._endpoints
        )
        if len(self._endpoints) == 1:
            return f"the only Solana endpoint is unhealthy: {states}"
        return f"all {len(self._endpoints)} Solana endpoints unhealthy: {states}"

    def _failed_summary(
        self, method: str, failed: list[tuple[_Endpoint, str]], stopped: str
    ) -> str:
        tried = {e.name: why for e, why in failed}
        parts = []
        for endpoint in self._endpoints:
            if endpoint.name in tried:
                parts.append(f"{endpoint.name} ({tried[endpoint.name]})")
            elif not endpoint.healthy:
                parts.append(f"{endpoint.name} ({endpoint.state(self._policy.max_slot_lag)})")
            else:
                parts.append(f"{endpoint.name} (not tried: {stopped or 'no time left'})")
        return f"{method}: no Solana endpoint answered: {', '.join(parts)}"

    def stats(self) -> FailoverStats:
        """A consistent snapshot of every counter and state, for metrics and tests."""
        max_lag = self._policy.max_slot_lag
        return FailoverStats(
            routing=self._policy.routing,
            healthy=self.healthy,
            preferred=self._preferred.name if self._preferred is not None else None,
            switches=self._switches,
            endpoints=tuple(
                EndpointStats(
                    name=e.name,
                    url=e.config.redacted_url,
                    priority=e.config.priority,
                    healthy=e.healthy,
                    state=e.state(max_lag),
                    breaker=e.breaker,
                    preferred=e is self._preferred,
                    requests=e.requests,
                    errors=e.errors,
                    probes=e.probes,
                    probe_failures=e.probe_failures,
                    failovers=e.failovers,
                    consecutive_failures=e.failures,
                    in_flight=e.in_flight,
                    latency_ewma_seconds=e.latency,
                    slot=e.slot,
                    slot_lag=e.lag,
                )
                for e in self._endpoints
            ),
            recent_failovers=tuple(self._events),
        )
