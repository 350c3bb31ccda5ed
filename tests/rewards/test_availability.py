"""When the chain cannot answer for an epoch yet, or any more.

A cluster of its own, with frozen wall time so that only the test moves it: the
first epoch (nothing paid yet), the minute after a boundary (paid, not finalized:
pending), then final; and a node that pruned old epochs or refuses the method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from agentstaking.v1 import rewards_pb2

from service.localnet import LocalnetConfig, LocalnetServer
from tests._proxy import RpcProxy
from tests.api._helpers import rich_details
from tests.lifecycle.conftest import Lifecycle, open_lifecycle

SLOTS_PER_EPOCH = 1_024


@pytest.fixture(scope="module")
async def frozen() -> AsyncIterator[LocalnetServer]:
    server = LocalnetServer(LocalnetConfig(slot_duration=0, slots_per_epoch=SLOTS_PER_EPOCH))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def proxy(frozen: LocalnetServer) -> AsyncIterator[RpcProxy]:
    proxy = RpcProxy(frozen.url)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture(scope="module")
async def lc(
    frozen: LocalnetServer, proxy: RpcProxy, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Lifecycle]:
    async with open_lifecycle(
        frozen, tmp_path_factory.mktemp("availability"), rpc_urls=[proxy.url]
    ) as running:
        yield running


async def _fails(lc: Lifecycle, request: rewards_pb2.GetRewardsRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.GetRewards(request)
    return caught.value


async def test_pending_until_final_then_kept(lc: Lifecycle, proxy: RpcProxy) -> None:
    genesis_stake = str(lc.localnet.chain.validators[0].self_stake_account)
    request = rewards_pb2.GetRewardsRequest(stake_accounts=[genesis_stake])
    assert await lc.epoch() == 0
    error = await _fails(lc, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_details(error)["ErrorInfo"].reason == "NO_COMPLETED_EPOCH"

    # Past the boundary and its distribution block, not yet 32 blocks deep.
    slot = (await lc.call("getEpochInfo", {"commitment": "processed"}))["absoluteSlot"]
    await lc.call("localnet_advanceSlots", SLOTS_PER_EPOCH + 1 - slot)
    await lc.service_sees(1)
    pending = await lc.staking.GetRewards(request)
    assert list(pending.pending_epochs) == [0] and not pending.rewards
    assert (pending.start_epoch, pending.end_epoch) == (0, 0)
    assert pending.accounts[0].unrewarded_epochs == []  # not known yet, so not "none"
    asked = proxy.methods["getInflationReward"]
    # Pending answers are not kept: asked again next time.
    await lc.staking.GetRewards(request)
    assert proxy.methods["getInflationReward"] == asked + 1

    await lc.call("localnet_advanceSlots", 40)
    final = await lc.staking.GetRewards(request)
    assert not final.pending_epochs
    (reward,) = final.rewards
    assert reward.epoch == 0 and reward.effective_slot == SLOTS_PER_EPOCH + 1
    asked = proxy.methods["getInflationReward"]
    assert await lc.staking.GetRewards(request) == final
    assert proxy.methods["getInflationReward"] == asked  # final: kept


async def test_a_node_without_the_epoch_or_refusing_the_method(
    lc: Lifecycle, proxy: RpcProxy
) -> None:
    await lc.advance_epochs(2)
    fresh = str(lc.localnet.chain.validators[1].self_stake_account)
    request = rewards_pb2.GetRewardsRequest(stake_accounts=[fresh])
    try:
        # Pruned history (BlockCleanedUp): the call says which epoch and why.
        proxy.faults.method_errors["getInflationReward"] = -32001
        error = await _fails(lc, request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = rich_details(error)["ErrorInfo"]
        assert info.reason == "REWARDS_UNAVAILABLE" and info.metadata["rpc_code"] == "-32001"
        assert "epoch" in info.metadata and info.metadata["hint"]
        # A node refusing the method: unavailable, retry later.
        proxy.faults.method_errors["getInflationReward"] = -32601
        error = await _fails(lc, request)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        details = rich_details(error)
        assert details["ErrorInfo"].reason == "SOLANA_RPC_ERROR"
        assert "RetryInfo" in details
    finally:
        proxy.faults.method_errors.clear()
    assert (await lc.staking.GetRewards(request)).total_amount_lamports > 0
