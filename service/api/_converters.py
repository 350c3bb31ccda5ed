"""Pure proto <-> domain conversions for the StakingService (no I/O, unit-tested)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentstaking.v1 import receipts_pb2, staking_pb2, types_pb2
from google.protobuf import duration_pb2, timestamp_pb2

from service.chain import (
    BuildOptions,
    BuiltMerge,
    BuiltStake,
    BuiltUnstake,
    BuiltWithdraw,
    ChainSnapshot,
    MergeParams,
    NetworkInfo,
    Simulation,
    StakeParams,
    StakePositions,
    SubmitOutcome,
    UnstakeParams,
    ValidatorPage,
    WithdrawParams,
)
from service.core._validate import parse_address
from service.core.accounts import Lockup
from service.core.errors import FieldErrors, InvalidArgumentError
from service.core.plans import PreparedTransaction, TransactionVersion, managed_nonce_address
from service.core.positions import AccountState, StakeTotals, StakeView, seconds_until_epoch
from service.core.summaries import InstructionSummary
from service.core.txerrors import DecodedTransactionError
from service.core.txstatus import Commitment, TxState, TxStatus
from service.core.validators import RankedValidator

_PRIORITY_LEVELS = {
    types_pb2.PRIORITY_LEVEL_UNSPECIFIED: "medium",
    types_pb2.PRIORITY_LEVEL_NONE: "none",
    types_pb2.PRIORITY_LEVEL_LOW: "low",
    types_pb2.PRIORITY_LEVEL_MEDIUM: "medium",
    types_pb2.PRIORITY_LEVEL_HIGH: "high",
    types_pb2.PRIORITY_LEVEL_VERY_HIGH: "very_high",
}
_VERSIONS = {
    types_pb2.TRANSACTION_VERSION_UNSPECIFIED: TransactionVersion.V0,
    types_pb2.TRANSACTION_VERSION_V0: TransactionVersion.V0,
    types_pb2.TRANSACTION_VERSION_LEGACY: TransactionVersion.LEGACY,
}
_VERSION_TO_PROTO = {
    TransactionVersion.V0: types_pb2.TRANSACTION_VERSION_V0,
    TransactionVersion.LEGACY: types_pb2.TRANSACTION_VERSION_LEGACY,
}


def options_to_domain(
    options: types_pb2.TransactionOptions,
    *,
    wallet: str = "",
    errors: FieldErrors | None = None,
) -> BuildOptions:
    """The options as plain values; ``durable_nonce.managed`` names the wallet's managed
    nonce account (derived from ``wallet``).

    What cannot be converted (and what the request's other converters found, in
    ``errors``) travels in ``BuildOptions.invalid``, so that the build reports it with
    every other invalid field at once.
    """
    errors = FieldErrors() if errors is None else errors
    if options.version not in _VERSIONS:
        errors.add(
            InvalidArgumentError(
                f"unknown transaction version {options.version}", field="options.version"
            )
        )
    if options.priority_level not in _PRIORITY_LEVELS:
        errors.add(
            InvalidArgumentError(
                f"unknown priority level {options.priority_level}", field="options.priority_level"
            )
        )
    price = None
    if options.WhichOneof("priority_fee") == "compute_unit_price_micro_lamports":
        price = options.compute_unit_price_micro_lamports
    nonce = options.durable_nonce
    nonce_account, nonce_authority = nonce.nonce_account, nonce.nonce_authority
    if nonce.managed:
        if nonce_account or nonce_authority:
            errors.add(
                InvalidArgumentError(
                    "options.durable_nonce.managed names the nonce account and its authority: "
                    "leave nonce_account and nonce_authority empty",
                    field="options.durable_nonce.managed",
                )
            )
            nonce_account = nonce_authority = ""
        else:
            # A wallet that does not parse is the build's to report, as always.
            owner = FieldErrors().check(lambda: parse_address(wallet, field="wallet"))
            nonce_account = str(managed_nonce_address(owner)) if owner is not None else ""
    return BuildOptions(
        version=_VERSIONS.get(options.version, TransactionVersion.V0),
        compute_unit_price_micro_lamports=price,
        priority_level=_PRIORITY_LEVELS.get(options.priority_level, "medium"),
        compute_unit_limit=options.compute_unit_limit,
        nonce_account=nonce_account,
        nonce_authority=nonce_authority,
        simulate=options.simulate,
        memo=options.memo,
        invalid=tuple(errors.found),
    )


def stake_request_to_domain(request: staking_pb2.BuildStakeTransactionRequest) -> StakeParams:
    lockup = None
    if request.HasField("lockup"):
        lockup = (
            request.lockup.unix_timestamp,
            request.lockup.epoch,
            request.lockup.custodian,
        )
    return StakeParams(
        wallet=request.wallet,
        amount_lamports=request.amount_lamports,
        vote_account=request.vote_account,
        stake_authority=request.stake_authority,
        request_id=request.request_id,
        lockup=lockup,
        options=options_to_domain(request.options, wallet=request.wallet),
    )


def simulation_to_proto(simulation: Simulation) -> types_pb2.Simulation:
    return types_pb2.Simulation(
        compute_units=simulation.compute_units,
        balance_changes=[
            types_pb2.BalanceChange(
                address=change.address,
                pre_lamports=change.pre_lamports,
                post_lamports=change.post_lamports,
                delta_lamports=change.post_lamports - change.pre_lamports,
            )
            for change in simulation.balance_changes
        ],
        logs=simulation.logs,
        slot=simulation.slot,
    )


def prepared_fields(prepared: PreparedTransaction, simulation: Simulation | None = None) -> Any:
    """A response's ``transaction`` as a mapping of its fields, for the response's
    constructor: protobuf builds nested messages in place from mappings, where message
    objects would each be built and then copied into their parent (the instruction
    summaries are most of a build's response)."""
    fees = prepared.fees
    fields: dict[str, Any] = {
        "transaction": prepared.transaction,
        "message": prepared.message,
        "required_signers": [str(key) for key in prepared.required_signers],
        "recent_blockhash": str(prepared.recent_blockhash),
        "last_valid_block_height": prepared.last_valid_block_height,
        "fees": {
            "service_fee_lamports": fees.service_fee_lamports,
            "service_fee_bps": fees.service_fee_bps,
            "fee_recipient": str(fees.fee_recipient) if fees.fee_recipient else "",
            "network_fee_lamports": fees.network_fee_lamports,
            "priority_fee_lamports": fees.priority_fee_lamports,
            "rent_exempt_reserve_lamports": fees.rent_exempt_reserve_lamports,
            "total_debit_lamports": fees.total_debit_lamports,
        },
        "instructions": [_instruction_fields(summary) for summary in prepared.instructions],
        "version": _VERSION_TO_PROTO[prepared.version],
        "compute_unit_limit": prepared.compute_unit_limit,
        "compute_unit_price_micro_lamports": prepared.compute_unit_price_micro_lamports,
    }
    if simulation is not None:
        fields["simulation"] = simulation_to_proto(simulation)
    return fields


def _instruction_fields(summary: InstructionSummary) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "program": str(summary.program_id),
        "program_name": summary.program,
        "type": summary.type,
        "description": summary.description,
        "accounts": [
            {
                "address": str(account.address),
                "signer": account.is_signer,
                "writable": account.is_writable,
                "role": account.role,
            }
            for account in summary.accounts
        ],
        "data": summary.data,
    }
    for name, value in summary.params:
        if name == "lamports" and isinstance(value, int):
            fields["lamports"] = value
            break
    return fields


