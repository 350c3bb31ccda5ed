"""The liquid staking plans and the pool arithmetic, pure (no chain, no server)."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.hash import Hash
from solders.pubkey import Pubkey

from service.core import Authorized, Delegation, Lockup, Meta, StakeAccount, StakeStateKind
from service.core.errors import InsufficientFundsError, StakeAccountExistsError
from service.core.plans import (
    LiquidStakeContext,
    LiquidStakeRequest,
    LiquidUnstakeContext,
    LiquidUnstakeMethod,
    LiquidUnstakeRequest,
    PreparedLiquidStakeTransaction,
    PreparedLiquidUnstakeTransaction,
    RecentBlockhash,
    build_liquid_stake_transaction,
    build_liquid_unstake_transaction,
    choose_stake_source,
)
from service.core.positions import FetchedStakeAccount, StakeView, view_stake_account
from service.core.programs import STAKE_POOL_PROGRAM, TOKEN_PROGRAM, U64_MAX
from service.core.stake_pool_errors import (
    BelowMinimumError,
    ReserveTooSmallError,
    SlippageExceededError,
    StakeDepositRejectedError,
    StakePoolOutOfDateError,
    StakePoolRestrictedError,
    StakeWithdrawalUnavailableError,
)
from service.core.stake_pools import (
    Fee,
    PoolSnapshot,
    StakePool,
    ValidatorList,
    ValidatorStakeInfo,
    estimated_apy,
    quote_deposit_sol,
    quote_deposit_stake,
    quote_withdraw,
    transient_stake_address,
    validator_stake_address,
)
from service.core.tokens import Mint, TokenAccount, associated_token_address
from tests.liquid._cases import key

SOL = 10**9
RENT = 2_282_880
MIN_DELEGATION = SOL
WALLET = Pubkey.from_string("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM")
LIFETIME = RecentBlockhash(blockhash=Hash.default(), last_valid_block_height=100)
rng = random.Random(7)
POOL = key(rng)
VOTES = [key(rng) for _ in range(3)]


def snapshot(
    *,
    reserve: int = 100 * SOL,
    validators: tuple[ValidatorStakeInfo, ...] | None = None,
    **fields: Any,
) -> PoolSnapshot:
    entries = (
        validators
        if validators is not None
        else tuple(
            ValidatorStakeInfo(
                vote_account=v, active_stake_lamports=(10 + i) * SOL, last_update_epoch=5
            )
            for i, v in enumerate(VOTES)
        )
    )
    state = StakePool(
        manager=key(rng),
        staker=key(rng),
        stake_deposit_authority=Pubkey.find_program_address(
            [bytes(POOL), b"deposit"], STAKE_POOL_PROGRAM
        )[0],
        stake_withdraw_bump_seed=Pubkey.find_program_address(
            [bytes(POOL), b"withdraw"], STAKE_POOL_PROGRAM
        )[1],
        validator_list=key(rng),
        reserve_stake=key(rng),
        pool_mint=key(rng),
        manager_fee_account=key(rng),
        token_program_id=TOKEN_PROGRAM,
        total_lamports=1_050 * SOL,
        pool_token_supply=1_000 * SOL,
        last_update_epoch=5,
    )
    state = replace(state, **fields)
    return PoolSnapshot(
        address=POOL,
        program_id=STAKE_POOL_PROGRAM,
        pool=state,
        mint=Mint(supply=state.pool_token_supply, decimals=9),
        reserve_lamports=reserve + RENT,
        reserve_rent_exempt_lamports=RENT,
        epoch=5,
        validator_list=ValidatorList(max_validators=10, validators=entries),
    )


def unstake(pool: PoolSnapshot, tokens: int, **request: Any) -> PreparedLiquidUnstakeTransaction:
    ata = associated_token_address(owner=WALLET, mint=pool.pool.pool_mint)
    context = LiquidUnstakeContext(
        lifetime=LIFETIME,
        pool=pool,
        token_account=TokenAccount(mint=pool.pool.pool_mint, owner=WALLET, amount=100 * SOL),
        stake_rent_exempt_lamports=RENT,
        minimum_delegation_lamports=MIN_DELEGATION,
        wallet_balance_lamports=SOL,
    )
    assert ata != pool.pool.manager_fee_account
    return build_liquid_unstake_transaction(
        LiquidUnstakeRequest(wallet=WALLET, pool_tokens=tokens, seed="stake:test", **request),
        context,
    )


def stake_view(
    *,
    voter: Pubkey,
    activation: int = U64_MAX,
    staker: Pubkey = WALLET,
    lockup: Lockup | None = None,
) -> StakeView:
    account = StakeAccount(
        state=StakeStateKind.STAKE,
        meta=Meta(
            rent_exempt_reserve=RENT,
            authorized=Authorized(staker=staker, withdrawer=WALLET),
            lockup=lockup or Lockup(),
        ),
        delegation=Delegation(voter=voter, stake=5 * SOL, activation_epoch=activation),
    )
    fetched = FetchedStakeAccount(address=key(rng), lamports=5 * SOL + RENT, account=account)
    return view_stake_account(
        fetched, wallet=WALLET, epoch=5, unix_timestamp=0, history={}, rent_exempt_reserve=RENT
    )


def deposit(pool: PoolSnapshot, **request: Any) -> PreparedLiquidStakeTransaction:
    view = request.pop("view", None)
    return build_liquid_stake_transaction(
        LiquidStakeRequest(wallet=WALLET, **request),
        LiquidStakeContext(
            lifetime=LIFETIME,
            pool=pool,
            token_account_exists=False,
            token_account_rent_exempt_lamports=2_039_280,
            stake_account=view,
            wallet_balance_lamports=100 * SOL,
        ),
    )


# --- arithmetic ---------------------------------------------------------------------------


@given(
    lamports=st.integers(0, 2**63),
    total=st.integers(0, 2**63),
    supply=st.integers(0, 2**63),
    numerator=st.integers(0, 10_000),
    denominator=st.integers(0, 10_000),
    referral=st.integers(0, 100),
)
def test_deposit_quotes_split_the_minted_tokens_exactly(
    lamports: int, total: int, supply: int, numerator: int, denominator: int, referral: int
) -> None:
    pool = replace(
        snapshot().pool,
        total_lamports=total,
        pool_token_supply=supply,
        sol_deposit_fee=Fee(denominator=denominator, numerator=min(numerator, denominator)),
        sol_referral_fee=referral,
    )
    quote = quote_deposit_sol(pool, lamports)
    minted = pool.pool_tokens_for_deposit(lamports)
    assert quote.pool_tokens + quote.fee_pool_tokens == minted
    assert quote.referral_pool_tokens == quote.fee_pool_tokens * referral // 100
    # The fee is rounded up: the depositor never gets more than the exact share.
    if denominator:
        assert quote.pool_tokens * denominator <= minted * (
            denominator - min(numerator, denominator)
        )


def test_stake_deposits_charge_the_stake_fee_on_the_stake_and_the_sol_fee_on_the_rest() -> None:
    pool = replace(
        snapshot().pool,
        stake_deposit_fee=Fee(denominator=100, numerator=1),
        sol_deposit_fee=Fee(denominator=100, numerator=10),
    )
    quote = quote_deposit_stake(pool, lamports=5 * SOL + RENT, stake_lamports=5 * SOL)
    minted = (5 * SOL + RENT) * 1000 // 1050
    from_stake = 5 * SOL * 1000 // 1050
    fee = -(-from_stake // 100) + -(-(minted - from_stake) * 10 // 100)
    assert quote.pool_tokens == minted - fee


def test_withdrawal_fee_is_waived_for_the_managers_fee_account() -> None:
    pool = replace(snapshot().pool, sol_withdrawal_fee=Fee(denominator=100, numerator=1))
    assert quote_withdraw(pool, SOL, fee=pool.sol_withdrawal_fee).fee_pool_tokens == SOL // 100
    assert (
        quote_withdraw(pool, SOL, fee=pool.sol_withdrawal_fee, fee_exempt=True).fee_pool_tokens == 0
    )


def test_apy_compounds_the_last_epochs_growth() -> None:
    pool = replace(
        snapshot().pool,
        last_epoch_total_lamports=1_000 * SOL,
        last_epoch_pool_token_supply=1_000 * SOL,
    )
    assert estimated_apy(pool, epochs_per_year=2) == pytest.approx(1.05**2 - 1)
    assert estimated_apy(replace(pool, last_epoch_pool_token_supply=0), epochs_per_year=2) is None


# --- deposits -----------------------------------------------------------------------------


def test_deposit_sol_and_its_refusals() -> None:
    plan = deposit(snapshot(), amount_lamports=2 * SOL)
    assert plan.quote.pool_tokens == 2 * SOL * 1000 // 1050
    with pytest.raises(StakePoolOutOfDateError):
        deposit(replace(snapshot(), epoch=6), amount_lamports=SOL)
    with pytest.raises(StakePoolRestrictedError) as restricted:
        deposit(snapshot(sol_deposit_authority=key(rng)), amount_lamports=SOL)
    assert "deposit a stake account instead" in restricted.value.message
    with pytest.raises(BelowMinimumError) as small:
        deposit(snapshot(), amount_lamports=1)
    assert small.value.reason == "BELOW_MINIMUM_DEPOSIT"
    with pytest.raises(SlippageExceededError):
        deposit(snapshot(), amount_lamports=SOL, min_pool_tokens=SOL)
    with pytest.raises(InsufficientFundsError):
        deposit(snapshot(), amount_lamports=100 * SOL)


@pytest.mark.parametrize(
    ("view_args", "pool_fields", "cause"),
    [
        ({"activation": 5}, {}, "not_active"),
        (
            {"staker": Pubkey.from_string("Vote111111111111111111111111111111111111111")},
            {},
            "stake_authority",
        ),
        ({"lockup": Lockup(epoch=99)}, {}, "lockup"),
        (
            {"voter": Pubkey.from_string("Vote111111111111111111111111111111111111111")},
            {},
            "validator_not_in_pool",
        ),
        ({}, {"preferred_deposit_validator": VOTES[2]}, "preferred_validator"),
    ],
)
def test_stake_deposits_the_pool_would_refuse(
    view_args: dict[str, Any], pool_fields: dict[str, Any], cause: str
) -> None:
    view = stake_view(**{"voter": VOTES[0], **view_args})
    with pytest.raises(StakeDepositRejectedError) as rejected:
        deposit(snapshot(**pool_fields), stake_account=view.fetched.address, view=view)
    assert rejected.value.metadata["cause"] == cause


def test_a_stake_deposit_needs_open_stake_deposits() -> None:
    view = stake_view(voter=VOTES[0])
    with pytest.raises(StakePoolRestrictedError):
        deposit(
            snapshot(stake_deposit_authority=key(rng)),
            stake_account=view.fetched.address,
            view=view,
        )


# --- withdrawals --------------------------------------------------------------------------


def test_withdraw_sol_when_the_reserve_pays_else_stake() -> None:
    plan = unstake(snapshot(), 2 * SOL)
    assert plan.method is LiquidUnstakeMethod.WITHDRAW_SOL
    plan = unstake(snapshot(reserve=SOL), 2 * SOL)
    assert plan.method is LiquidUnstakeMethod.WITHDRAW_STAKE
    assert "reserve can pay" in plan.reason
    plan = unstake(snapshot(sol_withdraw_authority=key(rng)), 2 * SOL)
    assert plan.method is LiquidUnstakeMethod.WITHDRAW_STAKE
    with pytest.raises(ReserveTooSmallError):
        unstake(snapshot(reserve=SOL), 2 * SOL, method=LiquidUnstakeMethod.WITHDRAW_SOL)
    with pytest.raises(StakePoolRestrictedError):
        unstake(
            snapshot(sol_withdraw_authority=key(rng)), SOL, method=LiquidUnstakeMethod.WITHDRAW_SOL
        )
    with pytest.raises(SlippageExceededError):
        unstake(snapshot(), SOL, min_lamports=2 * SOL)
    with pytest.raises(BelowMinimumError) as small:
        unstake(snapshot(), SOL // 2, method=LiquidUnstakeMethod.WITHDRAW_STAKE)
    assert small.value.reason == "BELOW_MINIMUM_DELEGATION"


def test_withdraw_stake_takes_the_largest_validator_or_the_preferred_one() -> None:
    pool = snapshot()
    source = choose_stake_source(
        pool, 2 * SOL, stake_rent_exempt_lamports=RENT, minimum_delegation_lamports=MIN_DELEGATION
    )
    assert source.vote_account == VOTES[2] and source.kind == "validator"
    assert source.address == validator_stake_address(
        program_id=STAKE_POOL_PROGRAM, stake_pool=POOL, vote_account=VOTES[2]
    )
    preferred = snapshot(preferred_withdraw_validator=VOTES[0])
    assert (
        choose_stake_source(
            preferred,
            2 * SOL,
            stake_rent_exempt_lamports=RENT,
            minimum_delegation_lamports=MIN_DELEGATION,
        ).vote_account
        == VOTES[0]
    )
    with pytest.raises(StakeWithdrawalUnavailableError) as too_large:
        choose_stake_source(
            pool,
            12 * SOL,
            stake_rent_exempt_lamports=RENT,
            minimum_delegation_lamports=MIN_DELEGATION,
        )
    assert int(too_large.value.metadata["max_lamports"]) == 12 * SOL - RENT - MIN_DELEGATION


def test_withdraw_stake_falls_back_to_transient_stake_then_the_reserve() -> None:
    transient = (
        ValidatorStakeInfo(
            vote_account=VOTES[0],
            active_stake_lamports=SOL + RENT,
            transient_stake_lamports=9 * SOL,
            transient_seed_suffix=3,
        ),
    )
    source = choose_stake_source(
        snapshot(validators=transient),
        2 * SOL,
        stake_rent_exempt_lamports=RENT,
        minimum_delegation_lamports=MIN_DELEGATION,
    )
    assert source.kind == "transient"
    assert source.address == transient_stake_address(
        program_id=STAKE_POOL_PROGRAM, stake_pool=POOL, vote_account=VOTES[0], seed=3
    )
    minimal = (ValidatorStakeInfo(vote_account=VOTES[0], active_stake_lamports=SOL + RENT),)
    source = choose_stake_source(
        snapshot(validators=minimal),
        2 * SOL,
        stake_rent_exempt_lamports=RENT,
        minimum_delegation_lamports=MIN_DELEGATION,
    )
    assert source.kind == "reserve" and source.vote_account is None
    plan = unstake(
        snapshot(validators=minimal, reserve=SOL // 2),
        SOL // 4,
        method=LiquidUnstakeMethod.WITHDRAW_STAKE,
    )
    assert plan.source is not None and plan.source.kind == "reserve"  # no minimum delegation
    with pytest.raises(StakeWithdrawalUnavailableError):
        choose_stake_source(
            snapshot(validators=minimal, reserve=SOL),
            2 * SOL,
            stake_rent_exempt_lamports=RENT,
            minimum_delegation_lamports=MIN_DELEGATION,
        )


def test_a_used_seed_is_an_existing_stake_account() -> None:
    pool = snapshot(reserve=SOL)
    context = LiquidUnstakeContext(
        lifetime=LIFETIME,
        pool=pool,
        token_account=TokenAccount(mint=pool.pool.pool_mint, owner=WALLET, amount=10 * SOL),
        stake_rent_exempt_lamports=RENT,
        minimum_delegation_lamports=MIN_DELEGATION,
        new_stake_account_exists=True,
    )
    with pytest.raises(StakeAccountExistsError):
        build_liquid_unstake_transaction(
            LiquidUnstakeRequest(wallet=WALLET, pool_tokens=2 * SOL, seed="stake:x"), context
        )
