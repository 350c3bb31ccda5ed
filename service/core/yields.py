"""What stake earned and what it may earn: reward history, other credits, yield.

Pure arithmetic over what the chain reports (``getInflationReward``, ``getInflationRate``,
``getSupply``, ``getVoteAccounts``); ``docs/rewards.md`` states every formula.

- **Implied APY of an epoch's reward**: the reward over the stake that earned it
  (the balance before the reward, less the rent-exempt reserve), compounded over the
  epochs of a year: ``(1 + amount / principal)^(epochs per year) - 1``.
- **Other credits**: lamports that reached the stake account between two rewards and
  are not rewards (MEV tips, transfers, merges): how far the balance before this
  epoch's reward exceeds the balance after the previous epoch's, net of withdrawals.
- **Estimated APY of a validator**: the epoch's minted lamports per lamport of active
  stake (``validator_rate * epoch_years * capitalization / active stake``), scaled by
  the validator's vote credits relative to the stake-weighted mean (points are stake
  x credits) and by what its commission leaves, compounded per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from service.core.errors import InvalidArgumentError
from service.core.inflation import DEFAULT_SLOTS_PER_YEAR
from service.core.programs import U64_MAX


@dataclass(frozen=True, kw_only=True)
class InflationReward:
    """One address's reward for one epoch, as ``getInflationReward`` reports it."""

    epoch: int
    amount: int
    post_balance: int
    effective_slot: int
    commission: int | None = None

    def __post_init__(self) -> None:
        if self.amount < 0 or self.post_balance < self.amount or self.effective_slot < 0:
            raise ValueError(f"inconsistent inflation reward {self}")


def epochs_per_year(slots_in_epoch: int, slots_per_year: float = DEFAULT_SLOTS_PER_YEAR) -> float:
    """How many epochs of ``slots_in_epoch`` slots make a year (182.6 on mainnet)."""
    return slots_per_year / slots_in_epoch if slots_in_epoch > 0 else 0.0


def compounded(per_epoch_rate: float, epochs: float) -> float:
    """``(1 + rate)^epochs - 1``: a per-epoch rate compounded over ``epochs``."""
    if not (per_epoch_rate > 0.0 and epochs > 0.0):
        return 0.0
    try:
        return math.expm1(epochs * math.log1p(per_epoch_rate))
    except OverflowError:
        return math.inf


def implied_apy(
    reward: InflationReward, *, rent_exempt_reserve: int, epochs_in_year: float
) -> float:
    """The annual yield one epoch's reward implies, compounded per epoch (0 when the
    stake that earned it is unknown)."""
    principal = reward.post_balance - reward.amount - rent_exempt_reserve
    if principal <= 0:
        return 0.0
    return compounded(reward.amount / principal, epochs_in_year)


def other_credits(previous: InflationReward | None, current: InflationReward) -> int:
    """Lamports credited between ``previous`` and ``current`` that are not rewards.

    The balance just before ``current`` was paid, less the balance just after
    ``previous`` was: deposits minus withdrawals in between, floored at 0. Unknown
    (0) without the previous epoch's reward.
    """
    if previous is None or previous.epoch != current.epoch - 1:
        return 0
    return max(current.post_balance - current.amount - previous.post_balance, 0)


@dataclass(frozen=True, kw_only=True)
class EpochRewardView:
    """One stake account's reward for one epoch, with what it implies."""

    stake_account: str
    reward: InflationReward
    implied_apy: float
    other_credits: int


@dataclass(frozen=True, kw_only=True)
class AccountRewards:
    """One stake account's totals over an epoch range."""

    stake_account: str
    amount: int
    other_credits: int
    rewarded_epochs: int
    unrewarded_epochs: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class RewardHistory:
    """Rewards of several stake accounts over an epoch range.

    Attributes:
        entries: One per rewarded (account, epoch), ordered by account then epoch.
        accounts: Totals per account, in the order asked.
        pending_epochs: Epochs of the range the chain could not answer yet.
    """

    entries: tuple[EpochRewardView, ...]
    accounts: tuple[AccountRewards, ...]
    pending_epochs: tuple[int, ...]

    @property
    def total_amount(self) -> int:
        return sum(a.amount for a in self.accounts)

    @property
    def total_other_credits(self) -> int:
        return sum(a.other_credits for a in self.accounts)