def prepared_to_proto(
    prepared: PreparedTransaction, simulation: Simulation | None = None
) -> types_pb2.PreparedTransaction:
    return types_pb2.PreparedTransaction(**prepared_fields(prepared, simulation))


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def stake_response_to_proto(
    built: BuiltStake, *, epoch_end_unix: float
) -> staking_pb2.BuildStakeTransactionResponse:
    plan = built.plan
    return staking_pb2.BuildStakeTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        stake_account=str(plan.stake_account),
        seed=plan.seed,
        vote_account=str(plan.vote_account),
        stake_lamports=plan.stake_lamports,
        activation_epoch=plan.activation_epoch or 0,
        expected_active_epoch=built.expected_active_epoch,
        expected_active_time=_timestamp(epoch_end_unix),
        stake_authority=str(plan.stake_authority),
        withdraw_authority=str(plan.withdraw_authority),
    )


def epoch_end_unix(info: NetworkInfo, *, now_unix: float, now_monotonic: float) -> float:
    """Wall time at which the current epoch ends, estimated from the slot time."""
    snapshot = info.snapshot
    return epoch_start_unix(
        snapshot, snapshot.epoch + 1, now_unix=now_unix, now_monotonic=now_monotonic
    )


def epoch_start_unix(
    snapshot: ChainSnapshot, epoch: int, *, now_unix: float, now_monotonic: float
) -> float:
    """Wall time at which ``epoch`` starts, estimated from the epoch schedule and the
    recent slot time, as of the cached snapshot (never before now)."""
    since_fetch = max(0.0, now_monotonic - snapshot.fetched_at)
    ahead = seconds_until_epoch(
        epoch,
        epoch=snapshot.epoch,
        slot_index=snapshot.slot_index,
        slots_in_epoch=snapshot.slots_in_epoch,
        slot_seconds=snapshot.slot_seconds,
    )
    return max(now_unix, now_unix - since_fetch + ahead) if epoch > snapshot.epoch else now_unix


