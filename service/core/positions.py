"""A wallet's stake positions: what each account holds, what it may do next, when.

Pure: the chain shell fetches the accounts, the Clock and the StakeHistory sysvar and
passes them in. Amounts follow the API's identity
``lamports == reserve + active + activating + deactivating + inactive`` (the reserve
as recorded in the account), and what is withdrawable is the stake program's own
Withdraw rule (:func:`service.core.activation.withdraw_limit`), evaluated with the
wallet as potential lockup custodian.

When an account is warming up or cooling down, the epoch at which it settles is
*projected*: the cluster is assumed to go on from its last recorded StakeHistory entry
(with at least this account's own stake in transit) with no new (de)activations, each
epoch moving 9% of its effective stake out of warmup and out of cooldown. That is an
estimate; the real cluster-wide limit depends on what everyone else does.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from solders.pubkey import Pubkey

from service.core._validate import check_lamports
from service.core.accounts import Delegation, Lockup, StakeAccount, StakeStateKind
from service.core.activation import (
    NEW_RATE_ACTIVATION_EPOCH,
    STAKE_PROGRAM_MATH,
    TOWER_WARMUP_COOLDOWN_RATE_BPS,
    DelegationLike,
    StakeHistoryEntry,
    WarmupCooldownMath,
    stake_activation,
    withdraw_limit,
)
from service.core.errors import InvalidStakeAccountError
from service.core.programs import U64_MAX

# How far ahead a warmup or cooldown is projected before giving up on an estimate.
MAX_PROJECTED_EPOCHS: Final = 32


class AccountState(enum.Enum):
    """Activation state of a stake account (``StakeAccountState`` in the API)."""

    INITIALIZED = "initialized"  # never delegated
    ACTIVATING = "activating"
    ACTIVE = "active"
    DEACTIVATING = "deactivating"
    INACTIVE = "inactive"  # delegated once, fully cooled down (or deactivated at once)


@dataclass(frozen=True, kw_only=True)
class FetchedStakeAccount:
    """A stake account as read from the chain: address, balance, decoded state."""

    address: Pubkey
    lamports: int
    account: StakeAccount

    def __post_init__(self) -> None:
        check_lamports(self.lamports, field="lamports")
        if self.account.meta is None:
            raise InvalidStakeAccountError(
                f"stake account {self.address} is {self.account.state.name.lower()}",
                metadata={"stake_account": str(self.address)},
            )

    @property
    def staker(self) -> Pubkey:
        assert self.account.meta is not None
        return self.account.meta.authorized.staker

    @property
    def withdrawer(self) -> Pubkey:
        assert self.account.meta is not None
        return self.account.meta.authorized.withdrawer

    @property
    def lockup(self) -> Lockup:
        assert self.account.meta is not None
        return self.account.meta.lockup

    @property
    def delegation(self) -> Delegation | None:
        return self.account.delegation


@dataclass(frozen=True, kw_only=True)
class StakeView:
    """One stake account at an epoch, as ListStakeAccounts reports it.

    Attributes:
        withdrawable_lamports: The largest Withdraw that succeeds now: the whole
            balance when the account may be closed, else ``max_partial_lamports``;
            0 while a lockup is in force that the wallet cannot override.
        can_close: A withdrawal of the whole balance succeeds now.
        custodian_signs: A lockup is in force but the wallet is its custodian, so a
            Withdraw must name the wallet as custodian.
        next_state: Where a warming or cooling account goes; None when stable.
        next_state_epoch: The (projected) epoch at whose start it gets there.
    """

    fetched: FetchedStakeAccount
    state: AccountState
    delegated_lamports: int
    active_lamports: int
    activating_lamports: int
    deactivating_lamports: int
    inactive_lamports: int
    rent_exempt_reserve_lamports: int
    withdrawable_lamports: int
    max_partial_lamports: int
    can_close: bool
    lockup_in_force: bool
    custodian_signs: bool
    next_state: AccountState | None
    next_state_epoch: int | None

    @property
    def address(self) -> Pubkey:
        return self.fetched.address

    @property
    def lamports(self) -> int:
        return self.fetched.lamports

    @property
    def voter(self) -> Pubkey | None:
        d = self.fetched.delegation
        return d.voter if d is not None else None

    @property
    def activation_epoch(self) -> int | None:
        d = self.fetched.delegation
        return d.activation_epoch if d is not None else None

    @property
    def deactivation_epoch(self) -> int | None:
        d = self.fetched.delegation
        if d is None or d.deactivation_epoch == U64_MAX:
            return None
        return d.deactivation_epoch


@dataclass(frozen=True, kw_only=True)
class StakeTotals:
    """Sums over a wallet's stake accounts."""

    balance_lamports: int = 0
    delegated_lamports: int = 0
    active_lamports: int = 0
    activating_lamports: int = 0
    deactivating_lamports: int = 0
    inactive_lamports: int = 0
    withdrawable_lamports: int = 0


def stake_totals(views: Iterable[StakeView]) -> StakeTotals:
    """Add up the views' lamport columns."""
    fields = dict.fromkeys(
        (
            "balance_lamports",
            "delegated_lamports",
            "active_lamports",
            "activating_lamports",
            "deactivating_lamports",
            "inactive_lamports",
            "withdrawable_lamports",
        ),
        0,
    )
    for v in views:
        fields["balance_lamports"] += v.lamports
        fields["delegated_lamports"] += v.delegated_lamports
        fields["active_lamports"] += v.active_lamports
        fields["activating_lamports"] += v.activating_lamports
        fields["deactivating_lamports"] += v.deactivating_lamports
        fields["inactive_lamports"] += v.inactive_lamports
        fields["withdrawable_lamports"] += v.withdrawable_lamports
    return StakeTotals(**fields)


