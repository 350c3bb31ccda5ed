"""The BuildAuthorizeTransaction plan: give the stake or withdraw authority of one of
the wallet's stake accounts to another key, in one transaction.

Instructions, in order::

    [AdvanceNonceAccount]                  durable nonce only
    SetComputeUnitLimit / [SetComputeUnitPrice]
    Stake AuthorizeChecked | Authorize     signed by the wallet (the withdraw authority,
                                           which may change either role), the new
                                           authority (checked only) and the lockup
                                           custodian (withdrawer change under a lockup
                                           in force)
    [Memo]

``AuthorizeChecked`` (the default) needs the new authority's signature: a mistyped
address, or one whose key nobody holds, cannot receive the role. The unchecked
``Authorize`` is built only when asked for, e.g. to hand a role to a program-derived
address that cannot sign.

The stake program's rules (``Authorized::authorize``), checked here first: the staker
or the withdrawer may change the staker; only the withdrawer may change the
withdrawer, and while the lockup is in force only with the custodian's signature.
A withdrawer change hands the account over: it is no longer the wallet's position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from solders.pubkey import Pubkey

from service.core._format import format_amount
from service.core._validate import check_pubkey, is_signing_key, not_signing_key
from service.core.encoders import StakeAuthorize, stake_authorize, stake_authorize_checked
from service.core.errors import (
    DomainError,
    ErrorKind,
    InvalidAddressError,
    combine_violations,
    failed_checks,
)
from service.core.fees import ServiceFee
from service.core.plans._stake import MEASURED_AUTHORIZE_CU
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
from service.core.programs import LAMPORTS_PER_SIGNATURE, UNSIGNABLE_KEYS

# Compute units measured on LiteSVM (tests/core/test_stake_management.py).
MEASURED_AUTHORIZE_CHECKED_CU: Final = 11_480
"""One AuthorizeChecked (the unchecked Authorize is MEASURED_AUTHORIZE_CU)."""


class AuthorityUnchangedError(DomainError):
    """The new authority already holds the role."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "AUTHORITY_UNCHANGED"
    default_hint = "Name a new authority that differs from the current one."


def default_authorize_compute_unit_limit(*, checked: bool = True) -> int:
    """The plan's default compute unit limit (measured, +20%, rounded up)."""
    measured = MEASURED_AUTHORIZE_CHECKED_CU if checked else MEASURED_AUTHORIZE_CU
    return compute_units_with_margin(MEASURED_BUDGET_CU + MEASURED_MEMO_CU + measured)


@dataclass(frozen=True, kw_only=True)
class AuthorizeRequest:
    """A BuildAuthorizeTransaction request, as domain values.

    Attributes:
        wallet: Fee payer and withdraw authority of the account; signs the change.
        stake_account: The account whose authority changes.
        new_authority: Who gets the role.
        role: STAKER or WITHDRAWER.
        checked: AuthorizeChecked (the new authority signs); False: Authorize.
        custodian: The lockup custodian who signs a withdrawer change while the lockup
            is in force (not needed when it is the wallet).
    """

    wallet: Pubkey
    stake_account: Pubkey
    new_authority: Pubkey
    role: StakeAuthorize
    checked: bool = True
    custodian: Pubkey | None = None
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        errors = failed_checks(
            lambda: check_pubkey(self.wallet, field="wallet"),
            lambda: check_pubkey(self.stake_account, field="stake_account"),
            lambda: check_pubkey(self.new_authority, field="new_authority"),
        )
        if not errors and self.checked and not is_signing_key(self.new_authority):
            errors.append(
                InvalidAddressError(
                    field="new_authority",
                    value=str(self.new_authority),
                    detail=f"{not_signing_key(self.new_authority)}, so it cannot sign "
                    "AuthorizeChecked; set unchecked to hand the role to a program address",
                )
            )
        if not errors and not self.checked and self.new_authority in UNSIGNABLE_KEYS:
            errors.append(
                InvalidAddressError(
                    field="new_authority",
                    value=str(self.new_authority),
                    detail=f"{not_signing_key(self.new_authority)}: the role would be lost "
                    "for good (a program signs as its derived addresses, never as its id)",
                )
            )
        if self.custodian is not None and not is_signing_key(self.custodian):
            errors.append(
                InvalidAddressError(
                    field="custodian",
                    value=str(self.custodian),
                    detail=not_signing_key(self.custodian),
                )
            )
        problem = combine_violations(errors)
        if problem is not None:
            raise problem


@dataclass(frozen=True, kw_only=True)
class AuthorizeContext:
    """Chain state the authorize plan needs (read per request).

    Attributes:
        account: The account as read now.
        epoch, unix_timestamp: The Clock sysvar, for the lockup.
    """

    lifetime: Lifetime
    account: FetchedStakeAccount
    epoch: int
    unix_timestamp: int
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None


