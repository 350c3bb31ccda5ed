"""Inflation rewards of the localnet, paid at every epoch boundary as a bank pays them.

The arithmetic is the core's port of the runtime (``service.core.inflation``); this
module is the bank around it: the capitalization, partitioned distribution with the
EpochRewards sysvar, and the reward records of each epoch's blocks that
``getInflationReward`` reads.

At the first slot of epoch E+1 (the calculation block), for epoch E:

1. validator rewards = ``validator_rate(year) * capitalization * epoch_years``;
2. points of every delegation against its vote account as the epoch ended, the point
   value, each stake redeemed (commission split in basis points);
3. vote accounts are credited their commission at once (``Voting`` rewards of the
   calculation block), the EpochRewards sysvar becomes active (stake instructions
   fail with ``EpochRewardsActive``), and the stake rewards wait in partitions;
4. each following block pays one partition: the stake account's lamports and its
   delegated stake grow by its reward, ``credits_observed`` moves on (``Staking``
   rewards of that block); after the last one the sysvar is inactive again.

Known differences from a bank: the capitalization counts the accounts the localnet
funds (faucet, genesis funder, vote and genesis stake accounts), not sysvars and
program accounts; stake accounts are assigned to partitions by SHA-256 of the parent
blockhash and the address rather than SipHash-1-3 (one partition per 4,096 accounts,
as the runtime counts them, so below that every account is in the first).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from solders.account import Account
from solders.epoch_rewards import EpochRewards
from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from service.core import (
    InvalidStakeAccountError,
    StakeAccount,
    StakeHistoryEntry,
    StakeStateKind,
    decode_stake_account,
    encode_stake_account,
)
from service.core.inflation import (
    DEFAULT_SLOTS_PER_YEAR,
    EpochInflation,
    InflationGovernor,
    InflationRate,
    RewardedStake,
    RewardedVote,
    StakeReward,
    calculate_epoch_rewards,
    epoch_inflation,
    inflation_rate,
    inflation_year,
)
from service.core.programs import STAKE_ACCOUNT_SIZE, STAKE_PROGRAM, VOTE_PROGRAM

from ._vote_state import VoteStateError, decode_vote_state

# Runtime constants (partitioned_epoch_rewards/mod.rs): stake accounts paid per block,
# and the distribution's limit of a tenth of the epoch's slots.
STAKE_ACCOUNT_STORES_PER_BLOCK = 4_096
MAX_FACTOR_OF_REWARD_BLOCKS_IN_EPOCH = 10


class RewardType(enum.Enum):
    """``RewardType`` of a block's reward entry (3.x files every stake reward as
    ``Staking``; ``DeactivatedStake`` came with Agave 4.2)."""

    VOTING = "Voting"
    STAKING = "Staking"


@dataclass(frozen=True, kw_only=True)
class RewardEntry:
    """One entry of a block's rewards (``RewardInfo``)."""

    reward_type: RewardType
    lamports: int
    post_balance: int
    commission: int
    """Percent, as the RPC reports it."""


@dataclass(kw_only=True)
class EpochRewardRecord:
    """What the blocks of one epoch boundary hold about its rewards.

    Attributes:
        rewarded_epoch: The epoch these rewards are for.
        calculation_slot: The first slot of the next epoch (vote rewards are there).
        calculation_block_height: Its block height.
        num_partitions: Distribution blocks after it.
        parent_blockhash: Blockhash of the block before the calculation block.
        inflation: The epoch's minted amount and the rates used.
        total_points: Points over all delegations (0: nothing was paid).
        vote_rewards: ``Voting`` entries of the calculation block.
        partition_slots: Slot of each distribution block paid so far.
        stake_rewards: Entries of each distribution block paid so far.
    """

    rewarded_epoch: int
    calculation_slot: int
    calculation_block_height: int
    num_partitions: int
    parent_blockhash: Hash
    inflation: EpochInflation
    total_points: int
    vote_rewards: dict[Pubkey, RewardEntry] = field(default_factory=dict)
    partition_slots: list[int] = field(default_factory=list)
    stake_rewards: list[dict[Pubkey, RewardEntry]] = field(default_factory=list)
    pending: list[list[StakeReward]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.partition_slots) == self.num_partitions

    @property
    def complete_block_height(self) -> int:
        """Block height at which the distribution is over (the RPC's
        ``rewardsCompleteBlockHeight``)."""
        return self.calculation_block_height + self.num_partitions + 1

    def partition_of(self, address: Pubkey) -> int:
        return partition_index(address, self.parent_blockhash, self.num_partitions)


