"""Instructions of the SPL stake-pool program that liquid staking builds, and their
human-readable decoding.

The program's instructions are borsh: a u8 variant index, then the fields. Account
lists follow the program's ``instruction.rs`` builders (``deposit_sol``,
``deposit_stake``, ``withdraw_sol``, ``withdraw_stake`` and their ``*_with_slippage``
twins, which take the same accounts and add a bound the program enforces).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final, TypeAlias

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

from service.core import _bincode as bc
from service.core._format import format_amount, format_units, pascal_case
from service.core._validate import check_lamports
from service.core.programs import (
    STAKE_PROGRAM,
    SYSTEM_PROGRAM,
    SYSVAR_CLOCK,
    SYSVAR_STAKE_HISTORY,
    TOKEN_PROGRAM,
)
from service.core.tokens import AssociatedTokenInstruction


class StakePoolTag(enum.IntEnum):
    """``StakePoolInstruction`` variant indices (borsh u8 tags), in enum order."""

    INITIALIZE = 0
    ADD_VALIDATOR_TO_POOL = 1
    REMOVE_VALIDATOR_FROM_POOL = 2
    DECREASE_VALIDATOR_STAKE = 3
    INCREASE_VALIDATOR_STAKE = 4
    SET_PREFERRED_VALIDATOR = 5
    UPDATE_VALIDATOR_LIST_BALANCE = 6
    UPDATE_STAKE_POOL_BALANCE = 7
    CLEANUP_REMOVED_VALIDATOR_ENTRIES = 8
    DEPOSIT_STAKE = 9
    WITHDRAW_STAKE = 10
    SET_MANAGER = 11
    SET_FEE = 12
    SET_STAKER = 13
    DEPOSIT_SOL = 14
    SET_FUNDING_AUTHORITY = 15
    WITHDRAW_SOL = 16
    CREATE_TOKEN_METADATA = 17
    UPDATE_TOKEN_METADATA = 18
    INCREASE_ADDITIONAL_VALIDATOR_STAKE = 19
    DECREASE_ADDITIONAL_VALIDATOR_STAKE = 20
    DECREASE_VALIDATOR_STAKE_WITH_RESERVE = 21
    REDELEGATE = 22
    DEPOSIT_STAKE_WITH_SLIPPAGE = 23
    WITHDRAW_STAKE_WITH_SLIPPAGE = 24
    DEPOSIT_SOL_WITH_SLIPPAGE = 25
    WITHDRAW_SOL_WITH_SLIPPAGE = 26


def _w(key: Pubkey) -> AccountMeta:
    return AccountMeta(key, is_signer=False, is_writable=True)


def _r(key: Pubkey) -> AccountMeta:
    return AccountMeta(key, is_signer=False, is_writable=False)


def _data(plain: StakePoolTag, bounded: StakePoolTag, amount: int, bound: int | None) -> bytes:
    """``plain(amount)``, or ``bounded(amount, bound)`` when a bound is set."""
    if bound is None:
        return bc.u8(plain) + bc.u64(amount)
    return bc.u8(bounded) + bc.u64(amount) + bc.u64(check_lamports(bound, field="bound"))


def deposit_sol(
    *,
    program_id: Pubkey,
    stake_pool: Pubkey,
    withdraw_authority: Pubkey,
    reserve_stake: Pubkey,
    funding_account: Pubkey,
    destination_pool_account: Pubkey,
    manager_fee_account: Pubkey,
    referral_pool_account: Pubkey,
    pool_mint: Pubkey,
    lamports: int,
    minimum_pool_tokens_out: int | None = None,
    token_program: Pubkey = TOKEN_PROGRAM,
) -> Instruction:
    """``DepositSol`` (``DepositSolWithSlippage`` with a minimum): move ``lamports``
    from the funding account into the reserve and mint pool tokens for them."""
    check_lamports(lamports, field="lamports", minimum=1)
    accounts = [
        _w(stake_pool),
        _r(withdraw_authority),
        _w(reserve_stake),
        AccountMeta(funding_account, is_signer=True, is_writable=True),
        _w(destination_pool_account),
        _w(manager_fee_account),
        _w(referral_pool_account),
        _w(pool_mint),
        _r(SYSTEM_PROGRAM),
        _r(token_program),
    ]
    data = _data(
        StakePoolTag.DEPOSIT_SOL,
        StakePoolTag.DEPOSIT_SOL_WITH_SLIPPAGE,
        lamports,
        minimum_pool_tokens_out,
    )
    return Instruction(program_id, data, accounts)


def deposit_stake(
    *,
    program_id: Pubkey,
    stake_pool: Pubkey,
    validator_list: Pubkey,
    deposit_authority: Pubkey,
    withdraw_authority: Pubkey,
    deposit_stake_account: Pubkey,
    validator_stake_account: Pubkey,
    reserve_stake: Pubkey,
    destination_pool_account: Pubkey,
    manager_fee_account: Pubkey,
    referral_pool_account: Pubkey,
    pool_mint: Pubkey,
    minimum_pool_tokens_out: int | None = None,
    token_program: Pubkey = TOKEN_PROGRAM,
) -> Instruction:
    """``DepositStake`` (``DepositStakeWithSlippage`` with a minimum): merge a stake
    account whose authorities are the pool's deposit authority into the pool's
    validator stake account and mint pool tokens for its lamports. The deposit
    authority is the pool's program-derived one (no signature)."""
    accounts = [
        _w(stake_pool),
        _w(validator_list),
        _r(deposit_authority),
        _r(withdraw_authority),
        _w(deposit_stake_account),
        _w(validator_stake_account),
        _w(reserve_stake),
        _w(destination_pool_account),
        _w(manager_fee_account),
        _w(referral_pool_account),
        _w(pool_mint),
        _r(SYSVAR_CLOCK),
        _r(SYSVAR_STAKE_HISTORY),
        _r(token_program),
        _r(STAKE_PROGRAM),
    ]
    if minimum_pool_tokens_out is None:
        data = bc.u8(StakePoolTag.DEPOSIT_STAKE)
    else:
        data = bc.u8(StakePoolTag.DEPOSIT_STAKE_WITH_SLIPPAGE) + bc.u64(
            check_lamports(minimum_pool_tokens_out, field="minimum_pool_tokens_out")
        )
    return Instruction(program_id, data, accounts)


