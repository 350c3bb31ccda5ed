"""SPL stake pools, pure: the StakePool and ValidatorList accounts, the pool's
program-derived addresses, and the pool-token arithmetic of deposits and withdrawals.

Layouts follow the stake-pool program's ``state.rs`` (borsh, little-endian): the
``StakePool`` struct field by field, ``Option<Pubkey>`` as a u8 tag then the key,
``FutureEpoch<Fee>`` as a u8 tag (0 none, 1 one epoch, 2 two epochs) then the fee,
``Fee`` as ``denominator`` then ``numerator``; the ``ValidatorList`` as a header
(account type u8, max validators u32), a u32 length and 73-byte entries. The
arithmetic follows the program's processor: rounding is the program's, so the
pool tokens and lamports quoted here are the ones the program mints and pays.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from solders.pubkey import Pubkey

from service.core import _bincode as bc
from service.core._validate import check_pubkey, check_range, check_u64
from service.core.accounts import Lockup
from service.core.errors import DomainError, ErrorKind
from service.core.tokens import Mint

AUTHORITY_WITHDRAW: Final = b"withdraw"
AUTHORITY_DEPOSIT: Final = b"deposit"
TRANSIENT_STAKE_SEED_PREFIX: Final = b"transient"
MINIMUM_ACTIVE_STAKE: Final = 1_000_000
"""Lamports of stake every validator stake account of a pool keeps at least."""
VALIDATOR_STAKE_INFO_SIZE: Final = 73
_VALIDATOR_LIST_HEADER: Final = 1 + 4 + 4  # account type, max validators, vec length


class AccountType(enum.IntEnum):
    """The first byte of every account the stake-pool program owns."""

    UNINITIALIZED = 0
    STAKE_POOL = 1
    VALIDATOR_LIST = 2


class ValidatorStatus(enum.IntEnum):
    """``StakeStatus`` of a validator in the list; only ACTIVE takes deposits and
    pays withdrawals."""

    ACTIVE = 0
    DEACTIVATING_TRANSIENT = 1
    READY_FOR_REMOVAL = 2
    DEACTIVATING_VALIDATOR = 3
    DEACTIVATING_ALL = 4


class InvalidStakePoolError(DomainError):
    """Account data is not a stake pool (or validator list) this service can read."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "INVALID_STAKE_POOL"
    default_hint = "The configured address is not an SPL stake pool; the operator must fix it."


