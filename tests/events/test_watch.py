"""WatchEvents: a stream resumed with since_event_id misses nothing, replays the
retained history in order, and the producers follow the wallets streams watch; a
stream's response headers come as soon as it follows the events."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest
from agentstaking.v1 import events_pb2

from service.events import event_id
from tests._wait import until
from tests.api._helpers import rich_details

from .conftest import EventsHarness, Receiver

FINALIZED = ["transaction.finalized"]


async def _read(stream: Any, count: int) -> list[events_pb2.Event]:
    events: list[events_pb2.Event] = []
    while len(events) < count:
        answer = await asyncio.wait_for(stream.read(), 60)
        assert answer is not grpc.aio.EOF
        events.append(answer.event)
    return events


async def _streams_open(harness: EventsHarness, count: int) -> None:
    events = harness.server.events
    assert events is not None
    await until(lambda: events.feed.streams >= count, what=f"{count} streams open")


async def test_a_resumed_stream_misses_nothing(harness: EventsHarness) -> None:
    wallet = await harness.wallet()
    address = str(wallet.pubkey())
    request = events_pb2.WatchEventsRequest(wallets=[address], types=FINALIZED)
    stream = harness.agent.events.WatchEvents(request)
    await _streams_open(harness, 1)
    first_signatures = {await harness.transfer(harness.agent, wallet) for _ in range(3)}
    first = await _read(stream, 3)
    stream.cancel()
    assert {e.transaction.signature for e in first} == first_signatures

    # While nobody watches, more happens.
    later_signatures = {await harness.transfer(harness.agent, wallet) for _ in range(3)}
    resumed = harness.agent.events.WatchEvents(
        events_pb2.WatchEventsRequest(
            wallets=[address], types=FINALIZED, since_event_id=first[-1].event_id
        )
    )
    later = await _read(resumed, 3)
    assert {e.transaction.signature for e in later} == later_signatures
    resumed.cancel()

    # From the start of the history: all of them, once each, in id order.
    replay = harness.agent.events.WatchEvents(
        events_pb2.WatchEventsRequest(
            wallets=[address], types=FINALIZED, since_event_id=event_id(0)
        )
    )
    everything = await _read(replay, 6)
    replay.cancel()
    ids = [e.event_id for e in everything]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert [e.event_id for e in first + later] == ids
    assert all(e.wallet == address and e.type == "transaction.finalized" for e in everything)


async def test_a_stream_alone_makes_the_producer_follow_its_wallet(harness: EventsHarness) -> None:
    wallet = await harness.wallet()
    address = str(wallet.pubkey())
    stream = harness.agent.events.WatchEvents(
        events_pb2.WatchEventsRequest(wallets=[address], types=["stake.activated"])
    )
    assert harness.server.events is not None
    store = harness.server.events.store

    async def followed() -> bool:
        watched = await store.watched_wallets(now=time.time(), limit=100_000)
        return address in {w.wallet for w in watched}

    await until(followed, what="the stream's wallet recorded for the producer")
    stake_account, _ = await harness.stake(harness.agent, wallet)
    await harness.advance_epochs(1)
    [event] = await _read(stream, 1)
    stream.cancel()
    assert event.type == "stake.activated"
    assert event.stake.stake_account == stake_account


async def test_an_admin_stream_without_wallets_sees_every_wallet(harness: EventsHarness) -> None:
    wallet = await harness.wallet()
    stream = harness.admin.events.WatchEvents(events_pb2.WatchEventsRequest(types=FINALIZED))
    await _streams_open(harness, 1)
    signature = await harness.transfer(harness.agent, wallet)
    while True:
        [event] = await _read(stream, 1)
        if event.transaction.signature == signature:
            break
    stream.cancel()
    assert event.wallet == str(wallet.pubkey())


SOME_WALLET = "Vote111111111111111111111111111111111111111"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"wallets": [SOME_WALLET], "since_event_id": "evt_1"}, "INVALID_EVENT_ID"),
        ({"wallets": [SOME_WALLET], "since_event_id": event_id(10**19)}, "INVALID_EVENT_ID"),
        ({"wallets": [SOME_WALLET], "types": ["stake.exploded"]}, "UNKNOWN_EVENT_TYPE"),
        ({"wallets": [SOME_WALLET], "types": ["webhook.test"]}, "UNKNOWN_EVENT_TYPE"),
        ({"wallets": ["nope"]}, "INVALID_ADDRESS"),
        ({}, "WALLETS_REQUIRED"),
        ({"types": ["stake.activated", "api_key.rotation_due"]}, "WALLETS_REQUIRED"),
    ],
)
async def test_bad_watch_requests_get_a_precise_error(
    harness: EventsHarness, fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in harness.agent.events.WatchEvents(events_pb2.WatchEventsRequest(**fields)):
            pass
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert rich_details(raised.value)["ErrorInfo"].reason == reason


async def test_api_key_rotation_due_goes_to_the_keys_own_stream_and_webhooks(
    harness: EventsHarness, receiver: Receiver
) -> None:
    """A key watches its own events without naming wallets; when its rotation time is
    within the notice (7 days), one api_key.rotation_due is recorded."""
    caller = await harness.caller()
    other = await harness.caller()
    stream = caller.events.WatchEvents(
        events_pb2.WatchEventsRequest(types=["api_key.rotation_due"])
    )
    hook = await harness.webhook(caller, receiver.url, types=("api_key.rotation_due",))
    await harness.webhook(other, receiver.url, types=("api_key.rotation_due",))
    await _streams_open(harness, 1)
    assert harness.server.keys is not None
    key = await harness.server.keys.get(caller.key_id)
    harness.clock.advance(timedelta(days=24))  # rotation due in 6 days now
    [event] = await _read(stream, 1)
    stream.cancel()
    assert event.type == "api_key.rotation_due"
    assert event.api_key == f"apiKeys/{caller.key_id}" and not event.wallet
    due = event.api_key_rotation.rotate_time.ToDatetime(tzinfo=UTC)
    assert abs(due - key.rotate_time) < timedelta(microseconds=2)  # unix seconds, a float
    await receiver.wait_for(lambda: len(receiver.events()) == 2)
    by_key = {e["apiKey"] for e in receiver.events()}
    assert by_key == {f"apiKeys/{caller.key_id}", f"apiKeys/{other.key_id}"}
    # Each key's event went to its own webhook only.
    deliveries = await harness.deliveries(caller, hook.webhook.name)
    assert [d.event_id for d in deliveries] == [event.event_id]


async def test_a_quiet_stream_sends_its_initial_metadata_at_once(harness: EventsHarness) -> None:
    """The response headers (request id, rate limits) tell the client its stream follows
    the events, before any event comes."""
    quiet = str((await harness.wallet()).pubkey())
    call = harness.agent.events.WatchEvents(events_pb2.WatchEventsRequest(wallets=[quiet]))
    try:
        metadata = dict(await asyncio.wait_for(call.initial_metadata(), 10))
    finally:
        call.cancel()
    assert metadata["x-request-id"]
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(metadata)
