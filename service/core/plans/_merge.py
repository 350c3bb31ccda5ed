"""The BuildMergeTransaction plan: merge stake accounts of the wallet into one.

Instructions, in order::

    [AdvanceNonceAccount]                  durable nonce only
    SetComputeUnitLimit / [SetComputeUnitPrice]
    Stake Merge                            one per source, signed by the stake authority
    [Memo]

The stake program merges two accounts only when (``MergeKind`` in its processor):

- neither is transient: partly activating or deactivating;
- their authorities are identical, and their lockups are identical or neither is in
  force;
- when both hold stake, it is delegated to the same vote account and not deactivated;
- their kinds combine: inactive + inactive, inactive + activating (either way),
  activating + activating, fully active + fully active.

:func:`merge_mismatch` checks the same rules and names the differing field. When the
request names no sources, every account of the wallet *of the destination's kind*
is merged (an inactive account merged into an activating one would be delegated,
an activating one merged into an inactive one undelegated: name them to do that).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from solders.pubkey import Pubkey

from service.core._validate import check_pubkey
from service.core.activation import StakeHistoryEntry, stake_activation
from service.core.encoders import stake_merge
from service.core.errors import (
    InvalidArgumentError,
    MergeMismatchError,
    NothingToMergeError,
    NotWithdrawAuthorityError,
    StakeAccountNotFoundError,
    combine_violations,
    failed_checks,
)
from service.core.fees import ServiceFee
from service.core.plans._transaction import (
    MEASURED_BUDGET_CU,
    MEASURED_MEMO_CU,
    Lifetime,
    PreparedTransaction,
    TransactionOptions,
    check_addresses,
    compute_units_with_margin,
    prepare_transaction,
)
from service.core.positions import FetchedStakeAccount
from service.core.programs import LAMPORTS_PER_SIGNATURE

# Most Merge instructions in one transaction (fits 1232 bytes with every option).
MAX_MERGES: Final = 8

# Compute units measured on LiteSVM (tests/core/test_compute_units_lifecycle.py).
MEASURED_MERGE_CU: Final = 17_720


def default_merge_compute_unit_limit(*, merges: int) -> int:
    """The plan's default compute unit limit (measured, +20%, rounded up)."""
    return compute_units_with_margin(
        MEASURED_BUDGET_CU + MEASURED_MEMO_CU + merges * MEASURED_MERGE_CU
    )


class MergeKind(enum.Enum):
    """How the stake program classifies an account for a merge."""

    INACTIVE = "inactive"
    ACTIVATION_EPOCH = "activating"
    FULLY_ACTIVE = "fully active"
    TRANSIENT = "transient"


_COMPATIBLE: Final = frozenset(
    {
        (MergeKind.INACTIVE, MergeKind.INACTIVE),
        (MergeKind.INACTIVE, MergeKind.ACTIVATION_EPOCH),
        (MergeKind.ACTIVATION_EPOCH, MergeKind.INACTIVE),
        (MergeKind.ACTIVATION_EPOCH, MergeKind.ACTIVATION_EPOCH),
        (MergeKind.FULLY_ACTIVE, MergeKind.FULLY_ACTIVE),
    }
)


def merge_kind(
    fetched: FetchedStakeAccount, *, epoch: int, history: Mapping[int, StakeHistoryEntry]
) -> MergeKind:
    """The program's ``MergeKind::get_if_mergeable`` at ``epoch`` (TRANSIENT where it
    fails with MergeTransientStake)."""
    d = fetched.delegation
    if d is None:
        return MergeKind.INACTIVE
    status = stake_activation(d, epoch, history)
    if status.effective == 0 and status.activating == 0 and status.deactivating == 0:
        return MergeKind.INACTIVE
    if status.effective == 0:
        return MergeKind.ACTIVATION_EPOCH
    if status.activating == 0 and status.deactivating == 0:
        return MergeKind.FULLY_ACTIVE
    return MergeKind.TRANSIENT


