"""What GetRewards, EstimateRewards and the validator ranking compute (service.core.yields)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core import InvalidArgumentError, rank_validators
from service.core.yields import (
    InflationReward,
    YieldInputs,
    compounded,
    epochs_in_days,
    estimate_yield,
    implied_apy,
    mean_credit_ratio,
    other_credits,
    project_rewards,
    reward_history,
    reward_range,
)
from tests.core.test_lifecycle_pure import Vote

RENT = 2_282_880
SOL = 10**9


def _reward(epoch: int, amount: int, post_balance: int) -> InflationReward:
    return InflationReward(
        epoch=epoch, amount=amount, post_balance=post_balance, effective_slot=epoch * 10 + 1
    )


@pytest.mark.parametrize(
    ("start", "end", "current", "expected"),
    [
        (None, None, 30, range(20, 30)),  # the last 10 completed epochs
        (None, None, 4, range(0, 4)),
        (None, 12, 30, range(3, 13)),
        (25, None, 30, range(25, 30)),
        (7, 7, 30, range(7, 8)),
        (None, None, 0, None),  # nothing has completed
    ],
)
def test_reward_range(
    start: int | None, end: int | None, current: int, expected: range | None
) -> None:
    assert reward_range(start_epoch=start, end_epoch=end, current_epoch=current) == expected


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (None, 30, "end_epoch"),
        (31, None, "start_epoch"),
        (9, 8, "start_epoch"),
        (0, 100, "start_epoch"),
    ],
)
def test_bad_ranges_name_the_field(start: int | None, end: int | None, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        reward_range(start_epoch=start, end_epoch=end, current_epoch=200 if end == 100 else 30)
    assert caught.value.field == field


def test_other_credits_are_what_the_reward_does_not_explain() -> None:
    first = _reward(4, 1_000, 10_001_000)
    tipped = _reward(5, 1_100, 10_001_000 + 5_000 + 1_100)
    assert other_credits(first, tipped) == 5_000
    # A withdrawal larger than the deposits: floored at 0.
    assert other_credits(first, _reward(5, 1_000, 9_000_000)) == 0
    # Without the previous epoch's balance (none paid, or not adjacent): unknown.
    assert other_credits(None, tipped) == 0
    assert other_credits(_reward(3, 1, 10), tipped) == 0


def test_implied_apy_annualises_the_epochs_rate() -> None:
    reward = _reward(9, 500_000, RENT + SOL + 500_000)
    assert implied_apy(reward, rent_exempt_reserve=RENT, epochs_in_year=182.6) == pytest.approx(
        (1 + 500_000 / SOL) ** 182.6 - 1
    )
    # The principal is unknown (the reward is all there is): 0, not infinity.
    assert implied_apy(_reward(9, 5, RENT + 5), rent_exempt_reserve=RENT, epochs_in_year=182) == 0
    with pytest.raises(ValueError):
        _reward(1, 10, 5)  # a balance below its own reward


@given(
    rate=st.floats(min_value=0, max_value=0.01),
    epochs=st.integers(min_value=0, max_value=400),
    amount=st.integers(min_value=0, max_value=10**15),
)
def test_projection_compounds_and_floors(rate: float, epochs: int, amount: int) -> None:
    projected = project_rewards(amount, rate, epochs)
    simple = int(amount * rate) * epochs
    assert projected >= simple  # rewards earn too
    assert projected <= amount * compounded(rate, epochs) + 1
    assert project_rewards(amount, rate, 0) == 0


def test_estimates_scale_with_credits_and_commission() -> None:
    inputs = YieldInputs(
        validator_rate=0.05,
        capitalization=600 * SOL,
        active_stake=400 * SOL,
        slots_in_epoch=432_000,
    )
    assert inputs.epoch_rate == pytest.approx(0.05 * inputs.epoch_years * 1.5)
    base = estimate_yield(inputs, commission_percent=0, credit_ratio=0.9, mean_ratio=0.9)
    assert base.per_epoch_rate == pytest.approx(inputs.epoch_rate)
    assert base.apy == pytest.approx(compounded(inputs.epoch_rate, inputs.epochs_per_year))
    better = estimate_yield(inputs, commission_percent=0, credit_ratio=1.0, mean_ratio=0.9)
    assert better.per_epoch_rate == pytest.approx(base.per_epoch_rate / 0.9)
    taxed = estimate_yield(inputs, commission_percent=10, credit_ratio=0.9, mean_ratio=0.9)
    assert taxed.per_epoch_rate == pytest.approx(base.per_epoch_rate * 0.9)
    assert estimate_yield(inputs, commission_percent=100, credit_ratio=1, mean_ratio=1).apy == 0
    assert estimate_yield(inputs, commission_percent=5, credit_ratio=0, mean_ratio=0.9).apy == 0
    assert "x (1 - 10% commission)" in taxed.formula()
    with pytest.raises(ValueError):
        estimate_yield(inputs, commission_percent=101, credit_ratio=1, mean_ratio=1)
    assert mean_credit_ratio([(300, 1.0), (100, 0.6)]) == pytest.approx(0.9)
    assert mean_credit_ratio([]) == 0.0
    assert epochs_in_days(365.242_199, 182.6) == 182
    # Absurd inputs (a chain reporting almost no active stake) saturate, never raise.
    absurd = YieldInputs(
        validator_rate=0.05, capitalization=600 * SOL, active_stake=1, slots_in_epoch=432_000
    )
    assert estimate_yield(absurd, commission_percent=0, credit_ratio=1, mean_ratio=1).apy == (
        float("inf")
    )
    assert project_rewards(SOL, 1e9, 10) == 2**64 - 1 - SOL


def test_history_orders_totals_and_pending_epochs() -> None:
    known: dict[int, dict[str, InflationReward | None]] = {
        4: {"b": _reward(4, 10, 1_000_010), "a": None},
        5: {"b": _reward(5, 11, 1_000_021 + 7), "a": _reward(5, 3, RENT + 100)},
        # epoch 6: not final at the node yet
    }
    history = reward_history(
        ["b", "a"], range(5, 7), known, rent_exempt_reserve=RENT, slots_in_epoch=432_000
    )
    assert [(e.stake_account, e.reward.epoch) for e in history.entries] == [("a", 5), ("b", 5)]
    assert history.pending_epochs == (6,)
    totals = {t.stake_account: t for t in history.accounts}
    assert [t.stake_account for t in history.accounts] == ["b", "a"]  # the order asked
    assert totals["b"].other_credits == 7  # epoch 4 (before the range) tells it
    assert totals["a"].unrewarded_epochs == () and totals["a"].rewarded_epochs == 1
    assert history.total_amount == 14 and history.total_other_credits == 7


def test_ranking_reports_the_estimate_and_breaks_ties_with_it() -> None:
    inputs = YieldInputs(
        validator_rate=0.05,
        capitalization=600 * SOL,
        active_stake=300 * SOL,
        slots_in_epoch=432_000,
    )
    votes = [
        Vote("steady", 5, 100, ((0, 100, 0), (1, 200, 100))),
        Vote("cheap", 0, 100, ((0, 100, 0), (1, 200, 100))),
        Vote("gone", 0, 100, ((0, 100, 0),), delinquent=True),
    ]
    ranked = rank_validators(votes, epoch=2, yields=inputs)
    by = {r.vote_account: r for r in ranked}
    assert by["cheap"].estimated_apy > by["steady"].estimated_apy > 0
    assert by["gone"].estimated_apy == 0
    assert any(r.startswith("estimated APY") for r in by["cheap"].reasons)
    unknown = rank_validators(votes, epoch=2)
    assert all(r.estimated_apy == 0 for r in unknown)
    assert any("unknown" in r for r in unknown[0].reasons)
