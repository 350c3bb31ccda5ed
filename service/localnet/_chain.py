"""A Solana cluster in one process: LiteSVM plus what a real cluster adds around it.

LiteSVM executes transactions with the real runtime and programs, but it has no
notion of time, blocks, commitment or stake history. `LocalnetChain` supplies
them: slots advance with wall time (one blockhash per slot, a window of
`MAX_PROCESSING_AGE` recent blockhashes), epochs roll over with a StakeHistory
entry computed from the stake accounts exactly as a bank does at an epoch
boundary, and every processed transaction is kept with its slot so statuses can
be answered at any commitment.

The class is synchronous and not thread-safe: the server calls it from one
worker thread only.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from solders.account import Account
from solders.clock import Clock
from solders.epoch_schedule import EpochSchedule
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0, MessageV1
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import (
    FailedTransactionMetadata,
    SimulatedTransactionInfo,
    TransactionMetadata,
)

from service.core import (
    Authorized,
    Delegation,
    InvalidNonceAccountError,
    InvalidStakeAccountError,
    Lockup,
    Meta,
    StakeAccount,
    StakeActivation,
    StakeHistoryEntry,
    StakeStateKind,
    decode_nonce_account,
    decode_stake_account,
    encode_stake_account,
    next_stake_history_entry,
    stake_activation,
    stake_get_minimum_delegation,
    to_solders_stake_history,
)
from service.core.inflation import InflationGovernor
from service.core.programs import (
    COMPUTE_BUDGET_PROGRAM,
    LAMPORTS_PER_SOL,
    STAKE_ACCOUNT_SIZE,
    STAKE_PROGRAM,
    SYSTEM_PROGRAM,
    SYSVAR_CLOCK,
    SYSVAR_RENT,
    U64_MAX,
    VOTE_ACCOUNT_SIZE,
    VOTE_PROGRAM,
)

from ._rewards import RewardsBank
from ._vote_history import epoch_credits
from ._vote_state import VoteState, decode_vote_state, encode_vote_state

# Agave's MAX_PROCESSING_AGE: a blockhash is usable for this many blocks.
MAX_PROCESSING_AGE = 150
# Agave's PrioritizationFeeCache keeps the fees of this many recent blocks.
PRIORITIZATION_FEE_BLOCKS = 150
# Slots a vote may lag before the validator counts as delinquent (Agave's default).
DELINQUENT_SLOT_DISTANCE = 128
# How far back getSignatureStatuses looks without searchTransactionHistory
# (the status cache of a real node keeps roughly this many slots).
STATUS_CACHE_SLOTS = 300
# Upper bound of transactions kept for getTransaction/getSignatureStatuses.
HISTORY_LIMIT = 200_000


class ChainError(Exception):
    """A request the chain refuses, with the JSON-RPC error it maps to."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, kw_only=True)
class LocalnetConfig:
    """How the local cluster looks and behaves."""

    validators: int = 5
    """Number of validator vote accounts created at genesis (one of them delinquent)."""
    seed: int = 0
    """Seed for every genesis key and validator profile: same seed, same cluster."""
    slot_duration: float = 0.4
    """Seconds per slot; 0 freezes wall time (each landed transaction then makes a slot)."""
    slots_per_epoch: int = 432_000
    """Slots per epoch (no warmup epochs)."""
    finalized_depth: int = 32
    """Slots behind the tip at which a slot counts as finalized."""
    airdrop_max_lamports: int = 1_000_000 * LAMPORTS_PER_SOL
    """Largest single requestAirdrop."""
    inflation: InflationGovernor = field(default_factory=InflationGovernor)
    """Inflation schedule, active from genesis (default: the SDK's genesis default)."""


@dataclass(frozen=True, kw_only=True)
class Validator:
    identity: Pubkey
    vote_account: Pubkey
    commission: int
    self_stake_account: Pubkey
    self_stake: int
    credit_rate: float
    delinquent: bool


