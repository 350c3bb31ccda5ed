"""The BuildSplitTransaction plan: split part of a stake account into a new
seed-derived account, in one transaction.

Instructions, in order::

    [AdvanceNonceAccount]                  durable nonce only
    SetComputeUnitLimit / [SetComputeUnitPrice]
    CreateAccountWithSeed                  wallet -> create_with_seed(wallet, seed, Stake),
                                           rent-exempt reserve, 200 bytes (pre-funded)
    Stake Split                            amount_lamports move into the new account,
                                           signed by the source's stake authority
    [Memo]

What the stake program accepts (``Split`` in its processor) depends on whether the
source holds stake, i.e. has effective or activating stake now:

- it does (active, activating or deactivating): the split moves ``amount`` lamports
  and as much delegated stake; both accounts must keep at least the minimum
  delegation, and the destination must be pre-funded to rent exemption. The new
  account is in the same state as the source (same vote account, epochs).
- it does not (never delegated, or fully deactivated): only lamports move; both
  accounts must stay rent exempt.

The new account inherits the source's authorities and lockup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from solders.pubkey import Pubkey

from service.core._validate import check_lamports, check_pubkey
from service.core.activation import StakeHistoryEntry, stake_activation
from service.core.encoders import stake_split, system_create_account_with_seed
from service.core.errors import (
    InsufficientLamportsError,
    InsufficientStakeError,
    InvalidArgumentError,
    combine_violations,
    failed_checks,
)
from service.core.fees import ServiceFee
from service.core.plans._amounts import amount_error, nearest_amounts
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
from service.core.programs import LAMPORTS_PER_SIGNATURE, STAKE_ACCOUNT_SIZE, STAKE_PROGRAM
from service.core.seeds import check_seed, stake_account_address

# Compute units measured on LiteSVM (tests/core/test_stake_management.py).
MEASURED_SPLIT_ACCOUNT_CU: Final = 17_290
"""CreateAccountWithSeed + Split of a delegated account."""


class SplitAmountError(InvalidArgumentError):
    """The amount would leave (or move) less than the minimum delegation."""

    default_reason = "BELOW_MINIMUM_DELEGATION"
    default_hint = (
        "Split an amount that leaves at least the minimum delegation in both accounts "
        "(see nearest_lower_lamports / nearest_higher_lamports)."
    )


def default_split_compute_unit_limit() -> int:
    """The plan's default compute unit limit (measured, +20%, rounded up)."""
    return compute_units_with_margin(
        MEASURED_BUDGET_CU + MEASURED_MEMO_CU + MEASURED_SPLIT_ACCOUNT_CU
    )


def holds_stake(
    fetched: FetchedStakeAccount, *, epoch: int, history: Mapping[int, StakeHistoryEntry]
) -> bool:
    """Whether the account has effective or activating stake now (the stake program
    then splits stake, not just lamports)."""
    d = fetched.delegation
    if d is None:
        return False
    status = stake_activation(d, epoch, history)
    return status.effective > 0 or status.activating > 0


def split_amount_range(
    fetched: FetchedStakeAccount,
    *,
    epoch: int,
    history: Mapping[int, StakeHistoryEntry],
    rent_exempt_reserve: int,
    minimum_delegation: int,
) -> tuple[int, int]:
    """The closed range of amounts a split of this account accepts now (empty when
    ``low > high``), with the destination pre-funded to rent exemption.

    Args:
        rent_exempt_reserve: The Rent sysvar's minimum for 200 bytes.
    """
    d = fetched.delegation
    if d is not None and holds_stake(fetched, epoch=epoch, history=history):
        return minimum_delegation, d.stake - minimum_delegation
    return 1, fetched.lamports - rent_exempt_reserve


@dataclass(frozen=True, kw_only=True)
class SplitRequest:
    """A BuildSplitTransaction request, as domain values.

    Attributes:
        wallet: Fee payer, withdraw authority of the account, base of the new seed.
        stake_account: The account to split.
        amount_lamports: Lamports (and, from staked accounts, stake) to move.
        seed: Seed of the new account.
    """

    wallet: Pubkey
    stake_account: Pubkey
    amount_lamports: int
    seed: str
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        problem = combine_violations(
            failed_checks(
                lambda: check_pubkey(self.wallet, field="wallet"),
                lambda: check_pubkey(self.stake_account, field="stake_account"),
                lambda: check_lamports(self.amount_lamports, field="amount_lamports", minimum=1),
                lambda: check_seed(self.seed, field="seed"),
            )
        )
        if problem is not None:
            raise problem


