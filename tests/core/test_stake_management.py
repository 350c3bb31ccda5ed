"""The split, move, authorize, set-lockup and redelegate plans on the real runtime
(LiteSVM): each transaction is signed as an agent signs it and executed, every
lamport it moves is accounted for, states are read back across epochs, every refusal
is checked, and where the stake program has an opinion on a refusal, the same
instruction sent raw fails on chain too.

Run with ``-s`` to print the measured compute units.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.core import (
    MAX_MEMO_BYTES,
    AccountState,
    AlreadyDelegatedError,
    AuthorityUnchangedError,
    AuthorizeContext,
    AuthorizeRequest,
    DurableNonce,
    FollowUpKind,
    InsufficientFundsError,
    InsufficientLamportsError,
    InsufficientStakeError,
    InvalidAddressError,
    Lifetime,
    Lockup,
    LockupInForceError,
    LockupUnchangedError,
    MoveAmountError,
    MoveContext,
    MoveMismatchError,
    MoveRequest,
    MoveType,
    NotWithdrawAuthorityError,
    PreparedRedelegateTransaction,
    PreparedTransaction,
    RedelegateContext,
    RedelegateRequest,
    RedelegateStep,
    RedelegateStrategy,
    SameStakeAccountError,
    ServiceFee,
    SetLockupContext,
    SetLockupRequest,
    SplitAmountError,
    SplitContext,
    SplitRequest,
    StakeAccountStateError,
    StakeAuthorize,
    StakeCoolingDownError,
    StakeStateKind,
    TransactionOptions,
    TransactionTooLargeError,
    TransactionVersion,
    build_authorize_transaction,
    build_move_transaction,
    build_redelegate_transaction,
    build_set_lockup_transaction,
    build_split_transaction,
    stake_authorize_checked,
    stake_deactivate,
    stake_move_stake,
    stake_set_lockup_checked,
    system_transfer,
)
from service.core.plans import prepare_transaction
from service.core.plans._authorize import MEASURED_AUTHORIZE_CHECKED_CU
from service.core.plans._lockup import MEASURED_SET_LOCKUP_CU
from service.core.plans._move import MEASURED_MOVE_LAMPORTS_CU, MEASURED_MOVE_STAKE_CU
from service.core.plans._redelegate import MEASURED_DELEGATE_CU
from service.core.plans._split import MEASURED_SPLIT_ACCOUNT_CU
from service.core.programs import LAMPORTS_PER_SIGNATURE, STAKE_PROGRAM
from service.core.seeds import stake_account_address
from tests.core._chain import (
    balance,
    create_nonce_account,
    create_vote_account,
    funded_keypair,
    ok,
    send,
    stored_nonce,
)
from tests.core._harness import Harness

SOL = 10**9
FEE = LAMPORTS_PER_SIGNATURE
LONGEST_MEMO = "€" * (MAX_MEMO_BYTES // 3) + "~" * (MAX_MEMO_BYTES % 3)
# The longest memo the largest redelegation (NEW_ACCOUNT step) leaves room for.
REDELEGATE_MEMO_ROOM = 136


# --- contexts read from the runtime, and the program's own verdict ---------------------


def split_context(h: Harness, address: Pubkey, lifetime: Lifetime | None = None) -> SplitContext:
    return SplitContext(
        lifetime=lifetime or h.lifetime(),
        account=h.account(address),
        epoch=h.svm.get_clock().epoch,
        history=h.cluster.history,
        rent_exempt_reserve_lamports=h.rent,
        minimum_delegation_lamports=SOL,
        wallet_balance_lamports=balance(h.svm, h.wallet.pubkey()),
    )


def move_context(h: Harness, source: Pubkey, destination: Pubkey) -> MoveContext:
    clock = h.svm.get_clock()
    return MoveContext(
        lifetime=h.lifetime(),
        source=h.account(source),
        destination=h.account(destination),
        epoch=clock.epoch,
        unix_timestamp=clock.unix_timestamp,
        history=h.cluster.history,
        rent_exempt_reserve_lamports=h.rent,
        minimum_delegation_lamports=SOL,
    )


def authorize_context(h: Harness, address: Pubkey) -> AuthorizeContext:
    clock = h.svm.get_clock()
    return AuthorizeContext(
        lifetime=h.lifetime(),
        account=h.account(address),
        epoch=clock.epoch,
        unix_timestamp=clock.unix_timestamp,
    )


def lockup_context(h: Harness, address: Pubkey) -> SetLockupContext:
    clock = h.svm.get_clock()
    return SetLockupContext(
        lifetime=h.lifetime(),
        account=h.account(address),
        epoch=clock.epoch,
        unix_timestamp=clock.unix_timestamp,
    )


def redelegate_context(
    h: Harness, address: Pubkey, lifetime: Lifetime | None = None
) -> RedelegateContext:
    return RedelegateContext(
        lifetime=lifetime or h.lifetime(),
        account=h.account(address),
        epoch=h.svm.get_clock().epoch,
        history=h.cluster.history,
        rent_exempt_reserve_lamports=h.rent,
        minimum_delegation_lamports=SOL,
        wallet_balance_lamports=balance(h.svm, h.wallet.pubkey()),
    )


def delegation_of(h: Harness, address: Pubkey) -> tuple[Pubkey, int, int, int]:
    """(voter, stake, activation epoch, deactivation epoch) as stored."""
    d = h.account(address).delegation
    assert d is not None
    return d.voter, d.stake, d.activation_epoch, d.deactivation_epoch


# --- split ----------------------------------------------------------------------------


def test_split_of_active_stake_moves_stake_and_lamports_exactly(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    source = h.stake(5 * SOL)
    h.cluster.advance()
    plan = build_split_transaction(
        SplitRequest(wallet=wallet, stake_account=source, amount_lamports=2 * SOL, seed="split:a"),
        split_context(h, source),
    )
    assert plan.new_stake_account == stake_account_address(base=wallet, seed="split:a")
    assert (plan.split_lamports, plan.stake_lamports, plan.source_stake_lamports) == (
        2 * SOL,
        2 * SOL,
        3 * SOL,
    )
    assert plan.vote_account == h.vote and plan.prepared.required_signers == (wallet,)
    fees = plan.prepared.fees
    assert fees.total_debit_lamports == h.rent + FEE and fees.rent_exempt_reserve_lamports == h.rent
    assert fees.service_fee_lamports == 0
    assert [i.type for i in plan.prepared.instructions][-2:] == ["CreateAccountWithSeed", "Split"]
    before = balance(h.svm, wallet)
    used = h.run(plan.prepared)
    assert used <= plan.prepared.compute_unit_limit
    assert balance(h.svm, wallet) == before - fees.total_debit_lamports
    assert balance(h.svm, source) == plan.source_lamports == h.rent + 3 * SOL
    assert balance(h.svm, plan.new_stake_account) == plan.new_account_lamports == h.rent + 2 * SOL
    # The new account is the same position, cut in two: same voter, same epochs.
    voter, stake, activated, deactivated = delegation_of(h, plan.new_stake_account)
    assert (voter, stake) == (h.vote, 2 * SOL)
    assert (activated, deactivated) == delegation_of(h, source)[2:]
    assert h.view(plan.new_stake_account).state is AccountState.ACTIVE
    assert h.view(source).active_lamports == 3 * SOL
    new = h.account(plan.new_stake_account)
    assert (new.staker, new.withdrawer, new.lockup) == (wallet, wallet, Lockup())


def test_split_of_activating_stake_keeps_both_parts_activating(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    source = h.stake(3 * SOL)
    plan = build_split_transaction(
        SplitRequest(wallet=wallet, stake_account=source, amount_lamports=SOL, seed="split:b"),
        split_context(h, source),
    )
    h.run(plan.prepared)
    assert h.view(plan.new_stake_account).state is AccountState.ACTIVATING
    assert h.view(source).activating_lamports == 2 * SOL
    h.cluster.advance()
    assert h.view(plan.new_stake_account).active_lamports == SOL


def test_split_of_unstaked_account_moves_lamports_down_to_the_reserve(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    source = h.stake(3 * SOL)
    h.cluster.advance()
    ok(send(h.svm, [stake_deactivate(stake_account=source, staker=wallet)], [h.wallet]))
    h.cluster.advance()
    assert h.view(source).state is AccountState.INACTIVE
    # All but the reserve may go: below the minimum delegation on both sides is fine.
    most = 3 * SOL
    with pytest.raises(InsufficientLamportsError) as caught:
        build_split_transaction(
            SplitRequest(
                wallet=wallet, stake_account=source, amount_lamports=most + 1, seed="split:c"
            ),
            split_context(h, source),
        )
    assert caught.value.reason == "INSUFFICIENT_FUNDS"
    assert caught.value.metadata["nearest_lower_lamports"] == str(most)
    assert not h.program_accepts(h.raw_split(source, most + 1))
    plan = build_split_transaction(
        SplitRequest(wallet=wallet, stake_account=source, amount_lamports=most, seed="split:c"),
        split_context(h, source),
    )
    assert plan.stake_lamports == 0 and plan.vote_account is None
    h.run(plan.prepared)
    assert balance(h.svm, source) == h.rent
    assert balance(h.svm, plan.new_stake_account) == h.rent + most
    assert h.view(plan.new_stake_account).withdrawable_lamports == h.rent + most


def test_split_by_a_separate_stake_authority_lists_it_as_signer(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    staker = Keypair()
    source = h.stake(4 * SOL, staker=staker.pubkey())
    plan = build_split_transaction(
        SplitRequest(wallet=wallet, stake_account=source, amount_lamports=SOL, seed="split:d"),
        split_context(h, source),
    )
    assert plan.prepared.required_signers == (wallet, staker.pubkey())
    h.run(plan.prepared, staker)
    assert h.account(plan.new_stake_account).staker == staker.pubkey()


def test_split_refusals_name_the_nearest_amounts(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    source = h.stake(5 * SOL // 2)
    h.cluster.advance()

    def refused(amount: int) -> SplitAmountError | InsufficientStakeError:
        with pytest.raises((SplitAmountError, InsufficientStakeError)) as caught:
            build_split_transaction(
                SplitRequest(
                    wallet=wallet, stake_account=source, amount_lamports=amount, seed="split:e"
                ),
                split_context(h, source),
            )
        # The stake program refuses the same split.
        assert not h.program_accepts(h.raw_split(source, amount))
        error = caught.value
        assert isinstance(error, SplitAmountError | InsufficientStakeError)
        return error

    low = refused(SOL // 2)
    assert (low.reason, low.metadata["nearest_higher_lamports"]) == (
        "BELOW_MINIMUM_DELEGATION",
        str(SOL),
    )
    assert "nearest_lower_lamports" not in low.metadata
    high = refused(2 * SOL)
    assert high.metadata["nearest_lower_lamports"] == str(3 * SOL // 2)
    assert "nearest_higher_lamports" not in high.metadata
    over = refused(3 * SOL)
    assert over.reason == "INSUFFICIENT_STAKE"
    # Both boundaries work.
    for amount in (SOL, 3 * SOL // 2):
        assert h.program_accepts(h.raw_split(source, amount))
    other = Keypair()
    foreign = h.stake(2 * SOL)
    account = h.account(foreign)
    with pytest.raises(NotWithdrawAuthorityError):
        build_split_transaction(
            SplitRequest(
                wallet=other.pubkey(), stake_account=foreign, amount_lamports=SOL, seed="split:f"
            ),
            SplitContext(
                lifetime=h.lifetime(),
                account=account,
                epoch=h.cluster.epoch,
                history=h.cluster.history,
                rent_exempt_reserve_lamports=h.rent,
                minimum_delegation_lamports=SOL,
            ),
        )


# --- move -----------------------------------------------------------------------------


def test_move_stake_between_active_accounts_and_into_an_inactive_one(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    a, b, c = h.stake(5 * SOL), h.stake(2 * SOL), h.stake(2 * SOL)
    h.cluster.advance()
    ok(send(h.svm, [stake_deactivate(stake_account=c, staker=wallet)], [h.wallet]))
    h.cluster.advance()

    plan = build_move_transaction(
        MoveRequest(wallet=wallet, source=a, destination=b, amount_lamports=2 * SOL),
        move_context(h, a, b),
    )
    assert plan.prepared.fees.total_debit_lamports == FEE
    assert (plan.source_stake_lamports, plan.destination_stake_lamports) == (3 * SOL, 4 * SOL)
    before = {k: balance(h.svm, k) for k in (wallet, a, b)}
    used = h.run(plan.prepared)
    assert used <= plan.prepared.compute_unit_limit
    assert balance(h.svm, wallet) == before[wallet] - FEE
    assert balance(h.svm, a) == plan.source_lamports == before[a] - 2 * SOL
    assert balance(h.svm, b) == plan.destination_lamports == before[b] + 2 * SOL
    assert h.view(a).active_lamports == 3 * SOL and h.view(b).active_lamports == 4 * SOL

    # Into an inactive account: it is delegated to the same validator, active at once.
    plan = build_move_transaction(
        MoveRequest(wallet=wallet, source=b, destination=c, amount_lamports=SOL),
        move_context(h, b, c),
    )
    assert plan.destination_activated and plan.vote_account == h.vote
    h.run(plan.prepared)
    view = h.view(c)
    assert (view.state, view.active_lamports, view.voter) == (AccountState.ACTIVE, SOL, h.vote)

    # All of a source's stake: it is left initialized, undelegated, with its reserve.
    plan = build_move_transaction(
        MoveRequest(wallet=wallet, source=c, destination=a, amount_lamports=SOL),
        move_context(h, c, a),
    )
    assert plan.source_stake_lamports == 0
    h.run(plan.prepared)
    assert h.account(c).account.state is StakeStateKind.INITIALIZED
    assert h.view(c).state is AccountState.INITIALIZED
    assert balance(h.svm, c) == h.rent + 2 * SOL  # its old cooled-down lamports stay
    assert h.view(a).active_lamports == 4 * SOL


def test_move_lamports_moves_only_what_is_neither_stake_nor_reserve(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    a, b = h.stake(2 * SOL), h.stake(2 * SOL)
    h.cluster.advance()
    ok(send(h.svm, [system_transfer(source=wallet, destination=a, lamports=SOL)], [h.wallet]))
    request = MoveRequest(
        wallet=wallet, source=a, destination=b, amount_lamports=SOL + 1, move_type=MoveType.LAMPORTS
    )
    with pytest.raises(InsufficientLamportsError) as caught:
        build_move_transaction(request, move_context(h, a, b))
    assert caught.value.metadata["available_lamports"] == str(SOL)
    plan = build_move_transaction(
        MoveRequest(
            wallet=wallet, source=a, destination=b, amount_lamports=SOL, move_type=MoveType.LAMPORTS
        ),
        move_context(h, a, b),
    )
    assert plan.vote_account is None and plan.source_stake_lamports == 2 * SOL
    before = {k: balance(h.svm, k) for k in (wallet, a, b)}
    h.run(plan.prepared)
    assert balance(h.svm, wallet) == before[wallet] - FEE
    assert balance(h.svm, a) == before[a] - SOL and balance(h.svm, b) == before[b] + SOL
    # The lamports arrive as free (inactive) lamports: withdrawable from b now.
    assert h.view(b).withdrawable_lamports == SOL
    assert delegation_of(h, b)[1] == 2 * SOL


def test_move_refusals_agree_with_the_program(harness: Harness, funder: Keypair) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    a, b = h.stake(3 * SOL), h.stake(2 * SOL)
    other_staker = Keypair()
    c = h.stake(2 * SOL, staker=other_staker.pubkey())
    elsewhere = h.stake(2 * SOL, vote=create_vote_account(h.svm, funder))
    locked = h.stake(2 * SOL, lockup=Lockup(epoch=100, custodian=Keypair().pubkey()))
    h.cluster.advance()
    fresh = h.stake(2 * SOL)

    def refused(
        source: Pubkey, destination: Pubkey, amount: int, move_type: MoveType = MoveType.STAKE
    ) -> Exception:
        with pytest.raises(Exception) as caught:
            build_move_transaction(
                MoveRequest(
                    wallet=wallet,
                    source=source,
                    destination=destination,
                    amount_lamports=amount,
                    move_type=move_type,
                ),
                move_context(h, source, destination),
            )
        if move_type is MoveType.STAKE:
            raw = stake_move_stake(
                source=source, destination=destination, staker=wallet, lamports=amount
            )
            assert not h.program_accepts([raw])
        return caught.value

    def mismatch(error: Exception) -> str:
        assert isinstance(error, MoveMismatchError) and error.reason == "MOVE_MISMATCH"
        return error.mismatch

    assert mismatch(refused(a, elsewhere, SOL)) == "voter"
    assert mismatch(refused(a, c, SOL)) == "authorities"
    assert mismatch(refused(a, locked, SOL)) == "lockup"
    assert mismatch(refused(fresh, a, SOL)) == "state"  # activating source
    assert mismatch(refused(a, fresh, SOL)) == "state"  # activating destination
    assert mismatch(refused(fresh, a, SOL, MoveType.LAMPORTS)) == "state"
    below = refused(a, b, 5 * SOL // 2)
    assert isinstance(below, MoveAmountError) and below.reason == "BELOW_MINIMUM_DELEGATION"
    assert below.metadata["nearest_lower_lamports"] == str(2 * SOL)
    assert below.metadata["nearest_higher_lamports"] == str(3 * SOL)
    assert isinstance(refused(a, b, 4 * SOL), InsufficientStakeError)
    # A partly deactivated (transient) account moves nothing.
    ok(send(h.svm, [stake_deactivate(stake_account=b, staker=wallet)], [h.wallet]))
    assert mismatch(refused(a, b, SOL)) == "transient_state"
    h.cluster.advance()
    # b is now inactive: it must receive at least the minimum delegation.
    small = refused(a, b, SOL // 2)
    assert isinstance(small, MoveAmountError)
    assert small.metadata["nearest_higher_lamports"] == str(SOL)
    with pytest.raises(SameStakeAccountError):
        MoveRequest(wallet=wallet, source=a, destination=a, amount_lamports=SOL)


# --- authorize ------------------------------------------------------------------------


def test_authorize_checked_staker_then_withdrawer(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    account = h.stake(2 * SOL)
    staker = Keypair()
    plan = build_authorize_transaction(
        AuthorizeRequest(
            wallet=wallet,
            stake_account=account,
            new_authority=staker.pubkey(),
            role=StakeAuthorize.STAKER,
        ),
        authorize_context(h, account),
    )
    assert plan.prepared.required_signers == (wallet, staker.pubkey())
    assert [i.type for i in plan.prepared.instructions][-1] == "AuthorizeChecked"
    assert not plan.leaves_wallet and plan.previous_authority == wallet
    before = balance(h.svm, wallet)
    used = h.run(plan.prepared, staker)
    assert used <= plan.prepared.compute_unit_limit
    assert balance(h.svm, wallet) == before - 2 * FEE  # two signatures
    assert plan.prepared.fees.total_debit_lamports == 2 * FEE
    assert (h.account(account).staker, h.account(account).withdrawer) == (staker.pubkey(), wallet)

    heir = Keypair()
    plan = build_authorize_transaction(
        AuthorizeRequest(
            wallet=wallet,
            stake_account=account,
            new_authority=heir.pubkey(),
            role=StakeAuthorize.WITHDRAWER,
        ),
        authorize_context(h, account),
    )
    assert plan.leaves_wallet and plan.account_lamports == 2 * SOL + h.rent
    h.run(plan.prepared, heir)
    assert h.account(account).withdrawer == heir.pubkey()
    with pytest.raises(NotWithdrawAuthorityError):
        build_authorize_transaction(
            AuthorizeRequest(
                wallet=wallet,
                stake_account=account,
                new_authority=wallet,
                role=StakeAuthorize.STAKER,
            ),
            authorize_context(h, account),
        )


def test_unchecked_authorize_hands_a_role_to_a_program_address(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    account = h.stake(2 * SOL)
    pda, _ = Pubkey.find_program_address([b"vault"], STAKE_PROGRAM)
    with pytest.raises(InvalidAddressError) as caught:
        AuthorizeRequest(
            wallet=wallet, stake_account=account, new_authority=pda, role=StakeAuthorize.STAKER
        )
    assert "unchecked" in caught.value.message
    plan = build_authorize_transaction(
        AuthorizeRequest(
            wallet=wallet,
            stake_account=account,
            new_authority=pda,
            role=StakeAuthorize.STAKER,
            checked=False,
        ),
        authorize_context(h, account),
    )
    assert plan.prepared.required_signers == (wallet,)
    assert [i.type for i in plan.prepared.instructions][-1] == "Authorize"
    h.run(plan.prepared)
    assert h.account(account).staker == pda
    with pytest.raises(AuthorityUnchangedError):
        build_authorize_transaction(
            AuthorizeRequest(
                wallet=wallet,
                stake_account=account,
                new_authority=pda,
                role=StakeAuthorize.STAKER,
                checked=False,
            ),
            authorize_context(h, account),
        )


def test_withdrawer_change_under_a_lockup_needs_its_custodian(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    custodian = Keypair()
    account = h.stake(2 * SOL, lockup=Lockup(epoch=50, custodian=custodian.pubkey()))
    heir = Keypair()

    def request(custodian_key: Pubkey | None) -> AuthorizeRequest:
        return AuthorizeRequest(
            wallet=wallet,
            stake_account=account,
            new_authority=heir.pubkey(),
            role=StakeAuthorize.WITHDRAWER,
            custodian=custodian_key,
        )

    for named in (None, Keypair().pubkey()):
        with pytest.raises(LockupInForceError) as caught:
            build_authorize_transaction(request(named), authorize_context(h, account))
        assert caught.value.metadata["custodian"] == str(custodian.pubkey())
        assert caught.value.metadata["lockup_epoch"] == "50"
    raw = stake_authorize_checked(
        stake_account=account,
        authority=wallet,
        new_authority=heir.pubkey(),
        role=StakeAuthorize.WITHDRAWER,
    )
    assert not h.program_accepts([raw], heir)
    # The staker may change under a lockup without the custodian.
    staker_plan = build_authorize_transaction(
        AuthorizeRequest(
            wallet=wallet,
            stake_account=account,
            new_authority=heir.pubkey(),
            role=StakeAuthorize.STAKER,
        ),
        authorize_context(h, account),
    )
    assert staker_plan.custodian is None
    plan = build_authorize_transaction(request(custodian.pubkey()), authorize_context(h, account))
    assert plan.custodian == custodian.pubkey()
    assert set(plan.prepared.required_signers) == {wallet, heir.pubkey(), custodian.pubkey()}
    h.run(plan.prepared, heir, custodian)
    assert h.account(account).withdrawer == heir.pubkey()


# --- set lockup -----------------------------------------------------------------------


def test_set_lockup_by_the_withdrawer_then_only_by_the_custodian(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    account = h.stake(2 * SOL)
    custodian = Keypair()
    plan = build_set_lockup_transaction(
        SetLockupRequest(
            wallet=wallet, stake_account=account, epoch=40, custodian=custodian.pubkey()
        ),
        lockup_context(h, account),
    )
    assert plan.authority == wallet and not plan.custodian_signs and plan.lockup_in_force
    assert plan.prepared.required_signers == (wallet, custodian.pubkey())
    assert [i.type for i in plan.prepared.instructions][-1] == "SetLockupChecked"
    used = h.run(plan.prepared, custodian)
    assert used <= plan.prepared.compute_unit_limit
    assert h.account(account).lockup == Lockup(epoch=40, custodian=custodian.pubkey())
    assert h.view(account).lockup_in_force

    # In force now: the withdrawer alone may not change it (nor may the program).
    with pytest.raises(LockupInForceError) as caught:
        build_set_lockup_transaction(
            SetLockupRequest(wallet=wallet, stake_account=account, epoch=0),
            lockup_context(h, account),
        )
    assert caught.value.metadata["custodian"] == str(custodian.pubkey())
    raw = stake_set_lockup_checked(stake_account=account, authority=wallet, epoch=0)
    assert not h.program_accepts([raw])
    plan = build_set_lockup_transaction(
        SetLockupRequest(wallet=wallet, stake_account=account, epoch=0, custodian_signs=True),
        lockup_context(h, account),
    )
    assert plan.authority == custodian.pubkey() and plan.custodian_signs
    assert not plan.lockup_in_force
    h.run(plan.prepared, custodian)
    assert h.account(account).lockup.epoch == 0 and not h.view(account).lockup_in_force
    with pytest.raises(LockupUnchangedError):
        build_set_lockup_transaction(
            SetLockupRequest(wallet=wallet, stake_account=account, epoch=0),
            lockup_context(h, account),
        )


def test_set_lockup_whose_custodian_is_the_wallet_needs_no_other_key(harness: Harness) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    account = h.stake(2 * SOL, lockup=Lockup(unix_timestamp=2**40, custodian=wallet))
    plan = build_set_lockup_transaction(
        SetLockupRequest(wallet=wallet, stake_account=account, unix_timestamp=0),
        lockup_context(h, account),
    )
    assert plan.prepared.required_signers == (wallet,)
    h.run(plan.prepared)
    assert h.account(account).lockup == Lockup(unix_timestamp=0, custodian=wallet)


# --- redelegate -----------------------------------------------------------------------


def test_redelegate_activating_stake_in_one_transaction(harness: Harness, funder: Keypair) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    target = create_vote_account(h.svm, funder)
    account = h.stake(2 * SOL)
    plan = build_redelegate_transaction(
        RedelegateRequest(
            wallet=wallet, stake_account=account, vote_account=target, seed="stake:r1"
        ),
        redelegate_context(h, account),
    )
    assert (plan.step, plan.transactions, plan.follow_up) == (RedelegateStep.DELEGATE, 1, None)
    assert plan.strategy is RedelegateStrategy.REUSE_ACCOUNT
    assert plan.previous_vote_account == h.vote and plan.stake_lamports == 2 * SOL
    assert plan.expected_active_epoch == h.cluster.epoch + 1
    before = balance(h.svm, wallet)
    used = h.run(plan.prepared)
    assert used <= plan.prepared.compute_unit_limit
    assert balance(h.svm, wallet) == before - FEE
    assert delegation_of(h, account)[:2] == (target, 2 * SOL)
    h.cluster.advance()
    assert (h.view(account).state, h.view(account).voter) == (AccountState.ACTIVE, target)


def test_redelegate_active_stake_to_a_new_account_when_the_wallet_can_fund_it(
    harness: Harness, funder: Keypair
) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    target = create_vote_account(h.svm, funder)
    staker = Keypair()
    lockup = Lockup(epoch=30, custodian=Keypair().pubkey())
    account = h.stake(3 * SOL, staker=staker.pubkey(), lockup=lockup)
    h.cluster.advance()
    start = h.cluster.epoch
    plan = build_redelegate_transaction(
        RedelegateRequest(
            wallet=wallet, stake_account=account, vote_account=target, seed="stake:r2"
        ),
        redelegate_context(h, account),
    )
    assert (plan.step, plan.strategy, plan.transactions) == (
        RedelegateStep.NEW_ACCOUNT,
        RedelegateStrategy.NEW_ACCOUNT,
        1,
    )
    assert plan.new_stake_account == stake_account_address(base=wallet, seed="stake:r2")
    assert plan.expected_active_epoch == start + 1
    assert plan.follow_up is not None
    assert (plan.follow_up.kind, plan.follow_up.epoch) == (FollowUpKind.WITHDRAW, start + 1)
    assert set(plan.prepared.required_signers) == {wallet, staker.pubkey()}
    fees = plan.prepared.fees
    assert fees.total_debit_lamports == 3 * SOL + h.rent + 2 * FEE
    assert fees.service_fee_lamports == 0
    before = balance(h.svm, wallet)
    used = h.run(plan.prepared, staker)
    assert used <= plan.prepared.compute_unit_limit
    assert balance(h.svm, wallet) == before - fees.total_debit_lamports
    new = plan.new_stake_account
    assert new is not None
    # The same position at the new validator: stake, authorities and lockup.
    moved = h.account(new)
    assert (moved.staker, moved.withdrawer, moved.lockup) == (staker.pubkey(), wallet, lockup)
    assert h.view(new).state is AccountState.ACTIVATING
    assert h.view(account).state is AccountState.DEACTIVATING
    h.cluster.advance()
    assert (h.view(new).state, h.view(new).active_lamports) == (AccountState.ACTIVE, 3 * SOL)
    assert h.view(new).voter == target
    assert h.view(account).state is AccountState.INACTIVE


def test_redelegate_reuses_the_account_across_a_cooldown_without_funds(
    harness: Harness, funder: Keypair
) -> None:
    h = harness
    target = create_vote_account(h.svm, funder)
    poor = funded_keypair(h.svm, 5 * SOL)
    h.wallet = poor
    wallet = poor.pubkey()
    account = h.stake(4 * SOL)
    h.cluster.advance()
    start = h.cluster.epoch
    request = RedelegateRequest(
        wallet=wallet, stake_account=account, vote_account=target, seed="stake:r3"
    )
    with pytest.raises(InsufficientFundsError):
        build_redelegate_transaction(
            RedelegateRequest(
                wallet=wallet,
                stake_account=account,
                vote_account=target,
                seed="stake:r3",
                strategy=RedelegateStrategy.NEW_ACCOUNT,
            ),
            redelegate_context(h, account),
        )
    plan = build_redelegate_transaction(request, redelegate_context(h, account))
    assert (plan.step, plan.strategy, plan.transactions) == (
        RedelegateStep.DEACTIVATE,
        RedelegateStrategy.REUSE_ACCOUNT,
        2,
    )
    assert plan.follow_up is not None
    assert (plan.follow_up.kind, plan.follow_up.epoch) == (FollowUpKind.DELEGATE, start + 1)
    assert plan.expected_active_epoch == start + 2
    h.run(plan.prepared)
    with pytest.raises(StakeCoolingDownError) as caught:
        build_redelegate_transaction(request, redelegate_context(h, account))
    assert caught.value.ready_epoch == start + 1
    h.cluster.advance()
    follow = build_redelegate_transaction(request, redelegate_context(h, account))
    assert (follow.step, follow.transactions, follow.follow_up) == (
        RedelegateStep.DELEGATE,
        1,
        None,
    )
    assert follow.stake_lamports == 4 * SOL
    assert follow.expected_active_epoch == plan.expected_active_epoch
    h.run(follow.prepared)
    h.cluster.advance()
    view = h.view(account)
    assert (view.state, view.voter, view.active_lamports) == (AccountState.ACTIVE, target, 4 * SOL)


def test_auto_takes_a_new_account_only_if_the_wallet_keeps_a_reserve(
    harness: Harness, funder: Keypair
) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    target = create_vote_account(h.svm, funder)
    account = h.stake(3 * SOL)
    h.cluster.advance()
    debit = 3 * SOL + h.rent + FEE  # the new account, its reserve, one signature

    def step(balance_after: int, strategy: RedelegateStrategy) -> RedelegateStep:
        context = replace(
            redelegate_context(h, account), wallet_balance_lamports=debit + balance_after
        )
        return build_redelegate_transaction(
            RedelegateRequest(
                wallet=wallet,
                stake_account=account,
                vote_account=target,
                seed="stake:k",
                strategy=strategy,
            ),
            context,
        ).step

    assert step(h.rent, RedelegateStrategy.AUTO) is RedelegateStep.NEW_ACCOUNT
    assert step(h.rent - 1, RedelegateStrategy.AUTO) is RedelegateStep.DEACTIVATE
    # Asked for explicitly, the wallet may spend everything.
    assert step(0, RedelegateStrategy.NEW_ACCOUNT) is RedelegateStep.NEW_ACCOUNT
    with pytest.raises(InsufficientFundsError):
        step(-1, RedelegateStrategy.NEW_ACCOUNT)


def test_redelegate_refusals(harness: Harness, funder: Keypair) -> None:
    h = harness
    wallet = h.wallet.pubkey()
    account = h.stake(2 * SOL)
    with pytest.raises(AlreadyDelegatedError):
        build_redelegate_transaction(
            RedelegateRequest(
                wallet=wallet, stake_account=account, vote_account=h.vote, seed="stake:x"
            ),
            redelegate_context(h, account),
        )
    ok(send(h.svm, [stake_deactivate(stake_account=account, staker=wallet)], [h.wallet]))
    # Deactivated in its activation epoch: inactive at once, re-delegated in place.
    target = create_vote_account(h.svm, funder)
    with pytest.raises(StakeAccountStateError) as caught:
        build_redelegate_transaction(
            RedelegateRequest(
                wallet=wallet,
                stake_account=account,
                vote_account=target,
                seed="stake:x",
                strategy=RedelegateStrategy.NEW_ACCOUNT,
            ),
            redelegate_context(h, account),
        )
    assert caught.value.reason == "STAKE_ALREADY_DEACTIVATED"
    plan = build_redelegate_transaction(
        RedelegateRequest(wallet=wallet, stake_account=account, vote_account=target, seed="s:x"),
        redelegate_context(h, account),
    )
    assert plan.step is RedelegateStep.DELEGATE
    h.run(plan.prepared)
    assert delegation_of(h, account)[0] == target


# --- the largest variants, and the measurements behind the defaults ---------------------


def test_largest_variants_fit_and_stay_under_their_limits(
    harness: Harness, funder: Keypair
) -> None:
    """A separate stake authority, a durable nonce with its own authority, a priority
    fee and the longest memo, as legacy transactions: each plan fits 1232 bytes,
    executes, and stays under its default compute unit limit."""
    h = harness
    wallet = h.wallet.pubkey()
    staker = funded_keypair(h.svm, SOL)
    nonce_authority = Keypair()
    target = create_vote_account(h.svm, funder)
    a, b, c = (h.stake(3 * SOL, staker=staker.pubkey()) for _ in range(3))
    h.cluster.advance()
    options = TransactionOptions(
        version=TransactionVersion.LEGACY,
        compute_unit_price_micro_lamports=10**6,
        memo=LONGEST_MEMO,
    )

    def nonce() -> DurableNonce:
        account = create_nonce_account(h.svm, h.wallet, nonce_authority.pubkey())
        return DurableNonce(
            nonce_account=account,
            nonce_authority=nonce_authority.pubkey(),
            nonce=stored_nonce(h.svm, account),
        )

    def run(prepared: PreparedTransaction, *signers: Keypair) -> None:
        assert len(prepared.transaction) <= 1232
        assert h.run(prepared, nonce_authority, *signers) <= prepared.compute_unit_limit

    split = build_split_transaction(
        SplitRequest(
            wallet=wallet,
            stake_account=a,
            amount_lamports=SOL,
            seed="split:" + "m" * 26,
            options=options,
        ),
        split_context(h, a, nonce()),
    )
    run(split.prepared, staker)
    move = build_move_transaction(
        MoveRequest(wallet=wallet, source=a, destination=b, amount_lamports=SOL, options=options),
        replace(move_context(h, a, b), lifetime=nonce()),
    )
    run(move.prepared, staker)
    heir = Keypair()
    custodian = Keypair()
    lockup = build_set_lockup_transaction(
        SetLockupRequest(
            wallet=wallet,
            stake_account=b,
            unix_timestamp=2**40,
            epoch=99,
            custodian=custodian.pubkey(),
            options=options,
        ),
        replace(lockup_context(h, b), lifetime=nonce()),
    )
    run(lockup.prepared, custodian)
    authorize = build_authorize_transaction(
        AuthorizeRequest(
            wallet=wallet,
            stake_account=b,
            new_authority=heir.pubkey(),
            role=StakeAuthorize.WITHDRAWER,
            custodian=custodian.pubkey(),
            options=options,
        ),
        replace(authorize_context(h, b), lifetime=nonce()),
    )
    run(authorize.prepared, heir, custodian)

    # Deactivate plus a whole new account, with the old stake authority signing: the
    # one plan that leaves less room for a memo (documented: 136 bytes at worst).
    def redelegate(memo: str) -> PreparedRedelegateTransaction:
        return build_redelegate_transaction(
            RedelegateRequest(
                wallet=wallet,
                stake_account=c,
                vote_account=target,
                seed="stake:" + "n" * 26,
                options=replace(options, memo=memo),
            ),
            redelegate_context(h, c, nonce()),
        )

    with pytest.raises(TransactionTooLargeError):
        redelegate(LONGEST_MEMO)
    with pytest.raises(TransactionTooLargeError):
        redelegate("m" * (REDELEGATE_MEMO_ROOM + 1))
    plan = redelegate("m" * REDELEGATE_MEMO_ROOM)
    assert plan.step is RedelegateStep.NEW_ACCOUNT
    run(plan.prepared, staker)


def test_recorded_compute_units_are_current(harness: Harness, funder: Keypair) -> None:
    """Each plan's instruction costs what its constant says (within 3%), measured as
    the difference it makes to a transaction with the compute budget instructions."""
    h = harness
    wallet = h.wallet.pubkey()
    accounts = [h.stake(3 * SOL) for _ in range(4)]
    h.cluster.advance()
    ok(
        send(
            h.svm,
            [system_transfer(source=wallet, destination=accounts[2], lamports=SOL)],
            [h.wallet],
        )
    )
    # The reference: the compute budget instructions alone.
    budget = prepare_transaction(
        payer=wallet,
        body=[],
        options=TransactionOptions(),
        lifetime=h.lifetime(),
        default_compute_unit_limit=1_000,
        body_debit_lamports=0,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
    )
    base = h.run(budget)
    measured = {}
    split = build_split_transaction(
        SplitRequest(wallet=wallet, stake_account=accounts[0], amount_lamports=SOL, seed="s:m"),
        split_context(h, accounts[0]),
    )
    measured[MEASURED_SPLIT_ACCOUNT_CU] = h.run(split.prepared) - base
    move = build_move_transaction(
        MoveRequest(
            wallet=wallet, source=accounts[0], destination=accounts[1], amount_lamports=SOL
        ),
        move_context(h, accounts[0], accounts[1]),
    )
    measured[MEASURED_MOVE_STAKE_CU] = h.run(move.prepared) - base
    lamports = build_move_transaction(
        MoveRequest(
            wallet=wallet,
            source=accounts[2],
            destination=accounts[1],
            amount_lamports=SOL,
            move_type=MoveType.LAMPORTS,
        ),
        move_context(h, accounts[2], accounts[1]),
    )
    measured[MEASURED_MOVE_LAMPORTS_CU] = h.run(lamports.prepared) - base
    staker = Keypair()
    authorize = build_authorize_transaction(
        AuthorizeRequest(
            wallet=wallet,
            stake_account=accounts[1],
            new_authority=staker.pubkey(),
            role=StakeAuthorize.STAKER,
        ),
        authorize_context(h, accounts[1]),
    )
    measured[MEASURED_AUTHORIZE_CHECKED_CU] = h.run(authorize.prepared, staker) - base
    custodian = Keypair()
    lockup = build_set_lockup_transaction(
        SetLockupRequest(
            wallet=wallet,
            stake_account=accounts[3],
            epoch=1,
            unix_timestamp=1,
            custodian=custodian.pubkey(),
        ),
        lockup_context(h, accounts[3]),
    )
    measured[MEASURED_SET_LOCKUP_CU] = h.run(lockup.prepared, custodian) - base
    fresh = h.stake(2 * SOL)
    delegate = build_redelegate_transaction(
        RedelegateRequest(
            wallet=wallet,
            stake_account=fresh,
            vote_account=create_vote_account(h.svm, funder),
            seed="s:r",
        ),
        redelegate_context(h, fresh),
    )
    measured[MEASURED_DELEGATE_CU] = h.run(delegate.prepared) - base
    print(f"\nbase {base} measured {measured}")
    for recorded, used in measured.items():
        assert abs(used - recorded) <= recorded * 3 // 100, (recorded, used)
