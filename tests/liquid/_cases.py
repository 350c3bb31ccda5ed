"""Random stake pool states and their form in the SDK oracle's JSON (camelCase)."""

from __future__ import annotations

import random
from typing import Any

from solders.pubkey import Pubkey

from service.core.accounts import Lockup
from service.core.stake_pools import (
    Fee,
    FutureFee,
    StakePool,
    ValidatorList,
    ValidatorStakeInfo,
    ValidatorStatus,
)

U64 = 2**64 - 1


def key(rng: random.Random) -> Pubkey:
    return Pubkey(rng.randbytes(32))


def amount(rng: random.Random, *, top: int = U64) -> int:
    """Mostly ordinary amounts, sometimes the edges."""
    return rng.choice([0, 1, top, rng.randrange(top), rng.randrange(10**12), rng.randrange(10**18)])


def fee(rng: random.Random) -> Fee:
    return Fee(denominator=amount(rng), numerator=amount(rng))


def stake_pool(rng: random.Random, *, sdk_encodable: bool = False) -> StakePool:
    """A random StakePool. ``sdk_encodable``: only what the SDK's layout can encode
    (it writes every FutureEpoch as "two epochs" and the lockup timestamp unsigned)."""

    def future() -> FutureFee | None:
        if rng.random() < 0.4:
            return None
        return FutureFee(fee=fee(rng), epochs=2 if sdk_encodable else rng.choice([1, 2]))

    def option() -> Pubkey | None:
        return key(rng) if rng.random() < 0.5 else None

    return StakePool(
        manager=key(rng),
        staker=key(rng),
        stake_deposit_authority=key(rng),
        stake_withdraw_bump_seed=rng.randrange(256),
        validator_list=key(rng),
        reserve_stake=key(rng),
        pool_mint=key(rng),
        manager_fee_account=key(rng),
        token_program_id=key(rng),
        total_lamports=amount(rng),
        pool_token_supply=amount(rng),
        last_update_epoch=amount(rng),
        lockup=Lockup(
            unix_timestamp=rng.randrange(2**63),
            epoch=amount(rng),
            custodian=key(rng),
        ),
        epoch_fee=fee(rng),
        next_epoch_fee=future(),
        preferred_deposit_validator=option(),
        preferred_withdraw_validator=option(),
        stake_deposit_fee=fee(rng),
        stake_withdrawal_fee=fee(rng),
        next_stake_withdrawal_fee=future(),
        stake_referral_fee=rng.randrange(256),
        sol_deposit_authority=option(),
        sol_deposit_fee=fee(rng),
        sol_referral_fee=rng.randrange(256),
        sol_withdraw_authority=option(),
        sol_withdrawal_fee=fee(rng),
        next_sol_withdrawal_fee=future(),
        last_epoch_pool_token_supply=amount(rng),
        last_epoch_total_lamports=amount(rng),
    )


def validator_list(rng: random.Random) -> ValidatorList:
    entries = tuple(
        ValidatorStakeInfo(
            vote_account=key(rng),
            active_stake_lamports=amount(rng),
            transient_stake_lamports=amount(rng),
            last_update_epoch=amount(rng),
            transient_seed_suffix=amount(rng),
            validator_seed_suffix=rng.randrange(2**32),
            status=rng.choice(list(ValidatorStatus)),
            unused=rng.randrange(2**32),
        )
        for _ in range(rng.randrange(6))
    )
    return ValidatorList(max_validators=len(entries) + rng.randrange(4), validators=entries)


def _fee_json(f: Fee | None) -> dict[str, str] | None:
    return None if f is None else {"denominator": str(f.denominator), "numerator": str(f.numerator)}


def _future_json(f: FutureFee | None) -> dict[str, str] | None:
    return None if f is None else _fee_json(f.fee)


def _key_json(k: Pubkey | None) -> str | None:
    return None if k is None else str(k)


def stake_pool_json(pool: StakePool) -> dict[str, Any]:
    """The pool as the SDK's StakePool type, JSON-safe (what the oracle decodes to)."""
    return {
        "accountType": 1,
        "manager": str(pool.manager),
        "staker": str(pool.staker),
        "stakeDepositAuthority": str(pool.stake_deposit_authority),
        "stakeWithdrawBumpSeed": pool.stake_withdraw_bump_seed,
        "validatorList": str(pool.validator_list),
        "reserveStake": str(pool.reserve_stake),
        "poolMint": str(pool.pool_mint),
        "managerFeeAccount": str(pool.manager_fee_account),
        "tokenProgramId": str(pool.token_program_id),
        "totalLamports": str(pool.total_lamports),
        "poolTokenSupply": str(pool.pool_token_supply),
        "lastUpdateEpoch": str(pool.last_update_epoch),
        "lockup": {
            "unixTimestamp": str(pool.lockup.unix_timestamp),
            "epoch": str(pool.lockup.epoch),
            "custodian": str(pool.lockup.custodian),
        },
        "epochFee": _fee_json(pool.epoch_fee),
        "nextEpochFee": _future_json(pool.next_epoch_fee),
        "preferredDepositValidatorVoteAddress": _key_json(pool.preferred_deposit_validator),
        "preferredWithdrawValidatorVoteAddress": _key_json(pool.preferred_withdraw_validator),
        "stakeDepositFee": _fee_json(pool.stake_deposit_fee),
        "stakeWithdrawalFee": _fee_json(pool.stake_withdrawal_fee),
        "nextStakeWithdrawalFee": _future_json(pool.next_stake_withdrawal_fee),
        "stakeReferralFee": pool.stake_referral_fee,
        "solDepositAuthority": _key_json(pool.sol_deposit_authority),
        "solDepositFee": _fee_json(pool.sol_deposit_fee),
        "solReferralFee": pool.sol_referral_fee,
        "solWithdrawAuthority": _key_json(pool.sol_withdraw_authority),
        "solWithdrawalFee": _fee_json(pool.sol_withdrawal_fee),
        "nextSolWithdrawalFee": _future_json(pool.next_sol_withdrawal_fee),
        "lastEpochPoolTokenSupply": str(pool.last_epoch_pool_token_supply),
        "lastEpochTotalLamports": str(pool.last_epoch_total_lamports),
    }


def validator_list_json(validators: ValidatorList) -> dict[str, Any]:
    """The list as the SDK's ValidatorList type. The SDK reads the program's
    ``unused: u32`` and ``validator_seed_suffix: u32`` as one u64,
    ``transientSeedSuffixEnd``."""
    return {
        "accountType": 2,
        "maxValidators": validators.max_validators,
        "validators": [
            {
                "activeStakeLamports": str(v.active_stake_lamports),
                "transientStakeLamports": str(v.transient_stake_lamports),
                "lastUpdateEpoch": str(v.last_update_epoch),
                "transientSeedSuffixStart": str(v.transient_seed_suffix),
                "transientSeedSuffixEnd": str(v.unused | (v.validator_seed_suffix << 32)),
                "status": int(v.status),
                "voteAccountAddress": str(v.vote_account),
            }
            for v in validators.validators
        ],
    }