@dataclass(frozen=True, kw_only=True)
class SplitContext:
    """Chain state the split plan needs (read per request).

    Attributes:
        account: The account to split, as read now.
        epoch: Current epoch (Clock sysvar).
        history: StakeHistory sysvar entries.
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
class PreparedSplitTransaction:
    """The split plan's result.

    Attributes:
        stake_account: The account split.
        new_stake_account: The new seed-derived account.
        seed: Its seed (base = wallet, owner = Stake program).
        split_lamports: Lamports moved from the source (the request's amount).
        stake_lamports: Delegated stake moved with them; 0 when the source holds no
            stake (only lamports move).
        rent_exempt_reserve_lamports: What the wallet pre-funds the new account with.
        new_account_lamports: The new account's balance afterwards.
        source_lamports: The source's balance afterwards.
        source_stake_lamports: The source's delegated stake afterwards (0 when it
            holds none).
        vote_account: The vote account both accounts are delegated to; None when the
            source holds no stake.
        epoch: The epoch the split is planned in.
    """

    prepared: PreparedTransaction
    stake_account: Pubkey
    new_stake_account: Pubkey
    seed: str
    split_lamports: int
    stake_lamports: int
    rent_exempt_reserve_lamports: int
    new_account_lamports: int
    source_lamports: int
    source_stake_lamports: int
    vote_account: Pubkey | None
    epoch: int


def _check_amount(request: SplitRequest, context: SplitContext, staked: bool) -> None:
    source = context.account
    amount = request.amount_lamports
    minimum = context.minimum_delegation_lamports
    low, high = split_amount_range(
        source,
        epoch=context.epoch,
        history=context.history,
        rent_exempt_reserve=context.rent_exempt_reserve_lamports,
        minimum_delegation=minimum,
    )
    if low <= amount <= high:
        return
    address = source.address
    lower, higher = nearest_amounts([(low, high)], amount)
    if not staked:
        raise InsufficientLamportsError(
            f"stake account {address} holds no stake and {source.lamports} lamports, of "
            f"which {max(high, 0)} can be split off: it keeps its rent-exempt reserve of "
            f"{context.rent_exempt_reserve_lamports}",
            field="amount_lamports",
            metadata={
                "stake_account": str(address),
                "requested_lamports": amount,
                "available_lamports": max(high, 0),
                **({"nearest_lower_lamports": lower} if lower is not None else {}),
            },
        )
    assert source.delegation is not None
    stake = source.delegation.stake
    if amount > stake:
        raise InsufficientStakeError(
            f"stake account {address} has {stake} lamports of stake, less than "
            f"amount_lamports {amount}",
            field="amount_lamports",
            hint="Split less than the account's delegated stake (see ListStakeAccounts).",
            metadata={
                "stake_account": str(address),
                "available_lamports": stake,
                "requested_lamports": amount,
                **({"nearest_lower_lamports": lower} if lower is not None else {}),
            },
        )
    why = (
        f"amount_lamports {amount} is below the minimum delegation of {minimum}"
        if amount < minimum
        else f"splitting {amount} off stake account {address} ({stake} lamports of stake) "
        f"would leave {stake - amount}, below the minimum delegation of {minimum}"
    )
    raise amount_error(
        SplitAmountError, why, amount=amount, minimum=minimum, lower=lower, higher=higher
    )


def build_split_transaction(
    request: SplitRequest, context: SplitContext
) -> PreparedSplitTransaction:
    """Plan a split: one unsigned transaction, signed by the wallet (and the stake
    authority, when it is another key).

    Raises:
        SplitAmountError: A part would hold less than the minimum delegation (the
            nearest amounts that work in metadata).
        InsufficientStakeError: More than the account's stake (INSUFFICIENT_STAKE), or
            more than an unstaked account can give above its reserve
            (INSUFFICIENT_FUNDS).
        NotWithdrawAuthorityError: The account is not the wallet's.
        TransactionTooLargeError / InsufficientFundsError: As for every plan.
    """
    wallet = request.wallet
    source = wallet_account(
        context.account, named=request.stake_account, wallet=wallet, field="stake_account"
    )
    staked = holds_stake(source, epoch=context.epoch, history=context.history)
    _check_amount(request, context, staked)
    new_account = stake_account_address(base=wallet, seed=request.seed)
    check_addresses(
        [
            ("wallet", wallet),
            ("stake_account", source.address),
            ("new_stake_account", new_account),
        ],
        context.lifetime,
    )
    rent = context.rent_exempt_reserve_lamports
    amount = request.amount_lamports
    body = [
        system_create_account_with_seed(
            payer=wallet,
            new_account=new_account,
            base=wallet,
            seed=request.seed,
            lamports=rent,
            space=STAKE_ACCOUNT_SIZE,
            owner=STAKE_PROGRAM,
        ),
        stake_split(
            stake_account=source.address,
            destination=new_account,
            staker=source.staker,
            lamports=amount,
        ),
    ]
    prepared = prepare_transaction(
        payer=wallet,
        body=body,
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=default_split_compute_unit_limit(),
        body_debit_lamports=rent,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
        rent_exempt_reserve_lamports=rent,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=context.wallet_balance_lamports,
    )
    d = source.delegation
    return PreparedSplitTransaction(
        prepared=prepared,
        stake_account=source.address,
        new_stake_account=new_account,
        seed=request.seed,
        split_lamports=amount,
        stake_lamports=amount if staked else 0,
        rent_exempt_reserve_lamports=rent,
        new_account_lamports=rent + amount,
        source_lamports=source.lamports - amount,
        source_stake_lamports=d.stake - amount if staked and d is not None else 0,
        vote_account=d.voter if staked and d is not None else None,
        epoch=context.epoch,
    )
