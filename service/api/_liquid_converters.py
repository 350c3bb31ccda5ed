"""Pure proto <-> domain conversions of liquid staking (no I/O, unit-tested)."""

from __future__ import annotations

from agentstaking.v1 import liquid_staking_pb2 as pb

from service.chain import (
    BuiltLiquidStake,
    BuiltLiquidUnstake,
    LiquidStakeParams,
    LiquidUnstakeParams,
    StakePoolInfo,
    StakePoolPage,
)
from service.core.errors import InvalidArgumentError
from service.core.plans import LiquidStakeMethod, LiquidUnstakeMethod
from service.core.stake_pools import (
    Fee,
    FutureFee,
    ValidatorStatus,
    validator_stake_address,
)

from ._converters import options_to_domain, prepared_fields

_STAKE_METHODS = {
    LiquidStakeMethod.DEPOSIT_SOL: pb.LIQUID_STAKE_METHOD_DEPOSIT_SOL,
    LiquidStakeMethod.DEPOSIT_STAKE: pb.LIQUID_STAKE_METHOD_DEPOSIT_STAKE,
}
_UNSTAKE_METHODS = {
    LiquidUnstakeMethod.WITHDRAW_SOL: pb.LIQUID_UNSTAKE_METHOD_WITHDRAW_SOL,
    LiquidUnstakeMethod.WITHDRAW_STAKE: pb.LIQUID_UNSTAKE_METHOD_WITHDRAW_STAKE,
}
_UNSTAKE_METHODS_IN = {v: k for k, v in _UNSTAKE_METHODS.items()}


def fee_to_proto(fee: Fee) -> pb.StakePoolFee:
    return pb.StakePoolFee(
        numerator=fee.numerator, denominator=fee.denominator, fraction=fee.fraction
    )


def _future(future: FutureFee | None) -> pb.StakePoolFee | None:
    return fee_to_proto(future.fee) if future is not None else None


def stake_pool_to_proto(info: StakePoolInfo, *, validators: bool) -> pb.StakePool:
    snapshot = info.snapshot
    state = snapshot.pool
    validator_list = snapshot.validator_list
    fees = pb.StakePoolFees(
        epoch_fee=fee_to_proto(state.epoch_fee),
        sol_deposit_fee=fee_to_proto(state.sol_deposit_fee),
        stake_deposit_fee=fee_to_proto(state.stake_deposit_fee),
        sol_withdrawal_fee=fee_to_proto(state.sol_withdrawal_fee),
        stake_withdrawal_fee=fee_to_proto(state.stake_withdrawal_fee),
        sol_referral_fee_percent=state.sol_referral_fee,
        stake_referral_fee_percent=state.stake_referral_fee,
        next_epoch_fee=_future(state.next_epoch_fee),
        next_sol_withdrawal_fee=_future(state.next_sol_withdrawal_fee),
        next_stake_withdrawal_fee=_future(state.next_stake_withdrawal_fee),
    )
    result = pb.StakePool(
        address=str(snapshot.address),
        label=info.label,
        program_id=str(snapshot.program_id),
        pool_mint=str(state.pool_mint),
        pool_mint_decimals=snapshot.mint.decimals,
        token_program_id=str(state.token_program_id),
        total_lamports=state.total_lamports,
        pool_token_supply=state.pool_token_supply,
        lamports_per_pool_token=(
            state.total_lamports / state.pool_token_supply if state.pool_token_supply else 0.0
        ),
        fees=fees,
        last_update_epoch=state.last_update_epoch,
        up_to_date=snapshot.up_to_date,
        reserve_lamports=snapshot.reserve_lamports,
        sol_withdrawable_lamports=snapshot.sol_withdrawable_lamports,
        sol_deposits_open=state.sol_deposit_authority is None,
        stake_deposits_open=snapshot.stake_deposits_open,
        sol_withdrawals_open=state.sol_withdraw_authority is None,
        validator_count=len(validator_list.validators) if validator_list is not None else 0,
        preferred_deposit_validator=str(state.preferred_deposit_validator or ""),
        preferred_withdraw_validator=str(state.preferred_withdraw_validator or ""),
        manager=str(state.manager),
        withdraw_authority=str(snapshot.withdraw_authority),
        reserve_stake=str(state.reserve_stake),
        validator_list=str(state.validator_list),
        epoch=snapshot.epoch,
    )
    if info.estimated_apy is not None:
        result.estimated_apy = info.estimated_apy
    if validators and validator_list is not None:
        result.validators.extend(
            pb.StakePoolValidator(
                vote_account=str(v.vote_account),
                status=(
                    pb.STAKE_POOL_VALIDATOR_STATUS_ACTIVE
                    if v.status is ValidatorStatus.ACTIVE
                    else pb.STAKE_POOL_VALIDATOR_STATUS_REMOVING
                ),
                active_stake_lamports=v.active_stake_lamports,
                transient_stake_lamports=v.transient_stake_lamports,
                stake_account=str(
                    validator_stake_address(
                        program_id=snapshot.program_id,
                        stake_pool=snapshot.address,
                        vote_account=v.vote_account,
                        seed_suffix=v.validator_seed_suffix,
                    )
                ),
                last_update_epoch=v.last_update_epoch,
            )
            for v in validator_list.validators
        )
    return result


