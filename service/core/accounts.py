"""Stake and nonce account state: frozen values, decoders and (for stake) an encoder.

The stake layout is ``StakeStateV2`` as bincode (200 bytes):

======  ====================================================================
offset  field
======  ====================================================================
0       tag u32: 0 Uninitialized, 1 Initialized, 2 Stake, 3 RewardsPool
4       Meta.rent_exempt_reserve u64 (fixed at 2,282,880 by the program today)
12      Meta.authorized.staker
44      Meta.authorized.withdrawer (the ``getProgramAccounts`` memcmp offset)
76      Meta.lockup.unix_timestamp i64
84      Meta.lockup.epoch u64
92      Meta.lockup.custodian
124     Stake.delegation.voter_pubkey
156     Stake.delegation.stake u64
164     Stake.delegation.activation_epoch u64 (u64::MAX = bootstrap stake)
172     Stake.delegation.deactivation_epoch u64 (u64::MAX = not deactivating)
180     8 reserved bytes (formerly warmup_cooldown_rate f64, ignored)
188     Stake.credits_observed u64
196     StakeFlags u8
======  ====================================================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from solders.hash import Hash
from solders.pubkey import Pubkey

from service.core import _bincode as bc
from service.core._validate import check_i64, check_pubkey, check_u64
from service.core.errors import (
    InvalidNonceAccountError,
    InvalidStakeAccountError,
    VoteAccountNotFoundError,
)
from service.core.programs import STAKE_ACCOUNT_SIZE, U64_MAX, VOTE_PROGRAM

WITHDRAWER_OFFSET: Final = 44
STAKER_OFFSET: Final = 12
VOTER_OFFSET: Final = 124

_META_END: Final = 124
_STAKE_END: Final = 197


class StakeStateKind(enum.IntEnum):
    """The ``StakeStateV2`` variant tag."""

    UNINITIALIZED = 0
    INITIALIZED = 1
    STAKE = 2
    REWARDS_POOL = 3


@dataclass(frozen=True, kw_only=True)
class Lockup:
    """Withdrawal lockup; in force while either bound is in the future (unless the
    custodian signs). All zero means no lockup."""

    unix_timestamp: int = 0
    epoch: int = 0
    custodian: Pubkey = field(default_factory=Pubkey.default)

    def __post_init__(self) -> None:
        check_i64(self.unix_timestamp, field="lockup.unix_timestamp")
        check_u64(self.epoch, field="lockup.epoch")
        check_pubkey(self.custodian, field="lockup.custodian")

    @property
    def is_none(self) -> bool:
        """True when the lockup can never be in force."""
        return self.unix_timestamp <= 0 and self.epoch == 0

    def in_force(self, *, epoch: int, unix_timestamp: int, custodian: Pubkey | None = None) -> bool:
        """The stake program's ``Lockup::is_in_force`` at a clock, given who signs."""
        if custodian is not None and custodian == self.custodian:
            return False
        return self.unix_timestamp > unix_timestamp or self.epoch > epoch


@dataclass(frozen=True, kw_only=True)
class Authorized:
    staker: Pubkey
    withdrawer: Pubkey


@dataclass(frozen=True, kw_only=True)
class Meta:
    rent_exempt_reserve: int
    authorized: Authorized
    lockup: Lockup

    def __post_init__(self) -> None:
        check_u64(self.rent_exempt_reserve, field="rent_exempt_reserve")


@dataclass(frozen=True, kw_only=True)
class Delegation:
    """A stake delegation. ``activation_epoch == U64_MAX`` marks a bootstrap (genesis)
    stake; ``deactivation_epoch == U64_MAX`` means not deactivated."""

    voter: Pubkey = field(default_factory=Pubkey.default)
    stake: int
    activation_epoch: int
    deactivation_epoch: int = U64_MAX
    # Formerly warmup_cooldown_rate (f64); kept verbatim so encoding round-trips.
    reserved: bytes = bytes(8)

    def __post_init__(self) -> None:
        check_u64(self.stake, field="delegation.stake")
        check_u64(self.activation_epoch, field="delegation.activation_epoch")
        check_u64(self.deactivation_epoch, field="delegation.deactivation_epoch")
        if len(self.reserved) != 8:
            raise ValueError("delegation.reserved must be 8 bytes")

    @property
    def is_bootstrap(self) -> bool:
        return self.activation_epoch == U64_MAX

    @property
    def is_deactivated(self) -> bool:
        return self.deactivation_epoch != U64_MAX