def partition_index(address: Pubkey, parent_blockhash: Hash, partitions: int) -> int:
    """The distribution block (0-based) that pays ``address``: a 64-bit hash of the
    address seeded with the parent blockhash, scaled to the partitions as the
    runtime's ``hash_to_partition`` does."""
    digest = hashlib.sha256(bytes(parent_blockhash) + bytes(address)).digest()
    value = int.from_bytes(digest[:8], "little")
    return partitions * value // 2**64


def distribution_blocks(stake_rewards: int, slots_per_epoch: int) -> int:
    """``get_reward_distribution_num_blocks`` (no warmup epochs here)."""
    chunks = -(-stake_rewards // STAKE_ACCOUNT_STORES_PER_BLOCK)
    return min(max(chunks, 1), max(slots_per_epoch // MAX_FACTOR_OF_REWARD_BLOCKS_IN_EPOCH, 1))


class RewardsBank:
    """The localnet's inflation: capitalization, the reward calculation at each epoch
    boundary and the partitioned distribution after it.

    Synchronous, called on the chain's thread only.
    """

    def __init__(
        self,
        svm: LiteSVM,
        *,
        governor: InflationGovernor,
        slots_per_epoch: int,
        slots_per_year: float = DEFAULT_SLOTS_PER_YEAR,
    ) -> None:
        self.svm = svm
        self.governor = governor
        self.slots_per_epoch = slots_per_epoch
        self.slots_per_year = slots_per_year
        self.capitalization = 0
        self.records: dict[int, EpochRewardRecord] = {}
        self.active: EpochRewardRecord | None = None

    # ----- supply ---------------------------------------------------------------------

    def count_genesis(self, addresses: Iterable[Pubkey]) -> None:
        """Start the capitalization at the lamports of the accounts genesis funded."""
        self.capitalization = sum(self.svm.get_balance(a) or 0 for a in set(addresses))

    def burn(self, lamports: int) -> None:
        """A transaction fee leaves the supply (the localnet has no fee collector)."""
        self.capitalization -= lamports

    def rate(self, epoch: int) -> InflationRate:
        """The rates in force during ``epoch`` (``getInflationRate``)."""
        year = inflation_year(
            paying_epoch_first_slot=epoch * self.slots_per_epoch,
            slots_per_year_value=self.slots_per_year,
        )
        return inflation_rate(self.governor, epoch=epoch, year=year)

    # ----- the calculation block -------------------------------------------------------

    def begin(
        self,
        *,
        rewarded_epoch: int,
        slot: int,
        block_height: int,
        parent_blockhash: Hash,
        history: Mapping[int, StakeHistoryEntry],
    ) -> EpochRewardRecord:
        """Calculate ``rewarded_epoch``'s rewards at ``slot`` (the first of the next
        epoch): pay the vote accounts, activate the EpochRewards sysvar, hold the stake
        rewards for the following blocks."""
        if self.active is not None:
            raise RuntimeError("the previous epoch's rewards are still being distributed")
        inflation = epoch_inflation(
            self.governor,
            year=inflation_year(
                paying_epoch_first_slot=slot, slots_per_year_value=self.slots_per_year
            ),
            capitalization=self.capitalization,
            rewarded_epoch_slots=self.slots_per_epoch,
            slots_per_year_value=self.slots_per_year,
        )
        stakes = list(self._stakes())
        calculation = calculate_epoch_rewards(
            rewarded_epoch=rewarded_epoch,
            validator_rewards=inflation.validator_rewards,
            stakes=stakes,
            votes=self._votes({s.delegation.voter for s in stakes}),
            history=history,
        )
        partitions = distribution_blocks(len(calculation.stake_rewards), self.slots_per_epoch)
        record = EpochRewardRecord(
            rewarded_epoch=rewarded_epoch,
            calculation_slot=slot,
            calculation_block_height=block_height,
            num_partitions=partitions,
            parent_blockhash=parent_blockhash,
            inflation=inflation,
            total_points=calculation.point_value.points if calculation.point_value else 0,
        )
        record.pending = [[] for _ in range(partitions)]
        for reward in calculation.stake_rewards:
            record.pending[record.partition_of(reward.address)].append(reward)
        for voter, lamports in sorted(calculation.vote_rewards.items(), key=lambda i: bytes(i[0])):
            account = self.svm.get_account(voter)
            if account is None:
                continue
            self.svm.set_account(voter, _with_lamports(account, account.lamports + lamports))
            self.capitalization += lamports
            record.vote_rewards[voter] = RewardEntry(
                reward_type=RewardType.VOTING,
                lamports=lamports,
                post_balance=account.lamports + lamports,
                commission=decode_vote_state(bytes(account.data)).commission_percent,
            )
        self.records[rewarded_epoch] = record
        self.active = record
        self.svm.set_epoch_rewards(
            EpochRewards(
                distribution_starting_block_height=block_height + 1,
                num_partitions=partitions,
                parent_blockhash=parent_blockhash,
                total_points=record.total_points,
                total_rewards=inflation.validator_rewards,
                distributed_rewards=calculation.total_vote_rewards,
                active=True,
            )
        )
        return record

    def _stakes(self) -> Iterable[RewardedStake]:
        for address, account in self.svm.get_program_accounts(STAKE_PROGRAM):
            try:
                decoded = decode_stake_account(bytes(account.data))
            except InvalidStakeAccountError:
                continue
            if decoded.state is StakeStateKind.STAKE and decoded.delegation is not None:
                yield RewardedStake(
                    address=address,
                    delegation=decoded.delegation,
                    credits_observed=decoded.credits_observed,
                )

    def _votes(self, voters: Iterable[Pubkey]) -> dict[Pubkey, RewardedVote]:
        votes = {}
        for voter in voters:
            account = self.svm.get_account(voter)
            if account is None or account.owner != VOTE_PROGRAM:
                continue
            try:
                state = decode_vote_state(bytes(account.data))
            except VoteStateError:
                continue
            votes[voter] = RewardedVote(
                epoch_credits=state.epoch_credits,
                commission_bps=state.inflation_rewards_commission_bps,
            )
        return votes

    # ----- the distribution blocks -----------------------------------------------------

    def distribute(self, *, up_to_slot: int) -> bool:
        """Pay every partition whose block is at or before ``up_to_slot`` (one block
        per slot here), then deactivate the sysvar once the last one is paid.

        Returns:
            Whether a distribution ended now.
        """
        record = self.active
        if record is None:
            return False
        distributed = 0
        while not record.complete:
            slot = record.calculation_slot + 1 + len(record.partition_slots)
            if slot > up_to_slot:
                break
            entries: dict[Pubkey, RewardEntry] = {}
            for reward in record.pending[len(record.partition_slots)]:
                entry = self._pay(reward)
                if entry is not None:
                    distributed += reward.redemption.staker_rewards
                    if entry.lamports > 0:
                        entries[reward.address] = entry
            record.partition_slots.append(slot)
            record.stake_rewards.append(entries)
        current = self.svm.get_epoch_rewards()
        done = record.complete
        if done:
            record.pending = []
            self.active = None
        self.svm.set_epoch_rewards(
            EpochRewards(
                distribution_starting_block_height=current.distribution_starting_block_height,
                num_partitions=current.num_partitions,
                parent_blockhash=current.parent_blockhash,
                total_points=current.total_points,
                total_rewards=current.total_rewards,
                distributed_rewards=current.distributed_rewards + distributed,
                active=not done,
            )
        )
        return done

    def _pay(self, reward: StakeReward) -> RewardEntry | None:
        account = self.svm.get_account(reward.address)
        if account is None or account.owner != STAKE_PROGRAM:
            return None  # burned, as the runtime does for a vanished account
        try:
            decoded = decode_stake_account(bytes(account.data))
        except InvalidStakeAccountError:
            return None
        if decoded.delegation is None:
            return None
        redemption = reward.redemption
        delegation = replace(decoded.delegation, stake=redemption.new_stake)
        updated = StakeAccount(
            state=decoded.state,
            meta=decoded.meta,
            delegation=delegation,
            credits_observed=redemption.new_credits_observed,
            stake_flags=decoded.stake_flags,
        )
        lamports = account.lamports + redemption.staker_rewards
        self.svm.set_account(
            reward.address,
            Account(
                lamports=lamports,
                data=encode_stake_account(updated, size=len(account.data) or STAKE_ACCOUNT_SIZE),
                owner=account.owner,
                executable=account.executable,
                rent_epoch=account.rent_epoch,
            ),
        )
        self.capitalization += redemption.staker_rewards
        return RewardEntry(
            reward_type=RewardType.STAKING,
            lamports=redemption.staker_rewards,
            post_balance=lamports,
            commission=reward.commission_bps // 100,
        )


def _with_lamports(account: Account, lamports: int) -> Account:
    return Account(
        lamports=lamports,
        data=bytes(account.data),
        owner=account.owner,
        executable=account.executable,
        rent_epoch=account.rent_epoch,
    )


class BlockNotAvailableError(Exception):
    """The block holding the rewards is not (yet) at the asked commitment."""

    def __init__(self, slot: int) -> None:
        super().__init__(f"Block not available for slot {slot}")
        self.slot = slot


class RewardsPeriodActiveError(Exception):
    """The distribution block of an address is not (yet) at the asked commitment."""

    def __init__(self, *, slot: int, block_height: int, complete_block_height: int) -> None:
        super().__init__(
            f"Epoch rewards period is active. Slot: {slot}, current block height: "
            f"{block_height}, rewards will be complete at block height: {complete_block_height}"
        )
        self.slot = slot
        self.block_height = block_height
        self.complete_block_height = complete_block_height


def inflation_rewards(
    record: EpochRewardRecord | None,
    addresses: Iterable[Pubkey],
    *,
    first_slot: int,
    slot: int,
) -> list[tuple[RewardEntry, int] | None]:
    """What ``getInflationReward`` finds for ``addresses`` in the blocks of one epoch
    boundary that are at or before ``slot`` (the asked commitment): ``Voting`` rewards
    in the calculation block, ``Staking`` rewards in each address's distribution
    block; with the slot of the block each was found in.

    Args:
        record: The boundary's record (None: the rewarded epoch has not ended).
        first_slot: First slot of the epoch after the rewarded one.

    Raises:
        BlockNotAvailableError: The calculation block is not at the commitment.
        RewardsPeriodActiveError: A distribution block needed is not at it yet.
    """
    if record is None or record.calculation_slot > slot:
        raise BlockNotAvailableError(first_slot)
    found: list[tuple[RewardEntry, int] | None] = []
    for address in addresses:
        vote = record.vote_rewards.get(address)
        if vote is not None:
            found.append((vote, record.calculation_slot))
            continue
        partition = record.partition_of(address)
        visible = [s for s in record.partition_slots if s <= slot]
        if partition >= len(visible):
            raise RewardsPeriodActiveError(
                slot=slot,
                block_height=slot,
                complete_block_height=record.complete_block_height,
            )
        entry = record.stake_rewards[partition].get(address)
        if entry is None or entry.reward_type is not RewardType.STAKING:
            found.append(None)
        else:
            found.append((entry, visible[partition]))
    return found
