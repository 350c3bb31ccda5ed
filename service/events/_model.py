"""Events, webhooks and deliveries as plain values.

Times are unix seconds (floats). An event's payload is one of the frozen dataclasses
below; it is stored as JSON (``payload_to_json``) and read back by its type
(``payload_from_json``). What the API shows (proto messages, the webhook body) is
made from these values by a converter the server hands in.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from service.core.positions import AccountState
from service.core.txerrors import DecodedTransactionError
from service.core.txstatus import TxState

EVENT_ID_PREFIX: Final = "evt_"
EVENT_ID_DIGITS: Final = 20
WEBHOOK_NAME_PREFIX: Final = "webhooks/"


class EventType(enum.StrEnum):
    """Every event type (the ``type`` of an event, as agents spell it)."""

    TRANSACTION_CONFIRMED = "transaction.confirmed"
    TRANSACTION_FINALIZED = "transaction.finalized"
    TRANSACTION_FAILED = "transaction.failed"
    TRANSACTION_EXPIRED = "transaction.expired"
    STAKE_ACTIVATED = "stake.activated"
    STAKE_DEACTIVATING = "stake.deactivating"
    STAKE_WITHDRAWABLE = "stake.withdrawable"
    STAKE_REWARDS_CREDITED = "stake.rewards_credited"
    VALIDATOR_DELINQUENT = "validator.delinquent"
    VALIDATOR_RECOVERED = "validator.recovered"
    VALIDATOR_COMMISSION_CHANGED = "validator.commission_changed"
    API_KEY_ROTATION_DUE = "api_key.rotation_due"
    WEBHOOK_TEST = "webhook.test"

    @property
    def key_scoped(self) -> bool:
        """About an API key (seen by that key), not about a wallet."""
        return self in (EventType.API_KEY_ROTATION_DUE, EventType.WEBHOOK_TEST)


SUBSCRIBABLE: Final = tuple(t for t in EventType if t is not EventType.WEBHOOK_TEST)
"""The types a webhook or a stream may ask for (test events go to one webhook only)."""


def event_id(seq: int) -> str:
    """The public id of the event with sequence number ``seq``: ``evt_`` + 20 digits, so
    that text order is sequence order."""
    return f"{EVENT_ID_PREFIX}{seq:0{EVENT_ID_DIGITS}d}"


def event_seq(value: str) -> int | None:
    """The sequence number of an event id; None when ``value`` is not one."""
    digits = value.removeprefix(EVENT_ID_PREFIX)
    if (
        value.startswith(EVENT_ID_PREFIX)
        and len(digits) == EVENT_ID_DIGITS
        and digits.isascii()
        and digits.isdigit()
    ):
        return int(digits)
    return None


# --- payloads ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TransactionPayload:
    """A relayed transaction reached CONFIRMED, FINALIZED, FAILED or EXPIRED."""

    signature: str
    state: TxState
    slot: int
    error: DecodedTransactionError | None = None


@dataclass(frozen=True, kw_only=True)
class StakePayload:
    """A stake account changed state (amounts as ListStakeAccounts shows them)."""

    stake_account: str
    vote_account: str
    state: AccountState
    epoch: int
    lamports: int
    delegated_lamports: int
    active_lamports: int
    activating_lamports: int
    deactivating_lamports: int
    inactive_lamports: int
    withdrawable_lamports: int
    activation_epoch: int | None
    deactivation_epoch: int | None


@dataclass(frozen=True, kw_only=True)
class RewardsPayload:
    """An epoch's inflation reward paid to a stake account."""

    stake_account: str
    epoch: int
    amount_lamports: int
    post_balance_lamports: int
    commission_percent: int | None
    effective_slot: int


@dataclass(frozen=True, kw_only=True)
class ValidatorPayload:
    """A validator a wallet is delegated to became delinquent, recovered, or changed
    its commission."""

    vote_account: str
    stake_account: str
    delinquent: bool
    commission_percent: int
    previous_commission_percent: int
    epoch: int


@dataclass(frozen=True, kw_only=True)
class ApiKeyPayload:
    """An API key is due for rotation at ``rotate_time``."""

    key_id: str
    rotate_time: float


@dataclass(frozen=True, kw_only=True)
class WebhookTestPayload:
    """A test event for one webhook."""

    webhook_id: str
    message: str


Payload = (
    TransactionPayload
    | StakePayload
    | RewardsPayload
    | ValidatorPayload
    | ApiKeyPayload
    | WebhookTestPayload
)

_PAYLOAD_CLASS: Final[dict[str, type[Any]]] = {
    "transaction": TransactionPayload,
    "stake": StakePayload,
    "validator": ValidatorPayload,
    "api_key": ApiKeyPayload,
    "webhook": WebhookTestPayload,
}


def payload_class(event_type: EventType) -> type[Any]:
    """The payload dataclass of an event type."""
    if event_type is EventType.STAKE_REWARDS_CREDITED:
        return RewardsPayload
    return _PAYLOAD_CLASS[event_type.value.partition(".")[0]]


