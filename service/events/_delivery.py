"""Webhook delivery: claim due deliveries, POST them signed, record what happened.

Every replica runs one :class:`Deliverer`. It claims due deliveries from the database
(each owned by one replica under a lease, so no attempt is made twice), sends at most
``max_in_flight`` at once, and records each attempt with its outcome in one
transaction. A replica that dies between sending and recording leaves its lease to
run out: the delivery is claimed again and re-sent (at least once, never lost; the
receiver deduplicates by ``webhook-id``, the event id).

An attempt succeeds on a 2xx answer. Anything else (another status, a redirect,
which is never followed, a timeout, a refused or forbidden connection) is retried
after the next delay of the schedule, with jitter; a ``Retry-After`` longer than the
delay is honoured. When the schedule runs out the delivery fails and the webhook is
disabled (``UpdateWebhook`` enables it again); a ``410 Gone`` disables it at once.

Each attempt is a span (``webhook.deliver``) linked to the span that produced the
event, and its ``traceparent`` travels to the receiver.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.events._model import Attempt, DeliveryState, Event, Webhook
from service.events._signing import signature_headers
from service.events._ssrf import AddressPolicy, ForbiddenAddressError
from service.events._store import ClaimedDelivery, EventStore
from service.events._tasks import cancel
from service.store import StoreUnavailableError

log = logging.getLogger(__name__)

DEFAULT_RETRY_SCHEDULE: Final = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""Seconds between attempts after each failure (Standard Webhooks' and Svix's schedule):
5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about 27.6 hours."""
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES: Final = (
    "succeeded",
    "http_error",
    "timeout",
    "unreachable",
    "forbidden_address",
    "cancelled",
    "gave_up",
)
"""Counted per attempt (the first five), per delivery cancelled (the owner key may no
longer see it) and per delivery whose retries ran out."""

Access = Callable[[Webhook, Event], Awaitable[str | None]]
"""Whether the webhook's owner may still receive the event: None, or why not."""
Render = Callable[[Event], bytes]
"""The body of a delivery: the event's canonical proto JSON."""


@dataclass(frozen=True, kw_only=True)
class DeliveryConfig:
    """How webhooks are delivered (see the ``webhook_*`` settings)."""

    timeout: float = 10.0
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    jitter: float = 0.1
    """Each delay is multiplied by a random factor within 1 +/- jitter."""
    lease: float = 60.0
    max_in_flight: int = 32
    max_response_bytes: int = 64 * 1024
    poll_interval: float = 0.5
    user_agent: str = "agent-staking-webhooks"

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.poll_interval <= 0 or self.max_in_flight < 1:
            raise ValueError("timeout, poll_interval and max_in_flight must be positive")
        if self.lease <= self.timeout:
            raise ValueError("the delivery lease must outlast the delivery timeout")
        if not 0 <= self.jitter < 1 or any(d <= 0 for d in self.retry_schedule):
            raise ValueError("jitter in [0, 1) and positive retry delays")


@dataclass(frozen=True, kw_only=True)
class DeliveryStats:
    """Metrics-ready view of this replica's deliveries.

    Attributes:
        outcomes: Monotonic counts by outcome (:data:`OUTCOMES`).
        latency_buckets: Cumulative (upper bound seconds, count) of attempt latencies,
            the last bound ``inf``.
        latency_sum: Sum of attempt latencies, seconds.
        in_flight: Attempts running now.
    """

    outcomes: Mapping[str, int]
    latency_buckets: tuple[tuple[float, int], ...]
    latency_sum: float
    in_flight: int


@dataclass(slots=True)
class _Result:
    response_code: int = 0
    error: str = ""
    outcome: str = "succeeded"
    retry_after: float = 0.0
    latency: float = 0.0
    start: float = 0.0
    buckets: list[int] = field(default_factory=list)


def _forbidden(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ForbiddenAddressError) or "refused to connect to" in str(seen):
            return True
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, ForbiddenAddressError) or "refused to connect to" in str(os_error):
            return True
        seen = seen.__cause__
    return False


def _retry_after(value: str | None) -> float:
    if not value or not value.strip().isdigit():
        return 0.0
    return min(float(value.strip()), 86_400.0)


