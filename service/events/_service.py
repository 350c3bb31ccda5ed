"""The events domain service: webhooks, streams and test events for API keys.

:class:`Events` assembles the parts (the outbox and its tables, the feed that serves
streams, the deliverer, the leader-elected producer, the relay's listener) and
answers what the EventService asks, with the tenancy rules:

- a key sees the events of the wallets it may act for: its policy's
  ``allowed_wallets`` when set (a webhook or stream naming no wallet gets them all;
  naming another is refused), otherwise the wallets the webhook or stream names
  (required unless it asks for key events only); and its own key events;
- an admin key sees every webhook and, naming no wallet, every event;
- a webhook belongs to the key that created it (NOT_FOUND for any other, admins
  apart); before each delivery the owner key is checked again (still active, still
  allowed the wallet): a revoked key or a narrowed policy stops its deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Final

import aiohttp
from opentelemetry import trace
from solders.transaction import VersionedTransaction

from service.chain import (
    ChainContext,
    ChainUnavailable,
    SubmissionChange,
    current_traceparent,
)
from service.core import parse_address
from service.core.errors import FieldErrors, InvalidArgumentError
from service.core.paging import PageToken, decode_page_token, fingerprint, page_size
from service.core.policy import PolicyViolationError
from service.core.txstatus import TxState
from service.events._delivery import Deliverer, DeliveryConfig, DeliveryStats, Render
from service.events._errors import (
    InvalidEventIdError,
    UnknownEventTypeError,
    WalletsRequiredError,
    WebhookLimitError,
    WebhookNotFoundError,
)
from service.events._feed import EventFeed
from service.events._model import (
    SUBSCRIBABLE,
    WEBHOOK_NAME_PREFIX,
    Audience,
    Delivery,
    DeliveryState,
    Event,
    EventType,
    NewEvent,
    TransactionPayload,
    Webhook,
    WebhookSpec,
    WebhookState,
    WebhookTestPayload,
    event_seq,
)
from service.events._producer import Producer, ProducerConfig, RewardReader, WalletReader
from service.events._signing import new_secret
from service.events._ssrf import AddressPolicy, Resolve, system_resolve
from service.events._store import EventStore, QueueStats
from service.events._tasks import cancel
from service.keys import (
    API_KEY_EXPIRED,
    API_KEY_REVOKED,
    ApiKey,
    AuthenticationError,
    KeyManager,
    KeyNotFoundError,
    KeyState,
    Principal,
    Scope,
)
from service.keys._model import MAX_POLICY_LIST
from service.store import Connection, Database, StoreUnavailableError

log = logging.getLogger(__name__)

MAX_DESCRIPTION_LENGTH: Final = 200
MAX_SECRET_GRACE: Final = timedelta(days=7)
DEFAULT_SECRET_GRACE: Final = timedelta(hours=24)
TEST_MESSAGE: Final = "a test event from agent-staking"
_WEBHOOK_ID: Final = re.compile(r"[0-9a-f]{21}")
_KEY_CACHE_ENTRIES: Final = 10_000
# Transaction states that make an event, in the order they are reached.
_TRANSACTION_EVENTS: Final = (
    (TxState.CONFIRMED, EventType.TRANSACTION_CONFIRMED),
    (TxState.FINALIZED, EventType.TRANSACTION_FINALIZED),
    (TxState.FAILED, EventType.TRANSACTION_FAILED),
    (TxState.EXPIRED, EventType.TRANSACTION_EXPIRED),
)


@dataclass(frozen=True, kw_only=True)
class EventsConfig:
    """The events' settings (``events_*`` and ``webhook*_*``)."""

    allow_private: bool = False
    poll_interval: float = 0.5
    buffer_size: int = 10_000
    watch_lease: float = 30.0
    key_recheck: float = 5.0
    """Seconds a stream (or a delivery) trusts its key's state and policy."""
    max_webhooks_per_key: int = 25
    stats_interval: float = 10.0
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)