def payload_to_json(payload: Payload) -> str:
    """The payload as compact JSON (enums by name)."""
    fields = asdict(payload)
    if isinstance(payload, TransactionPayload):
        fields["state"] = payload.state.name
        if payload.error is not None:
            fields["error"] = asdict(payload.error)
    elif isinstance(payload, StakePayload):
        fields["state"] = payload.state.name
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


def payload_from_json(event_type: EventType, text: str) -> Payload:
    """Inverse of :func:`payload_to_json` for an event of ``event_type``."""
    fields: dict[str, Any] = json.loads(text)
    cls = payload_class(event_type)
    if cls is TransactionPayload:
        fields["state"] = TxState[fields["state"]]
        error = fields.get("error")
        if error is not None:
            error["logs"] = tuple(error.get("logs") or ())
            fields["error"] = DecodedTransactionError(**error)
    elif cls is StakePayload:
        fields["state"] = AccountState[fields["state"]]
    payload: Payload = cls(**fields)
    return payload


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """An event to record (see ``EventStore.append``).

    Attributes:
        wallet: The wallet it is about ("" for key-scoped events).
        key_id: The API key it is about (key-scoped events).
        webhook_id: The only webhook it goes to (test events).
        dedupe_key: Recorded at most once per key: a producer that sees the same change
            twice (a takeover, a retry) records it once.
        trace_context: W3C ``traceparent`` of the span that produced it ("" none).
    """

    type: EventType
    payload: Payload
    occurred_time: float
    wallet: str = ""
    key_id: str = ""
    webhook_id: str = ""
    dedupe_key: str | None = None
    trace_context: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.payload, payload_class(self.type)):
            raise TypeError(f"{self.type} carries a {type(self.payload).__name__}")
        if self.type.key_scoped != bool(self.key_id) or self.type.key_scoped == bool(self.wallet):
            raise ValueError(f"{self.type} is about a key or a wallet, not both or neither")


@dataclass(frozen=True, kw_only=True)
class Event:
    """A recorded event."""

    seq: int
    type: EventType
    payload: Payload
    occurred_time: float
    wallet: str = ""
    key_id: str = ""
    webhook_id: str = ""
    trace_context: str = ""

    @property
    def event_id(self) -> str:
        return event_id(self.seq)


@dataclass(frozen=True, kw_only=True)
class Audience:
    """Which events a subscriber (a stream or a webhook) receives.

    Attributes:
        key_id: The subscribing API key: its key-scoped events are its own.
        wallets: The wallets whose events it receives.
        all_wallets: Every wallet (admin keys naming none); also every key's events.
        types: The types it receives (empty: every subscribable type).
    """

    key_id: str
    wallets: frozenset[str] = frozenset()
    all_wallets: bool = False
    types: frozenset[EventType] = frozenset()

    def receives(self, event: Event) -> bool:
        if event.webhook_id:
            return False  # a test event goes to its webhook only
        if self.types and event.type not in self.types:
            return False
        if event.type.key_scoped:
            return self.all_wallets or event.key_id == self.key_id
        return self.all_wallets or event.wallet in self.wallets


# --- webhooks -------------------------------------------------------------------------


class WebhookState(enum.StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


@dataclass(frozen=True, kw_only=True)
class Webhook:
    """A registered endpoint (never its secrets)."""

    webhook_id: str
    key_id: str
    url: str
    description: str
    event_types: tuple[EventType, ...]
    wallets: tuple[str, ...]
    all_wallets: bool
    state: WebhookState
    disabled_reason: str
    create_time: float
    update_time: float
    disable_time: float | None = None
    previous_secret_expire_time: float | None = None

    @property
    def name(self) -> str:
        return f"{WEBHOOK_NAME_PREFIX}{self.webhook_id}"

    def audience(self) -> Audience:
        return Audience(
            key_id=self.key_id,
            wallets=frozenset(self.wallets),
            all_wallets=self.all_wallets,
            types=frozenset(self.event_types),
        )


@dataclass(frozen=True, kw_only=True)
class WebhookSpec:
    """What a caller asks of a webhook (create or update), before checks."""

    url: str
    description: str = ""
    event_types: tuple[str, ...] = ()
    wallets: tuple[str, ...] = ()


# --- deliveries -----------------------------------------------------------------------


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One attempt to deliver an event to a webhook."""

    attempt: int
    start_time: float
    latency: float
    response_code: int
    succeeded: bool
    error: str
    replica: str


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """An event's delivery to one webhook, with its attempts (oldest first)."""

    delivery_id: int
    webhook_id: str
    event_seq: int
    event_type: EventType
    state: DeliveryState
    attempt_count: int
    create_time: float
    next_attempt_time: float
    last_response_code: int
    last_latency: float
    last_error: str
    attempts: tuple[Attempt, ...] = field(default=())

    @property
    def event_id(self) -> str:
        return event_id(self.event_seq)
