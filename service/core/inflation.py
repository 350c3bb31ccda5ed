"""Inflation rewards as the runtime computes them: schedule, points, split, redemption.

A port of the arithmetic, value for value (the same integer widths, the same f64
operations in the same order), so that a cluster built on it pays what a real one
pays. Sources (Agave 3.x and the Solana SDK; ``docs/rewards.md`` walks through them):

- ``solana-sdk/inflation/src/lib.rs``: ``Inflation::{total, validator, foundation}``,
  the schedule ``max(terminal, initial * (1 - taper)^year)`` and its genesis default.
- ``agave/runtime/src/bank.rs``: ``slot_in_year_for_inflation`` (the year is the first
  slot of the paying epoch over the slots per year), ``epoch_duration_in_years`` and
  ``calculate_previous_epoch_inflation_rewards`` (``validator_rate * capitalization *
  epoch_years`` lamports for the epoch, truncated).
- ``agave/runtime/src/inflation_rewards/points.rs``:
  ``calculate_stake_points_and_credits`` (points = effective stake at each epoch x
  the vote credits earned in it that the stake has not yet been paid for).
- ``agave/runtime/src/inflation_rewards/mod.rs``: ``calculate_stake_rewards``,
  ``redeem_stake_rewards`` and ``commission_split`` (commission in basis points).
- ``agave/runtime/src/bank/partitioned_epoch_rewards/calculation.rs``: the point
  value over all delegations, vote rewards summed per vote account.
- ``solana-sdk/clock`` / ``agave/runtime`` ``years_as_slots``: slots per year from the
  genesis tick duration (6.25 ms) and ticks per slot (64).

Not modelled: ``stake_minimum_delegation_for_rewards`` and the rent adjustment of
delegations (``relax_post_exec_min_balance_check``), neither active on mainnet, and
Alpenglow's per-validator point scaling.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from solders.pubkey import Pubkey

from service.core.accounts import Delegation
from service.core.activation import StakeHistoryEntry, stake_activation
from service.core.activation import _f64_to_u64 as f64_to_u64  # Rust's saturating `as u64`

SECONDS_PER_YEAR: Final = 365.242_199 * 24.0 * 60.0 * 60.0
DEFAULT_TICK_NANOSECONDS: Final = 6_250_000  # 160 ticks per second
DEFAULT_TICKS_PER_SLOT: Final = 64
MAX_COMMISSION_BPS: Final = 10_000


def slots_per_year(
    tick_nanoseconds: int = DEFAULT_TICK_NANOSECONDS, ticks_per_slot: int = DEFAULT_TICKS_PER_SLOT
) -> float:
    """``years_as_slots(1.0, tick_duration, ticks_per_slot)``: slots in a year of
    ``SECONDS_PER_YEAR`` at the genesis tick rate (78,892,314.984 by default)."""
    return 1.0 * SECONDS_PER_YEAR * (1_000_000_000.0 / float(tick_nanoseconds)) / ticks_per_slot


DEFAULT_SLOTS_PER_YEAR: Final = slots_per_year()


@dataclass(frozen=True, kw_only=True)
class InflationGovernor:
    """The inflation schedule (``Inflation``; what ``getInflationGovernor`` reports).

    The defaults are the SDK's genesis default. Mainnet runs ``Inflation::full()``: the
    same rates with ``foundation = foundation_term = 0``.
    """

    initial: float = 0.08
    terminal: float = 0.015
    taper: float = 0.15
    foundation: float = 0.05
    foundation_term: float = 7.0

    def __post_init__(self) -> None:
        for name in ("initial", "terminal", "taper", "foundation", "foundation_term"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"inflation {name} must be a finite non-negative number")
        if self.taper > 1.0 or self.foundation > 1.0:
            raise ValueError("inflation taper and foundation share are fractions (0..1)")

    @classmethod
    def disabled(cls) -> InflationGovernor:
        """No inflation at all (``Inflation::new_disabled()``)."""
        return cls(initial=0.0, terminal=0.0, taper=0.0, foundation=0.0, foundation_term=0.0)

    def total_rate(self, year: float) -> float:
        """``max(terminal, initial * (1 - taper)^year)``."""
        if year < 0.0:
            raise ValueError("the inflation year cannot be negative")
        tapered = self.initial * ((1.0 - self.taper) ** year)
        return tapered if tapered > self.terminal else self.terminal

    def foundation_rate(self, year: float) -> float:
        """The foundation's part of the total while its term lasts, then 0."""
        return self.total_rate(year) * self.foundation if year < self.foundation_term else 0.0

    def validator_rate(self, year: float) -> float:
        """What stakers and validators share: the total minus the foundation's part."""
        return self.total_rate(year) - self.foundation_rate(year)