def settling_epoch(
    delegation: DelegationLike,
    epoch: int,
    history: Mapping[int, StakeHistoryEntry],
    *,
    max_epochs: int = MAX_PROJECTED_EPOCHS,
    new_rate_activation_epoch: int | None = NEW_RATE_ACTIVATION_EPOCH,
    arithmetic: WarmupCooldownMath = STAKE_PROGRAM_MATH,
) -> int | None:
    """The first epoch after ``epoch`` at which the delegation is neither activating nor
    deactivating, projecting future StakeHistory entries from the last recorded one.

    Returns:
        ``epoch`` itself when it is already settled; None when the projection does
        not settle within ``max_epochs`` (no useful estimate).
    """

    def status(target: int, entries: Mapping[int, StakeHistoryEntry]) -> StakeHistoryEntry:
        return stake_activation(
            delegation,
            target,
            entries,
            new_rate_activation_epoch=new_rate_activation_epoch,
            arithmetic=arithmetic,
        )

    now = status(epoch, history)
    if not now.activating and not now.deactivating:
        return epoch
    projected = dict(history)
    template = history.get(epoch - 1) if epoch > 0 else None
    if template is not None:
        entry = StakeHistoryEntry(
            effective=template.effective,
            activating=max(template.activating, now.activating),
            deactivating=max(template.deactivating, now.deactivating),
        )
        for e in range(epoch, epoch + max_epochs):
            projected.setdefault(e, entry)
            allowance = entry.effective * TOWER_WARMUP_COOLDOWN_RATE_BPS // 10_000
            warm = min(entry.activating, allowance)
            cool = min(entry.deactivating, allowance)
            entry = StakeHistoryEntry(
                effective=max(entry.effective + warm - cool, 0),
                activating=entry.activating - warm,
                deactivating=entry.deactivating - cool,
            )
    for target in range(epoch + 1, epoch + max_epochs + 1):
        later = status(target, projected)
        if not later.activating and not later.deactivating:
            return target
    return None


def view_stake_account(
    fetched: FetchedStakeAccount,
    *,
    wallet: Pubkey,
    epoch: int,
    unix_timestamp: int,
    history: Mapping[int, StakeHistoryEntry],
    rent_exempt_reserve: int,
) -> StakeView:
    """Classify a stake account at ``epoch`` and break its balance down.

    Args:
        fetched: The account (Initialized or Stake).
        wallet: Whose view it is: a lockup whose custodian is the wallet does not
            stop the wallet's withdrawals.
        epoch: Current epoch (Clock sysvar).
        unix_timestamp: Current cluster time (Clock sysvar), for lockups.
        history: StakeHistory sysvar entries.
        rent_exempt_reserve: The Rent sysvar's minimum for 200 bytes (what Withdraw
            keeps back).
    """
    account = fetched.account
    meta = account.meta
    assert meta is not None  # FetchedStakeAccount guarantees it
    limit = withdraw_limit(
        account,
        lamports=fetched.lamports,
        rent_exempt_reserve=rent_exempt_reserve,
        epoch=epoch,
        unix_timestamp=unix_timestamp,
        history=history,
        custodian=wallet,
    )
    lockup_in_force = meta.lockup.in_force(epoch=epoch, unix_timestamp=unix_timestamp)
    delegation = account.delegation
    reserve = meta.rent_exempt_reserve
    if delegation is None:
        state = AccountState.INITIALIZED
        delegated = active = activating = deactivating = 0
        next_state, next_epoch = None, None
    else:
        status = stake_activation(delegation, epoch, history)
        delegated = delegation.stake
        activating = status.activating
        deactivating = status.deactivating
        # While cooling down, effective stake includes the deactivating part.
        active = status.effective - status.deactivating
        if deactivating:
            state, next_state = AccountState.DEACTIVATING, AccountState.INACTIVE
        elif activating:
            state, next_state = AccountState.ACTIVATING, AccountState.ACTIVE
        elif active:
            state, next_state = AccountState.ACTIVE, None
        else:
            state, next_state = AccountState.INACTIVE, None
        next_epoch = None
        if next_state is not None:
            settled = settling_epoch(delegation, epoch, history)
            next_epoch = settled if settled is not None and settled > epoch else None
    staked = active + activating + deactivating
    inactive = max(fetched.lamports - reserve - staked, 0)
    return StakeView(
        fetched=fetched,
        state=state,
        delegated_lamports=delegated,
        active_lamports=active,
        activating_lamports=activating,
        deactivating_lamports=deactivating,
        inactive_lamports=inactive,
        rent_exempt_reserve_lamports=reserve,
        withdrawable_lamports=limit.withdrawable_lamports,
        max_partial_lamports=limit.max_partial_lamports,
        can_close=limit.can_close,
        lockup_in_force=lockup_in_force,
        custodian_signs=lockup_in_force and not limit.lockup_in_force,
        next_state=next_state,
        next_state_epoch=next_epoch,
    )


def is_listable(account: StakeAccount) -> bool:
    """Whether a decoded stake account has authorities (Initialized or Stake)."""
    return account.state in (StakeStateKind.INITIALIZED, StakeStateKind.STAKE)


def seconds_until_epoch(
    target_epoch: int, *, epoch: int, slot_index: int, slots_in_epoch: int, slot_seconds: float
) -> float:
    """Estimated seconds from now until ``target_epoch`` starts (0 when it has started),
    assuming every later epoch has ``slots_in_epoch`` slots of ``slot_seconds``."""
    if target_epoch <= epoch:
        return 0.0
    slots = (slots_in_epoch - slot_index) + (target_epoch - epoch - 1) * slots_in_epoch
    return max(slots, 0) * slot_seconds
