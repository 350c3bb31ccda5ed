"""The whole staking lifecycle over gRPC, every step signed by the wallet and executed
on the localnet, epochs moved and StakeHistory set with the localnet's admin methods:

stake twice -> warm up over epochs (exact activating/active numbers each epoch) ->
unstake part (a split) -> cool down -> withdraw exactly what ListStakeAccounts says is
withdrawable -> merge what remains.

After each step the on-chain balances are what the response promised: the simulation
receipt's post balances, to the lamport, and the fee breakdown's total debit.

The expected warmup and cooldown numbers are computed here with the stake program's
arithmetic written out (an f64 share of 9% of the cluster's effective stake, truncated,
at least one lamport), not with the service's code.
"""

from __future__ import annotations

import base64
import time

from agentstaking.v1 import staking_pb2, types_pb2
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.core import StakeHistoryEntry, stake_withdraw

from .conftest import SOL, Lifecycle

RENT = 2_282_880
SIMULATE = types_pb2.TransactionOptions(simulate=True)
ACTIVATING = staking_pb2.STAKE_ACCOUNT_STATE_ACTIVATING
ACTIVE = staking_pb2.STAKE_ACCOUNT_STATE_ACTIVE
DEACTIVATING = staking_pb2.STAKE_ACCOUNT_STATE_DEACTIVATING
INACTIVE = staking_pb2.STAKE_ACCOUNT_STATE_INACTIVE


def _step(portion: int, cluster_portion: int, cluster_effective: int) -> int:
    """One epoch of warmup or cooldown for an account, as the stake program computes it."""
    return max(int(portion / cluster_portion * (cluster_effective * 0.09)), 1)


def _by_address(
    response: staking_pb2.ListStakeAccountsResponse,
) -> dict[str, staking_pb2.StakeAccount]:
    return {a.address: a for a in response.stake_accounts}


def _assert_balanced(account: staking_pb2.StakeAccount) -> None:
    assert account.balance_lamports == (
        account.rent_exempt_reserve_lamports
        + account.active_lamports
        + account.activating_lamports
        + account.deactivating_lamports
        + account.inactive_lamports
    )


async def _withdraw_fails(lc: Lifecycle, wallet: Keypair, stake: str, lamports: int) -> bool:
    """Whether the stake program itself refuses this Withdraw now (simulated)."""
    latest = await lc.call("getLatestBlockhash", {"commitment": "processed"})
    instruction = stake_withdraw(
        stake_account=Pubkey.from_string(stake),
        destination=wallet.pubkey(),
        withdrawer=wallet.pubkey(),
        lamports=lamports,
    )
    message = MessageV0.try_compile(
        wallet.pubkey(), [instruction], [], Hash.from_string(latest["value"]["blockhash"])
    )
    tx = VersionedTransaction(message, [wallet])
    answer = await lc.call(
        "simulateTransaction", base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}
    )
    return answer["value"]["err"] is not None


async def test_stake_unstake_withdraw_merge(lifecycle: Lifecycle) -> None:
    try:
        await _lifecycle(lifecycle)
    finally:
        await lifecycle.restore_stake_history()


