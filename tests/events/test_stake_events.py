"""Stake and transaction events end to end: an agent stakes through the service, epochs
pass on the localnet, and a real HTTP receiver gets every event, signed so that the
Standard Webhooks reference library (``standardwebhooks``) verifies it."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import pytest
from agentstaking.v1 import events_pb2, rewards_pb2, staking_pb2, types_pb2
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks import WebhookVerificationError

from tests.api._helpers import rich_details

from .conftest import EventsHarness, Receiver, verified, verify_in_node

STAKE_TYPES = ("stake.activated", "stake.deactivating", "stake.withdrawable")
TX_TYPES = ("transaction.confirmed", "transaction.finalized")


async def test_stake_activates_then_deactivates_then_is_withdrawable_each_delivered_signed(
    harness: EventsHarness, receiver: Receiver
) -> None:
    wallet = await harness.wallet()
    address = str(wallet.pubkey())
    created = await harness.webhook(
        harness.agent, receiver.url, wallets=(address,), types=STAKE_TYPES + TX_TYPES
    )
    assert created.secret.startswith("whsec_")
    assert list(created.webhook.wallets) == [address]

    stake_account, signature = await harness.stake(harness.agent, wallet)
    # The relayed transaction's outcome, then the stake's activation at the next epoch.
    # (Two deliveries, made concurrently: not necessarily received in event order.)
    await receiver.wait_for(
        lambda: {e["type"] for e in receiver.events()} == set(TX_TYPES),
    )
    await harness.advance_epochs(1)
    await receiver.wait_for(lambda: bool(receiver.events(event_type="stake.activated")))

    activated = next(
        r for r in receiver.requests if r.status == 204 and r.event["type"] == "stake.activated"
    )
    event = verified(activated, created.secret)
    assert event.wallet == address
    assert event.stake.stake_account == stake_account
    assert event.stake.state == staking_pb2.STAKE_ACCOUNT_STATE_ACTIVE
    assert event.stake.active_lamports == 2_000_000_000
    positions = await harness.agent.staking.ListStakeAccounts(
        staking_pb2.ListStakeAccountsRequest(wallet=address)
    )
    assert positions.stake_accounts[0].active_lamports == event.stake.active_lamports
    # The body is the event's canonical proto JSON, byte for byte what was signed.
    assert json.loads(activated.body)["stake"]["stakeAccount"] == stake_account

    confirmed = [
        verified(r, created.secret)
        for r in receiver.requests
        if r.status == 204 and r.event["type"].startswith("transaction.")
    ]
    assert {e.type for e in confirmed} == set(TX_TYPES)
    assert {e.transaction.signature for e in confirmed} == {signature}
    assert {e.transaction.state for e in confirmed} == {
        types_pb2.TRANSACTION_STATE_CONFIRMED,
        types_pb2.TRANSACTION_STATE_FINALIZED,
    }

    await harness.unstake(harness.agent, wallet, stake_account)
    await receiver.wait_for(lambda: bool(receiver.events(event_type="stake.deactivating")))
    await harness.advance_epochs(1)
    await receiver.wait_for(lambda: bool(receiver.events(event_type="stake.withdrawable")))
    withdrawable = [
        verified(r, created.secret)
        for r in receiver.requests
        if r.status == 204 and r.event["type"] == "stake.withdrawable"
    ]
    assert len(withdrawable) == 1
    assert withdrawable[0].stake.state == staking_pb2.STAKE_ACCOUNT_STATE_INACTIVE
    assert withdrawable[0].stake.withdrawable_lamports > 2_000_000_000

    # Ids are unique and increase; each event once (the receiver answered at once).
    ids = [json.loads(r.body)["eventId"] for r in receiver.requests]
    assert len(ids) == len(set(ids))
    stake_events = [e["type"] for e in receiver.events() if e["type"].startswith("stake.")]
    assert stake_events == list(STAKE_TYPES)

    deliveries = await harness.deliveries(harness.agent, created.webhook.name)
    assert {d.state for d in deliveries} == {events_pb2.WebhookDelivery.STATE_SUCCEEDED}
    assert all(d.attempt_count == 1 and d.attempts[0].response_code == 204 for d in deliveries)


async def test_a_tampered_or_foreign_signature_does_not_verify(
    harness: EventsHarness, receiver: Receiver
) -> None:
    """The check above can fail: the reference library refuses a changed body and
    another webhook's secret."""
    created = await harness.webhook(harness.agent, receiver.url, types=("api_key.rotation_due",))
    other = await harness.webhook(harness.agent, receiver.url, types=("api_key.rotation_due",))
    await harness.agent.events.SendTestEvent(
        events_pb2.SendTestEventRequest(name=created.webhook.name)
    )
    await receiver.wait_for(lambda: bool(receiver.events()))
    [request] = receiver.requests
    assert verified(request, created.secret).test.message == "a test event from agent-staking"
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(other.secret).verify(request.body, request.headers)
    tampered = request.body.replace(b"a test event", b"a best event")
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(created.secret).verify(tampered, request.headers)

    # A TypeScript/JavaScript receiver: npm's standardwebhooks, run by node.
    def check(secret: str, body: bytes) -> dict[str, Any]:
        return {
            "secret": secret,
            "body": base64.b64encode(body).decode(),
            "headers": request.headers,
        }

    good, foreign, changed = await verify_in_node(
        [
            check(created.secret, request.body),
            check(other.secret, request.body),
            check(created.secret, tampered),
        ]
    )
    assert good["event"]["test"]["message"] == "a test event from agent-staking"
    assert "error" in foreign and "error" in changed