@dataclass(frozen=True, kw_only=True)
class EventStats:
    """Metrics-ready view of the events on this replica.

    Attributes:
        produced: Events recorded by this replica, by type (monotonic).
        deliveries: This replica's delivery attempts.
        queue: The deliveries waiting, deployment-wide (as of the last read).
        leader: This replica runs the producers now.
        takeovers: Times this replica took the lead (monotonic).
        streams: Open WatchEvents streams on this replica.
    """

    produced: Mapping[str, int]
    deliveries: DeliveryStats
    queue: QueueStats
    leader: bool
    takeovers: int
    streams: int


def _webhook_id(now: float) -> str:
    """Time-ordered (milliseconds, hex) then random: lists by id are by creation."""
    return f"{int(now * 1000):011x}{secrets.token_hex(5)}"


def webhook_id_from_name(name: str, *, field: str = "name") -> str:
    """``webhooks/{id}`` -> id.

    Raises:
        InvalidArgumentError: Not a webhook name.
    """
    webhook_id = name.removeprefix(WEBHOOK_NAME_PREFIX)
    if not name.startswith(WEBHOOK_NAME_PREFIX) or not _WEBHOOK_ID.fullmatch(webhook_id):
        raise InvalidArgumentError(
            f"{field} must be a webhook name, webhooks/ and 21 hex digits",
            field=field,
            reason="INVALID_WEBHOOK_NAME",
        )
    return webhook_id


@dataclass(frozen=True, kw_only=True)
class _Asked:
    """The event types and wallets a webhook or stream asks for, those that are valid
    (wallets parsed, each once)."""

    types: tuple[EventType, ...]
    wallets: tuple[str, ...]
    names_wallets: bool
    """The request named wallets (valid or not)."""
    wallets_field: str


MAX_TYPES_ASKED: Final = 100
"""Event types one request may list (there are far fewer: repeats are allowed)."""


def _too_long(
    items: Sequence[str], maximum: int, noun: str, *, field: str, errors: FieldErrors
) -> bool:
    """Whether ``items`` is longer than ``maximum`` (then one violation joins ``errors``
    for the list, not one per entry: a megabyte of them would cost the serving loop
    seconds)."""
    if len(items) <= maximum:
        return False
    errors.add(
        InvalidArgumentError(f"{field} holds {len(items)} {noun}; at most {maximum}", field=field)
    )
    return True


def _asked(
    wallets: Sequence[str], types: Sequence[str], *, prefix: str, errors: FieldErrors
) -> _Asked:
    """Check the ``types`` and ``wallets`` of a request; each invalid one joins ``errors``
    (``prefix``: "" for a stream's ``types``, "webhook." for ``webhook.event_types``)."""
    types_field = f"{prefix}event_types" if prefix else "types"
    chosen: list[EventType] = []
    if _too_long(types, MAX_TYPES_ASKED, "types", field=types_field, errors=errors):
        types = ()
    for i, name in enumerate(types):
        try:
            event_type = EventType(name)
        except ValueError:
            event_type = None
        if event_type is None or event_type not in SUBSCRIBABLE:
            errors.add(
                UnknownEventTypeError(
                    f"unknown event type {name[:64]!r}", field=f"{types_field}[{i}]"
                )
            )
        else:
            chosen.append(event_type)
    wallets_field = f"{prefix}wallets"
    named: list[str] = []
    if not _too_long(wallets, MAX_POLICY_LIST, "wallets", field=wallets_field, errors=errors):
        for i, wallet in enumerate(wallets):
            field = f"{wallets_field}[{i}]"
            address = errors.check(functools.partial(parse_address, wallet, field=field))
            if address is not None:
                named.append(str(address))
    return _Asked(
        types=tuple(chosen),
        wallets=tuple(dict.fromkeys(named)),
        names_wallets=bool(wallets),
        wallets_field=wallets_field,
    )


def _check_description(description: str) -> None:
    if len(description) > MAX_DESCRIPTION_LENGTH or not description.isprintable():
        raise InvalidArgumentError(
            f"description must be at most {MAX_DESCRIPTION_LENGTH} printable characters",
            field="webhook.description",
        )


def fee_payer(wire: bytes) -> str:
    """The fee payer (first account) of a wire transaction."""
    return str(VersionedTransaction.from_bytes(wire).message.account_keys[0])