class Deliverer:
    """Sends this replica's share of the due deliveries (see the module docstring)."""

    def __init__(
        self,
        store: EventStore,
        *,
        policy: AddressPolicy,
        render: Render,
        access: Access,
        config: DeliveryConfig,
        owner: str,
        tracer: trace.Tracer | None = None,
        resolver: aiohttp.abc.AbstractResolver | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """Args:
        policy: Which addresses may be connected to (checked at connect time).
        render: The body of an event's delivery.
        access: Asked before each attempt whether the owner may still receive it.
        owner: This replica's name on its leases and attempts.
        resolver: DNS resolver of the HTTP client (default: aiohttp's).
        clock: Unix seconds (leases, schedules, attempt times).
        """
        self._store = store
        self._policy = policy
        self._render = render
        self._access = access
        self.config = config
        self.owner = owner
        self._tracer = tracer or trace.get_tracer(__name__)
        self._resolver = resolver
        self._clock = clock
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._outcomes: Counter[str] = Counter()
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_in_flight,
            socket_factory=self._policy.socket_factory,
            resolver=self._resolver,
            # A name is resolved again for each new connection (its address re-checked).
            use_dns_cache=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # never through a proxy the environment names
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    async def stop(self) -> None:
        """Stop claiming, let attempts in flight finish (up to the timeout), close."""
        await cancel(self._task)
        self._task = None
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=self.config.timeout + 1)
        for task in self._in_flight:
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        """Look for due deliveries now (an event was just recorded here)."""
        self._wake.set()

    def stats(self) -> DeliveryStats:
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip(
            (*LATENCY_BUCKETS, float("inf")), self._latency_counts, strict=True
        ):
            running += count
            cumulative.append((bound, running))
        return DeliveryStats(
            outcomes={outcome: self._outcomes.get(outcome, 0) for outcome in OUTCOMES},
            latency_buckets=tuple(cumulative),
            latency_sum=self._latency_sum,
            in_flight=len(self._in_flight),
        )

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.claim_and_send()
            except StoreUnavailableError as exc:
                log.debug("webhook deliveries: database unavailable: %s", exc.message)
            except Exception:
                log.exception("webhook deliveries: unexpected error")
            waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self._wake.wait())]
            if len(self._in_flight) >= self.config.max_in_flight:
                waits.extend(self._in_flight)  # type: ignore[arg-type]
            try:
                await asyncio.wait(
                    waits, timeout=self.config.poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waits[0].cancel()

    async def claim_and_send(self) -> int:
        """Claim what is due (as much as there is room for) and start sending it."""
        room = self.config.max_in_flight - len(self._in_flight)
        if room <= 0:
            return 0
        now = self._clock()
        claimed = await self._store.claim(
            owner=self.owner, now=now, lease_until=now + self.config.lease, limit=room
        )
        for delivery in claimed:
            task = asyncio.create_task(
                self._deliver(delivery), name=f"webhook-delivery-{delivery.delivery_id}"
            )
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(claimed)

    # --- one attempt --------------------------------------------------------------------

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        try:
            refusal = await self._access(delivery.webhook, delivery.event)
            if refusal is not None:
                self._outcomes["cancelled"] += 1
                await self._store.finish(
                    delivery.delivery_id,
                    owner=self.owner,
                    attempt=None,
                    state=DeliveryState.CANCELLED,
                    next_attempt_time=self._clock(),
                    error=refusal,
                )
                return
            result = await self._attempt(delivery)
            await self._record(delivery, result)
        except StoreUnavailableError as exc:
            # Sent (or not) but not recorded: the lease runs out and it is sent again.
            log.warning(
                "webhook delivery %d not recorded (%s); it is retried when its lease ends",
                delivery.delivery_id,
                exc.message,
            )
        except Exception:
            log.exception("webhook delivery %d failed unexpectedly", delivery.delivery_id)

    async def _attempt(self, delivery: ClaimedDelivery) -> _Result:
        session = self._session
        assert session is not None
        event, webhook = delivery.event, delivery.webhook
        body = self._render(event)
        result = _Result(start=self._clock())
        links = []
        if event.trace_context:
            producer = trace.get_current_span(
                TraceContextTextMapPropagator().extract({"traceparent": event.trace_context})
            ).get_span_context()
            if producer.is_valid:
                links.append(trace.Link(producer))
        with self._tracer.start_as_current_span(
            "webhook.deliver",
            context=trace.set_span_in_context(trace.INVALID_SPAN),  # a trace of its own
            kind=trace.SpanKind.CLIENT,
            links=links,
            attributes={
                "agent_staking.webhook": webhook.name,
                "agent_staking.event_id": event.event_id,
                "agent_staking.event_type": event.type.value,
                "agent_staking.attempt": delivery.attempt,
                "http.request.method": "POST",
            },
        ) as span:
            headers = signature_headers(
                delivery.signing_secrets,
                msg_id=event.event_id,
                timestamp=int(result.start),
                body=body,
            )
            headers["content-type"] = "application/json"
            headers["user-agent"] = self.config.user_agent
            TraceContextTextMapPropagator().inject(headers)
            started = time.monotonic()
            try:
                async with session.post(
                    webhook.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                ) as response:
                    # The answer's body is not used: read a bounded part, then close.
                    await response.content.read(self.config.max_response_bytes)
                    result.response_code = response.status
                    if not 200 <= response.status < 300:
                        result.outcome = "http_error"
                        kind = "redirect refused" if 300 <= response.status < 400 else "HTTP"
                        result.error = f"{kind} {response.status} {response.reason or ''}".strip()
                        result.retry_after = _retry_after(response.headers.get("retry-after"))
            except TimeoutError:
                result.outcome = "timeout"
                result.error = f"no answer within {self.config.timeout:g} s"
            except aiohttp.ClientError as exc:
                if _forbidden(exc):
                    result.outcome = "forbidden_address"
                    result.error = "refused: the URL's host resolves to a forbidden address"
                else:
                    result.outcome = "unreachable"
                    result.error = f"connection failed: {type(exc).__name__}"
            except OSError as exc:
                result.outcome = "forbidden_address" if _forbidden(exc) else "unreachable"
                result.error = f"connection failed: {type(exc).__name__}"
            result.latency = time.monotonic() - started
            span.set_attribute("http.response.status_code", result.response_code)
            if result.outcome != "succeeded":
                span.set_status(trace.StatusCode.ERROR, result.error)
        self._outcomes[result.outcome] += 1
        index = next(
            (i for i, bound in enumerate(LATENCY_BUCKETS) if result.latency <= bound),
            len(LATENCY_BUCKETS),
        )
        self._latency_counts[index] += 1
        self._latency_sum += result.latency
        return result

    async def _record(self, delivery: ClaimedDelivery, result: _Result) -> None:
        attempt = Attempt(
            attempt=delivery.attempt,
            start_time=result.start,
            latency=result.latency,
            response_code=result.response_code,
            succeeded=result.outcome == "succeeded",
            error=result.error,
            replica=self.owner,
        )
        now = self._clock()
        disable: str | None = None
        next_time = now
        if attempt.succeeded:
            state = DeliveryState.SUCCEEDED
        elif result.response_code == 410:
            state = DeliveryState.FAILED
            disable = "the receiver answered 410 Gone"
        elif delivery.attempt <= len(self.config.retry_schedule):
            state = DeliveryState.PENDING
            delay = self.config.retry_schedule[delivery.attempt - 1]
            delay *= 1 + self._rng.uniform(-self.config.jitter, self.config.jitter)
            next_time = now + max(delay, result.retry_after)
        else:
            state = DeliveryState.FAILED
            # The time the attempts took: the schedule's, or longer where a Retry-After
            # or a busy deliverer pushed a retry back.
            first = await self._store.first_attempt_time(delivery.delivery_id)
            span = result.start - (result.start if first is None else first)
            over = f"{span / 3600:.1f} hours" if span >= 3600 else f"{span:.0f} seconds"
            disable = f"{delivery.attempt} attempts over {over} failed (last: {result.error})"
        if state is DeliveryState.FAILED and not delivery.event.webhook_id:
            self._outcomes["gave_up"] += 1
        elif state is DeliveryState.FAILED:
            disable = None  # a test event never disables its webhook
        if disable is not None:
            log.warning("webhook %s disabled: %s", delivery.webhook.name, disable)
        still_ours = await self._store.finish(
            delivery.delivery_id,
            owner=self.owner,
            attempt=attempt,
            state=state,
            next_attempt_time=next_time,
            error=result.error,
            disable_reason=disable,
        )
        if not still_ours:
            log.warning(
                "webhook delivery %d was taken over by another replica while this one sent it",
                delivery.delivery_id,
            )
