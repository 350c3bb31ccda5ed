"""The liquid staking plans: deposit into an SPL stake pool (BuildLiquidStakeTransaction)
and withdraw from it (BuildLiquidUnstakeTransaction), in one transaction signed by the
wallet alone.

Deposit, instructions in order::

    [AdvanceNonceAccount] SetComputeUnitLimit [SetComputeUnitPrice]
    AssociatedToken CreateIdempotent      the wallet's pool token account (no-op if it exists)
    DepositSol(WithSlippage)              amount_lamports from the wallet into the reserve
  or
    Stake Authorize (staker)              the stake account's authorities to the pool's
    Stake Authorize (withdrawer)          deposit authority, signed by the wallet, as the
    DepositStake(WithSlippage)            program requires, then merged into the pool
    [System Transfer]                     service fee, wallet -> fee recipient
    [Memo]

Withdrawal::

    WithdrawSol(WithSlippage)             pool tokens burnt, SOL from the reserve to the wallet
  or
    CreateAccountWithSeed                 a new stake account (rent from the wallet)
    WithdrawStake(WithSlippage)           pool tokens burnt, their stake split from a
                                          validator (or the reserve) into the new account,
                                          whose authorities become the wallet

The wallet signs as the owner of its pool token account (no Approve, no ephemeral key),
and the referral share of deposit fees goes back to the wallet's own token account.

Compute units: the stake-pool program does not run on the localnet, so its costs are
not measured here; the defaults below are upper estimates (the program scans the
validator list in DepositStake and WithdrawStake, so those grow with the pool).
``options.simulate`` sizes the limit from a simulation instead.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from service.core._validate import (
    check_lamports,
    check_pubkey,
    check_token_amount,
    check_u64,
    is_signing_key,
    not_signing_key,
)
from service.core.encoders import (
    StakeAuthorize,
    stake_authorize,
    system_create_account_with_seed,
    system_transfer,
)
from service.core.errors import (
    InvalidAddressError,
    InvalidArgumentError,
    StakeAccountExistsError,
    combine_violations,
    failed_checks,
)
from service.core.fees import ServiceFee
from service.core.plans._transaction import (
    Lifetime,
    PreparedTransaction,
    TransactionOptions,
    check_addresses,
    check_debit_fits,
    compute_units_with_margin,
    prepare_transaction,
)
from service.core.positions import AccountState, StakeView
from service.core.programs import (
    LAMPORTS_PER_SIGNATURE,
    STAKE_ACCOUNT_SIZE,
    STAKE_PROGRAM,
)
from service.core.seeds import check_seed, stake_account_address
from service.core.stake_pool_errors import (
    BelowMinimumError,
    InsufficientPoolTokensError,
    ReserveTooSmallError,
    SlippageExceededError,
    StakeDepositRejectedError,
    StakePoolOutOfDateError,
    StakePoolRestrictedError,
    StakeWithdrawalUnavailableError,
)
from service.core.stake_pool_instructions import (
    deposit_sol,
    deposit_stake,
    withdraw_sol,
    withdraw_stake,
)
from service.core.stake_pools import (
    DepositQuote,
    PoolSnapshot,
    ValidatorStakeInfo,
    ValidatorStatus,
    WithdrawQuote,
    active_validators,
    minimum_reserve_lamports,
    minimum_stake_lamports,
    quote_deposit_sol,
    quote_deposit_stake,
    quote_withdraw,
    transient_stake_address,
    validator_stake_address,
)
from service.core.tokens import (
    TokenAccount,
    associated_token_address,
    create_associated_token_account_idempotent,
)

# Upper estimates (see the module docstring), before the margin.
ESTIMATED_TOKEN_ACCOUNT_CU: Final = 25_000
"""CreateIdempotent creating the account (far less when it exists)."""
ESTIMATED_DEPOSIT_SOL_CU: Final = 60_000
ESTIMATED_WITHDRAW_SOL_CU: Final = 80_000
ESTIMATED_STAKE_ACCOUNT_CU: Final = 120_000
"""DepositStake or WithdrawStake of a pool with no validators (CPIs into Stake and Token)."""
ESTIMATED_CU_PER_VALIDATOR: Final = 150
"""The program's scans of the validator list, per validator."""
ESTIMATED_AUTHORIZE_CU: Final = 12_000
"""One Stake Authorize (11,683 measured for the native plan)."""