def network_info_to_proto(
    info: NetworkInfo,
    *,
    now_unix: float,
    now_monotonic: float,
    receipt_keys: Sequence[receipts_pb2.ReceiptKey] = (),
) -> staking_pb2.GetNetworkInfoResponse:
    snapshot = info.snapshot
    end = epoch_end_unix(info, now_unix=now_unix, now_monotonic=now_monotonic)
    return staking_pb2.GetNetworkInfoResponse(
        epoch=snapshot.epoch,
        slot=snapshot.slot,
        slot_index=snapshot.slot_index,
        slots_in_epoch=snapshot.slots_in_epoch,
        epoch_time_remaining=_duration(max(0.0, end - now_unix)),
        epoch_end_time=_timestamp(end),
        block_height=snapshot.block_height,
        minimum_delegation_lamports=snapshot.minimum_delegation,
        stake_rent_exempt_reserve_lamports=snapshot.stake_rent_exempt_reserve,
        fee_policy=staking_pb2.FeePolicy(
            service_fee_bps=info.fee.bps, fee_recipient=info.fee.recipient
        ),
        default_vote_account=info.default_vote_account,
        cluster_version=snapshot.version,
        genesis_hash=snapshot.genesis_hash,
        slot_duration=_duration(snapshot.slot_seconds),
        epoch_rewards_active=snapshot.epoch_rewards_active,
        read_time=_timestamp(now_unix - max(0.0, now_monotonic - snapshot.fetched_at)),
        epoch_progress=(
            min(snapshot.slot_index / snapshot.slots_in_epoch, 1.0)
            if snapshot.slots_in_epoch
            else 0.0
        ),
        receipt_keys=receipt_keys,
    )


# --- unstake, withdraw, merge -------------------------------------------------------------


def unstake_request_to_domain(
    request: staking_pb2.BuildUnstakeTransactionRequest,
) -> UnstakeParams:
    return UnstakeParams(
        wallet=request.wallet,
        amount_lamports=request.amount_lamports,
        stake_account=request.stake_account,
        vote_account=request.vote_account,
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet),
    )


def unstake_response_to_proto(
    built: BuiltUnstake, *, now_unix: float, now_monotonic: float
) -> staking_pb2.BuildUnstakeTransactionResponse:
    plan = built.plan
    return staking_pb2.BuildUnstakeTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        stake_accounts=[str(a) for a in plan.stake_accounts],
        split_stake_accounts=[
            staking_pb2.SplitStakeAccount(
                stake_account=str(split.stake_account),
                seed=split.seed,
                source_stake_account=str(split.source_stake_account),
                stake_lamports=split.stake_lamports,
                rent_exempt_reserve_lamports=split.rent_exempt_reserve_lamports,
            )
            for split in plan.splits
        ],
        deactivate_lamports=plan.deactivate_lamports,
        deactivation_epoch=plan.deactivation_epoch,
        expected_inactive_epoch=plan.expected_inactive_epoch,
        expected_inactive_time=_timestamp(
            epoch_start_unix(
                built.snapshot,
                plan.expected_inactive_epoch,
                now_unix=now_unix,
                now_monotonic=now_monotonic,
            )
        ),
    )


def withdraw_request_to_domain(
    request: staking_pb2.BuildWithdrawTransactionRequest,
) -> WithdrawParams:
    return WithdrawParams(
        wallet=request.wallet,
        amount_lamports=request.amount_lamports,
        withdraw_all=request.withdraw_all,
        stake_account=request.stake_account,
        destination=request.destination,
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet),
    )


