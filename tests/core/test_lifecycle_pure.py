"""Pure pieces of the staking lifecycle: validator ranking, positions and their next
state, merge rules, withdrawal choice, pagination and sysvar decoding. No chain."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from service.core import (
    Authorized,
    Delegation,
    FetchedStakeAccount,
    InvalidArgumentError,
    Lockup,
    LockupInForceError,
    MergeKind,
    Meta,
    PageToken,
    RecentBlockhash,
    StakeAccount,
    StakeHistoryEntry,
    StakeStateKind,
    StakeView,
    WithdrawContext,
    WithdrawRequest,
    WithdrawUnavailableError,
    build_withdraw_transaction,
    decode_clock,
    decode_epoch_rewards,
    decode_page_token,
    filter_validators,
    fingerprint,
    merge_kind,
    merge_mismatch,
    page_size,
    rank_validators,
    seconds_until_epoch,
    settling_epoch,
    superminority,
    view_stake_account,
)
from service.core.positions import AccountState
from service.core.programs import U64_MAX

SOL = 10**9
RENT = 2_282_880
WALLET = Pubkey.new_unique()
VOTE = Pubkey.new_unique()


# --- validators ---------------------------------------------------------------------


@dataclass(frozen=True)
class Vote:
    vote_account: str
    commission: int
    activated_stake: int
    epoch_credits: tuple[tuple[int, int, int], ...]
    delinquent: bool = False
    node_pubkey: str = "node"
    last_vote: int = 100
    root_slot: int = 68


def _credits(*per_epoch: int, first: int = 0) -> tuple[tuple[int, int, int], ...]:
    out, total = [], 0
    for i, earned in enumerate(per_epoch):
        out.append((first + i, total + earned, total))
        total += earned
    return tuple(out)


def test_ranking_weights_commission_performance_and_concentration() -> None:
    votes = [
        # The largest validator alone holds more than a third: the superminority.
        Vote("big", 0, 700, _credits(100, 100, 100, 50)),
        Vote("cheap", 0, 100, _credits(100, 100, 100, 40)),
        Vote("pricey", 10, 100, _credits(100, 100, 100, 40)),
        Vote("slow", 0, 100, _credits(50, 50, 50, 20)),
        Vote("gone", 0, 100, _credits(100, 100, 100, 1), delinquent=True),
    ]
    ranked = rank_validators(votes, epoch=3, featured=["slow"])
    assert [r.vote_account for r in ranked] == ["cheap", "pricey", "big", "slow", "gone"]
    by = {r.vote_account: r for r in ranked}
    assert by["cheap"].score == pytest.approx(1.0)
    assert by["pricey"].score == pytest.approx(0.4 * 0.9 + 0.4 + 0.2)
    assert by["big"].superminority and by["big"].score == pytest.approx(0.8)
    assert by["slow"].performance == pytest.approx(0.5)
    assert by["slow"].featured and "featured by the operator" in by["slow"].reasons
    assert by["gone"].score == 0 and by["gone"].reasons[0].startswith("delinquent")
    assert by["cheap"].average_epoch_credits == 100 and by["cheap"].current_epoch_credits == 40
    assert superminority(votes) == frozenset({"big"})
    assert [r.vote_account for r in filter_validators(ranked, max_commission_percent=5)] == [
        "cheap",
        "big",
        "slow",
    ]
    assert len(filter_validators(ranked, include_delinquent=True)) == 5


def test_ranking_without_completed_epochs_uses_the_current_one() -> None:
    ranked = rank_validators(
        [Vote("a", 5, 10, _credits(80)), Vote("b", 5, 10, _credits(40))], epoch=0
    )
    assert [r.performance for r in ranked] == [1.0, 0.5]
    assert "current epoch so far" in ranked[0].reasons[1]
    assert ranked[0].average_epoch_credits == 0


# --- positions --------------------------------------------------------------------


def _fetched(
    *,
    stake: int | None,
    activation: int = 0,
    deactivation: int = U64_MAX,
    extra: int = 0,
    lockup: Lockup | None = None,
    staker: Pubkey = WALLET,
) -> FetchedStakeAccount:
    meta = Meta(
        rent_exempt_reserve=RENT,
        authorized=Authorized(staker=staker, withdrawer=WALLET),
        lockup=lockup or Lockup(),
    )
    if stake is None:
        account = StakeAccount(state=StakeStateKind.INITIALIZED, meta=meta)
        lamports = RENT + extra
    else:
        account = StakeAccount(
            state=StakeStateKind.STAKE,
            meta=meta,
            delegation=Delegation(
                voter=VOTE,
                stake=stake,
                activation_epoch=activation,
                deactivation_epoch=deactivation,
            ),
        )
        lamports = RENT + stake + extra
    return FetchedStakeAccount(address=Pubkey.new_unique(), lamports=lamports, account=account)


SLOW = {
    e: StakeHistoryEntry(effective=100 * SOL, activating=50 * SOL, deactivating=50 * SOL)
    for e in range(0, 10)
}


def test_positions_through_a_life() -> None:
    def view(f: FetchedStakeAccount, epoch: int) -> StakeView:
        return view_stake_account(
            f,
            wallet=WALLET,
            epoch=epoch,
            unix_timestamp=0,
            history={e: h for e, h in SLOW.items() if e < epoch},
            rent_exempt_reserve=RENT,
        )

    fresh = view(_fetched(stake=10 * SOL, activation=3), 3)
    assert (fresh.state, fresh.activating_lamports, fresh.withdrawable_lamports) == (
        AccountState.ACTIVATING,
        10 * SOL,
        0,
    )
    assert fresh.next_state is AccountState.ACTIVE
    # 9% of 100 SOL spread over 50 SOL activating: 1.8 SOL of 10 per epoch.
    warming = view(_fetched(stake=10 * SOL, activation=3), 4)
    assert warming.active_lamports == int(10 / 50 * (100 * SOL * 0.09))
    assert warming.next_state_epoch is not None and warming.next_state_epoch > 5
    initialized = view(_fetched(stake=None, extra=SOL), 4)
    assert initialized.state is AccountState.INITIALIZED
    assert initialized.withdrawable_lamports == RENT + SOL and initialized.can_close
    same_epoch = view(_fetched(stake=SOL, activation=4, deactivation=4), 4)
    assert same_epoch.state is AccountState.INACTIVE and same_epoch.can_close
    cooling = view(_fetched(stake=10 * SOL, activation=0, deactivation=5, extra=7), 6)
    assert (
        cooling.state is AccountState.DEACTIVATING and cooling.next_state is AccountState.INACTIVE
    )
    assert cooling.withdrawable_lamports == cooling.inactive_lamports
    assert cooling.lamports == (
        cooling.rent_exempt_reserve_lamports
        + cooling.active_lamports
        + cooling.activating_lamports
        + cooling.deactivating_lamports
        + cooling.inactive_lamports
    )
    locked = view(
        _fetched(stake=None, extra=SOL, lockup=Lockup(epoch=99, custodian=Pubkey.new_unique())), 4
    )
    assert locked.lockup_in_force and locked.withdrawable_lamports == 0
    mine = view(_fetched(stake=None, extra=SOL, lockup=Lockup(epoch=99, custodian=WALLET)), 4)
    assert mine.lockup_in_force and mine.custodian_signs and mine.withdrawable_lamports > 0


def test_settling_epoch_projection() -> None:
    d = Delegation(voter=VOTE, stake=SOL, activation_epoch=5)
    # No history for the activation epoch: fully active the epoch after.
    assert settling_epoch(d, 5, {}) == 6
    assert settling_epoch(d, 7, {}) == 7
    big = {4: StakeHistoryEntry(effective=10**9 * SOL, activating=SOL)}
    assert settling_epoch(d, 5, big) == 6
    # A tiny cluster never settles within the projection window.
    tiny = {4: StakeHistoryEntry(effective=1, activating=10**9 * SOL)}
    assert settling_epoch(d, 5, tiny) is None


def test_seconds_until_epoch() -> None:
    def until(target: int) -> float:
        return seconds_until_epoch(
            target, epoch=10, slot_index=100, slots_in_epoch=1000, slot_seconds=0.5
        )

    assert (until(9), until(10), until(11), until(13)) == (0, 0, 450, 450 + 2 * 500)


# --- merge rules -----------------------------------------------------------------------


def test_merge_rules() -> None:
    history = {e: StakeHistoryEntry(effective=10**6 * SOL, activating=SOL) for e in range(10)}

    def kind(f: FetchedStakeAccount, epoch: int = 5) -> MergeKind:
        return merge_kind(f, epoch=epoch, history=history)

    active = _fetched(stake=2 * SOL, activation=1)
    assert kind(active) is MergeKind.FULLY_ACTIVE
    assert kind(_fetched(stake=SOL, activation=5)) is MergeKind.ACTIVATION_EPOCH
    assert kind(_fetched(stake=None)) is MergeKind.INACTIVE
    assert kind(_fetched(stake=SOL, activation=1, deactivation=5)) is MergeKind.TRANSIENT

    def why(source: FetchedStakeAccount, destination: FetchedStakeAccount = active) -> str | None:
        problem = merge_mismatch(destination, source, epoch=5, unix_timestamp=0, history=history)
        return problem.mismatch if problem is not None else None

    assert why(_fetched(stake=SOL, activation=2)) is None
    assert why(_fetched(stake=SOL, activation=2, staker=Pubkey.new_unique())) == "authorities"
    assert why(_fetched(stake=SOL, activation=2, lockup=Lockup(epoch=9))) == "lockup"
    # An expired lockup is no obstacle.
    assert why(_fetched(stake=SOL, activation=2, lockup=Lockup(epoch=3))) is None
    assert why(_fetched(stake=SOL, activation=1, deactivation=5)) == "transient_state"
    assert why(_fetched(stake=SOL, activation=5)) == "state"
    assert why(_fetched(stake=None)) == "state"
    other = _fetched(stake=SOL, activation=2)
    other_voter = FetchedStakeAccount(
        address=other.address,
        lamports=other.lamports,
        account=StakeAccount(
            state=StakeStateKind.STAKE,
            meta=other.account.meta,
            delegation=Delegation(voter=Pubkey.new_unique(), stake=SOL, activation_epoch=2),
        ),
    )
    assert why(other_voter) == "voter"
    # Inactive and activating combine either way.
    assert why(_fetched(stake=SOL, activation=5), _fetched(stake=None)) is None
    assert why(_fetched(stake=None), _fetched(stake=SOL, activation=5)) is None


# --- withdrawal choice --------------------------------------------------------------


def test_withdraw_choice_closes_first_and_explains_the_gap() -> None:
    history: dict[int, StakeHistoryEntry] = {}
    accounts = [
        _fetched(stake=None, extra=3 * SOL),  # closable: RENT + 3 SOL
        _fetched(stake=2 * SOL, activation=0, extra=SOL),  # active, 1 SOL surplus
    ]
    views = [
        view_stake_account(
            f, wallet=WALLET, epoch=5, unix_timestamp=0, history=history, rent_exempt_reserve=RENT
        )
        for f in accounts
    ]
    lifetime = RecentBlockhash(blockhash=Hash.default(), last_valid_block_height=1)
    context = WithdrawContext(lifetime=lifetime, accounts=views)
    plan = build_withdraw_transaction(
        WithdrawRequest(wallet=WALLET, amount_lamports=RENT + 3 * SOL + SOL // 2), context
    )
    assert [(w.lamports, w.closes_account) for w in plan.withdrawals] == [
        (RENT + 3 * SOL, True),
        (SOL // 2, False),
    ]
    assert plan.remaining_withdrawable_lamports == SOL // 2
    everything = build_withdraw_transaction(
        WithdrawRequest(wallet=WALLET, withdraw_all=True), context
    )
    assert everything.withdraw_lamports == RENT + 4 * SOL
    # From the closable account alone: between its partial maximum and its balance.
    with pytest.raises(WithdrawUnavailableError) as caught:
        build_withdraw_transaction(
            WithdrawRequest(
                wallet=WALLET, amount_lamports=3 * SOL + 1, stake_account=accounts[0].address
            ),
            context,
        )
    assert caught.value.metadata["max_partial_lamports"] == str(3 * SOL)
    with pytest.raises(InvalidArgumentError):
        WithdrawRequest(wallet=WALLET, amount_lamports=1, withdraw_all=True)
    locked = _fetched(stake=None, extra=SOL, lockup=Lockup(unix_timestamp=10**10))
    view = view_stake_account(
        locked, wallet=WALLET, epoch=5, unix_timestamp=0, history=history, rent_exempt_reserve=RENT
    )
    with pytest.raises(LockupInForceError) as lockup:
        build_withdraw_transaction(
            WithdrawRequest(wallet=WALLET, withdraw_all=True),
            WithdrawContext(lifetime=lifetime, accounts=[view]),
        )
    assert lockup.value.metadata["lockup_unix_timestamp"] == str(10**10)
    # A locked account whose lamports are all staked holds nothing the lockup alone
    # keeps: what stops the withdrawal is the stake (here still cooling down).
    staked = _fetched(stake=SOL, activation=0, lockup=Lockup(unix_timestamp=10**10))
    cooling = _fetched(stake=SOL, activation=0, deactivation=5)
    views = [
        view_stake_account(
            f, wallet=WALLET, epoch=5, unix_timestamp=0, history=history, rent_exempt_reserve=RENT
        )
        for f in (staked, cooling)
    ]
    for request in (
        WithdrawRequest(wallet=WALLET, withdraw_all=True),
        WithdrawRequest(wallet=WALLET, amount_lamports=SOL),
        WithdrawRequest(wallet=WALLET, withdraw_all=True, stake_account=staked.address),
    ):
        with pytest.raises(WithdrawUnavailableError) as nothing:
            build_withdraw_transaction(request, WithdrawContext(lifetime=lifetime, accounts=views))
        assert nothing.value.metadata["withdrawable_lamports"] == "0"
        if request.stake_account is None:  # the wallet's: the cooling stake is named
            assert "still cooling down" in str(nothing.value)


# --- pagination, sysvars ---------------------------------------------------------------


def test_page_sizes_and_tokens() -> None:
    assert (page_size(0), page_size(7), page_size(10_000)) == (50, 7, 500)
    with pytest.raises(InvalidArgumentError):
        page_size(-1)
    bound = fingerprint("wallet", 1)
    token = PageToken(kind="k", fingerprint=bound, position="abc").encode()
    assert decode_page_token(token, kind="k", fingerprint=bound) == PageToken(
        kind="k", fingerprint=bound, position="abc"
    )
    assert decode_page_token("", kind="k", fingerprint=bound) is None
    for bad, kind, fp in (
        (token, "other", bound),
        (token, "k", fingerprint(2)),
        ("%%", "k", bound),
    ):
        with pytest.raises(InvalidArgumentError) as caught:
            decode_page_token(bad, kind=kind, fingerprint=fp)
        assert caught.value.field == "page_token"


def test_sysvars_decode_what_the_runtime_writes() -> None:
    from solders.epoch_rewards import EpochRewards

    from service.core.programs import SYSVAR_CLOCK

    svm = LiteSVM()
    clock = svm.get_clock()
    account = svm.get_account(SYSVAR_CLOCK)
    assert account is not None
    decoded = decode_clock(bytes(account.data))
    assert (decoded.slot, decoded.epoch, decoded.unix_timestamp) == (
        clock.slot,
        clock.epoch,
        clock.unix_timestamp,
    )
    rewards_address = Pubkey.from_string("SysvarEpochRewards1111111111111111111111111")
    svm.set_epoch_rewards(
        EpochRewards(
            distribution_starting_block_height=90,
            num_partitions=12,
            parent_blockhash=Hash.default(),
            total_points=5,
            total_rewards=7,
            distributed_rewards=3,
            active=True,
        )
    )
    account = svm.get_account(rewards_address)
    assert account is not None
    rewards = decode_epoch_rewards(bytes(account.data))
    assert rewards.active and rewards.end_block_height == 102
    assert (rewards.total_rewards, rewards.distributed_rewards) == (7, 3)
    assert not decode_epoch_rewards(b"").active
    with pytest.raises(ValueError):
        decode_clock(b"\0" * 39)
