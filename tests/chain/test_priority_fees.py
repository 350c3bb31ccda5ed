"""The recent prioritization fees builds are priced from: asked per set of
write-locked accounts, reused for the cache time, at most one request in flight per
set, a bounded number of sets; a node's refusal is a clear error. Through a counting
proxy in front of the session's localnet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.chain import HttpSolanaRpc, RecentPriorityFees, StakeReadError
from tests._proxy import RpcProxy

from .conftest import MakeProxies

METHOD = "getRecentPrioritizationFees"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def proxy(make_proxies: MakeProxies) -> RpcProxy:
    (proxy,) = await make_proxies(1)
    return proxy


@pytest.fixture
async def rpc(proxy: RpcProxy) -> AsyncIterator[HttpSolanaRpc]:
    client = HttpSolanaRpc(proxy.url)
    yield client
    await client.close()


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
    clock.now += 2.0  # the cache time is over
    await fees.price(mine, 50)
    assert proxy.methods[METHOD] == 3


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
    # Expired answers go too, not only the oldest over the bound.
    clock.now += 61.0
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
