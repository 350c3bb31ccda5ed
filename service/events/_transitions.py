"""Which events a change of the chain makes: pure functions of (what was, what is).

The producer remembers, per watched wallet, the state of each stake account it last
saw and, per validator, its delinquency and commission; each round it reads the
chain again and these functions say what happened in between. They read no clock
(``now`` is handed in) and do no I/O.

Stake accounts (states as ListStakeAccounts computes them from the delegation and
the StakeHistory sysvar):

- to ACTIVE: ``stake.activated`` (fully active);
- to DEACTIVATING: ``stake.deactivating``;
- to INACTIVE after a delegation: ``stake.withdrawable`` (fully inactive), preceded by
  ``stake.deactivating`` when the account was not seen deactivating (it cooled down
  between two reads, or was deactivated in its activation epoch and is inactive at
  once);
- an account first seen for a wallet already watched counts as coming from nothing
  (a stake created and activated between two reads still makes ``stake.activated``);
  for a wallet seen for the first time, only what changed since it was registered
  (its delegation started or ended at or after the registration epoch) makes events:
  the rest is the baseline.

Each event's dedupe key names the account, its delegation (activation and
deactivation epochs) and the type: the same change is recorded once, however many
producers (a takeover) or rounds see it.

Rewards: once an epoch's inflation rewards are final, ``stake.rewards_credited`` for
every watched stake account paid a reward, if its wallet was watched when it was
paid (registered in that epoch or before); keyed by account and epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from service.chain import VoteAccountInfo
from service.core.positions import AccountState, StakeView
from service.core.yields import InflationReward
from service.events._model import (
    EventType,
    NewEvent,
    RewardsPayload,
    StakePayload,
    ValidatorPayload,
)

_DELEGATED: Final = (AccountState.ACTIVATING, AccountState.ACTIVE, AccountState.DEACTIVATING)


@dataclass(frozen=True, kw_only=True)
class StakeRecord:
    """What the producer remembers of a stake account."""

    stake_account: str
    wallet: str
    state: AccountState
    vote_account: str
    activation_epoch: int | None
    deactivation_epoch: int | None

    @property
    def delegated(self) -> bool:
        """Its stake counts for its validator (validator events concern it)."""
        return self.state in _DELEGATED and bool(self.vote_account)


@dataclass(frozen=True, kw_only=True)
class ValidatorRecord:
    """What the producer remembers of a validator."""

    vote_account: str
    delinquent: bool
    commission: int
    changes: int
    """Changes seen so far (part of the dedupe keys of its events)."""


@dataclass(frozen=True, kw_only=True)
class StakeChanges:
    """The outcome of one wallet's read."""

    events: tuple[NewEvent, ...]
    records: tuple[StakeRecord, ...]
    """Every current account, as it now is."""
    gone: tuple[str, ...]
    """Accounts remembered that no longer exist (closed, merged away)."""


def record_of(view: StakeView, wallet: str) -> StakeRecord:
    return StakeRecord(
        stake_account=str(view.address),
        wallet=wallet,
        state=view.state,
        vote_account=str(view.voter) if view.voter is not None else "",
        activation_epoch=view.activation_epoch,
        deactivation_epoch=view.deactivation_epoch,
    )


def _payload(view: StakeView, epoch: int) -> StakePayload:
    return StakePayload(
        stake_account=str(view.address),
        vote_account=str(view.voter) if view.voter is not None else "",
        state=view.state,
        epoch=epoch,
        lamports=view.lamports,
        delegated_lamports=view.delegated_lamports,
        active_lamports=view.active_lamports,
        activating_lamports=view.activating_lamports,
        deactivating_lamports=view.deactivating_lamports,
        inactive_lamports=view.inactive_lamports,
        withdrawable_lamports=view.withdrawable_lamports,
        activation_epoch=view.activation_epoch,
        deactivation_epoch=view.deactivation_epoch,
    )


def _types_reached(previous: AccountState | None, view: StakeView) -> list[EventType]:
    """The stake events of going from ``previous`` (None: nothing) to ``view.state``."""
    state = view.state
    if state is AccountState.ACTIVE:
        return [EventType.STAKE_ACTIVATED]
    if state is AccountState.DEACTIVATING:
        return [EventType.STAKE_DEACTIVATING]
    if state is AccountState.INACTIVE and view.deactivation_epoch is not None:
        if previous is AccountState.DEACTIVATING:
            return [EventType.STAKE_WITHDRAWABLE]
        return [EventType.STAKE_DEACTIVATING, EventType.STAKE_WITHDRAWABLE]
    return []


