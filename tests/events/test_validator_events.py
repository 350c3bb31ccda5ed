"""Validator events: the validator a watched wallet is delegated to becomes delinquent,
recovers, changes its commission (on the localnet, with localnet_setValidator)."""

from __future__ import annotations

from agentstaking.v1 import events_pb2

from tests._wait import until

from .conftest import EventsHarness, Receiver, verified

VALIDATOR_TYPES = (
    "validator.delinquent",
    "validator.recovered",
    "validator.commission_changed",
)


async def test_a_delegated_wallet_hears_of_its_validator(
    harness: EventsHarness, receiver: Receiver
) -> None:
    validator = harness.localnet.chain.validators[1]
    vote = str(validator.vote_account)
    wallet = await harness.wallet()
    address = str(wallet.pubkey())
    created = await harness.webhook(
        harness.agent, receiver.url, wallets=(address,), types=VALIDATOR_TYPES
    )
    stake_account, _ = await harness.stake(harness.agent, wallet, vote=vote)
    assert harness.server.events is not None
    store = harness.server.events.store

    async def known() -> bool:
        records = await store.stake_records([address])
        return stake_account in records[address] and vote in await store.validator_records()

    await until(known, what="the producer following the stake and its validator")
    try:
        await harness.call("localnet_setValidator", vote, {"delinquent": True})
        await receiver.wait_for(lambda: len(receiver.events()) == 1)
        await harness.call("localnet_setValidator", vote, {"delinquent": False})
        await receiver.wait_for(lambda: len(receiver.events()) == 2)
        await harness.call("localnet_setValidator", vote, {"commission": 42})
        await receiver.wait_for(lambda: len(receiver.events()) == 3)
    finally:
        await harness.call(
            "localnet_setValidator",
            vote,
            {"delinquent": False, "commission": validator.commission},
        )
    events = [verified(r, created.secret) for r in receiver.requests]
    assert [e.type for e in events] == list(VALIDATOR_TYPES)
    assert all(e.wallet == address for e in events)
    assert all(e.validator.vote_account == vote for e in events)
    assert all(e.validator.stake_account == stake_account for e in events)
    delinquent, recovered, commission = (e.validator for e in events)
    assert delinquent.delinquent and not recovered.delinquent and not commission.delinquent
    assert commission.commission_percent == 42
    assert commission.previous_commission_percent == validator.commission
    deliveries = await harness.deliveries(harness.agent, created.webhook.name)
    assert {d.state for d in deliveries} == {events_pb2.WebhookDelivery.STATE_SUCCEEDED}
