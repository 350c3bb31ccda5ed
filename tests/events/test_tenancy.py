"""Tenancy: a webhook or stream sees only the wallets its key may use; another key's
webhooks are invisible; a key's narrowed policy or revocation stops its deliveries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from agentstaking.v1 import events_pb2
from google.protobuf import field_mask_pb2

from service.keys import KeyPolicy
from tests._wait import until
from tests.api._helpers import rich_details

from .conftest import EventsHarness, Receiver

TX = ("transaction.finalized",)


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver, Receiver]]:
    found = (Receiver(), Receiver(), Receiver())
    for receiver in found:
        await receiver.start()
    yield found
    for receiver in found:
        await receiver.stop()


def _signatures(receiver: Receiver) -> set[str]:
    return {e["transaction"]["signature"] for e in receiver.events() if "transaction" in e}


async def test_another_keys_webhook_never_receives_this_wallets_events(
    harness: EventsHarness, receivers: tuple[Receiver, Receiver, Receiver]
) -> None:
    to_a, to_b, to_admin = receivers
    wallet_a, wallet_b = await harness.wallet(), await harness.wallet()
    a_address, b_address = str(wallet_a.pubkey()), str(wallet_b.pubkey())
    a = await harness.caller(policy=KeyPolicy(allowed_wallets=(a_address,)))
    b = await harness.caller(policy=KeyPolicy(allowed_wallets=(b_address,)))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.webhook(b, to_b.url, wallets=(a_address,), types=TX)
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert rich_details(raised.value)["ErrorInfo"].reason == "POLICY_WALLET_NOT_ALLOWED"

    # Naming no wallet: the key's allowed wallets (an admin key's: every wallet).
    hook_a = await harness.webhook(a, to_a.url, types=TX)
    hook_b = await harness.webhook(b, to_b.url, types=TX)
    hook_admin = await harness.webhook(harness.admin, to_admin.url, types=TX)
    assert list(hook_a.webhook.wallets) == [a_address]
    assert list(hook_b.webhook.wallets) == [b_address]
    assert list(hook_admin.webhook.wallets) == []

    sig_a = await harness.transfer(a, wallet_a)
    sig_b = await harness.transfer(b, wallet_b)
    await to_admin.wait_for(lambda: {sig_a, sig_b} <= _signatures(to_admin))
    await to_a.wait_for(lambda: sig_a in _signatures(to_a))
    await to_b.wait_for(lambda: sig_b in _signatures(to_b))
    assert _signatures(to_a) == {sig_a}
    assert _signatures(to_b) == {sig_b}
    assert {e["wallet"] for e in to_a.events()} == {a_address}

    # B cannot see, change, test or list A's webhook: it does not exist for B.
    name = hook_a.webhook.name
    for call in (
        b.events.GetWebhook(events_pb2.GetWebhookRequest(name=name)),
        b.events.DeleteWebhook(events_pb2.DeleteWebhookRequest(name=name)),
        b.events.SendTestEvent(events_pb2.SendTestEventRequest(name=name)),
        b.events.RotateWebhookSecret(events_pb2.RotateWebhookSecretRequest(name=name)),
        b.events.ListWebhookDeliveries(events_pb2.ListWebhookDeliveriesRequest(name=name)),
        b.events.UpdateWebhook(
            events_pb2.UpdateWebhookRequest(
                webhook=events_pb2.Webhook(name=name, url=to_b.url),
                update_mask=field_mask_pb2.FieldMask(paths=["url"]),
            )
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND
        assert rich_details(raised.value)["ErrorInfo"].reason == "WEBHOOK_NOT_FOUND"
    listed_b = await b.events.ListWebhooks(events_pb2.ListWebhooksRequest())
    assert [w.name for w in listed_b.webhooks] == [hook_b.webhook.name]
    listed_admin = await harness.admin.events.ListWebhooks(
        events_pb2.ListWebhooksRequest(page_size=500)
    )
    names = {w.name for w in listed_admin.webhooks}
    assert {hook_a.webhook.name, hook_b.webhook.name, hook_admin.webhook.name} <= names

    # Nor can B watch A's wallet.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in b.events.WatchEvents(events_pb2.WatchEventsRequest(wallets=[a_address])):
            pass
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_narrowed_policy_or_a_revoked_key_stops_its_deliveries(
    harness: EventsHarness, receiver: Receiver
) -> None:
    wallet = await harness.wallet()
    address = str(wallet.pubkey())
    a = await harness.caller(policy=KeyPolicy(allowed_wallets=(address,)))
    hook = await harness.webhook(a, receiver.url, types=TX)
    first = await harness.transfer(a, wallet)
    await receiver.wait_for(lambda: first in _signatures(receiver))

    assert harness.server.keys is not None and harness.server.events is not None
    other = str((await harness.wallet()).pubkey())
    await harness.server.keys.update(a.key_id, policy=KeyPolicy(allowed_wallets=(other,)))
    events = harness.server.events

    async def narrowed() -> bool:
        key = await events.key(a.key_id)
        return key is not None and key.policy.allowed_wallets == (other,)

    await until(narrowed, what="the events service to see the narrowed policy")
    # The wallet's next event is not delivered to A's webhook any more.
    second = await harness.transfer(harness.admin, wallet)

    async def cancelled() -> bool:
        deliveries = await harness.deliveries(harness.admin, hook.webhook.name)
        return any(d.state == events_pb2.WebhookDelivery.STATE_CANCELLED for d in deliveries)

    await until(cancelled, what="the delivery cancelled")
    deliveries = await harness.deliveries(harness.admin, hook.webhook.name)
    stopped = [d for d in deliveries if d.state == events_pb2.WebhookDelivery.STATE_CANCELLED]
    assert "may no longer use wallet" in stopped[0].last_error
    assert stopped[0].attempt_count == 0
    assert second not in _signatures(receiver)

    # Revoked: not even its own key events are sent.
    await harness.server.keys.revoke(a.key_id)

    async def revoked() -> bool:
        key = await events.key(a.key_id)
        return key is not None and key.revoke_time is not None

    await until(revoked, what="the events service to see the revocation")
    await harness.admin.events.SendTestEvent(
        events_pb2.SendTestEventRequest(name=hook.webhook.name)
    )

    async def test_cancelled() -> bool:
        deliveries = await harness.deliveries(harness.admin, hook.webhook.name)
        return any(
            d.event_type == "webhook.test" and d.state == events_pb2.WebhookDelivery.STATE_CANCELLED
            for d in deliveries
        )

    await until(test_cancelled, what="the test delivery cancelled")
    assert all(e["type"] != "webhook.test" for e in receiver.events())


async def test_a_stream_ends_when_its_key_is_revoked(harness: EventsHarness) -> None:
    wallet = await harness.wallet()
    caller = await harness.caller()
    stream = caller.events.WatchEvents(
        events_pb2.WatchEventsRequest(wallets=[str(wallet.pubkey())])
    )
    # The stream is open once the server registered its wallet.
    assert harness.server.events is not None
    events = harness.server.events
    await until(lambda: events.feed.streams > 0, what="the stream open")
    assert harness.server.keys is not None
    await harness.server.keys.revoke(caller.key_id)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(stream.read(), 30)
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert rich_details(raised.value)["ErrorInfo"].reason == "API_KEY_REVOKED"