@dataclass(frozen=True, kw_only=True)
class StakeAccount:
    """Decoded ``StakeStateV2``; ``meta`` is set for Initialized and Stake, ``delegation``
    for Stake only."""

    state: StakeStateKind
    meta: Meta | None = None
    delegation: Delegation | None = None
    credits_observed: int = 0
    stake_flags: int = 0

    def __post_init__(self) -> None:
        needs_meta = self.state in (StakeStateKind.INITIALIZED, StakeStateKind.STAKE)
        if needs_meta != (self.meta is not None):
            raise ValueError(
                f"{self.state.name} stake state {'needs' if needs_meta else 'has no'} meta"
            )
        if (self.state is StakeStateKind.STAKE) != (self.delegation is not None):
            raise ValueError("only the STAKE state carries a delegation")
        check_u64(self.credits_observed, field="credits_observed")
        if not 0 <= self.stake_flags <= bc.U8_MAX:
            raise ValueError("stake_flags is a u8")

    @property
    def staker(self) -> Pubkey | None:
        return self.meta.authorized.staker if self.meta else None

    @property
    def withdrawer(self) -> Pubkey | None:
        return self.meta.authorized.withdrawer if self.meta else None


def decode_stake_account(data: bytes) -> StakeAccount:
    """Decode stake account data (``StakeStateV2``).

    Raises:
        InvalidStakeAccountError: If the data is too short or the tag unknown.
    """
    try:
        r = bc.Reader(data)
        tag = r.u32()
        try:
            state = StakeStateKind(tag)
        except ValueError:
            raise InvalidStakeAccountError(
                f"unknown stake state tag {tag}", metadata={"tag": tag}
            ) from None
        if state in (StakeStateKind.UNINITIALIZED, StakeStateKind.REWARDS_POOL):
            return StakeAccount(state=state)
        meta = Meta(
            rent_exempt_reserve=r.u64(),
            authorized=Authorized(staker=r.pubkey(), withdrawer=r.pubkey()),
            lockup=Lockup(unix_timestamp=r.i64(), epoch=r.u64(), custodian=r.pubkey()),
        )
        if state is StakeStateKind.INITIALIZED:
            return StakeAccount(state=state, meta=meta)
        delegation = Delegation(
            voter=r.pubkey(),
            stake=r.u64(),
            activation_epoch=r.u64(),
            deactivation_epoch=r.u64(),
            reserved=r.take(8),
        )
        credits_observed = r.u64()
        # Accounts written before StakeFlags existed end here; read the flag if present.
        flags = r.u8() if r.remaining() else 0
        return StakeAccount(
            state=state,
            meta=meta,
            delegation=delegation,
            credits_observed=credits_observed,
            stake_flags=flags,
        )
    except bc.TruncatedError as exc:
        raise InvalidStakeAccountError(
            f"stake account data is truncated ({len(data)} bytes): {exc}",
            metadata={"length": len(data)},
        ) from None


def encode_stake_account(account: StakeAccount, *, size: int = STAKE_ACCOUNT_SIZE) -> bytes:
    """Encode a stake state into account data of ``size`` bytes (zero padded)."""
    out = bytearray(bc.u32(account.state))
    if account.meta is not None:
        m = account.meta
        out += bc.u64(m.rent_exempt_reserve)
        out += bytes(m.authorized.staker) + bytes(m.authorized.withdrawer)
        out += bc.i64(m.lockup.unix_timestamp) + bc.u64(m.lockup.epoch)
        out += bytes(m.lockup.custodian)
    if account.delegation is not None:
        d = account.delegation
        out += bytes(d.voter) + bc.u64(d.stake)
        out += bc.u64(d.activation_epoch) + bc.u64(d.deactivation_epoch) + d.reserved
        out += bc.u64(account.credits_observed) + bc.u8(account.stake_flags)
    if len(out) > size:
        raise ValueError(f"stake state needs {len(out)} bytes, account has {size}")
    return bytes(out) + bytes(size - len(out))


# --- durable nonce accounts -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NonceAccount:
    """An initialized System nonce account (``nonce::state::Versions``, 80 bytes)."""

    authority: Pubkey
    nonce: Hash
    lamports_per_signature: int


def decode_nonce_account(data: bytes, *, address: str = "") -> NonceAccount:
    """Decode nonce account data: version u32 | state u32 | authority | nonce | fee u64.

    Raises:
        InvalidNonceAccountError: If the data is not an initialized nonce account.
    """
    where = f"nonce account {address}".strip()
    try:
        r = bc.Reader(data)
        version = r.u32()
        if version not in (0, 1):
            raise InvalidNonceAccountError(
                f"{where} has unknown version {version}", metadata={"version": version}
            )
        if r.u32() != 1:
            raise InvalidNonceAccountError(f"{where} is not initialized")
        return NonceAccount(authority=r.pubkey(), nonce=r.hash(), lamports_per_signature=r.u64())
    except bc.TruncatedError:
        raise InvalidNonceAccountError(
            f"{where} data is truncated ({len(data)} bytes)", metadata={"length": len(data)}
        ) from None


def check_vote_account(*, address: Pubkey, owner: Pubkey | None) -> None:
    """Check a fetched vote account exists and belongs to the Vote program.

    Args:
        address: The requested vote account.
        owner: Its owner as fetched, or None when the account does not exist.

    Raises:
        VoteAccountNotFoundError: Missing or not owned by the Vote program (delegating
            to anything else fails on chain).
    """
    if owner != VOTE_PROGRAM:
        raise VoteAccountNotFoundError(vote_account=str(address))