@dataclass(frozen=True, kw_only=True)
class Fee:
    """A fee as a fraction ``numerator / denominator``; 0 when the denominator is 0."""

    denominator: int = 0
    numerator: int = 0

    def __post_init__(self) -> None:
        check_u64(self.denominator, field="fee.denominator")
        check_u64(self.numerator, field="fee.numerator")

    def apply(self, amount: int) -> int:
        """The fee on ``amount``, rounded up (``Fee::apply``)."""
        if self.denominator == 0:
            return 0
        return -(-amount * self.numerator // self.denominator)

    @property
    def fraction(self) -> float:
        return self.numerator / self.denominator if self.denominator else 0.0


@dataclass(frozen=True, kw_only=True)
class FutureFee:
    """A fee that takes effect after ``epochs`` epoch boundaries (1 or 2)."""

    fee: Fee
    epochs: int

    def __post_init__(self) -> None:
        check_range(self.epochs, field="epochs", low=1, high=2)


@dataclass(frozen=True, kw_only=True)
class StakePool:
    """The StakePool account, field for field."""

    manager: Pubkey
    staker: Pubkey
    stake_deposit_authority: Pubkey
    stake_withdraw_bump_seed: int
    validator_list: Pubkey
    reserve_stake: Pubkey
    pool_mint: Pubkey
    manager_fee_account: Pubkey
    token_program_id: Pubkey
    total_lamports: int
    pool_token_supply: int
    last_update_epoch: int
    lockup: Lockup = field(default_factory=Lockup)
    epoch_fee: Fee = field(default_factory=Fee)
    next_epoch_fee: FutureFee | None = None
    preferred_deposit_validator: Pubkey | None = None
    preferred_withdraw_validator: Pubkey | None = None
    stake_deposit_fee: Fee = field(default_factory=Fee)
    stake_withdrawal_fee: Fee = field(default_factory=Fee)
    next_stake_withdrawal_fee: FutureFee | None = None
    stake_referral_fee: int = 0
    sol_deposit_authority: Pubkey | None = None
    sol_deposit_fee: Fee = field(default_factory=Fee)
    sol_referral_fee: int = 0
    sol_withdraw_authority: Pubkey | None = None
    sol_withdrawal_fee: Fee = field(default_factory=Fee)
    next_sol_withdrawal_fee: FutureFee | None = None
    last_epoch_pool_token_supply: int = 0
    last_epoch_total_lamports: int = 0

    def __post_init__(self) -> None:
        for name in (
            "manager",
            "staker",
            "stake_deposit_authority",
            "validator_list",
            "reserve_stake",
            "pool_mint",
            "manager_fee_account",
            "token_program_id",
        ):
            check_pubkey(getattr(self, name), field=name)
        for name in (
            "total_lamports",
            "pool_token_supply",
            "last_update_epoch",
            "last_epoch_pool_token_supply",
            "last_epoch_total_lamports",
        ):
            check_u64(getattr(self, name), field=name)
        check_range(
            self.stake_withdraw_bump_seed, field="stake_withdraw_bump_seed", low=0, high=255
        )
        check_range(self.stake_referral_fee, field="stake_referral_fee", low=0, high=255)
        check_range(self.sol_referral_fee, field="sol_referral_fee", low=0, high=255)

    # --- the program's arithmetic ---------------------------------------------------

    def pool_tokens_for_deposit(self, lamports: int) -> int:
        """Pool tokens a deposit of ``lamports`` is worth (``calc_pool_tokens_for_deposit``,
        rounded down); one token per lamport in an empty pool."""
        if self.total_lamports == 0 or self.pool_token_supply == 0:
            return lamports
        return lamports * self.pool_token_supply // self.total_lamports

    def lamports_for_pool_tokens(self, pool_tokens: int) -> int:
        """Lamports ``pool_tokens`` are worth (``calc_lamports_withdraw_amount``, rounded
        down)."""
        numerator = pool_tokens * self.total_lamports
        if self.pool_token_supply == 0 or numerator < self.pool_token_supply:
            return 0
        return numerator // self.pool_token_supply

    @property
    def lamports_per_pool_token(self) -> int:
        """The value of one pool token, rounded up (``get_lamports_per_pool_token``)."""
        if self.pool_token_supply == 0:
            return 0
        return -(-self.total_lamports // self.pool_token_supply)


@dataclass(frozen=True, kw_only=True)
class ValidatorStakeInfo:
    """One validator of a pool (an entry of the ValidatorList)."""

    vote_account: Pubkey
    active_stake_lamports: int = 0
    transient_stake_lamports: int = 0
    last_update_epoch: int = 0
    transient_seed_suffix: int = 0
    validator_seed_suffix: int = 0
    status: ValidatorStatus = ValidatorStatus.ACTIVE
    unused: int = 0

    def __post_init__(self) -> None:
        check_pubkey(self.vote_account, field="vote_account")
        for name in (
            "active_stake_lamports",
            "transient_stake_lamports",
            "last_update_epoch",
            "transient_seed_suffix",
        ):
            check_u64(getattr(self, name), field=name)
        check_range(
            self.validator_seed_suffix, field="validator_seed_suffix", low=0, high=2**32 - 1
        )
        check_range(self.unused, field="unused", low=0, high=2**32 - 1)


@dataclass(frozen=True, kw_only=True)
class ValidatorList:
    """The ValidatorList account: the pool's validators, at most ``max_validators``."""

    max_validators: int
    validators: tuple[ValidatorStakeInfo, ...] = ()

    def find(self, vote_account: Pubkey) -> ValidatorStakeInfo | None:
        return next((v for v in self.validators if v.vote_account == vote_account), None)


# --- decoding and encoding ------------------------------------------------------------


def _fee(r: bc.Reader) -> Fee:
    denominator, numerator = r.u64(), r.u64()
    return Fee(denominator=denominator, numerator=numerator)


def _option_key(r: bc.Reader) -> Pubkey | None:
    tag = r.u8()
    if tag == 0:
        return None
    if tag != 1:
        raise ValueError(f"invalid Option tag {tag}")
    return r.pubkey()


def _future_fee(r: bc.Reader) -> FutureFee | None:
    tag = r.u8()
    if tag == 0:
        return None
    if tag not in (1, 2):
        raise ValueError(f"invalid FutureEpoch tag {tag}")
    return FutureFee(fee=_fee(r), epochs=tag)


def decode_stake_pool(data: bytes, *, address: str = "") -> StakePool:
    """Decode a StakePool account (trailing bytes are ignored, as by the program).

    Raises:
        InvalidStakePoolError: Not a stake pool, or malformed.
    """
    what = address or "the account"
    if not data or data[0] != AccountType.STAKE_POOL:
        raise InvalidStakePoolError(
            f"{what} is not a stake pool account",
            metadata={"stake_pool": address} if address else None,
        )
    r = bc.Reader(data, 1)
    try:
        return StakePool(
            manager=r.pubkey(),
            staker=r.pubkey(),
            stake_deposit_authority=r.pubkey(),
            stake_withdraw_bump_seed=r.u8(),
            validator_list=r.pubkey(),
            reserve_stake=r.pubkey(),
            pool_mint=r.pubkey(),
            manager_fee_account=r.pubkey(),
            token_program_id=r.pubkey(),
            total_lamports=r.u64(),
            pool_token_supply=r.u64(),
            last_update_epoch=r.u64(),
            lockup=Lockup(unix_timestamp=r.i64(), epoch=r.u64(), custodian=r.pubkey()),
            epoch_fee=_fee(r),
            next_epoch_fee=_future_fee(r),
            preferred_deposit_validator=_option_key(r),
            preferred_withdraw_validator=_option_key(r),
            stake_deposit_fee=_fee(r),
            stake_withdrawal_fee=_fee(r),
            next_stake_withdrawal_fee=_future_fee(r),
            stake_referral_fee=r.u8(),
            sol_deposit_authority=_option_key(r),
            sol_deposit_fee=_fee(r),
            sol_referral_fee=r.u8(),
            sol_withdraw_authority=_option_key(r),
            sol_withdrawal_fee=_fee(r),
            next_sol_withdrawal_fee=_future_fee(r),
            last_epoch_pool_token_supply=r.u64(),
            last_epoch_total_lamports=r.u64(),
        )
    except (bc.TruncatedError, ValueError) as exc:
        raise InvalidStakePoolError(
            f"{what} holds a malformed stake pool: {exc}",
            metadata={"stake_pool": address} if address else None,
        ) from None


def _encode_fee(fee: Fee) -> bytes:
    return bc.u64(fee.denominator) + bc.u64(fee.numerator)


def _encode_option_key(key: Pubkey | None) -> bytes:
    return b"\0" if key is None else b"\1" + bytes(key)


def _encode_future_fee(future: FutureFee | None) -> bytes:
    return b"\0" if future is None else bc.u8(future.epochs) + _encode_fee(future.fee)


def encode_stake_pool(pool: StakePool, *, size: int = 0) -> bytes:
    """Borsh bytes of a StakePool account, zero-padded to ``size`` when larger."""
    data = (
        bc.u8(AccountType.STAKE_POOL)
        + bytes(pool.manager)
        + bytes(pool.staker)
        + bytes(pool.stake_deposit_authority)
        + bc.u8(pool.stake_withdraw_bump_seed)
        + bytes(pool.validator_list)
        + bytes(pool.reserve_stake)
        + bytes(pool.pool_mint)
        + bytes(pool.manager_fee_account)
        + bytes(pool.token_program_id)
        + bc.u64(pool.total_lamports)
        + bc.u64(pool.pool_token_supply)
        + bc.u64(pool.last_update_epoch)
        + bc.i64(pool.lockup.unix_timestamp)
        + bc.u64(pool.lockup.epoch)
        + bytes(pool.lockup.custodian)
        + _encode_fee(pool.epoch_fee)
        + _encode_future_fee(pool.next_epoch_fee)
        + _encode_option_key(pool.preferred_deposit_validator)
        + _encode_option_key(pool.preferred_withdraw_validator)
        + _encode_fee(pool.stake_deposit_fee)
        + _encode_fee(pool.stake_withdrawal_fee)
        + _encode_future_fee(pool.next_stake_withdrawal_fee)
        + bc.u8(pool.stake_referral_fee)
        + _encode_option_key(pool.sol_deposit_authority)
        + _encode_fee(pool.sol_deposit_fee)
        + bc.u8(pool.sol_referral_fee)
        + _encode_option_key(pool.sol_withdraw_authority)
        + _encode_fee(pool.sol_withdrawal_fee)
        + _encode_future_fee(pool.next_sol_withdrawal_fee)
        + bc.u64(pool.last_epoch_pool_token_supply)
        + bc.u64(pool.last_epoch_total_lamports)
    )
    return data.ljust(size, b"\0")


def decode_validator_list(data: bytes, *, address: str = "") -> ValidatorList:
    """Decode a ValidatorList account.

    Raises:
        InvalidStakePoolError: Not a validator list, or malformed.
    """
    what = address or "the account"
    if len(data) < _VALIDATOR_LIST_HEADER or data[0] != AccountType.VALIDATOR_LIST:
        raise InvalidStakePoolError(f"{what} is not a stake pool validator list")
    r = bc.Reader(data, 1)
    max_validators, count = r.u32(), r.u32()
    if count * VALIDATOR_STAKE_INFO_SIZE > r.remaining():
        raise InvalidStakePoolError(
            f"{what} lists {count} validators but holds room for "
            f"{r.remaining() // VALIDATOR_STAKE_INFO_SIZE}"
        )
    validators = []
    for _ in range(count):
        active, transient, epoch, transient_seed = r.u64(), r.u64(), r.u64(), r.u64()
        unused, validator_seed, status = r.u32(), r.u32(), r.u8()
        vote = r.pubkey()
        try:
            parsed_status = ValidatorStatus(status)
        except ValueError:
            raise InvalidStakePoolError(
                f"{what} holds an unknown validator status {status}"
            ) from None
        validators.append(
            ValidatorStakeInfo(
                vote_account=vote,
                active_stake_lamports=active,
                transient_stake_lamports=transient,
                last_update_epoch=epoch,
                transient_seed_suffix=transient_seed,
                validator_seed_suffix=validator_seed,
                status=parsed_status,
                unused=unused,
            )
        )
    return ValidatorList(max_validators=max_validators, validators=tuple(validators))


def encode_validator_list(validator_list: ValidatorList) -> bytes:
    """Bytes of a ValidatorList account sized for ``max_validators`` entries."""
    entries = b"".join(
        bc.u64(v.active_stake_lamports)
        + bc.u64(v.transient_stake_lamports)
        + bc.u64(v.last_update_epoch)
        + bc.u64(v.transient_seed_suffix)
        + bc.u32(v.unused)
        + bc.u32(v.validator_seed_suffix)
        + bc.u8(v.status)
        + bytes(v.vote_account)
        for v in validator_list.validators
    )
    header = (
        bc.u8(AccountType.VALIDATOR_LIST)
        + bc.u32(validator_list.max_validators)
        + bc.u32(len(validator_list.validators))
    )
    size = _VALIDATOR_LIST_HEADER + VALIDATOR_STAKE_INFO_SIZE * max(
        validator_list.max_validators, len(validator_list.validators)
    )
    return (header + entries).ljust(size, b"\0")


# --- program-derived addresses --------------------------------------------------------


def withdraw_authority(
    *, program_id: Pubkey, stake_pool: Pubkey, bump: int | None = None
) -> Pubkey:
    """The pool's withdraw authority: it owns the reserve, the validator stake accounts
    and the mint authority. With ``bump`` (the pool's stored seed) it is derived exactly
    as the program checks it."""
    if bump is None:
        address, _ = Pubkey.find_program_address(
            [bytes(stake_pool), AUTHORITY_WITHDRAW], program_id
        )
        return address
    return Pubkey.create_program_address(
        [bytes(stake_pool), AUTHORITY_WITHDRAW, bytes([bump])], program_id
    )


def default_deposit_authority(*, program_id: Pubkey, stake_pool: Pubkey) -> Pubkey:
    """The program-derived stake deposit authority a pool has unless its manager set
    another (which must then sign every stake deposit)."""
    address, _ = Pubkey.find_program_address([bytes(stake_pool), AUTHORITY_DEPOSIT], program_id)
    return address


def validator_stake_address(
    *, program_id: Pubkey, stake_pool: Pubkey, vote_account: Pubkey, seed_suffix: int = 0
) -> Pubkey:
    """The pool's stake account delegated to ``vote_account``."""
    seed = seed_suffix.to_bytes(4, "little") if seed_suffix else b""
    address, _ = Pubkey.find_program_address(
        [bytes(vote_account), bytes(stake_pool), seed], program_id
    )
    return address


def transient_stake_address(
    *, program_id: Pubkey, stake_pool: Pubkey, vote_account: Pubkey, seed: int
) -> Pubkey:
    """The pool's transient (activating or deactivating) stake account for a validator."""
    address, _ = Pubkey.find_program_address(
        [
            TRANSIENT_STAKE_SEED_PREFIX,
            bytes(vote_account),
            bytes(stake_pool),
            seed.to_bytes(8, "little"),
        ],
        program_id,
    )
    return address


# --- quotes: what a deposit mints and a withdrawal pays -------------------------------


@dataclass(frozen=True, kw_only=True)
class DepositQuote:
    """The pool tokens a deposit mints.

    Attributes:
        pool_tokens: Minted to the depositor (the program's ``pool_tokens_user``;
            the slippage bound applies to it).
        referral_pool_tokens: The referrer's share of the deposit fee.
        manager_fee_pool_tokens: What the pool manager keeps of the deposit fee.
    """

    pool_tokens: int
    referral_pool_tokens: int
    manager_fee_pool_tokens: int

    @property
    def fee_pool_tokens(self) -> int:
        return self.referral_pool_tokens + self.manager_fee_pool_tokens


@dataclass(frozen=True, kw_only=True)
class WithdrawQuote:
    """What burning ``pool_tokens`` pays.

    Attributes:
        pool_tokens: Taken from the holder (fee included).
        fee_pool_tokens: The withdrawal fee, transferred to the manager.
        lamports: Paid out for the rest (burnt).
    """

    pool_tokens: int
    fee_pool_tokens: int
    lamports: int


def _split_fee(fee: int, referral_percent: int) -> tuple[int, int]:
    referral = fee * referral_percent // 100
    return referral, fee - referral


def quote_deposit_sol(pool: StakePool, lamports: int) -> DepositQuote:
    """What DepositSol of ``lamports`` mints (``process_deposit_sol``)."""
    minted = pool.pool_tokens_for_deposit(lamports)
    fee = pool.sol_deposit_fee.apply(minted)
    referral, manager = _split_fee(fee, pool.sol_referral_fee)
    return DepositQuote(
        pool_tokens=minted - fee, referral_pool_tokens=referral, manager_fee_pool_tokens=manager
    )


def quote_deposit_stake(pool: StakePool, *, lamports: int, stake_lamports: int) -> DepositQuote:
    """What DepositStake of a stake account holding ``lamports`` (of which
    ``stake_lamports`` delegated) mints (``process_deposit_stake``): the delegated
    part pays the stake deposit fee, the rest (rent reserve, undelegated lamports) the
    SOL deposit fee."""
    minted = pool.pool_tokens_for_deposit(lamports)
    from_stake = pool.pool_tokens_for_deposit(stake_lamports)
    fee = pool.stake_deposit_fee.apply(from_stake) + pool.sol_deposit_fee.apply(minted - from_stake)
    referral, manager = _split_fee(fee, pool.stake_referral_fee)
    return DepositQuote(
        pool_tokens=minted - fee, referral_pool_tokens=referral, manager_fee_pool_tokens=manager
    )


def quote_withdraw(
    pool: StakePool, pool_tokens: int, *, fee: Fee, fee_exempt: bool = False
) -> WithdrawQuote:
    """What WithdrawSol or WithdrawStake of ``pool_tokens`` pays, with that path's fee
    (the manager's own fee account withdraws without a fee)."""
    charged = 0 if fee_exempt else fee.apply(pool_tokens)
    return WithdrawQuote(
        pool_tokens=pool_tokens,
        fee_pool_tokens=charged,
        lamports=pool.lamports_for_pool_tokens(pool_tokens - charged),
    )


def minimum_reserve_lamports(rent_exempt_reserve: int) -> int:
    """What the reserve stake account must keep (``minimum_reserve_lamports``)."""
    return rent_exempt_reserve


def minimum_stake_lamports(rent_exempt_reserve: int, minimum_delegation: int) -> int:
    """What a validator stake account must keep (``minimum_stake_lamports``)."""
    return rent_exempt_reserve + max(minimum_delegation, MINIMUM_ACTIVE_STAKE)


def estimated_apy(pool: StakePool, *, epochs_per_year: float) -> float | None:
    """Annual yield implied by the change of the pool token's value over the last
    epoch (the pool keeps the previous epoch's totals for exactly this); None when the
    pool has no previous epoch on record."""
    if not (
        pool.pool_token_supply
        and pool.total_lamports
        and pool.last_epoch_pool_token_supply
        and pool.last_epoch_total_lamports
    ):
        return None
    growth = (pool.total_lamports * pool.last_epoch_pool_token_supply) / (
        pool.pool_token_supply * pool.last_epoch_total_lamports
    )
    try:
        return float(growth**epochs_per_year - 1.0)
    except OverflowError:
        return None


def active_validators(validator_list: ValidatorList) -> Sequence[ValidatorStakeInfo]:
    """The validators that take deposits and pay withdrawals."""
    return [v for v in validator_list.validators if v.status is ValidatorStatus.ACTIVE]


@dataclass(frozen=True, kw_only=True)
class PoolSnapshot:
    """A stake pool as read from the chain in one request.

    Attributes:
        address: The StakePool account.
        program_id: The stake-pool program that owns it.
        pool: Its decoded state.
        mint: The pool token mint.
        reserve_lamports: Lamports in the reserve stake account.
        reserve_rent_exempt_lamports: What the reserve must keep (rent of a stake account).
        epoch: The cluster's epoch when read.
        validator_list: The pool's validators, when read.
    """

    address: Pubkey
    program_id: Pubkey
    pool: StakePool
    mint: Mint
    reserve_lamports: int
    reserve_rent_exempt_lamports: int
    epoch: int
    validator_list: ValidatorList | None = None

    def __post_init__(self) -> None:
        check_u64(self.reserve_lamports, field="reserve_lamports")
        check_u64(self.reserve_rent_exempt_lamports, field="reserve_rent_exempt_lamports")
        check_u64(self.epoch, field="epoch")

    @property
    def withdraw_authority(self) -> Pubkey:
        return withdraw_authority(
            program_id=self.program_id,
            stake_pool=self.address,
            bump=self.pool.stake_withdraw_bump_seed,
        )

    @property
    def default_deposit_authority(self) -> Pubkey:
        return default_deposit_authority(program_id=self.program_id, stake_pool=self.address)

    @property
    def stake_deposits_open(self) -> bool:
        """Stake deposits need no signature but the depositor's."""
        return self.pool.stake_deposit_authority == self.default_deposit_authority

    @property
    def up_to_date(self) -> bool:
        """Updated for the current epoch: deposits and withdrawals are possible."""
        return self.pool.last_update_epoch >= self.epoch

    @property
    def sol_withdrawable_lamports(self) -> int:
        """The largest WithdrawSol the reserve pays now."""
        return max(
            0,
            self.reserve_lamports - minimum_reserve_lamports(self.reserve_rent_exempt_lamports),
        )
