"""The events' tables on both engines: sequence order is commit order, dedupe, fan-out
to the webhooks that receive an event, claims each by one replica, retention, the
producers' lease and its fence."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from standardwebhooks import Webhook as StandardWebhook

from service.core.errors import ShuttingDownError
from service.core.txstatus import TxState
from service.events import (
    ApiKeyPayload,
    EventHistoryExpiredError,
    EventStore,
    EventType,
    NewEvent,
    TransactionPayload,
    Webhook,
    WebhookState,
    new_secret,
    signature_headers,
)
from service.events._feed import EventFeed
from service.events._model import Audience, DeliveryState, event_id
from service.events._store import NotLeaderError
from service.store import Database, open_database
from tests.conftest import Backend

WALLET = "So11111111111111111111111111111111111111112"
OTHER = "Vote111111111111111111111111111111111111111"


@pytest.fixture
async def database(backend: Backend) -> AsyncIterator[Database]:
    opened = await open_database(backend.url)
    yield opened
    await opened.close()


def _event(key: str = "k1", dedupe: str | None = None) -> NewEvent:
    return NewEvent(
        type=EventType.API_KEY_ROTATION_DUE,
        payload=ApiKeyPayload(key_id=key, rotate_time=1.0),
        occurred_time=1.0,
        key_id=key,
        dedupe_key=dedupe,
    )


def _webhook(
    webhook_id: str, *, key_id: str = "k1", wallets: tuple[str, ...] = (), **kw: object
) -> Webhook:
    fields: dict[str, object] = {
        "webhook_id": webhook_id.rjust(21, "0"),
        "key_id": key_id,
        "url": "https://hooks.example/in",
        "description": "",
        "event_types": (),
        "wallets": wallets,
        "all_wallets": False,
        "state": WebhookState.ENABLED,
        "disabled_reason": "",
        "create_time": 1.0,
        "update_time": 1.0,
    }
    fields.update(kw)
    return Webhook(**fields)  # type: ignore[arg-type]


async def _append(store: EventStore, *events: NewEvent) -> list[int]:
    async with store.database.transaction("test") as conn:
        return [e.seq for e in await store.append(conn, events)]


async def test_sequence_dedupe_and_fan_out(database: Database) -> None:
    store = EventStore(database)
    mine = _webhook("1", key_id="k1")
    other = _webhook("2", key_id="k2")
    admin = _webhook("3", key_id="k3", all_wallets=True)
    wallet_hook = _webhook("4", key_id="k4", wallets=(WALLET,))
    stake_only = _webhook(
        "5", key_id="k4", wallets=(WALLET,), event_types=(EventType.STAKE_ACTIVATED,)
    )
    off = _webhook("6", key_id="k1", state=WebhookState.DISABLED)
    for hook in (mine, other, admin, wallet_hook, stake_only, off):
        assert await store.create_webhook(hook, new_secret(), max_per_key=10, epoch=None)
    assert await _append(store, _event("k1", "a"), _event("k2", "b")) == [1, 2]
    # The same change seen again is recorded once; numbers are never reused.
    assert await _append(store, _event("k1", "a"), _event("k1", "c")) == [4]
    head, purged = await store.head()
    assert (head, purged) == (4, 0)
    events = await store.read(after=0, upto=head, audience=None, limit=10)
    assert [e.seq for e in events] == [1, 2, 4]

    # Each event queued for the webhooks that receive it: its key's, and the admin's.
    async def targets(seq: int) -> set[str]:
        found = set()
        for hook in (mine, other, admin, wallet_hook, stake_only, off):
            for d in await store.list_deliveries(
                hook.webhook_id, state=None, before=None, limit=10
            ):
                if d.event_seq == seq:
                    found.add(hook.webhook_id)
        return found

    assert await targets(1) == {mine.webhook_id, admin.webhook_id}
    assert await targets(2) == {other.webhook_id, admin.webhook_id}
    # Wallet events: the webhooks of that wallet (of that type), and the admin's.
    confirmed = [
        NewEvent(
            type=EventType.TRANSACTION_CONFIRMED,
            payload=TransactionPayload(signature="s", state=TxState.CONFIRMED, slot=1),
            occurred_time=1.0,
            wallet=wallet,
        )
        for wallet in (WALLET, OTHER)
    ]
    assert await _append(store, *confirmed) == [5, 6]
    assert await targets(5) == {wallet_hook.webhook_id, admin.webhook_id}
    assert await targets(6) == {admin.webhook_id}
    # An audience reads only its own.
    audience = Audience(key_id="k2")
    assert [e.seq for e in await store.read(after=0, upto=6, audience=audience, limit=10)] == [2]
    watcher = Audience(key_id="k9", wallets=frozenset({WALLET}))
    assert [e.seq for e in await store.read(after=0, upto=6, audience=watcher, limit=10)] == [5]


async def test_a_webhook_limit_per_key(database: Database) -> None:
    store = EventStore(database)
    assert await store.create_webhook(_webhook("1"), new_secret(), max_per_key=2, epoch=None)
    assert await store.create_webhook(_webhook("2"), new_secret(), max_per_key=2, epoch=None)
    assert not await store.create_webhook(_webhook("3"), new_secret(), max_per_key=2, epoch=None)
    assert await store.create_webhook(
        _webhook("4", key_id="k9"), new_secret(), max_per_key=2, epoch=None
    )


async def test_a_delivery_is_claimed_by_one_replica_until_its_lease_ends(
    database: Database,
) -> None:
    store = EventStore(database)
    assert await store.create_webhook(_webhook("1"), new_secret(), max_per_key=9, epoch=None)
    await _append(store, *(_event() for _ in range(20)))
    now = time.time()
    first, second = await asyncio.gather(
        store.claim(owner="a", now=now, lease_until=now + 30, limit=15),
        store.claim(owner="b", now=now, lease_until=now + 30, limit=15),
    )
    ids_a = {c.delivery_id for c in first}
    ids_b = {c.delivery_id for c in second}
    assert not ids_a & ids_b and len(ids_a | ids_b) == 20
    assert {c.attempt for c in first + second} == {1}
    # Nothing left while the leases run; all of them again once they ended (a replica
    # that died before recording: sent again, never lost).
    assert await store.claim(owner="c", now=now + 1, lease_until=now + 60, limit=50) == []
    again = await store.claim(owner="c", now=now + 31, lease_until=now + 60, limit=50)
    assert {c.delivery_id for c in again} == ids_a | ids_b
    # The replica that lost its lease cannot record over the new owner's.
    some = first[0]
    assert not await store.finish(
        some.delivery_id,
        owner="a",
        attempt=None,
        state=DeliveryState.SUCCEEDED,
        next_attempt_time=now,
        error="",
    )
    assert await store.finish(
        some.delivery_id,
        owner="c",
        attempt=None,
        state=DeliveryState.SUCCEEDED,
        next_attempt_time=now,
        error="",
    )


async def test_events_commit_in_sequence_order(postgres_url: str) -> None:
    """A writer holding the sequence makes the next one wait: a reader that sees number N
    has seen every number below it (streams resume without gaps). PostgreSQL: SQLite
    has one writer at a time anyway."""
    database = await open_database(postgres_url)
    store = EventStore(database)
    second_db = await open_database(postgres_url)
    try:
        second = EventStore(second_db)
        release = asyncio.Event()
        holding = asyncio.Event()

        async def slow_writer() -> list[int]:
            async with store.database.transaction("slow", timeout=30) as conn:
                written = await store.append(conn, [_event()])
                holding.set()
                await release.wait()
            return [e.seq for e in written]

        slow = asyncio.create_task(slow_writer())
        await holding.wait()
        fast = asyncio.create_task(_append(second, _event()))
        await asyncio.sleep(0.3)  # NOTE: only to give the second writer its chance to overtake
        assert not fast.done()  # it waits for the first to commit
        head, _ = await second.head()
        assert head == 0  # nothing committed yet
        release.set()
        assert await slow == [1]
        assert await fast == [2]
    finally:
        await second_db.close()
        await database.close()


async def test_purged_history_cannot_be_resumed(database: Database) -> None:
    store = EventStore(database)
    await _append(store, *(_event() for _ in range(5)))
    assert await store.purge(before=time.time() + 1, limit=3) == 3
    assert await store.head() == (5, 3)
    feed = EventFeed(store, holder="test", poll_interval=0.05)
    await feed.start()
    try:
        with pytest.raises(EventHistoryExpiredError):
            async for _ in feed.follow(Audience(key_id="k1"), since=2, watch=frozenset()):
                break
        # Resuming right after the purged ones misses nothing.
        resumed = feed.follow(Audience(key_id="k1"), since=3, watch=frozenset())
        found = [await asyncio.wait_for(anext(resumed), 10) for _ in range(2)]
        assert [e.seq for e in found if e is not None] == [4, 5]
        await resumed.aclose()
    finally:
        await feed.stop()


async def test_the_producers_lease_and_its_fence(database: Database) -> None:
    store = EventStore(database)
    now = time.time()
    assert await store.acquire("producer", owner="a", now=now, until=now + 10)
    assert not await store.acquire("producer", owner="b", now=now + 1, until=now + 11)
    assert await store.acquire("producer", owner="a", now=now + 2, until=now + 12)
    # The lease ran out: another takes over, and the old holder's writes are refused.
    assert await store.acquire("producer", owner="b", now=now + 13, until=now + 23)
    with pytest.raises(NotLeaderError):
        async with store.database.transaction("fenced") as conn:
            await store.fence(conn, "producer", owner="a", now=now + 14, until=now + 24)
            await store.append(conn, [_event()])
    assert (await store.head())[0] == 0  # rolled back
    await store.release("producer", owner="b")
    assert await store.acquire("producer", owner="a", now=now + 14, until=now + 24)


def test_rotation_grace_signs_with_both_secrets() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"eventId":"evt_1"}'
    headers = signature_headers([new, old], msg_id="evt_1", timestamp=int(time.time()), body=body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert StandardWebhook(secret).verify(body, headers) == {"eventId": "evt_1"}


async def test_a_stopping_feed_ends_its_streams_naming_where_to_resume(
    database: Database,
) -> None:
    store = EventStore(database)
    await _append(store, *(_event() for _ in range(3)))
    feed = EventFeed(store, holder="test", poll_interval=0.05)
    await feed.start()
    try:
        stream = feed.follow(Audience(key_id="k1"), since=1, watch=frozenset())
        seen = [await asyncio.wait_for(anext(stream), 10) for _ in range(2)]
        assert [e.seq for e in seen if e is not None] == [2, 3]
        waiting = asyncio.ensure_future(anext(stream))  # nothing more: it waits
        feed.end_streams()
        with pytest.raises(ShuttingDownError) as ended:
            await asyncio.wait_for(waiting, 10)
        assert ended.value.reason == "SERVER_SHUTTING_DOWN" and ended.value.retry_after
        assert ended.value.metadata["since_event_id"] == event_id(3)
        with pytest.raises(ShuttingDownError):  # and a new stream is refused alike
            await anext(feed.follow(Audience(key_id="k1"), since=None, watch=frozenset()))
    finally:
        await feed.stop()
