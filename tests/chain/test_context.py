"""The cached chain context on the session localnet: what it hands out, and when it refreshes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from solders.keypair import Keypair

from service.chain import ChainContext, ChainUnavailable
from service.config import Settings
from service.localnet import LocalnetConfig, LocalnetServer
from tests._proxy import RpcProxy

from .conftest import MakeRpc, eventually

MIN_REMAINING_BLOCKS = 60


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clocked(
    localnet: LocalnetServer, make_rpc: MakeRpc
) -> AsyncIterator[tuple[ChainContext, Clock]]:
    """A started context on a clock of the test's, whose next timed refresh is an hour
    away: only its own judgement of the blockhash's age makes it refresh sooner."""
    rpc = await make_rpc([localnet.url])
    clock = Clock()
    minimum = Settings.model_fields["blockhash_min_remaining_blocks"].default
    assert minimum == MIN_REMAINING_BLOCKS
    context = ChainContext(rpc, blockhash_refresh=3600.0, min_remaining_blocks=minimum, clock=clock)
    await context.start(wait=10.0)
    yield context, clock
    await context.stop()


async def test_a_blockhash_with_fewer_than_60_blocks_left_is_refreshed_not_handed_out(
    clocked: tuple[ChainContext, Clock],
) -> None:
    context, clock = clocked
    first = context.snapshot()
    left = first.remaining_blocks(clock.now)
    assert left > MIN_REMAINING_BLOCKS

    # Time passes (estimated in slots) until exactly 60 blocks are left: still handed out.
    clock.now += (left - MIN_REMAINING_BLOCKS + 0.5) * first.slot_seconds
    assert first.remaining_blocks(clock.now) == MIN_REMAINING_BLOCKS
    assert context.snapshot().blockhash == first.blockhash

    # One slot later 59 are left: too few to sign and submit in, so it is refused...
    clock.now += first.slot_seconds
    assert first.remaining_blocks(clock.now) == MIN_REMAINING_BLOCKS - 1
    with pytest.raises(ChainUnavailable, match="too old to hand out"):
        context.snapshot()

    # ...and refreshed at once, not at the next timed refresh.
    def refreshed() -> bool:
        try:
            return context.snapshot().fetched_at == clock.now
        except ChainUnavailable:
            return False

    await eventually(refreshed, what="a refresh of the stale blockhash")
    fresh = context.snapshot()
    assert fresh.remaining_blocks(clock.now) > MIN_REMAINING_BLOCKS


async def test_a_newer_blockhash_is_fetched_at_once(clocked: tuple[ChainContext, Clock]) -> None:
    # The session localnet makes a slot, and a blockhash, every 100 ms; the context's
    # own refresh is an hour away.
    context, _ = clocked
    first = context.snapshot()
    newer = await context.newer_blockhash(than=first.blockhash)
    assert newer.blockhash != first.blockhash
    assert context.snapshot().blockhash == newer.blockhash


async def test_no_newer_blockhash_within_the_rpc_timeout_is_unavailable(
    make_rpc: MakeRpc,
) -> None:
    # Frozen wall time: a slot, and a blockhash, only when a transaction lands.
    localnet = LocalnetServer(LocalnetConfig(slot_duration=0))
    await localnet.start()
    rpc = await make_rpc([localnet.url])
    context = ChainContext(rpc, blockhash_refresh=3600.0, rpc_timeout=2.0)
    try:
        await context.start(wait=10.0)
        first = context.snapshot()
        with pytest.raises(ChainUnavailable, match="no blockhash newer than"):
            await context.newer_blockhash(than=first.blockhash)
        await rpc.call("requestAirdrop", [str(Keypair().pubkey()), 1_000_000_000])
        newer = await context.newer_blockhash(than=first.blockhash)
        assert newer.blockhash != first.blockhash
    finally:
        await context.stop()
        await localnet.stop()


@pytest.fixture
async def proxied(
    localnet: LocalnetServer, make_rpc: MakeRpc
) -> AsyncIterator[tuple[ChainContext, RpcProxy, Clock]]:
    """A started context on the session localnet through a fault proxy, on a clock of
    the test's; its next timed refresh is an hour away."""
    proxy = RpcProxy(localnet.url)
    await proxy.start()
    clock = Clock()
    context = ChainContext(
        await make_rpc([proxy.url]), blockhash_refresh=3600.0, rpc_timeout=5.0, clock=clock
    )
    try:
        await context.start(wait=10.0)
        yield context, proxy, clock
    finally:
        await context.stop()
        await proxy.stop()


async def test_a_refused_read_while_waiting_for_a_newer_blockhash_is_unavailable(
    proxied: tuple[ChainContext, RpcProxy, Clock],
) -> None:
    context, proxy, _ = proxied
    first = context.snapshot()
    proxy.faults.method_errors["getLatestBlockhash"] = -32602  # the node refuses it
    with pytest.raises(ChainUnavailable, match="-32602"):
        await context.newer_blockhash(than=first.blockhash)


async def test_a_refresh_that_ends_late_keeps_the_newer_snapshot(
    proxied: tuple[ChainContext, RpcProxy, Clock],
) -> None:
    context, proxy, clock = proxied
    # A refresh begun first, whose blockhash read is slow...
    proxy.faults.delay_methods["getLatestBlockhash"] = 1.0
    asked = proxy.methods.get("getLatestBlockhash", 0)
    clock.now += 1
    slow = asyncio.create_task(context.refresh())
    await eventually(
        lambda: proxy.methods.get("getLatestBlockhash", 0) > asked, what="the slow read"
    )
    # ...and one begun later, which ends first.
    proxy.faults.delay_methods.clear()
    clock.now += 1
    await context.refresh()
    newer = context.snapshot()
    assert newer.fetched_at == clock.now
    await slow
    assert context.snapshot() == newer