def reward_history(
    accounts: Sequence[str],
    epochs: range,
    known: Mapping[int, Mapping[str, InflationReward | None]],
    *,
    rent_exempt_reserve: int,
    slots_in_epoch: int,
) -> RewardHistory:
    """Assemble the history of ``accounts`` over ``epochs``.

    Args:
        accounts: Stake account addresses, in the order to report them.
        epochs: The epoch range.
        known: Per epoch, the reward of each address (None: none that epoch). An
            epoch missing from it is pending. The epoch before the range, when
            present, serves only to compute the first epoch's other credits.
        rent_exempt_reserve: The stake account reserve (does not earn).
        slots_in_epoch: Slots per epoch (for the annualisation).
    """
    per_year = epochs_per_year(slots_in_epoch)
    entries: list[EpochRewardView] = []
    totals: list[AccountRewards] = []
    for account in sorted(accounts):
        amount = others = rewarded = 0
        unrewarded: list[int] = []
        for epoch in epochs:
            if epoch not in known:
                continue
            reward = known[epoch].get(account)
            if reward is None:
                unrewarded.append(epoch)
                continue
            previous = known.get(epoch - 1, {}).get(account)
            credits = other_credits(previous, reward)
            entries.append(
                EpochRewardView(
                    stake_account=account,
                    reward=reward,
                    implied_apy=implied_apy(
                        reward, rent_exempt_reserve=rent_exempt_reserve, epochs_in_year=per_year
                    ),
                    other_credits=credits,
                )
            )
            amount += reward.amount
            others += credits
            rewarded += 1
        totals.append(
            AccountRewards(
                stake_account=account,
                amount=amount,
                other_credits=others,
                rewarded_epochs=rewarded,
                unrewarded_epochs=tuple(unrewarded),
            )
        )
    order = {a: i for i, a in enumerate(accounts)}
    totals.sort(key=lambda t: order[t.stake_account])
    return RewardHistory(
        entries=tuple(entries),
        accounts=tuple(totals),
        pending_epochs=tuple(e for e in epochs if e not in known),
    )


MAX_REWARD_EPOCHS: Final = 100
DEFAULT_REWARD_EPOCHS: Final = 10


def reward_range(
    *, start_epoch: int | None, end_epoch: int | None, current_epoch: int
) -> range | None:
    """The completed epochs a GetRewards request covers (None: none has completed).

    Defaults: the last completed epoch, and the 10 epochs ending there.

    Raises:
        InvalidArgumentError: An epoch that has not ended, start after end, or a range
            of more than 100 epochs.
    """
    if current_epoch == 0:
        return None
    last = current_epoch - 1
    end = last if end_epoch is None else end_epoch
    if end > last:
        raise InvalidArgumentError(
            f"end_epoch must be a completed epoch (at most {last}, the current epoch is "
            f"{current_epoch}), got {end}",
            field="end_epoch",
            metadata={"last_completed_epoch": last},
        )
    start = max(end - DEFAULT_REWARD_EPOCHS + 1, 0) if start_epoch is None else start_epoch
    if start > end:
        raise InvalidArgumentError(
            f"start_epoch {start} is after end_epoch {end}", field="start_epoch"
        )
    if end - start + 1 > MAX_REWARD_EPOCHS:
        raise InvalidArgumentError(
            f"a range spans at most {MAX_REWARD_EPOCHS} epochs, got {end - start + 1}",
            field="start_epoch",
            metadata={"maximum": MAX_REWARD_EPOCHS},
        )
    return range(start, end + 1)