@dataclass(frozen=True, kw_only=True)
class InflationRate:
    """The rates in force at an epoch (``getInflationRate``)."""

    total: float
    validator: float
    foundation: float
    epoch: int


def inflation_year(
    *,
    paying_epoch_first_slot: int,
    inflation_start_slot: int = 0,
    slots_per_year_value: float = DEFAULT_SLOTS_PER_YEAR,
) -> float:
    """``slot_in_year_for_inflation``: years of inflation at the paying epoch's start.

    Args:
        paying_epoch_first_slot: First slot of the epoch being entered (the rewards of
            the epoch before it are computed there).
        inflation_start_slot: First slot of the epoch before the one in which
            inflation was activated (0 when active from genesis).
    """
    return (paying_epoch_first_slot - inflation_start_slot) / slots_per_year_value


def inflation_rate(governor: InflationGovernor, *, epoch: int, year: float) -> InflationRate:
    """The rates at ``year`` of inflation, reported for ``epoch``."""
    return InflationRate(
        total=governor.total_rate(year),
        validator=governor.validator_rate(year),
        foundation=governor.foundation_rate(year),
        epoch=epoch,
    )


@dataclass(frozen=True, kw_only=True)
class EpochInflation:
    """What an epoch mints for validators and stakers (``PrevEpochInflationRewards``).

    Attributes:
        validator_rewards: Lamports to share (``PointValue.rewards``).
        duration_in_years: The rewarded epoch's slots over the slots per year.
    """

    validator_rate: float
    foundation_rate: float
    duration_in_years: float
    validator_rewards: int


def epoch_inflation(
    governor: InflationGovernor,
    *,
    year: float,
    capitalization: int,
    rewarded_epoch_slots: int,
    slots_per_year_value: float = DEFAULT_SLOTS_PER_YEAR,
) -> EpochInflation:
    """``calculate_previous_epoch_inflation_rewards``.

    Args:
        year: :func:`inflation_year` of the paying epoch.
        capitalization: Total lamports in existence before the rewards are paid.
        rewarded_epoch_slots: Slots in the epoch being rewarded.
    """
    validator_rate = governor.validator_rate(year)
    duration = rewarded_epoch_slots / slots_per_year_value
    rewards = f64_to_u64(validator_rate * float(capitalization) * duration)
    return EpochInflation(
        validator_rate=validator_rate,
        foundation_rate=governor.foundation_rate(year),
        duration_in_years=duration,
        validator_rewards=rewards,
    )


@dataclass(frozen=True, kw_only=True)
class StakePoints:
    """``CalculatedStakePoints``: points earned since the stake was last paid."""

    points: int
    new_credits_observed: int
    force_credits_update: bool = False


def vote_credits(epoch_credits: Sequence[tuple[int, int, int]]) -> int:
    """``VoteState::credits()``: the running total of the newest entry (0 when none)."""
    return int(epoch_credits[-1][1]) if epoch_credits else 0


