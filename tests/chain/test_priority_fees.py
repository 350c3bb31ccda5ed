"""The recent prioritization fees builds are priced from: asked per set of
write-locked accounts, reused for the cache time and then, for as long again, while
one request refreshes them in the background; at most one request in flight per
set, a bounded number of sets; a node's refusal is a clear error. Through a counting
proxy in front of a localnet of this module's own: the prices of its blocks come from
no other test's transactions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.chain import HttpSolanaRpc, RecentPriorityFees, StakeReadError
from service.localnet import LocalnetConfig, LocalnetServer
from tests._proxy import RpcProxy
from tests._wait import until

METHOD = "getRecentPrioritizationFees"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
async def localnet() -> AsyncIterator[LocalnetServer]:
    """Unpriced blocks only: a session localnet also carries the priced transactions
    of other tests (a block whose cheapest one paid 1,000 µ-lamports moves the high
    percentiles these tests expect at 0)."""
    server = LocalnetServer(LocalnetConfig(slot_duration=0.1, slots_per_epoch=432_000))
    await server.start()
    yield server
    await server.stop()


def _accounts(count: int = 2) -> list[Pubkey]:
    return [Keypair().pubkey() for _ in range(count)]


async def test_one_request_per_set_of_accounts_within_the_cache_time(
    proxy: RpcProxy, rpc: HttpSolanaRpc
) -> None:
    clock = Clock()
    fees = RecentPriorityFees(rpc, cache_seconds=2.0, clock=clock)
    mine, other = _accounts(), _accounts()
    assert await fees.price(mine, 50) == 0  # nobody wrote these accounts
    await fees.price(list(reversed(mine)), 95)  # the same set, another level
    assert proxy.methods[METHOD] == 1
    # Concurrent builds with accounts not asked about yet share one request.
    await asyncio.gather(*(fees.price(other, 75) for _ in range(20)))
    assert proxy.methods[METHOD] == 2
    clock.now += 4.0  # twice the cache time: the answer is no longer used
    await fees.price(mine, 50)
    assert proxy.methods[METHOD] == 3


async def _at_once(fees: RecentPriorityFees, accounts: list[Pubkey], *levels: int) -> list[int]:
    """Prices that come without waiting for anything (not for the node)."""
    builds = [asyncio.ensure_future(fees.price(accounts, level)) for level in levels]
    await asyncio.sleep(0)  # one step of each: enough unless it waits
    assert all(build.done() for build in builds)
    return [build.result() for build in builds]


async def _answered_2_5_s_ago(
    rpc: HttpSolanaRpc,
) -> tuple[Clock, RecentPriorityFees, list[Pubkey]]:
    """Fees kept 2 s, with an answer for some accounts 2.5 s old: past the cache time,
    within twice it."""
    clock = Clock()
    fees = RecentPriorityFees(rpc, cache_seconds=2.0, clock=clock)
    accounts = _accounts()
    assert await fees.price(accounts, 50) == 0
    clock.now += 2.5
    return clock, fees, accounts


async def test_an_answer_past_its_cache_time_is_used_while_it_is_refreshed(
    proxy: RpcProxy, rpc: HttpSolanaRpc
) -> None:
    _, fees, mine = await _answered_2_5_s_ago(rpc)
    assert await _at_once(fees, mine, 50, 75, 95) == [0, 0, 0]
    # One refresh for all of them, in the background.
    await until(lambda: proxy.methods[METHOD] == 2, what="the refresh")
    assert await fees.price(mine, 50) == 0
    assert proxy.methods[METHOD] == 2


async def test_a_failed_refresh_leaves_the_answer_in_use_until_twice_the_cache_time(
    proxy: RpcProxy, rpc: HttpSolanaRpc
) -> None:
    clock, fees, mine = await _answered_2_5_s_ago(rpc)
    proxy.faults.method_errors[METHOD] = -32601
    assert await _at_once(fees, mine, 50) == [0]
    await until(lambda: proxy.methods[METHOD] == 2, what="the refresh")
    assert await _at_once(fees, mine, 50) == [0]  # the refresh failed or is failing
    clock.now += 1.6  # 4.1 s after the answer: no longer used, the build waits
    with pytest.raises(StakeReadError):
        await fees.price(mine, 50)


async def test_without_a_cache_time_every_build_asks(proxy: RpcProxy, rpc: HttpSolanaRpc) -> None:
    fees = RecentPriorityFees(rpc, cache_seconds=0)
    accounts = _accounts()
    for _ in range(3):
        await fees.price(accounts, 50)
    assert proxy.methods[METHOD] == 3 and len(fees) == 0


async def test_the_sets_kept_are_bounded(proxy: RpcProxy, rpc: HttpSolanaRpc) -> None:
    clock = Clock()
    fees = RecentPriorityFees(rpc, cache_seconds=60.0, max_entries=3, clock=clock)
    sets = [_accounts() for _ in range(5)]
    for accounts in sets:
        await fees.price(accounts, 50)
    assert len(fees) == 3
    await fees.price(sets[-1], 50)  # kept
    await fees.price(sets[0], 50)  # dropped first: asked again
    assert proxy.methods[METHOD] == 6
    # Answers twice the cache time old go too, not only the oldest over the bound.
    clock.now += 121.0
    await fees.price(_accounts(), 50)
    assert len(fees) == 1


async def test_a_node_that_refuses_the_read_is_a_clear_error(
    proxy: RpcProxy, rpc: HttpSolanaRpc
) -> None:
    proxy.faults.method_errors[METHOD] = -32601
    fees = RecentPriorityFees(rpc)
    with pytest.raises(StakeReadError) as caught:
        await fees.price(_accounts(), 50)
    error = caught.value
    assert error.reason == "SOLANA_RPC_ERROR"
    assert error.metadata["method"] == METHOD
    assert "compute_unit_price_micro_lamports" in error.hint