def withdraw_sol(
    *,
    program_id: Pubkey,
    stake_pool: Pubkey,
    withdraw_authority: Pubkey,
    user_transfer_authority: Pubkey,
    source_pool_account: Pubkey,
    reserve_stake: Pubkey,
    destination: Pubkey,
    manager_fee_account: Pubkey,
    pool_mint: Pubkey,
    pool_tokens: int,
    minimum_lamports_out: int | None = None,
    token_program: Pubkey = TOKEN_PROGRAM,
) -> Instruction:
    """``WithdrawSol`` (``WithdrawSolWithSlippage`` with a minimum): burn pool tokens
    and take their lamports out of the reserve to a System account."""
    check_lamports(pool_tokens, field="pool_tokens", minimum=1)
    accounts = [
        _w(stake_pool),
        _r(withdraw_authority),
        AccountMeta(user_transfer_authority, is_signer=True, is_writable=False),
        _w(source_pool_account),
        _w(reserve_stake),
        _w(destination),
        _w(manager_fee_account),
        _w(pool_mint),
        _r(SYSVAR_CLOCK),
        _r(SYSVAR_STAKE_HISTORY),
        _r(STAKE_PROGRAM),
        _r(token_program),
    ]
    data = _data(
        StakePoolTag.WITHDRAW_SOL,
        StakePoolTag.WITHDRAW_SOL_WITH_SLIPPAGE,
        pool_tokens,
        minimum_lamports_out,
    )
    return Instruction(program_id, data, accounts)


