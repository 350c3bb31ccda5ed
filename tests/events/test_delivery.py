"""Delivery through a receiver that is down: refusing connections, then answering 500,
then too slow; every event arrives once it recovers, retried with growing delays; a
delivery whose retries run out disables its webhook until UpdateWebhook enables it."""

from __future__ import annotations

import itertools
import re

import grpc
import pytest
from agentstaking.v1 import events_pb2
from google.protobuf import field_mask_pb2

from tests._wait import until
from tests.api._helpers import rich_details

from .conftest import RETRY_SCHEDULE, EventsHarness, Receiver

PENDING = events_pb2.WebhookDelivery.STATE_PENDING
SUCCEEDED = events_pb2.WebhookDelivery.STATE_SUCCEEDED
FAILED = events_pb2.WebhookDelivery.STATE_FAILED
ENABLED = events_pb2.Webhook.STATE_ENABLED
DISABLED = events_pb2.Webhook.STATE_DISABLED


async def test_a_receiver_refusing_then_failing_then_slow_gets_every_event_when_it_recovers(
    harness: EventsHarness, receiver: Receiver
) -> None:
    created = await harness.webhook(harness.agent, receiver.url, types=("api_key.rotation_due",))
    name = created.webhook.name
    await receiver.refuse()
    sent = [
        (await harness.agent.events.SendTestEvent(events_pb2.SendTestEventRequest(name=name))).event
        for _ in range(3)
    ]
    ids = {event.event_id for event in sent}

    async def attempts_made(count: int) -> bool:
        deliveries = await harness.deliveries(harness.agent, name)
        return len(deliveries) == 3 and all(d.attempt_count >= count for d in deliveries)

    # Down: connections refused, each attempt recorded without a status code.
    await until(lambda: attempts_made(2), what="two refused attempts of each delivery")
    for delivery in await harness.deliveries(harness.agent, name):
        assert delivery.state == PENDING
        first = delivery.attempts[0]
        assert first.response_code == 0 and not first.succeeded
        assert first.error.startswith("connection failed")
        assert delivery.next_attempt_time.ToNanoseconds() > 0
    # Then up, answering 500; then too slow (later than the delivery timeout).
    receiver.mode = "error"
    await receiver.accept()
    await receiver.wait_for(
        lambda: {i for i, rs in receiver.by_id().items() if any(r.status == 500 for r in rs)} == ids
    )
    receiver.mode = "slow"
    await receiver.wait_for(
        lambda: {i for i, rs in receiver.by_id().items() if any(r.late for r in rs)} == ids
    )
    receiver.mode = "ok"
    await receiver.wait_for(lambda: {e["eventId"] for e in receiver.events()} == ids)

    deliveries = await harness.deliveries(harness.agent, name)
    assert {d.event_id for d in deliveries} == ids
    for delivery in deliveries:
        assert delivery.state == SUCCEEDED
        attempts = list(delivery.attempts)
        assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
        codes = [a.response_code for a in attempts]
        assert codes[:2] == [0, 0] and 500 in codes and codes[-1] == 204
        assert any("no answer within" in a.error for a in attempts)
        # Each retry waited at least its delay of the schedule (less the jitter).
        for i, (before, after) in enumerate(itertools.pairwise(attempts)):
            gap = (after.attempt_time.ToNanoseconds() - before.attempt_time.ToNanoseconds()) / 1e9
            assert gap >= RETRY_SCHEDULE[i] * 0.9 - 0.01, (i, gap)
    # At least once: an event arrives again only after an attempt that failed for the
    # service (an error or a late answer); each is received (answered in time) once.
    for event_id, requests in receiver.by_id().items():
        received = [r for r in requests if r.status == 204 and not r.late]
        assert len(received) == 1, event_id
        assert all(r.status == 500 or r.late for r in requests[:-1])


async def _once_disabled(
    harness: EventsHarness, name: str, *, timeout: float
) -> events_pb2.Webhook:
    """The webhook, once its retries ran out and it was disabled."""

    async def disabled() -> bool:
        webhook = await harness.agent.events.GetWebhook(events_pb2.GetWebhookRequest(name=name))
        return webhook.webhook.state == DISABLED

    await until(disabled, timeout=timeout, what="the webhook disabled")
    return (await harness.agent.events.GetWebhook(events_pb2.GetWebhookRequest(name=name))).webhook


async def test_retries_that_run_out_disable_the_webhook_and_update_enables_it(
    harness: EventsHarness, receiver: Receiver
) -> None:
    wallet = await harness.wallet()
    address = str(wallet.pubkey())
    created = await harness.webhook(
        harness.agent, receiver.url, wallets=(address,), types=("transaction.finalized",)
    )
    name = created.webhook.name
    receiver.mode = "error"
    await harness.transfer(harness.agent, wallet)

    webhook = await _once_disabled(harness, name, timeout=30)
    assert f"{len(RETRY_SCHEDULE) + 1} attempts" in webhook.disabled_reason
    assert webhook.disable_time.seconds > 0
    [delivery] = await harness.deliveries(harness.agent, name)
    assert delivery.state == FAILED
    assert delivery.attempt_count == len(RETRY_SCHEDULE) + 1
    assert {a.response_code for a in delivery.attempts} == {500}

    # Disabled: nothing more is queued for it.
    receiver.mode = "ok"
    await harness.transfer(harness.agent, wallet)

    async def both_finalized() -> bool:
        return await _finalized_count(harness, address) >= 2

    await until(both_finalized, what="the second transfer finalized")
    assert len(await harness.deliveries(harness.agent, name)) == 1

    updated = await harness.agent.events.UpdateWebhook(
        events_pb2.UpdateWebhookRequest(
            webhook=events_pb2.Webhook(name=name, state=ENABLED),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        )
    )
    assert updated.webhook.state == ENABLED and not updated.webhook.disabled_reason
    third = await harness.transfer(harness.agent, wallet)
    await receiver.wait_for(
        lambda: any(e["transaction"]["signature"] == third for e in receiver.events())
    )


