"""LiteSVM helpers for chain-execution tests: a real runtime, in process."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from solders import system_program as sp
from solders.clock import Clock
from solders.epoch_schedule import EpochSchedule
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from service.core import (
    Delegation,
    PreparedTransaction,
    StakeHistoryEntry,
    StakeStateKind,
    decode_nonce_account,
    decode_stake_account,
    next_stake_history_entry,
    to_solders_stake_history,
)
from service.core.programs import (
    NONCE_ACCOUNT_SIZE,
    STAKE_PROGRAM,
    SYSVAR_CLOCK,
    SYSVAR_RENT,
    U64_MAX,
    VOTE_ACCOUNT_SIZE,
    VOTE_PROGRAM,
)

GENESIS_UNIX_TIMESTAMP = 1_700_000_000
SLOT_SECONDS = 0.4  # only to derive a plausible unix_timestamp from a slot
SCHEDULE = EpochSchedule.without_warmup()


def set_epoch(svm: LiteSVM, epoch: int, slot_in_epoch: int = 10) -> Clock:
    """Move the clock to a consistent (slot, epoch, timestamp) inside ``epoch``.

    LiteSVM's own clock starts inconsistent and ``warp_to_slot`` keeps the epoch.
    """
    first = SCHEDULE.get_first_slot_in_epoch(epoch)
    slot = first + slot_in_epoch
    clock = Clock(
        slot=slot,
        epoch_start_timestamp=GENESIS_UNIX_TIMESTAMP + int(first * SLOT_SECONDS),
        epoch=epoch,
        leader_schedule_epoch=epoch + 1,
        unix_timestamp=GENESIS_UNIX_TIMESTAMP + int(slot * SLOT_SECONDS),
    )
    svm.set_clock(clock)
    return clock


def new_svm() -> LiteSVM:
    svm = LiteSVM()
    svm.set_epoch_schedule(SCHEDULE)
    set_epoch(svm, 0)
    return svm


def ok(result: object) -> TransactionMetadata:
    """The metadata of a successful transaction; fail the test with logs otherwise."""
    if isinstance(result, FailedTransactionMetadata):
        logs = "\n".join(result.meta().logs())
        raise AssertionError(f"transaction failed: {result.err()}\n{logs}")
    assert isinstance(result, TransactionMetadata)
    return result


def failed(result: object) -> FailedTransactionMetadata:
    assert isinstance(result, FailedTransactionMetadata), "transaction unexpectedly succeeded"
    return result


def send(svm: LiteSVM, instructions: Sequence[Instruction], signers: Sequence[Keypair]) -> object:
    """Compile, sign with ``signers`` (the first pays) and send; return the raw result."""
    msg = MessageV0.try_compile(signers[0].pubkey(), instructions, [], svm.latest_blockhash())
    result = svm.send_transaction(VersionedTransaction(msg, list(signers)))
    # A fresh blockhash per transaction: identical instructions may be sent again.
    svm.expire_blockhash()
    return result


def funded_keypair(svm: LiteSVM, lamports: int = 100 * 10**9) -> Keypair:
    kp = Keypair()
    ok(svm.airdrop(kp.pubkey(), lamports))
    return kp


def create_vote_account(svm: LiteSVM, payer: Keypair, commission: int = 5) -> Pubkey:
    """A real vote account: System create_account + Vote InitializeAccount."""
    vote, node = Keypair(), Keypair()
    rent = svm.minimum_balance_for_rent_exemption(VOTE_ACCOUNT_SIZE)
    create = sp.create_account(
        sp.CreateAccountParams(
            from_pubkey=payer.pubkey(),
            to_pubkey=vote.pubkey(),
            lamports=rent,
            space=VOTE_ACCOUNT_SIZE,
            owner=VOTE_PROGRAM,
        )
    )
    node_key = bytes(node.pubkey())
    init = Instruction(
        VOTE_PROGRAM,
        struct.pack("<I", 0) + node_key + node_key + node_key + bytes([commission]),
        [
            AccountMeta(vote.pubkey(), is_signer=False, is_writable=True),
            AccountMeta(SYSVAR_RENT, is_signer=False, is_writable=False),
            AccountMeta(SYSVAR_CLOCK, is_signer=False, is_writable=False),
            AccountMeta(node.pubkey(), is_signer=True, is_writable=False),
        ],
    )
    ok(send(svm, [create, init], [payer, vote, node]))
    return vote.pubkey()


def create_nonce_account(svm: LiteSVM, payer: Keypair, authority: Pubkey) -> Pubkey:
    """An initialized durable nonce account; expires the blockhash so it can advance."""
    nonce = Keypair()
    rent = svm.minimum_balance_for_rent_exemption(NONCE_ACCOUNT_SIZE)
    ixs = sp.create_nonce_account(payer.pubkey(), nonce.pubkey(), authority, rent)
    ok(send(svm, list(ixs), [payer, nonce]))
    return nonce.pubkey()


def stored_nonce(svm: LiteSVM, nonce_account: Pubkey) -> Hash:
    account = svm.get_account(nonce_account)
    assert account is not None
    return decode_nonce_account(bytes(account.data)).nonce


def sign_prepared(
    prepared: PreparedTransaction, signers: Iterable[Keypair]
) -> VersionedTransaction:
    """Sign as an agent would: sign the returned message bytes with each required
    signer and put each signature in its slot of the returned wire transaction."""
    by_key = {kp.pubkey(): kp for kp in signers}
    tx = VersionedTransaction.from_bytes(prepared.transaction)
    signatures = [by_key[key].sign_message(prepared.message) for key in prepared.required_signers]
    return VersionedTransaction.populate(tx.message, signatures)


def balance(svm: LiteSVM, key: Pubkey) -> int:
    return svm.get_balance(key) or 0


@dataclass
class Cluster:
    """Drives epochs the way the bank does: at each boundary, record the ending
    epoch's StakeHistory entry from every delegation, then move the clock."""

    svm: LiteSVM
    bootstrap_lamports: int = 10**15
    history: dict[int, StakeHistoryEntry] = field(default_factory=dict)
    epoch: int = 0

    def delegations(self) -> list[Delegation]:
        found = [Delegation(stake=self.bootstrap_lamports, activation_epoch=U64_MAX)]
        for _, account in self.svm.get_program_accounts(STAKE_PROGRAM):
            state = decode_stake_account(bytes(account.data))
            if state.state is StakeStateKind.STAKE and state.delegation is not None:
                found.append(state.delegation)
        return found

    def advance(self, epochs: int = 1) -> None:
        for _ in range(epochs):
            self.history[self.epoch] = next_stake_history_entry(
                self.delegations(), self.epoch, self.history
            )
            self.epoch += 1
        self.svm.set_stake_history(to_solders_stake_history(self.history, current_epoch=self.epoch))
        set_epoch(self.svm, self.epoch)
        self.svm.expire_blockhash()
