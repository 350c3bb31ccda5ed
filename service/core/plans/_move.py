"""The BuildMoveStakeTransaction plan: MoveStake or MoveLamports (SIMD-0148) between
two stake accounts of the wallet, in one transaction.

Instructions, in order::

    [AdvanceNonceAccount]                  durable nonce only
    SetComputeUnitLimit / [SetComputeUnitPrice]
    Stake MoveStake | MoveLamports         signed by the stake authority
    [Memo]

What the stake program accepts (``MoveStake`` / ``MoveLamports`` in its processor),
checked here first:

- two different accounts, neither transient (partly activating or deactivating),
  with identical authorities and identical lockups (or neither lockup in force),
  exactly as for a merge (:func:`account_mismatch`);
- MoveStake: the source is fully active; the destination is fully active and
  delegated to the same vote account, or inactive (it then receives a delegation to
  the source's vote account, active at once). The source keeps no stake or at least
  the minimum delegation; an inactive destination receives at least the minimum.
  The moved stake takes as many lamports with it.
- MoveLamports: moves lamports that are neither stake nor rent-exempt reserve from a
  fully active or inactive source (not one activating in its first epoch) to any
  non-transient destination.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from solders.pubkey import Pubkey

from service.core._validate import check_lamports, check_pubkey
from service.core.activation import StakeHistoryEntry
from service.core.encoders import stake_move_lamports, stake_move_stake
from service.core.errors import (
    InsufficientLamportsError,
    InsufficientStakeError,
    InvalidArgumentError,
    MoveMismatchError,
    SameStakeAccountError,
    combine_violations,
    failed_checks,
)
from service.core.fees import ServiceFee
from service.core.plans._amounts import amount_error, nearest_amounts
from service.core.plans._merge import MergeKind, account_mismatch, merge_kind
from service.core.plans._transaction import (
    MEASURED_BUDGET_CU,
    MEASURED_MEMO_CU,
    Lifetime,
    PreparedTransaction,
    TransactionOptions,
    check_addresses,
    compute_units_with_margin,
    prepare_transaction,
    wallet_account,
)
from service.core.positions import FetchedStakeAccount
from service.core.programs import LAMPORTS_PER_SIGNATURE

# Compute units measured on LiteSVM (tests/core/test_stake_management.py).
MEASURED_MOVE_STAKE_CU: Final = 22_350
"""One MoveStake between fully active accounts."""
MEASURED_MOVE_LAMPORTS_CU: Final = 12_910
"""One MoveLamports."""


class MoveType(enum.Enum):
    """What a move moves."""

    STAKE = "stake"
    """Fully active stake (MoveStake), with as many lamports."""
    LAMPORTS = "lamports"
    """Lamports that are neither stake nor rent-exempt reserve (MoveLamports)."""


class MoveAmountError(InvalidArgumentError):
    """The move would leave, or give, less than the minimum delegation."""

    default_reason = "BELOW_MINIMUM_DELEGATION"
    default_hint = (
        "Move all of the source's stake, or an amount that leaves it at least the minimum "
        "delegation (and gives an inactive destination at least as much); see "
        "nearest_lower_lamports / nearest_higher_lamports."
    )


def default_move_compute_unit_limit(move_type: MoveType) -> int:
    """The plan's default compute unit limit (measured, +20%, rounded up)."""
    measured = MEASURED_MOVE_STAKE_CU if move_type is MoveType.STAKE else MEASURED_MOVE_LAMPORTS_CU
    return compute_units_with_margin(MEASURED_BUDGET_CU + MEASURED_MEMO_CU + measured)


@dataclass(frozen=True, kw_only=True)
class MoveRequest:
    """A BuildMoveStakeTransaction request, as domain values.

    Attributes:
        wallet: Fee payer and withdraw authority of both accounts.
        source: The account the stake or lamports leave.
        destination: The account that receives them.
        amount_lamports: Stake (MoveStake) or free lamports (MoveLamports) to move.
        move_type: Which instruction.
    """

    wallet: Pubkey
    source: Pubkey
    destination: Pubkey
    amount_lamports: int
    move_type: MoveType = MoveType.STAKE
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        errors = failed_checks(
            lambda: check_pubkey(self.wallet, field="wallet"),
            lambda: check_pubkey(self.source, field="source_stake_account"),
            lambda: check_pubkey(self.destination, field="destination_stake_account"),
            lambda: check_lamports(self.amount_lamports, field="amount_lamports", minimum=1),
        )
        if not errors and self.source == self.destination:
            errors.append(
                SameStakeAccountError(
                    f"source_stake_account and destination_stake_account are the same "
                    f"account ({self.source})",
                    field="destination_stake_account",
                    metadata={"stake_account": str(self.source)},
                )
            )
        problem = combine_violations(errors)
        if problem is not None:
            raise problem