class LiquidStakeMethod(enum.Enum):
    """How the wallet enters the pool."""

    DEPOSIT_SOL = "deposit_sol"
    DEPOSIT_STAKE = "deposit_stake"


class LiquidUnstakeMethod(enum.Enum):
    """How the wallet leaves the pool."""

    WITHDRAW_SOL = "withdraw_sol"
    WITHDRAW_STAKE = "withdraw_stake"


def _check_wallet(wallet: Pubkey) -> list[InvalidArgumentError]:
    if not is_signing_key(wallet):
        return [
            InvalidAddressError(
                field="wallet",
                value=str(wallet),
                detail=not_signing_key(wallet),
            )
        ]
    return []


def _check_up_to_date(pool: PoolSnapshot) -> None:
    if not pool.up_to_date:
        raise StakePoolOutOfDateError(
            stake_pool=str(pool.address),
            last_update_epoch=pool.pool.last_update_epoch,
            epoch=pool.epoch,
        )


def _scan_cu(pool: PoolSnapshot) -> int:
    validators = len(pool.validator_list.validators) if pool.validator_list is not None else 0
    return ESTIMATED_STAKE_ACCOUNT_CU + ESTIMATED_CU_PER_VALIDATOR * validators


# --- deposit -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LiquidStakeRequest:
    """A BuildLiquidStakeTransaction request, as domain values.

    Attributes:
        wallet: Fee payer, depositor and owner of the pool tokens; the only signer.
        amount_lamports: DepositSol amount; 0 with ``stake_account``.
        stake_account: DepositStake: a fully active stake account of the wallet.
        min_pool_tokens: Optional slippage bound, enforced by the program.
        service_fee: The operator's fee, on the lamports deposited.
        options: Version, compute budget, memo.
    """

    wallet: Pubkey
    amount_lamports: int = 0
    stake_account: Pubkey | None = None
    min_pool_tokens: int | None = None
    service_fee: ServiceFee = field(default_factory=ServiceFee)
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        errors = failed_checks(lambda: check_pubkey(self.wallet, field="wallet"))
        if not errors:
            errors += _check_wallet(self.wallet)
        errors += failed_checks(
            lambda: check_lamports(self.amount_lamports, field="amount_lamports"),
            lambda: (
                check_u64(self.min_pool_tokens, field="min_pool_tokens")
                if self.min_pool_tokens is not None
                else None
            ),
        )
        if self.stake_account is None and not self.amount_lamports:
            errors.append(
                InvalidArgumentError(
                    "set amount_lamports (DepositSol) or stake_account (DepositStake)",
                    field="amount_lamports",
                )
            )
        if self.stake_account is not None and self.amount_lamports:
            errors.append(
                InvalidArgumentError(
                    "amount_lamports must be 0 with stake_account: the whole stake account "
                    "is deposited",
                    field="amount_lamports",
                )
            )
        problem = combine_violations(errors)
        if problem is not None:
            raise problem

    @property
    def method(self) -> LiquidStakeMethod:
        if self.stake_account is None:
            return LiquidStakeMethod.DEPOSIT_SOL
        return LiquidStakeMethod.DEPOSIT_STAKE


@dataclass(frozen=True, kw_only=True)
class LiquidStakeContext:
    """Chain state a deposit needs (read per request).

    Attributes:
        lifetime: Recent blockhash or durable nonce.
        pool: The pool now (with its validator list for DepositStake).
        token_account_exists: The wallet's pool token account exists already.
        token_account_rent_exempt_lamports: Its rent, paid when it is created.
        stake_account: DepositStake: the named account, viewed at the current epoch.
        lamports_per_signature: Base fee per signature.
        wallet_balance_lamports: When known, INSUFFICIENT_FUNDS is raised early.
    """

    lifetime: Lifetime
    pool: PoolSnapshot
    token_account_exists: bool
    token_account_rent_exempt_lamports: int
    stake_account: StakeView | None = None
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None


