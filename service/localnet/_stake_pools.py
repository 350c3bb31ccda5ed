"""SPL stake pools on the localnet: the accounts of a pool, written as the stake-pool
program would have left them.

The stake-pool program itself does not run on the localnet (no package ships its
binary), so its deposits and withdrawals cannot execute here. Its accounts can exist
and be read, though: `install_stake_pool` writes a pool's StakePool and ValidatorList
accounts (owned by the program's address), its mint and fee account (owned by the
real Token program), its reserve and validator stake accounts (owned by the real
Stake program, delegated to the localnet's validators) with the pool's
program-derived authorities. The service reads them like a real pool's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from solders.account import Account
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.core import (
    Authorized,
    Delegation,
    Lockup,
    Meta,
    StakeAccount,
    StakeStateKind,
    encode_stake_account,
)
from service.core.programs import (
    STAKE_ACCOUNT_SIZE,
    STAKE_POOL_PROGRAM,
    STAKE_PROGRAM,
    TOKEN_ACCOUNT_SIZE,
    TOKEN_PROGRAM,
    U64_MAX,
)
from service.core.stake_pools import (
    AUTHORITY_WITHDRAW,
    Fee,
    StakePool,
    ValidatorList,
    ValidatorStakeInfo,
    decode_stake_pool,
    default_deposit_authority,
    encode_stake_pool,
    encode_validator_list,
    validator_stake_address,
)
from service.core.tokens import (
    Mint,
    TokenAccount,
    associated_token_address,
    decode_token_account,
    encode_mint,
    encode_token_account,
)

from ._chain import LocalnetChain

# The StakePool account size of real pools (the program allocates the largest encoding).
STAKE_POOL_ACCOUNT_SIZE = 611


@dataclass(frozen=True, kw_only=True)
class LocalnetStakePool:
    """Where an installed pool's accounts are."""

    address: Pubkey
    program_id: Pubkey
    manager: Pubkey
    pool_mint: Pubkey
    manager_fee_account: Pubkey
    reserve_stake: Pubkey
    validator_list: Pubkey
    withdraw_authority: Pubkey
    vote_accounts: tuple[Pubkey, ...]
    validator_stake_accounts: tuple[Pubkey, ...]


def _key(name: str, role: str) -> Pubkey:
    digest = hashlib.sha256(f"agent-staking-localnet:stake-pool:{name}:{role}".encode()).digest()
    return Keypair.from_seed(digest).pubkey()


def install_stake_pool(
    chain: LocalnetChain,
    *,
    name: str = "pool",
    validators: int = 2,
    stake_per_validator: int = 5_000 * 10**9,
    reserve_lamports: int = 1_000 * 10**9,
    lamports_per_pool_token: tuple[int, int] = (21, 20),
    fields: Mapping[str, object] | None = None,
    program_id: Pubkey = STAKE_POOL_PROGRAM,
    encode_pool: Callable[[StakePool], bytes] = encode_stake_pool,
    encode_list: Callable[[ValidatorList], bytes] = encode_validator_list,
) -> LocalnetStakePool:
    """Write a stake pool's accounts, updated for the current epoch.

    Args:
        chain: The localnet (call on its thread, e.g. ``LocalnetServer.call``).
        name: Derives every address of the pool: the same name, the same pool.
        validators: How many of the localnet's validators the pool delegates to.
        stake_per_validator: Delegated stake per validator stake account.
        reserve_lamports: Lamports in the reserve above its rent-exempt minimum.
        lamports_per_pool_token: The pool token's value as a fraction (numerator,
            denominator); the previous epoch's value is set a little lower, so the pool
            shows a yield.
        fields: StakePool fields to set (``sol_deposit_fee``, ``sol_deposit_authority``...).
        program_id: The stake-pool program owning the pool.
        encode_pool / encode_list: How the StakePool and ValidatorList are encoded
            (tests pass the JavaScript SDK's layouts).
    """
    address = _key(name, "stake-pool")
    authority, bump = Pubkey.find_program_address([bytes(address), AUTHORITY_WITHDRAW], program_id)
    manager = _key(name, "manager")
    mint = _key(name, "mint")
    reserve = _key(name, "reserve")
    list_address = _key(name, "validator-list")
    fee_account = associated_token_address(owner=manager, mint=mint)
    rent = chain.svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE)
    epoch = chain.epoch
    chosen = [v.vote_account for v in chain.validators if not v.delinquent][:validators]
    entries = []
    stake_accounts = []
    for vote in chosen:
        stake_address = validator_stake_address(
            program_id=program_id, stake_pool=address, vote_account=vote
        )
        _set_stake(chain, stake_address, authority, rent, vote, stake_per_validator)
        stake_accounts.append(stake_address)
        entries.append(
            ValidatorStakeInfo(
                vote_account=vote,
                active_stake_lamports=stake_per_validator + rent,
                last_update_epoch=epoch,
            )
        )
    _set_stake(chain, reserve, authority, rent, None, reserve_lamports)
    total = reserve_lamports + sum(e.active_stake_lamports for e in entries)
    numerator, denominator = lamports_per_pool_token
    supply = total * denominator // numerator
    chain.svm.set_account(
        mint,
        Account(
            lamports=chain.svm.minimum_balance_for_rent_exemption(82),
            data=encode_mint(Mint(supply=supply, decimals=9, mint_authority=authority)),
            owner=TOKEN_PROGRAM,
            executable=False,
        ),
    )
    # The manager holds every pool token at first; `give_pool_tokens` hands them out.
    _set_token_account(chain, fee_account, mint, manager, supply)
    state = StakePool(
        manager=manager,
        staker=manager,
        stake_deposit_authority=default_deposit_authority(
            program_id=program_id, stake_pool=address
        ),
        stake_withdraw_bump_seed=bump,
        validator_list=list_address,
        reserve_stake=reserve,
        pool_mint=mint,
        manager_fee_account=fee_account,
        token_program_id=TOKEN_PROGRAM,
        total_lamports=total,
        pool_token_supply=supply,
        last_update_epoch=epoch,
        epoch_fee=Fee(denominator=100, numerator=5),
        last_epoch_pool_token_supply=supply,
        last_epoch_total_lamports=total - total // 5_000,
    )
    if fields:
        state = dataclasses.replace(state, **fields)  # type: ignore[arg-type]
    _set_program_account(
        chain, address, program_id, encode_pool(state).ljust(STAKE_POOL_ACCOUNT_SIZE, b"\0")
    )
    _set_program_account(
        chain,
        list_address,
        program_id,
        encode_list(ValidatorList(max_validators=10, validators=tuple(entries))),
    )
    return LocalnetStakePool(
        address=address,
        program_id=program_id,
        manager=manager,
        pool_mint=mint,
        manager_fee_account=fee_account,
        reserve_stake=reserve,
        validator_list=list_address,
        withdraw_authority=authority,
        vote_accounts=tuple(chosen),
        validator_stake_accounts=tuple(stake_accounts),
    )


