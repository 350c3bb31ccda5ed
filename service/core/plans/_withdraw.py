"""The BuildWithdrawTransaction plan: withdraw inactive lamports from the wallet's
stake accounts to the wallet (or another destination), in one transaction.

Instructions, in order::

    [AdvanceNonceAccount]                  durable nonce only
    SetComputeUnitLimit / [SetComputeUnitPrice]
    Stake Withdraw                         one per account, signed by the wallet (the
                                           withdraw authority; also as lockup custodian
                                           when it is one)
    [Memo]

What each account gives is the stake program's own Withdraw rule, computed from the
delegation and the StakeHistory sysvar (``positions.view_stake_account``): the whole
balance of a fully inactive account (closing it), otherwise what lies above the
stake still effective and the rent-exempt reserve. For an amount without a named
account, accounts that can be closed are emptied first (largest first), then the
others give what they can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from service.core._validate import check_lamports, check_pubkey
from service.core.encoders import stake_withdraw
from service.core.errors import (
    InvalidArgumentError,
    LockupInForceError,
    NotWithdrawAuthorityError,
    StakeAccountNotFoundError,
    WithdrawUnavailableError,
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
from service.core.positions import AccountState, FetchedStakeAccount, StakeView
from service.core.programs import LAMPORTS_PER_SIGNATURE

# Most Withdraw instructions in one transaction (fits 1232 bytes with every option).
MAX_WITHDRAWALS: Final = 8

# Compute units measured on LiteSVM (tests/core/test_compute_units_lifecycle.py).
MEASURED_WITHDRAW_CU: Final = 8_990


def default_withdraw_compute_unit_limit(*, withdrawals: int) -> int:
    """The plan's default compute unit limit (measured, +20%, rounded up)."""
    return compute_units_with_margin(
        MEASURED_BUDGET_CU + MEASURED_MEMO_CU + withdrawals * MEASURED_WITHDRAW_CU
    )


def lockup_error(
    account: FetchedStakeAccount,
    *,
    detail: str = "",
    field: str | None = None,
    hint: str | None = None,
) -> LockupInForceError:
    """LOCKUP_IN_FORCE naming the account's custodian and when the lockup ends
    (``detail`` is appended to the message)."""
    lockup = account.lockup
    ends = []
    if lockup.unix_timestamp > 0:
        ends.append(f"unix time {lockup.unix_timestamp}")
    if lockup.epoch > 0:
        ends.append(f"epoch {lockup.epoch}")
    return LockupInForceError(
        f"stake account {account.address} is locked up until {' and '.join(ends)}; only its "
        f"custodian {lockup.custodian} can release it earlier{detail}",
        field=field,
        hint=hint,
        metadata={
            "stake_account": str(account.address),
            "custodian": str(lockup.custodian),
            "lockup_unix_timestamp": lockup.unix_timestamp,
            "lockup_epoch": lockup.epoch,
        },
    )


@dataclass(frozen=True, kw_only=True)
class WithdrawRequest:
    """A BuildWithdrawTransaction request, as domain values.

    Attributes:
        wallet: Fee payer and withdraw authority.
        amount_lamports: Lamports to withdraw (0 with ``withdraw_all``).
        withdraw_all: Everything withdrawable now.
        stake_account: The only account to withdraw from; None = choose.
        destination: Who receives the lamports; None = the wallet.
    """

    wallet: Pubkey
    amount_lamports: int = 0
    withdraw_all: bool = False
    stake_account: Pubkey | None = None
    destination: Pubkey | None = None
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        errors = failed_checks(
            lambda: check_pubkey(self.wallet, field="wallet"),
            lambda: check_lamports(self.amount_lamports, field="amount_lamports"),
        )
        if self.withdraw_all and self.amount_lamports:
            errors.append(
                InvalidArgumentError(
                    "amount_lamports must be 0 when withdraw_all is set", field="amount_lamports"
                )
            )
        if not self.withdraw_all and not self.amount_lamports:
            errors.append(
                InvalidArgumentError(
                    "set amount_lamports, or withdraw_all to withdraw everything withdrawable",
                    field="amount_lamports",
                )
            )
        problem = combine_violations(errors)
        if problem is not None:
            raise problem

    @property
    def effective_destination(self) -> Pubkey:
        return self.destination if self.destination is not None else self.wallet