@dataclass(frozen=True, kw_only=True)
class PreparedLiquidStakeTransaction:
    """The deposit plan's result.

    Attributes:
        prepared: The unsigned transaction, signers, fees and summaries.
        method: DepositSol or DepositStake.
        pool: The pool as read for the plan.
        pool_token_account: The wallet's associated token account for the pool mint.
        creates_pool_token_account: It did not exist when the plan was made.
        deposit_lamports: Lamports going into the pool.
        quote: Pool tokens minted, and the fee shares, at the pool's current rate.
        min_pool_tokens: The slippage bound put into the instruction (None: none).
        stake_account: DepositStake: the account deposited.
        vote_account: DepositStake: its validator.
    """

    prepared: PreparedTransaction
    method: LiquidStakeMethod
    pool: PoolSnapshot
    pool_token_account: Pubkey
    creates_pool_token_account: bool
    deposit_lamports: int
    quote: DepositQuote
    min_pool_tokens: int | None
    stake_account: Pubkey | None = None
    vote_account: Pubkey | None = None

    @property
    def expected_pool_tokens(self) -> int:
        """Everything the wallet's token account receives: its tokens and the referral
        share of the fee (the wallet is its own referrer)."""
        return self.quote.pool_tokens + self.quote.referral_pool_tokens


def _deposit_stake_source(
    request: LiquidStakeRequest, context: LiquidStakeContext
) -> tuple[StakeView, ValidatorStakeInfo]:
    """The named stake account and the pool validator it joins, or why the pool would
    refuse it."""
    view = context.stake_account
    pool = context.pool
    if (
        view is None
        or request.stake_account is None
        or view.fetched.address != request.stake_account
    ):
        raise ValueError("DepositStake needs the named stake account in the context")
    address = str(view.fetched.address)
    delegation = view.fetched.delegation
    if view.state is not AccountState.ACTIVE or delegation is None:
        raise StakeDepositRejectedError(
            f"stake account {address} is {view.state.value}; only fully active stake can join "
            "a pool",
            cause="not_active",
            metadata={"stake_account": address, "state": view.state.value},
        )
    if view.fetched.staker != request.wallet:
        raise StakeDepositRejectedError(
            f"the stake authority of {address} is {view.fetched.staker}, not the wallet: the "
            "wallet must sign both authority changes",
            cause="stake_authority",
            metadata={"stake_account": address, "staker": str(view.fetched.staker)},
        )
    if view.fetched.lockup != pool.pool.lockup:
        raise StakeDepositRejectedError(
            f"stake account {address} has a lockup the pool's stake accounts do not have, so "
            "the pool cannot merge it",
            cause="lockup",
            metadata={"stake_account": address},
        )
    voter = delegation.voter
    preferred = pool.pool.preferred_deposit_validator
    if preferred is not None and preferred != voter:
        raise StakeDepositRejectedError(
            f"stake pool {pool.address} takes stake deposits only for its preferred validator "
            f"{preferred}; {address} is delegated to {voter}",
            cause="preferred_validator",
            metadata={
                "stake_account": address,
                "vote_account": str(voter),
                "preferred": str(preferred),
            },
        )
    entry = pool.validator_list.find(voter) if pool.validator_list is not None else None
    if entry is None or entry.status is not ValidatorStatus.ACTIVE:
        raise StakeDepositRejectedError(
            f"stake pool {pool.address} has no active validator {voter} for {address} to join",
            cause="validator_not_in_pool",
            metadata={"stake_account": address, "vote_account": str(voter)},
        )
    return view, entry


