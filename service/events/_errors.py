"""What the events API refuses, as domain errors (mapped to statuses in service.api)."""

from __future__ import annotations

from typing import TypeVar

from service.core.errors import (
    DomainError,
    ErrorKind,
    InvalidArgumentError,
)

T = TypeVar("T")


class WebhookNotFoundError(DomainError):
    """No webhook of that name that the caller may see (another key's is not found)."""

    kind = ErrorKind.NOT_FOUND
    default_reason = "WEBHOOK_NOT_FOUND"
    default_hint = (
        "List your webhooks with ListWebhooks; a webhook belongs to the key that made it."
    )

    def __init__(self, name: str) -> None:
        super().__init__(f"webhook {name[:80]} not found", metadata={"name": name[:80]})


class InvalidWebhookUrlError(InvalidArgumentError):
    """The URL is not one a webhook can have."""

    default_reason = "INVALID_WEBHOOK_URL"
    default_hint = "Give an absolute https:// URL (at most 2048 characters, no user:password@)."


class WebhookUrlForbiddenError(InvalidArgumentError):
    """The URL's host is (or resolves to) an address the service must not call:
    loopback, private, link-local, cloud metadata, multicast or reserved."""

    default_reason = "WEBHOOK_URL_FORBIDDEN"
    default_hint = (
        "Use an endpoint reachable on the public internet; an operator can allow private "
        "addresses with AGENT_STAKING_WEBHOOK_ALLOW_PRIVATE=true."
    )


class UnknownEventTypeError(InvalidArgumentError):
    """A requested event type does not exist."""

    default_reason = "UNKNOWN_EVENT_TYPE"
    default_hint = "Use the types listed in the EventService documentation, e.g. stake.activated."


class WalletsRequiredError(InvalidArgumentError):
    """A key without allowed_wallets asked for wallet events without naming wallets."""

    default_reason = "WALLETS_REQUIRED"
    default_hint = "Name the wallets whose events you want in `wallets`."


class InvalidEventIdError(InvalidArgumentError):
    """since_event_id is not an event id this service issued."""

    default_reason = "INVALID_EVENT_ID"
    default_hint = "Pass the event_id of the last event received (evt_ and 20 digits), or nothing."


class EventHistoryExpiredError(DomainError):
    """since_event_id is older than the retained history: events after it are gone."""

    kind = ErrorKind.OUT_OF_RANGE
    default_reason = "EVENT_HISTORY_EXPIRED"
    default_hint = (
        "Events after it left the retained history: read the current state with "
        "ListStakeAccounts, then watch without since_event_id."
    )


class WebhookLimitError(DomainError):
    """The key has as many webhooks as the operator allows."""

    kind = ErrorKind.RESOURCE_EXHAUSTED
    default_reason = "WEBHOOK_LIMIT_REACHED"
    default_hint = "Delete a webhook you no longer use, or widen one to more wallets or types."

    def __init__(self, *, key_id: str, limit: int) -> None:
        super().__init__(
            f"API key {key_id} already has {limit} webhooks, the most allowed",
            metadata={"key_id": key_id, "limit": limit},
        )
        self.quota_violations = (
            {
                "subject": f"apiKeys/{key_id}",
                "description": f"at most {limit} webhooks per API key",
            },
        )