# ----- yield estimates ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class YieldInputs:
    """The cluster-wide inputs of a yield estimate.

    Attributes:
        validator_rate: Annual inflation rate paid to stakers and validators
            (``getInflationRate.validator``).
        capitalization: Lamports in existence (``getSupply.total``).
        active_stake: Lamports of stake active this epoch (all vote accounts).
        slots_in_epoch: Slots per epoch.
        slots_per_year: Slots in a year at the genesis tick rate.
    """

    validator_rate: float
    capitalization: int
    active_stake: int
    slots_in_epoch: int
    slots_per_year: float = DEFAULT_SLOTS_PER_YEAR

    @property
    def epoch_years(self) -> float:
        return self.slots_in_epoch / self.slots_per_year

    @property
    def epochs_per_year(self) -> float:
        return epochs_per_year(self.slots_in_epoch, self.slots_per_year)

    @property
    def epoch_rate(self) -> float:
        """Lamports minted in an epoch per lamport of active stake."""
        if self.active_stake <= 0:
            return 0.0
        return self.validator_rate * self.epoch_years * self.capitalization / self.active_stake


@dataclass(frozen=True, kw_only=True)
class YieldEstimate:
    """A validator's expected yield and how it was obtained.

    Attributes:
        per_epoch_rate: Expected reward per staked lamport per epoch, after commission.
        apy: ``per_epoch_rate`` compounded over a year of epochs (fraction).
        credit_ratio: The validator's vote credits / the best validator's.
        mean_credit_ratio: Stake-weighted mean of every validator's credit ratio.
    """

    per_epoch_rate: float
    apy: float
    commission_percent: int
    credit_ratio: float
    mean_credit_ratio: float
    inputs: YieldInputs

    def formula(self) -> str:
        """The estimate with its inputs, in one line."""
        i = self.inputs
        return (
            f"estimated APY {self.apy * 100:.2f}% = (1 + {i.validator_rate * 100:.3f}% inflation"
            f" x {i.epoch_years * 365.242_199:.3f} days/365.24"
            f" x supply {i.capitalization / 1e9:,.0f} SOL / active stake"
            f" {i.active_stake / 1e9:,.0f} SOL"
            f" x credits {self.credit_ratio * 100:.1f}% / mean {self.mean_credit_ratio * 100:.1f}%"
            f" x (1 - {self.commission_percent}% commission))^{i.epochs_per_year:.1f} - 1"
        )


def mean_credit_ratio(validators: Iterable[tuple[int, float]]) -> float:
    """Stake-weighted mean of ``(activated stake, credit ratio)`` pairs (0 when no
    stake): the credits an average staked lamport earns relative to the best."""
    stake = weighted = 0.0
    for lamports, ratio in validators:
        stake += lamports
        weighted += lamports * ratio
    return weighted / stake if stake > 0 else 0.0


def estimate_yield(
    inputs: YieldInputs,
    *,
    commission_percent: int,
    credit_ratio: float,
    mean_ratio: float,
) -> YieldEstimate:
    """Expected yield of stake delegated to a validator, if the cluster keeps its
    current inflation rate, supply, active stake and vote performance."""
    if not 0 <= commission_percent <= 100:
        raise ValueError(f"commission must be 0..100, got {commission_percent}")
    share = credit_ratio / mean_ratio if mean_ratio > 0 else 0.0
    rate = inputs.epoch_rate * share * (1 - commission_percent / 100)
    return YieldEstimate(
        per_epoch_rate=rate,
        apy=compounded(rate, inputs.epochs_per_year),
        commission_percent=commission_percent,
        credit_ratio=credit_ratio,
        mean_credit_ratio=mean_ratio,
        inputs=inputs,
    )


def project_rewards(amount: int, per_epoch_rate: float, epochs: int) -> int:
    """Lamports ``amount`` earns over ``epochs`` epochs at ``per_epoch_rate``, each
    epoch's reward floored to a lamport and added to the stake (as the runtime
    compounds it)."""
    if amount < 0 or epochs < 0:
        raise ValueError("amount and epochs cannot be negative")
    if not per_epoch_rate > 0.0:
        return 0
    balance = amount
    for _ in range(epochs):
        reward = balance * per_epoch_rate
        if balance + reward >= U64_MAX:
            return U64_MAX - amount  # more lamports than a balance can hold
        balance += int(reward)
    return balance - amount


def epochs_in_days(days: float, epochs_in_year: float) -> int:
    """Whole epochs (reward payments) within ``days`` days."""
    return int(days / 365.242_199 * epochs_in_year)
