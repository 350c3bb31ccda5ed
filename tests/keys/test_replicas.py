"""Several managers on one database, as replicas run: races, usage, cache bound, jobs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from service.keys import (
    API_KEY_EXPIRED,
    API_KEY_REVOKED,
    AuthenticationError,
    ConcurrentModificationError,
    KeyEvent,
    KeyManager,
    KeyRecord,
    KeyState,
    KeyStore,
    open_store,
)
from tests.conftest import Backend, FakeClock

DAY = timedelta(days=1)
ReplicaFactory = Callable[..., Awaitable[KeyManager]]


@pytest.fixture
async def replica(backend: Backend) -> AsyncIterator[ReplicaFactory]:
    """Makes managers that each have a store (connection or pool) of their own."""
    opened: list[tuple[KeyManager, KeyStore]] = []

    async def make(**options: object) -> KeyManager:
        store = await open_store(backend.url)
        manager = KeyManager(store, **options)  # type: ignore[arg-type]
        opened.append((manager, store))
        return manager

    yield make
    for manager, store in opened:
        await manager.stop()
        await store.close()


async def test_concurrent_rotations_have_one_winner(
    replica: ReplicaFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = await replica(), await replica()
    key, original = await first.create(display_name="raced", scopes=["staking"])

    # Both replicas read the key before either writes: the race the version column settles.
    both_read = asyncio.Barrier(2)
    for manager in (first, second):
        store = manager._store
        read = store.get

        async def get_then_wait(
            key_id: str, read: Callable[..., Awaitable[KeyRecord | None]] = read
        ) -> KeyRecord | None:
            record = await read(key_id)
            await both_read.wait()
            return record

        monkeypatch.setattr(store, "get", get_then_wait)

    results = await asyncio.gather(
        first.rotate(key.key_id), second.rotate(key.key_id), return_exceptions=True
    )
    monkeypatch.undo()
    winners = [r for r in results if isinstance(r, tuple)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert isinstance(losers[0], ConcurrentModificationError)
    assert (losers[0].kind.value, losers[0].reason) == ("ABORTED", "CONCURRENT_MODIFICATION")

    rotated, secret = winners[0]
    fresh = await replica()  # no cache: reads what the database holds
    assert (await fresh.get(key.key_id)).version == rotated.version == 2
    assert (await fresh.authenticate(secret)).key_id == key.key_id
    assert (await fresh.authenticate(original)).key_id == key.key_id  # in its grace period
    events = [e.event for e in await fresh.audit_events(key.key_id)]
    assert events == [KeyEvent.CREATED, KeyEvent.ROTATED]


async def test_usage_is_counted_in_memory_and_added_up_by_flushes(
    replica: ReplicaFactory,
) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    a = await replica(clock=clock_a)
    b = await replica(clock=clock_b)
    key, token = await a.create(display_name="busy", scopes=["staking"])

    for _ in range(25):
        principal = await a.authenticate(token)
        a.record_use(principal.key_id)
    clock_b.advance(-DAY)  # b's calls are older: last_used_time keeps a's
    for _ in range(10):
        principal = await b.authenticate(token)
        b.record_use(principal.key_id)
    before = await a.get(key.key_id)
    assert (before.request_count, before.last_used_time) == (0, None)  # nothing written yet

    await a.flush_usage()
    await b.flush_usage()
    await a.flush_usage()  # nothing new: adds nothing
    after = await b.get(key.key_id)
    assert (after.request_count, after.last_used_time) == (35, clock_a.now)

    # stop() flushes what is left; usage writes never bump the version.
    a.record_use(key.key_id)
    await a.start()
    await a.stop()
    final = await b.get(key.key_id)
    assert (final.request_count, final.version) == (36, 1)


async def test_other_replicas_see_a_revocation_within_the_cache_ttl(
    replica: ReplicaFactory,
) -> None:
    ttl = 0.3
    a = await replica(cache_ttl=ttl)
    b = await replica(cache_ttl=ttl)
    key, token = await a.create(display_name="k", scopes=["staking"])
    await b.authenticate(token)  # b caches the verdict's inputs
    # The bound runs from the end of b's read (however slow), which was before this.
    expires_by = time.monotonic() + ttl

    await a.revoke(key.key_id)
    with pytest.raises(AuthenticationError) as caught:
        await a.authenticate(token)  # the revoking replica: at once
    assert caught.value.reason == API_KEY_REVOKED

    # b may still accept the token, but only inside the bound...
    asked_at = time.monotonic()
    try:
        await b.authenticate(token)
        assert asked_at < expires_by, "accepted after the cache TTL"
    except AuthenticationError:
        pass
    # ...and never after it.
    await asyncio.sleep(max(0.0, expires_by - time.monotonic()))
    with pytest.raises(AuthenticationError) as caught:
        await b.authenticate(token)
    assert caught.value.reason == API_KEY_REVOKED


async def test_concurrent_first_lookups_share_one_read(
    replica: ReplicaFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await replica()
    _, token = await a.create(display_name="k", scopes=["staking"])
    b = await replica()
    reads = 0
    real_get = b._store.get

    async def counting_get(key_id: str) -> KeyRecord | None:
        nonlocal reads
        reads += 1
        return await real_get(key_id)

    monkeypatch.setattr(b._store, "get", counting_get)
    principals = await asyncio.gather(*(b.authenticate(token) for _ in range(20)))
    await b.authenticate(token)
    assert len({p.key_id for p in principals}) == 1
    assert reads == 1


async def test_overdue_scan_counts_and_expires_overdue_keys(
    replica: ReplicaFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    watcher = await replica(clock=clock)
    enforcer = await replica(clock=clock, expire_overdue_after=7 * DAY)
    stale = [
        (await watcher.create(display_name=f"stale {i}", scopes=["staking"])) for i in range(2)
    ]
    fresh, _ = await watcher.create(display_name="fresh", scopes=["staking"])
    revoked, _ = await watcher.create(display_name="revoked", scopes=["staking"])
    await watcher.revoke(revoked.key_id)

    clock.advance(31 * DAY)
    _, fresh_token = await watcher.rotate(fresh.key_id)
    caplog.set_level(logging.WARNING)
    overdue = await watcher.scan_overdue()
    assert overdue == sorted(key.key_id for key, _ in stale)
    assert watcher.overdue_count() == 2
    assert all(key.key_id in caplog.text for key, _ in stale)

    clock.advance(6 * DAY)  # overdue by 7 days: not more than expire_overdue_after
    assert await enforcer.scan_overdue() == overdue
    clock.advance(timedelta(seconds=1))
    assert await enforcer.scan_overdue() == []
    assert enforcer.overdue_count() == 0
    for key, token in stale:
        assert (await enforcer.get(key.key_id)).state is KeyState.EXPIRED
        with pytest.raises(AuthenticationError) as caught:
            await enforcer.authenticate(token)
        assert caught.value.reason == API_KEY_EXPIRED
        expired = [
            e for e in await enforcer.audit_events(key.key_id) if e.event is KeyEvent.EXPIRED
        ]
        assert [e.details["reason"] for e in expired] == ["rotation_overdue"]
    assert (await enforcer.authenticate(fresh_token)).key_id == fresh.key_id
    assert (await watcher.scan_overdue()) == []


async def test_start_runs_the_overdue_scan_at_once(replica: ReplicaFactory) -> None:
    clock = FakeClock()
    manager = await replica(clock=clock, overdue_scan_interval=3600.0)
    await manager.create(display_name="old", scopes=["staking"])
    clock.advance(31 * DAY)
    await manager.start()
    for _ in range(200):
        if manager.overdue_count() == 1:
            break
        await asyncio.sleep(0.01)
    assert manager.overdue_count() == 1


async def test_concurrent_bootstraps_create_one_pair(replica: ReplicaFactory) -> None:
    first, second = await replica(), await replica()
    results = await asyncio.gather(first.bootstrap_if_empty(), second.bootstrap_if_empty())
    assert sorted(len(created) for created in results) == [0, 2]
    assert (await first.list())[2] == 2
