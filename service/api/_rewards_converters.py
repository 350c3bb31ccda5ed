"""Pure proto <-> domain conversions for GetRewards and EstimateRewards."""

from __future__ import annotations

from agentstaking.v1 import rewards_pb2

from service.chain import EstimateParams, RewardEstimate, RewardsPage, RewardsParams
from service.core.yields import AccountRewards, EpochRewardView


def rewards_request_to_domain(request: rewards_pb2.GetRewardsRequest) -> RewardsParams:
    return RewardsParams(
        wallet=request.wallet,
        stake_accounts=tuple(request.stake_accounts),
        start_epoch=request.start_epoch if request.HasField("start_epoch") else None,
        end_epoch=request.end_epoch if request.HasField("end_epoch") else None,
        page_size=request.page_size,
        page_token=request.page_token,
    )


def epoch_reward_to_proto(view: EpochRewardView) -> rewards_pb2.EpochReward:
    reward = view.reward
    return rewards_pb2.EpochReward(
        stake_account=view.stake_account,
        epoch=reward.epoch,
        amount_lamports=reward.amount,
        post_balance_lamports=reward.post_balance,
        commission_percent=reward.commission or 0,
        effective_slot=reward.effective_slot,
        implied_apy=view.implied_apy,
        other_credits_lamports=view.other_credits,
    )


def account_rewards_to_proto(totals: AccountRewards) -> rewards_pb2.AccountRewards:
    return rewards_pb2.AccountRewards(
        stake_account=totals.stake_account,
        amount_lamports=totals.amount,
        other_credits_lamports=totals.other_credits,
        rewarded_epochs=totals.rewarded_epochs,
        unrewarded_epochs=list(totals.unrewarded_epochs),
    )


def rewards_response_to_proto(page: RewardsPage) -> rewards_pb2.GetRewardsResponse:
    history = page.history
    return rewards_pb2.GetRewardsResponse(
        rewards=[epoch_reward_to_proto(v) for v in page.rewards],
        next_page_token=page.next_page_token,
        total_size=len(history.entries),
        accounts=[account_rewards_to_proto(a) for a in history.accounts],
        total_amount_lamports=history.total_amount,
        total_other_credits_lamports=history.total_other_credits,
        start_epoch=page.start_epoch,
        end_epoch=page.end_epoch,
        pending_epochs=list(history.pending_epochs),
    )


def estimate_request_to_domain(request: rewards_pb2.EstimateRewardsRequest) -> EstimateParams:
    horizon = request.WhichOneof("horizon")
    return EstimateParams(
        amount_lamports=request.amount_lamports,
        vote_account=request.vote_account,
        epochs=request.epochs if horizon == "epochs" else None,
        days=request.days if horizon == "days" else None,
    )


def estimate_response_to_proto(result: RewardEstimate) -> rewards_pb2.EstimateRewardsResponse:
    estimate = result.estimate
    inputs = estimate.inputs
    return rewards_pb2.EstimateRewardsResponse(
        vote_account=result.vote_account,
        amount_lamports=result.amount_lamports,
        epochs=result.epochs,
        projected_rewards_lamports=result.projected_rewards,
        projected_balance_lamports=result.amount_lamports + result.projected_rewards,
        estimated_apy=estimate.apy,
        assumptions=rewards_pb2.RewardAssumptions(
            validator_inflation_rate=inputs.validator_rate,
            capitalization_lamports=inputs.capitalization,
            active_stake_lamports=inputs.active_stake,
            commission_percent=estimate.commission_percent,
            credit_ratio=estimate.credit_ratio,
            mean_credit_ratio=estimate.mean_credit_ratio,
            slots_per_epoch=inputs.slots_in_epoch,
            epochs_per_year=inputs.epochs_per_year,
            per_epoch_rate=estimate.per_epoch_rate,
            compounds_per_epoch=True,
            delinquent=result.delinquent,
        ),
        notes=list(result.notes),
    )