def update_stake_pool(
    chain: LocalnetChain, pool: LocalnetStakePool, **changes: object
) -> StakePool:
    """Rewrite fields of an installed pool's StakePool account (e.g. an older
    ``last_update_epoch``, a ``sol_deposit_authority``); returns the new state."""
    account = chain.svm.get_account(pool.address)
    assert account is not None, f"no stake pool at {pool.address}"
    state = dataclasses.replace(decode_stake_pool(bytes(account.data)), **changes)  # type: ignore[arg-type]
    _set_program_account(
        chain, pool.address, pool.program_id, encode_stake_pool(state, size=len(account.data))
    )
    return state


def give_pool_tokens(
    chain: LocalnetChain, pool: LocalnetStakePool, owner: Pubkey, amount: int
) -> Pubkey:
    """Move ``amount`` pool tokens from the manager to ``owner``'s associated token
    account (created when missing); returns that account."""
    fee = chain.svm.get_account(pool.manager_fee_account)
    assert fee is not None
    held = decode_token_account(bytes(fee.data))
    if held.amount < amount:
        raise ValueError(f"the manager holds {held.amount} pool tokens, fewer than {amount}")
    _set_token_account(
        chain, pool.manager_fee_account, pool.pool_mint, pool.manager, held.amount - amount
    )
    ata = associated_token_address(owner=owner, mint=pool.pool_mint)
    existing = chain.svm.get_account(ata)
    before = decode_token_account(bytes(existing.data)).amount if existing is not None else 0
    _set_token_account(chain, ata, pool.pool_mint, owner, before + amount)
    return ata


def _set_program_account(chain: LocalnetChain, address: Pubkey, owner: Pubkey, data: bytes) -> None:
    chain.svm.set_account(
        address,
        Account(
            lamports=chain.svm.minimum_balance_for_rent_exemption(len(data)),
            data=data,
            owner=owner,
            executable=False,
        ),
    )


def _set_token_account(
    chain: LocalnetChain, address: Pubkey, mint: Pubkey, owner: Pubkey, amount: int
) -> None:
    chain.svm.set_account(
        address,
        Account(
            lamports=chain.svm.minimum_balance_for_rent_exemption(TOKEN_ACCOUNT_SIZE),
            data=encode_token_account(TokenAccount(mint=mint, owner=owner, amount=amount)),
            owner=TOKEN_PROGRAM,
            executable=False,
        ),
    )


def _set_stake(
    chain: LocalnetChain,
    address: Pubkey,
    authority: Pubkey,
    rent: int,
    voter: Pubkey | None,
    lamports: int,
) -> None:
    meta = Meta(
        rent_exempt_reserve=rent,
        authorized=Authorized(staker=authority, withdrawer=authority),
        lockup=Lockup(),
    )
    if voter is None:
        account = StakeAccount(state=StakeStateKind.INITIALIZED, meta=meta)
    else:
        # Activation epoch u64::MAX: bootstrap stake, fully active from the start.
        account = StakeAccount(
            state=StakeStateKind.STAKE,
            meta=meta,
            delegation=Delegation(
                voter=voter, stake=lamports, activation_epoch=U64_MAX, deactivation_epoch=U64_MAX
            ),
        )
    chain.svm.set_account(
        address,
        Account(
            lamports=lamports + rent,
            data=encode_stake_account(account, size=STAKE_ACCOUNT_SIZE),
            owner=STAKE_PROGRAM,
            executable=False,
        ),
    )
