"""Instruction encoders for the Stake, System, ComputeBudget and Memo programs.

Neither ``solders`` nor ``solana`` ships stake instruction builders, so they live
here. Stake instructions are bincode: a u32 little-endian tag, then the fields.
ComputeBudget instructions are borsh: a u8 tag, then the fields. System
instructions come from ``solders.system_program`` behind a keyword-only facade
that validates amounts and seeds like the rest of the core.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

from solders import system_program as sp
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

from service.core import _bincode as bc
from service.core._validate import check_i64, check_lamports, check_range, check_u64
from service.core.accounts import Lockup
from service.core.programs import (
    COMPUTE_BUDGET_PROGRAM,
    MAX_COMPUTE_UNIT_LIMIT,
    MEMO_PROGRAM,
    STAKE_CONFIG,
    STAKE_PROGRAM,
    SYSVAR_CLOCK,
    SYSVAR_RENT,
    SYSVAR_STAKE_HISTORY,
)
from service.core.seeds import check_seed


class StakeInstructionTag(enum.IntEnum):
    """``StakeInstruction`` variant indices (bincode u32 tags)."""

    INITIALIZE = 0
    AUTHORIZE = 1
    DELEGATE_STAKE = 2
    SPLIT = 3
    WITHDRAW = 4
    DEACTIVATE = 5
    SET_LOCKUP = 6
    MERGE = 7
    AUTHORIZE_WITH_SEED = 8
    INITIALIZE_CHECKED = 9
    AUTHORIZE_CHECKED = 10
    AUTHORIZE_CHECKED_WITH_SEED = 11
    SET_LOCKUP_CHECKED = 12
    GET_MINIMUM_DELEGATION = 13
    DEACTIVATE_DELINQUENT = 14
    REDELEGATE = 15
    MOVE_STAKE = 16
    MOVE_LAMPORTS = 17


class StakeAuthorize(enum.IntEnum):
    """Which authority ``Authorize`` changes (bincode u32)."""

    STAKER = 0
    WITHDRAWER = 1


class ComputeBudgetTag(enum.IntEnum):
    """``ComputeBudgetInstruction`` variant indices (borsh u8 tags)."""

    REQUEST_HEAP_FRAME = 1
    SET_COMPUTE_UNIT_LIMIT = 2
    SET_COMPUTE_UNIT_PRICE = 3
    SET_LOADED_ACCOUNTS_DATA_SIZE_LIMIT = 4


NO_LOCKUP: Final = Lockup()


def _w(key: Pubkey) -> AccountMeta:
    return AccountMeta(key, is_signer=False, is_writable=True)


def _r(key: Pubkey) -> AccountMeta:
    return AccountMeta(key, is_signer=False, is_writable=False)


def _s(key: Pubkey) -> AccountMeta:
    return AccountMeta(key, is_signer=True, is_writable=False)


def _stake_ix(
    tag: StakeInstructionTag, accounts: list[AccountMeta], args: bytes = b""
) -> Instruction:
    return Instruction(STAKE_PROGRAM, bc.u32(tag) + args, accounts)


# --- Stake program ----------------------------------------------------------------------


def stake_initialize(
    *, stake_account: Pubkey, staker: Pubkey, withdrawer: Pubkey, lockup: Lockup = NO_LOCKUP
) -> Instruction:
    """``Initialize``: set the authorities and lockup of an allocated stake account.

    Accounts: ``[stake w, Rent]``. Needs no signature: the account must already be
    owned by the Stake program (created in the same transaction).
    """
    data = (
        bytes(staker)
        + bytes(withdrawer)
        + bc.i64(lockup.unix_timestamp)
        + bc.u64(lockup.epoch)
        + bytes(lockup.custodian)
    )
    return _stake_ix(StakeInstructionTag.INITIALIZE, [_w(stake_account), _r(SYSVAR_RENT)], data)


def stake_authorize(
    *,
    stake_account: Pubkey,
    authority: Pubkey,
    new_authority: Pubkey,
    role: StakeAuthorize,
    custodian: Pubkey | None = None,
) -> Instruction:
    """``Authorize``: give the staker or withdrawer role to ``new_authority``.

    Accounts: ``[stake w, Clock, authority s]`` plus ``custodian s`` when changing the
    withdrawer under a lockup. The stake role may be changed by the current staker
    or the withdrawer; the withdraw role only by the withdrawer.
    """
    accounts = [_w(stake_account), _r(SYSVAR_CLOCK), _s(authority)]
    if custodian is not None:
        accounts.append(_s(custodian))
    data = bytes(new_authority) + bc.u32(StakeAuthorize(role))
    return _stake_ix(StakeInstructionTag.AUTHORIZE, accounts, data)


def stake_authorize_checked(
    *,
    stake_account: Pubkey,
    authority: Pubkey,
    new_authority: Pubkey,
    role: StakeAuthorize,
    custodian: Pubkey | None = None,
) -> Instruction:
    """``AuthorizeChecked``: like :func:`stake_authorize`, but ``new_authority`` must sign
    too, so a mistyped or unusable key cannot receive the role.

    Accounts: ``[stake w, Clock, authority s, new_authority s]`` plus ``custodian s``
    when changing the withdrawer under a lockup in force.
    """
    accounts = [_w(stake_account), _r(SYSVAR_CLOCK), _s(authority), _s(new_authority)]
    if custodian is not None:
        accounts.append(_s(custodian))
    return _stake_ix(StakeInstructionTag.AUTHORIZE_CHECKED, accounts, bc.u32(StakeAuthorize(role)))


def stake_set_lockup_checked(
    *,
    stake_account: Pubkey,
    authority: Pubkey,
    unix_timestamp: int | None = None,
    epoch: int | None = None,
    new_custodian: Pubkey | None = None,
) -> Instruction:
    """``SetLockupChecked``: change the fields of a lockup that are given (None keeps a
    field as it is).

    Accounts: ``[stake w, authority s]`` plus ``new_custodian s``: the new custodian
    signs, as with every checked instruction. ``authority`` is the lockup custodian
    while the lockup is in force, else the withdraw authority.
    """
    data = bytearray()
    if unix_timestamp is None:
        data += bc.u8(0)
    else:
        data += bc.u8(1) + bc.i64(check_i64(unix_timestamp, field="lockup.unix_timestamp"))
    if epoch is None:
        data += bc.u8(0)
    else:
        data += bc.u8(1) + bc.u64(check_u64(epoch, field="lockup.epoch"))
    accounts = [_w(stake_account), _s(authority)]
    if new_custodian is not None:
        accounts.append(_s(new_custodian))
    return _stake_ix(StakeInstructionTag.SET_LOCKUP_CHECKED, accounts, bytes(data))


def stake_move_stake(
    *, source: Pubkey, destination: Pubkey, staker: Pubkey, lamports: int
) -> Instruction:
    """``MoveStake`` (SIMD-0148): move ``lamports`` of fully active stake, and as many
    lamports, to a fully active account delegated to the same vote account or to an
    inactive one (which becomes active at once). Accounts: ``[source w, dest w,
    staker s]``; both accounts need the same authorities (and lockup, if in force).
    """
    check_lamports(lamports, field="lamports", minimum=1)
    accounts = [_w(source), _w(destination), _s(staker)]
    return _stake_ix(StakeInstructionTag.MOVE_STAKE, accounts, bc.u64(lamports))


def stake_move_lamports(
    *, source: Pubkey, destination: Pubkey, staker: Pubkey, lamports: int
) -> Instruction:
    """``MoveLamports`` (SIMD-0148): move ``lamports`` that are neither stake nor rent
    reserve of a fully active or inactive account to another stake account with the
    same authorities. Accounts: ``[source w, dest w, staker s]``.
    """
    check_lamports(lamports, field="lamports", minimum=1)
    accounts = [_w(source), _w(destination), _s(staker)]
    return _stake_ix(StakeInstructionTag.MOVE_LAMPORTS, accounts, bc.u64(lamports))


def stake_delegate(*, stake_account: Pubkey, vote_account: Pubkey, staker: Pubkey) -> Instruction:
    """``DelegateStake``: delegate everything above the rent reserve to a vote account.

    Accounts: ``[stake w, vote, Clock, StakeHistory, StakeConfig, staker s]``. The
    program ignores StakeConfig but still expects the slot.
    """
    accounts = [
        _w(stake_account),
        _r(vote_account),
        _r(SYSVAR_CLOCK),
        _r(SYSVAR_STAKE_HISTORY),
        _r(STAKE_CONFIG),
        _s(staker),
    ]
    return _stake_ix(StakeInstructionTag.DELEGATE_STAKE, accounts)


def stake_split(
    *, stake_account: Pubkey, destination: Pubkey, staker: Pubkey, lamports: int
) -> Instruction:
    """``Split``: move ``lamports`` (and the matching stake) into an uninitialized
    200-byte stake account. Accounts: ``[stake w, dest w, staker s]``.

    The destination must already be allocated, owned by the Stake program and
    pre-funded to rent exemption (see :func:`system_allocate_with_seed`).
    """
    check_lamports(lamports, field="lamports", minimum=1)
    accounts = [_w(stake_account), _w(destination), _s(staker)]
    return _stake_ix(StakeInstructionTag.SPLIT, accounts, bc.u64(lamports))


def stake_withdraw(
    *,
    stake_account: Pubkey,
    destination: Pubkey,
    withdrawer: Pubkey,
    lamports: int,
    custodian: Pubkey | None = None,
) -> Instruction:
    """``Withdraw``: move unstaked lamports out of a stake account.

    Accounts: ``[stake w, to w, Clock, StakeHistory, withdrawer s]`` plus
    ``custodian s`` to withdraw under a lockup.
    """
    check_lamports(lamports, field="lamports", minimum=1)
    accounts = [
        _w(stake_account),
        _w(destination),
        _r(SYSVAR_CLOCK),
        _r(SYSVAR_STAKE_HISTORY),
        _s(withdrawer),
    ]
    if custodian is not None:
        accounts.append(_s(custodian))
    return _stake_ix(StakeInstructionTag.WITHDRAW, accounts, bc.u64(lamports))


def stake_deactivate(*, stake_account: Pubkey, staker: Pubkey) -> Instruction:
    """``Deactivate``: start cooldown. Accounts: ``[stake w, Clock, staker s]``."""
    accounts = [_w(stake_account), _r(SYSVAR_CLOCK), _s(staker)]
    return _stake_ix(StakeInstructionTag.DEACTIVATE, accounts)


def stake_merge(*, destination: Pubkey, source: Pubkey, staker: Pubkey) -> Instruction:
    """``Merge``: fold ``source`` into ``destination`` and close ``source``.

    Accounts: ``[dest w, src w, Clock, StakeHistory, staker s]``.
    """
    accounts = [
        _w(destination),
        _w(source),
        _r(SYSVAR_CLOCK),
        _r(SYSVAR_STAKE_HISTORY),
        _s(staker),
    ]
    return _stake_ix(StakeInstructionTag.MERGE, accounts)


def stake_get_minimum_delegation() -> Instruction:
    """``GetMinimumDelegation``: the program's return data is the minimum as a u64.

    Simulate it to read the minimum delegation from the chain.
    """
    return _stake_ix(StakeInstructionTag.GET_MINIMUM_DELEGATION, [])


# --- ComputeBudget program --------------------------------------------------------------


def compute_unit_limit(units: int) -> Instruction:
    """``SetComputeUnitLimit``: cap (and reserve) compute units for the transaction."""
    check_range(units, field="compute_unit_limit", low=0, high=MAX_COMPUTE_UNIT_LIMIT)
    data = bc.u8(ComputeBudgetTag.SET_COMPUTE_UNIT_LIMIT) + bc.u32(units)
    return Instruction(COMPUTE_BUDGET_PROGRAM, data, [])


def compute_unit_price(micro_lamports: int) -> Instruction:
    """``SetComputeUnitPrice``: priority fee per compute unit, in micro-lamports."""
    check_u64(micro_lamports, field="compute_unit_price_micro_lamports")
    data = bc.u8(ComputeBudgetTag.SET_COMPUTE_UNIT_PRICE) + bc.u64(micro_lamports)
    return Instruction(COMPUTE_BUDGET_PROGRAM, data, [])


# --- Memo program -----------------------------------------------------------------------


def memo(text: str, *, signers: Sequence[Pubkey] = ()) -> Instruction:
    """A Memo (v2) instruction: UTF-8 ``text``; each listed signer must sign the
    transaction, and the memo is then attributed to it in the logs."""
    return Instruction(MEMO_PROGRAM, text.encode(), [_s(k) for k in signers])


# --- System program ---------------------------------------------------------------------


def system_create_account_with_seed(
    *,
    payer: Pubkey,
    new_account: Pubkey,
    base: Pubkey,
    seed: str,
    lamports: int,
    space: int,
    owner: Pubkey,
) -> Instruction:
    """``CreateAccountWithSeed``: fund, allocate and assign an address derived from
    ``(base, seed, owner)``. Only ``payer`` and ``base`` sign; when they are the same
    wallet, one signature suffices."""
    check_seed(seed)
    check_lamports(lamports, field="lamports")
    check_u64(space, field="space")
    return sp.create_account_with_seed(
        sp.CreateAccountWithSeedParams(
            from_pubkey=payer,
            to_pubkey=new_account,
            base=base,
            seed=seed,
            lamports=lamports,
            space=space,
            owner=owner,
        )
    )


def system_transfer(*, source: Pubkey, destination: Pubkey, lamports: int) -> Instruction:
    """``Transfer``: move lamports between System-owned accounts."""
    check_lamports(lamports, field="lamports")
    return sp.transfer(
        sp.TransferParams(from_pubkey=source, to_pubkey=destination, lamports=lamports)
    )


def system_advance_nonce(*, nonce_account: Pubkey, nonce_authority: Pubkey) -> Instruction:
    """``AdvanceNonceAccount``: must be a durable-nonce transaction's first instruction."""
    return sp.advance_nonce_account(
        sp.AdvanceNonceAccountParams(nonce_pubkey=nonce_account, authorized_pubkey=nonce_authority)
    )