@dataclass(frozen=True, kw_only=True)
class PreparedAuthorizeTransaction:
    """The authorize plan's result.

    Attributes:
        previous_authority: Who held the role.
        staker, withdrawer: The account's authorities afterwards.
        custodian: The lockup custodian who signs, when the change needs one.
        leaves_wallet: The withdrawer changes, so the account is no longer among the
            wallet's positions (ListStakeAccounts) once the transaction lands.
        account_lamports: The account's balance (what a withdrawer change hands over).
        notice: What the change means, in a sentence for the agent's user.
    """

    prepared: PreparedTransaction
    stake_account: Pubkey
    role: StakeAuthorize
    checked: bool
    previous_authority: Pubkey
    new_authority: Pubkey
    staker: Pubkey
    withdrawer: Pubkey
    custodian: Pubkey | None
    leaves_wallet: bool
    account_lamports: int
    notice: str


def _custodian(request: AuthorizeRequest, context: AuthorizeContext) -> Pubkey | None:
    """Who signs as lockup custodian: None unless the withdrawer changes under a
    lockup in force."""
    account = context.account
    lockup = account.lockup
    in_force = lockup.in_force(epoch=context.epoch, unix_timestamp=context.unix_timestamp)
    if request.role is not StakeAuthorize.WITHDRAWER or not in_force:
        return None
    for signer in (request.wallet, request.custodian):
        if signer is not None and signer == lockup.custodian:
            return signer
    detail = (
        f" ({request.custodian}, named as custodian, is not it)"
        if request.custodian is not None
        else ""
    )
    raise lockup_error(
        account,
        detail=", or sign a change of its withdraw authority" + detail,
        field="custodian" if request.custodian is not None else "stake_account",
        hint="Have the lockup custodian sign the change (set custodian), or wait until the "
        "lockup ends; the stake authority can change at any time.",
    )


def build_authorize_transaction(
    request: AuthorizeRequest, context: AuthorizeContext
) -> PreparedAuthorizeTransaction:
    """Plan an authority change: one unsigned transaction, signed by the wallet, the
    new authority (checked) and the custodian (when the lockup requires it).

    Raises:
        AuthorityUnchangedError: The new authority already holds the role.
        LockupInForceError: A withdrawer change under a lockup in force, without its
            custodian's signature.
        NotWithdrawAuthorityError: The account is not the wallet's.
    """
    wallet = request.wallet
    account = wallet_account(
        context.account, named=request.stake_account, wallet=wallet, field="stake_account"
    )
    staker_role = request.role is StakeAuthorize.STAKER
    previous = account.staker if staker_role else account.withdrawer
    role_name = request.role.name.lower()
    if request.new_authority == previous:
        raise AuthorityUnchangedError(
            f"{request.new_authority} already is the {role_name} authority of stake account "
            f"{account.address}",
            field="new_authority",
            metadata={"stake_account": str(account.address), "authority_type": role_name},
        )
    custodian = _custodian(request, context)
    check_addresses(
        [
            ("stake_account", account.address),
            ("new_authority", request.new_authority),
        ],
        context.lifetime,
    )
    if request.checked:
        instruction = stake_authorize_checked(
            stake_account=account.address,
            authority=wallet,
            new_authority=request.new_authority,
            role=request.role,
            custodian=custodian,
        )
    else:
        instruction = stake_authorize(
            stake_account=account.address,
            authority=wallet,
            new_authority=request.new_authority,
            role=request.role,
            custodian=custodian,
        )
    prepared = prepare_transaction(
        payer=wallet,
        body=[instruction],
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=default_authorize_compute_unit_limit(checked=request.checked),
        body_debit_lamports=0,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=context.wallet_balance_lamports,
    )
    new = request.new_authority
    if staker_role:
        notice = (
            f"{new} becomes the stake authority of {account.address}: it may delegate, "
            "deactivate, split, merge and move its stake (so may the wallet, as withdraw "
            "authority); the account stays among the wallet's positions."
        )
    else:
        notice = (
            f"Once this transaction lands, {new} is the withdraw authority of "
            f"{account.address}: the account and its {format_amount(account.lamports)} belong "
            f"to it, it leaves the positions of wallet {wallet}, and the wallet can no longer "
            "build transactions for it."
        )
    return PreparedAuthorizeTransaction(
        prepared=prepared,
        stake_account=account.address,
        role=request.role,
        checked=request.checked,
        previous_authority=previous,
        new_authority=request.new_authority,
        staker=request.new_authority if staker_role else account.staker,
        withdrawer=account.withdrawer if staker_role else request.new_authority,
        custodian=custodian,
        leaves_wallet=not staker_role,
        account_lamports=account.lamports,
        notice=notice,
    )
