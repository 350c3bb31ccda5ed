"""Which events a change of the chain makes (pure: no chain, no database)."""

from __future__ import annotations

import pytest
from solders.pubkey import Pubkey

from service.chain import VoteAccountInfo
from service.core import (
    Authorized,
    Delegation,
    FetchedStakeAccount,
    Lockup,
    Meta,
    StakeAccount,
    StakeStateKind,
    StakeView,
)
from service.core.positions import AccountState
from service.core.programs import U64_MAX
from service.core.yields import InflationReward
from service.events import (
    EventType,
    RewardsPayload,
    StakeRecord,
    ValidatorRecord,
    rewards_events,
    stake_changes,
    validator_changes,
)

WALLET = str(Pubkey.new_unique())
VOTE = Pubkey.new_unique()
ACCOUNT = Pubkey.new_unique()
SOL = 10**9
ACTIVATING, ACTIVE, INACTIVE, COOLING = (
    AccountState.ACTIVATING,
    AccountState.ACTIVE,
    AccountState.INACTIVE,
    AccountState.DEACTIVATING,
)


def view(
    state: AccountState,
    *,
    activation: int = 10,
    deactivation: int | None = None,
    address: Pubkey = ACCOUNT,
) -> StakeView:
    meta = Meta(
        rent_exempt_reserve=2_282_880,
        authorized=Authorized(
            staker=Pubkey.from_string(WALLET), withdrawer=Pubkey.from_string(WALLET)
        ),
        lockup=Lockup(),
    )
    account = StakeAccount(
        state=StakeStateKind.STAKE,
        meta=meta,
        delegation=Delegation(
            voter=VOTE,
            stake=SOL,
            activation_epoch=activation,
            deactivation_epoch=U64_MAX if deactivation is None else deactivation,
        ),
    )
    fetched = FetchedStakeAccount(address=address, lamports=SOL + 2_282_880, account=account)
    active = SOL if state in (ACTIVE, COOLING) else 0
    return StakeView(
        fetched=fetched,
        state=state,
        delegated_lamports=SOL,
        active_lamports=active if state is ACTIVE else 0,
        activating_lamports=SOL if state is ACTIVATING else 0,
        deactivating_lamports=SOL if state is COOLING else 0,
        inactive_lamports=SOL if state is INACTIVE else 0,
        rent_exempt_reserve_lamports=2_282_880,
        withdrawable_lamports=SOL + 2_282_880 if state is INACTIVE else 0,
        max_partial_lamports=0,
        can_close=state is INACTIVE,
        lockup_in_force=False,
        custodian_signs=False,
        next_state=None,
        next_state_epoch=None,
    )


def record(
    state: AccountState, *, activation: int = 10, deactivation: int | None = None
) -> StakeRecord:
    return StakeRecord(
        stake_account=str(ACCOUNT),
        wallet=WALLET,
        state=state,
        vote_account=str(VOTE),
        activation_epoch=activation,
        deactivation_epoch=deactivation,
    )


BOTH = ["stake.deactivating", "stake.withdrawable"]


def types(before: StakeRecord | None, now: StakeView, **kwargs: object) -> list[str]:
    remembered = {} if before is None else {before.stake_account: before}
    options: dict[str, object] = {"baselined": True, "registered_epoch": 0}
    options.update(kwargs)
    changes = stake_changes(
        WALLET,
        [now],
        remembered,
        epoch=12,
        now=1.0,
        **options,  # type: ignore[arg-type]
    )
    return [e.type.value for e in changes.events]


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [
        (record(ACTIVATING), view(ACTIVATING), []),
        (record(ACTIVATING), view(ACTIVE), ["stake.activated"]),
        (record(ACTIVE), view(ACTIVE), []),
        (record(ACTIVE), view(COOLING, deactivation=12), ["stake.deactivating"]),
        (record(COOLING, deactivation=12), view(INACTIVE, deactivation=12), ["stake.withdrawable"]),
        # Cooled down between two reads: it did deactivate.
        (record(ACTIVE), view(INACTIVE, deactivation=12), BOTH),
        # Deactivated in its activation epoch: inactive at once.
        (record(ACTIVATING), view(INACTIVE, deactivation=10), BOTH),
        # Delegated again (a new delegation): from nothing.
        (record(INACTIVE, deactivation=11), view(ACTIVATING, activation=14), []),
        (record(INACTIVE, deactivation=11), view(ACTIVE, activation=14), ["stake.activated"]),
        # Seen for the first time, the wallet already followed: from nothing.
        (None, view(ACTIVATING), []),
        (None, view(ACTIVE), ["stake.activated"]),
        (None, view(INACTIVE, deactivation=11), BOTH),
    ],
)
def test_stake_transitions(before: StakeRecord | None, now: StakeView, expected: list[str]) -> None:
    assert types(before, now) == expected


def test_a_wallet_seen_first_is_a_baseline_except_what_changed_since_it_was_registered() -> None:
    # Active since before the registration: the baseline, no event.
    assert types(None, view(ACTIVE, activation=3), baselined=False, registered_epoch=10) == []
    # Delegated at or after the registration epoch: it changed since.
    assert types(None, view(ACTIVE, activation=10), baselined=False, registered_epoch=10) == [
        "stake.activated"
    ]
    assert types(
        None, view(COOLING, activation=3, deactivation=11), baselined=False, registered_epoch=10
    ) == ["stake.deactivating"]
    # Registered in an unknown epoch: everything is the baseline.
    assert types(None, view(ACTIVE, activation=10), baselined=False, registered_epoch=None) == []


