"""The stake management RPCs are builds for the rate limiter: they draw from the key's
and the wallet's ``builds`` buckets, not from the larger ``reads`` ones."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from agentstaking.v1 import stake_management_pb2 as sm
from agentstaking.v1 import staking_pb2
from solders.keypair import Keypair

from service.ratelimit import RpcClass, classify
from tests.api._helpers import rich_details

from .conftest import SOL, StartServer

NEW_RPCS = (
    "BuildSplitTransaction",
    "BuildMoveStakeTransaction",
    "BuildAuthorizeTransaction",
    "BuildSetLockupTransaction",
    "BuildRedelegateTransaction",
)


def test_every_new_rpc_is_in_the_service_and_of_the_builds_class() -> None:
    methods = staking_pb2.DESCRIPTOR.services_by_name["StakingService"].methods_by_name
    for name in NEW_RPCS:
        assert name in methods
        assert methods[name].input_type.file.name == "agentstaking/v1/stake_management.proto"
        assert classify(name) is RpcClass.BUILDS


def _requests(wallet: str) -> dict[str, Any]:
    stake = str(Keypair().pubkey())
    return {
        "BuildSplitTransaction": sm.BuildSplitTransactionRequest(
            wallet=wallet, stake_account=stake, amount_lamports=SOL
        ),
        "BuildMoveStakeTransaction": sm.BuildMoveStakeTransactionRequest(
            wallet=wallet,
            source_stake_account=stake,
            destination_stake_account=str(Keypair().pubkey()),
            amount_lamports=SOL,
        ),
        "BuildAuthorizeTransaction": sm.BuildAuthorizeTransactionRequest(
            wallet=wallet,
            stake_account=stake,
            new_authority=str(Keypair().pubkey()),
            authority_type=sm.STAKE_AUTHORITY_TYPE_STAKER,
        ),
        "BuildSetLockupTransaction": sm.BuildSetLockupTransactionRequest(
            wallet=wallet, stake_account=stake, lockup=sm.LockupChange(epoch=1)
        ),
        "BuildRedelegateTransaction": sm.BuildRedelegateTransactionRequest(
            wallet=wallet, stake_account=stake, vote_account=str(Keypair().pubkey())
        ),
    }


@pytest.mark.parametrize("dimension", ["api_key", "wallet"])
async def test_new_rpcs_draw_from_the_builds_buckets(
    start_server: StartServer, dimension: str
) -> None:
    # Five builds at once for the limited dimension (reads get three times as many).
    limits = (
        {"ratelimit_key_per_minute": 1, "ratelimit_key_burst": 5, "ratelimit_wallet_per_minute": 0}
        if dimension == "api_key"
        else {"ratelimit_wallet_per_minute": 1, "ratelimit_wallet_burst": 5}
    )
    running = await start_server(**limits)
    stub = running.staking()
    wallet = str(Keypair().pubkey())
    for name, request in _requests(wallet).items():
        call = getattr(stub, name)(request)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call  # the accounts do not exist: refused by the servicer, after the limiter
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, name
        assert dict(caught.value.trailing_metadata() or ())["x-ratelimit-limit"] == "5", name
    # The builds bucket is empty now: a sixth build is refused as one...
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(wallet=wallet, amount_lamports=SOL)
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = rich_details(caught.value)["ErrorInfo"]
    assert (info.metadata["rpc_class"], info.metadata["dimension"]) == ("builds", dimension)
    # ...while reads, which have buckets of their own, still pass.
    await stub.ListStakeAccounts(staking_pb2.ListStakeAccountsRequest(wallet=wallet))
