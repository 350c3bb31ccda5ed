"""The BuildSetLockupTransaction plan: change the lockup of one of the wallet's stake
accounts with ``SetLockupChecked``, in one transaction.

Instructions, in order::

    [AdvanceNonceAccount]                  durable nonce only
    SetComputeUnitLimit / [SetComputeUnitPrice]
    Stake SetLockupChecked                 signed by the withdraw authority (the wallet)
                                           or, while the lockup is in force, by its
                                           custodian; a new custodian signs too
    [Memo]

The stake program's rules (``Meta::set_lockup``), checked here first: while the
lockup is in force only its custodian may change it; otherwise only the withdraw
authority may. Fields not given keep their value. ``SetLockupChecked`` has the new
custodian sign, so a lockup cannot be handed to a key nobody holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from solders.pubkey import Pubkey

from service.core._validate import (
    check_i64,
    check_pubkey,
    check_u64,
    is_signing_key,
    not_signing_key,
)
from service.core.accounts import Lockup
from service.core.encoders import stake_set_lockup_checked
from service.core.errors import (
    DomainError,
    ErrorKind,
    InvalidAddressError,
    InvalidArgumentError,
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
    wallet_account,
)
from service.core.plans._withdraw import lockup_error
from service.core.positions import FetchedStakeAccount
from service.core.programs import LAMPORTS_PER_SIGNATURE

# Compute units measured on LiteSVM (tests/core/test_stake_management.py).
MEASURED_SET_LOCKUP_CU: Final = 11_290
"""One SetLockupChecked that also sets a new custodian (the most it costs)."""


class LockupUnchangedError(DomainError):
    """The lockup already has the values asked for."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "LOCKUP_UNCHANGED"
    default_hint = "Ask for a lockup that differs from the account's (see ListStakeAccounts)."


def default_set_lockup_compute_unit_limit() -> int:
    """The plan's default compute unit limit (measured, +20%, rounded up)."""
    return compute_units_with_margin(MEASURED_BUDGET_CU + MEASURED_MEMO_CU + MEASURED_SET_LOCKUP_CU)


@dataclass(frozen=True, kw_only=True)
class SetLockupRequest:
    """A BuildSetLockupTransaction request, as domain values.

    Attributes:
        wallet: Fee payer and withdraw authority of the account.
        stake_account: The account whose lockup changes.
        unix_timestamp: New end time of the lockup (unix seconds); None keeps it.
        epoch: New end epoch of the lockup; None keeps it.
        custodian: New custodian; None keeps it. It signs the transaction.
        custodian_signs: The current custodian signs (needed while the lockup is in
            force, unless the custodian is the wallet).
    """

    wallet: Pubkey
    stake_account: Pubkey
    unix_timestamp: int | None = None
    epoch: int | None = None
    custodian: Pubkey | None = None
    custodian_signs: bool = False
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        errors = failed_checks(
            lambda: check_pubkey(self.wallet, field="wallet"),
            lambda: check_pubkey(self.stake_account, field="stake_account"),
        )
        timestamp, epoch = self.unix_timestamp, self.epoch
        if timestamp is not None:
            errors += failed_checks(lambda: check_i64(timestamp, field="lockup.unix_timestamp"))
        if epoch is not None:
            errors += failed_checks(lambda: check_u64(epoch, field="lockup.epoch"))
        if self.custodian is not None and not is_signing_key(self.custodian):
            errors.append(
                InvalidAddressError(
                    field="lockup.custodian",
                    value=str(self.custodian),
                    detail=f"{not_signing_key(self.custodian)}: SetLockupChecked needs "
                    "the new custodian's signature",
                )
            )
        if self.unix_timestamp is None and self.epoch is None and self.custodian is None:
            errors.append(
                InvalidArgumentError(
                    "set at least one of lockup.unix_timestamp, lockup.epoch and lockup.custodian",
                    field="lockup",
                )
            )
        problem = combine_violations(errors)
        if problem is not None:
            raise problem


@dataclass(frozen=True, kw_only=True)
class SetLockupContext:
    """Chain state the set-lockup plan needs (read per request)."""

    lifetime: Lifetime
    account: FetchedStakeAccount
    epoch: int
    unix_timestamp: int
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None


@dataclass(frozen=True, kw_only=True)
class PreparedSetLockupTransaction:
    """The set-lockup plan's result.

    Attributes:
        previous_lockup: The lockup before.
        lockup: The lockup afterwards.
        authority: Who signs the change: the wallet (withdraw authority) or the
            current custodian.
        custodian_signs: The current custodian signs (the lockup is in force).
        lockup_in_force: Whether the new lockup is in force now.
    """

    prepared: PreparedTransaction
    stake_account: Pubkey
    previous_lockup: Lockup
    lockup: Lockup
    authority: Pubkey
    custodian_signs: bool
    lockup_in_force: bool


def build_set_lockup_transaction(
    request: SetLockupRequest, context: SetLockupContext
) -> PreparedSetLockupTransaction:
    """Plan a lockup change: one unsigned transaction, signed by the wallet, the current
    custodian (lockup in force) and the new custodian (when one is set).

    Raises:
        LockupInForceError: The lockup is in force and neither is the wallet its
            custodian nor does the request say the custodian signs.
        LockupUnchangedError: The lockup already is what is asked for.
        NotWithdrawAuthorityError: The account is not the wallet's.
    """
    wallet = request.wallet
    account = wallet_account(
        context.account, named=request.stake_account, wallet=wallet, field="stake_account"
    )
    previous = account.lockup
    in_force = previous.in_force(epoch=context.epoch, unix_timestamp=context.unix_timestamp)
    if in_force and previous.custodian != wallet and not request.custodian_signs:
        raise lockup_error(
            account,
            detail=", or change the lockup",
            field="custodian_signs",
            hint="Have the custodian sign (set custodian_signs), or wait until the lockup "
            "ends: the withdraw authority may change it then.",
        )
    authority = previous.custodian if in_force else wallet
    lockup = Lockup(
        unix_timestamp=(
            previous.unix_timestamp if request.unix_timestamp is None else request.unix_timestamp
        ),
        epoch=previous.epoch if request.epoch is None else request.epoch,
        custodian=previous.custodian if request.custodian is None else request.custodian,
    )
    if lockup == previous:
        raise LockupUnchangedError(
            f"stake account {account.address} already has this lockup",
            field="lockup",
            metadata={"stake_account": str(account.address)},
        )
    check_addresses(
        [
            ("stake_account", account.address),
            ("lockup.custodian", request.custodian),
        ],
        context.lifetime,
    )
    instruction = stake_set_lockup_checked(
        stake_account=account.address,
        authority=authority,
        unix_timestamp=request.unix_timestamp,
        epoch=request.epoch,
        new_custodian=request.custodian,
    )
    prepared = prepare_transaction(
        payer=wallet,
        body=[instruction],
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=default_set_lockup_compute_unit_limit(),
        body_debit_lamports=0,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=context.wallet_balance_lamports,
    )
    return PreparedSetLockupTransaction(
        prepared=prepared,
        stake_account=account.address,
        previous_lockup=previous,
        lockup=lockup,
        authority=authority,
        custodian_signs=in_force and authority != wallet,
        lockup_in_force=lockup.in_force(epoch=context.epoch, unix_timestamp=context.unix_timestamp),
    )
