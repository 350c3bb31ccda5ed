"""Stake warmup/cooldown and the Withdraw limit, computed client-side.

A port (our own code) of ``Delegation::stake_activating_and_deactivating`` and
``stake_and_activating`` from the ``solana-stake-interface`` crate
(solana-program/stake, ``interface/src/state.rs``) and of the Withdraw rule in
``program/src/processor.rs``:

- Each epoch, a delegation's warmup (or cooldown) is its pro-rata share of the
  cluster allowance: ``account / cluster_activating * cluster_effective * rate``,
  read from the *previous* epoch's StakeHistory entry, at least 1 lamport.
- The BPF stake program uses the 9% rate from epoch 0
  (``PERPETUAL_NEW_WARMUP_COOLDOWN_RATE_EPOCH = Some(0)`` in ``program/src/lib.rs``),
  hence :data:`NEW_RATE_ACTIVATION_EPOCH` ``= 0``.
- Two arithmetics exist: stake program <= 5.0 (interface v2/v3, which the pinned
  solders 0.29.0 runtime ships) uses ``f64`` weights truncated to ``u64``; 5.1+
  (interface v4) uses exact ``u128`` integer basis points. They differ by at most
  a lamport now and then; :data:`STAKE_PROGRAM_MATH` is the runtime's, and a
  chain test pins it.

History semantics follow the ``StakeHistory`` sysvar as the program reads it at
``target_epoch``: only entries for epochs ``< target_epoch`` and at most 512
epochs back exist; a missing entry means "fully (de)activated".
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from solders.pubkey import Pubkey
from solders.stake_history import StakeHistory as SoldersStakeHistory
from solders.stake_history import StakeHistoryEntry as SoldersStakeHistoryEntry

from service.core import _bincode as bc
from service.core._validate import check_lamports, check_u64
from service.core.accounts import StakeAccount, StakeStateKind
from service.core.errors import InvalidStakeAccountError
from service.core.programs import U64_MAX

MAX_STAKE_HISTORY_ENTRIES: Final = 512
ORIGINAL_WARMUP_COOLDOWN_RATE_BPS: Final = 2_500
TOWER_WARMUP_COOLDOWN_RATE_BPS: Final = 900
_BPS: Final = 10_000
NEW_RATE_ACTIVATION_EPOCH: Final[int | None] = 0


class WarmupCooldownMath(enum.Enum):
    """Which stake-program arithmetic to reproduce."""

    FLOAT64 = "float64"
    """Program <= 5.0: ``(account as f64 / cluster as f64) * (effective as f64 * rate)``."""
    INTEGER_BPS = "integer_bps"
    """Program >= 5.1: ``account * effective * bps / (cluster * 10_000)`` in u128."""


STAKE_PROGRAM_MATH: Final = WarmupCooldownMath.FLOAT64


@dataclass(frozen=True, kw_only=True)
class StakeHistoryEntry:
    """Cluster-wide (or one delegation's) stake at an epoch.

    As in the real sysvar, ``effective`` includes stake that is deactivating.
    """

    effective: int = 0
    activating: int = 0
    deactivating: int = 0

    def __post_init__(self) -> None:
        check_u64(self.effective, field="effective")
        check_u64(self.activating, field="activating")
        check_u64(self.deactivating, field="deactivating")

    def __add__(self, other: StakeHistoryEntry) -> StakeHistoryEntry:
        # Saturating, like the runtime's sum over all delegations.
        return StakeHistoryEntry(
            effective=min(self.effective + other.effective, U64_MAX),
            activating=min(self.activating + other.activating, U64_MAX),
            deactivating=min(self.deactivating + other.deactivating, U64_MAX),
        )


# The status of one delegation has the same shape (``StakeActivationStatus`` upstream).
StakeActivation = StakeHistoryEntry


class DelegationLike(Protocol):
    """What the math reads from a delegation (``accounts.Delegation`` fits)."""

    @property
    def stake(self) -> int: ...
    @property
    def activation_epoch(self) -> int: ...
    @property
    def deactivation_epoch(self) -> int: ...


class _History:
    """The sysvar's view of a history at ``current_epoch``."""

    __slots__ = ("_current", "_entries")

    def __init__(self, entries: Mapping[int, StakeHistoryEntry], current_epoch: int) -> None:
        self._entries = entries
        self._current = current_epoch

    def get(self, epoch: int) -> StakeHistoryEntry | None:
        if epoch >= self._current or epoch < self._current - MAX_STAKE_HISTORY_ENTRIES:
            return None
        return self._entries.get(epoch)


def _rate_bps(epoch: int, new_rate_activation_epoch: int | None) -> int:
    if new_rate_activation_epoch is not None and epoch >= new_rate_activation_epoch:
        return TOWER_WARMUP_COOLDOWN_RATE_BPS
    return ORIGINAL_WARMUP_COOLDOWN_RATE_BPS


def _f64_to_u64(value: float) -> int:
    # Rust's saturating `as u64`: NaN and negatives become 0, truncation toward zero.
    if math.isnan(value) or value <= 0.0:
        return 0
    if value >= 18446744073709551616.0:
        return U64_MAX
    return int(value)


def _allowance(
    arith: WarmupCooldownMath,
    epoch: int,
    account_portion: int,
    cluster_portion: int,
    cluster_effective: int,
    new_rate_activation_epoch: int | None,
) -> int:
    """This account's share of the cluster's (de)activation allowance at ``epoch``."""
    bps = _rate_bps(epoch, new_rate_activation_epoch)
    if arith is WarmupCooldownMath.FLOAT64:
        # Each operand is rounded to f64 first, as `x as f64` does; Python's int/int
        # true division would round the exact quotient instead and differ above 2**53.
        rate = 0.09 if bps == TOWER_WARMUP_COOLDOWN_RATE_BPS else 0.25
        weight = float(account_portion) / float(cluster_portion)
        return _f64_to_u64(weight * (float(cluster_effective) * rate))
    if account_portion == 0 or cluster_portion == 0 or cluster_effective == 0:
        return 0
    # u128 saturation cannot trigger for u64 inputs times bps <= 2_500.
    delta = account_portion * cluster_effective * bps // (cluster_portion * _BPS)
    return min(delta, account_portion)


def _effective_and_activating(
    d: DelegationLike,
    target_epoch: int,
    history: _History,
    new_rate_activation_epoch: int | None,
    arith: WarmupCooldownMath,
) -> tuple[int, int]:
    delegated = d.stake
    if d.activation_epoch == U64_MAX:
        return delegated, 0  # bootstrap stake: effective from genesis
    if d.activation_epoch == d.deactivation_epoch:
        return 0, 0  # deactivated in its activation epoch: never counted
    if target_epoch == d.activation_epoch:
        return 0, delegated
    if target_epoch < d.activation_epoch:
        return 0, 0
    prev = history.get(d.activation_epoch)
    if prev is None:
        return delegated, 0  # fell out of history: long since active
    prev_epoch = d.activation_epoch
    effective = 0
    while True:
        epoch = prev_epoch + 1
        if prev.activating == 0:
            break  # nothing was warming up: the history says we are done
        step = _allowance(
            arith,
            epoch,
            delegated - effective,
            prev.activating,
            prev.effective,
            new_rate_activation_epoch,
        )
        effective += max(step, 1)  # at least a lamport, so warmup always ends
        if effective >= delegated:
            effective = delegated
            break
        if epoch >= target_epoch or epoch >= d.deactivation_epoch:
            break
        nxt = history.get(epoch)
        if nxt is None:
            break
        prev_epoch, prev = epoch, nxt
    return effective, delegated - effective


def stake_activation(
    delegation: DelegationLike,
    target_epoch: int,
    history: Mapping[int, StakeHistoryEntry],
    *,
    new_rate_activation_epoch: int | None = NEW_RATE_ACTIVATION_EPOCH,
    arithmetic: WarmupCooldownMath = STAKE_PROGRAM_MATH,
) -> StakeActivation:
    """Effective, activating and deactivating stake of a delegation at ``target_epoch``.

    Args:
        delegation: stake, activation_epoch, deactivation_epoch.
        target_epoch: The epoch to evaluate (the current epoch for "now").
        history: StakeHistory entries by epoch (the sysvar's content).
        new_rate_activation_epoch: Epoch from which the 9% rate applies; the stake
            program uses 0.
        arithmetic: The arithmetic to reproduce.

    Returns:
        The status; while deactivating, ``effective == deactivating`` (the stake still
        counts as effective until it has cooled down).
    """
    view = _History(history, target_epoch)
    effective, activating = _effective_and_activating(
        delegation, target_epoch, view, new_rate_activation_epoch, arithmetic
    )
    if target_epoch < delegation.deactivation_epoch:
        return StakeActivation(effective=effective, activating=activating)
    if target_epoch == delegation.deactivation_epoch:
        # Only what had become effective starts cooling down.
        return StakeActivation(effective=effective, deactivating=effective)
    prev = view.get(delegation.deactivation_epoch)
    if prev is None:
        return StakeActivation()  # fell out of history: long since inactive
    prev_epoch = delegation.deactivation_epoch
    remaining = effective
    while True:
        epoch = prev_epoch + 1
        if prev.deactivating == 0:
            break
        step = _allowance(
            arithmetic,
            epoch,
            remaining,
            prev.deactivating,
            prev.effective,
            new_rate_activation_epoch,
        )
        remaining = max(remaining - max(step, 1), 0)
        if remaining == 0 or epoch >= target_epoch:
            break
        nxt = view.get(epoch)
        if nxt is None:
            break
        prev_epoch, prev = epoch, nxt
    return StakeActivation(effective=remaining, deactivating=remaining)


def next_stake_history_entry(
    delegations: Iterable[DelegationLike],
    epoch: int,
    history: Mapping[int, StakeHistoryEntry],
    *,
    new_rate_activation_epoch: int | None = NEW_RATE_ACTIVATION_EPOCH,
    arithmetic: WarmupCooldownMath = STAKE_PROGRAM_MATH,
) -> StakeHistoryEntry:
    """The StakeHistory entry the bank records for ``epoch`` when that epoch ends:
    the sum of every delegation's status at ``epoch``, given the history so far
    (entries before ``epoch``).

    Include bootstrap delegations (``activation_epoch == U64_MAX``): without some
    effective stake the cluster allowance is zero and warmup crawls at 1 lamport
    per epoch.
    """
    total = StakeHistoryEntry()
    for d in delegations:
        total = total + stake_activation(
            d,
            epoch,
            history,
            new_rate_activation_epoch=new_rate_activation_epoch,
            arithmetic=arithmetic,
        )
    return total


def to_solders_stake_history(
    history: Mapping[int, StakeHistoryEntry], *, current_epoch: int | None = None
) -> SoldersStakeHistory:
    """The newest 512 entries as a ``solders`` StakeHistory (for ``set_stake_history``).

    NOTE: the on-chain reader (``StakeHistorySysvar``) finds an entry by its offset
    from ``current_epoch - 1`` and asserts the epoch it finds, so a sysvar with a gap,
    or whose newest entry is not the previous epoch, makes stake instructions panic.

    Args:
        history: Entries by epoch.
        current_epoch: When given, also require the newest entry to be for
            ``current_epoch - 1`` (or no entries at epoch 0).

    Raises:
        ValueError: The kept entries skip an epoch, or do not end at the previous epoch.
    """
    epochs = sorted(history)[-MAX_STAKE_HISTORY_ENTRIES:]
    for older, newer in itertools.pairwise(epochs):
        if newer != older + 1:
            raise ValueError(f"stake history skips from epoch {older} to {newer}")
    newest = epochs[-1] if epochs else None
    if current_epoch is not None and current_epoch > 0 and newest != current_epoch - 1:
        raise ValueError(f"stake history must end at epoch {current_epoch - 1}, ends at {newest}")
    out = SoldersStakeHistory()
    for epoch in epochs:
        e = history[epoch]
        out.add(epoch, SoldersStakeHistoryEntry(e.effective, e.activating, e.deactivating))
    return out


def decode_stake_history(data: bytes) -> dict[int, StakeHistoryEntry]:
    """Decode StakeHistory sysvar data: u64 count, then (epoch, effective, activating,
    deactivating) u64 quadruples, newest first."""
    r = bc.Reader(data)
    count = r.u64()
    if count * 32 > r.remaining():
        raise ValueError(f"stake history claims {count} entries, data holds fewer")
    out: dict[int, StakeHistoryEntry] = {}
    for _ in range(count):
        epoch = r.u64()
        out[epoch] = StakeHistoryEntry(effective=r.u64(), activating=r.u64(), deactivating=r.u64())
    return out


@dataclass(frozen=True, kw_only=True)
class WithdrawLimit:
    """What the stake program's Withdraw would allow right now.

    Attributes:
        lamports: The account balance.
        staked_lamports: Stake the program protects: the full delegation until the
            account is deactivated, then what is still effective (cooling down).
        reserve_lamports: Rent-exempt reserve a partial withdrawal must leave.
        withdrawable_lamports: The largest single Withdraw that succeeds: the whole
            balance when the account may be closed, else ``max_partial_lamports``.
        max_partial_lamports: The largest withdrawal that leaves the account open.
        can_close: A withdrawal of the whole balance (closing the account) succeeds.
        lockup_in_force: The lockup blocks any withdrawal (without the custodian).
    """

    lamports: int
    staked_lamports: int
    reserve_lamports: int
    withdrawable_lamports: int
    max_partial_lamports: int
    can_close: bool
    lockup_in_force: bool


def withdraw_limit(
    account: StakeAccount,
    *,
    lamports: int,
    rent_exempt_reserve: int,
    epoch: int,
    unix_timestamp: int,
    history: Mapping[int, StakeHistoryEntry],
    custodian: Pubkey | None = None,
    new_rate_activation_epoch: int | None = NEW_RATE_ACTIVATION_EPOCH,
    arithmetic: WarmupCooldownMath = STAKE_PROGRAM_MATH,
) -> WithdrawLimit:
    """Apply the stake program's Withdraw rule to an account at a clock.

    Args:
        account: The decoded stake state.
        lamports: The account's balance.
        rent_exempt_reserve: Rent-exempt minimum for the account's size (the program
            reads the Rent sysvar; ``meta.rent_exempt_reserve`` is ignored).
        epoch: Current epoch.
        unix_timestamp: Current cluster time (for the lockup).
        history: StakeHistory entries.
        custodian: The lockup custodian, if it will sign.
        new_rate_activation_epoch: As in :func:`stake_activation`.
        arithmetic: As in :func:`stake_activation`.

    Raises:
        InvalidStakeAccountError: For the RewardsPool state.
    """
    check_lamports(lamports, field="lamports")
    check_lamports(rent_exempt_reserve, field="rent_exempt_reserve")
    if account.state is StakeStateKind.REWARDS_POOL:
        raise InvalidStakeAccountError("a rewards pool account cannot be withdrawn from")
    staked = 0
    reserve = rent_exempt_reserve
    if account.state is StakeStateKind.UNINITIALIZED:
        reserve = 0
    elif account.delegation is not None:
        d = account.delegation
        if epoch >= d.deactivation_epoch:
            staked = stake_activation(
                d,
                epoch,
                history,
                new_rate_activation_epoch=new_rate_activation_epoch,
                arithmetic=arithmetic,
            ).effective
        else:
            # Not deactivated: the program protects the whole delegation, since
            # effective stake only grows during warmup.
            staked = d.stake
    locked = account.meta is not None and account.meta.lockup.in_force(
        epoch=epoch, unix_timestamp=unix_timestamp, custodian=custodian
    )
    max_partial = max(lamports - staked - reserve, 0)
    can_close = staked == 0 and not locked
    if locked:
        return WithdrawLimit(
            lamports=lamports,
            staked_lamports=staked,
            reserve_lamports=reserve,
            withdrawable_lamports=0,
            max_partial_lamports=0,
            can_close=False,
            lockup_in_force=True,
        )
    return WithdrawLimit(
        lamports=lamports,
        staked_lamports=staked,
        reserve_lamports=reserve,
        withdrawable_lamports=lamports if can_close else max_partial,
        max_partial_lamports=max_partial,
        can_close=can_close,
        lockup_in_force=False,
    )


class StakePhase(enum.Enum):
    """Where a stake account is in its life, at an epoch."""

    INACTIVE = "inactive"  # initialized, never delegated, or fully cooled down
    ACTIVATING = "activating"
    ACTIVE = "active"
    DEACTIVATING = "deactivating"


@dataclass(frozen=True, kw_only=True)
class StakePosition:
    """A stake account's lamports broken down for display (ListStakeAccounts).

    ``active + activating + deactivating + inactive == lamports``; inactive includes
    the rent-exempt reserve and anything not (or no longer) delegated.
    """

    phase: StakePhase
    lamports: int
    delegated_lamports: int
    active_lamports: int
    activating_lamports: int
    deactivating_lamports: int
    inactive_lamports: int
    withdraw: WithdrawLimit


def stake_position(
    account: StakeAccount,
    *,
    lamports: int,
    rent_exempt_reserve: int,
    epoch: int,
    unix_timestamp: int,
    history: Mapping[int, StakeHistoryEntry],
    new_rate_activation_epoch: int | None = NEW_RATE_ACTIVATION_EPOCH,
    arithmetic: WarmupCooldownMath = STAKE_PROGRAM_MATH,
) -> StakePosition:
    """Classify a stake account at ``epoch`` and break its balance down.

    Args are as for :func:`withdraw_limit`.
    """
    limit = withdraw_limit(
        account,
        lamports=lamports,
        rent_exempt_reserve=rent_exempt_reserve,
        epoch=epoch,
        unix_timestamp=unix_timestamp,
        history=history,
        new_rate_activation_epoch=new_rate_activation_epoch,
        arithmetic=arithmetic,
    )
    status = StakeActivation()
    delegated = 0
    if account.delegation is not None:
        delegated = account.delegation.stake
        status = stake_activation(
            account.delegation,
            epoch,
            history,
            new_rate_activation_epoch=new_rate_activation_epoch,
            arithmetic=arithmetic,
        )
    if status.deactivating:
        phase = StakePhase.DEACTIVATING
    elif status.activating:
        phase = StakePhase.ACTIVATING
    elif status.effective:
        phase = StakePhase.ACTIVE
    else:
        phase = StakePhase.INACTIVE
    # While cooling down, effective stake includes the deactivating part.
    active = status.effective - status.deactivating
    staked = active + status.activating + status.deactivating
    return StakePosition(
        phase=phase,
        lamports=lamports,
        delegated_lamports=delegated,
        active_lamports=active,
        activating_lamports=status.activating,
        deactivating_lamports=status.deactivating,
        inactive_lamports=max(lamports - staked, 0),
        withdraw=limit,
    )