async def test_unstake_of_stake_in_its_activation_epoch_is_withdrawable_at_once(
    harness: EventsHarness, receiver: Receiver
) -> None:
    wallet = await harness.wallet()
    address = str(wallet.pubkey())
    await harness.webhook(harness.agent, receiver.url, wallets=(address,), types=STAKE_TYPES)
    stake_account, _ = await harness.stake(harness.agent, wallet)
    await harness.unstake(harness.agent, wallet, stake_account)
    await receiver.wait_for(lambda: bool(receiver.events(event_type="stake.withdrawable")))
    assert [e["type"] for e in receiver.events()] == ["stake.deactivating", "stake.withdrawable"]


async def test_webhook_wallets_must_be_named_by_an_unrestricted_key(
    harness: EventsHarness, receiver: Receiver
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.webhook(harness.agent, receiver.url)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = rich_details(raised.value)
    assert details["ErrorInfo"].reason == "WALLETS_REQUIRED"
    assert details["BadRequest"].field_violations[0].field == "webhook.wallets"


async def test_rewards_credited_to_the_stake_are_delivered(
    harness: EventsHarness, receiver: Receiver
) -> None:
    """The localnet pays inflation rewards at every epoch boundary: once active stake
    has earned an epoch's reward, the wallet hears of it (what GetRewards reports)."""
    wallet = await harness.wallet()
    address = str(wallet.pubkey())
    created = await harness.webhook(
        harness.agent, receiver.url, wallets=(address,), types=("stake.rewards_credited",)
    )
    stake_account, _ = await harness.stake(harness.agent, wallet)
    await harness.advance_epochs(1)  # active from here on
    earned = await harness.advance_epochs(1) - 1  # the epoch it earned in
    await receiver.wait_for(lambda: bool(receiver.events()))
    [event] = [verified(r, created.secret) for r in receiver.requests]
    assert event.type == "stake.rewards_credited" and event.wallet == address
    reward = event.rewards
    assert reward.stake_account == stake_account and reward.epoch == earned
    assert reward.amount_lamports > 0
    reported = await harness.agent.staking.GetRewards(
        rewards_pb2.GetRewardsRequest(wallet=address, start_epoch=earned, end_epoch=earned)
    )
    [paid] = reported.rewards
    assert (paid.stake_account, paid.amount_lamports, paid.post_balance_lamports) == (
        reward.stake_account,
        reward.amount_lamports,
        reward.post_balance_lamports,
    )