def withdraw_stake(
    *,
    program_id: Pubkey,
    stake_pool: Pubkey,
    validator_list: Pubkey,
    withdraw_authority: Pubkey,
    source_stake_account: Pubkey,
    destination_stake_account: Pubkey,
    destination_stake_authority: Pubkey,
    user_transfer_authority: Pubkey,
    source_pool_account: Pubkey,
    manager_fee_account: Pubkey,
    pool_mint: Pubkey,
    pool_tokens: int,
    minimum_lamports_out: int | None = None,
    token_program: Pubkey = TOKEN_PROGRAM,
) -> Instruction:
    """``WithdrawStake`` (``WithdrawStakeWithSlippage`` with a minimum): burn pool tokens
    and split their lamports from a validator (or the reserve) stake account into an
    allocated, uninitialized stake account, whose staker and withdrawer become
    ``destination_stake_authority``."""
    check_lamports(pool_tokens, field="pool_tokens", minimum=1)
    accounts = [
        _w(stake_pool),
        _w(validator_list),
        _r(withdraw_authority),
        _w(source_stake_account),
        _w(destination_stake_account),
        _r(destination_stake_authority),
        AccountMeta(user_transfer_authority, is_signer=True, is_writable=False),
        _w(source_pool_account),
        _w(manager_fee_account),
        _w(pool_mint),
        _r(SYSVAR_CLOCK),
        _r(token_program),
        _r(STAKE_PROGRAM),
    ]
    data = _data(
        StakePoolTag.WITHDRAW_STAKE,
        StakePoolTag.WITHDRAW_STAKE_WITH_SLIPPAGE,
        pool_tokens,
        minimum_lamports_out,
    )
    return Instruction(program_id, data, accounts)


# --- human-readable decoding (registered in ``summaries``) ------------------------------

ParamValue: TypeAlias = int | str
Decoded: TypeAlias = tuple[str, str, Sequence[str], tuple[tuple[str, ParamValue], ...]]

# Pool tokens are shown with 9 decimals: the program requires pool mints to have 9.
POOL_TOKEN_DECIMALS: Final = 9


def _acct(keys: Sequence[Pubkey], i: int) -> str:
    return str(keys[i]) if i < len(keys) else "(missing account)"


def _tokens(amount: int) -> str:
    return f"{format_units(amount, POOL_TOKEN_DECIMALS, 'pool tokens')} ({amount:,} units)"


_DEPOSIT_SOL_ROLES: Final = (
    "stake pool",
    "pool withdraw authority",
    "reserve stake account",
    "funding account",
    "pool token destination",
    "manager fee account",
    "referral fee account",
    "pool mint",
    "System program",
    "token program",
    "SOL deposit authority",
)
_DEPOSIT_STAKE_ROLES: Final = (
    "stake pool",
    "validator list",
    "pool deposit authority",
    "pool withdraw authority",
    "deposited stake account",
    "pool validator stake account",
    "reserve stake account",
    "pool token destination",
    "manager fee account",
    "referral fee account",
    "pool mint",
    "Clock sysvar",
    "StakeHistory sysvar",
    "token program",
    "Stake program",
)
_WITHDRAW_SOL_ROLES: Final = (
    "stake pool",
    "pool withdraw authority",
    "pool token owner",
    "pool token source",
    "reserve stake account",
    "SOL destination",
    "manager fee account",
    "pool mint",
    "Clock sysvar",
    "StakeHistory sysvar",
    "Stake program",
    "token program",
    "SOL withdraw authority",
)
_WITHDRAW_STAKE_ROLES: Final = (
    "stake pool",
    "validator list",
    "pool withdraw authority",
    "pool stake account split from",
    "new stake account",
    "new stake and withdraw authority",
    "pool token owner",
    "pool token source",
    "manager fee account",
    "pool mint",
    "Clock sysvar",
    "token program",
    "Stake program",
)


_BOUNDS: Final[dict[int, str]] = {
    StakePoolTag.DEPOSIT_SOL_WITH_SLIPPAGE: "minimum_pool_tokens_out",
    StakePoolTag.DEPOSIT_STAKE_WITH_SLIPPAGE: "minimum_pool_tokens_out",
    StakePoolTag.WITHDRAW_SOL_WITH_SLIPPAGE: "minimum_lamports_out",
    StakePoolTag.WITHDRAW_STAKE_WITH_SLIPPAGE: "minimum_lamports_out",
}


def _bound(r: bc.Reader, tag: int) -> tuple[tuple[tuple[str, ParamValue], ...], str]:
    """The slippage bound of a ``*WithSlippage`` variant: its param and its sentence."""
    name = _BOUNDS.get(tag)
    if name is None:
        return (), ""
    minimum = r.u64()
    if name == "minimum_pool_tokens_out":
        return ((name, minimum),), f"; fails unless at least {_tokens(minimum)} are minted"
    return ((name, minimum),), f"; fails unless it pays at least {format_amount(minimum)}"


