"""The relay's durable record on both databases: recorded before sending, resumed by
another replica when the owner dies, true states everywhere, leases, takeover.

Replicas here are `Relay` objects on one database and one scripted chain; a "crash"
is a replica abandoned without `stop()` (its leases simply stop being renewed). A
shared fake wall clock moves the leases on without sleeping. The crash of a real
server process is tests/relay/test_crash.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from solders.transaction import VersionedTransaction

from service.chain import BlockhashExpiredError, Relay, RelayConfig, SqlSubmissionLog
from service.core.txstatus import Commitment, TxState, TxStatus
from service.store import Database, StoreUnavailableError, open_database
from tests._wait import until
from tests.conftest import Backend

from ._scripted import GENESIS, ScriptedRpc, chain_status, wire

LEASE = 30.0


class WallClock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def database(backend: Backend) -> AsyncIterator[Database]:
    opened = await open_database(backend.url)
    yield opened
    await opened.close()


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


class Replicas:
    """Relays on one database and one scripted chain, each its own replica."""

    def __init__(self, database: Database, rpc: ScriptedRpc, wall: WallClock) -> None:
        self.database = database
        self.rpc = rpc
        self.wall = wall
        self.started: list[Relay] = []

    async def start(self, owner: str, **config: Any) -> Relay:
        relay = Relay(
            self.rpc,
            RelayConfig(poll_interval=0.01, lease_seconds=LEASE, **config),
            submissions=SqlSubmissionLog(self.database),
            owner=owner,
            wall_clock=self.wall,
        )
        await relay.start()
        self.started.append(relay)
        return relay

    @staticmethod
    async def crash(relay: Relay) -> None:
        """Die without a word: no final write, no release (its leases run out)."""
        for task in (relay._task, relay._owner_task):
            assert task is not None
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        relay._task = relay._owner_task = None


@pytest.fixture
async def replicas(database: Database, wall: WallClock) -> AsyncIterator[Replicas]:
    group = Replicas(database, ScriptedRpc(), wall)
    yield group
    for relay in group.started:
        if relay._task is not None:
            await relay.stop()


async def _recorded_as(database: Database, signature: str, state: TxState) -> None:
    """Wait until the record shows `state` (written by the owner's next tick)."""
    log = SqlSubmissionLog(database)

    async def recorded() -> bool:
        found = (await log.get([signature])).get(signature)
        return found is not None and found.state is state

    await until(recorded, every=0.01, what=f"{signature} recorded as {state.name}")


async def _lease_round(relay: Relay) -> None:
    await relay._own()


async def test_recorded_before_the_first_send_and_resumed_after_a_crash(
    replicas: Replicas,
) -> None:
    rpc = replicas.rpc
    log = SqlSubmissionLog(replicas.database)
    tx = wire("durable")
    signature = str(VersionedTransaction.from_bytes(tx).signatures[0])
    recorded_at_send: list[TxState | None] = []
    original = rpc.call

    async def call(method: str, params: list[Any], *, timeout: float | None = None) -> Any:
        if method == "sendTransaction" and not recorded_at_send:
            found = (await log.get([signature])).get(signature)
            recorded_at_send.append(None if found is None else found.state)
        return await original(method, params, timeout=timeout)

    rpc.call = call  # type: ignore[method-assign]
    first = await replicas.start("replica-a")
    await first.submit(tx, skip_preflight=True)
    assert recorded_at_send == [TxState.RECEIVED], "sent before it was recorded"
    await _recorded_as(replicas.database, signature, TxState.SENT)  # by the next tick
    await Replicas.crash(first)

    second = await replicas.start("replica-b")
    # Not landed, owner gone, lease not over yet: the record answers, not NOT_FOUND.
    status = await second.status(signature)
    assert status.state is TxState.SENT and status.send_count == 1
    assert second.stats().pending == 0
    sends = len(rpc.sent)

    replicas.wall.now += LEASE + 1  # the dead owner's lease runs out
    await _lease_round(second)
    assert second.stats().counters["taken_over"] == 1
    await until(lambda: len(rpc.sent) > sends)  # rebroadcast at once by the new owner
    assert rpc.sent[-1]["skipPreflight"] is True
    rpc.statuses[signature] = chain_status("finalized")
    final = await asyncio.wait_for(second.wait(signature, Commitment.FINALIZED), 5)
    assert final.state is TxState.FINALIZED
    await _recorded_as(replicas.database, signature, TxState.FINALIZED)
    assert (await log.get([signature]))[signature].send_count >= 2


async def test_a_graceful_stop_hands_over_at_once(replicas: Replicas) -> None:
    first = await replicas.start("replica-a")
    signature = (await first.submit(wire(), skip_preflight=True)).status.signature
    await first.stop()
    assert first.stats().counters["released"] == 1
    # No waiting for a lease: the next start claims it in its first round.
    second = await replicas.start("replica-b")
    await until(lambda: second.stats().pending == 1)
    assert (await second.status(signature)).state is TxState.SENT


async def test_each_submission_has_one_owner_and_a_stale_one_lets_go(
    replicas: Replicas,
) -> None:
    a = await replicas.start("replica-a")
    b = await replicas.start("replica-b")
    signatures = {
        (await a.submit(wire(str(i)), skip_preflight=True)).status.signature for i in range(3)
    }
    # Both replicas' rounds while a is alive: b claims nothing.
    await _lease_round(a)
    await _lease_round(b)
    assert b.stats().pending == 0 and a.stats().pending == 3

    # a stalls (a long pause) past its lease: b takes everything over ...
    replicas.wall.now += LEASE + 1
    await _lease_round(b)
    assert b.stats().pending == 3 and b.stats().counters["taken_over"] == 3
    # ... and a, back, finds it no longer owns them: it stops relaying them.
    await _lease_round(a)
    assert a.stats().pending == 0 and a.stats().counters["lost"] == 3
    # A third replica finds nothing to claim: each submission is owned once.
    c = await replicas.start("replica-c")
    await _lease_round(c)
    assert c.stats().pending == 0
    assert {s for s in signatures if (await b.status(s)).state is TxState.SENT} == signatures


async def test_another_replica_watches_a_submission_until_its_owner_expires_it(
    replicas: Replicas,
) -> None:
    rpc = replicas.rpc
    owner = await replicas.start("replica-a")
    other = await replicas.start("replica-b")
    signature = (await owner.submit(wire(), skip_preflight=True)).status.signature
    await _recorded_as(replicas.database, signature, TxState.SENT)

    seen: list[TxState] = []

    async def watch() -> None:
        async for status in other.watch(signature, Commitment.FINALIZED):
            seen.append(status.state)

    watcher = asyncio.create_task(watch())
    await until(lambda: seen == [TxState.SENT])
    rpc.height = 1_151  # past the bound, never seen on chain: its owner expires it
    await asyncio.wait_for(watcher, 5)
    assert seen == [TxState.SENT, TxState.EXPIRED]
    assert (await other.status(signature)).state is TxState.EXPIRED


async def test_a_second_submission_elsewhere_is_answered_from_the_record(
    replicas: Replicas,
) -> None:
    a = await replicas.start("replica-a")
    b = await replicas.start("replica-b")
    tx = wire()
    first = await a.submit(tx, skip_preflight=True)
    sends = len(replicas.rpc.sent)
    again = await b.submit(tx, skip_preflight=True)
    assert again.already_submitted and again.status.signature == first.status.signature
    assert len(replicas.rpc.sent) == sends, "the second replica sent it too"
    assert b.stats().pending == 0


async def test_without_the_database_nothing_is_sent_unrecorded(
    replicas: Replicas, backend: Backend
) -> None:
    relay = await replicas.start("replica-a")
    await backend.execute("ALTER TABLE relay_submissions RENAME TO relay_submissions_away")
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await relay.submit(wire(), skip_preflight=True)
    finally:
        await backend.execute("ALTER TABLE relay_submissions_away RENAME TO relay_submissions")
    assert caught.value.reason == "STORE_UNAVAILABLE" and caught.value.retry_after > 0
    assert replicas.rpc.sent == []
    assert relay.stats().pending == 0 and relay.stats().rejections == {"STORE_UNAVAILABLE": 1}


async def test_records_of_another_chain_are_dropped_and_old_outcomes_purged(
    replicas: Replicas, database: Database
) -> None:
    log = SqlSubmissionLog(database)
    first = await replicas.start("replica-a")
    ours = (await first.submit(wire("ours"), skip_preflight=True)).status.signature
    await Replicas.crash(first)
    # Recorded on another chain with the same genesis (a reset test cluster): its bound
    # is far above this chain's tip + 150.
    other = wire("theirs")
    theirs = str(VersionedTransaction.from_bytes(other).signatures[0])
    status = TxStatus(signature=theirs, state=TxState.SENT, last_valid_block_height=10_150)
    assert await log.record(status, other, cluster=GENESIS, owner="gone", lease_until=0)

    second = await replicas.start("replica-b", record_retain_seconds=60)
    replicas.wall.now += LEASE + 1
    await _lease_round(second)
    assert second.stats().pending == 1 and second.stats().counters["taken_over"] == 1
    assert set(await log.get([ours, theirs])) == {ours}

    replicas.rpc.statuses[ours] = chain_status("finalized")
    await asyncio.wait_for(second.wait(ours, Commitment.FINALIZED), 5)
    await _recorded_as(database, ours, TxState.FINALIZED)
    replicas.wall.now += 61
    await _lease_round(second)
    assert await log.get([ours]) == {}


async def test_a_resubmission_after_the_blockhash_expired_is_answered_from_the_record(
    replicas: Replicas, database: Database
) -> None:
    """Once memory lets a transaction go (a restart, the retention time), the same
    bytes again are its status, not BLOCKHASH_EXPIRED: an agent told to build a new
    one would stake twice."""
    first = await replicas.start("replica-a")
    landed = wire("landed")
    signature = (await first.submit(landed, skip_preflight=True)).status.signature
    replicas.rpc.statuses[signature] = chain_status("finalized")
    await asyncio.wait_for(first.wait(signature, Commitment.FINALIZED), 5)
    await _recorded_as(database, signature, TxState.FINALIZED)
    await Replicas.crash(first)
    replicas.rpc.blockhash_valid = False

    fresh = await replicas.start("replica-b")
    again = await fresh.submit(landed, skip_preflight=True)
    assert again.already_submitted and again.status.state is TxState.FINALIZED
    # Not recorded, yet processed by the cluster (sent straight to a node): the chain says.
    outside = wire("outside")
    outside_signature = str(VersionedTransaction.from_bytes(outside).signatures[0])
    replicas.rpc.statuses[outside_signature] = chain_status("confirmed")
    seen = await fresh.submit(outside, skip_preflight=True)
    assert seen.already_submitted and seen.status.state is TxState.CONFIRMED
    # Seen nowhere: it can no longer land.
    with pytest.raises(BlockhashExpiredError):
        await fresh.submit(wire("never"), skip_preflight=True)
    assert replicas.rpc.sent == [replicas.rpc.sent[0]]  # only the first submission's send


async def test_rebroadcasts_are_recorded_so_the_count_survives_a_crash(
    replicas: Replicas,
) -> None:
    log = SqlSubmissionLog(replicas.database)
    first = await replicas.start("replica-a", rebroadcast_interval=0.01)
    signature = (await first.submit(wire("resent"), skip_preflight=True)).status.signature
    await until(lambda: len(replicas.rpc.sent) >= 4)

    async def recorded_sends() -> int:
        found = (await log.get([signature])).get(signature)
        return 0 if found is None else found.send_count

    # No state changed, and no graceful stop wrote the last count.
    await until(lambda: _at_least(recorded_sends(), 3), every=0.01, what="3 sends recorded")
    await Replicas.crash(first)
    second = await replicas.start("replica-b")
    assert (await second.status(signature)).send_count >= 3


async def _at_least(count: Awaitable[int], floor: int) -> bool:
    return await count >= floor
