"""`fee_recipient` is empty wherever no service fee is charged, as the protos say
(FeeBreakdown: "Empty when no fee is charged"; FeePolicy: "Empty when the fee is
0"): builds under a key whose policy waives the fee, builds that charge none, and the
fee policy GetNetworkInfo reports. Through the real server; the receipt (checked by
the stub's interceptor against the response) says the same."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from agentstaking.v1 import keys_pb2, staking_pb2, staking_pb2_grpc, types_pb2
from solders.keypair import Keypair

from tests._grpc_auth import keyed_channel
from tests._receipts import ReceiptCheck, published_keys

from ._helpers import send, sign
from .conftest import FEE_BPS, SOL, Service


@pytest.fixture(scope="module")
async def waived(service: Service) -> AsyncIterator[staking_pb2_grpc.StakingServiceAsyncStub]:
    """A staking key whose policy waives the service fee, created over KeyService."""
    created = await service.keys.CreateApiKey(
        keys_pb2.CreateApiKeyRequest(
            display_name="no fee",
            scopes=["staking"],
            policy=keys_pb2.KeyPolicy(service_fee_bps=0),
        )
    )
    async with keyed_channel(
        service.address, created.secret, ReceiptCheck(published_keys(service.server))
    ) as channel:
        yield staking_pb2_grpc.StakingServiceStub(channel)


def _no_fee(prepared: types_pb2.PreparedTransaction) -> None:
    fees = prepared.fees
    assert fees.service_fee_lamports == 0
    assert fees.fee_recipient == ""
    assert json.loads(prepared.receipt.payload)["fees"]["fee_recipient"] == ""


async def test_a_waived_fee_has_no_recipient(
    service: Service, waived: staking_pb2_grpc.StakingServiceAsyncStub, wallet: Keypair
) -> None:
    info = await waived.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    assert info.fee_policy.service_fee_bps == 0
    assert info.fee_policy.fee_recipient == ""
    built = await waived.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            amount_lamports=2 * SOL,
            options=types_pb2.TransactionOptions(simulate=True),
        )
    )
    prepared = built.transaction
    _no_fee(prepared)
    assert prepared.fees.service_fee_bps == 0
    fee_wallet = str(service.fee_wallet.pubkey())
    assert all(fee_wallet not in [a.address for a in i.accounts] for i in prepared.instructions)
    # The default key still pays the operator's fee, to the operator's wallet.
    charged = await service.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    assert (charged.fee_policy.service_fee_bps, charged.fee_policy.fee_recipient) == (
        FEE_BPS,
        fee_wallet,
    )


async def test_builds_that_charge_no_fee_have_no_recipient(
    service: Service, wallet: Keypair
) -> None:
    staked = await service.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(wallet=str(wallet.pubkey()), amount_lamports=SOL)
    )
    assert staked.transaction.fees.fee_recipient == str(service.fee_wallet.pubkey())
    await send(service.rpc, sign(staked.transaction, wallet))
    unstaked = await service.staking.BuildUnstakeTransaction(
        staking_pb2.BuildUnstakeTransactionRequest(
            wallet=str(wallet.pubkey()), stake_account=staked.stake_account
        )
    )
    _no_fee(unstaked.transaction)
    assert unstaked.transaction.fees.service_fee_bps == 0