@dataclass(frozen=True, kw_only=True)
class TxRecord:
    """A processed transaction as the ledger remembers it."""

    signature: Signature
    slot: int
    block_time: int
    wire: bytes
    version: int | None  # None = legacy
    err: object  # JSON form of the TransactionError, None on success
    logs: list[str]
    fee: int
    compute_units: int
    pre_balances: list[int]
    post_balances: list[int]
    return_data: tuple[str, bytes] | None
    accounts: tuple[Pubkey, ...] = ()
    """Every account the transaction references (getSignaturesForAddress)."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """The result of simulating or executing a transaction."""

    err: object
    logs: list[str]
    compute_units: int
    fee: int
    return_data: tuple[str, bytes] | None
    post_accounts: dict[Pubkey, Account | None] = field(default_factory=dict)
    pre_balances: list[int] = field(default_factory=list)
    post_balances: list[int] = field(default_factory=list)


def _derive_keypair(seed: int, role: str, index: int) -> Keypair:
    digest = hashlib.sha256(f"agent-staking-localnet:{seed}:{role}:{index}".encode()).digest()
    return Keypair.from_seed(digest)


FEE_PAYER_ERRORS: Final = frozenset(
    {"AccountNotFound", "InsufficientFundsForFee", "InvalidAccountForFee"}
)
"""Errors of a fee payer that cannot pay: the runtime commits no such transaction."""


def _outcome(
    result: TransactionMetadata | FailedTransactionMetadata | SimulatedTransactionInfo,
    post_accounts: dict[Pubkey, Account | None],
) -> Outcome:
    err: object = None
    if isinstance(result, FailedTransactionMetadata):
        err = _error_json(result)
        meta = result.meta()
    elif isinstance(result, SimulatedTransactionInfo):
        meta = result.meta()
    else:
        meta = result
    return_data = None
    rd = meta.return_data()
    if rd is not None and rd.data:
        return_data = (str(rd.program_id), bytes(rd.data))
    return Outcome(
        err=err,
        logs=list(meta.logs()),
        compute_units=meta.compute_units_consumed(),
        fee=meta.fee(),
        return_data=return_data,
        post_accounts=post_accounts,
    )


def _error_json(failed: FailedTransactionMetadata) -> object:
    # solders serialises TransactionError exactly as a node's JSON-RPC does.
    import json

    return json.loads(failed.to_json())["err"]


@dataclass(kw_only=True)
class BlockFees:
    """The compute-unit prices (micro-lamports) paid in one block: the lowest of all its
    transactions, and the lowest per account among those that write-locked it."""

    slot: int
    minimum: int
    accounts: dict[Pubkey, int] = field(default_factory=dict)


class LocalnetChain:
    """LiteSVM with slots, blockhashes, epochs, stake history and a ledger."""

    def __init__(self, config: LocalnetConfig, *, now: Callable[[], float] = time.monotonic):
        self.config = config
        self._now = now
        self.svm = LiteSVM()
        # Our own checks replace LiteSVM's: it accepts only its latest blockhash and
        # verifies signatures unconditionally, a real node does neither.
        self.svm.with_blockhash_check(False)
        self.svm.with_sigverify(False)
        self.schedule = EpochSchedule.custom(config.slots_per_epoch, config.slots_per_epoch, False)
        self.svm.set_epoch_schedule(self.schedule)
        self.genesis_unix_time = int(time.time())
        # Like a real genesis, the hash covers the creation time: a localnet started
        # again is another cluster (whatever clients kept about the last one, such as
        # cached rewards, is not mistaken for this one's), though its keys are the same.
        created = time.time_ns()
        self.genesis_hash = Hash(
            hashlib.sha256(
                f"agent-staking-localnet:{config.seed}:genesis:{created}".encode()
            ).digest()
        )
        self.slot = 0
        self.transaction_count = 0
        # Every ended epoch's StakeHistory entry (the sysvar holds the newest 512).
        self.history: dict[int, StakeHistoryEntry] = {}
        self._last_tick = now()
        # blockhash -> (slot, last valid block height), newest last.
        self._blockhashes: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._slot_hashes: deque[tuple[int, Hash]] = deque(maxlen=MAX_PROCESSING_AGE + 64)
        self._ledger: OrderedDict[str, TxRecord] = OrderedDict()
        # address -> signatures of the ledger's transactions that reference it, oldest first
        self._by_address: dict[Pubkey, deque[str]] = {}
        # The prioritization fees of the newest blocks with transactions (the tip's too,
        # still filling: it does not count among the blocks a query sees).
        self._block_fees: deque[BlockFees] = deque(maxlen=PRIORITIZATION_FEE_BLOCKS + 1)
        self._txs_in_slot = 0
        self.faucet = self.svm.airdrop_pubkey()
        self.validators: list[Validator] = []
        self.activated_stake: dict[Pubkey, int] = {}
        self.rewards = RewardsBank(
            self.svm, governor=config.inflation, slots_per_epoch=config.slots_per_epoch
        )
        self._set_clock()
        self._new_blockhash()
        self._genesis()
        self.minimum_delegation = self._read_minimum_delegation()
        # Start with some history behind the tip, so that the delinquent validator
        # is already delinquent and every commitment level has a slot (and, with
        # short epochs, past any rewards distribution on the way).
        self.advance_slots(2 * DELINQUENT_SLOT_DISTANCE)
        if self.rewards.active is not None:
            active = self.rewards.active
            self.advance_slots(active.calculation_slot + active.num_partitions - self.slot)

    # ----- time ---------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return int(self.schedule.get_epoch(self.slot))

    @property
    def block_height(self) -> int:
        # Every slot produces a block here: no leader ever skips.
        return self.slot

    def unix_time_at(self, slot: int) -> int:
        return self.genesis_unix_time + int(slot * self.config.slot_duration)

    def slot_at(self, commitment: str | None) -> int:
        if commitment == "processed":
            return self.slot
        if commitment == "confirmed":
            return max(self.slot - 1, 0)
        return max(self.slot - self.config.finalized_depth, 0)

    def tick(self) -> None:
        """Advance to the slot that wall time has reached."""
        if self.config.slot_duration <= 0:
            return
        elapsed = self._now() - self._last_tick
        slots = int(elapsed / self.config.slot_duration)
        if slots > 0:
            self._last_tick += slots * self.config.slot_duration
            self.advance_slots(slots)

    def advance_slots(self, count: int) -> None:
        """Move the tip `count` slots forward, rolling epochs over on the way (each
        boundary pays the ended epoch's rewards, over the blocks after it)."""
        start = self.slot
        target = start + count
        while self.schedule.get_epoch(target) > self.epoch:
            # The blocks after a boundary pay its rewards before the next boundary.
            self._distribute_rewards(target)
            self._roll_epoch()
        # Only the newest slots' blockhashes can still matter, but those must all
        # exist however far the tip jumps: the confirmed and finalized blockhashes
        # are a few slots behind it, and must still be usable.
        first = max(start + 1, target - MAX_PROCESSING_AGE - 64)
        self.slot = first - 1
        while self.slot < target:
            self.slot += 1
            self._new_blockhash()
        self._txs_in_slot = 0
        self._set_clock()
        self._distribute_rewards(target)
        self._refresh_votes()

    def advance_epochs(self, count: int) -> None:
        """Jump to the epoch `count` epochs ahead, past its reward distribution and far
        enough for the distribution to be finalized: its first slot, plus one block per
        distribution partition, plus the finalization depth.

        The jump takes nothing from transactions in flight: a blockhash valid before it
        stays valid for as many blocks after it as it had left, so what a client built
        (and an agent-staking server cached) just before still lands after.
        """
        height = self.block_height
        carried = [
            (blockhash, slot, last_valid - height)
            for blockhash, (slot, last_valid) in self._blockhashes.items()
            if last_valid >= height
        ]
        target_epoch = self.epoch + count
        self.advance_slots(self.schedule.get_first_slot_in_epoch(target_epoch) - self.slot)
        record = self.rewards.records.get(target_epoch - 1)
        if count and record is not None:
            settled = record.calculation_slot + record.num_partitions + self.config.finalized_depth
            self.advance_slots(max(settled - self.slot, 0))
        # Oldest first, as the window is kept: they expire before the jump's own.
        window = OrderedDict(
            (blockhash, (slot, self.block_height + left)) for blockhash, slot, left in carried
        )
        window.update(self._blockhashes)
        self._blockhashes = window

    def _distribute_rewards(self, up_to_slot: int) -> None:
        if self.rewards.distribute(up_to_slot=up_to_slot):
            # Paid rewards are delegated stake: the vote accounts' stake follows.
            self.activated_stake = self._epoch_stakes(list(self._delegations()))

    def _roll_epoch(self) -> None:
        # What a bank does at an epoch boundary: the ending epoch's stake totals
        # (every delegation's status at that epoch) go into StakeHistory, the new
        # epoch's stakes are taken from it, and the ended epoch's rewards are
        # calculated from the vote accounts as the epoch ended.
        ending = self.epoch
        self._refresh_votes(self.schedule.get_last_slot_in_epoch(ending))
        delegations = list(self._delegations())
        self.history[ending] = next_stake_history_entry(delegations, ending, self.history)
        parent_blockhash = self._blockhash_at(self.schedule.get_last_slot_in_epoch(ending))
        # Blockhashes are made by `advance_slots` once the tip has stopped moving.
        self.slot = self.schedule.get_first_slot_in_epoch(ending + 1)
        self._write_stake_history()
        self._set_clock()
        self._snapshot_epoch_stakes(delegations)
        self.rewards.begin(
            rewarded_epoch=ending,
            slot=self.slot,
            block_height=self.block_height,
            parent_blockhash=parent_blockhash,
            history=self.history,
        )
        self._refresh_votes()

    def _blockhash_at(self, slot: int) -> Hash:
        for known, blockhash in reversed(self._slot_hashes):
            if known == slot:
                return blockhash
        # A slot the tip jumped over: its block was never materialised.
        return Hash(hashlib.sha256(f"{self.genesis_hash}:{slot}".encode()).digest())

    def _set_clock(self) -> None:
        epoch = self.epoch
        self.svm.set_clock(
            Clock(
                slot=self.slot,
                epoch_start_timestamp=self.unix_time_at(
                    self.schedule.get_first_slot_in_epoch(epoch)
                ),
                epoch=epoch,
                leader_schedule_epoch=epoch + 1,
                unix_timestamp=self.unix_time_at(self.slot),
            )
        )

    def _new_blockhash(self) -> None:
        self.svm.expire_blockhash()
        blockhash = self.svm.latest_blockhash()
        self._slot_hashes.append((self.slot, blockhash))
        self._blockhashes[str(blockhash)] = (self.slot, self.block_height + MAX_PROCESSING_AGE)
        # The window holds what is still valid, oldest (first to expire) first.
        while self._blockhashes and next(iter(self._blockhashes.values()))[1] < self.block_height:
            self._blockhashes.popitem(last=False)

    def latest_blockhash(self, commitment: str | None) -> tuple[Hash, int]:
        """The newest blockhash at `commitment` and its last valid block height."""
        slot = self.slot_at(commitment)
        chosen = self._slot_hashes[0]
        for entry in reversed(self._slot_hashes):
            if entry[0] <= slot:
                chosen = entry
                break
        return chosen[1], chosen[0] + MAX_PROCESSING_AGE

    def is_blockhash_valid(self, blockhash: str) -> bool:
        entry = self._blockhashes.get(blockhash)
        return entry is not None and self.block_height <= entry[1]

    def set_clock(self, unix_timestamp: int) -> None:
        """Shift the cluster's wall clock so that the tip's timestamp is `unix_timestamp`."""
        self.genesis_unix_time += unix_timestamp - self.unix_time_at(self.slot)
        self._set_clock()

    # ----- genesis --------------------------------------------------------------------

    def _genesis(self) -> None:
        rng = random.Random(self.config.seed)
        commissions = [5, 0, 7, 10, 100, 3, 8, 2]
        rent_vote = self.svm.minimum_balance_for_rent_exemption(VOTE_ACCOUNT_SIZE)
        rent_stake = self.svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE)
        funder = _derive_keypair(self.config.seed, "genesis-funder", 0)
        self.svm.airdrop(funder.pubkey(), 1_000 * LAMPORTS_PER_SOL)
        for index in range(self.config.validators):
            identity = _derive_keypair(self.config.seed, "identity", index)
            vote = _derive_keypair(self.config.seed, "vote", index)
            stake_account = _derive_keypair(self.config.seed, "stake", index).pubkey()
            commission = commissions[index % len(commissions)]
            self._create_vote_account(funder, identity, vote, commission, rent_vote)
            # Genesis stake is bootstrap stake (activation epoch u64::MAX): fully
            # effective from the start, as on a real cluster's genesis.
            self_stake = rng.randrange(50_000, 2_000_000) * LAMPORTS_PER_SOL
            self.svm.set_account(
                stake_account,
                Account(
                    lamports=self_stake + rent_stake,
                    data=_bootstrap_stake_data(
                        rent=rent_stake,
                        authority=identity.pubkey(),
                        voter=vote.pubkey(),
                        stake=self_stake,
                    ),
                    owner=STAKE_PROGRAM,
                    executable=False,
                ),
            )
            delinquent = self.config.validators > 1 and index == self.config.validators - 1
            self.validators.append(
                Validator(
                    identity=identity.pubkey(),
                    vote_account=vote.pubkey(),
                    commission=commission,
                    self_stake_account=stake_account,
                    self_stake=self_stake,
                    credit_rate=round(rng.uniform(0.80, 1.0), 3),
                    delinquent=delinquent,
                )
            )
        self._snapshot_epoch_stakes(list(self._delegations()))
        self._refresh_votes()
        self.rewards.count_genesis(
            [
                self.faucet,
                funder.pubkey(),
                *(v.vote_account for v in self.validators),
                *(v.self_stake_account for v in self.validators),
            ]
        )

    def _create_vote_account(
        self, funder: Keypair, identity: Keypair, vote: Keypair, commission: int, rent: int
    ) -> None:
        init = (
            struct.pack("<I", 0)  # VoteInstruction::InitializeAccount(VoteInit)
            + bytes(identity.pubkey())  # node_pubkey
            + bytes(identity.pubkey())  # authorized_voter
            + bytes(identity.pubkey())  # authorized_withdrawer
            + bytes([commission])
        )
        instructions = [
            create_account(
                CreateAccountParams(
                    from_pubkey=funder.pubkey(),
                    to_pubkey=vote.pubkey(),
                    lamports=rent,
                    space=VOTE_ACCOUNT_SIZE,
                    owner=VOTE_PROGRAM,
                )
            ),
            Instruction(
                VOTE_PROGRAM,
                init,
                [
                    AccountMeta(vote.pubkey(), False, True),
                    AccountMeta(SYSVAR_RENT, False, False),
                    AccountMeta(SYSVAR_CLOCK, False, False),
                    AccountMeta(identity.pubkey(), True, False),
                ],
            ),
        ]
        tx = Transaction(
            [funder, vote, identity],
            Message(instructions, funder.pubkey()),
            self.svm.latest_blockhash(),
        )
        result = self.svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            raise RuntimeError(f"genesis vote account failed: {result}")

    def _refresh_votes(self, slot: int | None = None) -> None:
        """Record each validator's voting up to `slot` (default: the tip) in its vote
        account."""
        slot = self.slot if slot is None else slot
        for validator in self.validators:
            account = self.svm.get_account(validator.vote_account)
            if account is None or account.owner != VOTE_PROGRAM:
                continue
            state = decode_vote_state(bytes(account.data))
            # A delinquent validator stopped voting at genesis + a few slots.
            last_vote = min(slot, 4) if validator.delinquent else slot
            updated = state.with_history(
                epoch_credits=epoch_credits(
                    credit_rate=validator.credit_rate, last_vote=last_vote, schedule=self.schedule
                ),
                last_vote=last_vote,
                timestamp=self.unix_time_at(last_vote),
            )
            self._write_vote_state(validator.vote_account, account, updated)

    def _write_vote_state(self, vote_account: Pubkey, account: Account, state: VoteState) -> None:
        """Replace the data of a vote account (same size, lamports and owner)."""
        self.svm.set_account(
            vote_account,
            Account(
                lamports=account.lamports,
                data=encode_vote_state(state, len(account.data)),
                owner=VOTE_PROGRAM,
                executable=False,
                rent_epoch=account.rent_epoch,
            ),
        )

    def set_validator(
        self, vote_account: Pubkey, *, delinquent: bool | None = None, commission: int | None = None
    ) -> Validator:
        """Make a validator delinquent (it stops voting) or current again, or change its
        commission (percent, as its vote account records it).

        Raises:
            ValueError: Not a validator of this cluster, or a commission above 100.
        """
        index = next(
            (i for i, v in enumerate(self.validators) if v.vote_account == vote_account), None
        )
        if index is None:
            raise ValueError(f"{vote_account} is not a validator of this cluster")
        validator = self.validators[index]
        if delinquent is not None:
            validator = replace(validator, delinquent=delinquent)
        if commission is not None:
            if not 0 <= commission <= 100:
                raise ValueError("commission is a percentage, 0 to 100")
            account = self.svm.get_account(vote_account)
            assert account is not None
            state = replace(
                decode_vote_state(bytes(account.data)),
                inflation_rewards_commission_bps=commission * 100,
            )
            self._write_vote_state(vote_account, account, state)
            validator = replace(validator, commission=commission)
        self.validators[index] = validator
        self._refresh_votes()
        return validator

    def _read_minimum_delegation(self) -> int:
        message = Message([stake_get_minimum_delegation()], self.faucet)
        tx = Transaction.new_unsigned(message)
        result = self.svm.simulate_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            raise RuntimeError(f"GetMinimumDelegation failed: {result}")
        return int.from_bytes(bytes(result.meta().return_data().data), "little")

    # ----- stake --------------------------------------------------------------------------

    def _delegations(self) -> Iterable[Delegation]:
        """Every delegation on the chain, bootstrap (genesis) stake included."""
        for _, account in self.svm.get_program_accounts(STAKE_PROGRAM):
            delegation = _delegation_of(bytes(account.data))
            if delegation is not None:
                yield delegation

    def delegation_status(self, delegation: Delegation, epoch: int) -> StakeActivation:
        """A delegation's effective/activating/deactivating stake at `epoch`, read
        against this chain's stake history."""
        return stake_activation(delegation, epoch, self.history)

    def _epoch_stakes(self, delegations: Sequence[Delegation]) -> dict[Pubkey, int]:
        epoch = self.epoch
        stakes: dict[Pubkey, int] = {}
        for delegation in delegations:
            effective = self.delegation_status(delegation, epoch).effective
            stakes[delegation.voter] = stakes.get(delegation.voter, 0) + effective
        return stakes

    def _snapshot_epoch_stakes(self, delegations: Sequence[Delegation]) -> None:
        stakes = self._epoch_stakes(delegations)
        self.activated_stake = stakes
        self.svm.set_epoch_stakes({k: v for k, v in stakes.items() if v})

    def _write_stake_history(self) -> None:
        # The sysvar holds the newest 512 epochs, the last of them the previous epoch.
        self.svm.set_stake_history(to_solders_stake_history(self.history, current_epoch=self.epoch))

    def set_stake_history(self, entries: Mapping[int, StakeHistoryEntry]) -> None:
        """Overwrite entries of past epochs, then re-derive the epoch's stakes.

        Raises:
            ValueError: An entry is for the current epoch or a later one (the sysvar
                only ever holds ended epochs), or the history would skip an epoch
                (the stake program cannot read such a sysvar).
        """
        future = [epoch for epoch in entries if epoch >= self.epoch]
        if future:
            raise ValueError(
                f"StakeHistory holds ended epochs only (< {self.epoch}), got epoch {min(future)}"
            )
        merged = {**self.history, **entries}
        to_solders_stake_history(merged, current_epoch=self.epoch)  # raises on a gap
        self.history = merged
        self._write_stake_history()
        self._snapshot_epoch_stakes(list(self._delegations()))

    # ----- transactions -------------------------------------------------------------------

    def check_blockhash(self, tx: VersionedTransaction) -> bool:
        """Whether the transaction's blockhash (or durable nonce) lets it land now."""
        blockhash = tx.message.recent_blockhash
        if self.is_blockhash_valid(str(blockhash)):
            return True
        return self._is_valid_durable_nonce(tx, blockhash)

    def _is_valid_durable_nonce(self, tx: VersionedTransaction, blockhash: Hash) -> bool:
        message = tx.message
        if not message.instructions:
            return False
        first = message.instructions[0]
        keys = message.account_keys
        if keys[first.program_id_index] != SYSTEM_PROGRAM or bytes(first.data)[:4] != b"\x04\0\0\0":
            return False
        if not first.accounts:
            return False
        nonce = self.svm.get_account(keys[first.accounts[0]])
        if nonce is None or nonce.owner != SYSTEM_PROGRAM:
            return False
        try:
            return decode_nonce_account(bytes(nonce.data)).nonce == blockhash
        except InvalidNonceAccountError:
            return False

    def simulate(self, tx: VersionedTransaction, addresses: Sequence[Pubkey] = ()) -> Outcome:
        keys = list(tx.message.account_keys)
        pre = [self.svm.get_balance(k) or 0 for k in keys]
        result = self.svm.simulate_transaction(tx)
        post_accounts: dict[Pubkey, Account | None] = {}
        if not isinstance(result, FailedTransactionMetadata):
            changed = dict(result.post_accounts())
            for address in addresses:
                post_accounts[address] = changed.get(address, self.svm.get_account(address))
            post = [
                changed[k].lamports if k in changed else p for k, p in zip(keys, pre, strict=True)
            ]
        else:
            for address in addresses:
                post_accounts[address] = None
            post = list(pre)
        outcome = _outcome(result, post_accounts)
        return Outcome(
            err=outcome.err,
            logs=outcome.logs,
            compute_units=outcome.compute_units,
            fee=outcome.fee,
            return_data=outcome.return_data,
            post_accounts=post_accounts,
            pre_balances=pre,
            post_balances=post,
        )

    def execute(self, tx: VersionedTransaction, wire: bytes) -> TxRecord | None:
        """Process the transaction at the tip and record it in the ledger; None when a
        leader would drop it (its fee payer cannot pay: it is in no block)."""
        keys = list(tx.message.account_keys)
        pre = [self.svm.get_balance(k) or 0 for k in keys]
        result = self.svm.send_transaction(tx)
        outcome = _outcome(result, {})
        if isinstance(outcome.err, str) and outcome.err in FEE_PAYER_ERRORS:
            return None
        post = [self.svm.get_balance(k) or 0 for k in keys]
        record = TxRecord(
            signature=tx.signatures[0],
            slot=self.slot,
            block_time=self.unix_time_at(self.slot),
            wire=wire,
            version=None if isinstance(tx.message, Message) else 0,
            err=outcome.err,
            logs=outcome.logs,
            fee=outcome.fee,
            compute_units=outcome.compute_units,
            pre_balances=pre,
            post_balances=post,
            return_data=outcome.return_data,
            accounts=tuple(keys),
        )
        self._remember(record)
        self.rewards.burn(record.fee)
        price, limit = _compute_budget(tx.message)
        if limit:  # as a validator: a zero limit says nothing about the price paid
            self._record_fee(price, _writable_keys(tx.message))
        if self.config.slot_duration <= 0:
            # Frozen wall time: every transaction makes a block of its own.
            self.advance_slots(1)
        return record

    def airdrop(self, to: Pubkey, lamports: int) -> TxRecord:
        pre = [self.svm.get_balance(self.faucet) or 0, self.svm.get_balance(to) or 0]
        result = self.svm.airdrop(to, lamports)
        outcome = _outcome(result, {})
        meta = result.meta() if isinstance(result, FailedTransactionMetadata) else result
        record = TxRecord(
            signature=meta.signature(),
            slot=self.slot,
            block_time=self.unix_time_at(self.slot),
            wire=b"",
            version=None,
            err=outcome.err,
            logs=outcome.logs,
            fee=outcome.fee,
            compute_units=outcome.compute_units,
            pre_balances=pre,
            post_balances=[self.svm.get_balance(self.faucet) or 0, self.svm.get_balance(to) or 0],
            return_data=None,
            accounts=(self.faucet, to),
        )
        self._remember(record)
        self.rewards.burn(record.fee)
        # The faucet's transfer, as a real node's faucet sends it: no compute-unit price.
        self._record_fee(0, frozenset((self.faucet, to)))
        if self.config.slot_duration <= 0:
            self.advance_slots(1)
        return record

    def _remember(self, record: TxRecord) -> None:
        signature = str(record.signature)
        self._ledger[signature] = record
        for address in dict.fromkeys(record.accounts):
            self._by_address.setdefault(address, deque()).append(signature)
        self.transaction_count += 1
        while len(self._ledger) > HISTORY_LIMIT:
            _, oldest = self._ledger.popitem(last=False)
            for address in dict.fromkeys(oldest.accounts):
                # The oldest record is the oldest entry of each of its addresses.
                signatures = self._by_address[address]
                signatures.popleft()
                if not signatures:
                    del self._by_address[address]

    def transaction(self, signature: str) -> TxRecord | None:
        return self._ledger.get(signature)

    def signatures_for_address(
        self, address: Pubkey, *, max_slot: int, before: str | None, until: str | None, limit: int
    ) -> list[TxRecord]:
        """The transactions that reference ``address``, newest first, as
        getSignaturesForAddress lists them: in slots up to ``max_slot`` (the
        commitment's), strictly older than ``before`` and newer than ``until`` (when
        given and known), at most ``limit``."""
        found: list[TxRecord] = []
        started = before is None
        for signature in reversed(self._by_address.get(address, ())):
            if not started:
                started = signature == before
                continue
            if signature == until or len(found) >= limit:
                break
            record = self._ledger[signature]
            if record.slot <= max_slot:
                found.append(record)
        return found

    def is_recent(self, record: TxRecord) -> bool:
        return self.slot - record.slot <= STATUS_CACHE_SLOTS

    def _record_fee(self, price: int, writable: frozenset[Pubkey]) -> None:
        """Count a landed transaction's compute-unit price in its block."""
        if self._block_fees and self._block_fees[-1].slot == self.slot:
            block = self._block_fees[-1]
            block.minimum = min(block.minimum, price)
        else:
            block = BlockFees(slot=self.slot, minimum=price)
            self._block_fees.append(block)
        for key in writable:
            block.accounts[key] = min(block.accounts.get(key, price), price)

    def prioritization_fees(self, accounts: Sequence[Pubkey]) -> list[tuple[int, int]]:
        """(slot, fee) for each of the newest confirmed blocks that had transactions
        (at most 150, oldest first), as a validator's prioritization fee cache answers:
        the lowest compute-unit price that landed in the block, raised to the lowest
        price paid by the transactions that write-locked each of ``accounts`` there
        (the highest of those). Blocks without transactions are not listed."""
        confirmed = self.slot_at("confirmed")
        blocks = [b for b in self._block_fees if b.slot <= confirmed][-PRIORITIZATION_FEE_BLOCKS:]
        return [
            (b.slot, max([b.minimum, *(b.accounts.get(key, 0) for key in accounts)]))
            for b in blocks
        ]

    # ----- reads ---------------------------------------------------------------------------

    def vote_accounts(self) -> list[tuple[Validator, int, VoteState]]:
        result = []
        for validator in self.validators:
            account = self.svm.get_account(validator.vote_account)
            if account is None:
                continue
            state = decode_vote_state(bytes(account.data))
            result.append((validator, self.activated_stake.get(validator.vote_account, 0), state))
        return result


