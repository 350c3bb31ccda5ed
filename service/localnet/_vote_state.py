"""The vote account layout of this runtime (VoteStateVersions::V4, tag 3).

The localnet creates vote accounts with the real Vote program's InitializeAccount
and then records synthetic voting history (epoch credits, last vote, root) in the
account data itself, so that the vote accounts read over RPC are what a real
cluster's would be. Layout, after the u32 version tag:
node 32 | withdrawer 32 | inflation_rewards_collector 32 | block_revenue_collector 32 |
inflation_rewards_commission_bps u16 | block_revenue_commission_bps u16 |
pending_delegator_rewards u64 | bls_pubkey Option<[u8; 48]> |
votes VecDeque<LandedVote{latency u8, slot u64, confirmation_count u32}> |
root_slot Option<u64> | authorized_voters BTreeMap<u64, Pubkey> |
epoch_credits Vec<(epoch u64, credits u64, prev_credits u64)> |
last_timestamp {slot u64, timestamp i64}
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from solders.pubkey import Pubkey

_V4_TAG = 3


class VoteStateError(ValueError):
    """The account data is not a vote state this runtime writes."""


@dataclass(frozen=True, kw_only=True)
class LandedVote:
    slot: int
    confirmation_count: int
    latency: int = 1


@dataclass(frozen=True, kw_only=True)
class VoteState:
    node_pubkey: Pubkey
    authorized_withdrawer: Pubkey
    inflation_rewards_collector: Pubkey
    block_revenue_collector: Pubkey
    inflation_rewards_commission_bps: int
    block_revenue_commission_bps: int
    pending_delegator_rewards: int = 0
    bls_pubkey: bytes | None = None
    votes: tuple[LandedVote, ...] = ()
    root_slot: int | None = None
    authorized_voters: tuple[tuple[int, Pubkey], ...] = ()
    epoch_credits: tuple[tuple[int, int, int], ...] = field(default=())
    last_timestamp: tuple[int, int] = (0, 0)

    @property
    def commission_percent(self) -> int:
        return self.inflation_rewards_commission_bps // 100

    @property
    def last_voted_slot(self) -> int:
        return self.votes[-1].slot if self.votes else 0

    @property
    def credits(self) -> int:
        return self.epoch_credits[-1][1] if self.epoch_credits else 0

    def with_history(
        self,
        *,
        epoch_credits: tuple[tuple[int, int, int], ...],
        last_vote: int | None,
        timestamp: int,
    ) -> VoteState:
        votes = () if last_vote is None else (LandedVote(slot=last_vote, confirmation_count=1),)
        root = None if last_vote is None or last_vote < 32 else last_vote - 32
        return replace(
            self,
            votes=votes,
            root_slot=root,
            epoch_credits=epoch_credits[-64:],  # MAX_EPOCH_CREDITS_HISTORY
            last_timestamp=(last_vote or 0, timestamp),
        )


def decode_vote_state(data: bytes) -> VoteState:
    try:
        return _decode(memoryview(data))
    except (struct.error, IndexError, ValueError) as exc:
        raise VoteStateError(str(exc)) from exc


def _decode(d: memoryview) -> VoteState:
    (tag,) = struct.unpack_from("<I", d, 0)
    if tag != _V4_TAG:
        raise VoteStateError(f"unsupported vote state version {tag}")
    o = 4
    keys = []
    for _ in range(4):
        keys.append(Pubkey(bytes(d[o : o + 32])))
        o += 32
    infl_bps, block_bps, pending = struct.unpack_from("<HHQ", d, o)
    o += 12
    bls = None
    if d[o]:
        bls = bytes(d[o + 1 : o + 49])
        o += 49
    else:
        o += 1
    (n,) = struct.unpack_from("<Q", d, o)
    o += 8
    votes = []
    for _ in range(n):
        latency, slot, conf = struct.unpack_from("<BQI", d, o)
        votes.append(LandedVote(slot=slot, confirmation_count=conf, latency=latency))
        o += 13
    root = None
    if d[o]:
        (root,) = struct.unpack_from("<Q", d, o + 1)
        o += 9
    else:
        o += 1
    (n,) = struct.unpack_from("<Q", d, o)
    o += 8
    voters = []
    for _ in range(n):
        (epoch,) = struct.unpack_from("<Q", d, o)
        voters.append((epoch, Pubkey(bytes(d[o + 8 : o + 40]))))
        o += 40
    (n,) = struct.unpack_from("<Q", d, o)
    o += 8
    credits = []
    for _ in range(n):
        credits.append(struct.unpack_from("<QQQ", d, o))
        o += 24
    ts = struct.unpack_from("<Qq", d, o)
    return VoteState(
        node_pubkey=keys[0],
        authorized_withdrawer=keys[1],
        inflation_rewards_collector=keys[2],
        block_revenue_collector=keys[3],
        inflation_rewards_commission_bps=infl_bps,
        block_revenue_commission_bps=block_bps,
        pending_delegator_rewards=pending,
        bls_pubkey=bls,
        votes=tuple(votes),
        root_slot=root,
        authorized_voters=tuple(voters),
        epoch_credits=tuple((int(a), int(b), int(c)) for a, b, c in credits),
        last_timestamp=(int(ts[0]), int(ts[1])),
    )


def encode_vote_state(state: VoteState, size: int) -> bytes:
    parts = [struct.pack("<I", _V4_TAG)]
    for key in (
        state.node_pubkey,
        state.authorized_withdrawer,
        state.inflation_rewards_collector,
        state.block_revenue_collector,
    ):
        parts.append(bytes(key))
    parts.append(
        struct.pack(
            "<HHQ",
            state.inflation_rewards_commission_bps,
            state.block_revenue_commission_bps,
            state.pending_delegator_rewards,
        )
    )
    parts.append(b"\x00" if state.bls_pubkey is None else b"\x01" + state.bls_pubkey)
    parts.append(struct.pack("<Q", len(state.votes)))
    for vote in state.votes:
        parts.append(struct.pack("<BQI", vote.latency, vote.slot, vote.confirmation_count))
    parts.append(b"\x00" if state.root_slot is None else struct.pack("<BQ", 1, state.root_slot))
    parts.append(struct.pack("<Q", len(state.authorized_voters)))
    for epoch, voter in state.authorized_voters:
        parts.append(struct.pack("<Q", epoch) + bytes(voter))
    parts.append(struct.pack("<Q", len(state.epoch_credits)))
    for entry in state.epoch_credits:
        parts.append(struct.pack("<QQQ", *entry))
    parts.append(struct.pack("<Qq", *state.last_timestamp))
    data = b"".join(parts)
    if len(data) > size:
        raise VoteStateError(f"vote state of {len(data)} bytes exceeds the account's {size}")
    return data + bytes(size - len(data))