def withdraw_response_to_proto(
    built: BuiltWithdraw,
) -> staking_pb2.BuildWithdrawTransactionResponse:
    plan = built.plan
    return staking_pb2.BuildWithdrawTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        withdraw_lamports=plan.withdraw_lamports,
        destination=str(plan.destination),
        withdrawals=[
            staking_pb2.StakeWithdrawal(
                stake_account=str(w.stake_account),
                withdraw_lamports=w.lamports,
                closes_account=w.closes_account,
            )
            for w in plan.withdrawals
        ],
        remaining_withdrawable_lamports=plan.remaining_withdrawable_lamports,
    )


def merge_request_to_domain(request: staking_pb2.BuildMergeTransactionRequest) -> MergeParams:
    return MergeParams(
        wallet=request.wallet,
        destination_stake_account=request.destination_stake_account,
        source_stake_accounts=tuple(request.source_stake_accounts),
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet),
    )


def merge_response_to_proto(built: BuiltMerge) -> staking_pb2.BuildMergeTransactionResponse:
    plan = built.plan
    return staking_pb2.BuildMergeTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        destination_stake_account=str(plan.destination),
        merged_stake_accounts=[str(a) for a in plan.merged],
        merged_lamports=plan.merged_lamports,
    )


# --- ListStakeAccounts, ListValidators ----------------------------------------------------

_STATES = {
    AccountState.INITIALIZED: staking_pb2.STAKE_ACCOUNT_STATE_INITIALIZED,
    AccountState.ACTIVATING: staking_pb2.STAKE_ACCOUNT_STATE_ACTIVATING,
    AccountState.ACTIVE: staking_pb2.STAKE_ACCOUNT_STATE_ACTIVE,
    AccountState.DEACTIVATING: staking_pb2.STAKE_ACCOUNT_STATE_DEACTIVATING,
    AccountState.INACTIVE: staking_pb2.STAKE_ACCOUNT_STATE_INACTIVE,
}


def lockup_to_proto(lockup: Lockup) -> types_pb2.Lockup:
    return types_pb2.Lockup(
        unix_timestamp=lockup.unix_timestamp,
        epoch=lockup.epoch,
        custodian="" if lockup.custodian == Lockup().custodian else str(lockup.custodian),
    )


def stake_account_to_proto(
    view: StakeView, *, snapshot: ChainSnapshot, now_unix: float, now_monotonic: float
) -> staking_pb2.StakeAccount:
    result = staking_pb2.StakeAccount(
        address=str(view.address),
        balance_lamports=view.lamports,
        state=_STATES[view.state],
        voter=str(view.voter) if view.voter is not None else "",
        delegated_lamports=view.delegated_lamports,
        active_lamports=view.active_lamports,
        activating_lamports=view.activating_lamports,
        deactivating_lamports=view.deactivating_lamports,
        inactive_lamports=view.inactive_lamports,
        rent_exempt_reserve_lamports=view.rent_exempt_reserve_lamports,
        withdrawable_lamports=view.withdrawable_lamports,
        next_state=(
            _STATES[view.next_state]
            if view.next_state is not None
            else staking_pb2.STAKE_ACCOUNT_STATE_UNSPECIFIED
        ),
        lockup=lockup_to_proto(view.fetched.lockup),
        lockup_in_force=view.lockup_in_force,
        staker=str(view.fetched.staker),
        withdrawer=str(view.fetched.withdrawer),
    )
    if view.activation_epoch is not None:
        result.activation_epoch = view.activation_epoch
    if view.deactivation_epoch is not None:
        result.deactivation_epoch = view.deactivation_epoch
    if view.next_state_epoch is not None:
        result.next_state_change_epoch = view.next_state_epoch
        result.next_state_change_time.CopyFrom(
            _timestamp(
                epoch_start_unix(
                    snapshot,
                    view.next_state_epoch,
                    now_unix=now_unix,
                    now_monotonic=now_monotonic,
                )
            )
        )
    return result


def stake_totals_to_proto(totals: StakeTotals) -> staking_pb2.StakeTotals:
    return staking_pb2.StakeTotals(
        balance_lamports=totals.balance_lamports,
        delegated_lamports=totals.delegated_lamports,
        active_lamports=totals.active_lamports,
        activating_lamports=totals.activating_lamports,
        deactivating_lamports=totals.deactivating_lamports,
        inactive_lamports=totals.inactive_lamports,
        withdrawable_lamports=totals.withdrawable_lamports,
    )