async def _finalized_count(harness: EventsHarness, wallet: str) -> int:
    """transaction.finalized events of ``wallet`` recorded so far (as an admin sees them,
    through the store)."""
    assert harness.server.events is not None
    store = harness.server.events.store
    head, _ = await store.head()
    events = await store.read(after=0, upto=head, audience=None, limit=10_000)
    return sum(1 for e in events if e.wallet == wallet and e.type == "transaction.finalized")


async def test_410_gone_disables_the_webhook_at_once(
    harness: EventsHarness, receiver: Receiver
) -> None:
    wallet = await harness.wallet()
    address = str(wallet.pubkey())
    created = await harness.webhook(
        harness.agent, receiver.url, wallets=(address,), types=("transaction.confirmed",)
    )
    receiver.mode = "gone"
    await harness.transfer(harness.agent, wallet)

    async def disabled() -> bool:
        answer = await harness.agent.events.GetWebhook(
            events_pb2.GetWebhookRequest(name=created.webhook.name)
        )
        return answer.webhook.state == DISABLED

    await until(disabled, what="the webhook disabled by 410")
    assert len(receiver.requests) == 1


async def test_a_test_event_to_a_failing_receiver_never_disables_its_webhook(
    harness: EventsHarness, receiver: Receiver
) -> None:
    created = await harness.webhook(harness.agent, receiver.url, types=("api_key.rotation_due",))
    receiver.mode = "error"
    await harness.agent.events.SendTestEvent(
        events_pb2.SendTestEventRequest(name=created.webhook.name)
    )

    async def failed() -> bool:
        deliveries = await harness.deliveries(harness.agent, created.webhook.name)
        return bool(deliveries) and deliveries[0].state == FAILED

    await until(failed, timeout=30, what="the test delivery failed")
    answer = await harness.agent.events.GetWebhook(
        events_pb2.GetWebhookRequest(name=created.webhook.name)
    )
    assert answer.webhook.state == ENABLED


@pytest.mark.parametrize(
    ("paths", "reason"),
    [(["secret"], "INVALID_ARGUMENT"), (["state"], "INVALID_ARGUMENT"), ([], "INVALID_ARGUMENT")],
)
async def test_update_masks_are_checked(
    harness: EventsHarness, receiver: Receiver, paths: list[str], reason: str
) -> None:
    created = await harness.webhook(harness.agent, receiver.url, types=("api_key.rotation_due",))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.agent.events.UpdateWebhook(
            events_pb2.UpdateWebhookRequest(
                webhook=events_pb2.Webhook(name=created.webhook.name),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            )
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert rich_details(raised.value)["ErrorInfo"].reason == reason


async def test_a_disabled_webhooks_reason_counts_the_time_its_attempts_took(
    harness: EventsHarness, receiver: Receiver
) -> None:
    """A Retry-After longer than the schedule's delays stretches the retries: the reason
    says how long they took, not how long the schedule is."""
    wallet = await harness.wallet()
    created = await harness.webhook(
        harness.agent,
        receiver.url,
        wallets=(str(wallet.pubkey()),),
        types=("transaction.confirmed",),
    )
    name = created.webhook.name
    receiver.mode = "error"
    receiver.retry_after = "1"
    await harness.transfer(harness.agent, wallet)

    webhook = await _once_disabled(harness, name, timeout=60)
    [delivery] = await harness.deliveries(harness.agent, name)
    first, last = delivery.attempts[0], delivery.attempts[-1]
    took = (last.attempt_time.ToNanoseconds() - first.attempt_time.ToNanoseconds()) / 1e9
    assert took > sum(RETRY_SCHEDULE) + 1  # stretched by Retry-After
    match = re.search(r"(\d+) attempts over (\d+) seconds failed", webhook.disabled_reason)
    assert match is not None, webhook.disabled_reason
    assert int(match[1]) == len(RETRY_SCHEDULE) + 1
    assert abs(int(match[2]) - took) < 1, (webhook.disabled_reason, took)


async def test_a_test_event_reaches_a_disabled_webhook(
    harness: EventsHarness, receiver: Receiver
) -> None:
    """So a receiver can be checked before its webhook is enabled again; the webhook
    stays disabled, and no other event reaches it."""
    created = await harness.webhook(harness.agent, receiver.url, types=("api_key.rotation_due",))
    name = created.webhook.name
    await harness.agent.events.UpdateWebhook(
        events_pb2.UpdateWebhookRequest(
            webhook=events_pb2.Webhook(name=name, state=DISABLED),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        )
    )
    sent = await harness.agent.events.SendTestEvent(events_pb2.SendTestEventRequest(name=name))
    await receiver.wait_for(lambda: bool(receiver.events(event_type="webhook.test")))
    assert [e["eventId"] for e in receiver.events()] == [sent.event.event_id]
    answer = await harness.agent.events.GetWebhook(events_pb2.GetWebhookRequest(name=name))
    assert answer.webhook.state == DISABLED
    assert answer.webhook.disabled_reason == "disabled with UpdateWebhook"
