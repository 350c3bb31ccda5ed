"""The per-request stake reads: the getProgramAccounts filter finds exactly the
wallet's accounts, and ListStakeAccounts reads are reused for a bounded time."""

from __future__ import annotations

from typing import Any

from agentstaking.v1 import staking_pb2
from solders.pubkey import Pubkey

from service.chain import HttpSolanaRpc, StakeReader

from .conftest import SOL, Lifecycle


class CountingRpc:
    """The localnet's JSON-RPC, counting the calls by method."""

    def __init__(self, url: str) -> None:
        self._inner = HttpSolanaRpc(url)
        self.calls: dict[str, int] = {}

    async def call(self, method: str, params: list[Any], *, timeout: float | None = None) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        return await self._inner.call(method, params, timeout=timeout)

    async def close(self) -> None:
        await self._inner.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_wallet_reads_are_exact_and_cached_briefly(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(10)
    other = await lc.wallet(10)
    stakes = []
    for owner in (wallet, wallet, other):
        response = await lc.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(owner.pubkey()), amount_lamports=SOL
            )
        )
        await lc.execute(response.transaction, owner)
        stakes.append(response.stake_account)

    rpc = CountingRpc(lc.localnet.url)
    clock = Clock()
    reader = StakeReader(rpc, cache_seconds=3.0, clock=clock)
    try:
        reads = await reader.cached_wallet_read(wallet.pubkey())
        assert sorted(str(a.address) for a in reads.accounts) == sorted(stakes[:2])
        assert all(a.withdrawer == wallet.pubkey() for a in reads.accounts)
        assert reads.sysvars.clock.epoch == await lc.epoch()
        assert reads.balances[wallet.pubkey()] == await lc.balance(wallet.pubkey())
        assert rpc.calls == {"getProgramAccounts": 1, "getMultipleAccounts": 1}
        # Within the time bound: the same read, no RPC.
        clock.now += 2.9
        assert await reader.cached_wallet_read(wallet.pubkey()) is reads
        assert rpc.calls["getProgramAccounts"] == 1
        # Another wallet has its own entry.
        mine = await reader.cached_wallet_read(other.pubkey())
        assert [str(a.address) for a in mine.accounts] == stakes[2:]
        # Past the bound: read again.
        clock.now += 0.2
        again = await reader.cached_wallet_read(wallet.pubkey())
        assert again is not reads and rpc.calls["getProgramAccounts"] == 3
        # Builds never use the cache.
        named = await reader.read(wallet.pubkey(), named=[(Pubkey.from_string(stakes[0]), "x")])
        assert [str(a.address) for a in named.named] == stakes[:1]
        assert rpc.calls["getProgramAccounts"] == 3
    finally:
        await rpc.close()

    # Over gRPC (the lifecycle server reads on every call): positions and pages.
    first = await lc.staking.ListStakeAccounts(
        staking_pb2.ListStakeAccountsRequest(wallet=str(wallet.pubkey()), page_size=1)
    )
    assert first.total_size == 2 and len(first.stake_accounts) == 1 and first.next_page_token
    second = await lc.staking.ListStakeAccounts(
        staking_pb2.ListStakeAccountsRequest(
            wallet=str(wallet.pubkey()), page_size=1, page_token=first.next_page_token
        )
    )
    assert not second.next_page_token
    addresses = [first.stake_accounts[0].address, second.stake_accounts[0].address]
    assert addresses == sorted(stakes[:2])
    assert first.totals == second.totals
    assert first.totals.activating_lamports == 2 * SOL
    assert {a.state for a in (*first.stake_accounts, *second.stake_accounts)} == {
        staking_pb2.STAKE_ACCOUNT_STATE_ACTIVATING
    }
