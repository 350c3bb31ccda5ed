"""The BuildRedelegateTransaction plan: move a stake position to another validator in
the fewest transactions the runtime allows.

The stake program has no working instruction that moves active stake to another vote
account (``Redelegate`` is disabled; ``MoveStake`` only moves between accounts
delegated to the same one). What it allows:

- an account without effective stake (never delegated, fully deactivated, or
  delegated in the current epoch) is re-delegated at once with ``DelegateStake``:
  one transaction (step DELEGATE);
- an account with effective stake must cool down first. Either it is deactivated now
  and delegated again once inactive (two transactions: step DEACTIVATE now, then a
  call in the epoch named by the follow-up builds the DelegateStake; the position
  earns nothing in the epoch it warms up again), or, when the wallet can fund it, a
  new seed-derived account with the same stake, authorities and lockup is delegated
  to the new validator in the same transaction that deactivates the old one (step
  NEW_ACCOUNT: one transaction, no epoch without rewards; the old account's lamports
  are withdrawable once it has cooled down).

Instructions, in order::

    [AdvanceNonceAccount]                  durable nonce only
    SetComputeUnitLimit / [SetComputeUnitPrice]
    DELEGATE:    Stake DelegateStake       the account, to the new vote account
    DEACTIVATE:  Stake Deactivate          the account
    NEW_ACCOUNT: Stake Deactivate          the old account
                 CreateAccountWithSeed, Initialize, DelegateStake, [Authorize staker]
                                           the new account (as BuildStakeTransaction)
    [Memo]

Every stake instruction on the existing account is signed by its stake authority.
Moving a position charges no service fee.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from service.core._validate import check_pubkey
from service.core.accounts import Delegation
from service.core.activation import StakeHistoryEntry, stake_activation
from service.core.encoders import stake_deactivate, stake_delegate
from service.core.errors import (
    DomainError,
    ErrorKind,
    InsufficientFundsError,
    StakeAccountStateError,
    combine_violations,
    failed_checks,
)
from service.core.fees import ServiceFee
from service.core.plans._stake import (
    MEASURED_AUTHORIZE_CU,
    MEASURED_STAKE_CU,
    new_stake_account_instructions,
)
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
from service.core.plans._unstake import MEASURED_DEACTIVATE_CU
from service.core.positions import FetchedStakeAccount, settling_epoch
from service.core.programs import LAMPORTS_PER_SIGNATURE
from service.core.seeds import check_seed, stake_account_address

# Compute units measured on LiteSVM (tests/core/test_stake_management.py).
MEASURED_DELEGATE_CU: Final = 12_580
"""One DelegateStake of an existing account."""


class RedelegateStrategy(enum.Enum):
    """How an account with effective stake reaches the new validator."""

    AUTO = "auto"
    """A new account when the wallet can fund it, else the account itself."""
    NEW_ACCOUNT = "new_account"
    """Deactivate the account and delegate a new one at once (the wallet funds it)."""
    REUSE_ACCOUNT = "reuse_account"
    """Deactivate the account now, delegate it again once it has cooled down."""


class RedelegateStep(enum.Enum):
    """What the built transaction does."""

    DELEGATE = "delegate"
    """Delegates the account to the new vote account: the move is complete."""
    DEACTIVATE = "deactivate"
    """Deactivates the account; a second transaction delegates it after cooldown."""
    NEW_ACCOUNT = "new_account"
    """Deactivates the account and delegates a new one: the move is complete."""


class FollowUpKind(enum.Enum):
    """What to call once the follow-up epoch starts."""

    DELEGATE = "delegate"
    """BuildRedelegateTransaction again, same account and vote account."""
    WITHDRAW = "withdraw"
    """BuildWithdrawTransaction for the old account (optional: its lamports)."""


class AlreadyDelegatedError(DomainError):
    """The account is already delegated to the vote account asked for."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "ALREADY_DELEGATED"
    default_hint = "Pick another vote account (see ListValidators)."


class StakeCoolingDownError(DomainError):
    """The account is deactivating: it can be delegated again once it has cooled down.

    The chain shell sets ``retry_after`` (seconds until ``ready_epoch`` starts).
    """

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "STAKE_COOLING_DOWN"
    default_hint = (
        "Call again once ready_epoch has started (see RetryInfo): the account is then "
        "inactive and is delegated to the new vote account in one transaction."
    )

    def __init__(self, message: str, *, ready_epoch: int, metadata: Mapping[str, str | int]):
        super().__init__(message, metadata={**metadata, "ready_epoch": ready_epoch})
        self.ready_epoch = ready_epoch
        self.retry_after: float | None = None


