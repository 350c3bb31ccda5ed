"""Properties of split amounts.

Pure: the split plan accepts exactly the amounts that leave both parts their due
(the minimum delegation for staked accounts, the rent-exempt reserve otherwise), it
conserves lamports and stake, and when it refuses, the nearest amounts it names are
accepted and nothing accepted lies between them and the refused amount.

On the runtime: for accounts in each state (active, activating, inactive) the plan
accepts an amount exactly when the stake program does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction_metadata import SimulatedTransactionInfo

from service.core import (
    Authorized,
    Delegation,
    DomainError,
    FetchedStakeAccount,
    InsufficientLamportsError,
    InsufficientStakeError,
    Lockup,
    Meta,
    PreparedSplitTransaction,
    RecentBlockhash,
    SplitAmountError,
    SplitContext,
    SplitRequest,
    StakeAccount,
    StakeHistoryEntry,
    StakeStateKind,
    build_split_transaction,
    stake_deactivate,
)
from service.core.programs import U64_MAX
from tests.core._chain import (
    Cluster,
    create_vote_account,
    funded_keypair,
    new_svm,
    ok,
    send,
    sign_prepared,
)
from tests.core._harness import Harness

SOL = 10**9
RENT = 2_282_880
WALLET = Keypair().pubkey()
SOURCE = Keypair().pubkey()
VOTER = Keypair().pubkey()
LIFETIME = RecentBlockhash(blockhash=Hash.default(), last_valid_block_height=1)


def _account(*, stake: int, extra: int, delegated: bool, deactivated: bool) -> FetchedStakeAccount:
    meta = Meta(
        rent_exempt_reserve=RENT,
        authorized=Authorized(staker=WALLET, withdrawer=WALLET),
        lockup=Lockup(),
    )
    if not delegated:
        state = StakeAccount(state=StakeStateKind.INITIALIZED, meta=meta)
    else:
        state = StakeAccount(
            state=StakeStateKind.STAKE,
            meta=meta,
            delegation=Delegation(
                voter=VOTER,
                stake=stake,
                activation_epoch=0,
                deactivation_epoch=1 if deactivated else U64_MAX,
            ),
        )
    return FetchedStakeAccount(address=SOURCE, lamports=RENT + stake + extra, account=state)


def _split(
    account: FetchedStakeAccount, amount: int, minimum: int
) -> PreparedSplitTransaction | DomainError:
    """The plan, or the domain error it raised."""
    try:
        return build_split_transaction(
            SplitRequest(wallet=WALLET, stake_account=SOURCE, amount_lamports=amount, seed="s:p"),
            SplitContext(
                lifetime=LIFETIME,
                account=account,
                epoch=10,  # active (activated in 0), or inactive (deactivated in 1)
                history={e: StakeHistoryEntry(effective=10**18) for e in range(10)},
                rent_exempt_reserve_lamports=RENT,
                minimum_delegation_lamports=minimum,
            ),
        )
    except DomainError as exc:
        return exc


def _accepted(account: FetchedStakeAccount, amount: int, minimum: int) -> bool:
    return not isinstance(_split(account, amount, minimum), DomainError)


amounts = st.integers(min_value=1, max_value=12 * SOL)
stakes = st.integers(min_value=0, max_value=10 * SOL)


@settings(max_examples=300, deadline=None)
@given(
    stake=stakes,
    extra=st.integers(min_value=0, max_value=SOL),
    minimum=st.integers(min_value=1, max_value=3 * SOL),
    amount=amounts,
    delegated=st.booleans(),
    deactivated=st.booleans(),
)
def test_split_accepts_exactly_what_leaves_both_parts_their_due(
    stake: int, extra: int, minimum: int, amount: int, delegated: bool, deactivated: bool
) -> None:
    account = _account(stake=stake, extra=extra, delegated=delegated, deactivated=deactivated)
    staked = delegated and not deactivated and stake > 0
    # Staked: both parts keep the minimum; else all but the reserve may go.
    expected = minimum <= amount <= stake - minimum if staked else amount <= stake + extra
    result = _split(account, amount, minimum)
    if expected:
        assert isinstance(result, PreparedSplitTransaction), result
        # Lamports and stake are conserved; the wallet pre-funds the reserve.
        assert result.new_account_lamports + result.source_lamports == account.lamports + RENT
        assert result.new_account_lamports == RENT + amount
        moved = amount if staked else 0
        assert (result.stake_lamports, result.source_stake_lamports) == (
            moved,
            stake - moved if staked else 0,
        )
        assert result.prepared.fees.total_debit_lamports == RENT + 5_000
        return
    assert isinstance(result, SplitAmountError | InsufficientStakeError | InsufficientLamportsError)
    assert result.field == "amount_lamports"
    lower = result.metadata.get("nearest_lower_lamports")
    higher = result.metadata.get("nearest_higher_lamports")
    if lower is not None:
        below = int(lower)
        assert below < amount and _accepted(account, below, minimum)
        assert not _accepted(account, below + 1, minimum)
    if higher is not None:
        above = int(higher)
        assert above > amount and _accepted(account, above, minimum)
        assert not _accepted(account, above - 1, minimum)
    if lower is None and higher is None:
        # Nothing works: the account is too small to split at all.
        assert (staked and stake < 2 * minimum) or (not staked and stake + extra == 0)


@dataclass
class Runtime:
    """One runtime with an account in each state, shared by the examples (they only
    simulate, so nothing changes between them)."""

    harness: Harness
    accounts: dict[str, Pubkey]


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    svm = new_svm()
    funder = funded_keypair(svm, 1_000 * SOL)
    vote = create_vote_account(svm, funder)
    h = Harness(svm, vote, Cluster(svm), funded_keypair(svm, 100 * SOL))
    active, inactive = h.stake(5 * SOL), h.stake(5 * SOL)
    h.cluster.advance()
    ok(send(svm, [stake_deactivate(stake_account=inactive, staker=h.wallet.pubkey())], [h.wallet]))
    h.cluster.advance()
    activating = h.stake(5 * SOL)
    yield Runtime(h, {"active": active, "activating": activating, "inactive": inactive})


# Amounts around every boundary (minimum, stake - minimum, balance - reserve), and anywhere.
boundary = st.sampled_from([0, SOL, 4 * SOL, 5 * SOL]).flatmap(
    lambda base: st.integers(min_value=max(base - 2, 1), max_value=base + 2)
)


@settings(max_examples=60, deadline=None)
@given(state=st.sampled_from(["active", "activating", "inactive"]), amount=boundary | amounts)
def test_split_plan_accepts_exactly_what_the_stake_program_accepts(
    runtime: Runtime, state: str, amount: int
) -> None:
    h = runtime.harness
    address = runtime.accounts[state]
    wallet = h.wallet.pubkey()
    context = SplitContext(
        lifetime=h.lifetime(),
        account=h.account(address),
        epoch=h.svm.get_clock().epoch,
        history=h.cluster.history,
        rent_exempt_reserve_lamports=h.rent,
        minimum_delegation_lamports=SOL,
    )
    try:
        plan = build_split_transaction(
            SplitRequest(wallet=wallet, stake_account=address, amount_lamports=amount, seed="s:q"),
            context,
        )
    except (SplitAmountError, InsufficientStakeError, InsufficientLamportsError):
        accepted = False
    else:
        accepted = True
        signed = sign_prepared(plan.prepared, [h.wallet])
        assert isinstance(h.svm.simulate_transaction(signed), SimulatedTransactionInfo)
    assert h.program_accepts(h.raw_split(address, amount)) is accepted
