"""The BuildNonceAccountTransaction plan: create (or close) the wallet's managed
durable nonce account, in one transaction signed by the wallet alone.

Instructions, in order::

    SetComputeUnitLimit / [SetComputeUnitPrice]
    create:  CreateAccountWithSeed         wallet -> create_with_seed(wallet,
                                           MANAGED_NONCE_SEED, System), its rent-exempt
                                           minimum, NONCE_ACCOUNT_SIZE bytes
             InitializeNonceAccount        authority: the wallet
    close:   WithdrawNonceAccount          every lamport back to the wallet
    [Memo]

The address is derived from the wallet, so the service needs no key of its own and
finds the account again from the wallet alone. A transaction built with the managed
nonce (``TransactionOptions.durable_nonce.managed``) starts with AdvanceNonceAccount
on it and stays valid until a transaction using the nonce lands. The plan itself
uses a recent blockhash: a nonce cannot pay for its own creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from solders.pubkey import Pubkey

from service.core._validate import check_lamports, check_pubkey
from service.core.encoders import (
    system_create_account_with_seed,
    system_initialize_nonce,
    system_withdraw_nonce,
)
from service.core.errors import DomainError, ErrorKind, InvalidArgumentError
from service.core.fees import ServiceFee
from service.core.plans._transaction import (
    MEASURED_BUDGET_CU,
    MEASURED_MEMO_CU,
    PreparedTransaction,
    RecentBlockhash,
    TransactionOptions,
    compute_units_with_margin,
    prepare_transaction,
)
from service.core.programs import LAMPORTS_PER_SIGNATURE, NONCE_ACCOUNT_SIZE, SYSTEM_PROGRAM

MANAGED_NONCE_SEED: Final = "agent-staking:nonce"
"""Seed of a wallet's managed nonce account (owner: the System program)."""

# Compute units measured on LiteSVM (tests/core/test_nonce_plan.py).
MEASURED_NONCE_CREATE_CU: Final = 300
"""CreateAccountWithSeed + InitializeNonceAccount."""
MEASURED_NONCE_CLOSE_CU: Final = 150
"""WithdrawNonceAccount."""


def managed_nonce_address(wallet: Pubkey) -> Pubkey:
    """The wallet's managed nonce account: create_with_seed(wallet, MANAGED_NONCE_SEED,
    System program)."""
    return Pubkey.create_with_seed(wallet, MANAGED_NONCE_SEED, SYSTEM_PROGRAM)


class ManagedNonceMissingError(DomainError):
    """The wallet has no managed nonce account (yet, or any more)."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "MANAGED_NONCE_MISSING"
    default_hint = (
        "Create it first: BuildNonceAccountTransaction, sign, submit, wait until it "
        "lands; then build with options.durable_nonce.managed."
    )

    def __init__(self, *, nonce_account: Pubkey, wallet: Pubkey) -> None:
        super().__init__(
            f"wallet {wallet} has no managed nonce account ({nonce_account} does not exist)",
            metadata={"nonce_account": str(nonce_account), "wallet": str(wallet)},
        )


class ManagedNonceExistsError(DomainError):
    """The wallet's managed nonce account exists already."""

    kind = ErrorKind.ALREADY_EXISTS
    default_reason = "MANAGED_NONCE_EXISTS"
    default_hint = "Nothing to create: build with options.durable_nonce.managed."

    def __init__(self, *, nonce_account: Pubkey) -> None:
        super().__init__(
            f"the managed nonce account {nonce_account} exists already",
            metadata={"nonce_account": str(nonce_account)},
        )


def default_nonce_account_compute_unit_limit(*, close: bool) -> int:
    measured = MEASURED_NONCE_CLOSE_CU if close else MEASURED_NONCE_CREATE_CU
    return compute_units_with_margin(MEASURED_BUDGET_CU + MEASURED_MEMO_CU + measured)


@dataclass(frozen=True, kw_only=True)
class NonceAccountRequest:
    """Create (or close) the wallet's managed nonce account."""

    wallet: Pubkey
    close: bool = False
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        check_pubkey(self.wallet, field="wallet")


@dataclass(frozen=True, kw_only=True)
class NonceAccountContext:
    """What the plan needs from the chain.

    Attributes:
        lifetime: A recent blockhash (a nonce cannot pay for its own creation).
        rent_exempt_lamports: Rent-exempt minimum of NONCE_ACCOUNT_SIZE bytes.
        account_lamports: The managed account's balance now; None when it does not
            exist.
        lamports_per_signature: Base fee per signature.
        wallet_balance_lamports: When known, checked against the debit.
    """

    lifetime: RecentBlockhash
    rent_exempt_lamports: int
    account_lamports: int | None
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None

    def __post_init__(self) -> None:
        check_lamports(self.rent_exempt_lamports, field="rent_exempt_lamports")
        if self.account_lamports is not None:
            check_lamports(self.account_lamports, field="account_lamports")


@dataclass(frozen=True, kw_only=True)
class PreparedNonceAccountTransaction:
    prepared: PreparedTransaction
    nonce_account: Pubkey
    nonce_authority: Pubkey
    account_lamports: int
    """Locked in the account (create) or returned to the wallet (close)."""


def build_nonce_account_transaction(
    request: NonceAccountRequest, context: NonceAccountContext
) -> PreparedNonceAccountTransaction:
    """Plan the creation (or closing) of the wallet's managed nonce account.

    Raises:
        InvalidArgumentError: A durable nonce lifetime.
        ManagedNonceExistsError: Creating an account that exists.
        ManagedNonceMissingError: Closing an account that does not.
        InsufficientFundsError: A known wallet balance below the debit.
    """
    if not isinstance(context.lifetime, RecentBlockhash):
        raise InvalidArgumentError(
            "the managed nonce account is created and closed with a recent blockhash",
            field="options.durable_nonce",
        )
    wallet = request.wallet
    address = managed_nonce_address(wallet)
    if request.close:
        if context.account_lamports is None:
            raise ManagedNonceMissingError(nonce_account=address, wallet=wallet)
        amount = context.account_lamports
        body = [
            system_withdraw_nonce(
                nonce_account=address, authority=wallet, destination=wallet, lamports=amount
            )
        ]
        debit = 0
    else:
        if context.account_lamports is not None:
            raise ManagedNonceExistsError(nonce_account=address)
        amount = context.rent_exempt_lamports
        body = [
            system_create_account_with_seed(
                payer=wallet,
                new_account=address,
                base=wallet,
                seed=MANAGED_NONCE_SEED,
                lamports=amount,
                space=NONCE_ACCOUNT_SIZE,
                owner=SYSTEM_PROGRAM,
            ),
            system_initialize_nonce(nonce_account=address, authority=wallet),
        ]
        debit = amount
    prepared = prepare_transaction(
        payer=wallet,
        body=body,
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=default_nonce_account_compute_unit_limit(close=request.close),
        body_debit_lamports=debit,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
        rent_exempt_reserve_lamports=debit,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=context.wallet_balance_lamports,
    )
    return PreparedNonceAccountTransaction(
        prepared=prepared, nonce_account=address, nonce_authority=wallet, account_lamports=amount
    )
