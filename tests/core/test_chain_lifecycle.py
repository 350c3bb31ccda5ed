"""Stake life after the build, on the real runtime: warmup, deactivate, cooldown,
withdraw, split and merge with our encoders, across epochs whose StakeHistory is
written with our history function. The program's own Withdraw limit must agree
with ``withdraw_limit``."""

from __future__ import annotations

import struct

from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import SimulatedTransactionInfo

from service.core import (
    Delegation,
    Lockup,
    PreparedStakeTransaction,
    RecentBlockhash,
    StakeAccount,
    StakeContext,
    StakeHistoryEntry,
    StakePhase,
    StakeRequest,
    StakeStateKind,
    WarmupCooldownMath,
    WithdrawLimit,
    build_stake_transaction,
    decode_stake_account,
    stake_activation,
    stake_deactivate,
    stake_get_minimum_delegation,
    stake_merge,
    stake_position,
    stake_split,
    stake_withdraw,
    system_allocate_with_seed,
    system_transfer,
    to_solders_stake_history,
    withdraw_limit,
)
from service.core.programs import STAKE_ACCOUNT_SIZE, STAKE_PROGRAM
from tests.core._chain import (
    Cluster,
    balance,
    failed,
    funded_keypair,
    ok,
    send,
    set_epoch,
    sign_prepared,
)

SOL = 10**9


def _stake(
    svm: LiteSVM,
    wallet: Keypair,
    vote: Pubkey,
    lamports: int,
    seed: str,
    lockup: Lockup | None = None,
) -> PreparedStakeTransaction:
    request = StakeRequest(
        wallet=wallet.pubkey(),
        vote_account=vote,
        amount_lamports=lamports,
        seed=seed,
        lockup=lockup,
    )
    context = StakeContext(
        lifetime=RecentBlockhash(blockhash=svm.latest_blockhash(), last_valid_block_height=1),
        rent_exempt_reserve_lamports=svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE),
        minimum_delegation_lamports=SOL,
    )
    plan = build_stake_transaction(request, context)
    ok(svm.send_transaction(sign_prepared(plan.prepared, [wallet])))
    svm.expire_blockhash()
    return plan


def _state(svm: LiteSVM, address: Pubkey) -> tuple[StakeAccount, int]:
    account = svm.get_account(address)
    assert account is not None
    return decode_stake_account(bytes(account.data)), account.lamports


def _limit(
    svm: LiteSVM,
    address: Pubkey,
    history: dict[int, StakeHistoryEntry],
    custodian: Pubkey | None = None,
) -> WithdrawLimit:
    state, lamports = _state(svm, address)
    clock = svm.get_clock()
    return withdraw_limit(
        state,
        lamports=lamports,
        rent_exempt_reserve=svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE),
        epoch=clock.epoch,
        unix_timestamp=clock.unix_timestamp,
        history=history,
        custodian=custodian,
    )


def _withdraw_succeeds(
    svm: LiteSVM, wallet: Keypair, stake: Pubkey, lamports: int, custodian: Keypair | None = None
) -> bool:
    """Whether the program accepts this Withdraw now (simulated: no state change)."""
    ix = stake_withdraw(
        stake_account=stake,
        destination=wallet.pubkey(),
        withdrawer=wallet.pubkey(),
        lamports=lamports,
        custodian=custodian.pubkey() if custodian else None,
    )
    signers = [wallet, custodian] if custodian else [wallet]
    msg = MessageV0.try_compile(wallet.pubkey(), [ix], [], svm.latest_blockhash())
    result = svm.simulate_transaction(VersionedTransaction(msg, signers))
    return isinstance(result, SimulatedTransactionInfo)


def _assert_program_agrees(
    svm: LiteSVM, wallet: Keypair, stake: Pubkey, limit: WithdrawLimit
) -> None:
    """The program's boundary is exactly ours: the max partial withdrawal passes, one
    more lamport fails, and closing passes only when we say it can."""
    if limit.max_partial_lamports:
        assert _withdraw_succeeds(svm, wallet, stake, limit.max_partial_lamports)
    if limit.max_partial_lamports + 1 < limit.lamports:
        assert not _withdraw_succeeds(svm, wallet, stake, limit.max_partial_lamports + 1)
    assert _withdraw_succeeds(svm, wallet, stake, limit.lamports) is limit.can_close


def test_minimum_delegation_read_from_the_program(svm: LiteSVM, wallet: Keypair) -> None:
    msg = MessageV0.try_compile(
        wallet.pubkey(), [stake_get_minimum_delegation()], [], svm.latest_blockhash()
    )
    result = svm.simulate_transaction(VersionedTransaction(msg, [wallet]))
    assert isinstance(result, SimulatedTransactionInfo)
    return_data = result.meta().return_data()
    assert return_data.program_id == STAKE_PROGRAM
    assert struct.unpack("<Q", bytes(return_data.data))[0] == SOL