async def _lifecycle(lc: Lifecycle) -> None:
    wallet = await lc.wallet(100)
    owner = str(wallet.pubkey())
    start = await lc.epoch()
    await lc.service_sees(start)

    # The default validator is the top of the ranking.
    top = await lc.staking.ListValidators(staking_pb2.ListValidatorsRequest(page_size=1))
    vote = top.validators[0].vote_account
    info = await lc.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    assert info.default_vote_account == vote

    # --- stake A (5 SOL) in epoch E -------------------------------------------------
    fee_before = await lc.balance(lc.fee_wallet.pubkey())
    a = await lc.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=owner, amount_lamports=5 * SOL, options=SIMULATE
        )
    )
    assert a.vote_account == vote and a.activation_epoch == start
    await lc.execute_as_promised(a.transaction, wallet)
    fees = a.transaction.fees
    assert await lc.balance(lc.fee_wallet.pubkey()) - fee_before == fees.service_fee_lamports > 0
    assert await lc.balance(a.stake_account) == 5 * SOL + fees.rent_exempt_reserve_lamports
    listed = _by_address(await lc.positions(wallet))[a.stake_account]
    assert (listed.state, listed.activating_lamports, listed.active_lamports) == (
        ACTIVATING,
        5 * SOL,
        0,
    )
    assert listed.next_state == ACTIVE and listed.next_state_change_epoch == start + 1
    assert listed.next_state_change_time.seconds >= int(time.time()) - 1
    assert listed.activation_epoch == start and not listed.HasField("deactivation_epoch")
    assert listed.withdrawable_lamports == 0 and listed.staker == listed.withdrawer == owner

    # --- epoch E+1: a slow cluster warms A up only in part; stake B (3 SOL) ----------------
    await lc.advance_epochs(1)
    slow = StakeHistoryEntry(effective=40 * SOL, activating=10 * SOL)
    await lc.override_stake_history({start: slow})
    a_active = _step(5 * SOL, slow.activating, slow.effective)
    assert 0 < a_active < 5 * SOL
    listed = _by_address(await lc.positions(wallet))[a.stake_account]
    assert (listed.state, listed.active_lamports, listed.activating_lamports) == (
        ACTIVATING,
        a_active,
        5 * SOL - a_active,
    )
    _assert_balanced(listed)
    b = await lc.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=owner, amount_lamports=3 * SOL, options=SIMULATE
        )
    )
    assert b.activation_epoch == start + 1
    await lc.execute_as_promised(b.transaction, wallet)

    # --- epoch E+2: both still warming up, by the numbers ------------------------------
    await lc.advance_epochs(1)
    slower = StakeHistoryEntry(effective=50 * SOL, activating=8 * SOL)
    await lc.override_stake_history({start + 1: slower})
    a_active = min(
        a_active + _step(5 * SOL - a_active, slower.activating, slower.effective), 5 * SOL
    )
    b_active = _step(3 * SOL, slower.activating, slower.effective)
    positions = await lc.positions(wallet)
    listed_a = _by_address(positions)[a.stake_account]
    listed_b = _by_address(positions)[b.stake_account]
    assert (listed_a.active_lamports, listed_a.activating_lamports) == (
        a_active,
        5 * SOL - a_active,
    )
    assert (listed_b.active_lamports, listed_b.activating_lamports) == (
        b_active,
        3 * SOL - b_active,
    )
    assert positions.total_size == 2
    assert positions.totals.active_lamports == a_active + b_active
    assert positions.totals.activating_lamports == 8 * SOL - a_active - b_active

    # --- epoch E+3: the real cluster (millions of SOL effective) finishes the warmup ----
    await lc.advance_epochs(1)
    positions = await lc.positions(wallet)
    for stake, amount in ((a.stake_account, 5 * SOL), (b.stake_account, 3 * SOL)):
        listed = _by_address(positions)[stake]
        assert (listed.state, listed.active_lamports, listed.activating_lamports) == (
            ACTIVE,
            amount,
            0,
        )
        assert listed.next_state == staking_pb2.STAKE_ACCOUNT_STATE_UNSPECIFIED
        assert not listed.HasField("next_state_change_epoch")

    # --- unstake 1.5 SOL: no whole account matches, so B (the smallest that keeps the
    # minimum delegation) is split and the new part deactivated, in one transaction ------
    unstake = await lc.staking.BuildUnstakeTransaction(
        staking_pb2.BuildUnstakeTransactionRequest(
            wallet=owner,
            amount_lamports=3 * SOL // 2,
            request_id="lifecycle-unstake",
            options=SIMULATE,
        )
    )
    (split,) = unstake.split_stake_accounts
    assert split.source_stake_account == b.stake_account
    assert split.stake_lamports == unstake.deactivate_lamports == 3 * SOL // 2
    assert split.rent_exempt_reserve_lamports == RENT
    assert list(unstake.stake_accounts) == [split.stake_account]
    assert list(unstake.transaction.required_signers) == [owner]
    assert [i.type for i in unstake.transaction.instructions][-3:] == [
        "CreateAccountWithSeed",
        "Split",
        "Deactivate",
    ]
    assert unstake.transaction.fees.rent_exempt_reserve_lamports == RENT
    assert unstake.transaction.fees.service_fee_lamports == 0
    assert unstake.deactivation_epoch == start + 3
    assert unstake.expected_inactive_epoch == start + 4
    await lc.execute_as_promised(unstake.transaction, wallet)
    positions = await lc.positions(wallet)
    listed_b = _by_address(positions)[b.stake_account]
    listed_c = _by_address(positions)[split.stake_account]
    assert (listed_b.state, listed_b.active_lamports) == (ACTIVE, 3 * SOL // 2)
    assert (listed_c.state, listed_c.deactivating_lamports) == (DEACTIVATING, 3 * SOL // 2)
    assert listed_c.deactivation_epoch == start + 3
    assert listed_c.next_state == INACTIVE and listed_c.next_state_change_epoch == start + 4
    assert listed_c.withdrawable_lamports == 0

    # --- epoch E+4: a slow cooldown leaves part of C deactivating --------------------
    await lc.advance_epochs(1)
    cooling = StakeHistoryEntry(effective=100 * SOL, deactivating=10 * SOL)
    await lc.override_stake_history({start + 3: cooling})
    still = 3 * SOL // 2 - _step(3 * SOL // 2, cooling.deactivating, cooling.effective)
    assert 0 < still < 3 * SOL // 2
    positions = await lc.positions(wallet)
    listed_c = _by_address(positions)[split.stake_account]
    assert (listed_c.state, listed_c.deactivating_lamports) == (DEACTIVATING, still)
    assert listed_c.inactive_lamports == 3 * SOL // 2 - still
    assert listed_c.withdrawable_lamports == 3 * SOL // 2 - still
    assert positions.totals.withdrawable_lamports == listed_c.withdrawable_lamports
    # The stake program agrees on the boundary: one lamport more is refused.
    assert await _withdraw_fails(
        lc, wallet, split.stake_account, listed_c.withdrawable_lamports + 1
    )

    # Withdraw exactly what ListStakeAccounts said: the service picks C.
    withdrawable = positions.totals.withdrawable_lamports
    withdraw = await lc.staking.BuildWithdrawTransaction(
        staking_pb2.BuildWithdrawTransactionRequest(
            wallet=owner, amount_lamports=withdrawable, options=SIMULATE
        )
    )
    assert withdraw.withdraw_lamports == withdrawable and withdraw.destination == owner
    (taken,) = withdraw.withdrawals
    assert (taken.stake_account, taken.withdraw_lamports, taken.closes_account) == (
        split.stake_account,
        withdrawable,
        False,
    )
    assert withdraw.remaining_withdrawable_lamports == 0
    await lc.execute_as_promised(withdraw.transaction, wallet, credited=withdrawable)
    listed_c = _by_address(await lc.positions(wallet))[split.stake_account]
    assert listed_c.balance_lamports == RENT + still and listed_c.withdrawable_lamports == 0

    # --- epoch E+5: C is inactive; withdrawing everything closes it ---------------------
    await lc.advance_epochs(1)
    listed_c = _by_address(await lc.positions(wallet))[split.stake_account]
    assert listed_c.state == INACTIVE
    assert listed_c.withdrawable_lamports == listed_c.balance_lamports == RENT + still
    withdraw = await lc.staking.BuildWithdrawTransaction(
        staking_pb2.BuildWithdrawTransactionRequest(
            wallet=owner, withdraw_all=True, options=SIMULATE
        )
    )
    (taken,) = withdraw.withdrawals
    assert taken.closes_account and taken.withdraw_lamports == RENT + still
    await lc.execute_as_promised(withdraw.transaction, wallet, credited=RENT + still)
    assert await lc.balance(split.stake_account) == 0

    # --- merge: B (fully active, same validator and authorities) folds into A -----------
    merge = await lc.staking.BuildMergeTransaction(
        staking_pb2.BuildMergeTransactionRequest(
            wallet=owner, destination_stake_account=a.stake_account, options=SIMULATE
        )
    )
    assert list(merge.merged_stake_accounts) == [b.stake_account]
    assert merge.merged_lamports == 3 * SOL // 2 + RENT
    await lc.execute_as_promised(merge.transaction, wallet)
    positions = await lc.positions(wallet)
    (only,) = positions.stake_accounts
    assert only.address == a.stake_account and only.state == ACTIVE
    # Merged stake adds up; the source's rent reserve stays as an inactive lamport surplus.
    assert only.active_lamports == only.delegated_lamports == 5 * SOL + 3 * SOL // 2
    assert only.balance_lamports == 5 * SOL + 3 * SOL // 2 + 2 * RENT
    assert only.inactive_lamports == only.withdrawable_lamports == RENT
    _assert_balanced(only)