def default_redelegate_compute_unit_limit(step: RedelegateStep, *, separate_staker: bool) -> int:
    """The plan's default compute unit limit (measured, +20%, rounded up)."""
    units = MEASURED_MEMO_CU
    if step is RedelegateStep.DELEGATE:
        units += MEASURED_BUDGET_CU + MEASURED_DELEGATE_CU
    elif step is RedelegateStep.DEACTIVATE:
        units += MEASURED_BUDGET_CU + MEASURED_DEACTIVATE_CU
    else:  # MEASURED_STAKE_CU includes the budget instructions
        units += MEASURED_DEACTIVATE_CU + MEASURED_STAKE_CU
        if separate_staker:
            units += MEASURED_AUTHORIZE_CU
    return compute_units_with_margin(units)


@dataclass(frozen=True, kw_only=True)
class RedelegateRequest:
    """A BuildRedelegateTransaction request, as domain values.

    Attributes:
        wallet: Fee payer, withdraw authority of the account, base of a new seed.
        stake_account: The position to move.
        vote_account: The validator to move it to.
        seed: Seed of the new account (used by the NEW_ACCOUNT step only).
        strategy: How an account with effective stake moves.
    """

    wallet: Pubkey
    stake_account: Pubkey
    vote_account: Pubkey
    seed: str
    strategy: RedelegateStrategy = RedelegateStrategy.AUTO
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        problem = combine_violations(
            failed_checks(
                lambda: check_pubkey(self.wallet, field="wallet"),
                lambda: check_pubkey(self.stake_account, field="stake_account"),
                lambda: check_pubkey(self.vote_account, field="vote_account"),
                lambda: check_seed(self.seed, field="seed"),
            )
        )
        if problem is not None:
            raise problem


@dataclass(frozen=True, kw_only=True)
class RedelegateContext:
    """Chain state the redelegation plan needs (read per request).

    Attributes:
        account: The position as read now.
        epoch: Current epoch (Clock sysvar).
        history: StakeHistory sysvar entries.
        rent_exempt_reserve_lamports: The Rent sysvar's minimum for 200 bytes.
        wallet_balance_lamports: For AUTO: a new account is chosen when the wallet
            can pay for it and keep at least a stake account's rent-exempt reserve.
    """

    lifetime: Lifetime
    account: FetchedStakeAccount
    epoch: int
    history: Mapping[int, StakeHistoryEntry]
    rent_exempt_reserve_lamports: int
    minimum_delegation_lamports: int
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None


@dataclass(frozen=True, kw_only=True)
class FollowUp:
    """What to do once ``epoch`` has started, and a sentence saying so."""

    kind: FollowUpKind
    stake_account: Pubkey
    epoch: int
    description: str


@dataclass(frozen=True, kw_only=True)
class PreparedRedelegateTransaction:
    """The redelegation plan's result.

    Attributes:
        strategy: The strategy applied (AUTO resolved).
        step: What this transaction does.
        stake_account: The position moved.
        vote_account: The validator it moves to.
        previous_vote_account: Where it was delegated; None if never delegated.
        stake_lamports: The stake that moves (what the new delegation will hold;
            after a cooldown, the account's lamports above its reserve).
        new_stake_account, seed: The new account (NEW_ACCOUNT step only).
        transactions: Transactions the whole move takes (this one included).
        expected_active_epoch: Projected first epoch in which the stake is fully
            active with the new validator.
        follow_up: What remains to do, and from which epoch; None when nothing.
    """

    prepared: PreparedTransaction
    strategy: RedelegateStrategy
    step: RedelegateStep
    stake_account: Pubkey
    vote_account: Pubkey
    previous_vote_account: Pubkey | None
    stake_lamports: int
    new_stake_account: Pubkey | None
    seed: str | None
    transactions: int
    expected_active_epoch: int
    follow_up: FollowUp | None
    epoch: int


def _settled(delegation: Delegation, context: RedelegateContext) -> int:
    """The projected epoch at which the delegation stops moving (the current one when
    it already has; the next one when the projection gives up)."""
    settled = settling_epoch(delegation, context.epoch, context.history)
    return settled if settled is not None else context.epoch + 1


def _refuse_new_account(account: FetchedStakeAccount) -> StakeAccountStateError:
    d = account.delegation
    address = str(account.address)
    never = d is None
    return StakeAccountStateError(
        f"stake account {address} "
        + ("was never delegated" if never else "is already deactivated and inactive")
        + ": it has no stake to deactivate, and is delegated to the new vote account at "
        "once without a new account",
        reason="STAKE_NOT_DELEGATED" if never else "STAKE_ALREADY_DEACTIVATED",
        field="strategy",
        metadata={"stake_account": address},
        hint="Use strategy AUTO or REUSE_ACCOUNT.",
    )