def test_warmup_deactivate_cooldown_withdraw(
    svm: LiteSVM, wallet: Keypair, vote_account: Pubkey
) -> None:
    # A small cluster so warmup and cooldown take several epochs (9% per epoch).
    cluster = Cluster(svm, bootstrap_lamports=20 * SOL)
    plan = _stake(svm, wallet, vote_account, 50 * SOL, "stake:lifecycle")
    address = plan.stake_account
    delegation = _state(svm, address)[0].delegation
    assert delegation is not None

    # While delegated, only lamports above stake + rent are withdrawable: none here.
    limit = _limit(svm, address, cluster.history)
    assert (limit.withdrawable_lamports, limit.can_close) == (0, False)
    _assert_program_agrees(svm, wallet, address, limit)

    def phase() -> StakePhase:
        state, lamports = _state(svm, address)
        clock = svm.get_clock()
        return stake_position(
            state,
            lamports=lamports,
            rent_exempt_reserve=svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE),
            epoch=clock.epoch,
            unix_timestamp=clock.unix_timestamp,
            history=cluster.history,
        ).phase

    assert phase() is StakePhase.ACTIVATING
    effective = []
    for _ in range(3):
        cluster.advance()
        status = stake_activation(delegation, cluster.epoch, cluster.history)
        assert status.effective + status.activating == 50 * SOL
        effective.append(status.effective)
    assert 0 < effective[0] < effective[1] < effective[2] < 50 * SOL  # still warming up

    # Deactivate mid-warmup (epoch 3); the program must agree on the cooldown.
    ok(send(svm, [stake_deactivate(stake_account=address, staker=wallet.pubkey())], [wallet]))
    state = _state(svm, address)[0]
    assert state.delegation is not None and state.delegation.deactivation_epoch == 3
    assert phase() is StakePhase.DEACTIVATING
    seen = []
    for _ in range(40):
        limit = _limit(svm, address, cluster.history)
        _assert_program_agrees(svm, wallet, address, limit)
        seen.append(limit.staked_lamports)
        if limit.can_close:
            break
        cluster.advance()
    assert seen[0] == effective[-1]  # in the deactivation epoch: what was effective
    assert seen == sorted(seen, reverse=True) and seen[-1] == 0
    assert len(seen) > 3  # cooldown took several epochs
    assert phase() is StakePhase.INACTIVE

    before = balance(svm, wallet.pubkey())
    ok(
        send(
            svm,
            [
                stake_withdraw(
                    stake_account=address,
                    destination=wallet.pubkey(),
                    withdrawer=wallet.pubkey(),
                    lamports=limit.lamports,
                )
            ],
            [wallet],
        )
    )
    assert balance(svm, wallet.pubkey()) - before == limit.lamports - 5_000
    assert svm.get_account(address) is None or balance(svm, address) == 0


def test_deactivated_in_its_activation_epoch_is_withdrawable_at_once(
    svm: LiteSVM, wallet: Keypair, vote_account: Pubkey
) -> None:
    plan = _stake(svm, wallet, vote_account, 2 * SOL, "stake:instant")
    ok(
        send(
            svm,
            [stake_deactivate(stake_account=plan.stake_account, staker=wallet.pubkey())],
            [wallet],
        )
    )
    limit = _limit(svm, plan.stake_account, {})
    assert limit.can_close and limit.staked_lamports == 0
    _assert_program_agrees(svm, wallet, plan.stake_account, limit)


def test_runtime_uses_the_float_arithmetic(
    svm: LiteSVM, wallet: Keypair, vote_account: Pubkey
) -> None:
    """Pins STAKE_PROGRAM_MATH: a history where f64 and integer-bps math differ by
    one lamport of effective stake, read through the program's Withdraw limit."""
    stake_lamports = 3_470_704_475
    plan = _stake(svm, wallet, vote_account, stake_lamports, "stake:float-pin")
    history = {0: StakeHistoryEntry(effective=2_047_661_000, activating=170_064_519_275)}
    svm.set_stake_history(to_solders_stake_history(history, current_epoch=1))
    set_epoch(svm, 1)
    svm.expire_blockhash()
    ok(
        send(
            svm,
            [stake_deactivate(stake_account=plan.stake_account, staker=wallet.pubkey())],
            [wallet],
        )
    )
    delegation = Delegation(stake=stake_lamports, activation_epoch=0, deactivation_epoch=1)
    as_float = stake_activation(delegation, 1, history, arithmetic=WarmupCooldownMath.FLOAT64)
    as_int = stake_activation(delegation, 1, history, arithmetic=WarmupCooldownMath.INTEGER_BPS)
    assert as_int.effective == as_float.effective + 1
    limit = _limit(svm, plan.stake_account, history)  # default arithmetic
    assert limit.staked_lamports == as_float.effective
    assert _withdraw_succeeds(svm, wallet, plan.stake_account, limit.max_partial_lamports)
    assert not _withdraw_succeeds(svm, wallet, plan.stake_account, limit.max_partial_lamports + 1)