def stake_accounts_to_proto(
    positions: StakePositions, *, now_unix: float, now_monotonic: float
) -> staking_pb2.ListStakeAccountsResponse:
    return staking_pb2.ListStakeAccountsResponse(
        stake_accounts=[
            stake_account_to_proto(
                view,
                snapshot=positions.snapshot,
                now_unix=now_unix,
                now_monotonic=now_monotonic,
            )
            for view in positions.accounts
        ],
        next_page_token=positions.next_page_token,
        total_size=positions.total_size,
        totals=stake_totals_to_proto(positions.totals),
    )


def validator_to_proto(rank: int, validator: RankedValidator) -> staking_pb2.Validator:
    return staking_pb2.Validator(
        vote_account=validator.vote_account,
        node_pubkey=validator.node_pubkey,
        commission_percent=validator.commission,
        activated_stake_lamports=validator.activated_stake,
        delinquent=validator.delinquent,
        epoch_credits=validator.current_epoch_credits,
        average_epoch_credits=validator.average_epoch_credits,
        last_vote=validator.last_vote,
        root_slot=validator.root_slot,
        rank=rank,
        score=validator.score,
        reasons=list(validator.reasons),
        featured=validator.featured,
        estimated_apy=validator.estimated_apy,
    )


def validators_to_proto(page: ValidatorPage) -> staking_pb2.ListValidatorsResponse:
    return staking_pb2.ListValidatorsResponse(
        validators=[validator_to_proto(rank, v) for rank, v in page.validators],
        next_page_token=page.next_page_token,
        total_size=page.total_size,
    )


# --- relay: SubmitTransaction, GetTransactionStatus, WatchTransaction ----------------------

_COMMITMENTS = {
    types_pb2.COMMITMENT_PROCESSED: Commitment.PROCESSED,
    types_pb2.COMMITMENT_CONFIRMED: Commitment.CONFIRMED,
    types_pb2.COMMITMENT_FINALIZED: Commitment.FINALIZED,
}
_TX_STATES = {
    TxState.RECEIVED: types_pb2.TRANSACTION_STATE_RECEIVED,
    TxState.SENT: types_pb2.TRANSACTION_STATE_SENT,
    TxState.PROCESSED: types_pb2.TRANSACTION_STATE_PROCESSED,
    TxState.CONFIRMED: types_pb2.TRANSACTION_STATE_CONFIRMED,
    TxState.FINALIZED: types_pb2.TRANSACTION_STATE_FINALIZED,
    TxState.FAILED: types_pb2.TRANSACTION_STATE_FAILED,
    TxState.EXPIRED: types_pb2.TRANSACTION_STATE_EXPIRED,
}


def commitment_to_domain(
    value: types_pb2.Commitment.ValueType, *, field: str = "commitment"
) -> Commitment | None:
    """COMMITMENT_UNSPECIFIED -> None (the caller's field documents the default)."""
    if value == types_pb2.COMMITMENT_UNSPECIFIED:
        return None
    if value not in _COMMITMENTS:
        raise InvalidArgumentError(f"unknown commitment {value}", field=field)
    return _COMMITMENTS[value]


def transaction_error_to_proto(error: DecodedTransactionError) -> types_pb2.TransactionError:
    result = types_pb2.TransactionError(
        message=error.message,
        kind=error.kind,
        program=error.program,
        instruction_error=error.instruction_error,
        program_error=error.program_error,
        logs=list(error.logs),
    )
    if error.instruction_index is not None:
        result.instruction_index = error.instruction_index
    if error.custom_code is not None:
        result.custom_code = error.custom_code
    return result


def transaction_status_to_proto(status: TxStatus) -> types_pb2.TransactionStatus:
    result = types_pb2.TransactionStatus(
        signature=status.signature,
        state=_TX_STATES[status.state],
        slot=status.slot,
        confirmations=status.confirmations,
        last_valid_block_height=status.last_valid_block_height,
        send_count=status.send_count,
    )
    if status.error is not None:
        result.error.CopyFrom(transaction_error_to_proto(status.error))
    if status.update_time:
        result.update_time.CopyFrom(_timestamp(status.update_time))
    if status.create_time is not None:
        result.create_time.CopyFrom(_timestamp(status.create_time))
    return result


def submit_response_to_proto(outcome: SubmitOutcome) -> staking_pb2.SubmitTransactionResponse:
    return staking_pb2.SubmitTransactionResponse(
        signature=outcome.status.signature,
        status=transaction_status_to_proto(outcome.status),
        already_submitted=outcome.already_submitted,
    )