def test_the_same_change_has_the_same_dedupe_key_and_gone_accounts_are_listed() -> None:
    first = stake_changes(
        WALLET,
        [view(ACTIVE)],
        {str(ACCOUNT): record(ACTIVATING)},
        epoch=12,
        now=1.0,
        baselined=True,
        registered_epoch=0,
    )
    again = stake_changes(
        WALLET,
        [view(ACTIVE)],
        {str(ACCOUNT): record(ACTIVATING)},
        epoch=13,
        now=2.0,
        baselined=True,
        registered_epoch=0,
    )
    assert [e.dedupe_key for e in first.events] == [e.dedupe_key for e in again.events]
    assert first.events[0].wallet == WALLET
    closed = stake_changes(
        WALLET,
        [],
        {str(ACCOUNT): record(INACTIVE, deactivation=11)},
        epoch=12,
        now=1.0,
        baselined=True,
        registered_epoch=0,
    )
    assert closed.gone == (str(ACCOUNT),) and not closed.events


def _validator(*, delinquent: bool = False, commission: int = 5) -> VoteAccountInfo:
    return VoteAccountInfo(
        vote_account=str(VOTE),
        node_pubkey=str(Pubkey.new_unique()),
        commission=commission,
        activated_stake=SOL,
        last_vote=1,
        root_slot=1,
        epoch_credits=(),
        delinquent=delinquent,
    )


def _known(
    *, delinquent: bool = False, commission: int = 5, changes: int = 0
) -> dict[str, ValidatorRecord]:
    return {
        str(VOTE): ValidatorRecord(
            vote_account=str(VOTE), delinquent=delinquent, commission=commission, changes=changes
        )
    }


def test_validator_changes_go_to_each_delegated_wallet_once() -> None:
    other_wallet = str(Pubkey.new_unique())
    delegations = [
        record(ACTIVE),
        StakeRecord(
            stake_account=str(Pubkey.new_unique()),
            wallet=other_wallet,
            state=COOLING,
            vote_account=str(VOTE),
            activation_epoch=1,
            deactivation_epoch=12,
        ),
        # Inactive: no longer delegated, hears nothing.
        StakeRecord(
            stake_account=str(Pubkey.new_unique()),
            wallet=str(Pubkey.new_unique()),
            state=INACTIVE,
            vote_account=str(VOTE),
            activation_epoch=1,
            deactivation_epoch=3,
        ),
    ]
    # First sight: the baseline.
    first = validator_changes(delegations, {str(VOTE): _validator()}, {}, epoch=12, now=1.0)
    assert not first.events and first.records[0].changes == 0
    changed = validator_changes(
        delegations,
        {str(VOTE): _validator(delinquent=True, commission=9)},
        _known(),
        epoch=12,
        now=1.0,
    )
    assert sorted((e.wallet, e.type) for e in changed.events) == sorted(
        [
            (WALLET, EventType.VALIDATOR_DELINQUENT),
            (WALLET, EventType.VALIDATOR_COMMISSION_CHANGED),
            (other_wallet, EventType.VALIDATOR_DELINQUENT),
            (other_wallet, EventType.VALIDATOR_COMMISSION_CHANGED),
        ]
    )
    assert changed.records[0].changes == 1
    commission = next(e for e in changed.events if e.type is EventType.VALIDATOR_COMMISSION_CHANGED)
    assert commission.payload.previous_commission_percent == 5  # type: ignore[union-attr]
    recovered = validator_changes(
        delegations,
        {str(VOTE): _validator(commission=9)},
        _known(delinquent=True, commission=9, changes=1),
        epoch=13,
        now=2.0,
    )
    assert {e.type for e in recovered.events} == {EventType.VALIDATOR_RECOVERED}
    # Dedupe keys differ per change, so a validator that fails twice is heard twice.
    assert not {e.dedupe_key for e in recovered.events} & {e.dedupe_key for e in changed.events}
    # Unknown to getVoteAccounts: nothing can be said.
    assert not validator_changes(delegations, {}, _known(), epoch=13, now=2.0).events


def test_rewards_are_reported_for_wallets_watched_when_they_were_paid() -> None:
    watched_since_before = record(ACTIVE)
    newcomer = StakeRecord(
        stake_account=str(Pubkey.new_unique()),
        wallet=str(Pubkey.new_unique()),
        state=ACTIVE,
        vote_account=str(VOTE),
        activation_epoch=1,
        deactivation_epoch=None,
    )
    unpaid = StakeRecord(
        stake_account=str(Pubkey.new_unique()),
        wallet=WALLET,
        state=ACTIVATING,
        vote_account=str(VOTE),
        activation_epoch=12,
        deactivation_epoch=None,
    )
    paid = InflationReward(epoch=11, amount=5000, post_balance=SOL + 5000, effective_slot=99)
    events = rewards_events(
        [watched_since_before, newcomer, unpaid],
        {watched_since_before.stake_account: paid, newcomer.stake_account: paid},
        {WALLET: 9, newcomer.wallet: 12},
        epoch=11,
        now=1.0,
    )
    [event] = events
    assert event.type is EventType.STAKE_REWARDS_CREDITED and event.wallet == WALLET
    assert isinstance(event.payload, RewardsPayload) and event.payload.amount_lamports == 5000
    assert event.dedupe_key == f"stake.rewards_credited:{ACCOUNT}:11"
