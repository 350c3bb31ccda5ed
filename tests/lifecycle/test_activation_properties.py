"""Property: for random stake histories, what ListStakeAccounts reports (the core's
warmup/cooldown and Withdraw math) is what the stake program itself does.

Six accounts of one wallet are given activation and deactivation epochs spread over
four epochs (once per module). Each example then writes random StakeHistory entries
for those four epochs with ``localnet_setStakeHistory`` and asks the program, by
simulating instructions against the very accounts:

- Withdraw: the amount ListStakeAccounts calls withdrawable passes and one lamport
  more fails (for a closable account: the whole balance passes, and the largest
  partial withdrawal is the balance less the rent-exempt reserve). That pins the
  stake still effective while cooling down to the lamport.
- Merge into an initialized account of the wallet: succeeds for inactive and
  just-activating stake, fails with MergeMismatch for fully active stake and with
  MergeTransientStake for stake that is part active and part (de)activating. That
  checks the activation state reported.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from agentstaking.v1 import staking_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.core import (
    STAKE_ERRORS,
    SeedPurpose,
    StakeHistoryEntry,
    seed_from_entropy,
    stake_account_address,
    stake_initialize,
    stake_merge,
    stake_withdraw,
    system_create_account_with_seed,
)
from service.core.programs import STAKE_ACCOUNT_SIZE, STAKE_PROGRAM

from .conftest import SOL, Lifecycle

RENT = 2_282_880
ACTIVE = staking_pb2.STAKE_ACCOUNT_STATE_ACTIVE


@dataclass
class Accounts:
    wallet: Keypair
    first_epoch: int
    initialized: str
    original: dict[int, StakeHistoryEntry]


async def _stake(lc: Lifecycle, wallet: Keypair, sol: int) -> str:
    response = await lc.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()), amount_lamports=sol * SOL
        )
    )
    await lc.execute(response.transaction, wallet)
    return response.stake_account


async def _unstake(lc: Lifecycle, wallet: Keypair, stake: str) -> None:
    response = await lc.staking.BuildUnstakeTransaction(
        staking_pb2.BuildUnstakeTransactionRequest(wallet=str(wallet.pubkey()), stake_account=stake)
    )
    await lc.execute(response.transaction, wallet)


def _signed(wallet: Keypair, instruction: Instruction) -> str:
    # Any blockhash: the simulation replaces it.
    message = MessageV0.try_compile(wallet.pubkey(), [instruction], [], Hash.default())
    return base64.b64encode(bytes(VersionedTransaction(message, [wallet]))).decode()


@pytest.fixture(scope="module")
async def accounts(lifecycle: Lifecycle) -> AsyncIterator[Accounts]:
    lc = lifecycle
    wallet = await lc.wallet(200)
    start = await lc.epoch()
    await lc.service_sees(start)
    # An initialized, never delegated account: the merge probe's destination.
    seed = seed_from_entropy(
        purpose=SeedPurpose.STAKE, wallet=wallet.pubkey(), entropy=secrets.token_bytes(16)
    )
    initialized = stake_account_address(base=wallet.pubkey(), seed=seed)
    latest = await lc.call("getLatestBlockhash", {"commitment": "processed"})
    message = MessageV0.try_compile(
        wallet.pubkey(),
        [
            system_create_account_with_seed(
                payer=wallet.pubkey(),
                new_account=initialized,
                base=wallet.pubkey(),
                seed=seed,
                lamports=RENT + 2 * SOL,
                space=STAKE_ACCOUNT_SIZE,
                owner=STAKE_PROGRAM,
            ),
            stake_initialize(
                stake_account=initialized, staker=wallet.pubkey(), withdrawer=wallet.pubkey()
            ),
        ],
        [],
        Hash.from_string(latest["value"]["blockhash"]),
    )
    await lc.call(
        "sendTransaction",
        base64.b64encode(bytes(VersionedTransaction(message, [wallet]))).decode(),
        {"encoding": "base64"},
    )
    # Activation (A) and deactivation (D) epochs, relative to `start`:
    # P A0 D1, Q A0 D3, R A0 D0, S A1 D2, T A2 (never deactivated).
    p, q, r = [await _stake(lc, wallet, n) for n in (7, 11, 5)]
    await _unstake(lc, wallet, r)
    await lc.advance_epochs(1)
    s = await _stake(lc, wallet, 4)
    await _unstake(lc, wallet, p)
    await lc.advance_epochs(1)
    await _unstake(lc, wallet, s)
    await _stake(lc, wallet, 6)
    await lc.advance_epochs(1)
    await _unstake(lc, wallet, q)
    await lc.advance_epochs(1)
    history = await lc.stake_history()
    original = {e: history[e] for e in range(start, start + 4)}
    yield Accounts(
        wallet=wallet, first_epoch=start, initialized=str(initialized), original=original
    )
    # Later tests expect the bank's own history.
    await lc.set_stake_history(original)


amounts = st.one_of(
    st.just(0),
    st.integers(min_value=1, max_value=10 * SOL),
    st.integers(min_value=10 * SOL, max_value=10**17),
)
# A real entry's activating (deactivating) stake includes that of every account in
# warmup (cooldown), these six among them: 0, or at least all their stake. (Below
# that, an account's share of the cluster's warmup exceeds 1 and the program's u64
# arithmetic wraps around; no chain can produce such a history.)
OURS = 40 * SOL
in_transit = amounts.map(lambda x: x + OURS if x else 0)
entries = st.builds(
    StakeHistoryEntry, effective=amounts, activating=in_transit, deactivating=in_transit
)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(history=st.lists(entries, min_size=4, max_size=4))
async def test_positions_match_the_stake_program(
    lifecycle: Lifecycle, accounts: Accounts, history: list[StakeHistoryEntry]
) -> None:
    lc = lifecycle
    wallet = accounts.wallet
    await lc.set_stake_history({accounts.first_epoch + i: entry for i, entry in enumerate(history)})
    listed = (
        await lc.staking.ListStakeAccounts(
            staking_pb2.ListStakeAccountsRequest(wallet=str(wallet.pubkey()))
        )
    ).stake_accounts
    assert len(listed) == 6
    probes: list[tuple[str, Instruction, set[str | None]]] = []

    def withdraw(account: staking_pb2.StakeAccount, lamports: int, passes: bool) -> None:
        instruction = stake_withdraw(
            stake_account=Pubkey.from_string(account.address),
            destination=wallet.pubkey(),
            withdrawer=wallet.pubkey(),
            lamports=lamports,
        )
        expected: set[str | None] = {None} if passes else {"InsufficientFunds"}
        probes.append((f"{account.address} withdraw {lamports}", instruction, expected))

    for account in listed:
        balance = account.balance_lamports
        assert balance == (
            account.rent_exempt_reserve_lamports
            + account.active_lamports
            + account.activating_lamports
            + account.deactivating_lamports
            + account.inactive_lamports
        )
        if account.withdrawable_lamports == balance:  # closable: everything, or keep rent
            withdraw(account, balance, True)
            withdraw(account, balance - RENT, True)
            withdraw(account, balance - RENT + 1, False)
        else:
            withdraw(account, balance, False)
            if account.withdrawable_lamports:
                withdraw(account, account.withdrawable_lamports, True)
            withdraw(account, account.withdrawable_lamports + 1, False)
        if account.address == accounts.initialized:
            continue
        transient = account.deactivating_lamports > 0 or (
            account.activating_lamports > 0 and account.active_lamports > 0
        )
        if transient:
            expected: set[str | None] = {"MergeTransientStake"}
        elif account.state == ACTIVE:
            expected = {"MergeMismatch"}
        else:  # inactive, or activating with nothing active yet
            expected = {None}
        merge = stake_merge(
            destination=Pubkey.from_string(accounts.initialized),
            source=Pubkey.from_string(account.address),
            staker=wallet.pubkey(),
        )
        probes.append((f"{account.address} merge ({account.state})", merge, expected))

    answers = await lc.batch(
        [
            (
                "simulateTransaction",
                [_signed(wallet, ix), {"encoding": "base64", "replaceRecentBlockhash": True}],
            )
            for _, ix, _ in probes
        ]
    )
    for (label, _, expected), answer in zip(probes, answers, strict=True):
        err = answer["result"]["value"]["err"]
        outcome: str | None = None
        if err is not None:
            _, inner = err["InstructionError"]
            outcome = (
                STAKE_ERRORS[inner["Custom"]].name
                if isinstance(inner, dict) and "Custom" in inner
                else str(inner)
            )
        assert outcome in expected, (label, outcome, history)
