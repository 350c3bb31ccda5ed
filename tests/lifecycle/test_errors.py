"""Every refusal of the lifecycle RPCs, produced for real on the localnet: the chain
state that causes it is created with transactions (and the localnet's admin methods),
and where the stake program has an opinion, it is asked too (a simulated instruction
fails with the error the service predicted)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import grpc
import pytest
from agentstaking.v1 import staking_pb2, types_pb2
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.core import (
    STAKE_ERRORS,
    stake_deactivate,
    stake_merge,
    stake_withdraw,
)
from tests.api._helpers import rich_details

from .conftest import SOL, Lifecycle

RENT = 2_282_880


async def _fails(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    return str(rich_details(error)["ErrorInfo"].reason)


def _metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return dict(rich_details(error)["ErrorInfo"].metadata)


async def _program_error(
    lc: Lifecycle, payer: Keypair, instruction: Instruction, *cosigners: Keypair
) -> str | None:
    """The stake program's own verdict on one instruction now (simulated): the name of
    its error, or None when it succeeds."""
    latest = await lc.call("getLatestBlockhash", {"commitment": "processed"})
    message = MessageV0.try_compile(
        payer.pubkey(), [instruction], [], Hash.from_string(latest["value"]["blockhash"])
    )
    tx = VersionedTransaction(message, [payer, *cosigners])
    answer = await lc.call(
        "simulateTransaction", base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}
    )
    err = answer["value"]["err"]
    if err is None:
        return None
    _, inner = err["InstructionError"]
    if isinstance(inner, dict) and "Custom" in inner:
        return STAKE_ERRORS[inner["Custom"]].name
    return str(inner)


async def _unstake(lc: Lifecycle, wallet: Keypair, stake: str, *signers: Keypair) -> None:
    response = await lc.staking.BuildUnstakeTransaction(
        staking_pb2.BuildUnstakeTransactionRequest(wallet=str(wallet.pubkey()), stake_account=stake)
    )
    await lc.execute(response.transaction, wallet, *signers)


async def test_epoch_rewards_active(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(20)
    stake = await lc.stake(wallet, 2 * SOL)

    await lc.set_epoch_rewards(True)
    try:
        # The stake program itself refuses stake instructions now.
        deactivate = stake_deactivate(
            stake_account=Pubkey.from_string(stake), staker=wallet.pubkey()
        )
        assert await _program_error(lc, wallet, deactivate) == "EpochRewardsActive"
        # Unstake, withdraw and merge read the sysvar per request: refused at once.
        for call in (
            lc.staking.BuildUnstakeTransaction(
                staking_pb2.BuildUnstakeTransactionRequest(
                    wallet=str(wallet.pubkey()), stake_account=stake
                )
            ),
            lc.staking.BuildWithdrawTransaction(
                staking_pb2.BuildWithdrawTransactionRequest(
                    wallet=str(wallet.pubkey()), withdraw_all=True
                )
            ),
            lc.staking.BuildMergeTransaction(
                staking_pb2.BuildMergeTransactionRequest(
                    wallet=str(wallet.pubkey()), destination_stake_account=stake
                )
            ),
        ):
            error = await _fails(call)
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            details = rich_details(error)
            assert details["ErrorInfo"].reason == "EPOCH_REWARDS_ACTIVE"
            # 40 partitions, one per block: the delay says when to come back.
            delay = details["RetryInfo"].retry_delay
            assert 1 <= delay.seconds + delay.nanos / 1e9 <= 40 * 0.5
        # Stake builds use the cached context: refused once it has seen the sysvar.
        for _ in range(100):
            info = await lc.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
            if info.epoch_rewards_active:
                break
            await asyncio.sleep(0.05)
        assert info.epoch_rewards_active
        error = await _fails(
            lc.staking.BuildStakeTransaction(
                staking_pb2.BuildStakeTransactionRequest(
                    wallet=str(wallet.pubkey()), amount_lamports=SOL
                )
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _reason(error) == "EPOCH_REWARDS_ACTIVE"
        assert "RetryInfo" in rich_details(error)
    finally:
        await lc.set_epoch_rewards(False)
    for _ in range(100):
        info = await lc.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
        if not info.epoch_rewards_active:
            break
        await asyncio.sleep(0.05)
    assert not info.epoch_rewards_active


async def test_lockup_in_force_names_the_custodian_and_the_end(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(20)
    custodian = Keypair()
    epoch = await lc.epoch()
    lockup = types_pb2.Lockup(epoch=epoch + 50, custodian=str(custodian.pubkey()))
    locked = await lc.stake(wallet, SOL, lockup=lockup)
    # Deactivated in its activation epoch: inactive at once, only the lockup holds it.
    await _unstake(lc, wallet, locked)
    listed = (await lc.positions(wallet)).stake_accounts[0]
    assert listed.state == staking_pb2.STAKE_ACCOUNT_STATE_INACTIVE
    assert listed.lockup_in_force and listed.withdrawable_lamports == 0
    assert listed.lockup.custodian == str(custodian.pubkey())
    for request in (
        staking_pb2.BuildWithdrawTransactionRequest(
            wallet=str(wallet.pubkey()), withdraw_all=True, stake_account=locked
        ),
        staking_pb2.BuildWithdrawTransactionRequest(wallet=str(wallet.pubkey()), amount_lamports=1),
    ):
        error = await _fails(lc.staking.BuildWithdrawTransaction(request))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _reason(error) == "LOCKUP_IN_FORCE"
        metadata = _metadata(error)
        assert metadata["custodian"] == str(custodian.pubkey())
        assert metadata["lockup_epoch"] == str(epoch + 50)
        assert str(custodian.pubkey()) in (error.details() or "")
    withdraw = stake_withdraw(
        stake_account=Pubkey.from_string(locked),
        destination=wallet.pubkey(),
        withdrawer=wallet.pubkey(),
        lamports=SOL + RENT,
    )
    assert await _program_error(lc, wallet, withdraw) == "LockupInForce"

    # When the wallet is the custodian, the lockup does not stop it.
    own = await lc.stake(
        wallet, SOL, lockup=types_pb2.Lockup(epoch=epoch + 50, custodian=str(wallet.pubkey()))
    )
    await _unstake(lc, wallet, own)
    listed = {a.address: a for a in (await lc.positions(wallet)).stake_accounts}[own]
    assert listed.lockup_in_force and listed.withdrawable_lamports == SOL + RENT
    response = await lc.staking.BuildWithdrawTransaction(
        staking_pb2.BuildWithdrawTransactionRequest(
            wallet=str(wallet.pubkey()), withdraw_all=True, stake_account=own
        )
    )
    assert list(response.transaction.required_signers) == [str(wallet.pubkey())]
    await lc.execute(response.transaction, wallet)
    assert await lc.balance(own) == 0


async def test_merge_mismatch_names_the_field(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(60)
    owner = str(wallet.pubkey())
    first, second = (await lc.validators())[:2]
    base = await lc.stake(wallet, SOL, vote=first)
    other_voter = await lc.stake(wallet, SOL, vote=second)
    authority = Keypair()
    other_staker = await lc.stake(wallet, SOL, vote=first, stake_authority=str(authority.pubkey()))
    epoch = await lc.epoch()
    locked = await lc.stake(wallet, SOL, vote=first, lockup=types_pb2.Lockup(epoch=epoch + 50))

    async def mismatch(destination: str, source: str) -> dict[str, str]:
        error = await _fails(
            lc.staking.BuildMergeTransaction(
                staking_pb2.BuildMergeTransactionRequest(
                    wallet=owner,
                    destination_stake_account=destination,
                    source_stake_accounts=[source],
                )
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = rich_details(error)
        assert details["ErrorInfo"].reason == "MERGE_MISMATCH"
        assert details["BadRequest"].field_violations[0].field == "source_stake_accounts"
        return dict(details["ErrorInfo"].metadata)

    def merge(destination: str, source: str) -> Instruction:
        return stake_merge(
            destination=Pubkey.from_string(destination),
            source=Pubkey.from_string(source),
            staker=wallet.pubkey(),
        )

    metadata = await mismatch(base, other_voter)
    assert metadata["mismatch"] == "voter" and metadata["source_voter"] == second
    assert await _program_error(lc, wallet, merge(base, other_voter)) == "MergeMismatch"
    metadata = await mismatch(base, other_staker)
    assert metadata["mismatch"] == "authorities"
    assert metadata["source_staker"] == str(authority.pubkey())
    assert await _program_error(lc, wallet, merge(base, other_staker)) == "MergeMismatch"
    metadata = await mismatch(base, locked)
    assert metadata["mismatch"] == "lockup"
    assert await _program_error(lc, wallet, merge(base, locked)) == "MergeMismatch"

    # A fully active account and a deactivating one: transient stake.
    await lc.advance_epochs(1)
    cooling = await lc.stake(wallet, SOL, vote=first)
    await lc.advance_epochs(1)
    await _unstake(lc, wallet, cooling)
    metadata = await mismatch(base, cooling)
    assert metadata["mismatch"] == "transient_state" and metadata["transient"] == "deactivating"
    assert await _program_error(lc, wallet, merge(base, cooling)) == "MergeTransientStake"
    # Fully active into activating: the states do not combine.
    fresh = await lc.stake(wallet, SOL, vote=first)
    metadata = await mismatch(base, fresh)
    assert metadata["mismatch"] == "state"
    assert await _program_error(lc, wallet, merge(base, fresh)) == "MergeMismatch"
    # With no sources named, nothing of the wallet fits the fully active destination.
    error = await _fails(
        lc.staking.BuildMergeTransaction(
            staking_pb2.BuildMergeTransactionRequest(wallet=owner, destination_stake_account=base)
        )
    )
    assert _reason(error) == "NO_MERGEABLE_STAKE_ACCOUNTS"


async def test_unstake_amounts_that_cannot_be_split_say_what_would_work(
    lifecycle: Lifecycle,
) -> None:
    lc = lifecycle
    wallet = await lc.wallet(20)
    owner = str(wallet.pubkey())
    big = await lc.stake(wallet, 3 * SOL)
    await lc.stake(wallet, 5 * SOL // 2)

    async def refused(amount: int, stake_account: str = "") -> grpc.aio.AioRpcError:
        return await _fails(
            lc.staking.BuildUnstakeTransaction(
                staking_pb2.BuildUnstakeTransactionRequest(
                    wallet=owner, amount_lamports=amount, stake_account=stake_account
                )
            )
        )

    # 4.8 SOL: whole accounts give 2.5, 3 or 5.5; one split more gives 1..2, 1..1.5,
    # 3.5..4.5 or 4..4.5. The nearest amounts that work are 4.5 and 5.5 SOL.
    error = await refused(48 * SOL // 10)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(error) == "BELOW_MINIMUM_DELEGATION"
    metadata = _metadata(error)
    assert metadata["nearest_lower_lamports"] == str(45 * SOL // 10)
    assert metadata["nearest_higher_lamports"] == str(55 * SOL // 10)
    assert metadata["minimum_lamports"] == str(SOL)
    assert rich_details(error)["BadRequest"].field_violations[0].field == "amount_lamports"
    # Below the minimum delegation: no split, and no account that small.
    metadata = _metadata(await refused(SOL // 2))
    assert "nearest_lower_lamports" not in metadata
    assert metadata["nearest_higher_lamports"] == str(SOL)
    # A named account: splitting 2.5 off 3 SOL would leave 0.5.
    error = await refused(5 * SOL // 2, big)
    assert _reason(error) == "BELOW_MINIMUM_DELEGATION"
    assert _metadata(error)["nearest_lower_lamports"] == str(2 * SOL)
    assert _metadata(error)["nearest_higher_lamports"] == str(3 * SOL)
    # More than the wallet has.
    error = await refused(6 * SOL)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(error) == "INSUFFICIENT_STAKE"
    assert _metadata(error)["available_lamports"] == str(11 * SOL // 2)
    # The amounts that were suggested do work.
    for amount in (45 * SOL // 10, 55 * SOL // 10):
        response = await lc.staking.BuildUnstakeTransaction(
            staking_pb2.BuildUnstakeTransactionRequest(wallet=owner, amount_lamports=amount)
        )
        assert response.deactivate_lamports == amount


async def test_foreign_missing_and_settled_accounts(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(20)
    owner = str(wallet.pubkey())
    # A genesis validator's own stake account: its withdraw authority is not the wallet.
    foreign = str(lc.localnet.chain.validators[0].self_stake_account)
    missing = str(Keypair().pubkey())
    for field, call in (
        (
            "stake_account",
            lc.staking.BuildUnstakeTransaction(
                staking_pb2.BuildUnstakeTransactionRequest(wallet=owner, stake_account=foreign)
            ),
        ),
        (
            "destination_stake_account",
            lc.staking.BuildMergeTransaction(
                staking_pb2.BuildMergeTransactionRequest(
                    wallet=owner, destination_stake_account=foreign
                )
            ),
        ),
    ):
        error = await _fails(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _reason(error) == "NOT_WITHDRAW_AUTHORITY"
        assert rich_details(error)["BadRequest"].field_violations[0].field == field
    error = await _fails(
        lc.staking.BuildWithdrawTransaction(
            staking_pb2.BuildWithdrawTransactionRequest(
                wallet=owner, stake_account=missing, withdraw_all=True
            )
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert _reason(error) == "STAKE_ACCOUNT_NOT_FOUND"

    stake = await lc.stake(wallet, 2 * SOL)
    # Nothing withdrawable while the stake is delegated.
    error = await _fails(
        lc.staking.BuildWithdrawTransaction(
            staking_pb2.BuildWithdrawTransactionRequest(wallet=owner, amount_lamports=SOL)
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(error) == "INSUFFICIENT_FUNDS"
    assert _metadata(error)["withdrawable_lamports"] == "0"
    await _unstake(lc, wallet, stake)
    error = await _fails(
        lc.staking.BuildUnstakeTransaction(
            staking_pb2.BuildUnstakeTransactionRequest(wallet=owner, stake_account=stake)
        )
    )
    assert _reason(error) == "STAKE_ALREADY_DEACTIVATED"
    deactivate = stake_deactivate(stake_account=Pubkey.from_string(stake), staker=wallet.pubkey())
    assert await _program_error(lc, wallet, deactivate) == "AlreadyDeactivated"
    # Deactivated in its activation epoch: all of it can be withdrawn, but a partial
    # withdrawal must leave the rent-exempt reserve.
    error = await _fails(
        lc.staking.BuildWithdrawTransaction(
            staking_pb2.BuildWithdrawTransactionRequest(
                wallet=owner, stake_account=stake, amount_lamports=2 * SOL + 1
            )
        )
    )
    assert _reason(error) == "INSUFFICIENT_FUNDS"
    assert _metadata(error)["max_partial_lamports"] == str(2 * SOL)
    assert _metadata(error)["close_lamports"] == str(2 * SOL + RENT)


async def test_another_stake_authority_signs_too(lifecycle: Lifecycle) -> None:
    """The wallet is never assumed to sign for a stake authority it is not."""
    lc = lifecycle
    wallet = await lc.wallet(20)
    authority = Keypair()
    await lc.call("requestAirdrop", str(authority.pubkey()), SOL)
    stake = await lc.stake(wallet, 3 * SOL, stake_authority=str(authority.pubkey()))
    # Chosen automatically, the account is not the wallet's to deactivate.
    error = await _fails(
        lc.staking.BuildUnstakeTransaction(
            staking_pb2.BuildUnstakeTransactionRequest(
                wallet=str(wallet.pubkey()), amount_lamports=SOL
            )
        )
    )
    assert _reason(error) == "INSUFFICIENT_STAKE"
    assert _metadata(error)["other_stake_authority_lamports"] == str(3 * SOL)
    # Named, its authority joins the signers; both sign and it lands.
    response = await lc.staking.BuildUnstakeTransaction(
        staking_pb2.BuildUnstakeTransactionRequest(
            wallet=str(wallet.pubkey()), stake_account=stake, amount_lamports=SOL
        )
    )
    assert list(response.transaction.required_signers) == [
        str(wallet.pubkey()),
        str(authority.pubkey()),
    ]
    await lc.execute(response.transaction, wallet, authority)
    (split,) = response.split_stake_accounts
    listed = {a.address: a for a in (await lc.positions(wallet)).stake_accounts}
    assert listed[split.stake_account].staker == str(authority.pubkey())
    assert listed[split.stake_account].deactivation_epoch == response.deactivation_epoch