def _compute_budget(message: Message | MessageV0 | MessageV1) -> tuple[int, int]:
    """(compute-unit price, compute-unit limit) a message asks for: its
    SetComputeUnitPrice (0 without) and SetComputeUnitLimit (-1 without: the default
    limit, which is not 0)."""
    keys = message.account_keys
    price, limit = 0, -1
    for ix in message.instructions:
        if keys[ix.program_id_index] != COMPUTE_BUDGET_PROGRAM:
            continue
        data = bytes(ix.data)
        if data[:1] == b"\x02" and len(data) >= 5:
            limit = int.from_bytes(data[1:5], "little")
        elif data[:1] == b"\x03" and len(data) >= 9:
            price = int.from_bytes(data[1:9], "little")
    return price, limit


def _writable_keys(message: Message | MessageV0 | MessageV1) -> frozenset[Pubkey]:
    """The static account keys a message write-locks, read from its header."""
    header = message.header
    keys = message.account_keys
    signed = header.num_required_signatures
    writable_signed = signed - header.num_readonly_signed_accounts
    writable_unsigned_end = len(keys) - header.num_readonly_unsigned_accounts
    return frozenset(
        key
        for index, key in enumerate(keys)
        if index < writable_signed or signed <= index < writable_unsigned_end
    )


def _delegation_of(data: bytes) -> Delegation | None:
    # Stake-program accounts that are not (or not yet) delegated hold no stake.
    try:
        return decode_stake_account(data).delegation
    except InvalidStakeAccountError:
        return None


def _bootstrap_stake_data(*, rent: int, authority: Pubkey, voter: Pubkey, stake: int) -> bytes:
    account = StakeAccount(
        state=StakeStateKind.STAKE,
        meta=Meta(
            rent_exempt_reserve=rent,
            authorized=Authorized(staker=authority, withdrawer=authority),
            lockup=Lockup(),
        ),
        # Activation epoch u64::MAX marks bootstrap stake: effective from genesis.
        delegation=Delegation(
            voter=voter,
            stake=stake,
            activation_epoch=U64_MAX,
            deactivation_epoch=U64_MAX,
            # The former warmup_cooldown_rate, as a real genesis writes it (ignored).
            reserved=struct.pack("<d", 0.25),
        ),
    )
    return encode_stake_account(account, size=STAKE_ACCOUNT_SIZE)