def build_liquid_stake_transaction(
    request: LiquidStakeRequest, context: LiquidStakeContext
) -> PreparedLiquidStakeTransaction:
    """Plan a deposit into a stake pool: one unsigned transaction the wallet signs.

    Raises:
        StakePoolOutOfDateError: The pool is not updated for this epoch.
        StakePoolRestrictedError: The pool needs a deposit authority's signature.
        StakeDepositRejectedError: DepositStake of an account the pool would not take.
        BelowMinimumError: The deposit would mint no pool token.
        SlippageExceededError: It would mint fewer than ``min_pool_tokens`` now.
        InsufficientFundsError: ``context.wallet_balance_lamports`` too low.
    """
    pool = context.pool
    state = pool.pool
    wallet = request.wallet
    _check_up_to_date(pool)
    token_account = associated_token_address(
        owner=wallet, mint=state.pool_mint, token_program=state.token_program_id
    )
    body: list[Instruction] = [
        create_associated_token_account_idempotent(
            payer=wallet, owner=wallet, mint=state.pool_mint, token_program=state.token_program_id
        )
    ]
    units = ESTIMATED_TOKEN_ACCOUNT_CU
    vote_account: Pubkey | None = None
    if request.method is LiquidStakeMethod.DEPOSIT_SOL:
        if state.sol_deposit_authority is not None:
            raise StakePoolRestrictedError(
                f"stake pool {pool.address} takes SOL deposits only with the signature of "
                f"{state.sol_deposit_authority}"
                + ("; deposit a stake account instead" if pool.stake_deposits_open else ""),
                stake_pool=str(pool.address),
                restriction="sol_deposit_authority",
                authority=str(state.sol_deposit_authority),
            )
        deposit = request.amount_lamports
        quote = quote_deposit_sol(state, deposit)
        body.append(
            deposit_sol(
                program_id=pool.program_id,
                stake_pool=pool.address,
                withdraw_authority=pool.withdraw_authority,
                reserve_stake=state.reserve_stake,
                funding_account=wallet,
                destination_pool_account=token_account,
                manager_fee_account=state.manager_fee_account,
                referral_pool_account=token_account,
                pool_mint=state.pool_mint,
                lamports=deposit,
                minimum_pool_tokens_out=request.min_pool_tokens,
                token_program=state.token_program_id,
            )
        )
        units += ESTIMATED_DEPOSIT_SOL_CU
        debit = deposit
    else:
        if not pool.stake_deposits_open:
            raise StakePoolRestrictedError(
                f"stake pool {pool.address} takes stake deposits only with the signature of "
                f"{state.stake_deposit_authority}",
                stake_pool=str(pool.address),
                restriction="stake_deposit_authority",
                authority=str(state.stake_deposit_authority),
            )
        view, entry = _deposit_stake_source(request, context)
        delegation = view.fetched.delegation
        assert delegation is not None  # checked by _deposit_stake_source
        deposit = view.fetched.lamports
        vote_account = delegation.voter
        quote = quote_deposit_stake(state, lamports=deposit, stake_lamports=delegation.stake)
        stake = view.fetched.address
        deposit_authority = pool.default_deposit_authority
        body += [
            stake_authorize(
                stake_account=stake,
                authority=wallet,
                new_authority=deposit_authority,
                role=StakeAuthorize.STAKER,
            ),
            stake_authorize(
                stake_account=stake,
                authority=wallet,
                new_authority=deposit_authority,
                role=StakeAuthorize.WITHDRAWER,
            ),
            deposit_stake(
                program_id=pool.program_id,
                stake_pool=pool.address,
                validator_list=state.validator_list,
                deposit_authority=deposit_authority,
                withdraw_authority=pool.withdraw_authority,
                deposit_stake_account=stake,
                validator_stake_account=validator_stake_address(
                    program_id=pool.program_id,
                    stake_pool=pool.address,
                    vote_account=entry.vote_account,
                    seed_suffix=entry.validator_seed_suffix,
                ),
                reserve_stake=state.reserve_stake,
                destination_pool_account=token_account,
                manager_fee_account=state.manager_fee_account,
                referral_pool_account=token_account,
                pool_mint=state.pool_mint,
                minimum_pool_tokens_out=request.min_pool_tokens,
                token_program=state.token_program_id,
            ),
        ]
        units += 2 * ESTIMATED_AUTHORIZE_CU + _scan_cu(pool)
        debit = 0  # the stake account's lamports move, not the wallet's
    if quote.pool_tokens == 0:
        rate = f"{state.total_lamports / state.pool_token_supply:.9g}"
        raise BelowMinimumError(
            f"a deposit of {deposit} lamports leaves no pool token once the pool's deposit "
            f"fee is taken (the pool's rate: {rate} lamports per pool token)",
            reason="BELOW_MINIMUM_DEPOSIT",
            field="stake_account" if request.stake_account else "amount_lamports",
            metadata={"deposit_lamports": deposit, "lamports_per_pool_token": rate},
        )
    if request.min_pool_tokens is not None and quote.pool_tokens < request.min_pool_tokens:
        raise SlippageExceededError(
            f"the deposit mints {quote.pool_tokens} pool tokens at the pool's current rate, "
            f"fewer than min_pool_tokens {request.min_pool_tokens}",
            field="min_pool_tokens",
            expected=quote.pool_tokens,
            minimum=request.min_pool_tokens,
        )
    fee = request.service_fee.on(deposit)
    recipient = request.service_fee.recipient
    if fee and recipient is not None:
        body.append(system_transfer(source=wallet, destination=recipient, lamports=fee))
    rent = 0 if context.token_account_exists else context.token_account_rent_exempt_lamports
    check_debit_fits(debit, fee, rent)
    check_addresses(
        [
            ("wallet", wallet),
            ("stake_pool", pool.address),
            ("stake_account", request.stake_account),
            ("fee_recipient", recipient if fee else None),
        ],
        context.lifetime,
    )
    prepared = prepare_transaction(
        payer=wallet,
        body=body,
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=compute_units_with_margin(units),
        body_debit_lamports=debit + fee + rent,
        service_fee=request.service_fee,
        service_fee_lamports=fee,
        rent_exempt_reserve_lamports=rent,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=context.wallet_balance_lamports,
    )
    return PreparedLiquidStakeTransaction(
        prepared=prepared,
        method=request.method,
        pool=pool,
        pool_token_account=token_account,
        creates_pool_token_account=not context.token_account_exists,
        deposit_lamports=deposit,
        quote=quote,
        min_pool_tokens=request.min_pool_tokens,
        stake_account=request.stake_account,
        vote_account=vote_account,
    )


