"""Split, move, authorize, set-lockup and redelegate over gRPC: every transaction built
by a real server, signed by the test wallet (and the co-signers it lists), executed on
the localnet, with the balances the simulation receipt promised checked to the
lamport, and the states read back through ListStakeAccounts across epochs."""

from __future__ import annotations

import time

import grpc
import pytest
from agentstaking.v1 import stake_management_pb2 as sm
from agentstaking.v1 import staking_pb2, types_pb2
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.core import system_transfer
from service.core.programs import STAKE_PROGRAM
from tests.api._helpers import attached, confirm, refused_once_landed, rich_details

from .conftest import SOL, Lifecycle

RENT = 2_282_880
SIMULATE = types_pb2.TransactionOptions(simulate=True)
ACTIVATING = staking_pb2.STAKE_ACCOUNT_STATE_ACTIVATING
ACTIVE = staking_pb2.STAKE_ACCOUNT_STATE_ACTIVE
DEACTIVATING = staking_pb2.STAKE_ACCOUNT_STATE_DEACTIVATING
INACTIVE = staking_pb2.STAKE_ACCOUNT_STATE_INACTIVE
INITIALIZED = staking_pb2.STAKE_ACCOUNT_STATE_INITIALIZED


async def _positions(lc: Lifecycle, owner: Keypair | Pubkey) -> dict[str, staking_pb2.StakeAccount]:
    return {a.address: a for a in (await lc.positions(owner)).stake_accounts}


async def _transfer(lc: Lifecycle, wallet: Keypair, to: str, lamports: int) -> None:
    latest = await lc.call("getLatestBlockhash", {"commitment": "processed"})
    message = MessageV0.try_compile(
        wallet.pubkey(),
        [
            system_transfer(
                source=wallet.pubkey(), destination=Pubkey.from_string(to), lamports=lamports
            )
        ],
        [],
        Hash.from_string(latest["value"]["blockhash"]),
    )
    tx = VersionedTransaction(message, [wallet])
    await confirm(lc.rpc, (await lc.rpc.send_raw_transaction(bytes(tx))).value)