def stake_changes(
    wallet: str,
    views: Sequence[StakeView],
    remembered: Mapping[str, StakeRecord],
    *,
    epoch: int,
    now: float,
    baselined: bool,
    registered_epoch: int | None,
    trace_context: str = "",
) -> StakeChanges:
    """The events of ``wallet``'s stake accounts since they were ``remembered``.

    Args:
        views: Its stake accounts now (ListStakeAccounts' views).
        remembered: The records of its accounts at the last read, by address.
        epoch: The current epoch.
        now: Unix seconds, the events' occurred_time.
        baselined: The wallet was read before (else this read is its baseline).
        registered_epoch: The epoch it was registered in (None: unknown, every
            account is baseline on the first read).
    """
    events: list[NewEvent] = []
    records: list[StakeRecord] = []
    for view in views:
        record = record_of(view, wallet)
        records.append(record)
        before = remembered.get(record.stake_account)
        if before is not None:
            if before.state is record.state and (
                before.activation_epoch,
                before.deactivation_epoch,
            ) == (record.activation_epoch, record.deactivation_epoch):
                continue
            same_delegation = before.activation_epoch == record.activation_epoch
            previous = before.state if same_delegation else None
            if previous is record.state:
                continue
            types = _types_reached(previous, view)
        elif baselined or _since_registration(record, registered_epoch):
            types = _types_reached(None, view)
        else:
            types = []  # the baseline
        for event_type in types:
            events.append(
                NewEvent(
                    type=event_type,
                    payload=_payload(view, epoch),
                    occurred_time=now,
                    wallet=wallet,
                    dedupe_key=(
                        f"{event_type}:{record.stake_account}:"
                        f"{record.activation_epoch}:{record.deactivation_epoch}"
                    ),
                    trace_context=trace_context,
                )
            )
    current = {r.stake_account for r in records}
    gone = tuple(sorted(a for a in remembered if a not in current))
    return StakeChanges(events=tuple(events), records=tuple(records), gone=gone)


def _since_registration(record: StakeRecord, registered_epoch: int | None) -> bool:
    if registered_epoch is None:
        return False
    return any(
        epoch is not None and epoch >= registered_epoch
        for epoch in (record.activation_epoch, record.deactivation_epoch)
    )


@dataclass(frozen=True, kw_only=True)
class ValidatorChanges:
    events: tuple[NewEvent, ...]
    records: tuple[ValidatorRecord, ...]
    """The validators whose record changed (new ones included)."""


def validator_changes(
    delegations: Iterable[StakeRecord],
    validators: Mapping[str, VoteAccountInfo],
    remembered: Mapping[str, ValidatorRecord],
    *,
    epoch: int,
    now: float,
    trace_context: str = "",
) -> ValidatorChanges:
    """The validator events for the wallets delegated to a validator that changed.

    Args:
        delegations: The watched stake accounts (only delegated ones matter).
        validators: The cluster's vote accounts now (getVoteAccounts).
        remembered: What was known of each validator, by vote account.
    """
    by_validator: dict[str, dict[str, str]] = {}
    for record in sorted(delegations, key=lambda r: r.stake_account):
        if record.delegated:
            # One event per wallet and validator change: its first account names it.
            by_validator.setdefault(record.vote_account, {}).setdefault(
                record.wallet, record.stake_account
            )
    events: list[NewEvent] = []
    records: list[ValidatorRecord] = []
    for vote_account in sorted(by_validator):
        info = validators.get(vote_account)
        if info is None:
            continue  # not in getVoteAccounts (unstaked and delinquent): nothing known
        before = remembered.get(vote_account)
        if before is None:
            records.append(
                ValidatorRecord(
                    vote_account=vote_account,
                    delinquent=info.delinquent,
                    commission=info.commission,
                    changes=0,
                )
            )
            continue
        types: list[EventType] = []
        if info.delinquent != before.delinquent:
            types.append(
                EventType.VALIDATOR_DELINQUENT if info.delinquent else EventType.VALIDATOR_RECOVERED
            )
        if info.commission != before.commission:
            types.append(EventType.VALIDATOR_COMMISSION_CHANGED)
        if not types:
            continue
        changes = before.changes + 1
        records.append(
            ValidatorRecord(
                vote_account=vote_account,
                delinquent=info.delinquent,
                commission=info.commission,
                changes=changes,
            )
        )
        for wallet, stake_account in sorted(by_validator[vote_account].items()):
            for event_type in types:
                events.append(
                    NewEvent(
                        type=event_type,
                        payload=ValidatorPayload(
                            vote_account=vote_account,
                            stake_account=stake_account,
                            delinquent=info.delinquent,
                            commission_percent=info.commission,
                            previous_commission_percent=before.commission,
                            epoch=epoch,
                        ),
                        occurred_time=now,
                        wallet=wallet,
                        dedupe_key=f"{event_type}:{vote_account}:{changes}:{wallet}",
                        trace_context=trace_context,
                    )
                )
    return ValidatorChanges(events=tuple(events), records=tuple(records))


def rewards_events(
    records: Iterable[StakeRecord],
    rewards: Mapping[str, InflationReward | None],
    registered: Mapping[str, int | None],
    *,
    epoch: int,
    now: float,
    trace_context: str = "",
) -> list[NewEvent]:
    """``stake.rewards_credited`` for the accounts paid a reward for ``epoch``.

    Args:
        records: The watched stake accounts.
        rewards: getInflationReward's answer for ``epoch``, by account (None: none).
        registered: Each wallet's registration epoch (None: unknown, not reported).
    """
    events: list[NewEvent] = []
    for record in sorted(records, key=lambda r: r.stake_account):
        reward = rewards.get(record.stake_account)
        since = registered.get(record.wallet)
        if reward is None or reward.amount <= 0 or since is None or since > epoch:
            continue
        events.append(
            NewEvent(
                type=EventType.STAKE_REWARDS_CREDITED,
                payload=RewardsPayload(
                    stake_account=record.stake_account,
                    epoch=epoch,
                    amount_lamports=reward.amount,
                    post_balance_lamports=reward.post_balance,
                    commission_percent=reward.commission,
                    effective_slot=reward.effective_slot,
                ),
                occurred_time=now,
                wallet=record.wallet,
                dedupe_key=f"{EventType.STAKE_REWARDS_CREDITED}:{record.stake_account}:{epoch}",
                trace_context=trace_context,
            )
        )
    return events
