"""Pure proto <-> domain conversions for the stake management RPCs (split, move,
authorize, set lockup, redelegate); no I/O, unit-tested."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from agentstaking.v1 import stake_management_pb2 as pb

from service.chain import (
    AuthorizeParams,
    BuiltAuthorize,
    BuiltMove,
    BuiltRedelegate,
    BuiltSetLockup,
    BuiltSplit,
    MoveParams,
    RedelegateParams,
    SetLockupParams,
    SplitParams,
)
from service.core.encoders import StakeAuthorize
from service.core.errors import FieldErrors, InvalidArgumentError
from service.core.plans import FollowUpKind, MoveType, RedelegateStep, RedelegateStrategy

from ._converters import (
    _duration,
    _timestamp,
    epoch_start_unix,
    lockup_to_proto,
    options_to_domain,
    prepared_fields,
)

Domain = TypeVar("Domain")

_MOVE_TYPES: Mapping[int, MoveType] = {
    pb.MOVE_TYPE_UNSPECIFIED: MoveType.STAKE,
    pb.MOVE_TYPE_STAKE: MoveType.STAKE,
    pb.MOVE_TYPE_LAMPORTS: MoveType.LAMPORTS,
}
_MOVE_TYPES_TO_PROTO = {
    MoveType.STAKE: pb.MOVE_TYPE_STAKE,
    MoveType.LAMPORTS: pb.MOVE_TYPE_LAMPORTS,
}
_AUTHORITY_TYPES: Mapping[int, StakeAuthorize | None] = {
    pb.STAKE_AUTHORITY_TYPE_UNSPECIFIED: None,
    pb.STAKE_AUTHORITY_TYPE_STAKER: StakeAuthorize.STAKER,
    pb.STAKE_AUTHORITY_TYPE_WITHDRAWER: StakeAuthorize.WITHDRAWER,
}
_AUTHORITY_TYPES_TO_PROTO = {
    StakeAuthorize.STAKER: pb.STAKE_AUTHORITY_TYPE_STAKER,
    StakeAuthorize.WITHDRAWER: pb.STAKE_AUTHORITY_TYPE_WITHDRAWER,
}
_STRATEGIES: Mapping[int, RedelegateStrategy] = {
    pb.REDELEGATE_STRATEGY_UNSPECIFIED: RedelegateStrategy.AUTO,
    pb.REDELEGATE_STRATEGY_AUTO: RedelegateStrategy.AUTO,
    pb.REDELEGATE_STRATEGY_NEW_ACCOUNT: RedelegateStrategy.NEW_ACCOUNT,
    pb.REDELEGATE_STRATEGY_REUSE_ACCOUNT: RedelegateStrategy.REUSE_ACCOUNT,
}
_STRATEGIES_TO_PROTO = {
    RedelegateStrategy.AUTO: pb.REDELEGATE_STRATEGY_AUTO,
    RedelegateStrategy.NEW_ACCOUNT: pb.REDELEGATE_STRATEGY_NEW_ACCOUNT,
    RedelegateStrategy.REUSE_ACCOUNT: pb.REDELEGATE_STRATEGY_REUSE_ACCOUNT,
}
_STEPS_TO_PROTO = {
    RedelegateStep.DELEGATE: pb.REDELEGATE_STEP_DELEGATE,
    RedelegateStep.DEACTIVATE: pb.REDELEGATE_STEP_DEACTIVATE,
    RedelegateStep.NEW_ACCOUNT: pb.REDELEGATE_STEP_NEW_ACCOUNT,
}
FOLLOW_UP_METHODS = {
    FollowUpKind.DELEGATE: "BuildRedelegateTransaction",
    FollowUpKind.WITHDRAW: "BuildWithdrawTransaction",
}


def _enum(table: Mapping[int, Domain], value: int, field: str) -> Domain:
    if value not in table:
        raise InvalidArgumentError(f"unknown {field} {value}", field=field)
    return table[value]


def split_request_to_domain(request: pb.BuildSplitTransactionRequest) -> SplitParams:
    return SplitParams(
        wallet=request.wallet,
        stake_account=request.stake_account,
        amount_lamports=request.amount_lamports,
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet),
    )


def split_response_to_proto(built: BuiltSplit) -> pb.BuildSplitTransactionResponse:
    plan = built.plan
    return pb.BuildSplitTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        stake_account=str(plan.stake_account),
        new_stake_account=str(plan.new_stake_account),
        seed=plan.seed,
        split_lamports=plan.split_lamports,
        stake_lamports=plan.stake_lamports,
        rent_exempt_reserve_lamports=plan.rent_exempt_reserve_lamports,
        new_stake_account_balance_lamports=plan.new_account_lamports,
        remaining_balance_lamports=plan.source_lamports,
        remaining_stake_lamports=plan.source_stake_lamports,
        vote_account=str(plan.vote_account) if plan.vote_account is not None else "",
    )


def move_request_to_domain(request: pb.BuildMoveStakeTransactionRequest) -> MoveParams:
    errors = FieldErrors()  # reported by the build, with its own checks
    return MoveParams(
        wallet=request.wallet,
        source_stake_account=request.source_stake_account,
        destination_stake_account=request.destination_stake_account,
        amount_lamports=request.amount_lamports,
        move_type=errors.check(
            lambda: _enum(_MOVE_TYPES, request.move_type, "move_type"), MoveType.STAKE
        ),
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet, errors=errors),
    )


def move_response_to_proto(built: BuiltMove) -> pb.BuildMoveStakeTransactionResponse:
    plan = built.plan
    return pb.BuildMoveStakeTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        source_stake_account=str(plan.source),
        destination_stake_account=str(plan.destination),
        move_type=_MOVE_TYPES_TO_PROTO[plan.move_type],
        moved_lamports=plan.moved_lamports,
        vote_account=str(plan.vote_account) if plan.vote_account is not None else "",
        source_balance_lamports=plan.source_lamports,
        destination_balance_lamports=plan.destination_lamports,
        source_stake_lamports=plan.source_stake_lamports,
        destination_stake_lamports=plan.destination_stake_lamports,
        destination_activated=plan.destination_activated,
    )


def authorize_request_to_domain(request: pb.BuildAuthorizeTransactionRequest) -> AuthorizeParams:
    errors = FieldErrors()  # reported by the build, with its own checks
    return AuthorizeParams(
        wallet=request.wallet,
        stake_account=request.stake_account,
        new_authority=request.new_authority,
        authority_type=errors.check(
            lambda: _enum(_AUTHORITY_TYPES, request.authority_type, "authority_type"),
            StakeAuthorize.STAKER,
        ),
        unchecked=request.unchecked,
        custodian=request.custodian,
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet, errors=errors),
    )


def authorize_response_to_proto(built: BuiltAuthorize) -> pb.BuildAuthorizeTransactionResponse:
    plan = built.plan
    return pb.BuildAuthorizeTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        stake_account=str(plan.stake_account),
        authority_type=_AUTHORITY_TYPES_TO_PROTO[plan.role],
        previous_authority=str(plan.previous_authority),
        new_authority=str(plan.new_authority),
        checked=plan.checked,
        staker=str(plan.staker),
        withdrawer=str(plan.withdrawer),
        custodian=str(plan.custodian) if plan.custodian is not None else "",
        leaves_wallet_positions=plan.leaves_wallet,
        notice=plan.notice,
    )


def set_lockup_request_to_domain(request: pb.BuildSetLockupTransactionRequest) -> SetLockupParams:
    change = request.lockup
    return SetLockupParams(
        wallet=request.wallet,
        stake_account=request.stake_account,
        unix_timestamp=change.unix_timestamp if change.HasField("unix_timestamp") else None,
        epoch=change.epoch if change.HasField("epoch") else None,
        custodian=change.custodian,
        custodian_signs=request.custodian_signs,
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet),
    )


def set_lockup_response_to_proto(built: BuiltSetLockup) -> pb.BuildSetLockupTransactionResponse:
    plan = built.plan
    return pb.BuildSetLockupTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        stake_account=str(plan.stake_account),
        previous_lockup=lockup_to_proto(plan.previous_lockup),
        lockup=lockup_to_proto(plan.lockup),
        authority=str(plan.authority),
        custodian_signs=plan.custodian_signs,
        lockup_in_force=plan.lockup_in_force,
    )


def redelegate_request_to_domain(
    request: pb.BuildRedelegateTransactionRequest,
) -> RedelegateParams:
    errors = FieldErrors()  # reported by the build, with its own checks
    return RedelegateParams(
        wallet=request.wallet,
        stake_account=request.stake_account,
        vote_account=request.vote_account,
        strategy=errors.check(
            lambda: _enum(_STRATEGIES, request.strategy, "strategy"), RedelegateStrategy.AUTO
        ),
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet, errors=errors),
    )


def redelegate_response_to_proto(
    built: BuiltRedelegate, *, now_unix: float, now_monotonic: float
) -> pb.BuildRedelegateTransactionResponse:
    plan = built.plan

    def start_of(epoch: int) -> float:
        return epoch_start_unix(
            built.snapshot, epoch, now_unix=now_unix, now_monotonic=now_monotonic
        )

    active = start_of(plan.expected_active_epoch)
    result = pb.BuildRedelegateTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        strategy=_STRATEGIES_TO_PROTO[plan.strategy],
        step=_STEPS_TO_PROTO[plan.step],
        stake_account=str(plan.stake_account),
        vote_account=str(plan.vote_account),
        previous_vote_account=(
            str(plan.previous_vote_account) if plan.previous_vote_account is not None else ""
        ),
        stake_lamports=plan.stake_lamports,
        new_stake_account=str(plan.new_stake_account) if plan.new_stake_account else "",
        seed=plan.seed or "",
        transactions=plan.transactions,
        epoch=plan.epoch,
        expected_active_epoch=plan.expected_active_epoch,
        expected_active_time=_timestamp(active),
        time_until_active=_duration(max(active - now_unix, 0.0)),
    )
    follow_up = plan.follow_up
    if follow_up is not None:
        result.follow_up.CopyFrom(
            pb.RedelegateFollowUp(
                method=FOLLOW_UP_METHODS[follow_up.kind],
                stake_account=str(follow_up.stake_account),
                epoch=follow_up.epoch,
                time=_timestamp(start_of(follow_up.epoch)),
                description=follow_up.description,
            )
        )
    return result
