"""Events: what happens to an agent's stake, pushed as streams and signed webhooks.

Producers (relayed transaction outcomes, and a leader-elected producer for stake
accounts, validators and API keys) record events in the service's database in the
same transaction as the change that made them (the outbox); every replica serves
WatchEvents from that table and delivers webhooks from it (Standard Webhooks
signatures, leases, retries with backoff). :class:`Events` assembles it all.
"""

from service.events._delivery import (
    DEFAULT_RETRY_SCHEDULE,
    OUTCOMES,
    Deliverer,
    DeliveryConfig,
    DeliveryStats,
)
from service.events._errors import (
    EventHistoryExpiredError,
    InvalidEventIdError,
    InvalidWebhookUrlError,
    UnknownEventTypeError,
    WalletsRequiredError,
    WebhookLimitError,
    WebhookNotFoundError,
    WebhookUrlForbiddenError,
)
from service.events._model import (
    SUBSCRIBABLE,
    ApiKeyPayload,
    Attempt,
    Audience,
    Delivery,
    DeliveryState,
    Event,
    EventType,
    NewEvent,
    Payload,
    RewardsPayload,
    StakePayload,
    TransactionPayload,
    ValidatorPayload,
    Webhook,
    WebhookSpec,
    WebhookState,
    WebhookTestPayload,
    event_id,
    event_seq,
)
from service.events._producer import Producer, ProducerConfig
from service.events._service import (
    Events,
    EventsConfig,
    EventStats,
    fee_payer,
    transaction_events,
    webhook_id_from_name,
)
from service.events._signing import new_secret, sign, signature_headers
from service.events._ssrf import AddressPolicy, ForbiddenAddressError, forbidden_reason
from service.events._store import EventStore, QueueStats
from service.events._transitions import (
    StakeRecord,
    ValidatorRecord,
    rewards_events,
    stake_changes,
    validator_changes,
)

__all__ = [
    "DEFAULT_RETRY_SCHEDULE",
    "OUTCOMES",
    "SUBSCRIBABLE",
    "AddressPolicy",
    "ApiKeyPayload",
    "Attempt",
    "Audience",
    "Deliverer",
    "Delivery",
    "DeliveryConfig",
    "DeliveryState",
    "DeliveryStats",
    "Event",
    "EventHistoryExpiredError",
    "EventStats",
    "EventStore",
    "EventType",
    "Events",
    "EventsConfig",
    "ForbiddenAddressError",
    "InvalidEventIdError",
    "InvalidWebhookUrlError",
    "NewEvent",
    "Payload",
    "Producer",
    "ProducerConfig",
    "QueueStats",
    "RewardsPayload",
    "StakePayload",
    "StakeRecord",
    "TransactionPayload",
    "UnknownEventTypeError",
    "ValidatorPayload",
    "ValidatorRecord",
    "WalletsRequiredError",
    "Webhook",
    "WebhookLimitError",
    "WebhookNotFoundError",
    "WebhookSpec",
    "WebhookState",
    "WebhookTestPayload",
    "WebhookUrlForbiddenError",
    "event_id",
    "event_seq",
    "fee_payer",
    "forbidden_reason",
    "new_secret",
    "rewards_events",
    "sign",
    "signature_headers",
    "stake_changes",
    "transaction_events",
    "validator_changes",
    "webhook_id_from_name",
]