def test_lockup_blocks_withdrawal_unless_the_custodian_signs(
    svm: LiteSVM, wallet: Keypair, vote_account: Pubkey
) -> None:
    custodian = funded_keypair(svm, SOL)
    lockup = Lockup(unix_timestamp=0, epoch=5, custodian=custodian.pubkey())
    plan = _stake(svm, wallet, vote_account, 2 * SOL, "stake:locked", lockup=lockup)
    ok(
        send(
            svm,
            [stake_deactivate(stake_account=plan.stake_account, staker=wallet.pubkey())],
            [wallet],
        )
    )
    locked = _limit(svm, plan.stake_account, {})
    assert locked.lockup_in_force and locked.withdrawable_lamports == 0
    assert not _withdraw_succeeds(svm, wallet, plan.stake_account, 1)
    freed = _limit(svm, plan.stake_account, {}, custodian=custodian.pubkey())
    assert freed.can_close
    assert _withdraw_succeeds(svm, wallet, plan.stake_account, freed.lamports, custodian)
    set_epoch(svm, 5)
    after = _limit(svm, plan.stake_account, {})
    assert not after.lockup_in_force
    assert _withdraw_succeeds(svm, wallet, plan.stake_account, after.lamports)


def test_split_into_a_seed_account_then_merge_back(
    svm: LiteSVM, wallet: Keypair, vote_account: Pubkey
) -> None:
    plan = _stake(svm, wallet, vote_account, 3 * SOL, "stake:to-split")
    rent = svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE)
    seed = "split:part"
    part = Pubkey.create_with_seed(wallet.pubkey(), seed, STAKE_PROGRAM)
    w = wallet.pubkey()
    ixs = [
        # The destination must be allocated, owned by the Stake program and rent-funded.
        system_transfer(source=w, destination=part, lamports=rent),
        system_allocate_with_seed(
            address=part, base=w, seed=seed, space=STAKE_ACCOUNT_SIZE, owner=STAKE_PROGRAM
        ),
        stake_split(
            stake_account=plan.stake_account, destination=part, staker=w, lamports=SOL + SOL // 2
        ),
    ]
    ok(send(svm, ixs, [wallet]))
    source, source_lamports = _state(svm, plan.stake_account)
    split, split_lamports = _state(svm, part)
    assert source.delegation is not None and split.delegation is not None
    assert source.delegation.stake == SOL + SOL // 2
    assert split.delegation.stake == SOL + SOL // 2
    assert split.state is StakeStateKind.STAKE and split.delegation.voter == vote_account
    assert (source_lamports, split_lamports) == (rent + SOL + SOL // 2, rent + SOL + SOL // 2)

    # Both are activating in the same epoch: mergeable.
    ok(send(svm, [stake_merge(destination=plan.stake_account, source=part, staker=w)], [wallet]))
    merged, merged_lamports = _state(svm, plan.stake_account)
    assert merged.delegation is not None and merged.delegation.stake == 3 * SOL + rent
    assert merged_lamports == 3 * SOL + 2 * rent
    assert balance(svm, part) == 0


def test_history_written_by_our_function_is_what_the_program_reads(svm: LiteSVM) -> None:
    cluster = Cluster(svm, bootstrap_lamports=10 * SOL)
    cluster.advance(3)
    read = svm.get_stake_history()
    for epoch in range(3):
        entry = read.get(epoch)
        assert entry is not None
        assert (entry.effective, entry.activating, entry.deactivating) == (10 * SOL, 0, 0)


def test_failed_transactions_name_the_problem(
    svm: LiteSVM, wallet: Keypair, vote_account: Pubkey
) -> None:
    plan = _stake(svm, wallet, vote_account, SOL, "stake:fail")
    result = failed(
        send(
            svm,
            [
                stake_withdraw(
                    stake_account=plan.stake_account,
                    destination=wallet.pubkey(),
                    withdrawer=wallet.pubkey(),
                    lamports=1,
                )
            ],
            [wallet],
        )
    )
    assert "InsufficientFunds" in str(result.err())