def decode_stake_pool_instruction(r: bc.Reader, keys: Sequence[Pubkey]) -> Decoded:
    """Explain a stake-pool instruction (the deposits and withdrawals in full, the
    pool's administration by name)."""
    tag = r.u8()
    pool = _acct(keys, 0)
    if tag in (StakePoolTag.DEPOSIT_SOL, StakePoolTag.DEPOSIT_SOL_WITH_SLIPPAGE):
        lamports = r.u64()
        params, bound = _bound(r, tag)
        return (
            pascal_case(StakePoolTag(tag).name),
            f"Deposit {format_amount(lamports)} from {_acct(keys, 3)} into the reserve of "
            f"stake pool {pool}, minting pool tokens to {_acct(keys, 4)}{bound}",
            _DEPOSIT_SOL_ROLES,
            (("lamports", lamports), *params),
        )
    if tag in (StakePoolTag.DEPOSIT_STAKE, StakePoolTag.DEPOSIT_STAKE_WITH_SLIPPAGE):
        params, bound = _bound(r, tag)
        return (
            pascal_case(StakePoolTag(tag).name),
            f"Deposit stake account {_acct(keys, 4)} into stake pool {pool} (merged into "
            f"{_acct(keys, 5)}), minting pool tokens to {_acct(keys, 7)}{bound}",
            _DEPOSIT_STAKE_ROLES,
            params,
        )
    if tag in (StakePoolTag.WITHDRAW_SOL, StakePoolTag.WITHDRAW_SOL_WITH_SLIPPAGE):
        tokens = r.u64()
        params, bound = _bound(r, tag)
        return (
            pascal_case(StakePoolTag(tag).name),
            f"Burn {_tokens(tokens)} from {_acct(keys, 3)} (signed by {_acct(keys, 2)}) and "
            f"withdraw their SOL from the reserve of stake pool {pool} to "
            f"{_acct(keys, 5)}{bound}",
            _WITHDRAW_SOL_ROLES,
            (("pool_tokens", tokens), *params),
        )
    if tag in (StakePoolTag.WITHDRAW_STAKE, StakePoolTag.WITHDRAW_STAKE_WITH_SLIPPAGE):
        tokens = r.u64()
        params, bound = _bound(r, tag)
        return (
            pascal_case(StakePoolTag(tag).name),
            f"Burn {_tokens(tokens)} from {_acct(keys, 7)} (signed by {_acct(keys, 6)}) and "
            f"split their stake from {_acct(keys, 3)} of stake pool {pool} into new stake "
            f"account {_acct(keys, 4)}, owned by {_acct(keys, 5)}{bound}",
            _WITHDRAW_STAKE_ROLES,
            (("pool_tokens", tokens), *params),
        )
    try:
        name = pascal_case(StakePoolTag(tag).name)
    except ValueError:
        return (
            "Unknown",
            f"StakePool program instruction with unknown tag {tag}",
            (),
            (("tag", tag),),
        )
    return (name, f"Stake pool program {name} on stake pool {pool}", ("stake pool",), ())


def decode_associated_token_instruction(r: bc.Reader, keys: Sequence[Pubkey]) -> Decoded:
    """Explain an associated token account instruction."""
    tag = r.u8() if r.remaining() else AssociatedTokenInstruction.CREATE
    roles = (
        "funding account",
        "associated token account",
        "owner",
        "mint",
        "System program",
        "token program",
    )
    if tag == AssociatedTokenInstruction.CREATE_IDEMPOTENT:
        return (
            "CreateIdempotent",
            f"Create the token account {_acct(keys, 1)} of {_acct(keys, 2)} for mint "
            f"{_acct(keys, 3)}, paid by {_acct(keys, 0)}, unless it exists already",
            roles,
            (),
        )
    if tag == AssociatedTokenInstruction.CREATE:
        return (
            "Create",
            f"Create the token account {_acct(keys, 1)} of {_acct(keys, 2)} for mint "
            f"{_acct(keys, 3)}, paid by {_acct(keys, 0)}",
            roles,
            (),
        )
    if tag == AssociatedTokenInstruction.RECOVER_NESTED:
        return ("RecoverNested", "Recover tokens from a nested associated token account", (), ())
    return (
        "Unknown",
        f"AssociatedToken program instruction with unknown tag {tag}",
        (),
        (("tag", tag),),
    )