def stake_points(
    delegation: Delegation,
    credits_observed: int,
    epoch_credits: Sequence[tuple[int, int, int]],
    history: Mapping[int, StakeHistoryEntry],
) -> StakePoints:
    """``calculate_stake_points_and_credits`` for a Tower epoch.

    Args:
        delegation: The stake's delegation.
        credits_observed: Vote credits the stake was last paid up to.
        epoch_credits: The vote account's ``(epoch, credits, prev_credits)`` entries.
        history: StakeHistory (with the entry of the epoch just ended).
    """
    credits_in_vote = vote_credits(epoch_credits)
    if credits_in_vote < credits_observed:
        # The vote account was recreated: rewind, pay nothing.
        return StakePoints(
            points=0, new_credits_observed=credits_in_vote, force_credits_update=True
        )
    if credits_in_vote == credits_observed:
        return StakePoints(points=0, new_credits_observed=credits_observed)
    points = 0
    new_observed = credits_observed
    for epoch, final, initial in epoch_credits:
        if credits_observed < initial:
            earned = max(final - initial, 0)  # the whole epoch
        elif credits_observed < final:
            earned = max(final - new_observed, 0)  # part of it
        else:
            earned = 0  # already paid, or delegated after it
        new_observed = max(new_observed, final)
        if earned:
            points += stake_activation(delegation, epoch, history).effective * earned
    return StakePoints(points=points, new_credits_observed=new_observed)


def commission_split(commission_bps: int, amount: int) -> tuple[int, int, bool]:
    """``commission_split``: (voter's part, staker's part, whether both were due).

    Each part is floored on its own, so up to a lamport of the amount is paid to
    neither.
    """
    bps = min(commission_bps, MAX_COMMISSION_BPS)
    if bps == 0:
        return 0, amount, False
    if bps == MAX_COMMISSION_BPS:
        return amount, 0, False
    return (
        amount * bps // MAX_COMMISSION_BPS,
        amount * (MAX_COMMISSION_BPS - bps) // MAX_COMMISSION_BPS,
        True,
    )


@dataclass(frozen=True, kw_only=True)
class PointValue:
    """Lamports to share over this many points (``PointValue``)."""

    rewards: int
    points: int


@dataclass(frozen=True, kw_only=True)
class StakeRedemption:
    """What paying one stake account changes (``redeem_stake_rewards``).

    Attributes:
        staker_rewards: Lamports added to the stake account and to its delegation.
        voter_rewards: The commission, for the vote account.
        new_credits_observed: The stake's ``credits_observed`` afterwards.
        new_stake: The delegation's stake afterwards.
    """

    staker_rewards: int
    voter_rewards: int
    new_credits_observed: int
    new_stake: int


def redeem_stake_rewards(
    *,
    rewarded_epoch: int,
    delegation: Delegation,
    credits_observed: int,
    epoch_credits: Sequence[tuple[int, int, int]],
    commission_bps: int,
    point_value: PointValue,
    history: Mapping[int, StakeHistoryEntry],
) -> StakeRedemption | None:
    """``calculate_stake_rewards`` then ``redeem_stake_rewards``.

    Returns:
        None when the stake is not paid and not updated (no points, a reward below a
        lamport, or a split that would leave one side without a whole lamport: the
        stake program's ``NoCreditsToRedeem``). A redemption of 0 lamports when only
        ``credits_observed`` moves (no inflation, a rewound vote account, or the
        rewarded epoch is the stake's activation epoch).
    """
    calculated = stake_points(delegation, credits_observed, epoch_credits, history)
    force = calculated.force_credits_update
    if point_value.rewards == 0 or delegation.activation_epoch == rewarded_epoch:
        force = True
    if force:
        return StakeRedemption(
            staker_rewards=0,
            voter_rewards=0,
            new_credits_observed=calculated.new_credits_observed,
            new_stake=delegation.stake,
        )
    if calculated.points == 0 or point_value.points == 0:
        return None
    rewards = calculated.points * point_value.rewards // point_value.points
    if rewards == 0:
        return None
    voter, staker, is_split = commission_split(commission_bps, rewards)
    if is_split and (voter == 0 or staker == 0):
        return None
    return StakeRedemption(
        staker_rewards=staker,
        voter_rewards=voter,
        new_credits_observed=calculated.new_credits_observed,
        new_stake=delegation.stake + staker,
    )


