"""Validation helpers that raise domain errors (private, re-exported where public)."""

from __future__ import annotations

import functools

from solders.hash import Hash, ParseHashError
from solders.pubkey import Pubkey

from service.core._bincode import I64_MAX, I64_MIN, U32_MAX, U64_MAX
from service.core.errors import InvalidAddressError, InvalidAmountError, InvalidArgumentError
from service.core.programs import UNSIGNABLE_KEYS


@functools.lru_cache(maxsize=4096)
def is_signing_key(key: Pubkey) -> bool:
    """Whether ``key`` can sign: an ed25519 point (a program-derived address is not)
    and not a program or sysvar id. Remembered: a build checks its wallet more than
    once (the request, then the plan), and the check is a point decompression."""
    return key not in UNSIGNABLE_KEYS and key.is_on_curve()


def not_signing_key(key: Pubkey) -> str:
    """Why ``key``, which :func:`is_signing_key` refused, cannot sign."""
    if key in UNSIGNABLE_KEYS:
        return "not a signing key (a program or sysvar id: no one can sign for it)"
    return "not a signing key (off the ed25519 curve)"


def parse_address(value: str, *, field: str, require_on_curve: bool = False) -> Pubkey:
    """Parse a base58 Solana address from a request field.

    Args:
        value: The base58 text.
        field: The request field path, reported in the error.
        require_on_curve: Demand a key that can sign (wallets and nonce
            authorities): see :func:`is_signing_key`.

    Returns:
        The public key.

    Raises:
        InvalidAddressError: If the text is not a 32-byte base58 key (or is off curve
            when ``require_on_curve``).
    """
    if not isinstance(value, str) or not value:
        raise InvalidAddressError(field=field, value=str(value), detail="empty")
    # Base58 of 32 bytes is 32..44 characters; reject early what cannot be one.
    if len(value) > 44:
        raise InvalidAddressError(field=field, value=value, detail="too long to be an address")
    try:
        key = Pubkey.from_string(value)
    except ValueError:
        raise InvalidAddressError(field=field, value=value) from None
    if require_on_curve and not is_signing_key(key):
        raise InvalidAddressError(field=field, value=value, detail=not_signing_key(key))
    return key


def parse_blockhash(value: str, *, field: str) -> Hash:
    """Parse a base58 32-byte hash (blockhash or nonce value)."""
    try:
        return Hash.from_string(value)
    except (ValueError, ParseHashError):
        raise InvalidArgumentError(
            f"{field} {value[:64]!r} is not a base58 32-byte hash", field=field
        ) from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_lamports(value: int, *, field: str, minimum: int = 0) -> int:
    """Check an integer lamport amount in [minimum, u64::MAX]."""
    if not _is_int(value):
        raise InvalidArgumentError(f"{field} must be an integer number of lamports", field=field)
    if value < minimum or value > U64_MAX:
        raise InvalidAmountError(
            f"{field} must be between {minimum} and {U64_MAX} lamports, got {value}",
            field=field,
            value=value,
        )
    return value


def check_token_amount(value: int, *, field: str) -> int:
    """Check a positive integer amount of tokens, in the mint's smallest unit."""
    if not _is_int(value) or not 1 <= value <= U64_MAX:
        raise InvalidAmountError(
            f"{field} must be between 1 and {U64_MAX} of the mint's smallest unit, got {value}",
            field=field,
            value=value if _is_int(value) else 0,
            hint="Token amounts are integers in the mint's smallest unit (see its decimals).",
        )
    return value


def check_range(value: int, *, field: str, low: int, high: int) -> int:
    """Check an integer in [low, high] (for counts, epochs, units)."""
    if not _is_int(value):
        raise InvalidArgumentError(f"{field} must be an integer", field=field)
    if value < low or value > high:
        raise InvalidArgumentError(
            f"{field} must be between {low} and {high}, got {value}",
            field=field,
            metadata={"field": field, "value": value, "minimum": low, "maximum": high},
        )
    return value


def check_u64(value: int, *, field: str) -> int:
    return check_range(value, field=field, low=0, high=U64_MAX)


def check_u32(value: int, *, field: str) -> int:
    return check_range(value, field=field, low=0, high=U32_MAX)


def check_i64(value: int, *, field: str) -> int:
    return check_range(value, field=field, low=I64_MIN, high=I64_MAX)


def check_pubkey(value: object, *, field: str) -> Pubkey:
    """Check a value is a ``Pubkey`` (a programming error otherwise, still reported)."""
    if not isinstance(value, Pubkey):
        raise InvalidAddressError(field=field, value=repr(value), detail="not a Pubkey")
    return value
