"""EventService: events, webhooks and deliveries between proto and domain values.

The webhook body is the event's canonical proto JSON (:func:`event_json`): the same
converter makes what streams send and what webhooks POST.
"""

from __future__ import annotations

from agentstaking.v1 import events_pb2
from google.protobuf import json_format

from service.core.errors import FieldErrors, InvalidArgumentError
from service.events import (
    ApiKeyPayload,
    Attempt,
    Delivery,
    DeliveryState,
    Event,
    RewardsPayload,
    StakePayload,
    TransactionPayload,
    ValidatorPayload,
    Webhook,
    WebhookSpec,
    WebhookState,
    WebhookTestPayload,
)

from ._converters import _STATES, _TX_STATES, _duration, _timestamp, transaction_error_to_proto

_WEBHOOK_STATES = {
    WebhookState.ENABLED: events_pb2.Webhook.STATE_ENABLED,
    WebhookState.DISABLED: events_pb2.Webhook.STATE_DISABLED,
}
_WEBHOOK_STATES_FROM_PROTO = {v: k for k, v in _WEBHOOK_STATES.items()}
_DELIVERY_STATES = {
    DeliveryState.PENDING: events_pb2.WebhookDelivery.STATE_PENDING,
    DeliveryState.SUCCEEDED: events_pb2.WebhookDelivery.STATE_SUCCEEDED,
    DeliveryState.FAILED: events_pb2.WebhookDelivery.STATE_FAILED,
    DeliveryState.CANCELLED: events_pb2.WebhookDelivery.STATE_CANCELLED,
}
_DELIVERY_STATES_FROM_PROTO = {v: k for k, v in _DELIVERY_STATES.items()}
UPDATABLE_WEBHOOK_PATHS = frozenset({"url", "description", "event_types", "wallets", "state"})
MAX_MASK_PATHS = 64


def _key_name(key_id: str) -> str:
    return f"apiKeys/{key_id}"


def event_to_proto(event: Event) -> events_pb2.Event:
    proto = events_pb2.Event(
        event_id=event.event_id,
        type=event.type.value,
        occurred_time=_timestamp(event.occurred_time),
        wallet=event.wallet,
        api_key=_key_name(event.key_id) if event.key_id else "",
    )
    payload = event.payload
    if isinstance(payload, TransactionPayload):
        proto.transaction.CopyFrom(
            events_pb2.TransactionEventPayload(
                signature=payload.signature, state=_TX_STATES[payload.state], slot=payload.slot
            )
        )
        if payload.error is not None:
            proto.transaction.error.CopyFrom(transaction_error_to_proto(payload.error))
    elif isinstance(payload, StakePayload):
        stake = events_pb2.StakeEventPayload(
            stake_account=payload.stake_account,
            vote_account=payload.vote_account,
            state=_STATES[payload.state],
            epoch=payload.epoch,
            lamports=payload.lamports,
            delegated_lamports=payload.delegated_lamports,
            active_lamports=payload.active_lamports,
            activating_lamports=payload.activating_lamports,
            deactivating_lamports=payload.deactivating_lamports,
            inactive_lamports=payload.inactive_lamports,
            withdrawable_lamports=payload.withdrawable_lamports,
        )
        if payload.activation_epoch is not None:
            stake.activation_epoch = payload.activation_epoch
        if payload.deactivation_epoch is not None:
            stake.deactivation_epoch = payload.deactivation_epoch
        proto.stake.CopyFrom(stake)
    elif isinstance(payload, RewardsPayload):
        rewards = events_pb2.StakeRewardsEventPayload(
            stake_account=payload.stake_account,
            epoch=payload.epoch,
            amount_lamports=payload.amount_lamports,
            post_balance_lamports=payload.post_balance_lamports,
            effective_slot=payload.effective_slot,
        )
        if payload.commission_percent is not None:
            rewards.commission_percent = payload.commission_percent
        proto.rewards.CopyFrom(rewards)
    elif isinstance(payload, ValidatorPayload):
        proto.validator.CopyFrom(
            events_pb2.ValidatorEventPayload(
                vote_account=payload.vote_account,
                stake_account=payload.stake_account,
                delinquent=payload.delinquent,
                commission_percent=payload.commission_percent,
                previous_commission_percent=payload.previous_commission_percent,
                epoch=payload.epoch,
            )
        )
    elif isinstance(payload, ApiKeyPayload):
        proto.api_key_rotation.CopyFrom(
            events_pb2.ApiKeyEventPayload(
                api_key=_key_name(payload.key_id), rotate_time=_timestamp(payload.rotate_time)
            )
        )
    elif isinstance(payload, WebhookTestPayload):
        proto.test.CopyFrom(
            events_pb2.TestEventPayload(
                webhook=f"webhooks/{payload.webhook_id}", message=payload.message
            )
        )
    return proto


def event_json(event: Event) -> bytes:
    """The body of a webhook delivery: the event's canonical proto JSON, compact."""
    text: str = json_format.MessageToJson(event_to_proto(event), indent=None)
    return text.encode()