def transaction_events(change: SubmissionChange, *, now: float) -> list[NewEvent]:
    """The events of a relayed transaction's change of state (every step it crossed:
    CONFIRMED as well when it went straight to FINALIZED)."""
    status, before = change.status, change.previous
    events: list[NewEvent] = []
    wallet = fee_payer(change.wire)
    for state, event_type in _TRANSACTION_EVENTS:
        crossed = (
            status.state is state
            if state in (TxState.FAILED, TxState.EXPIRED)
            else status.state in (TxState.CONFIRMED, TxState.FINALIZED)
            and status.state >= state > before
        )
        if not crossed:
            continue
        events.append(
            NewEvent(
                type=event_type,
                payload=TransactionPayload(
                    signature=status.signature, state=state, slot=status.slot, error=status.error
                ),
                occurred_time=now,
                wallet=wallet,
                dedupe_key=f"{event_type}:{status.signature}",
                trace_context=change.trace_context,
            )
        )
    return events


class Events:
    """Webhooks, streams and test events; the events' background work (see above)."""

    def __init__(
        self,
        database: Database,
        *,
        keys: KeyManager,
        wallets: WalletReader,
        context: ChainContext,
        render: Render,
        config: EventsConfig,
        owner: str,
        rewards: RewardReader | None = None,
        tracer: trace.Tracer | None = None,
        resolve: Resolve = system_resolve,
        resolver: aiohttp.abc.AbstractResolver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Args:
        keys: The keys (owners of webhooks, checked before deliveries and in streams).
        wallets: Reads a wallet's stake accounts as ListStakeAccounts does.
        context: The chain context (epoch, vote accounts).
        render: The body of a webhook delivery (the event's proto JSON).
        owner: This replica's name (leases, attempts, stream wallets).
        rewards: Reads inflation rewards (stake.rewards_credited); None: no such events.
        resolve: DNS of the URL check at create/update time; resolver: the HTTP
            client's (connect time). Both the system's by default.
        """
        self.config = config
        self.store = EventStore(database, clock=clock)
        self.policy = AddressPolicy(allow_private=config.allow_private)
        self._keys = keys
        self._context = context
        self._resolve = resolve
        self._clock = clock
        self._produced: Counter[str] = Counter()
        self._key_cache: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._queue = QueueStats(webhooks={state.value: 0 for state in WebhookState})
        self._stats_task: asyncio.Task[None] | None = None
        self.feed = EventFeed(
            self.store,
            holder=owner,
            poll_interval=config.poll_interval,
            buffer_size=config.buffer_size,
            watch_lease=config.watch_lease,
            epoch=self._epoch,
            clock=clock,
        )
        self.deliverer = Deliverer(
            self.store,
            policy=self.policy,
            render=render,
            access=self._may_receive,
            config=config.delivery,
            owner=owner,
            tracer=tracer,
            resolver=resolver,
            clock=clock,
        )
        self.producer = Producer(
            self.store,
            wallets=wallets,
            context=context,
            rotation_due=keys.rotation_due,
            config=config.producer,
            owner=owner,
            on_recorded=self._recorded,
            rewards=rewards,
            tracer=tracer,
            clock=clock,
        )

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.feed.start()
        await self.deliverer.start()
        await self.producer.start()
        self._stats_task = asyncio.create_task(self._watch_queue(), name="event-queue-stats")

    async def stop(self) -> None:
        await cancel(self._stats_task)
        self._stats_task = None
        await self.producer.stop()
        await self.deliverer.stop()
        await self.feed.stop()

    def stats(self) -> EventStats:
        produced = Counter(self._produced)
        produced.update(self.producer.counts())
        return EventStats(
            produced={t.value: produced.get(t.value, 0) for t in EventType},
            deliveries=self.deliverer.stats(),
            queue=self._queue,
            leader=self.producer.leader,
            takeovers=self.producer.takeovers,
            streams=self.feed.streams,
        )

    async def _watch_queue(self) -> None:
        while True:
            with contextlib.suppress(StoreUnavailableError):
                self._queue = await self.store.queue_stats()
            await asyncio.sleep(self.config.stats_interval)

    def _recorded(self, events: Sequence[Event]) -> None:
        if events:
            self.feed.wake()
            self.deliverer.wake()

    def _epoch(self) -> int | None:
        try:
            return self._context.snapshot().epoch
        except ChainUnavailable:
            return None

    # --- the relay's listener -------------------------------------------------------------

    async def submissions_changed(
        self, conn: Connection, changes: Sequence[SubmissionChange]
    ) -> None:
        """``service.chain.SubmissionListener``: the events of relayed transactions, in
        the transaction that saves their new states."""
        now = self._clock()
        events = [event for change in changes for event in transaction_events(change, now=now)]
        written = await self.store.append(conn, events)
        for event in written:
            self._produced[event.type.value] += 1
        self._recorded(written)

    # --- who sees what --------------------------------------------------------------------

    def audience(
        self,
        principal: Principal,
        wallets: Sequence[str],
        types: Sequence[str],
        *,
        prefix: str = "",
    ) -> Audience:
        """What a webhook or stream of ``principal`` asking for ``wallets`` and ``types``
        receives (see the module docstring).

        Raises:
            InvalidArgumentError: Every invalid field at once (unknown types, too many
                wallets or malformed ones, WALLETS_REQUIRED).
            PolicyViolationError: A wallet the key may not use.
        """
        errors = FieldErrors()
        return self._audience(
            principal, _asked(wallets, types, prefix=prefix, errors=errors), errors
        )

    def _audience(self, principal: Principal, asked: _Asked, errors: FieldErrors) -> Audience:
        """The audience of what a request asks for: a key without a wallet list must
        name wallets (a field error among ``errors``, all raised here); then a key with
        one may name only those (PERMISSION_DENIED)."""
        allowed = principal.policy.allowed_wallets
        admin = principal.has_scope(Scope.ADMIN)
        key_only = bool(asked.types) and all(t.key_scoped for t in asked.types)
        if not asked.names_wallets and not allowed and not admin and not key_only:
            errors.add(
                WalletsRequiredError(
                    "name the wallets whose events you want: this API key may use any "
                    "wallet, so there is no default set",
                    field=asked.wallets_field,
                )
            )
        errors.raise_any()
        named = asked.wallets
        if not admin and allowed:
            for wallet in named:
                if wallet not in allowed:
                    raise PolicyViolationError(
                        f"API key {principal.key_id} may not use wallet {wallet}",
                        reason="POLICY_WALLET_NOT_ALLOWED",
                        metadata={"policy": "allowed_wallets", "wallet": wallet},
                        field=asked.wallets_field,
                    )
            named = named or tuple(allowed)
        return Audience(
            key_id=principal.key_id,
            wallets=frozenset(named),
            all_wallets=admin and not named,
            types=frozenset(asked.types),
        )

    async def key(self, key_id: str) -> ApiKey | None:
        """The key as this service sees it: as of at most ``key_recheck`` seconds ago
        (None: no such key). Deliveries and streams are checked against it."""
        now = time.monotonic()
        cached = self._key_cache.get(key_id)
        if cached is not None and now - cached[0] < self.config.key_recheck:
            return cached[1]
        try:
            key: ApiKey | None = await self._keys.get(key_id)
        except KeyNotFoundError:
            key = None
        self._key_cache[key_id] = (now, key)
        self._key_cache.move_to_end(key_id)
        while len(self._key_cache) > _KEY_CACHE_ENTRIES:
            self._key_cache.popitem(last=False)
        return key

    async def _may_receive(self, webhook: Webhook, event: Event) -> str | None:
        key = await self.key(webhook.key_id)
        if key is None or key.state is not KeyState.ACTIVE:
            return "the webhook's API key is no longer active"
        if webhook.all_wallets and Scope.ADMIN.value not in key.scopes:
            return "the webhook's API key no longer has the admin scope"
        allowed = key.policy.allowed_wallets
        if (
            not event.type.key_scoped
            and allowed
            and Scope.ADMIN.value not in key.scopes
            and event.wallet not in allowed
        ):
            return f"the webhook's API key may no longer use wallet {event.wallet}"
        return None

    async def _owner_principal(self, webhook: Webhook, caller: Principal) -> Principal:
        """The principal whose rights a webhook's wallets are checked against: its
        owner's (an admin may change another key's webhook)."""
        if webhook.key_id == caller.key_id:
            return caller
        key = await self.key(webhook.key_id)
        if key is None:
            raise WebhookNotFoundError(webhook.name)
        return Principal(key_id=key.key_id, scopes=key.scopes, policy=key.policy)

    # --- webhooks ---------------------------------------------------------------------------

    async def create_webhook(
        self, principal: Principal, spec: WebhookSpec, *, errors: FieldErrors | None = None
    ) -> tuple[Webhook, str]:
        """Register a webhook of ``principal``; its signing secret (shown once).

        Args:
            errors: Field errors already found in the request (converting it): reported
                with those found here.

        Raises:
            InvalidArgumentError: Every invalid field at once (the URL's form or
                address, the description, event types, wallets).
            PolicyViolationError, WebhookLimitError, StoreUnavailableError.
        """
        errors = FieldErrors() if errors is None else errors
        await errors.check_async(self.policy.check_url(spec.url, resolve=self._resolve))
        errors.check(lambda: _check_description(spec.description))
        asked = _asked(spec.wallets, spec.event_types, prefix="webhook.", errors=errors)
        audience = self._audience(principal, asked, errors)
        now = self._clock()
        webhook = Webhook(
            webhook_id=_webhook_id(now),
            key_id=principal.key_id,
            url=spec.url,
            description=spec.description,
            event_types=tuple(sorted(audience.types)),
            wallets=tuple(sorted(audience.wallets)),
            all_wallets=audience.all_wallets,
            state=WebhookState.ENABLED,
            disabled_reason="",
            create_time=now,
            update_time=now,
        )
        secret = new_secret()
        limit = self.config.max_webhooks_per_key
        if not await self.store.create_webhook(
            webhook, secret, max_per_key=limit, epoch=self._epoch()
        ):
            raise WebhookLimitError(key_id=principal.key_id, limit=limit)
        self.producer.wake()
        log.info("webhook %s created by API key %s", webhook.name, principal.key_id)
        return webhook, secret

    async def _visible(self, principal: Principal, webhook_id: str) -> Webhook:
        """The webhook, if ``principal`` may see it (its own; any for an admin)."""
        found = await self.store.get_webhook(webhook_id)
        if found is not None:
            webhook, _ = found
            if webhook.key_id == principal.key_id or principal.has_scope(Scope.ADMIN):
                return webhook
        raise WebhookNotFoundError(WEBHOOK_NAME_PREFIX + webhook_id)

    async def get_webhook(self, principal: Principal, name: str) -> Webhook:
        """Raises: InvalidArgumentError (name), WebhookNotFoundError."""
        return await self._visible(principal, webhook_id_from_name(name))

    async def list_webhooks(
        self, principal: Principal, *, page_size_value: int, page_token: str
    ) -> tuple[list[Webhook], str]:
        """A page of the caller's webhooks (every key's for an admin), oldest first.

        Raises:
            InvalidArgumentError: The page size, the page token, or both.
        """
        scope = None if principal.has_scope(Scope.ADMIN) else principal.key_id
        bound = fingerprint("webhooks", scope)
        errors = FieldErrors()
        size = errors.check(lambda: page_size(page_size_value))
        token = errors.check(
            lambda: decode_page_token(page_token, kind="webhooks", fingerprint=bound)
        )
        errors.raise_any()
        assert size is not None
        found = await self.store.list_webhooks(
            key_id=scope, after=token.position if token else "", limit=size + 1
        )
        next_token = ""
        if len(found) > size:
            next_token = PageToken(
                kind="webhooks", fingerprint=bound, position=found[size - 1].webhook_id
            ).encode()
        return found[:size], next_token

    async def update_webhook(
        self,
        principal: Principal,
        name: str,
        spec: WebhookSpec,
        *,
        paths: frozenset[str],
        state: WebhookState | None,
        errors: FieldErrors | None = None,
    ) -> Webhook:
        """Change the fields in ``paths`` ("url", "description", "event_types",
        "wallets", "state") to those of ``spec`` and ``state``.

        Args:
            errors: Field errors already found in the request (its mask, its state):
                reported with those found here.

        Raises:
            InvalidArgumentError: Every invalid field at once (the name, and those
                selected: URL, description, event types, wallets).
            WebhookNotFoundError; then, checked against the webhook's owner,
            WALLETS_REQUIRED and PolicyViolationError.
        """
        errors = FieldErrors() if errors is None else errors
        webhook_id = errors.check(lambda: webhook_id_from_name(name, field="webhook.name"))
        if "url" in paths:
            await errors.check_async(self.policy.check_url(spec.url, resolve=self._resolve))
        if "description" in paths:
            errors.check(lambda: _check_description(spec.description))
        if "wallets" in paths or "event_types" in paths:
            _asked(
                spec.wallets if "wallets" in paths else (),
                spec.event_types if "event_types" in paths else (),
                prefix="webhook.",
                errors=errors,
            )
        errors.raise_any()
        assert webhook_id is not None
        webhook = await self._visible(principal, webhook_id)
        changes: dict[str, object] = {}
        if "url" in paths:
            changes["url"] = spec.url
        if "description" in paths:
            changes["description"] = spec.description
        if "wallets" in paths or "event_types" in paths:
            owner = await self._owner_principal(webhook, principal)
            audience = self.audience(
                owner,
                spec.wallets if "wallets" in paths else webhook.wallets,
                spec.event_types
                if "event_types" in paths
                else tuple(t.value for t in webhook.event_types),
                prefix="webhook.",
            )
            changes["wallets"] = tuple(sorted(audience.wallets))
            changes["all_wallets"] = audience.all_wallets
            changes["event_types"] = tuple(sorted(audience.types))
        now = self._clock()
        if "state" in paths and state is not None and state is not webhook.state:
            changes["state"] = state
            if state is WebhookState.ENABLED:
                changes.update(disabled_reason="", disable_time=None)
            else:
                changes.update(disabled_reason="disabled with UpdateWebhook", disable_time=now)
        if not changes:
            return webhook
        updated = replace(webhook, **changes, update_time=now)  # type: ignore[arg-type]
        if not await self.store.update_webhook(updated, epoch=self._epoch()):
            raise WebhookNotFoundError(name)
        self.producer.wake()
        self.deliverer.wake()
        return updated

    async def delete_webhook(self, principal: Principal, name: str) -> None:
        webhook = await self._visible(principal, webhook_id_from_name(name))
        if not await self.store.delete_webhook(webhook.webhook_id):
            raise WebhookNotFoundError(name)
        log.info("webhook %s deleted by API key %s", webhook.name, principal.key_id)

    async def rotate_secret(
        self,
        principal: Principal,
        name: str,
        *,
        grace: timedelta | None,
        errors: FieldErrors | None = None,
    ) -> tuple[Webhook, str]:
        """A new signing secret (shown once); the old one also signs for ``grace``.

        Args:
            errors: Field errors already found in the request: reported with those
                found here.

        Raises:
            InvalidArgumentError: The name, grace out of range (0 to 7 days), or both.
            WebhookNotFoundError.
        """
        errors = FieldErrors() if errors is None else errors
        webhook_id = errors.check(lambda: webhook_id_from_name(name))
        grace = DEFAULT_SECRET_GRACE if grace is None else grace
        if not timedelta(0) <= grace <= MAX_SECRET_GRACE:
            errors.add(
                InvalidArgumentError(
                    f"grace_period must be from 0 to {MAX_SECRET_GRACE.days} days",
                    field="grace_period",
                    reason="INVALID_GRACE_PERIOD",
                )
            )
        errors.raise_any()
        assert webhook_id is not None
        webhook = await self._visible(principal, webhook_id)
        now = self._clock()
        secret = new_secret()
        seconds = grace.total_seconds()
        rotated = await self.store.rotate_secret(
            webhook.webhook_id, secret, previous_until=now + seconds if seconds else None, now=now
        )
        if rotated is None:
            raise WebhookNotFoundError(name)
        return rotated, secret

    async def send_test(self, principal: Principal, name: str) -> Event:
        """Queue a webhook.test event for this webhook only (delivered even while the
        webhook is disabled: a receiver can be checked before it is enabled again)."""
        webhook = await self._visible(principal, webhook_id_from_name(name))
        event = await self.store.send_test(
            webhook,
            NewEvent(
                type=EventType.WEBHOOK_TEST,
                payload=WebhookTestPayload(webhook_id=webhook.webhook_id, message=TEST_MESSAGE),
                occurred_time=self._clock(),
                key_id=webhook.key_id,
                webhook_id=webhook.webhook_id,
                trace_context=current_traceparent(),
            ),
        )
        if event is None:
            raise WebhookNotFoundError(name)
        self._produced[event.type.value] += 1
        self._recorded([event])
        return event

    async def list_deliveries(
        self,
        principal: Principal,
        name: str,
        *,
        state: DeliveryState | None,
        page_size_value: int,
        page_token: str,
        errors: FieldErrors | None = None,
    ) -> tuple[list[Delivery], str]:
        """A page of a webhook's deliveries, newest first, with their attempts.

        Args:
            errors: Field errors already found in the request (its state): reported
                with those found here.

        Raises:
            InvalidArgumentError: Every invalid field at once (name, page size, page
                token). WebhookNotFoundError.
        """
        errors = FieldErrors() if errors is None else errors
        webhook_id = errors.check(lambda: webhook_id_from_name(name))
        size = errors.check(lambda: page_size(page_size_value))
        token: PageToken | None = None
        bound = fingerprint("webhook_deliveries", webhook_id, state)
        if webhook_id is not None:
            # A token is bound to the webhook: checked once the name is valid.
            token = errors.check(
                lambda: decode_page_token(page_token, kind="webhook_deliveries", fingerprint=bound)
            )
        errors.raise_any()
        assert webhook_id is not None and size is not None
        webhook = await self._visible(principal, webhook_id)
        before = int(token.position) if token is not None and token.position.isdigit() else None
        found = await self.store.list_deliveries(
            webhook.webhook_id, state=state, before=before, limit=size + 1
        )
        next_token = ""
        if len(found) > size:
            next_token = PageToken(
                kind="webhook_deliveries",
                fingerprint=bound,
                position=str(found[size - 1].delivery_id),
            ).encode()
        return found[:size], next_token

    # --- streams --------------------------------------------------------------------------

    async def watch(
        self,
        principal: Principal,
        *,
        wallets: Sequence[str],
        types: Sequence[str],
        since_event_id: str,
    ) -> AsyncGenerator[Event | None, None]:
        """The caller's events (see WatchEvents), for as long as it iterates; its key is
        checked again every ``key_recheck`` seconds (revoked, expired or narrowed: the
        stream ends with that error).

        Yields:
            None first, once the stream follows the events (every event recorded from
            then on reaches it); then the events.

        Raises:
            The errors of :meth:`audience` (with since_event_id's form among the invalid
            fields), InvalidEventIdError, EventHistoryExpiredError,
            AuthenticationError, StoreUnavailableError.
        """
        errors = FieldErrors()
        since: int | None = None
        if since_event_id:
            since = event_seq(since_event_id)
            if since is None:
                errors.add(
                    InvalidEventIdError(
                        "since_event_id is not an event id (evt_ and 20 digits)",
                        field="since_event_id",
                    )
                )
        audience = self._audience(
            principal, _asked(wallets, types, prefix="", errors=errors), errors
        )
        follow = self.feed.follow(
            audience,
            since=since,
            watch=frozenset(audience.wallets),
            heartbeat=self.config.key_recheck,
        )
        checked = time.monotonic()
        following = False
        async with contextlib.aclosing(follow) as events:
            async for event in events:
                if not following:
                    following = True
                    yield None
                if time.monotonic() - checked >= self.config.key_recheck:
                    checked = time.monotonic()
                    audience = await self._recheck(principal, wallets, types)
                if event is not None and audience.receives(event):
                    yield event

    async def _recheck(
        self, principal: Principal, wallets: Sequence[str], types: Sequence[str]
    ) -> Audience:
        key = await self.key(principal.key_id)
        if key is None or key.state is not KeyState.ACTIVE:
            expired = key is not None and key.state is KeyState.EXPIRED
            raise AuthenticationError(
                f"API key {principal.key_id} is "
                + ("expired" if expired else "revoked")
                + ": the stream ends",
                reason=API_KEY_EXPIRED if expired else API_KEY_REVOKED,
            )
        current = Principal(key_id=key.key_id, scopes=key.scopes, policy=key.policy)
        return self.audience(current, wallets, types)
