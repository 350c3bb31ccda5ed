"""The runtime's reward arithmetic (service.core.inflation), case by case and by property.

The whole calculation against the localnet is in tests/localnet/test_inflation.py;
here each rule the runtime applies is pinned on its own.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.pubkey import Pubkey

from service.core import Delegation, StakeHistoryEntry
from service.core.inflation import (
    DEFAULT_SLOTS_PER_YEAR,
    InflationGovernor,
    PointValue,
    RewardedStake,
    RewardedVote,
    calculate_epoch_rewards,
    commission_split,
    epoch_inflation,
    inflation_rate,
    inflation_year,
    redeem_stake_rewards,
    stake_points,
)
from service.core.programs import U64_MAX

VOTE = Pubkey.new_unique()
BOOTSTRAP = Delegation(voter=VOTE, stake=1_000, activation_epoch=U64_MAX)
NO_HISTORY: dict[int, StakeHistoryEntry] = {}


def test_slots_per_year_is_the_genesis_default() -> None:
    # 365.242199 days of 160 ticks a second, 64 ticks a slot.
    assert pytest.approx(78_892_314.984, abs=1e-3) == DEFAULT_SLOTS_PER_YEAR


def test_the_schedule_tapers_to_the_terminal_rate() -> None:
    governor = InflationGovernor()
    assert governor.total_rate(0.0) == 0.08
    assert governor.total_rate(1.0) == pytest.approx(0.08 * 0.85)
    assert governor.total_rate(100.0) == 0.015  # the terminal rate
    assert governor.foundation_rate(1.0) == pytest.approx(0.05 * 0.068)
    assert governor.validator_rate(1.0) == governor.total_rate(1.0) - governor.foundation_rate(1.0)
    assert governor.foundation_rate(7.0) == 0.0  # the foundation's term is over
    assert governor.validator_rate(7.5) == governor.total_rate(7.5)
    disabled = InflationGovernor.disabled()
    assert disabled.total_rate(3.0) == disabled.validator_rate(3.0) == 0.0
    with pytest.raises(ValueError):
        governor.total_rate(-1.0)
    with pytest.raises(ValueError):
        InflationGovernor(taper=1.5)


def test_an_epoch_mints_the_validator_rate_of_the_supply_for_its_share_of_a_year() -> None:
    governor = InflationGovernor()
    year = inflation_year(paying_epoch_first_slot=432_000 * 100)
    assert year == 432_000 * 100 / DEFAULT_SLOTS_PER_YEAR
    minted = epoch_inflation(
        governor, year=year, capitalization=600_000_000 * 10**9, rewarded_epoch_slots=432_000
    )
    rate = governor.validator_rate(year)
    expected = int(rate * float(600_000_000 * 10**9) * (432_000 / DEFAULT_SLOTS_PER_YEAR))
    assert minted.validator_rewards == expected
    assert minted.validator_rate == rate and minted.duration_in_years == pytest.approx(
        0.005476, rel=1e-3
    )
    reported = inflation_rate(governor, epoch=100, year=year)
    assert (reported.total, reported.validator, reported.epoch) == (
        governor.total_rate(year),
        rate,
        100,
    )


@given(
    bps=st.integers(min_value=0, max_value=10_000),
    amount=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_commission_split_floors_each_side(bps: int, amount: int) -> None:
    voter, staker, split = commission_split(bps, amount)
    assert split == (0 < bps < 10_000)
    assert amount - 1 <= voter + staker <= amount
    assert voter == amount * bps // 10_000
    if bps == 0:
        assert (voter, staker) == (0, amount)
    if bps == 10_000:
        assert (voter, staker) == (amount, 0)


def test_points_are_stake_times_unobserved_credits() -> None:
    credits = ((3, 100, 0), (4, 250, 100), (5, 400, 250))
    # Observed up to the end of epoch 3: epochs 4 and 5 in full.
    assert stake_points(BOOTSTRAP, 100, credits, NO_HISTORY).points == 1_000 * 300
    # Observed in the middle of epoch 4 (delegated then): the rest of 4, all of 5.
    middle = stake_points(BOOTSTRAP, 180, credits, NO_HISTORY)
    assert (middle.points, middle.new_credits_observed) == (1_000 * (70 + 150), 400)
    # Nothing new: no points, not forced.
    same = stake_points(BOOTSTRAP, 400, credits, NO_HISTORY)
    assert (same.points, same.force_credits_update) == (0, False)
    # The vote account was recreated (fewer credits than observed): rewind.
    rewound = stake_points(BOOTSTRAP, 900, credits, NO_HISTORY)
    assert (rewound.points, rewound.new_credits_observed, rewound.force_credits_update) == (
        0,
        400,
        True,
    )
    # Stake that was not yet effective in an epoch earns nothing for it.
    young = Delegation(voter=VOTE, stake=1_000, activation_epoch=5)
    assert stake_points(young, 0, credits, NO_HISTORY).points == 0


def test_redemption_rules() -> None:
    credits = ((3, 100, 0), (4, 250, 100))
    value = PointValue(rewards=1_000_000, points=1_000 * 150)
    paid = redeem_stake_rewards(
        rewarded_epoch=4,
        delegation=BOOTSTRAP,
        credits_observed=100,
        epoch_credits=credits,
        commission_bps=500,
        point_value=value,
        history=NO_HISTORY,
    )
    assert paid is not None
    assert (paid.staker_rewards, paid.voter_rewards) == (950_000, 50_000)
    assert (paid.new_credits_observed, paid.new_stake) == (250, 1_000 + 950_000)
    # The epoch of its activation: credits observed move on, nothing is paid.
    new = Delegation(voter=VOTE, stake=1_000, activation_epoch=4)
    forced = redeem_stake_rewards(
        rewarded_epoch=4,
        delegation=new,
        credits_observed=180,
        epoch_credits=credits,
        commission_bps=500,
        point_value=value,
        history=NO_HISTORY,
    )
    assert forced is not None and forced.staker_rewards == forced.voter_rewards == 0
    assert forced.new_credits_observed == 250 and forced.new_stake == 1_000
    # A reward too small to give both sides a lamport is not paid at all.
    tiny = PointValue(rewards=10, points=1_000 * 150)
    assert (
        redeem_stake_rewards(
            rewarded_epoch=4,
            delegation=BOOTSTRAP,
            credits_observed=100,
            epoch_credits=credits,
            commission_bps=500,
            point_value=tiny,
            history=NO_HISTORY,
        )
        is None
    )


def test_an_epoch_of_rewards() -> None:
    other = Pubkey.new_unique()
    stakes = [
        RewardedStake(address=Pubkey.new_unique(), delegation=BOOTSTRAP, credits_observed=0),
        RewardedStake(
            address=Pubkey.new_unique(),
            delegation=Delegation(voter=other, stake=3_000, activation_epoch=U64_MAX),
            credits_observed=0,
        ),
        # Delegated to a vote account that does not exist: skipped.
        RewardedStake(
            address=Pubkey.new_unique(),
            delegation=Delegation(voter=Pubkey.new_unique(), stake=9_000, activation_epoch=0),
            credits_observed=0,
        ),
    ]
    votes = {
        VOTE: RewardedVote(epoch_credits=((0, 100, 0),), commission_bps=1_000),
        other: RewardedVote(epoch_credits=((0, 50, 0),), commission_bps=0),
    }
    calc = calculate_epoch_rewards(
        rewarded_epoch=0,
        validator_rewards=1_000_000,
        stakes=stakes,
        votes=votes,
        history=NO_HISTORY,
    )
    assert calc.point_value == PointValue(rewards=1_000_000, points=1_000 * 100 + 3_000 * 50)
    by_address = {r.address: r.redemption for r in calc.stake_rewards}
    assert by_address[stakes[0].address].staker_rewards == 400_000 * 9 // 10
    assert by_address[stakes[1].address].staker_rewards == 600_000
    assert stakes[2].address not in by_address
    assert calc.vote_rewards == {VOTE: 40_000, other: 0}
    assert calc.total_stake_rewards + calc.total_vote_rewards <= 1_000_000
    # No vote credits anywhere: nothing is paid, nothing is updated.
    idle = calculate_epoch_rewards(
        rewarded_epoch=0,
        validator_rewards=1_000_000,
        stakes=stakes,
        votes={VOTE: RewardedVote(epoch_credits=(), commission_bps=0)},
        history=NO_HISTORY,
    )
    assert idle.point_value is None and not idle.stake_rewards and not idle.vote_rewards
