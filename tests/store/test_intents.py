"""The intent book on both engines: two calls racing on one request_id make one
intent (the loser answers with the winner's transaction), a rebuild is recorded over
the attempt it replaces only, the relay's note of a submission, and retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.chain import (
    Attempt,
    BuiltAttempt,
    HttpSolanaRpc,
    IntentBook,
    IntentKey,
    IntentNotFoundError,
    IntentState,
    SqlIntentStore,
)
from service.localnet import LocalnetServer
from service.store import Database
from tests.relay.test_durable import WallClock, database

__all__ = ["database"]  # the fixture, shared with the relay's durable record tests

KEY = IntentKey(scope="key-1", request_id="order-7")
WALLET = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T"


@pytest.fixture
async def rpc(localnet: LocalnetServer) -> AsyncIterator[HttpSolanaRpc]:
    client = HttpSolanaRpc(localnet.url)
    yield client
    await client.close()


def _built(tag: bytes) -> BuiltAttempt:
    return BuiltAttempt(
        response=b"response-" + tag,
        message=b"message-" + tag,
        wallet=WALLET,
        recent_blockhash="11111111111111111111111111111111",
        last_valid_block_height=10**12,  # far ahead: never expired here
        nonce_account="",
        build_slot=1,
    )


def _same(kind: str, request: bytes) -> tuple[str, ...]:
    return ()


async def test_two_calls_racing_make_one_intent(database: Database, rpc: HttpSolanaRpc) -> None:
    """Both read "no intent" before either records one (a barrier in the build): one
    insert wins, the other call answers with the winner's transaction. Two books on
    one database are two replicas."""
    books = [IntentBook(SqlIntentStore(database), rpc=rpc) for _ in range(2)]
    both_built = asyncio.Barrier(2)

    def make(tag: bytes):  # type: ignore[no-untyped-def]
        async def build(number: int, previous: Attempt | None, state: object) -> BuiltAttempt:
            assert (number, previous, state) == (1, None, None)
            await both_built.wait()
            return _built(tag)

        return build

    outcomes = await asyncio.gather(
        *(
            book.build(
                KEY,
                kind="BuildStakeTransaction",
                request=b"request",
                response_type="agentstaking.v1.BuildStakeTransactionResponse",
                differs=_same,
                make=make(tag),
            )
            for book, tag in zip(books, (b"a", b"b"), strict=True)
        )
    )
    assert {o.response for o in outcomes} in ({b"response-a"}, {b"response-b"})
    assert sorted(o.replayed for o in outcomes) == [False, True]
    async with database.transaction("count", write=False) as conn:
        assert await conn.fetchval("SELECT count(*) FROM intents") == 1
        assert await conn.fetchval("SELECT count(*) FROM intent_attempts") == 1
    intent = await SqlIntentStore(database).get(KEY)
    assert intent is not None and intent.latest.response == outcomes[0].response


async def test_a_rebuild_only_replaces_the_attempt_it_read(database: Database) -> None:
    store = SqlIntentStore(database)
    clock = WallClock()
    book = IntentBook(store, rpc=HttpSolanaRpc("http://127.0.0.1:9"), wall_clock=clock)

    async def first(number: int, previous: Attempt | None, state: object) -> BuiltAttempt:
        return _built(b"1")

    await book.build(KEY, kind="K", request=b"r", response_type="T", differs=_same, make=first)
    await store.observe(
        KEY,
        attempt=1,
        state=IntentState.EXPIRED,
        signature="",
        error=None,
        now=clock.now,
        expire_time=clock.now + 100,
    )
    intent = await store.get(KEY)
    assert intent is not None and intent.state is IntentState.EXPIRED
    attempt = book._attempt(2, _built(b"2"), clock.now)
    assert await store.add_attempt(KEY, replaces=1, attempt=attempt, expire_time=clock.now + 100)
    # A second rebuild of attempt 1 (another replica that read it before) loses.
    late = book._attempt(2, _built(b"late"), clock.now)
    assert not await store.add_attempt(KEY, replaces=1, attempt=late, expire_time=clock.now)
    again = await store.get(KEY)
    assert again is not None
    assert [a.response for a in again.attempts] == [b"response-1", b"response-2"]
    assert again.state is IntentState.BUILT


async def test_the_relay_note_marks_the_attempt_submitted(database: Database) -> None:
    store = SqlIntentStore(database)
    book = IntentBook(store, rpc=HttpSolanaRpc("http://127.0.0.1:9"))

    async def make(number: int, previous: Attempt | None, state: object) -> BuiltAttempt:
        return _built(b"x")

    await book.build(KEY, kind="K", request=b"r", response_type="T", differs=_same, make=make)
    await book.submitted(b"message-other", "sig-other")  # not an intent's: nothing
    await book.submitted(b"message-x", "sig-x")
    intent = await store.get(KEY)
    assert intent is not None
    assert (intent.state, intent.signature) == (IntentState.SUBMITTED, "sig-x")
    assert (intent.latest.state, intent.latest.signature) == (IntentState.SUBMITTED, "sig-x")


async def test_intents_are_forgotten_after_the_retention(database: Database) -> None:
    store = SqlIntentStore(database)
    clock = WallClock()
    book = IntentBook(
        store, rpc=HttpSolanaRpc("http://127.0.0.1:9"), retention=3600.0, wall_clock=clock
    )

    async def make(number: int, previous: Attempt | None, state: object) -> BuiltAttempt:
        return _built(b"x")

    await book.build(KEY, kind="K", request=b"r", response_type="T", differs=_same, make=make)
    other = IntentKey(scope="key-2", request_id="order-7")
    clock.now += 1800
    await book.build(other, kind="K", request=b"r", response_type="T", differs=_same, make=make)
    clock.now += 1801
    assert await book.purge() == 1
    with pytest.raises(IntentNotFoundError):
        await book.get(KEY)
    assert await store.get(other) is not None
    clock.now += 3600
    assert await book.purge() == 1
    async with database.transaction("count", write=False) as conn:
        assert await conn.fetchval("SELECT count(*) FROM intent_attempts") == 0