# --- withdrawal --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LiquidUnstakeRequest:
    """A BuildLiquidUnstakeTransaction request, as domain values.

    Attributes:
        wallet: Fee payer and owner of the pool tokens; the only signer.
        pool_tokens: Pool tokens to give back (withdrawal fee included).
        method: WithdrawSol or WithdrawStake; None lets the plan choose.
        min_lamports: Optional slippage bound, enforced by the program.
        seed: Seed of the stake account WithdrawStake creates.
        options: Version, compute budget, memo.
    """

    wallet: Pubkey
    pool_tokens: int
    seed: str
    method: LiquidUnstakeMethod | None = None
    min_lamports: int | None = None
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        errors = failed_checks(lambda: check_pubkey(self.wallet, field="wallet"))
        if not errors:
            errors += _check_wallet(self.wallet)
        errors += failed_checks(
            lambda: check_token_amount(self.pool_tokens, field="pool_tokens"),
            lambda: check_seed(self.seed, field="seed"),
            lambda: (
                check_u64(self.min_lamports, field="min_lamports")
                if self.min_lamports is not None
                else None
            ),
        )
        problem = combine_violations(errors)
        if problem is not None:
            raise problem


@dataclass(frozen=True, kw_only=True)
class LiquidUnstakeContext:
    """Chain state a withdrawal needs (read per request).

    Attributes:
        lifetime: Recent blockhash or durable nonce.
        pool: The pool now, with its validator list.
        token_account: The wallet's pool token account; None when it has none.
        stake_rent_exempt_lamports: Rent of a stake account (the new one, and what every
            pool stake account keeps).
        minimum_delegation_lamports: The stake program's minimum delegation.
        new_stake_account_exists: The seed-derived account is in use already.
        lamports_per_signature: Base fee per signature.
        wallet_balance_lamports: When known, INSUFFICIENT_FUNDS is raised early.
    """

    lifetime: Lifetime
    pool: PoolSnapshot
    token_account: TokenAccount | None
    stake_rent_exempt_lamports: int
    minimum_delegation_lamports: int
    new_stake_account_exists: bool = False
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None


