"""Warmup/cooldown math and the Withdraw limit (pure; chain agreement is in
test_chain_lifecycle.py)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from solders.pubkey import Pubkey

from service.core import (
    Authorized,
    Delegation,
    InvalidStakeAccountError,
    Lockup,
    Meta,
    StakeAccount,
    StakeActivation,
    StakeHistoryEntry,
    StakePhase,
    StakeStateKind,
    WarmupCooldownMath,
    WithdrawLimit,
    decode_stake_history,
    next_stake_history_entry,
    stake_activation,
    stake_position,
    to_solders_stake_history,
    withdraw_limit,
)
from service.core.programs import U64_MAX

SOL = 10**9
FLOAT = WarmupCooldownMath.FLOAT64
INT = WarmupCooldownMath.INTEGER_BPS

entries = st.builds(
    StakeHistoryEntry,
    effective=st.integers(0, 10**18),
    activating=st.integers(0, 10**18),
    deactivating=st.integers(0, 10**18),
)
histories = st.dictionaries(st.integers(0, 40), entries, max_size=40)
arithmetics = st.sampled_from(WarmupCooldownMath)


def _cluster_history(
    delegations: list[Delegation], epochs: int, arithmetic: WarmupCooldownMath = FLOAT
) -> dict[int, StakeHistoryEntry]:
    """History as the bank writes it, epoch by epoch."""
    history: dict[int, StakeHistoryEntry] = {}
    for epoch in range(epochs):
        history[epoch] = next_stake_history_entry(
            delegations, epoch, history, arithmetic=arithmetic
        )
    return history


def _bootstrap(lamports: int) -> Delegation:
    return Delegation(stake=lamports, activation_epoch=U64_MAX)


# --- hand-checked values ---------------------------------------------------------------


def test_warmup_one_epoch_is_nine_percent_of_cluster_effective() -> None:
    stake = Delegation(stake=100 * SOL, activation_epoch=0)
    history = _cluster_history([_bootstrap(1_000 * SOL), stake], 1)
    assert history[0] == StakeHistoryEntry(effective=1_000 * SOL, activating=100 * SOL)
    for arithmetic in WarmupCooldownMath:
        assert stake_activation(stake, 0, history, arithmetic=arithmetic) == StakeActivation(
            activating=100 * SOL
        )
        assert stake_activation(stake, 1, history, arithmetic=arithmetic) == StakeActivation(
            effective=90 * SOL, activating=10 * SOL
        )


def test_the_original_rate_applies_before_the_new_rate_epoch() -> None:
    stake = Delegation(stake=1_000 * SOL, activation_epoch=0)
    history = {0: StakeHistoryEntry(effective=1_000 * SOL, activating=1_000 * SOL)}
    status = stake_activation(stake, 1, history, new_rate_activation_epoch=None, arithmetic=INT)
    assert status.effective == 250 * SOL
    status = stake_activation(stake, 1, history, new_rate_activation_epoch=2, arithmetic=FLOAT)
    assert status.effective == 250 * SOL


def test_special_cases() -> None:
    empty: dict[int, StakeHistoryEntry] = {}
    bootstrap = _bootstrap(7)
    assert stake_activation(bootstrap, 0, empty) == StakeActivation(effective=7)
    # Deactivated in its activation epoch: never counted, withdrawable at once.
    instant = Delegation(stake=5 * SOL, activation_epoch=3, deactivation_epoch=3)
    for epoch in (2, 3, 4, 100):
        assert stake_activation(instant, epoch, empty) == StakeActivation()
    # Before activation: nothing; in the activation epoch: all activating.
    later = Delegation(stake=5 * SOL, activation_epoch=3)
    assert stake_activation(later, 2, empty) == StakeActivation()
    assert stake_activation(later, 3, empty) == StakeActivation(activating=5 * SOL)
    # No history entry for the activation epoch: long since effective.
    assert stake_activation(later, 4, empty) == StakeActivation(effective=5 * SOL)
    # In the deactivation epoch, what was effective starts cooling down.
    deact = Delegation(stake=5 * SOL, activation_epoch=0, deactivation_epoch=4)
    assert stake_activation(deact, 4, empty) == StakeActivation(
        effective=5 * SOL, deactivating=5 * SOL
    )
    assert stake_activation(deact, 5, empty) == StakeActivation()


def test_history_older_than_512_epochs_is_out_of_view() -> None:
    stake = Delegation(stake=100 * SOL, activation_epoch=0)
    # A history claiming the stake never warmed up...
    history = {e: StakeHistoryEntry(effective=0, activating=100 * SOL) for e in range(600)}
    assert stake_activation(stake, 512, history).effective < 100 * SOL
    # ...is ignored once the activation epoch has left the sysvar's 512-entry window.
    assert stake_activation(stake, 513, history).effective == 100 * SOL


def test_float_and_integer_arithmetic_differ_by_a_lamport_here() -> None:
    # Found by search; the chain test uses it to pin the runtime's arithmetic.
    stake = Delegation(stake=3_470_704_475, activation_epoch=0)
    history = {0: StakeHistoryEntry(effective=2_047_661_000, activating=170_064_519_275)}
    assert stake_activation(stake, 1, history, arithmetic=FLOAT).effective == 3_761_009
    assert stake_activation(stake, 1, history, arithmetic=INT).effective == 3_761_010


def test_history_round_trips_through_sysvar_bytes() -> None:
    history = _cluster_history(
        [_bootstrap(50 * SOL), Delegation(stake=30 * SOL, activation_epoch=1)], 6
    )
    data = bytes(to_solders_stake_history(history, current_epoch=6))
    assert decode_stake_history(data) == history


def test_sysvar_history_must_be_contiguous() -> None:
    entry = StakeHistoryEntry(effective=1)
    with pytest.raises(ValueError, match="skips"):
        to_solders_stake_history({0: entry, 2: entry})
    with pytest.raises(ValueError, match="end at epoch 4"):
        to_solders_stake_history({0: entry, 1: entry}, current_epoch=5)
    to_solders_stake_history({}, current_epoch=0)
    # Only the newest 512 entries are kept (and checked).
    many = {e: entry for e in range(600)}
    assert len(decode_stake_history(bytes(to_solders_stake_history(many)))) == 512


# --- properties --------------------------------------------------------------------------


@given(
    stake=st.integers(0, 10**18),
    activation=st.integers(0, 30),
    deactivation=st.integers(0, 40) | st.just(U64_MAX),
    target=st.integers(0, 45),
    history=histories,
    arithmetic=arithmetics,
)
def test_effective_plus_activating_is_the_stake_before_deactivation(
    stake: int,
    activation: int,
    deactivation: int,
    target: int,
    history: Mapping[int, StakeHistoryEntry],
    arithmetic: WarmupCooldownMath,
) -> None:
    assume(activation <= target < deactivation and activation != deactivation)
    d = Delegation(stake=stake, activation_epoch=activation, deactivation_epoch=deactivation)
    status = stake_activation(d, target, history, arithmetic=arithmetic)
    assert status.effective + status.activating == stake
    assert status.deactivating == 0


@given(
    stake=st.integers(1, 10**18),
    activation=st.integers(0, 10),
    deactivation=st.integers(0, 40) | st.just(U64_MAX),
    history=histories,
    arithmetic=arithmetics,
)
def test_effective_is_monotone_during_warmup(
    stake: int,
    activation: int,
    deactivation: int,
    history: Mapping[int, StakeHistoryEntry],
    arithmetic: WarmupCooldownMath,
) -> None:
    d = Delegation(stake=stake, activation_epoch=activation, deactivation_epoch=deactivation)
    last = 0
    for target in range(activation, min(deactivation, 45)):
        effective = stake_activation(d, target, history, arithmetic=arithmetic).effective
        assert last <= effective <= stake
        last = effective


@settings(max_examples=40, deadline=None)
@given(
    bootstrap=st.integers(SOL, 1_000 * SOL),
    ratio_percent=st.integers(1, 200),
    deactivate_after=st.integers(0, 6),
    arithmetic=arithmetics,
)
def test_full_warmup_then_zero_after_full_cooldown(
    bootstrap: int, ratio_percent: int, deactivate_after: int, arithmetic: WarmupCooldownMath
) -> None:
    stake_lamports = bootstrap * ratio_percent // 100
    deactivation = 1 + deactivate_after
    stake = Delegation(stake=stake_lamports, activation_epoch=1, deactivation_epoch=deactivation)
    history = _cluster_history([_bootstrap(bootstrap), stake], 60, arithmetic)
    statuses = [stake_activation(stake, e, history, arithmetic=arithmetic) for e in range(61)]
    # Cooldown never grows, and everything is gone long before 60 epochs.
    cooling = [s.effective for s in statuses[deactivation:]]
    assert cooling == sorted(cooling, reverse=True)
    assert statuses[-1] == StakeActivation()
    for s in statuses[deactivation + 1 :]:
        assert s.effective == s.deactivating and s.activating == 0
    # The cluster entry is the sum of the parts (bootstrap always effective).
    for epoch, entry in history.items():
        assert entry.effective == bootstrap + statuses[epoch].effective
        assert entry.activating == statuses[epoch].activating
        assert entry.deactivating == statuses[epoch].deactivating


@settings(max_examples=40, deadline=None)
@given(bootstrap=st.integers(SOL, 100 * SOL), stake_sol=st.integers(1, 500))
def test_undisturbed_stake_becomes_fully_effective(bootstrap: int, stake_sol: int) -> None:
    stake = Delegation(stake=stake_sol * SOL, activation_epoch=0)
    history = _cluster_history([_bootstrap(bootstrap), stake], 80)
    assert stake_activation(stake, 80, history) == StakeActivation(effective=stake_sol * SOL)


@given(
    account=st.integers(1, 2**40),
    cluster_extra=st.integers(0, 2**40),
    effective=st.integers(0, 2**40),
)
def test_float_and_integer_arithmetic_agree_within_a_lamport(
    account: int, cluster_extra: int, effective: int
) -> None:
    stake = Delegation(stake=account, activation_epoch=0)
    history = {0: StakeHistoryEntry(effective=effective, activating=account + cluster_extra)}
    a = stake_activation(stake, 1, history, arithmetic=FLOAT).effective
    b = stake_activation(stake, 1, history, arithmetic=INT).effective
    assert abs(a - b) <= 1


# --- withdraw limit ----------------------------------------------------------------------


def _stake_account(delegation: Delegation | None, lockup: Lockup | None = None) -> StakeAccount:
    key = Pubkey.new_unique()
    meta = Meta(
        rent_exempt_reserve=2_282_880,
        authorized=Authorized(staker=key, withdrawer=key),
        lockup=lockup or Lockup(),
    )
    if delegation is None:
        return StakeAccount(state=StakeStateKind.INITIALIZED, meta=meta)
    return StakeAccount(state=StakeStateKind.STAKE, meta=meta, delegation=delegation)


RENT = 2_282_880


def test_withdraw_limit_initialized_account_can_close() -> None:
    limit = withdraw_limit(
        _stake_account(None),
        lamports=RENT + 500,
        rent_exempt_reserve=RENT,
        epoch=3,
        unix_timestamp=0,
        history={},
    )
    assert (limit.withdrawable_lamports, limit.max_partial_lamports, limit.can_close) == (
        RENT + 500,
        500,
        True,
    )


def test_withdraw_limit_active_stake_only_excess() -> None:
    d = Delegation(stake=10 * SOL, activation_epoch=0)
    limit = withdraw_limit(
        _stake_account(d),
        lamports=10 * SOL + RENT + 7,
        rent_exempt_reserve=RENT,
        epoch=5,
        unix_timestamp=0,
        history={},
    )
    assert limit.staked_lamports == 10 * SOL
    assert (limit.withdrawable_lamports, limit.can_close) == (7, False)


def test_withdraw_limit_cooling_down_and_after() -> None:
    d = Delegation(stake=10 * SOL, activation_epoch=0, deactivation_epoch=3)
    history = {
        e: StakeHistoryEntry(effective=20 * SOL, deactivating=10 * SOL) for e in range(3, 10)
    }
    during = withdraw_limit(
        _stake_account(d),
        lamports=10 * SOL + RENT,
        rent_exempt_reserve=RENT,
        epoch=4,
        unix_timestamp=0,
        history=history,
    )
    # 9% of 20 SOL of cluster effective, pro rata 10/10: 1.8 SOL cooled down.
    assert during.staked_lamports == 10 * SOL - 1_800_000_000
    assert during.withdrawable_lamports == 1_800_000_000
    after = withdraw_limit(
        _stake_account(d),
        lamports=10 * SOL + RENT,
        rent_exempt_reserve=RENT,
        epoch=20,
        unix_timestamp=0,
        history={},
    )
    assert after.can_close and after.withdrawable_lamports == 10 * SOL + RENT


def test_withdraw_limit_lockup() -> None:
    custodian = Pubkey.new_unique()
    account = _stake_account(None, Lockup(unix_timestamp=1_000, epoch=0, custodian=custodian))

    def at(unix_timestamp: int, signer: Pubkey | None = None) -> WithdrawLimit:
        return withdraw_limit(
            account,
            lamports=RENT + 5,
            rent_exempt_reserve=RENT,
            epoch=0,
            unix_timestamp=unix_timestamp,
            history={},
            custodian=signer,
        )

    locked = at(999)
    assert locked.lockup_in_force and locked.withdrawable_lamports == 0 and not locked.can_close
    assert at(999, Pubkey.new_unique()).lockup_in_force
    assert at(999, custodian).withdrawable_lamports == RENT + 5
    assert at(1_000).withdrawable_lamports == RENT + 5


def test_withdraw_limit_rejects_rewards_pool() -> None:
    with pytest.raises(InvalidStakeAccountError):
        withdraw_limit(
            StakeAccount(state=StakeStateKind.REWARDS_POOL),
            lamports=1,
            rent_exempt_reserve=0,
            epoch=0,
            unix_timestamp=0,
            history={},
        )


@settings(max_examples=60, deadline=None)
@given(
    bootstrap=st.integers(SOL, 100 * SOL),
    stake_sol=st.integers(1, 300),
    deactivation=st.integers(0, 20) | st.just(U64_MAX),
    epoch=st.integers(0, 25),
    extra=st.integers(0, 10 * SOL),
)
def test_position_parts_add_up(
    bootstrap: int, stake_sol: int, deactivation: int, epoch: int, extra: int
) -> None:
    d = Delegation(stake=stake_sol * SOL, activation_epoch=0, deactivation_epoch=deactivation)
    history = _cluster_history([_bootstrap(bootstrap), d], epoch)
    lamports = stake_sol * SOL + RENT + extra
    position = stake_position(
        _stake_account(d),
        lamports=lamports,
        rent_exempt_reserve=RENT,
        epoch=epoch,
        unix_timestamp=0,
        history=history,
    )
    parts = (
        position.active_lamports
        + position.activating_lamports
        + position.deactivating_lamports
        + position.inactive_lamports
    )
    assert parts == lamports
    assert position.inactive_lamports >= RENT + extra
    assert position.delegated_lamports == stake_sol * SOL
    if position.deactivating_lamports:
        assert position.phase is StakePhase.DEACTIVATING
    if epoch == 0 and deactivation != 0:
        assert position.phase is StakePhase.ACTIVATING
    if deactivation == 0:  # deactivated in its activation epoch
        assert position.phase is StakePhase.INACTIVE
        assert position.withdraw.can_close


def test_position_of_an_initialized_account() -> None:
    position = stake_position(
        _stake_account(None),
        lamports=RENT,
        rent_exempt_reserve=RENT,
        epoch=3,
        unix_timestamp=0,
        history={},
    )
    assert position.phase is StakePhase.INACTIVE
    assert (position.delegated_lamports, position.inactive_lamports) == (0, RENT)
