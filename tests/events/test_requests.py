"""EventService requests: every invalid field is named at once (one INVALID_ARGUMENT,
INVALID_FIELDS when there are several), before anything is looked up; an enum value
outside its type is refused wherever a request carries one."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from agentstaking.v1 import events_pb2
from google.protobuf import json_format
from solders.keypair import Keypair

from service.api._errors import MAX_VIOLATIONS
from tests.api._helpers import rich_details

from .conftest import EventsHarness

SOME_WALLET = str(Keypair().pubkey())
# Well formed, but no such webhook: field errors come before NOT_FOUND.
NO_SUCH_WEBHOOK = "webhooks/000000000000000000000"


async def _refused(harness: EventsHarness, method: str, fields: dict[str, Any]) -> Any:
    """The error of ``method`` called by the agent's key with a request made of
    ``fields`` (proto JSON)."""
    stub = harness.agent.events
    request: Any = json_format.ParseDict(fields, getattr(events_pb2, f"{method}Request")())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if method == "WatchEvents":
            async for _ in stub.WatchEvents(request):
                pass
        else:
            await getattr(stub, method)(request)
    return raised.value


@pytest.mark.parametrize(
    ("method", "fields", "named"),
    [
        (
            "CreateWebhook",
            {"webhook": {"url": "ftp://x", "event_types": ["nope"], "wallets": ["x"]}},
            ["webhook.url", "webhook.event_types[0]", "webhook.wallets[0]"],
        ),
        (
            "CreateWebhook",
            {
                "webhook": {
                    "url": "http://127.0.0.1:1/hook",
                    "description": "\x00",
                    "event_types": ["stake.activated", "webhook.test", "stake.exploded"],
                    "state": 99,
                }
            },
            [
                "webhook.state",
                "webhook.description",
                "webhook.event_types[1]",
                "webhook.event_types[2]",
                "webhook.wallets",
            ],
        ),
        (
            "UpdateWebhook",
            {
                "webhook": {"name": "hooks/1", "url": "ftp://x", "wallets": ["x"], "state": 99},
                "update_mask": "url,wallets,secret",
            },
            ["update_mask", "webhook.state", "webhook.name", "webhook.url", "webhook.wallets[0]"],
        ),
        (
            "UpdateWebhook",
            {
                "webhook": {"name": NO_SUCH_WEBHOOK, "event_types": ["nope"], "wallets": ["x"]},
                "update_mask": "eventTypes,wallets,state",
            },
            ["webhook.state", "webhook.event_types[0]", "webhook.wallets[0]"],
        ),
        (
            "ListWebhookDeliveries",
            {"name": "webhooks/zz", "page_size": -1, "state": 99},
            ["state", "name", "page_size"],
        ),
        (
            "ListWebhookDeliveries",
            {"name": NO_SUCH_WEBHOOK, "page_size": -1, "page_token": "not-a-token"},
            ["page_size", "page_token"],
        ),
        (
            "ListWebhooks",
            {"page_size": -1, "page_token": "not-a-token"},
            ["page_size", "page_token"],
        ),
        (
            "RotateWebhookSecret",
            {"name": "webhooks/zz", "grace_period": f"{8 * 86_400}s"},
            ["name", "grace_period"],
        ),
        (
            "WatchEvents",
            {"wallets": ["x", SOME_WALLET, "y"], "types": ["nope"], "since_event_id": "evt_1"},
            ["since_event_id", "types[0]", "wallets[0]", "wallets[2]"],
        ),
        ("WatchEvents", {"types": ["nope"]}, ["types[0]", "wallets"]),
    ],
)
async def test_every_invalid_field_is_named_at_once(
    harness: EventsHarness, method: str, fields: dict[str, Any], named: list[str]
) -> None:
    error = await _refused(harness, method, fields)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    details = rich_details(error)
    assert details["ErrorInfo"].reason == "INVALID_FIELDS"
    assert [v.field for v in details["BadRequest"].field_violations] == named
    assert details["ErrorInfo"].metadata["fields"] == ",".join(named)


async def test_a_thousand_bad_wallets_are_counted_and_the_first_ones_named(
    harness: EventsHarness,
) -> None:
    wallets = [f"bad{i}" for i in range(1000)]
    error = await _refused(
        harness, "CreateWebhook", {"webhook": {"url": "http://127.0.0.1:1/h", "wallets": wallets}}
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("1000 invalid field(s): webhook.wallets[0]")
    details = rich_details(error)
    assert details["ErrorInfo"].reason == "INVALID_FIELDS"
    violations = details["BadRequest"].field_violations
    # The first ones, as many as the status has room for (at most MAX_VIOLATIONS).
    assert 0 < len(violations) <= MAX_VIOLATIONS
    assert [v.field for v in violations] == [
        f"webhook.wallets[{i}]" for i in range(len(violations))
    ]
    assert details["ErrorInfo"].metadata["field_violations_omitted"] == str(1000 - len(violations))
    assert {v.reason for v in violations} == {"INVALID_ADDRESS"}


@pytest.mark.parametrize("character", ["a", "\U0001d518"], ids=["ascii", "4-byte"])
async def test_a_status_naming_many_long_fields_fits_the_clients_trailer_limit(
    harness: EventsHarness, character: str
) -> None:
    """Violations go in while the whole status fits gRPC's 8 KiB metadata limit; the
    rest are counted, not dropped silently (a larger trailer reaches the client as a
    RESOURCE_EXHAUSTED of the transport, without any of the details)."""
    wallets = [character * 65 + str(i) for i in range(200)]
    error = await _refused(
        harness, "CreateWebhook", {"webhook": {"url": "http://127.0.0.1:1/h", "wallets": wallets}}
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.details().startswith("200 invalid field(s)")
    details = rich_details(error)
    named = len(details["BadRequest"].field_violations)
    assert 0 < named <= MAX_VIOLATIONS
    assert details["ErrorInfo"].metadata["field_violations_omitted"] == str(200 - named)


@pytest.mark.parametrize(
    ("method", "fields", "field", "message"),
    [
        (
            "CreateWebhook",
            {"webhook": {"url": "http://127.0.0.1:1/h", "wallets": [SOME_WALLET], "state": 99}},
            "webhook.state",
            "webhook.state 99 is not a webhook state",
        ),
        (
            "UpdateWebhook",
            {"webhook": {"name": NO_SUCH_WEBHOOK, "state": 99}},
            "webhook.state",
            "webhook.state 99 is not a webhook state",
        ),
        (
            "ListWebhookDeliveries",
            {"name": NO_SUCH_WEBHOOK, "state": 99},
            "state",
            "state 99 is not a delivery state",
        ),
    ],
)
async def test_an_enum_value_outside_its_type_is_refused(
    harness: EventsHarness, method: str, fields: dict[str, Any], field: str, message: str
) -> None:
    error = await _refused(harness, method, fields)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.details() == message
    details = rich_details(error)
    assert details["ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert [v.field for v in details["BadRequest"].field_violations] == [field]


async def test_a_known_state_in_create_webhook_is_ignored(harness: EventsHarness) -> None:
    """Output only there: a webhook is created enabled whatever it says."""
    created = await harness.agent.events.CreateWebhook(
        events_pb2.CreateWebhookRequest(
            webhook=events_pb2.Webhook(
                url="http://127.0.0.1:1/h",
                wallets=[SOME_WALLET],
                state=events_pb2.Webhook.STATE_DISABLED,
            )
        )
    )
    harness.webhooks.append((harness.agent, created.webhook.name))
    assert created.webhook.state == events_pb2.Webhook.STATE_ENABLED


@pytest.mark.parametrize(
    ("method", "fields", "field"),
    [
        (
            "CreateWebhook",
            {"webhook": {"url": "http://127.0.0.1:1/h", "event_types": ["x"] * 50_000}},
            "webhook.event_types",
        ),
        ("WatchEvents", {"wallets": ["x"], "types": ["x"] * 50_000}, "types"),
    ],
)
async def test_too_many_types_are_one_violation(
    harness: EventsHarness, method: str, fields: dict[str, Any], field: str
) -> None:
    """A list longer than any request needs is refused as a whole, not entry by entry."""
    error = await _refused(harness, method, fields)
    violations = rich_details(error)["BadRequest"].field_violations
    assert field in [v.field for v in violations]
    assert not any(v.field.startswith(f"{field}[") for v in violations)