@dataclass(frozen=True, kw_only=True)
class StakeSource:
    """The pool stake account a WithdrawStake splits from.

    Attributes:
        address: The account.
        kind: ``validator``, ``transient`` or ``reserve``.
        vote_account: Its validator (None for the reserve).
    """

    address: Pubkey
    kind: str
    vote_account: Pubkey | None


@dataclass(frozen=True, kw_only=True)
class PreparedLiquidUnstakeTransaction:
    """The withdrawal plan's result.

    Attributes:
        prepared: The unsigned transaction, signers, fees and summaries.
        method: WithdrawSol or WithdrawStake.
        reason: Why this method, in one sentence.
        pool: The pool as read for the plan.
        pool_token_account: The wallet's token account the tokens come from.
        quote: Pool tokens taken, the withdrawal fee, lamports paid.
        min_lamports: The slippage bound put into the instruction (None: none).
        stake_account: WithdrawStake: the new stake account.
        seed: Its seed.
        source: WithdrawStake: the pool stake account split from.
    """

    prepared: PreparedTransaction
    method: LiquidUnstakeMethod
    reason: str
    pool: PoolSnapshot
    pool_token_account: Pubkey
    quote: WithdrawQuote
    min_lamports: int | None
    stake_account: Pubkey | None = None
    seed: str = ""
    source: StakeSource | None = None


def _sol_blocker(pool: PoolSnapshot, quote: WithdrawQuote) -> str:
    """Why WithdrawSol cannot pay this now ('' when it can)."""
    if pool.pool.sol_withdraw_authority is not None:
        return (
            f"the pool's SOL withdrawals need the signature of {pool.pool.sol_withdraw_authority}"
        )
    if quote.lamports > pool.sol_withdrawable_lamports:
        return (
            f"the reserve can pay {pool.sol_withdrawable_lamports} lamports now, less than the "
            f"{quote.lamports} lamports the pool tokens are worth"
        )
    return ""


def choose_stake_source(
    pool: PoolSnapshot,
    lamports: int,
    *,
    stake_rent_exempt_lamports: int,
    minimum_delegation_lamports: int,
) -> StakeSource:
    """The pool stake account WithdrawStake may split ``lamports`` from, by the program's
    rules: validator stake accounts while any holds more than the minimum (the preferred
    withdraw validator first when it does), then transient stake, then the reserve.

    Raises:
        StakeWithdrawalUnavailableError: No account the program allows can pay it.
    """
    if pool.validator_list is None:
        raise ValueError("WithdrawStake needs the pool's validator list")
    state = pool.pool
    required = minimum_stake_lamports(stake_rent_exempt_lamports, minimum_delegation_lamports)
    tolerance = required + minimum_delegation_lamports + state.lamports_per_pool_token
    validators = active_validators(pool.validator_list)

    def too_large(kind: str, largest: int) -> StakeWithdrawalUnavailableError:
        most = max(0, largest - required)
        return StakeWithdrawalUnavailableError(
            f"no {kind} stake account of stake pool {pool.address} can pay {lamports} lamports "
            f"and keep its minimum of {required}; at most {most} lamports per withdrawal now",
            stake_pool=str(pool.address),
            lamports=lamports,
            max_lamports=most,
        )

    with_active = [v for v in validators if v.active_stake_lamports > tolerance]
    if with_active:
        preferred = state.preferred_withdraw_validator
        entry = pool.validator_list.find(preferred) if preferred is not None else None
        if entry is not None and entry.active_stake_lamports >= tolerance:
            with_active = [entry]
        best = max(with_active, key=lambda v: (v.active_stake_lamports, str(v.vote_account)))
        if best.active_stake_lamports - lamports < required:
            raise too_large("validator", best.active_stake_lamports)
        return StakeSource(
            address=validator_stake_address(
                program_id=pool.program_id,
                stake_pool=pool.address,
                vote_account=best.vote_account,
                seed_suffix=best.validator_seed_suffix,
            ),
            kind="validator",
            vote_account=best.vote_account,
        )
    with_transient = [v for v in validators if v.transient_stake_lamports > tolerance]
    if with_transient:
        best = max(with_transient, key=lambda v: (v.transient_stake_lamports, str(v.vote_account)))
        if best.transient_stake_lamports - lamports < required:
            raise too_large("transient", best.transient_stake_lamports)
        return StakeSource(
            address=transient_stake_address(
                program_id=pool.program_id,
                stake_pool=pool.address,
                vote_account=best.vote_account,
                seed=best.transient_seed_suffix,
            ),
            kind="transient",
            vote_account=best.vote_account,
        )
    keep = minimum_reserve_lamports(pool.reserve_rent_exempt_lamports)
    if pool.reserve_lamports - lamports < keep:
        raise StakeWithdrawalUnavailableError(
            f"the reserve of stake pool {pool.address} can pay at most "
            f"{max(0, pool.reserve_lamports - keep)} lamports, less than {lamports}",
            stake_pool=str(pool.address),
            lamports=lamports,
            max_lamports=max(0, pool.reserve_lamports - keep),
        )
    return StakeSource(address=state.reserve_stake, kind="reserve", vote_account=None)