def system_allocate_with_seed(
    *, address: Pubkey, base: Pubkey, seed: str, space: int, owner: Pubkey
) -> Instruction:
    """``AllocateWithSeed``: allocate and assign a seed-derived address (for split
    destinations, fund it first with a transfer; base signs)."""
    check_seed(seed)
    check_u64(space, field="space")
    return sp.allocate_with_seed(
        sp.AllocateWithSeedParams(address=address, base=base, seed=seed, space=space, owner=owner)
    )


def system_assign_with_seed(
    *, address: Pubkey, base: Pubkey, seed: str, owner: Pubkey
) -> Instruction:
    """``AssignWithSeed``: assign a seed-derived address to ``owner`` (base signs)."""
    check_seed(seed)
    return sp.assign_with_seed(
        sp.AssignWithSeedParams(address=address, base=base, seed=seed, owner=owner)
    )


def system_initialize_nonce(*, nonce_account: Pubkey, authority: Pubkey) -> Instruction:
    """``InitializeNonceAccount``: store a durable nonce in a System account of
    ``NONCE_ACCOUNT_SIZE`` bytes (created in the same transaction), ``authority``
    advancing it."""
    return sp.initialize_nonce_account(
        sp.InitializeNonceAccountParams(nonce_pubkey=nonce_account, authority=authority)
    )


def system_withdraw_nonce(
    *, nonce_account: Pubkey, authority: Pubkey, destination: Pubkey, lamports: int
) -> Instruction:
    """``WithdrawNonceAccount``: move lamports out of a nonce account (all of them close
    it); the nonce authority signs."""
    check_lamports(lamports, field="lamports")
    return sp.withdraw_nonce_account(
        sp.WithdrawNonceAccountParams(
            nonce_pubkey=nonce_account,
            authorized_pubkey=authority,
            to_pubkey=destination,
            lamports=lamports,
        )
    )