@dataclass(frozen=True, kw_only=True)
class MoveContext:
    """Chain state the move plan needs (read per request).

    Attributes:
        source: The source account as read now.
        destination: The destination account as read now.
        rent_exempt_reserve_lamports: The Rent sysvar's minimum for 200 bytes (what
            MoveLamports leaves in the source).
    """

    lifetime: Lifetime
    source: FetchedStakeAccount
    destination: FetchedStakeAccount
    epoch: int
    unix_timestamp: int
    history: Mapping[int, StakeHistoryEntry]
    rent_exempt_reserve_lamports: int
    minimum_delegation_lamports: int
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None


@dataclass(frozen=True, kw_only=True)
class PreparedMoveTransaction:
    """The move plan's result.

    Attributes:
        moved_lamports: Lamports moved (for MoveStake, as much stake moves with them).
        vote_account: The vote account of the moved stake (MoveStake); None for
            MoveLamports.
        source_stake_lamports: The source's delegated stake afterwards (0 when it
            holds none: moving all stake leaves it initialized, undelegated).
        destination_stake_lamports: The destination's delegated stake afterwards.
        destination_activated: An inactive destination receives a delegation (active
            at once).
    """

    prepared: PreparedTransaction
    source: Pubkey
    destination: Pubkey
    move_type: MoveType
    moved_lamports: int
    vote_account: Pubkey | None
    source_lamports: int
    destination_lamports: int
    source_stake_lamports: int
    destination_stake_lamports: int
    destination_activated: bool


def _stake_of(account: FetchedStakeAccount, kind: MergeKind) -> int:
    d = account.delegation
    return d.stake if d is not None and kind is not MergeKind.INACTIVE else 0


def _state_error(message: str, context: MoveContext, **metadata: str | int) -> MoveMismatchError:
    return MoveMismatchError(
        message,
        mismatch="state",
        destination=str(context.destination.address),
        source=str(context.source.address),
        metadata=metadata,
    )


def _check_stake_move(
    request: MoveRequest, context: MoveContext, kinds: tuple[MergeKind, MergeKind]
) -> None:
    source, destination = context.source, context.destination
    source_kind, destination_kind = kinds
    if source_kind is not MergeKind.FULLY_ACTIVE:
        raise _state_error(
            f"source stake account {source.address} is {source_kind.value}: MoveStake moves "
            "only fully active stake",
            context,
            source_state=source_kind.value,
        )
    if destination_kind not in (MergeKind.FULLY_ACTIVE, MergeKind.INACTIVE):
        raise _state_error(
            f"destination stake account {destination.address} is {destination_kind.value}: "
            "MoveStake needs a fully active or an inactive destination",
            context,
            destination_state=destination_kind.value,
        )
    src, dst = source.delegation, destination.delegation
    assert src is not None
    if destination_kind is MergeKind.FULLY_ACTIVE:
        assert dst is not None
        if dst.voter != src.voter:
            raise MoveMismatchError(
                f"source stake account {source.address} is delegated to vote account "
                f"{src.voter}, destination {destination.address} to {dst.voter}: stake moves "
                "only between accounts delegated to the same vote account",
                mismatch="voter",
                destination=str(destination.address),
                source=str(source.address),
                metadata={"destination_voter": str(dst.voter), "source_voter": str(src.voter)},
            )
    amount = request.amount_lamports
    stake = src.stake
    minimum = context.minimum_delegation_lamports
    destination_stake = _stake_of(destination, destination_kind)
    # Accepted: everything, or what leaves the source the minimum; an inactive
    # destination must receive the minimum, an active one must hold it afterwards.
    least = (
        minimum if destination_kind is MergeKind.INACTIVE else max(minimum - destination_stake, 1)
    )
    ranges = [(least, stake - minimum), (max(stake, least), stake)]
    if any(low <= amount <= high for low, high in ranges):
        return
    lower, higher = nearest_amounts(ranges, amount)
    if amount > stake:
        raise InsufficientStakeError(
            f"source stake account {source.address} has {stake} lamports of stake, less "
            f"than amount_lamports {amount}",
            field="amount_lamports",
            hint="Move at most the source's stake (see ListStakeAccounts).",
            metadata={
                "stake_account": str(source.address),
                "available_lamports": stake,
                "requested_lamports": amount,
            },
        )
    why = (
        f"an inactive destination must receive at least the minimum delegation of {minimum}"
        if amount < least
        else f"moving {amount} of the {stake} lamports of stake of {source.address} would "
        f"leave {stake - amount}, below the minimum delegation of {minimum} (move all of it "
        "or less)"
    )
    raise amount_error(
        MoveAmountError,
        f"amount_lamports {amount}: {why}",
        amount=amount,
        minimum=minimum,
        lower=lower,
        higher=higher,
    )