def build_liquid_unstake_transaction(
    request: LiquidUnstakeRequest, context: LiquidUnstakeContext
) -> PreparedLiquidUnstakeTransaction:
    """Plan a withdrawal from a stake pool: WithdrawSol when the reserve pays it (and
    the caller did not ask for stake), else WithdrawStake into a new stake account.

    Raises:
        StakePoolOutOfDateError: The pool is not updated for this epoch.
        InsufficientPoolTokensError: The wallet holds fewer pool tokens.
        BelowMinimumError: The tokens are worth no lamport, or (WithdrawStake of
            delegated stake) less than the minimum delegation.
        ReserveTooSmallError / StakePoolRestrictedError: WithdrawSol asked for and
            not possible.
        StakeWithdrawalUnavailableError: No pool stake account can pay it.
        SlippageExceededError: It would pay less than ``min_lamports`` now.
        StakeAccountExistsError: The seed's stake account is in use.
    """
    pool = context.pool
    state = pool.pool
    wallet = request.wallet
    _check_up_to_date(pool)
    token_account = associated_token_address(
        owner=wallet, mint=state.pool_mint, token_program=state.token_program_id
    )
    held = context.token_account
    if held is None or held.amount < request.pool_tokens:
        raise InsufficientPoolTokensError(
            token_account=str(token_account),
            requested=request.pool_tokens,
            available=held.amount if held is not None else 0,
        )
    exempt = token_account == state.manager_fee_account
    sol_quote = quote_withdraw(
        state, request.pool_tokens, fee=state.sol_withdrawal_fee, fee_exempt=exempt
    )
    stake_quote = quote_withdraw(
        state, request.pool_tokens, fee=state.stake_withdrawal_fee, fee_exempt=exempt
    )
    blocker = _sol_blocker(pool, sol_quote)
    method = request.method
    if method is LiquidUnstakeMethod.WITHDRAW_SOL:
        if state.sol_withdraw_authority is not None:
            raise StakePoolRestrictedError(
                f"stake pool {pool.address}: {blocker}; withdraw stake instead",
                stake_pool=str(pool.address),
                restriction="sol_withdraw_authority",
                authority=str(state.sol_withdraw_authority),
            )
        if sol_quote.lamports and blocker:
            raise ReserveTooSmallError(
                stake_pool=str(pool.address),
                lamports=sol_quote.lamports,
                available_lamports=pool.sol_withdrawable_lamports,
            )
        reason = "WithdrawSol was asked for: the SOL is paid out at once"
    elif method is LiquidUnstakeMethod.WITHDRAW_STAKE:
        reason = "WithdrawStake was asked for"
    elif blocker:
        method = LiquidUnstakeMethod.WITHDRAW_STAKE
        reason = f"WithdrawStake: {blocker}"
    else:
        method = LiquidUnstakeMethod.WITHDRAW_SOL
        reason = "WithdrawSol: the pool's reserve pays the SOL out at once"
    quote = sol_quote if method is LiquidUnstakeMethod.WITHDRAW_SOL else stake_quote
    if quote.lamports == 0:
        raise BelowMinimumError(
            f"{request.pool_tokens} pool tokens are worth no lamport after the withdrawal fee",
            reason="BELOW_MINIMUM_WITHDRAWAL",
            field="pool_tokens",
            metadata={"pool_tokens": request.pool_tokens, "fee_pool_tokens": quote.fee_pool_tokens},
        )
    if request.min_lamports is not None and quote.lamports < request.min_lamports:
        raise SlippageExceededError(
            f"the withdrawal pays {quote.lamports} lamports at the pool's current rate, less "
            f"than min_lamports {request.min_lamports}",
            field="min_lamports",
            expected=quote.lamports,
            minimum=request.min_lamports,
        )
    body: list[Instruction]
    new_account: Pubkey | None = None
    source: StakeSource | None = None
    rent = 0
    if method is LiquidUnstakeMethod.WITHDRAW_SOL:
        body = [
            withdraw_sol(
                program_id=pool.program_id,
                stake_pool=pool.address,
                withdraw_authority=pool.withdraw_authority,
                user_transfer_authority=wallet,
                source_pool_account=token_account,
                reserve_stake=state.reserve_stake,
                destination=wallet,
                manager_fee_account=state.manager_fee_account,
                pool_mint=state.pool_mint,
                pool_tokens=request.pool_tokens,
                minimum_lamports_out=request.min_lamports,
                token_program=state.token_program_id,
            )
        ]
        units = ESTIMATED_WITHDRAW_SOL_CU
    else:
        source = choose_stake_source(
            pool,
            quote.lamports,
            stake_rent_exempt_lamports=context.stake_rent_exempt_lamports,
            minimum_delegation_lamports=context.minimum_delegation_lamports,
        )
        if source.kind != "reserve" and quote.lamports < context.minimum_delegation_lamports:
            raise BelowMinimumError(
                f"{request.pool_tokens} pool tokens are worth {quote.lamports} lamports of "
                f"stake, below the minimum delegation of {context.minimum_delegation_lamports}"
                " a new stake account needs",
                reason="BELOW_MINIMUM_DELEGATION",
                field="pool_tokens",
                metadata={
                    "lamports": quote.lamports,
                    "minimum_lamports": context.minimum_delegation_lamports,
                },
            )
        if context.new_stake_account_exists:
            raise StakeAccountExistsError(
                stake_account=str(stake_account_address(base=wallet, seed=request.seed)),
                seed=request.seed,
            )
        new_account = stake_account_address(base=wallet, seed=request.seed)
        rent = context.stake_rent_exempt_lamports
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
            withdraw_stake(
                program_id=pool.program_id,
                stake_pool=pool.address,
                validator_list=state.validator_list,
                withdraw_authority=pool.withdraw_authority,
                source_stake_account=source.address,
                destination_stake_account=new_account,
                destination_stake_authority=wallet,
                user_transfer_authority=wallet,
                source_pool_account=token_account,
                manager_fee_account=state.manager_fee_account,
                pool_mint=state.pool_mint,
                pool_tokens=request.pool_tokens,
                minimum_lamports_out=request.min_lamports,
                token_program=state.token_program_id,
            ),
        ]
        units = _scan_cu(pool)
    check_addresses([("wallet", wallet), ("stake_pool", pool.address)], context.lifetime)
    prepared = prepare_transaction(
        payer=wallet,
        body=body,
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=compute_units_with_margin(units),
        body_debit_lamports=rent,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
        rent_exempt_reserve_lamports=rent,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=context.wallet_balance_lamports,
    )
    return PreparedLiquidUnstakeTransaction(
        prepared=prepared,
        method=method,
        reason=reason,
        pool=pool,
        pool_token_account=token_account,
        quote=quote,
        min_lamports=request.min_lamports,
        stake_account=new_account,
        seed=request.seed if new_account is not None else "",
        source=source,
    )