def webhook_to_proto(webhook: Webhook) -> events_pb2.Webhook:
    proto = events_pb2.Webhook(
        name=webhook.name,
        url=webhook.url,
        description=webhook.description,
        event_types=[t.value for t in webhook.event_types],
        wallets=list(webhook.wallets),
        state=_WEBHOOK_STATES[webhook.state],
        disabled_reason=webhook.disabled_reason,
        api_key=_key_name(webhook.key_id),
        create_time=_timestamp(webhook.create_time),
        update_time=_timestamp(webhook.update_time),
    )
    if webhook.disable_time is not None:
        proto.disable_time.CopyFrom(_timestamp(webhook.disable_time))
    if webhook.previous_secret_expire_time is not None:
        proto.previous_secret_expire_time.CopyFrom(_timestamp(webhook.previous_secret_expire_time))
    return proto


def webhook_spec_to_domain(proto: events_pb2.Webhook) -> WebhookSpec:
    return WebhookSpec(
        url=proto.url,
        description=proto.description,
        event_types=tuple(proto.event_types),
        wallets=tuple(proto.wallets),
    )


def webhook_state_to_domain(state: events_pb2.Webhook.State.ValueType) -> WebhookState | None:
    """None for STATE_UNSPECIFIED (no change)."""
    if state == events_pb2.Webhook.STATE_UNSPECIFIED:
        return None
    found = _WEBHOOK_STATES_FROM_PROTO.get(state)
    if found is None:
        raise InvalidArgumentError(
            f"webhook.state {state} is not a webhook state", field="webhook.state"
        )
    return found


def webhook_update_paths(
    request: events_pb2.UpdateWebhookRequest, errors: FieldErrors
) -> frozenset[str]:
    """The fields to update: the mask's, or the populated ones without a mask (AIP-134);
    those that can be. An unknown path, too many, nothing to update, or ``state``
    selected without a state join ``errors``."""
    paths = list(request.update_mask.paths)
    if len(paths) > MAX_MASK_PATHS:
        errors.add(
            InvalidArgumentError(
                f"update_mask may hold at most {MAX_MASK_PATHS} paths", field="update_mask"
            )
        )
        return frozenset()
    webhook = request.webhook
    if not paths:
        paths = [name for name in UPDATABLE_WEBHOOK_PATHS if bool(getattr(webhook, name))]
    chosen: set[str] = set()
    unknown: list[str] = []
    for path in paths:
        if path == "*":
            chosen |= UPDATABLE_WEBHOOK_PATHS
        elif path in UPDATABLE_WEBHOOK_PATHS:
            chosen.add(path)
        else:
            unknown.append(path)
    if unknown:
        errors.add(
            InvalidArgumentError(
                f"field path {unknown[0][:64]!r} cannot be updated; allowed: "
                f"{', '.join(sorted(UPDATABLE_WEBHOOK_PATHS))}, *",
                field="update_mask",
            )
        )
    elif not chosen:
        errors.add(InvalidArgumentError("nothing to update", field="update_mask"))
    if "state" in chosen and request.webhook.state == events_pb2.Webhook.STATE_UNSPECIFIED:
        errors.add(
            InvalidArgumentError(
                "webhook.state must be STATE_ENABLED or STATE_DISABLED", field="webhook.state"
            )
        )
    return frozenset(chosen)


def delivery_state_to_domain(
    state: events_pb2.WebhookDelivery.State.ValueType,
) -> DeliveryState | None:
    if state == events_pb2.WebhookDelivery.STATE_UNSPECIFIED:
        return None
    found = _DELIVERY_STATES_FROM_PROTO.get(state)
    if found is None:
        raise InvalidArgumentError(f"state {state} is not a delivery state", field="state")
    return found


def _attempt_to_proto(attempt: Attempt) -> events_pb2.WebhookDeliveryAttempt:
    return events_pb2.WebhookDeliveryAttempt(
        attempt=attempt.attempt,
        attempt_time=_timestamp(attempt.start_time),
        response_code=attempt.response_code,
        latency=_duration(attempt.latency),
        succeeded=attempt.succeeded,
        error=attempt.error,
    )


def delivery_to_proto(delivery: Delivery) -> events_pb2.WebhookDelivery:
    proto = events_pb2.WebhookDelivery(
        event_id=delivery.event_id,
        event_type=delivery.event_type.value,
        state=_DELIVERY_STATES[delivery.state],
        attempt_count=delivery.attempt_count,
        create_time=_timestamp(delivery.create_time),
        last_response_code=delivery.last_response_code,
        last_latency=_duration(delivery.last_latency),
        last_error=delivery.last_error,
        attempts=[_attempt_to_proto(a) for a in delivery.attempts],
    )
    if delivery.state is DeliveryState.PENDING:
        proto.next_attempt_time.CopyFrom(_timestamp(delivery.next_attempt_time))
    return proto
