"""GetRewards and EstimateRewards messages <-> domain values, without a server."""

from __future__ import annotations

from agentstaking.v1 import rewards_pb2

from service.api._rewards_converters import (
    estimate_request_to_domain,
    estimate_response_to_proto,
    rewards_request_to_domain,
    rewards_response_to_proto,
)
from service.chain import EstimateParams, RewardEstimate, RewardsPage, RewardsParams
from service.core.yields import (
    AccountRewards,
    EpochRewardView,
    InflationReward,
    RewardHistory,
    YieldInputs,
    estimate_yield,
)


def test_requests() -> None:
    assert rewards_request_to_domain(rewards_pb2.GetRewardsRequest(wallet="w")) == RewardsParams(
        wallet="w"
    )
    # Epoch 0 set explicitly is not "unset".
    explicit = rewards_request_to_domain(
        rewards_pb2.GetRewardsRequest(
            stake_accounts=["a", "b"], start_epoch=0, end_epoch=3, page_size=2, page_token="t"
        )
    )
    assert explicit == RewardsParams(
        stake_accounts=("a", "b"), start_epoch=0, end_epoch=3, page_size=2, page_token="t"
    )
    assert estimate_request_to_domain(
        rewards_pb2.EstimateRewardsRequest(amount_lamports=5, days=30)
    ) == EstimateParams(amount_lamports=5, days=30)
    assert estimate_request_to_domain(
        rewards_pb2.EstimateRewardsRequest(amount_lamports=5, vote_account="v", epochs=0)
    ) == EstimateParams(amount_lamports=5, vote_account="v", epochs=0)


def test_responses() -> None:
    reward = InflationReward(epoch=7, amount=10, post_balance=110, effective_slot=71, commission=5)
    view = EpochRewardView(stake_account="a", reward=reward, implied_apy=0.07, other_credits=3)
    totals = AccountRewards(
        stake_account="a", amount=10, other_credits=3, rewarded_epochs=1, unrewarded_epochs=(6,)
    )
    page = RewardsPage(
        rewards=(view,),
        history=RewardHistory(entries=(view, view), accounts=(totals,), pending_epochs=(8,)),
        start_epoch=6,
        end_epoch=8,
        next_page_token="next",
    )
    response = rewards_response_to_proto(page)
    assert response == rewards_pb2.GetRewardsResponse(
        rewards=[
            rewards_pb2.EpochReward(
                stake_account="a",
                epoch=7,
                amount_lamports=10,
                post_balance_lamports=110,
                commission_percent=5,
                effective_slot=71,
                implied_apy=0.07,
                other_credits_lamports=3,
            )
        ],
        next_page_token="next",
        total_size=2,
        accounts=[
            rewards_pb2.AccountRewards(
                stake_account="a",
                amount_lamports=10,
                other_credits_lamports=3,
                rewarded_epochs=1,
                unrewarded_epochs=[6],
            )
        ],
        total_amount_lamports=10,
        total_other_credits_lamports=3,
        start_epoch=6,
        end_epoch=8,
        pending_epochs=[8],
    )

    inputs = YieldInputs(
        validator_rate=0.05, capitalization=600, active_stake=400, slots_in_epoch=432_000
    )
    estimate = estimate_yield(inputs, commission_percent=5, credit_ratio=0.9, mean_ratio=0.95)
    result = estimate_response_to_proto(
        RewardEstimate(
            vote_account="v",
            amount_lamports=100,
            epochs=3,
            projected_rewards=4,
            estimate=estimate,
            delinquent=False,
            notes=("n",),
        )
    )
    assert (result.projected_balance_lamports, result.estimated_apy) == (104, estimate.apy)
    assumptions = result.assumptions
    assert (assumptions.capitalization_lamports, assumptions.active_stake_lamports) == (600, 400)
    assert assumptions.per_epoch_rate == estimate.per_epoch_rate
    assert assumptions.compounds_per_epoch and list(result.notes) == ["n"]