def stake_pools_to_proto(page: StakePoolPage) -> pb.ListStakePoolsResponse:
    return pb.ListStakePoolsResponse(
        stake_pools=[stake_pool_to_proto(info, validators=False) for info in page.pools],
        next_page_token=page.next_page_token,
        total_size=page.total_size,
    )


def liquid_stake_request_to_domain(
    request: pb.BuildLiquidStakeTransactionRequest,
) -> LiquidStakeParams:
    return LiquidStakeParams(
        wallet=request.wallet,
        stake_pool=request.stake_pool,
        amount_lamports=request.amount_lamports,
        stake_account=request.stake_account,
        min_pool_tokens=(request.min_pool_tokens if request.HasField("min_pool_tokens") else None),
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet),
    )


def liquid_stake_response_to_proto(
    built: BuiltLiquidStake,
) -> pb.BuildLiquidStakeTransactionResponse:
    plan = built.plan
    state = plan.pool.pool
    return pb.BuildLiquidStakeTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        stake_pool=str(plan.pool.address),
        label=built.label,
        method=_STAKE_METHODS[plan.method],
        pool_mint=str(state.pool_mint),
        pool_token_account=str(plan.pool_token_account),
        creates_pool_token_account=plan.creates_pool_token_account,
        deposit_lamports=plan.deposit_lamports,
        expected_pool_tokens=plan.expected_pool_tokens,
        referral_pool_tokens=plan.quote.referral_pool_tokens,
        deposit_fee_pool_tokens=plan.quote.manager_fee_pool_tokens,
        min_pool_tokens=plan.min_pool_tokens or 0,
        pool_total_lamports=state.total_lamports,
        pool_token_supply=state.pool_token_supply,
        stake_account=str(plan.stake_account or ""),
        vote_account=str(plan.vote_account or ""),
    )


def liquid_unstake_request_to_domain(
    request: pb.BuildLiquidUnstakeTransactionRequest,
) -> LiquidUnstakeParams:
    method = None
    if request.method != pb.LIQUID_UNSTAKE_METHOD_UNSPECIFIED:
        if request.method not in _UNSTAKE_METHODS_IN:
            raise InvalidArgumentError(f"unknown method {request.method}", field="method")
        method = _UNSTAKE_METHODS_IN[request.method]
    return LiquidUnstakeParams(
        wallet=request.wallet,
        stake_pool=request.stake_pool,
        pool_tokens=request.pool_tokens,
        method=method,
        min_lamports=request.min_lamports if request.HasField("min_lamports") else None,
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet),
    )


def _next_step(built: BuiltLiquidUnstake) -> str:
    plan = built.plan
    if plan.method is LiquidUnstakeMethod.WITHDRAW_SOL:
        return "Nothing: the SOL is in the wallet once the transaction lands."
    if plan.source is not None and plan.source.vote_account is None:
        return (
            f"Withdraw from {plan.stake_account} (BuildWithdrawTransaction): its lamports come "
            "from the pool's reserve, inactive and withdrawable at once."
        )
    return (
        f"Deactivate {plan.stake_account} (BuildUnstakeTransaction), then withdraw it "
        "(BuildWithdrawTransaction) once its cooldown ends, normally at the next epoch "
        "boundary."
    )


def liquid_unstake_response_to_proto(
    built: BuiltLiquidUnstake,
) -> pb.BuildLiquidUnstakeTransactionResponse:
    plan = built.plan
    source = plan.source
    return pb.BuildLiquidUnstakeTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        stake_pool=str(plan.pool.address),
        label=built.label,
        method=_UNSTAKE_METHODS[plan.method],
        method_reason=plan.reason,
        pool_tokens=plan.quote.pool_tokens,
        withdrawal_fee_pool_tokens=plan.quote.fee_pool_tokens,
        expected_lamports=plan.quote.lamports,
        min_lamports=plan.min_lamports or 0,
        pool_token_account=str(plan.pool_token_account),
        stake_account=str(plan.stake_account or ""),
        seed=plan.seed,
        source_stake_account=str(source.address) if source is not None else "",
        vote_account=str(source.vote_account or "") if source is not None else "",
        next_step=_next_step(built),
    )
