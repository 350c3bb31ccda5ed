"""Decoders for the sysvars that stake reads depend on: Clock and EpochRewards.

(StakeHistory is decoded by ``activation.decode_stake_history``.) Layouts are the
bincode of the runtime's structs:

- Clock (40 bytes): slot u64 | epoch_start_timestamp i64 | epoch u64 |
  leader_schedule_epoch u64 | unix_timestamp i64.
- EpochRewards (81 bytes): distribution_starting_block_height u64 | num_partitions u64 |
  parent_blockhash 32 | total_points u128 | total_rewards u64 | distributed_rewards u64 |
  active bool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from service.core import _bincode as bc
from service.core._validate import check_i64, check_u64

CLOCK_SIZE: Final = 40
EPOCH_REWARDS_SIZE: Final = 81


@dataclass(frozen=True, kw_only=True)
class ClockSysvar:
    """The cluster's clock as the programs see it."""

    slot: int
    epoch_start_timestamp: int
    epoch: int
    leader_schedule_epoch: int
    unix_timestamp: int

    def __post_init__(self) -> None:
        check_u64(self.slot, field="slot")
        check_i64(self.epoch_start_timestamp, field="epoch_start_timestamp")
        check_u64(self.epoch, field="epoch")
        check_u64(self.leader_schedule_epoch, field="leader_schedule_epoch")
        check_i64(self.unix_timestamp, field="unix_timestamp")


@dataclass(frozen=True, kw_only=True)
class EpochRewardsSysvar:
    """The partitioned epoch-rewards distribution. While ``active``, every stake
    instruction but GetMinimumDelegation fails with ``EpochRewardsActive``."""

    distribution_starting_block_height: int = 0
    num_partitions: int = 0
    total_rewards: int = 0
    distributed_rewards: int = 0
    active: bool = False

    @property
    def end_block_height(self) -> int:
        """First block height after the distribution (one partition per block)."""
        return self.distribution_starting_block_height + self.num_partitions


def decode_clock(data: bytes) -> ClockSysvar:
    """Decode the Clock sysvar.

    Raises:
        ValueError: Fewer than 40 bytes.
    """
    if len(data) < CLOCK_SIZE:
        raise ValueError(f"Clock sysvar data is {len(data)} bytes, expected {CLOCK_SIZE}")
    r = bc.Reader(data)
    return ClockSysvar(
        slot=r.u64(),
        epoch_start_timestamp=r.i64(),
        epoch=r.u64(),
        leader_schedule_epoch=r.u64(),
        unix_timestamp=r.i64(),
    )


def decode_epoch_rewards(data: bytes) -> EpochRewardsSysvar:
    """Decode the EpochRewards sysvar; empty data (no sysvar yet) means inactive.

    Raises:
        ValueError: Truncated data.
    """
    if not data:
        return EpochRewardsSysvar()
    if len(data) < EPOCH_REWARDS_SIZE:
        raise ValueError(
            f"EpochRewards sysvar data is {len(data)} bytes, expected {EPOCH_REWARDS_SIZE}"
        )
    r = bc.Reader(data)
    start = r.u64()
    partitions = r.u64()
    r.take(32 + 16)  # parent_blockhash, total_points (u128)
    total = r.u64()
    distributed = r.u64()
    return EpochRewardsSysvar(
        distribution_starting_block_height=start,
        num_partitions=partitions,
        total_rewards=total,
        distributed_rewards=distributed,
        active=r.u8() == 1,
    )