def account_mismatch(
    destination: FetchedStakeAccount,
    source: FetchedStakeAccount,
    *,
    epoch: int,
    unix_timestamp: int,
    history: Mapping[int, StakeHistoryEntry],
    field: str | None = None,
    error: type[MergeMismatchError] = MergeMismatchError,
) -> MergeMismatchError | None:
    """Why two accounts cannot be combined whatever their kinds, or None: what Merge,
    MoveStake and MoveLamports all require (``MergeKind::get_if_mergeable`` and
    ``metas_can_merge`` in the program): neither is transient, the authorities are
    identical, and the lockups are identical or neither is in force.

    Args:
        error: The error class to return (its reason and hint name the operation).
    """
    dest, src = str(destination.address), str(source.address)
    for role, account in (("destination", destination), ("source", source)):
        if merge_kind(account, epoch=epoch, history=history) is MergeKind.TRANSIENT:
            d = account.delegation
            assert d is not None
            status = stake_activation(d, epoch, history)
            moving = "activating" if status.activating else "deactivating"
            return error(
                f"{role} stake account {account.address} is {moving} "
                f"({status.activating or status.deactivating} lamports still {moving}): "
                f"transient stake cannot be {error.operation} before the next epoch boundary",
                mismatch="transient_state",
                destination=dest,
                source=src,
                field=field,
                metadata={"transient_account": str(account.address), "transient": moving},
            )
    if (destination.staker, destination.withdrawer) != (source.staker, source.withdrawer):
        return error(
            f"stake account {src} has authorities staker {source.staker} / withdrawer "
            f"{source.withdrawer}, destination {dest} has {destination.staker} / "
            f"{destination.withdrawer}",
            mismatch="authorities",
            destination=dest,
            source=src,
            field=field,
            metadata={
                "destination_staker": str(destination.staker),
                "source_staker": str(source.staker),
                "destination_withdrawer": str(destination.withdrawer),
                "source_withdrawer": str(source.withdrawer),
            },
        )
    if destination.lockup != source.lockup and (
        destination.lockup.in_force(epoch=epoch, unix_timestamp=unix_timestamp)
        or source.lockup.in_force(epoch=epoch, unix_timestamp=unix_timestamp)
    ):
        return error(
            f"stake accounts {dest} and {src} have different lockups, one of them in force",
            mismatch="lockup",
            destination=dest,
            source=src,
            field=field,
            metadata={
                "destination_lockup": _lockup_text(destination),
                "source_lockup": _lockup_text(source),
            },
        )
    return None


def merge_mismatch(
    destination: FetchedStakeAccount,
    source: FetchedStakeAccount,
    *,
    epoch: int,
    unix_timestamp: int,
    history: Mapping[int, StakeHistoryEntry],
    field: str | None = None,
) -> MergeMismatchError | None:
    """Why ``source`` cannot be merged into ``destination`` now, or None if it can."""
    problem = account_mismatch(
        destination,
        source,
        epoch=epoch,
        unix_timestamp=unix_timestamp,
        history=history,
        field=field,
    )
    if problem is not None:
        return problem
    dest, src = str(destination.address), str(source.address)
    kinds = {
        "destination": merge_kind(destination, epoch=epoch, history=history),
        "source": merge_kind(source, epoch=epoch, history=history),
    }
    active = (MergeKind.ACTIVATION_EPOCH, MergeKind.FULLY_ACTIVE)
    if kinds["destination"] in active and kinds["source"] in active:
        d, s = destination.delegation, source.delegation
        assert d is not None and s is not None
        if d.voter != s.voter:
            return MergeMismatchError(
                f"stake account {src} is delegated to vote account {s.voter}, destination "
                f"{dest} to {d.voter}",
                mismatch="voter",
                destination=dest,
                source=src,
                field=field,
                metadata={"destination_voter": str(d.voter), "source_voter": str(s.voter)},
            )
        if d.is_deactivated or s.is_deactivated:
            return MergeMismatchError(
                f"stake accounts {dest} and {src}: a deactivated delegation cannot be merged",
                mismatch="state",
                destination=dest,
                source=src,
                field=field,
            )
    pair = (kinds["destination"], kinds["source"])
    if pair not in _COMPATIBLE:
        return MergeMismatchError(
            f"destination {dest} is {pair[0].value} and source {src} is {pair[1].value}: "
            "fully active stake merges only with fully active stake",
            mismatch="state",
            destination=dest,
            source=src,
            field=field,
            metadata={"destination_state": pair[0].value, "source_state": pair[1].value},
        )
    return None


def _lockup_text(account: FetchedStakeAccount) -> str:
    lockup = account.lockup
    return (
        f"unix_timestamp={lockup.unix_timestamp} epoch={lockup.epoch} custodian={lockup.custodian}"
    )