async def test_split_move_and_redelegate_across_epochs(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(100)
    owner = str(wallet.pubkey())
    start = await lc.epoch()
    await lc.service_sees(start)
    first, second, *_ = await lc.validators()
    a = await lc.stake(wallet, 6 * SOL, vote=first)

    # --- split 2 SOL off A while it warms up: both parts warm up -----------------------
    split = await lc.staking.BuildSplitTransaction(
        sm.BuildSplitTransactionRequest(
            wallet=owner,
            stake_account=a,
            amount_lamports=2 * SOL,
            request_id="split-a",
            options=SIMULATE,
        )
    )
    b = split.new_stake_account
    assert (split.split_lamports, split.stake_lamports, split.remaining_stake_lamports) == (
        2 * SOL,
        2 * SOL,
        4 * SOL,
    )
    assert split.vote_account == first and list(split.transaction.required_signers) == [owner]
    assert split.transaction.fees.rent_exempt_reserve_lamports == RENT
    assert split.transaction.fees.service_fee_lamports == 0
    await lc.execute_as_promised(split.transaction, wallet)
    assert await lc.balance(b) == split.new_stake_account_balance_lamports == RENT + 2 * SOL
    assert await lc.balance(a) == split.remaining_balance_lamports == RENT + 4 * SOL
    listed = await _positions(lc, wallet)
    assert (listed[a].state, listed[a].activating_lamports) == (ACTIVATING, 4 * SOL)
    assert (listed[b].state, listed[b].activating_lamports) == (ACTIVATING, 2 * SOL)
    assert listed[b].voter == first and listed[b].activation_epoch == start

    # The same request_id is the same intent: once its split has landed (confirmed), a
    # retry (even without the simulation) is refused with the landed signature and the
    # original response; until then it gets the same transaction again.
    retry = sm.BuildSplitTransactionRequest(
        wallet=owner, stake_account=a, amount_lamports=2 * SOL, request_id="split-a"
    )
    refusal = await refused_once_landed(lambda: lc.staking.BuildSplitTransaction(retry))
    assert refusal.code() == grpc.StatusCode.ALREADY_EXISTS
    info = rich_details(refusal)["ErrorInfo"]
    assert info.reason == "INTENT_ALREADY_LANDED" and info.metadata["request_id"] == "split-a"
    original = attached(refusal, sm.BuildSplitTransactionResponse)
    assert original.new_stake_account == b
    assert original.transaction.message == split.transaction.message
    assert len(info.metadata["signature"]) >= 86

    # --- epoch E+1: both active; move 1 SOL of stake from A to B -----------------------
    await lc.advance_epochs(1)
    move = await lc.staking.BuildMoveStakeTransaction(
        sm.BuildMoveStakeTransactionRequest(
            wallet=owner,
            source_stake_account=a,
            destination_stake_account=b,
            amount_lamports=SOL,
            options=SIMULATE,
        )
    )
    assert move.move_type == sm.MOVE_TYPE_STAKE and move.vote_account == first
    assert (move.source_stake_lamports, move.destination_stake_lamports) == (3 * SOL, 3 * SOL)
    assert [i.type for i in move.transaction.instructions][-1] == "MoveStake"
    await lc.execute_as_promised(move.transaction, wallet)
    listed = await _positions(lc, wallet)
    assert (listed[a].active_lamports, listed[b].active_lamports) == (3 * SOL, 3 * SOL)

    # --- free lamports sent to A move to B with MoveLamports ---------------------------
    await _transfer(lc, wallet, a, SOL // 2)
    lamports = await lc.staking.BuildMoveStakeTransaction(
        sm.BuildMoveStakeTransactionRequest(
            wallet=owner,
            source_stake_account=a,
            destination_stake_account=b,
            amount_lamports=SOL // 2,
            move_type=sm.MOVE_TYPE_LAMPORTS,
            options=SIMULATE,
        )
    )
    assert lamports.vote_account == "" and lamports.destination_stake_lamports == 3 * SOL
    await lc.execute_as_promised(lamports.transaction, wallet)
    listed = await _positions(lc, wallet)
    assert listed[b].withdrawable_lamports == SOL // 2 and listed[a].inactive_lamports == 0

    # --- redelegate B to the second validator: the wallet funds a new account ----------
    epoch = start + 1
    redelegate = await lc.staking.BuildRedelegateTransaction(
        sm.BuildRedelegateTransactionRequest(
            wallet=owner, stake_account=b, vote_account=second, options=SIMULATE
        )
    )
    assert (redelegate.step, redelegate.strategy, redelegate.transactions) == (
        sm.REDELEGATE_STEP_NEW_ACCOUNT,
        sm.REDELEGATE_STRATEGY_NEW_ACCOUNT,
        1,
    )
    assert redelegate.previous_vote_account == first and redelegate.stake_lamports == 3 * SOL
    assert (redelegate.epoch, redelegate.expected_active_epoch) == (epoch, epoch + 1)
    assert redelegate.expected_active_time.seconds >= int(time.time()) - 1
    assert redelegate.time_until_active.ToNanoseconds() > 0
    follow = redelegate.follow_up
    assert (follow.method, follow.stake_account, follow.epoch) == (
        "BuildWithdrawTransaction",
        b,
        epoch + 1,
    )
    assert follow.time.seconds >= int(time.time()) - 1 and b in follow.description
    fees = redelegate.transaction.fees
    assert fees.total_debit_lamports == (
        3 * SOL + RENT + fees.network_fee_lamports + fees.priority_fee_lamports
    )
    assert fees.service_fee_lamports == 0 and fees.rent_exempt_reserve_lamports == RENT
    await lc.execute_as_promised(redelegate.transaction, wallet)
    c = redelegate.new_stake_account
    listed = await _positions(lc, wallet)
    assert (listed[b].state, listed[c].state) == (DEACTIVATING, ACTIVATING)
    assert (listed[c].voter, listed[c].activating_lamports) == (second, 3 * SOL)

    # --- redelegate A the slow way: deactivate now, delegate after the cooldown --------
    request = sm.BuildRedelegateTransactionRequest(
        wallet=owner,
        stake_account=a,
        vote_account=second,
        strategy=sm.REDELEGATE_STRATEGY_REUSE_ACCOUNT,
        options=SIMULATE,
    )
    deactivate = await lc.staking.BuildRedelegateTransaction(request)
    assert (deactivate.step, deactivate.transactions) == (sm.REDELEGATE_STEP_DEACTIVATE, 2)
    assert deactivate.expected_active_epoch == epoch + 2
    assert (deactivate.follow_up.method, deactivate.follow_up.epoch) == (
        "BuildRedelegateTransaction",
        epoch + 1,
    )
    await lc.execute_as_promised(deactivate.transaction, wallet)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.BuildRedelegateTransaction(request)
    details = rich_details(caught.value)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details["ErrorInfo"].reason == "STAKE_COOLING_DOWN"
    assert details["ErrorInfo"].metadata["ready_epoch"] == str(epoch + 1)
    assert details["RetryInfo"].retry_delay.ToNanoseconds() > 0

    # --- epoch E+2: C is active with the second validator, B and A are inactive --------
    await lc.advance_epochs(1)
    listed = await _positions(lc, wallet)
    assert (listed[c].state, listed[c].active_lamports) == (ACTIVE, 3 * SOL)
    assert (listed[b].state, listed[a].state) == (INACTIVE, INACTIVE)
    again = await lc.staking.BuildRedelegateTransaction(request)
    assert (again.step, again.transactions, again.HasField("follow_up")) == (
        sm.REDELEGATE_STEP_DELEGATE,
        1,
        False,
    )
    assert again.stake_lamports == 3 * SOL and again.expected_active_epoch == epoch + 2
    await lc.execute_as_promised(again.transaction, wallet)
    # B's follow-up: withdraw the old account's lamports (it closes).
    withdraw = await lc.staking.BuildWithdrawTransaction(
        staking_pb2.BuildWithdrawTransactionRequest(
            wallet=owner, stake_account=b, withdraw_all=True, options=SIMULATE
        )
    )
    assert withdraw.withdraw_lamports == RENT + 3 * SOL + SOL // 2
    await lc.execute_as_promised(withdraw.transaction, wallet, credited=withdraw.withdraw_lamports)

    await lc.advance_epochs(1)
    listed = await _positions(lc, wallet)
    assert set(listed) == {a, c}
    assert {(p.voter, p.state, p.active_lamports) for p in listed.values()} == {
        (second, ACTIVE, 3 * SOL)
    }


async def test_lockup_and_authorities_over_grpc(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(20)
    owner = str(wallet.pubkey())
    account = await lc.stake(wallet, 2 * SOL)
    epoch = await lc.epoch()
    custodian = Keypair()

    # --- a lockup, set by the wallet (withdraw authority), with a new custodian --------
    lockup = await lc.staking.BuildSetLockupTransaction(
        sm.BuildSetLockupTransactionRequest(
            wallet=owner,
            stake_account=account,
            lockup=sm.LockupChange(epoch=epoch + 50, custodian=str(custodian.pubkey())),
            options=SIMULATE,
        )
    )
    assert lockup.authority == owner and not lockup.custodian_signs and lockup.lockup_in_force
    assert list(lockup.transaction.required_signers) == [owner, str(custodian.pubkey())]
    assert lockup.previous_lockup == types_pb2.Lockup()
    assert lockup.lockup == types_pb2.Lockup(epoch=epoch + 50, custodian=str(custodian.pubkey()))
    await lc.execute_as_promised(lockup.transaction, wallet, custodian)
    listed = (await _positions(lc, wallet))[account]
    assert listed.lockup_in_force and listed.lockup.custodian == str(custodian.pubkey())

    # In force: only the custodian may change it, and must be said to sign.
    change = sm.BuildSetLockupTransactionRequest(
        wallet=owner, stake_account=account, lockup=sm.LockupChange(epoch=0, unix_timestamp=0)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.BuildSetLockupTransaction(change)
    info = rich_details(caught.value)["ErrorInfo"]
    assert (caught.value.code(), info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LOCKUP_IN_FORCE",
    )
    assert info.metadata["custodian"] == str(custodian.pubkey())
    change.custodian_signs = True
    change.options.CopyFrom(SIMULATE)
    released = await lc.staking.BuildSetLockupTransaction(change)
    assert released.authority == str(custodian.pubkey()) and released.custodian_signs
    assert not released.lockup_in_force
    await lc.execute_as_promised(released.transaction, wallet, custodian)
    assert not (await _positions(lc, wallet))[account].lockup_in_force

    # --- the stake authority to a new key: it signs (AuthorizeChecked) -----------------
    staker = Keypair()
    authorize = await lc.staking.BuildAuthorizeTransaction(
        sm.BuildAuthorizeTransactionRequest(
            wallet=owner,
            stake_account=account,
            new_authority=str(staker.pubkey()),
            authority_type=sm.STAKE_AUTHORITY_TYPE_STAKER,
            options=SIMULATE,
        )
    )
    assert authorize.checked and not authorize.leaves_wallet_positions
    assert list(authorize.transaction.required_signers) == [owner, str(staker.pubkey())]
    assert [i.type for i in authorize.transaction.instructions][-1] == "AuthorizeChecked"
    await lc.execute_as_promised(authorize.transaction, wallet, staker)
    assert (await _positions(lc, wallet))[account].staker == str(staker.pubkey())

    # --- the stake authority to a program address: unchecked only ----------------------
    pda, _ = Pubkey.find_program_address([b"agent-vault"], STAKE_PROGRAM)
    unchecked = await lc.staking.BuildAuthorizeTransaction(
        sm.BuildAuthorizeTransactionRequest(
            wallet=owner,
            stake_account=account,
            new_authority=str(pda),
            authority_type=sm.STAKE_AUTHORITY_TYPE_STAKER,
            unchecked=True,
            options=SIMULATE,
        )
    )
    assert not unchecked.checked and list(unchecked.transaction.required_signers) == [owner]
    await lc.execute_as_promised(unchecked.transaction, wallet)
    assert (await _positions(lc, wallet))[account].staker == str(pda)

    # --- the withdraw authority to another wallet: the account leaves the positions ----
    heir = Keypair()
    handover = await lc.staking.BuildAuthorizeTransaction(
        sm.BuildAuthorizeTransactionRequest(
            wallet=owner,
            stake_account=account,
            new_authority=str(heir.pubkey()),
            authority_type=sm.STAKE_AUTHORITY_TYPE_WITHDRAWER,
            options=SIMULATE,
        )
    )
    assert handover.leaves_wallet_positions and handover.withdrawer == str(heir.pubkey())
    assert "leaves the positions" in handover.notice and account in handover.notice
    await lc.execute_as_promised(handover.transaction, wallet, heir)
    assert account not in await _positions(lc, wallet)
    assert (await _positions(lc, heir.pubkey()))[account].withdrawer == str(heir.pubkey())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.BuildSplitTransaction(
            sm.BuildSplitTransactionRequest(
                wallet=owner, stake_account=account, amount_lamports=SOL
            )
        )
    assert rich_details(caught.value)["ErrorInfo"].reason == "NOT_WITHDRAW_AUTHORITY"
