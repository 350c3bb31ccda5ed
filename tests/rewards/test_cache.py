"""The rewards cache: memory in front of the database, on SQLite and PostgreSQL.

A restarted server (or another replica on the same database) serves completed epochs
without asking the chain: counted at a proxy in front of the localnet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from agentstaking.v1 import rewards_pb2
from solders.keypair import Keypair

from service.chain import RewardsCache, SqlRewardsStore
from service.core.yields import InflationReward
from service.localnet import LocalnetServer
from service.store import StoreUnavailableError, open_database
from tests._proxy import RpcProxy
from tests.conftest import Backend
from tests.lifecycle.conftest import open_lifecycle

from .conftest import Staked

CLUSTER = "4uhcVJyU9pJkvQyS88uRDiswHXSCkY3zQawwpjk2NsNY"


def _reward(epoch: int, amount: int) -> InflationReward:
    return InflationReward(
        epoch=epoch, amount=amount, post_balance=10**10 + amount, effective_slot=9, commission=7
    )


async def test_a_restart_serves_cached_epochs_without_asking_the_chain(
    rewards_localnet: LocalnetServer, staked: Staked, backend: Backend, tmp_path: Path
) -> None:
    accounts = sorted(staked.accounts.values())
    start, end = staked.delegated_in, staked.delegated_in + 2
    request = rewards_pb2.GetRewardsRequest(
        stake_accounts=accounts, start_epoch=start, end_epoch=end
    )
    # One getInflationReward per epoch (3 addresses fit in one), the epoch before the
    # range included (it tells the first epoch's other credits).
    epochs = len(range(max(start - 1, 0), end + 1))
    first_proxy, second_proxy = RpcProxy(rewards_localnet.url), RpcProxy(rewards_localnet.url)
    await first_proxy.start()
    await second_proxy.start()
    try:
        async with open_lifecycle(
            rewards_localnet,
            tmp_path / "first",
            database_url=backend.url,
            rpc_urls=[first_proxy.url],
        ) as lc:
            first = await lc.staking.GetRewards(request)
            assert first.total_amount_lamports > 0
            assert first_proxy.methods["getInflationReward"] == epochs
            # Asked again: from memory.
            assert await lc.staking.GetRewards(request) == first
            assert first_proxy.methods["getInflationReward"] == epochs
            assert lc.server.rewards is not None
            stats = lc.server.rewards.cache_stats()
            assert stats.chain_reads == epochs * len(accounts)
            assert stats.memory_hits == epochs * len(accounts)
        rows = (await backend.rows())["inflation_rewards"]
        assert len(rows) == epochs * len(accounts)

        async with open_lifecycle(
            rewards_localnet,
            tmp_path / "second",
            database_url=backend.url,
            rpc_urls=[second_proxy.url],
        ) as lc:
            assert await lc.staking.GetRewards(request) == first
            assert second_proxy.methods.get("getInflationReward", 0) == 0
            assert lc.server.rewards is not None
            assert lc.server.rewards.cache_stats().store_hits == epochs * len(accounts)
            # An account it has not seen: only that one is asked for, per epoch.
            other = str(Keypair().pubkey())
            wider = rewards_pb2.GetRewardsRequest(
                stake_accounts=[*accounts, other], start_epoch=start, end_epoch=end
            )
            answer = await lc.staking.GetRewards(wider)
            assert answer.total_amount_lamports == first.total_amount_lamports
            assert second_proxy.methods["getInflationReward"] == epochs
    finally:
        await first_proxy.stop()
        await second_proxy.stop()


async def test_rows_round_trip_and_never_change(backend: Backend) -> None:
    database = await open_database(backend.url)
    try:
        table = SqlRewardsStore(database)
        many = [str(Keypair().pubkey()) for _ in range(1_200)]  # several SQLite chunks
        paid = {a: _reward(7, i + 1) for i, a in enumerate(many[:600])}
        unpaid: dict[str, InflationReward | None] = {a: None for a in many[600:]}
        await table.save(CLUSTER, 7, {**paid, **unpaid})
        loaded = await table.load(CLUSTER, 7, [*many, "never-read"])
        assert loaded == {**paid, **unpaid}  # None kept: "no reward", not "unknown"
        # A second writer of the same rows (another replica) changes nothing.
        await table.save(CLUSTER, 7, {many[0]: _reward(7, 999), many[700]: _reward(7, 5)})
        again = await table.load(CLUSTER, 7, [many[0], many[700]])
        assert again == {many[0]: paid[many[0]], many[700]: None}
        # Another epoch, another cluster: nothing.
        assert await table.load(CLUSTER, 8, many[:3]) == {}
        assert await table.load("another cluster", 7, many[:3]) == {}
    finally:
        await database.close()


class _FailingStore:
    """A database that is down."""

    async def load(
        self, cluster: str, epoch: int, addresses: Sequence[str]
    ) -> dict[str, InflationReward | None]:
        raise StoreUnavailableError("rewards.load")

    async def save(
        self, cluster: str, epoch: int, rewards: Mapping[str, InflationReward | None]
    ) -> None:
        raise StoreUnavailableError("rewards.save")


async def test_memory_is_bounded_and_a_failing_database_is_only_a_miss() -> None:
    cache = RewardsCache(_FailingStore(), max_entries=2)
    assert await cache.get(CLUSTER, 1, ["a", "b"]) == {}
    await cache.put(CLUSTER, 1, {"a": _reward(1, 1), "b": None, "c": _reward(1, 3)})
    # The oldest was dropped; the failures were counted, not raised.
    assert await cache.get(CLUSTER, 1, ["a", "b", "c"]) == {"b": None, "c": _reward(1, 3)}
    stats = cache.stats()
    assert (stats.memory_hits, stats.chain_reads, stats.store_failures) == (2, 3, 3)
