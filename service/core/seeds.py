"""Seeds for seed-derived stake accounts (``create_account_with_seed``).

Every stake account we create lives at ``create_with_seed(wallet, seed, Stake)``:
the wallet is the base and signs, so no other key ever exists. A seed is derived

- from the caller's ``request_id`` (idempotency key): the same (purpose, wallet,
  request_id) always gives the same seed, hence the same address. A retried build
  therefore targets the same account, and a second landing fails on chain
  ("account already in use") instead of staking twice;
- otherwise from random bytes the caller passes in (the core reads no randomness).

Format: ``"<purpose>:" + base32(sha256(...))`` cut to 32 bytes, e.g.
``stake:mfrggzdfmztwq2lknnwg23tpob``; lowercase base32 keeps it printable and
unambiguous in explorers.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
from typing import Final

from solders.pubkey import Pubkey

from service.core.errors import InvalidArgumentError, InvalidSeedError, SeedTooLongError
from service.core.programs import MAX_SEED_LEN, STAKE_PROGRAM

_PRINTABLE_NO_SPACE: Final = re.compile(rb"[!-~]+")

MAX_REQUEST_ID_BYTES: Final = 256
INVALID_REQUEST_ID: Final = "INVALID_REQUEST_ID"
MIN_ENTROPY_BYTES: Final = 16

_DOMAIN: Final = b"agentstaking.v1/seed"


class SeedPurpose(enum.Enum):
    """What a derived account is for; part of the hash and the seed's prefix."""

    STAKE = "stake"
    SPLIT = "split"


def check_seed(seed: str, *, field: str = "seed") -> str:
    """Validate a seed: 1..32 bytes of printable ASCII, no spaces.

    The runtime accepts any 32 bytes; we also refuse what would be invisible or
    ambiguous to a human reading the seed in an explorer.

    Raises:
        SeedTooLongError: Over 32 bytes.
        InvalidSeedError: Empty, or a character outside ``!``..``~``.
    """
    if not isinstance(seed, str) or not seed:
        raise InvalidSeedError(f"{field} must be a non-empty string", field=field)
    raw = seed.encode()
    if len(raw) > MAX_SEED_LEN:
        raise SeedTooLongError(field=field, length=len(raw), maximum=MAX_SEED_LEN)
    if not _PRINTABLE_NO_SPACE.fullmatch(raw):
        raise InvalidSeedError(f"{field} must be printable ASCII without spaces", field=field)
    return seed


def _derive(purpose: SeedPurpose, wallet: Pubkey, source: bytes, material: bytes) -> str:
    h = hashlib.sha256()
    # Fixed-width and length-prefixed parts: no two inputs share an encoding.
    for part in (_DOMAIN, purpose.value.encode(), bytes(wallet), source, material):
        h.update(len(part).to_bytes(4, "little"))
        h.update(part)
    prefix = purpose.value + ":"
    need = MAX_SEED_LEN - len(prefix)
    # Base32 writes each 5 bytes as 8 characters: encode only the groups the seed
    # keeps (the same characters as the whole digest's, at a fraction of the cost).
    digest = base64.b32encode(h.digest()[: 5 * -(-need // 8)]).decode().lower()
    return prefix + digest[:need]


def check_request_id(request_id: str, *, required: bool = False) -> str:
    """Check an idempotency key: any UTF-8 of at most 256 bytes (empty: none, unless
    ``required``).

    Raises:
        InvalidArgumentError: ``INVALID_REQUEST_ID`` (field ``request_id``).
    """
    if not isinstance(request_id, str) or (required and not request_id):
        raise InvalidArgumentError(
            "request_id is required", field="request_id", reason=INVALID_REQUEST_ID
        )
    if len(request_id.encode()) > MAX_REQUEST_ID_BYTES:
        raise InvalidArgumentError(
            f"request_id must be at most {MAX_REQUEST_ID_BYTES} bytes of UTF-8",
            field="request_id",
            reason=INVALID_REQUEST_ID,
            metadata={"maximum": MAX_REQUEST_ID_BYTES},
        )
    return request_id


def seed_from_request_id(*, purpose: SeedPurpose, wallet: Pubkey, request_id: str) -> str:
    """The deterministic seed for an idempotency key.

    Raises:
        InvalidArgumentError: ``request_id`` empty or over 256 bytes (field ``request_id``).
    """
    raw = check_request_id(request_id, required=True).encode()
    return _derive(purpose, wallet, b"request_id", raw)


def seed_from_entropy(*, purpose: SeedPurpose, wallet: Pubkey, entropy: bytes) -> str:
    """A fresh seed from caller-supplied random bytes (at least 16).

    Raises:
        ValueError: Fewer than 16 bytes of entropy (a programming error).
    """
    if len(entropy) < MIN_ENTROPY_BYTES:
        raise ValueError(f"need at least {MIN_ENTROPY_BYTES} bytes of entropy")
    return _derive(purpose, wallet, b"entropy", bytes(entropy))


def stake_account_address(*, base: Pubkey, seed: str) -> Pubkey:
    """``create_with_seed(base, seed, Stake program)``: where a seed's stake account lives."""
    return Pubkey.create_with_seed(base, check_seed(seed), STAKE_PROGRAM)