@dataclass(frozen=True, kw_only=True)
class MergeRequest:
    """A BuildMergeTransaction request, as domain values.

    Attributes:
        sources: Accounts to merge into ``destination``; empty = every account of the
            wallet of the destination's kind that can be merged.
    """

    wallet: Pubkey
    destination: Pubkey
    sources: tuple[Pubkey, ...] = ()
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        errors = failed_checks(
            lambda: check_pubkey(self.wallet, field="wallet"),
            lambda: check_pubkey(self.destination, field="destination"),
        )
        if len(set(self.sources)) != len(self.sources):
            errors.append(
                InvalidArgumentError(
                    "source_stake_accounts lists an account twice", field="source_stake_accounts"
                )
            )
        if self.destination in self.sources:
            errors.append(
                InvalidArgumentError(
                    "source_stake_accounts must not contain destination_stake_account",
                    field="source_stake_accounts",
                )
            )
        if len(self.sources) > MAX_MERGES:
            errors.append(
                InvalidArgumentError(
                    f"at most {MAX_MERGES} source accounts fit in one transaction",
                    field="source_stake_accounts",
                    metadata={"maximum": MAX_MERGES},
                )
            )
        problem = combine_violations(errors)
        if problem is not None:
            raise problem


@dataclass(frozen=True, kw_only=True)
class MergeContext:
    """Chain state the merge plan needs (read per request).

    Attributes:
        accounts: The destination and the named sources, or every stake account of the
            wallet.
    """

    lifetime: Lifetime
    accounts: Sequence[FetchedStakeAccount]
    epoch: int
    unix_timestamp: int
    history: Mapping[int, StakeHistoryEntry]
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None


@dataclass(frozen=True, kw_only=True)
class PreparedMergeTransaction:
    prepared: PreparedTransaction
    destination: Pubkey
    merged: tuple[Pubkey, ...]
    merged_lamports: int


def _find(
    accounts: Sequence[FetchedStakeAccount], address: Pubkey, field: str
) -> FetchedStakeAccount:
    for account in accounts:
        if account.address == address:
            return account
    raise StakeAccountNotFoundError(stake_account=str(address), field=field)


def build_merge_transaction(
    request: MergeRequest, context: MergeContext
) -> PreparedMergeTransaction:
    """Plan a merge: one unsigned transaction, signed by the wallet (and the stake
    authority, when it is another key).

    Raises:
        MergeMismatchError: A named source cannot be merged (the field is named).
        NothingToMergeError: No source named and none of the wallet's accounts fits.
        NotWithdrawAuthorityError / StakeAccountNotFoundError: A bad named account.
    """
    wallet = request.wallet
    destination = _find(context.accounts, request.destination, "destination_stake_account")
    for account in context.accounts:
        if account.withdrawer != wallet:
            named_field = (
                "destination_stake_account"
                if account.address == request.destination
                else "source_stake_accounts"
            )
            raise NotWithdrawAuthorityError(
                stake_account=str(account.address),
                withdrawer=str(account.withdrawer),
                wallet=str(wallet),
                field=named_field,
            )
    if request.sources:
        sources = [_find(context.accounts, s, "source_stake_accounts") for s in request.sources]
        for source in sources:
            problem = merge_mismatch(
                destination,
                source,
                epoch=context.epoch,
                unix_timestamp=context.unix_timestamp,
                history=context.history,
                field="source_stake_accounts",
            )
            if problem is not None:
                raise problem
    else:
        kind = merge_kind(destination, epoch=context.epoch, history=context.history)
        sources, skipped = [], []
        for account in sorted(context.accounts, key=lambda a: str(a.address)):
            if account.address == destination.address:
                continue
            problem = merge_mismatch(
                destination,
                account,
                epoch=context.epoch,
                unix_timestamp=context.unix_timestamp,
                history=context.history,
            )
            same_kind = merge_kind(account, epoch=context.epoch, history=context.history) is kind
            if problem is None and same_kind:
                sources.append(account)
            else:
                why = problem.metadata["mismatch"] if problem is not None else "state"
                skipped.append(f"{account.address}: {why}")
        sources = sources[:MAX_MERGES]
        if not sources:
            raise NothingToMergeError(
                f"none of the wallet's other stake accounts can be merged into "
                f"{destination.address} ({kind.value})"
                + (f": {'; '.join(skipped)}" if skipped else ": it has no other account"),
                metadata={
                    "destination_stake_account": str(destination.address),
                    "skipped": "; ".join(skipped)[:1000],
                },
            )
    check_addresses(
        [
            ("wallet", wallet),
            ("destination_stake_account", destination.address),
        ],
        context.lifetime,
    )
    body = [
        stake_merge(destination=destination.address, source=s.address, staker=destination.staker)
        for s in sources
    ]
    prepared = prepare_transaction(
        payer=wallet,
        body=body,
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=default_merge_compute_unit_limit(merges=len(sources)),
        body_debit_lamports=0,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=context.wallet_balance_lamports,
    )
    return PreparedMergeTransaction(
        prepared=prepared,
        destination=destination.address,
        merged=tuple(s.address for s in sources),
        merged_lamports=sum(s.lamports for s in sources),
    )