@dataclass(frozen=True, kw_only=True)
class WithdrawContext:
    """Chain state the withdraw plan needs: the accounts as viewed now (read per request).

    Attributes:
        accounts: Every stake account of the wallet (and the named account, should it
            not be one of them: the plan then refuses it).
    """

    lifetime: Lifetime
    accounts: Sequence[StakeView]
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None


@dataclass(frozen=True, kw_only=True)
class Withdrawal:
    stake_account: Pubkey
    lamports: int
    closes_account: bool


@dataclass(frozen=True, kw_only=True)
class PreparedWithdrawTransaction:
    prepared: PreparedTransaction
    destination: Pubkey
    withdrawals: tuple[Withdrawal, ...]
    withdraw_lamports: int
    remaining_withdrawable_lamports: int


def _unavailable(message: str, **metadata: str | int) -> WithdrawUnavailableError:
    return WithdrawUnavailableError(message, field="amount_lamports", metadata=metadata)


def _pending_note(views: Sequence[StakeView]) -> str:
    cooling = [v for v in views if v.state is AccountState.DEACTIVATING]
    if not cooling:
        return ""
    pending = sum(v.deactivating_lamports for v in cooling)
    epochs = [v.next_state_epoch for v in cooling if v.next_state_epoch is not None]
    when = f" (expected by epoch {max(epochs)})" if epochs else ""
    return f"; {pending} lamports are still cooling down{when}"


def _held_by_lockup(view: StakeView) -> bool:
    """Whether a lockup the wallet cannot lift is what keeps lamports in the account:
    without it, some would be withdrawable (nothing is while all of it is staked)."""
    if not view.lockup_in_force or view.custodian_signs or not view.lamports:
        return False
    staked = view.active_lamports + view.activating_lamports + view.deactivating_lamports
    return view.inactive_lamports > 0 or staked == 0


def _from_named(view: StakeView, request: WithdrawRequest) -> list[Withdrawal]:
    if view.withdrawable_lamports == 0 and _held_by_lockup(view):
        raise lockup_error(view.fetched)
    amount = request.amount_lamports
    address = str(view.address)
    if request.withdraw_all:
        if view.withdrawable_lamports == 0:
            raise _unavailable(
                f"nothing is withdrawable from stake account {address} now" + _pending_note([view]),
                stake_account=address,
                withdrawable_lamports=0,
            )
        return [
            Withdrawal(
                stake_account=view.address,
                lamports=view.withdrawable_lamports,
                closes_account=view.can_close,
            )
        ]
    if view.can_close and amount == view.lamports:
        return [Withdrawal(stake_account=view.address, lamports=amount, closes_account=True)]
    if amount <= view.max_partial_lamports:
        return [Withdrawal(stake_account=view.address, lamports=amount, closes_account=False)]
    if view.can_close and amount < view.lamports:
        raise _unavailable(
            f"withdrawing {amount} of the {view.lamports} lamports of stake account {address} "
            f"would leave less than its rent-exempt reserve: withdraw at most "
            f"{view.max_partial_lamports}, or exactly {view.lamports} to close it",
            stake_account=address,
            requested_lamports=amount,
            max_partial_lamports=view.max_partial_lamports,
            close_lamports=view.lamports,
            withdrawable_lamports=view.withdrawable_lamports,
        )
    raise _unavailable(
        f"stake account {address} has {view.withdrawable_lamports} lamports withdrawable now, "
        f"less than amount_lamports {amount}" + _pending_note([view]),
        stake_account=address,
        requested_lamports=amount,
        withdrawable_lamports=view.withdrawable_lamports,
    )


