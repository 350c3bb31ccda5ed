"""The unstake, withdraw and merge plans on the real runtime (LiteSVM): they execute,
move exactly the lamports they explain, fit 1232 bytes in their largest variant, and
stay within their default compute unit limits (measured here; ``-s`` prints them)."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair

from service.core import (
    MAX_MEMO_BYTES,
    MAX_MERGES,
    MAX_UNSTAKE_ACCOUNTS,
    MAX_WITHDRAWALS,
    AccountState,
    DurableNonce,
    InsufficientStakeError,
    MergeMismatchError,
    MergeRequest,
    NothingToMergeError,
    TransactionOptions,
    TransactionVersion,
    UnstakeAmountError,
    UnstakeContext,
    UnstakeRequest,
    WithdrawContext,
    WithdrawRequest,
    WithdrawUnavailableError,
    build_merge_transaction,
    build_unstake_transaction,
    build_withdraw_transaction,
    default_merge_compute_unit_limit,
    default_unstake_compute_unit_limit,
    default_withdraw_compute_unit_limit,
)
from service.core.plans._merge import MEASURED_MERGE_CU
from service.core.plans._unstake import MEASURED_DEACTIVATE_CU, MEASURED_SPLIT_CU
from service.core.plans._withdraw import MEASURED_WITHDRAW_CU
from service.core.programs import LAMPORTS_PER_SIGNATURE
from tests.core._chain import (
    balance,
    create_nonce_account,
    create_vote_account,
    funded_keypair,
    stored_nonce,
)
from tests.core._harness import Harness

SOL = 10**9
LONGEST_MEMO = "€" * (MAX_MEMO_BYTES // 3) + "~" * (MAX_MEMO_BYTES % 3)


def test_unstake_split_withdraw_merge_move_exactly_what_they_say(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    a, b = h.stake(5 * SOL), h.stake(3 * SOL)
    h.cluster.advance()

    before = balance(h.svm, wallet)
    plan = build_unstake_transaction(
        UnstakeRequest(wallet=wallet, amount_lamports=3 * SOL // 2, split_seed="split:t"),
        h.unstake_context(),
    )
    (split,) = plan.splits
    assert split.source_stake_account == b and plan.deactivate_lamports == 3 * SOL // 2
    fees = plan.prepared.fees
    assert fees.total_debit_lamports == h.rent + LAMPORTS_PER_SIGNATURE
    assert fees.rent_exempt_reserve_lamports == h.rent and fees.service_fee_lamports == 0
    assert plan.expected_inactive_epoch == h.cluster.epoch + 1
    used = h.run(plan.prepared)
    assert used <= plan.prepared.compute_unit_limit
    assert balance(h.svm, wallet) == before - fees.total_debit_lamports
    assert balance(h.svm, split.stake_account) == h.rent + 3 * SOL // 2
    assert balance(h.svm, b) == h.rent + 3 * SOL // 2
    h.stakes.append(split.stake_account)
    states = {v.address: v.state for v in h.views()}
    assert states == {
        a: AccountState.ACTIVE,
        b: AccountState.ACTIVE,
        split.stake_account: AccountState.DEACTIVATING,
    }

    h.cluster.advance()
    before = balance(h.svm, wallet)
    plan_w = build_withdraw_transaction(
        WithdrawRequest(wallet=wallet, withdraw_all=True),
        WithdrawContext(lifetime=h.lifetime(), accounts=h.views()),
    )
    (taken,) = plan_w.withdrawals
    assert taken.stake_account == split.stake_account and taken.closes_account
    assert plan_w.withdraw_lamports == h.rent + 3 * SOL // 2
    h.run(plan_w.prepared)
    assert balance(h.svm, wallet) == (
        before + plan_w.withdraw_lamports - plan_w.prepared.fees.total_debit_lamports
    )
    assert balance(h.svm, split.stake_account) == 0

    plan_m = build_merge_transaction(MergeRequest(wallet=wallet, destination=a), h.merge_context())
    assert plan_m.merged == (b,) and plan_m.merged_lamports == h.rent + 3 * SOL // 2
    before = balance(h.svm, wallet)
    h.run(plan_m.prepared)
    assert balance(h.svm, wallet) == before - plan_m.prepared.fees.total_debit_lamports
    assert balance(h.svm, a) == 2 * h.rent + 5 * SOL + 3 * SOL // 2
    assert balance(h.svm, b) == 0
    (only,) = h.views()
    assert only.delegated_lamports == only.active_lamports == 5 * SOL + 3 * SOL // 2
    assert only.withdrawable_lamports == h.rent  # the merged source's reserve


def test_unstake_by_amount_keeps_to_the_vote_account_asked_for(
    harness: Harness, funder: Keypair
) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    first = h.stake(3 * SOL)
    h.vote = create_vote_account(h.svm, funder)
    second = h.stake(3 * SOL)
    for vote, expected in ((h.vote, second), (None, None)):
        plan = build_unstake_transaction(
            UnstakeRequest(
                wallet=wallet, amount_lamports=3 * SOL, vote_account=vote, split_seed="split:v"
            ),
            h.unstake_context(),
        )
        if expected is not None:
            assert plan.stake_accounts == (expected,)
        else:
            assert plan.stake_accounts[0] in (first, second)
    with pytest.raises(InsufficientStakeError) as caught:
        build_unstake_transaction(
            UnstakeRequest(
                wallet=wallet, amount_lamports=4 * SOL, vote_account=h.vote, split_seed="split:v"
            ),
            h.unstake_context(),
        )
    assert caught.value.metadata["available_lamports"] == str(3 * SOL)


def test_refusals(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    a = h.stake(3 * SOL)
    with pytest.raises(InsufficientStakeError):
        build_unstake_transaction(
            UnstakeRequest(wallet=wallet, amount_lamports=4 * SOL, split_seed="split:x"),
            h.unstake_context(),
        )
    with pytest.raises(UnstakeAmountError) as caught:
        build_unstake_transaction(
            UnstakeRequest(
                wallet=wallet, amount_lamports=5 * SOL // 2, stake_account=a, split_seed="split:x"
            ),
            h.unstake_context(),
        )
    assert caught.value.metadata["nearest_lower_lamports"] == str(2 * SOL)
    with pytest.raises(WithdrawUnavailableError):
        build_withdraw_transaction(
            WithdrawRequest(wallet=wallet, amount_lamports=1),
            WithdrawContext(lifetime=h.lifetime(), accounts=h.views()),
        )
    with pytest.raises(NothingToMergeError):
        build_merge_transaction(MergeRequest(wallet=wallet, destination=a), h.merge_context())
    h.cluster.advance()
    b = h.stake(SOL)
    with pytest.raises(MergeMismatchError) as mismatch:
        build_merge_transaction(
            MergeRequest(wallet=wallet, destination=a, sources=(b,)), h.merge_context()
        )
    assert mismatch.value.mismatch == "state"


def _largest_options(h: Harness, authority: Keypair) -> tuple[TransactionOptions, DurableNonce]:
    nonce = create_nonce_account(h.svm, h.wallet, authority.pubkey())
    options = TransactionOptions(
        version=TransactionVersion.LEGACY,
        compute_unit_price_micro_lamports=10**6,
        memo=LONGEST_MEMO,
    )
    lifetime = DurableNonce(
        nonce_account=nonce, nonce_authority=authority.pubkey(), nonce=stored_nonce(h.svm, nonce)
    )
    return options, lifetime


def test_largest_variants_fit_and_execute(harness: Harness) -> None:
    """The most accounts per transaction, with a separate stake authority, a durable
    nonce with its own authority, a priority fee and the longest memo, as legacy
    transactions (the larger format): they fit, execute, and stay under the limit."""
    h = harness
    wallet = h.wallet.pubkey()
    staker = funded_keypair(h.svm, SOL)
    nonce_authority = Keypair()
    for _ in range(MAX_UNSTAKE_ACCOUNTS + MAX_MERGES + 2):
        h.stake(2 * SOL, staker=staker.pubkey())
    h.cluster.advance()
    options, lifetime = _largest_options(h, nonce_authority)

    # Merge: the destination plus MAX_MERGES fully active sources.
    dest, *sources = h.stakes[: MAX_MERGES + 1]
    plan_m = build_merge_transaction(
        MergeRequest(wallet=wallet, destination=dest, sources=tuple(sources), options=options),
        h.merge_context(lifetime),
    )
    assert set(plan_m.prepared.required_signers) == {
        wallet,
        nonce_authority.pubkey(),
        staker.pubkey(),
    }
    assert len(plan_m.prepared.transaction) <= 1232
    used = h.run(plan_m.prepared, staker, nonce_authority)
    assert used <= plan_m.prepared.compute_unit_limit

    # Unstake: a named account whose stake authority is another key, split in two.
    named = h.stakes[MAX_MERGES + 1]
    options, lifetime = _largest_options(h, nonce_authority)
    plan_u = build_unstake_transaction(
        UnstakeRequest(
            wallet=wallet,
            amount_lamports=SOL,
            stake_account=named,
            split_seed="split:" + "m" * 26,
            options=options,
        ),
        UnstakeContext(
            lifetime=lifetime,
            accounts=h.fetched([named]),
            epoch=h.svm.get_clock().epoch,
            history=h.cluster.history,
            rent_exempt_reserve_lamports=h.rent,
            minimum_delegation_lamports=SOL,
        ),
    )
    assert len(plan_u.splits) == 1
    assert set(plan_u.prepared.required_signers) == {
        wallet,
        nonce_authority.pubkey(),
        staker.pubkey(),
    }
    assert len(plan_u.prepared.transaction) <= 1232
    used = h.run(plan_u.prepared, staker, nonce_authority)
    assert used <= plan_u.prepared.compute_unit_limit


@pytest.mark.parametrize("whole", [1, MAX_UNSTAKE_ACCOUNTS - 1, MAX_UNSTAKE_ACCOUNTS])
def test_unstake_by_amount_fits_and_stays_under_its_limit(harness: Harness, whole: int) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    for _ in range(MAX_UNSTAKE_ACCOUNTS):
        h.stake(2 * SOL)
    h.cluster.advance()
    nonce_authority = Keypair()
    options, lifetime = _largest_options(h, nonce_authority)
    # `whole - 1` whole accounts and a split of the next when whole < max, else all whole.
    split = whole < MAX_UNSTAKE_ACCOUNTS
    amount = (whole - 1) * 2 * SOL + (SOL if split else 2 * SOL)
    plan = build_unstake_transaction(
        UnstakeRequest(
            wallet=wallet, amount_lamports=amount, split_seed="split:" + "n" * 26, options=options
        ),
        h.unstake_context(lifetime),
    )
    assert len(plan.splits) == int(split)
    assert len(plan.stake_accounts) == whole
    assert len(plan.prepared.transaction) <= 1232
    used = h.run(plan.prepared, nonce_authority)
    assert used <= plan.prepared.compute_unit_limit
    assert plan.prepared.compute_unit_limit == default_unstake_compute_unit_limit(
        whole_accounts=whole - int(split), split=split
    )


def test_withdraw_most_accounts_fits_and_stays_under_its_limit(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    for _ in range(MAX_WITHDRAWALS + 2):
        h.stake(SOL)
    # Deactivated in their activation epoch: withdrawable at once.
    plan = build_unstake_transaction(
        UnstakeRequest(
            wallet=wallet, amount_lamports=MAX_UNSTAKE_ACCOUNTS * SOL, split_seed="split:w"
        ),
        h.unstake_context(),
    )
    h.run(plan.prepared)
    nonce_authority = Keypair()
    options, lifetime = _largest_options(h, nonce_authority)
    plan_w = build_withdraw_transaction(
        WithdrawRequest(
            wallet=wallet, withdraw_all=True, destination=Keypair().pubkey(), options=options
        ),
        WithdrawContext(lifetime=lifetime, accounts=h.views()),
    )
    assert len(plan_w.withdrawals) == MAX_WITHDRAWALS
    assert all(w.closes_account for w in plan_w.withdrawals)
    assert len(plan_w.prepared.transaction) <= 1232
    assert plan_w.prepared.compute_unit_limit == default_withdraw_compute_unit_limit(
        withdrawals=MAX_WITHDRAWALS
    )
    used = h.run(plan_w.prepared, nonce_authority)
    assert used <= plan_w.prepared.compute_unit_limit


def test_recorded_compute_units_are_current(harness: Harness) -> None:
    """The per-instruction constants the defaults come from describe the runtime
    (within 3%): one Deactivate, one split (create + Split + Deactivate), one
    Withdraw, one Merge, each measured as the difference it makes."""
    h = harness
    wallet = h.wallet.pubkey()
    for _ in range(8):
        h.stake(3 * SOL)
    h.cluster.advance()

    def unstake(amount: int, seed: str) -> int:
        plan = build_unstake_transaction(
            UnstakeRequest(wallet=wallet, amount_lamports=amount, split_seed=seed),
            h.unstake_context(),
        )
        return h.run(plan.prepared)

    one = unstake(3 * SOL, "split:a")
    two = unstake(6 * SOL, "split:b")
    split = unstake(SOL, "split:c")
    deactivate = two - one
    assert abs(deactivate - MEASURED_DEACTIVATE_CU) <= MEASURED_DEACTIVATE_CU * 3 // 100
    assert abs(split - one + deactivate - MEASURED_SPLIT_CU) <= MEASURED_SPLIT_CU * 3 // 100

    def merge(count: int) -> int:
        fresh = [f for f in h.fetched() if f.delegation and not f.delegation.is_deactivated]
        dest, *sources = [f.address for f in fresh][: count + 1]
        plan = build_merge_transaction(
            MergeRequest(wallet=wallet, destination=dest, sources=tuple(sources)),
            h.merge_context(),
        )
        return h.run(plan.prepared)

    merged = merge(2) - merge(1)
    assert abs(merged - MEASURED_MERGE_CU) <= MEASURED_MERGE_CU * 3 // 100
    assert default_merge_compute_unit_limit(merges=1) >= MEASURED_MERGE_CU

    h.cluster.advance()

    def withdraw(count: int) -> int:
        views = [v for v in h.views() if v.can_close][:count]
        plan = build_withdraw_transaction(
            WithdrawRequest(wallet=wallet, withdraw_all=True),
            WithdrawContext(lifetime=h.lifetime(), accounts=views),
        )
        return h.run(plan.prepared)

    one_w = withdraw(1)
    withdrawn = withdraw(2) - one_w
    assert abs(withdrawn - MEASURED_WITHDRAW_CU) <= MEASURED_WITHDRAW_CU * 3 // 100
    print(
        f"\ndeactivate {deactivate} split {split - one + deactivate} merge {merged} "
        f"withdraw {withdrawn}"
    )