def _free_lamports(context: MoveContext, source_kind: MergeKind) -> int:
    """What MoveLamports may take from the source now."""
    source = context.source
    if source_kind is MergeKind.ACTIVATION_EPOCH:
        raise _state_error(
            f"source stake account {source.address} is activating: MoveLamports moves only "
            "from a fully active or inactive account",
            context,
            source_state=source_kind.value,
        )
    staked = _stake_of(source, source_kind)
    return max(source.lamports - staked - context.rent_exempt_reserve_lamports, 0)


def build_move_transaction(request: MoveRequest, context: MoveContext) -> PreparedMoveTransaction:
    """Plan a MoveStake or MoveLamports: one unsigned transaction, signed by the wallet
    (and the stake authority, when it is another key).

    Raises:
        MoveMismatchError: The accounts cannot move into each other (``mismatch`` in
            metadata: authorities, lockup, transient_state, voter, state).
        MoveAmountError: A part would hold less than the minimum delegation (the
            nearest amounts that work in metadata).
        InsufficientStakeError: More than the source's stake (MoveStake).
        InsufficientLamportsError: More than the source's free lamports
            (MoveLamports).
        NotWithdrawAuthorityError: An account is not the wallet's.
    """
    wallet = request.wallet
    source = wallet_account(
        context.source, named=request.source, wallet=wallet, field="source_stake_account"
    )
    destination = wallet_account(
        context.destination,
        named=request.destination,
        wallet=wallet,
        field="destination_stake_account",
    )
    problem = account_mismatch(
        destination,
        source,
        epoch=context.epoch,
        unix_timestamp=context.unix_timestamp,
        history=context.history,
        error=MoveMismatchError,
    )
    if problem is not None:
        raise problem
    kinds = (
        merge_kind(source, epoch=context.epoch, history=context.history),
        merge_kind(destination, epoch=context.epoch, history=context.history),
    )
    amount = request.amount_lamports
    if request.move_type is MoveType.STAKE:
        _check_stake_move(request, context, kinds)
        instruction = stake_move_stake(
            source=source.address,
            destination=destination.address,
            staker=source.staker,
            lamports=amount,
        )
    else:
        free = _free_lamports(context, kinds[0])
        if amount > free:
            raise InsufficientLamportsError(
                f"source stake account {source.address} has {free} lamports that are neither "
                f"stake nor rent-exempt reserve, less than amount_lamports {amount}",
                field="amount_lamports",
                metadata={
                    "stake_account": str(source.address),
                    "available_lamports": free,
                    "requested_lamports": amount,
                    **({"nearest_lower_lamports": free} if free else {}),
                },
            )
        instruction = stake_move_lamports(
            source=source.address,
            destination=destination.address,
            staker=source.staker,
            lamports=amount,
        )
    check_addresses(
        [
            ("wallet", wallet),
            ("source_stake_account", source.address),
            ("destination_stake_account", destination.address),
        ],
        context.lifetime,
    )
    prepared = prepare_transaction(
        payer=wallet,
        body=[instruction],
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=default_move_compute_unit_limit(request.move_type),
        body_debit_lamports=0,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=context.wallet_balance_lamports,
    )
    source_stake = _stake_of(source, kinds[0])
    destination_stake = _stake_of(destination, kinds[1])
    moving_stake = request.move_type is MoveType.STAKE
    d = source.delegation
    return PreparedMoveTransaction(
        prepared=prepared,
        source=source.address,
        destination=destination.address,
        move_type=request.move_type,
        moved_lamports=amount,
        vote_account=d.voter if moving_stake and d is not None else None,
        source_lamports=source.lamports - amount,
        destination_lamports=destination.lamports + amount,
        source_stake_lamports=source_stake - amount if moving_stake else source_stake,
        destination_stake_lamports=destination_stake + amount
        if moving_stake
        else destination_stake,
        destination_activated=moving_stake and kinds[1] is MergeKind.INACTIVE,
    )