@dataclass(frozen=True, kw_only=True)
class RewardedStake:
    """A stake account's delegation as the reward calculation reads it."""

    address: Pubkey
    delegation: Delegation
    credits_observed: int


@dataclass(frozen=True, kw_only=True)
class RewardedVote:
    """A vote account as the reward calculation reads it."""

    epoch_credits: tuple[tuple[int, int, int], ...]
    commission_bps: int


@dataclass(frozen=True, kw_only=True)
class StakeReward:
    """One stake account's outcome (``PartitionedStakeReward``)."""

    address: Pubkey
    voter: Pubkey
    redemption: StakeRedemption
    commission_bps: int


@dataclass(frozen=True, kw_only=True)
class EpochRewardCalculation:
    """The reward calculation of one epoch boundary.

    Attributes:
        point_value: Lamports and points of the epoch; None when no stake earned a
            point (nothing is paid, nothing is updated).
        stake_rewards: Every redeemed stake, 0-lamport updates included, by address.
        vote_rewards: Commission per vote account of a redeemed stake (0 included).
    """

    rewarded_epoch: int
    point_value: PointValue | None
    stake_rewards: tuple[StakeReward, ...] = ()
    vote_rewards: Mapping[Pubkey, int] = field(default_factory=dict)

    @property
    def total_stake_rewards(self) -> int:
        return sum(r.redemption.staker_rewards for r in self.stake_rewards)

    @property
    def total_vote_rewards(self) -> int:
        return sum(self.vote_rewards.values())


def calculate_epoch_rewards(
    *,
    rewarded_epoch: int,
    validator_rewards: int,
    stakes: Iterable[RewardedStake],
    votes: Mapping[Pubkey, RewardedVote],
    history: Mapping[int, StakeHistoryEntry],
) -> EpochRewardCalculation:
    """``calculate_validator_rewards``: the point value over every delegation, then
    each delegation redeemed against it.

    Args:
        rewarded_epoch: The epoch that just ended.
        validator_rewards: :attr:`EpochInflation.validator_rewards`.
        stakes: Every delegated stake account.
        votes: Vote accounts by address (delegations to any other are skipped).
        history: StakeHistory including ``rewarded_epoch``'s entry.
    """
    ordered = sorted(stakes, key=lambda s: bytes(s.address))
    total_points = 0
    for stake in ordered:
        vote = votes.get(stake.delegation.voter)
        if vote is not None:
            total_points += stake_points(
                stake.delegation, stake.credits_observed, vote.epoch_credits, history
            ).points
    if total_points == 0:
        return EpochRewardCalculation(rewarded_epoch=rewarded_epoch, point_value=None)
    point_value = PointValue(rewards=validator_rewards, points=total_points)
    rewards: list[StakeReward] = []
    vote_rewards: dict[Pubkey, int] = {}
    for stake in ordered:
        voter = stake.delegation.voter
        vote = votes.get(voter)
        if vote is None:
            continue
        redemption = redeem_stake_rewards(
            rewarded_epoch=rewarded_epoch,
            delegation=stake.delegation,
            credits_observed=stake.credits_observed,
            epoch_credits=vote.epoch_credits,
            commission_bps=vote.commission_bps,
            point_value=point_value,
            history=history,
        )
        if redemption is None:
            continue
        rewards.append(
            StakeReward(
                address=stake.address,
                voter=voter,
                redemption=redemption,
                commission_bps=vote.commission_bps,
            )
        )
        vote_rewards[voter] = vote_rewards.get(voter, 0) + redemption.voter_rewards
    return EpochRewardCalculation(
        rewarded_epoch=rewarded_epoch,
        point_value=point_value,
        stake_rewards=tuple(rewards),
        vote_rewards=vote_rewards,
    )
