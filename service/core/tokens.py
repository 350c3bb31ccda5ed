"""SPL token accounts as liquid staking needs them: mints, token accounts, associated
token addresses and the idempotent creation of an associated token account.

Both token programs (Token and Token-2022) share the base layouts read here; the
Token-2022 extensions that may follow them are not interpreted. Layouts follow the
token program's ``state.rs`` (``Mint``: 82 bytes, ``Account``: 165 bytes).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

from service.core._validate import check_pubkey, check_range, check_u64
from service.core.errors import DomainError, ErrorKind
from service.core.programs import (
    ASSOCIATED_TOKEN_PROGRAM,
    MINT_SIZE,
    SYSTEM_PROGRAM,
    TOKEN_2022_PROGRAM,
    TOKEN_ACCOUNT_SIZE,
    TOKEN_PROGRAM,
)

TOKEN_PROGRAMS: Final = frozenset({TOKEN_PROGRAM, TOKEN_2022_PROGRAM})

# Offsets in the base layouts. Mint: mint_authority COption<Pubkey> @0 (4 + 32),
# supply u64 @36, decimals u8 @44, is_initialized bool @45, freeze_authority @46.
# Account: mint @0, owner @32, amount u64 @64, delegate COption @72, state u8 @108.
_MINT_SUPPLY: Final = 36
_MINT_DECIMALS: Final = 44
_MINT_INITIALIZED: Final = 45
_ACCOUNT_AMOUNT: Final = 64
_ACCOUNT_STATE: Final = 108


class TokenAccountState(enum.IntEnum):
    """``AccountState`` of a token account."""

    UNINITIALIZED = 0
    INITIALIZED = 1
    FROZEN = 2


class AssociatedTokenInstruction(enum.IntEnum):
    """Associated token account program instructions (borsh u8 tags)."""

    CREATE = 0
    CREATE_IDEMPOTENT = 1
    RECOVER_NESTED = 2


class InvalidTokenAccountError(DomainError):
    """Account data is not the mint or token account it should be."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "INVALID_TOKEN_ACCOUNT"
    default_hint = "The account is not an initialized SPL token mint or token account."


@dataclass(frozen=True, kw_only=True)
class Mint:
    """The base fields of a token mint that pools need."""

    supply: int
    decimals: int
    mint_authority: Pubkey | None = None

    def __post_init__(self) -> None:
        check_u64(self.supply, field="supply")
        check_range(self.decimals, field="decimals", low=0, high=255)


@dataclass(frozen=True, kw_only=True)
class TokenAccount:
    """The base fields of a token account."""

    mint: Pubkey
    owner: Pubkey
    amount: int
    state: TokenAccountState = TokenAccountState.INITIALIZED

    def __post_init__(self) -> None:
        check_pubkey(self.mint, field="mint")
        check_pubkey(self.owner, field="owner")
        check_u64(self.amount, field="amount")


def decode_mint(data: bytes, *, address: str = "") -> Mint:
    """Decode a mint's base layout.

    Raises:
        InvalidTokenAccountError: Too short, or not initialized.
    """
    if len(data) < MINT_SIZE or data[_MINT_INITIALIZED] != 1:
        raise InvalidTokenAccountError(
            f"{address or 'the account'} is not an initialized token mint",
            metadata={"address": address} if address else None,
        )
    (authority_tag,) = struct.unpack_from("<I", data, 0)
    (supply,) = struct.unpack_from("<Q", data, _MINT_SUPPLY)
    return Mint(
        supply=supply,
        decimals=data[_MINT_DECIMALS],
        mint_authority=Pubkey.from_bytes(data[4:36]) if authority_tag == 1 else None,
    )


def encode_mint(mint: Mint) -> bytes:
    """The 82-byte base layout of an initialized mint without a freeze authority."""
    authority = mint.mint_authority
    return (
        struct.pack("<I", 1 if authority is not None else 0)
        + (bytes(authority) if authority is not None else bytes(32))
        + struct.pack("<QBB", mint.supply, mint.decimals, 1)
        + bytes(36)
    )


def decode_token_account(data: bytes, *, address: str = "") -> TokenAccount:
    """Decode a token account's base layout.

    Raises:
        InvalidTokenAccountError: Too short, or uninitialized.
    """
    if len(data) < TOKEN_ACCOUNT_SIZE or data[_ACCOUNT_STATE] == TokenAccountState.UNINITIALIZED:
        raise InvalidTokenAccountError(
            f"{address or 'the account'} is not an initialized token account",
            metadata={"address": address} if address else None,
        )
    try:
        state = TokenAccountState(data[_ACCOUNT_STATE])
    except ValueError:
        raise InvalidTokenAccountError(
            f"{address or 'the account'} has an unknown token account state"
        ) from None
    (amount,) = struct.unpack_from("<Q", data, _ACCOUNT_AMOUNT)
    return TokenAccount(
        mint=Pubkey.from_bytes(data[0:32]),
        owner=Pubkey.from_bytes(data[32:64]),
        amount=amount,
        state=state,
    )


def encode_token_account(account: TokenAccount) -> bytes:
    """The 165-byte base layout of a token account (no delegate, not native)."""
    return (
        bytes(account.mint)
        + bytes(account.owner)
        + struct.pack("<Q", account.amount)
        + bytes(36)  # delegate: COption::None
        + struct.pack("<B", account.state)
        + bytes(12)  # is_native: COption::None
        + struct.pack("<Q", 0)  # delegated_amount
        + bytes(36)  # close_authority: COption::None
    )


def associated_token_address(
    *, owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM
) -> Pubkey:
    """The owner's associated token account for ``mint``:
    ``find_program_address([owner, token_program, mint], AssociatedToken)``."""
    address, _ = Pubkey.find_program_address(
        [bytes(owner), bytes(token_program), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM
    )
    return address


def create_associated_token_account_idempotent(
    *, payer: Pubkey, owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM
) -> Instruction:
    """``CreateIdempotent``: create the owner's associated token account for ``mint``
    unless it exists already (then it does nothing).

    Accounts: ``[payer s w, ata w, owner, mint, System, token program]``.
    """
    ata = associated_token_address(owner=owner, mint=mint, token_program=token_program)
    return Instruction(
        ASSOCIATED_TOKEN_PROGRAM,
        bytes([AssociatedTokenInstruction.CREATE_IDEMPOTENT]),
        [
            AccountMeta(payer, is_signer=True, is_writable=True),
            AccountMeta(ata, is_signer=False, is_writable=True),
            AccountMeta(owner, is_signer=False, is_writable=False),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(SYSTEM_PROGRAM, is_signer=False, is_writable=False),
            AccountMeta(token_program, is_signer=False, is_writable=False),
        ],
    )