def build_redelegate_transaction(
    request: RedelegateRequest, context: RedelegateContext
) -> PreparedRedelegateTransaction:
    """Plan the next step of moving a position to another validator: one unsigned
    transaction, signed by the wallet (and the stake authority, when another key).

    Raises:
        AlreadyDelegatedError: It is delegated there already (and not deactivated).
        StakeCoolingDownError: It is cooling down; ``ready_epoch`` says when to retry.
        StakeAccountStateError: NEW_ACCOUNT asked for an account without stake to
            deactivate; or the account's lamports are below the minimum delegation
            (reason BELOW_MINIMUM_DELEGATION).
        InsufficientFundsError: The wallet cannot fund the new account (NEW_ACCOUNT).
        NotWithdrawAuthorityError: The account is not the wallet's.
    """
    wallet = request.wallet
    account = wallet_account(
        context.account, named=request.stake_account, wallet=wallet, field="stake_account"
    )
    d = account.delegation
    epoch = context.epoch
    address = str(account.address)
    target = request.vote_account
    if d is not None and not d.is_deactivated and d.voter == target:
        raise AlreadyDelegatedError(
            f"stake account {address} is already delegated to vote account {target}",
            field="vote_account",
            metadata={"stake_account": address, "vote_account": str(target)},
        )
    status = stake_activation(d, epoch, context.history) if d is not None else None
    if d is not None and status is not None and status.deactivating:
        ready = _settled(d, context)
        raise StakeCoolingDownError(
            f"stake account {address} is cooling down ({status.deactivating} lamports still "
            f"deactivating): it can be delegated to {target} from epoch {ready}",
            ready_epoch=ready,
            metadata={"stake_account": address, "deactivating_lamports": status.deactivating},
        )
    in_place = status is None or status.effective == 0
    strategy = request.strategy
    if strategy is RedelegateStrategy.NEW_ACCOUNT and (d is None or d.is_deactivated):
        raise _refuse_new_account(account)
    if in_place and strategy is not RedelegateStrategy.NEW_ACCOUNT:
        return _delegate(request, context)
    if strategy is RedelegateStrategy.REUSE_ACCOUNT:
        return _deactivate(request, context)
    try:
        return _new_account(request, context, auto=strategy is RedelegateStrategy.AUTO)
    except InsufficientFundsError:
        if strategy is RedelegateStrategy.NEW_ACCOUNT:
            raise
        return _deactivate(request, context)


def _prepare(
    request: RedelegateRequest,
    context: RedelegateContext,
    body: list[Instruction],
    step: RedelegateStep,
    *,
    debit: int = 0,
    wallet_keeps: int = 0,
) -> PreparedTransaction:
    account = context.account
    new_account = (
        stake_account_address(base=request.wallet, seed=request.seed)
        if step is RedelegateStep.NEW_ACCOUNT
        else None
    )
    check_addresses(
        [
            ("wallet", request.wallet),
            ("stake_account", account.address),
            ("vote_account", request.vote_account),
            ("new_stake_account", new_account),
        ],
        context.lifetime,
    )
    balance = context.wallet_balance_lamports
    return prepare_transaction(
        payer=request.wallet,
        body=body,
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=default_redelegate_compute_unit_limit(
            step, separate_staker=account.staker != request.wallet
        ),
        body_debit_lamports=debit,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
        rent_exempt_reserve_lamports=context.rent_exempt_reserve_lamports if debit else 0,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=None if balance is None else max(balance - wallet_keeps, 0),
    )


def _result(
    request: RedelegateRequest,
    context: RedelegateContext,
    prepared: PreparedTransaction,
    *,
    strategy: RedelegateStrategy,
    step: RedelegateStep,
    stake_lamports: int,
    expected_active_epoch: int,
    follow_up: FollowUp | None,
) -> PreparedRedelegateTransaction:
    d = context.account.delegation
    new_account = step is RedelegateStep.NEW_ACCOUNT
    return PreparedRedelegateTransaction(
        prepared=prepared,
        strategy=strategy,
        step=step,
        stake_account=context.account.address,
        vote_account=request.vote_account,
        previous_vote_account=d.voter if d is not None else None,
        stake_lamports=stake_lamports,
        new_stake_account=(
            stake_account_address(base=request.wallet, seed=request.seed) if new_account else None
        ),
        seed=request.seed if new_account else None,
        transactions=2 if step is RedelegateStep.DEACTIVATE else 1,
        expected_active_epoch=expected_active_epoch,
        follow_up=follow_up,
        epoch=context.epoch,
    )


