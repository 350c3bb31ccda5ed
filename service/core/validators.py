"""Ranking validators for delegation, from on-chain data only, with reasons.

The score is a weighted sum of three parts, each in [0, 1]:

===================  ======  =====================================================
part                 weight  value
===================  ======  =====================================================
commission           0.40    ``1 - commission / 100``: what the delegator keeps
vote performance     0.40    credits earned over the last (up to 5) completed
                             epochs / the best validator's credits over the same
                             epochs (the current epoch so far when none completed)
decentralization     0.20    1 outside the superminority, 0 inside it (the fewest
                             largest validators that together hold more than 1/3
                             of the activated stake: they can halt the cluster)
===================  ======  =====================================================

A delinquent validator scores 0 and ranks after every other. Ties are broken by the
estimated APY, then performance, then lower commission, then address. Featured
validators (chosen by the operator) are flagged and say so in their reasons;
featuring does not change the score.

The estimated APY (``service.core.yields.estimate_yield``) is reported with its
formula and inputs among the reasons. It is not a fourth part of the score: it grows
with exactly the two things the commission and performance parts already weigh, so
adding it would count them twice; it breaks ties and can be filtered on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from service.core.yields import YieldInputs, estimate_yield, mean_credit_ratio

WEIGHT_COMMISSION: Final = 0.40
WEIGHT_PERFORMANCE: Final = 0.40
WEIGHT_DECENTRALIZATION: Final = 0.20
CREDIT_EPOCHS: Final = 5
SUPERMINORITY_FRACTION: Final = 1 / 3


class VoteAccountLike(Protocol):
    """What the ranking reads from a getVoteAccounts entry (``chain.VoteAccountInfo``)."""

    @property
    def vote_account(self) -> str: ...
    @property
    def node_pubkey(self) -> str: ...
    @property
    def commission(self) -> int: ...
    @property
    def activated_stake(self) -> int: ...
    @property
    def last_vote(self) -> int: ...
    @property
    def root_slot(self) -> int: ...
    @property
    def epoch_credits(self) -> tuple[tuple[int, int, int], ...]: ...
    @property
    def delinquent(self) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class RankedValidator:
    """A validator with its score and the reasons for it.

    Attributes:
        current_epoch_credits: Credits earned in the current epoch so far.
        average_epoch_credits: Mean credits per completed epoch it reports (<= 5).
        performance: Its credits relative to the best validator's, 0..1.
        stake_share: Its fraction of all activated stake.
        superminority: Whether it belongs to the superminority.
        score: 0..1, see the module docstring.
        reasons: One line per part of the score, plus flags.
        estimated_apy: Expected annual yield of stake delegated to it (fraction);
            0 when delinquent or when the cluster's inflation is unknown.
        per_epoch_rate: The same per epoch, before compounding.
    """

    vote_account: str
    node_pubkey: str
    commission: int
    activated_stake: int
    delinquent: bool
    last_vote: int
    root_slot: int
    current_epoch_credits: int
    average_epoch_credits: int
    performance: float
    stake_share: float
    superminority: bool
    featured: bool
    score: float
    reasons: tuple[str, ...]
    estimated_apy: float = 0.0
    per_epoch_rate: float = 0.0


def _earned(entries: Iterable[tuple[int, int, int]]) -> dict[int, int]:
    # getVoteAccounts epochCredits: [epoch, credits at its end, credits at its start].
    return {int(e): max(int(c) - int(p), 0) for e, c, p in entries}


def superminority(validators: Sequence[VoteAccountLike]) -> frozenset[str]:
    """Vote accounts of the fewest largest validators holding more than 1/3 of stake."""
    total = sum(v.activated_stake for v in validators)
    if total <= 0:
        return frozenset()
    members: set[str] = set()
    held = 0
    for v in sorted(validators, key=lambda v: (-v.activated_stake, v.vote_account)):
        if held * 3 > total:
            break
        members.add(v.vote_account)
        held += v.activated_stake
    return frozenset(members)


def rank_validators(
    validators: Sequence[VoteAccountLike],
    *,
    epoch: int,
    featured: Iterable[str] = (),
    yields: YieldInputs | None = None,
) -> tuple[RankedValidator, ...]:
    """Score every validator and sort them, best first (delinquent ones last).

    Args:
        validators: Current and delinquent vote accounts.
        epoch: Current epoch (credits of earlier epochs are "completed").
        featured: Vote accounts the operator features.
        yields: The cluster's inflation, supply and active stake, for the estimated
            APY (None: unknown, every estimate is 0).
    """
    featured_set = frozenset(featured)
    earned = {v.vote_account: _earned(v.epoch_credits) for v in validators}
    window = range(max(epoch - CREDIT_EPOCHS, 0), epoch)
    best_by_epoch = {
        e: max((earned[v.vote_account].get(e, 0) for v in validators), default=0) for e in window
    }
    counted = [e for e in window if best_by_epoch[e] > 0]
    if counted:
        best_total = sum(best_by_epoch[e] for e in counted)
        basis = f"over the last {len(counted)} completed epoch{'s' if len(counted) > 1 else ''}"
    else:
        counted = [epoch]
        best_total = max((earned[v.vote_account].get(epoch, 0) for v in validators), default=0)
        basis = "in the current epoch so far (no completed epoch reported)"
    total_stake = sum(v.activated_stake for v in validators)
    super_set = superminority(validators)
    performances = {
        v.vote_account: (
            sum(earned[v.vote_account].get(e, 0) for e in counted) / best_total
            if best_total > 0
            else 0.0
        )
        for v in validators
    }
    mean_ratio = mean_credit_ratio(
        (v.activated_stake, performances[v.vote_account]) for v in validators
    )
    ranked: list[RankedValidator] = []
    for v in validators:
        mine = earned[v.vote_account]
        performance = performances[v.vote_account]
        completed = [c for e, c in mine.items() if e < epoch]
        average = (
            sum(completed[-CREDIT_EPOCHS:]) // len(completed[-CREDIT_EPOCHS:]) if completed else 0
        )
        commission = min(max(v.commission, 0), 100)
        share = v.activated_stake / total_stake if total_stake > 0 else 0.0
        in_super = v.vote_account in super_set
        c_part = WEIGHT_COMMISSION * (1 - commission / 100)
        p_part = WEIGHT_PERFORMANCE * min(performance, 1.0)
        d_part = 0.0 if in_super else WEIGHT_DECENTRALIZATION
        score = 0.0 if v.delinquent else round(c_part + p_part + d_part, 6)
        reasons = []
        if v.delinquent:
            reasons.append(
                f"delinquent: no recent vote (last vote at slot {v.last_vote}); "
                "score 0, ranked last"
            )
        keep = "keeps every reward" if commission == 100 else "lower is better"
        reasons.append(f"commission {commission}% ({keep}): +{c_part:.3f}")
        reasons.append(
            f"vote credits {performance * 100:.1f}% of the best validator's {basis}: +{p_part:.3f}"
        )
        if in_super:
            reasons.append(
                f"in the superminority ({share * 100:.2f}% of activated stake; the "
                f"{len(super_set)} largest validators hold over 1/3): +0.000"
            )
        else:
            reasons.append(
                f"outside the superminority ({share * 100:.2f}% of activated stake): +{d_part:.3f}"
            )
        apy = rate = 0.0
        if v.delinquent:
            reasons.append("estimated APY 0.00%: a delinquent validator earns no rewards")
        elif yields is None:
            reasons.append("estimated APY unknown: the cluster's inflation rate is not known")
        else:
            estimate = estimate_yield(
                yields,
                commission_percent=commission,
                credit_ratio=min(performance, 1.0),
                mean_ratio=mean_ratio,
            )
            apy, rate = estimate.apy, estimate.per_epoch_rate
            reasons.append(estimate.formula())
        if v.vote_account in featured_set:
            reasons.append("featured by the operator")
        ranked.append(
            RankedValidator(
                vote_account=v.vote_account,
                node_pubkey=v.node_pubkey,
                commission=commission,
                activated_stake=v.activated_stake,
                delinquent=v.delinquent,
                last_vote=v.last_vote,
                root_slot=v.root_slot,
                current_epoch_credits=mine.get(epoch, 0),
                average_epoch_credits=average,
                performance=performance,
                stake_share=share,
                superminority=in_super,
                featured=v.vote_account in featured_set,
                score=score,
                reasons=tuple(reasons),
                estimated_apy=apy,
                per_epoch_rate=rate,
            )
        )
    ranked.sort(
        key=lambda r: (
            r.delinquent,
            -r.score,
            -r.estimated_apy,
            -r.performance,
            r.commission,
            r.vote_account,
        )
    )
    return tuple(ranked)


def filter_validators(
    ranked: Iterable[RankedValidator],
    *,
    max_commission_percent: int | None = None,
    include_delinquent: bool = False,
    min_estimated_apy: float | None = None,
) -> tuple[RankedValidator, ...]:
    """The ranking restricted by the ListValidators filters (order kept)."""
    return tuple(
        r
        for r in ranked
        if (include_delinquent or not r.delinquent)
        and (max_commission_percent is None or r.commission <= max_commission_percent)
        and (min_estimated_apy is None or r.estimated_apy >= min_estimated_apy)
    )