def _from_wallet(
    views: Sequence[StakeView], request: WithdrawRequest, max_withdrawals: int
) -> list[Withdrawal]:
    eligible = [v for v in views if v.withdrawable_lamports > 0]
    locked = [v for v in views if _held_by_lockup(v)]
    total = sum(v.withdrawable_lamports for v in eligible)
    if request.withdraw_all:
        if not eligible:
            if locked:
                raise lockup_error(locked[0].fetched)
            raise _unavailable(
                "nothing is withdrawable from the wallet's stake accounts now"
                + _pending_note(views),
                withdrawable_lamports=0,
            )
        chosen = sorted(eligible, key=lambda v: str(v.address))[:max_withdrawals]
        return [
            Withdrawal(
                stake_account=v.address,
                lamports=v.withdrawable_lamports,
                closes_account=v.can_close,
            )
            for v in chosen
        ]
    amount = request.amount_lamports
    if amount > total:
        if locked:
            raise lockup_error(locked[0].fetched)
        raise _unavailable(
            f"the wallet's stake accounts have {total} lamports withdrawable now, less than "
            f"amount_lamports {amount}" + _pending_note(views),
            requested_lamports=amount,
            withdrawable_lamports=total,
        )
    # Close what can be closed first (largest first), then take partial amounts.
    ordered = sorted(
        eligible,
        key=lambda v: (not v.can_close, -v.withdrawable_lamports, str(v.address)),
    )
    remaining = amount
    out: list[Withdrawal] = []
    for v in ordered:
        if remaining == 0 or len(out) == max_withdrawals:
            break
        if v.can_close and remaining >= v.lamports:
            out.append(
                Withdrawal(stake_account=v.address, lamports=v.lamports, closes_account=True)
            )
            remaining -= v.lamports
        elif v.max_partial_lamports:
            take = min(remaining, v.max_partial_lamports)
            out.append(Withdrawal(stake_account=v.address, lamports=take, closes_account=False))
            remaining -= take
    if remaining:
        raise _unavailable(
            f"{amount} lamports cannot be withdrawn exactly in one transaction (each account "
            f"keeps its rent-exempt reserve unless emptied, at most {max_withdrawals} accounts); "
            f"{amount - remaining} can",
            requested_lamports=amount,
            withdrawable_lamports=total,
            nearest_lower_lamports=amount - remaining,
        )
    return out


def build_withdraw_transaction(
    request: WithdrawRequest,
    context: WithdrawContext,
    *,
    max_withdrawals: int = MAX_WITHDRAWALS,
) -> PreparedWithdrawTransaction:
    """Plan a withdrawal: one unsigned transaction the wallet signs.

    Raises:
        LockupInForceError: The lamports are locked up (custodian and end in metadata).
        WithdrawUnavailableError: Less withdrawable now than asked for (reason
            INSUFFICIENT_FUNDS), or the amount would leave an account below its reserve.
        NotWithdrawAuthorityError / StakeAccountNotFoundError: A bad named account.
    """
    wallet = request.wallet
    for view in context.accounts:
        if view.fetched.withdrawer != wallet:
            raise NotWithdrawAuthorityError(
                stake_account=str(view.address),
                withdrawer=str(view.fetched.withdrawer),
                wallet=str(wallet),
                field="stake_account",
            )
    if request.stake_account is not None:
        named = [v for v in context.accounts if v.address == request.stake_account]
        if not named:
            raise StakeAccountNotFoundError(
                stake_account=str(request.stake_account), field="stake_account"
            )
        withdrawals = _from_named(named[0], request)
    else:
        withdrawals = _from_wallet(context.accounts, request, max_withdrawals)
    destination = request.effective_destination
    check_addresses(
        [
            ("destination", destination),
            *(("stake_account", w.stake_account) for w in withdrawals),
        ],
        context.lifetime,
    )
    by_address = {v.address: v for v in context.accounts}
    body: list[Instruction] = [
        stake_withdraw(
            stake_account=w.stake_account,
            destination=destination,
            withdrawer=wallet,
            lamports=w.lamports,
            custodian=wallet if by_address[w.stake_account].custodian_signs else None,
        )
        for w in withdrawals
    ]
    prepared = prepare_transaction(
        payer=wallet,
        body=body,
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=default_withdraw_compute_unit_limit(
            withdrawals=len(withdrawals)
        ),
        body_debit_lamports=0,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=context.wallet_balance_lamports,
    )
    withdrawn = sum(w.lamports for w in withdrawals)
    available = sum(v.withdrawable_lamports for v in context.accounts)
    return PreparedWithdrawTransaction(
        prepared=prepared,
        destination=destination,
        withdrawals=tuple(withdrawals),
        withdraw_lamports=withdrawn,
        remaining_withdrawable_lamports=max(available - withdrawn, 0),
    )