def _delegate(
    request: RedelegateRequest, context: RedelegateContext
) -> PreparedRedelegateTransaction:
    """DelegateStake of the account itself: everything above its reserve."""
    account = context.account
    amount = account.lamports - context.rent_exempt_reserve_lamports
    minimum = context.minimum_delegation_lamports
    if amount < minimum:
        raise StakeAccountStateError(
            f"stake account {account.address} holds {max(amount, 0)} lamports above its "
            f"rent-exempt reserve, below the minimum delegation of {minimum}",
            reason="BELOW_MINIMUM_DELEGATION",
            field="stake_account",
            metadata={
                "stake_account": str(account.address),
                "available_lamports": max(amount, 0),
                "minimum_lamports": minimum,
            },
            hint="Fund the account (or merge another into it) before delegating it.",
        )
    body: list[Instruction] = [
        stake_delegate(
            stake_account=account.address, vote_account=request.vote_account, staker=account.staker
        )
    ]
    prepared = _prepare(request, context, body, RedelegateStep.DELEGATE)
    delegation = Delegation(
        voter=request.vote_account, stake=amount, activation_epoch=context.epoch
    )
    strategy = (
        RedelegateStrategy.REUSE_ACCOUNT
        if request.strategy is RedelegateStrategy.AUTO
        else request.strategy
    )
    return _result(
        request,
        context,
        prepared,
        strategy=strategy,
        step=RedelegateStep.DELEGATE,
        stake_lamports=amount,
        expected_active_epoch=_settled(delegation, context),
        follow_up=None,
    )


def _deactivate(
    request: RedelegateRequest, context: RedelegateContext
) -> PreparedRedelegateTransaction:
    """Deactivate now; the follow-up delegates the account once inactive."""
    account = context.account
    d = account.delegation
    assert d is not None
    body: list[Instruction] = [
        stake_deactivate(stake_account=account.address, staker=account.staker)
    ]
    prepared = _prepare(request, context, body, RedelegateStep.DEACTIVATE)
    stopped = Delegation(
        voter=d.voter,
        stake=d.stake,
        activation_epoch=d.activation_epoch,
        deactivation_epoch=context.epoch,
    )
    ready = _settled(stopped, context)
    return _result(
        request,
        context,
        prepared,
        strategy=RedelegateStrategy.REUSE_ACCOUNT,
        step=RedelegateStep.DEACTIVATE,
        stake_lamports=d.stake,
        # Delegated again at `ready`, it warms up over (at least) that epoch.
        expected_active_epoch=ready + 1,
        follow_up=FollowUp(
            kind=FollowUpKind.DELEGATE,
            stake_account=account.address,
            epoch=ready,
            description=f"From epoch {ready} stake account {account.address} is inactive: "
            f"build the same redelegation again to delegate it to {request.vote_account}.",
        ),
    )


def _new_account(
    request: RedelegateRequest, context: RedelegateContext, *, auto: bool
) -> PreparedRedelegateTransaction:
    """Deactivate the account and delegate a new one with the same stake, authorities
    and lockup, in one transaction."""
    wallet = request.wallet
    account = context.account
    d = account.delegation
    assert d is not None
    rent = context.rent_exempt_reserve_lamports
    body: list[Instruction] = [
        stake_deactivate(stake_account=account.address, staker=account.staker)
    ]
    body += new_stake_account_instructions(
        wallet=wallet,
        seed=request.seed,
        lamports=d.stake + rent,
        vote_account=request.vote_account,
        staker=account.staker,
        lockup=account.lockup,
    )
    prepared = _prepare(
        request,
        context,
        body,
        RedelegateStep.NEW_ACCOUNT,
        debit=d.stake + rent,
        wallet_keeps=rent if auto else 0,
    )
    stopped = Delegation(
        voter=d.voter,
        stake=d.stake,
        activation_epoch=d.activation_epoch,
        deactivation_epoch=context.epoch,
    )
    started = Delegation(voter=request.vote_account, stake=d.stake, activation_epoch=context.epoch)
    inactive = _settled(stopped, context)
    return _result(
        request,
        context,
        prepared,
        strategy=RedelegateStrategy.NEW_ACCOUNT,
        step=RedelegateStep.NEW_ACCOUNT,
        stake_lamports=d.stake,
        expected_active_epoch=_settled(started, context),
        follow_up=FollowUp(
            kind=FollowUpKind.WITHDRAW,
            stake_account=account.address,
            epoch=inactive,
            description=f"From epoch {inactive} the old stake account {account.address} is "
            "inactive: withdraw its lamports to the wallet (optional).",
        ),
    )
