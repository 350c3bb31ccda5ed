"""The cached chain context: what a build needs from Solana, refreshed in the background.

A build reads `ChainContext.snapshot()` and does no network I/O for it (recent
prioritization fees depend on each build's accounts: `_priority_fees`). One refresher
task owns every RPC read, so an expiring cache never causes a stampede; a
blockhash is handed out only while enough of its validity remains for the agent
to sign and submit, and one with less left wakes the refresher at once (instead
of waiting for the next timed refresh).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from service.core.programs import STAKE_ACCOUNT_SIZE
from service.core.yields import YieldInputs

from ._rpc import ChainUnavailable, RpcError, SolanaRpc

log = logging.getLogger(__name__)

DEFAULT_SLOT_SECONDS = 0.4
SYSVAR_EPOCH_REWARDS = "SysvarEpochRewards1111111111111111111111111"
# EpochRewards sysvar: distribution_starting_block_height u64, num_partitions u64,
# parent_blockhash 32, total_points u128, total_rewards u64, distributed_rewards u64,
# active bool.
_EPOCH_REWARDS_ACTIVE_OFFSET = 80
# Consecutive failed refreshes before the chain counts as unreachable.
UNHEALTHY_AFTER_FAILURES = 2


@dataclass(frozen=True, kw_only=True)
class VoteAccountInfo:
    """A validator as getVoteAccounts reports it."""

    vote_account: str
    node_pubkey: str
    commission: int
    activated_stake: int
    last_vote: int
    root_slot: int
    epoch_credits: tuple[tuple[int, int, int], ...]
    delinquent: bool


@dataclass(frozen=True, kw_only=True)
class ChainContextStats:
    """Metrics-ready state of the cached chain context.

    Attributes:
        healthy: The context can be trusted (False before the first refresh too).
        blockhash_age_seconds: Seconds since the cached blockhash was fetched; None
            before the first refresh.
        remaining_blocks: Estimated blocks before the cached blockhash expires.
        slot: Slot of the last refresh.
        epoch: Epoch of the last refresh.
        consecutive_failures: Failed refreshes since the last success.
    """

    healthy: bool
    blockhash_age_seconds: float | None
    remaining_blocks: int | None
    slot: int | None
    epoch: int | None
    consecutive_failures: int


@dataclass(frozen=True, kw_only=True)
class ChainSnapshot:
    """Everything a build reads from the chain, as of `fetched_at` (monotonic seconds)."""

    blockhash: str
    last_valid_block_height: int
    block_height: int
    slot: int
    epoch: int
    slot_index: int
    slots_in_epoch: int
    slot_seconds: float
    stake_rent_exempt_reserve: int
    minimum_delegation: int
    vote_accounts: Mapping[str, VoteAccountInfo] = field(default_factory=dict)
    version: str = ""
    genesis_hash: str = ""
    epoch_rewards_active: bool = False
    fetched_at: float = 0.0
    validator_inflation_rate: float | None = None
    """Annual inflation paid to stakers (getInflationRate.validator); None: unknown."""
    capitalization: int | None = None
    """Lamports in existence (getSupply.total); None: unknown."""

    @property
    def yield_inputs(self) -> YieldInputs | None:
        """What yield estimates need, when the cluster reported it."""
        if self.validator_inflation_rate is None or self.capitalization is None:
            return None
        return YieldInputs(
            validator_rate=self.validator_inflation_rate,
            capitalization=self.capitalization,
            active_stake=sum(v.activated_stake for v in self.vote_accounts.values()),
            slots_in_epoch=self.slots_in_epoch,
        )

    def estimated_block_height(self, now: float) -> int:
        return self.block_height + int(max(0.0, now - self.fetched_at) / self.slot_seconds)

    def remaining_blocks(self, now: float) -> int:
        """Blocks left before the cached blockhash expires, estimated from elapsed time."""
        return self.last_valid_block_height - self.estimated_block_height(now)


def _epoch_rewards_active(answer: Any) -> bool:
    """Whether stake instructions are blocked by the epoch's reward distribution."""
    value = answer.get("value") if isinstance(answer, dict) else None
    if not value:
        return False
    data = base64.b64decode(value["data"][0])
    return len(data) > _EPOCH_REWARDS_ACTIVE_OFFSET and data[_EPOCH_REWARDS_ACTIVE_OFFSET] == 1


class ChainContext:
    """Keeps a fresh `ChainSnapshot` from one `SolanaRpc` and reports chain health."""

    def __init__(
        self,
        rpc: SolanaRpc,
        *,
        blockhash_refresh: float = 2.0,
        context_refresh: float = 30.0,
        min_remaining_blocks: int = 60,
        rpc_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        self._rpc = rpc
        self._blockhash_refresh = blockhash_refresh
        self._context_refresh = context_refresh
        self._min_remaining = min_remaining_blocks
        self._timeout = rpc_timeout
        self._clock = clock
        self._on_health = on_health
        self._snapshot: ChainSnapshot | None = None
        self._slow_fetched_at = float("-inf")
        self._failures = 0
        self._healthy: bool | None = None
        self._last_error = "not yet refreshed"
        self._task: asyncio.Task[None] | None = None
        self._refreshed = asyncio.Event()
        self._attempted = asyncio.Event()
        self._wake = asyncio.Event()

    @property
    def healthy(self) -> bool:
        return bool(self._healthy)

    async def start(self, *, wait: float | None = None) -> None:
        """Start refreshing in the background; optionally wait for the first snapshot."""
        self._task = asyncio.create_task(self._run(), name="chain-context")
        if wait:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._refreshed.wait(), wait)

    async def ready(self, timeout: float) -> ChainSnapshot:
        """Wait up to ``timeout`` seconds for the first refresh to end (start-up): its
        snapshot, or at once why there is none (a refused connection is not waited
        out; start-up asks again).

        Raises:
            ChainUnavailable: None yet; the message says what the chain last did.
        """
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), timeout)
        return self.snapshot()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def snapshot(self) -> ChainSnapshot:
        """The current context, or `ChainUnavailable` when it cannot be trusted.

        Raises:
            ChainUnavailable: never refreshed, the chain stopped answering, or the
                cached blockhash has fewer than the configured minimum of blocks left
                (the refresher then runs at once).
        """
        snapshot = self._snapshot
        if snapshot is None or self._healthy is False:
            raise ChainUnavailable(self._last_error)
        now = self._clock()
        if snapshot.remaining_blocks(now) < self._min_remaining:
            # NOTE: not for a snapshot fetched within the last slot: the node handed out
            # that blockhash as its newest, and asking again at once would only hammer it.
            if now - snapshot.fetched_at >= snapshot.slot_seconds:
                self._wake.set()
            raise ChainUnavailable(f"cached blockhash too old to hand out ({self._last_error})")
        return snapshot

    def stats(self) -> ChainContextStats:
        """Blockhash age, chain health and refresh failures, for metrics."""
        snapshot = self._snapshot
        now = self._clock()
        return ChainContextStats(
            healthy=bool(self._healthy),
            blockhash_age_seconds=None if snapshot is None else max(0.0, now - snapshot.fetched_at),
            remaining_blocks=None if snapshot is None else snapshot.remaining_blocks(now),
            slot=None if snapshot is None else snapshot.slot,
            epoch=None if snapshot is None else snapshot.epoch,
            consecutive_failures=self._failures,
        )

    async def refresh(self) -> None:
        """Refresh now: the blockhash always, the slow-moving parts when due."""
        now = self._clock()
        previous = self._snapshot
        blockhash, epoch_info, rewards = await asyncio.gather(
            self._call("getLatestBlockhash", [{"commitment": "confirmed"}]),
            self._call("getEpochInfo", [{"commitment": "confirmed"}]),
            self._call(
                "getAccountInfo",
                [SYSVAR_EPOCH_REWARDS, {"commitment": "confirmed", "encoding": "base64"}],
            ),
        )
        slot_seconds = DEFAULT_SLOT_SECONDS
        if previous is not None:
            slot_seconds = previous.slot_seconds
            elapsed = now - previous.fetched_at
            advanced = epoch_info["absoluteSlot"] - previous.slot
            if elapsed > 0.5 and advanced > 0:
                # EWMA of the observed slot time, so expiry estimates track the cluster.
                slot_seconds = 0.8 * slot_seconds + 0.2 * (elapsed / advanced)
        fast = {
            "blockhash": blockhash["value"]["blockhash"],
            "last_valid_block_height": int(blockhash["value"]["lastValidBlockHeight"]),
            "block_height": int(epoch_info["blockHeight"]),
            "slot": int(epoch_info["absoluteSlot"]),
            "epoch": int(epoch_info["epoch"]),
            "slot_index": int(epoch_info["slotIndex"]),
            "slots_in_epoch": int(epoch_info["slotsInEpoch"]),
            "slot_seconds": slot_seconds,
            "epoch_rewards_active": _epoch_rewards_active(rewards),
            "fetched_at": now,
        }
        slow_due = (
            previous is None
            or now - self._slow_fetched_at >= self._context_refresh
            or fast["epoch"] != previous.epoch
        )
        if slow_due:
            snapshot = ChainSnapshot(**fast, **await self._slow_parts())
            self._slow_fetched_at = now
        else:
            assert previous is not None
            snapshot = replace(previous, **fast)
        current = self._snapshot
        if current is not None and current.fetched_at > now:
            # A refresh begun after this one finished first (the background refresher
            # and `newer_blockhash` may overlap): its blockhash is the newer.
            return
        self._snapshot = snapshot
        self._refreshed.set()

    async def newer_blockhash(self, than: str) -> ChainSnapshot:
        """The snapshot once its blockhash is another than ``than``: refreshed now, and
        again each slot until the cluster has a newer one, for at most the RPC timeout.

        Raises:
            ChainUnavailable: no newer blockhash in that time, or the chain did not
                answer.
        """
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    await self.refresh()
                    snapshot = self.snapshot()
                    if snapshot.blockhash != than:
                        return snapshot
                    await asyncio.sleep(snapshot.slot_seconds)
        except TimeoutError:
            raise ChainUnavailable(
                f"the cluster gave no blockhash newer than {than} in {self._timeout:g} s"
            ) from None
        except (RpcError, KeyError, TypeError, ValueError) as exc:
            # As the refresher takes them: the node refused, or answered nonsense.
            raise ChainUnavailable(str(exc)) from exc

    async def _slow_parts(self) -> dict[str, Any]:
        rent, minimum, votes, version, genesis = await asyncio.gather(
            self._call("getMinimumBalanceForRentExemption", [STAKE_ACCOUNT_SIZE]),
            self._call("getStakeMinimumDelegation", [{"commitment": "confirmed"}]),
            self._call("getVoteAccounts", [{"commitment": "confirmed"}]),
            self._call("getVersion", []),
            self._call("getGenesisHash", []),
        )
        accounts: dict[str, VoteAccountInfo] = {}
        for delinquent, group in ((False, votes["current"]), (True, votes["delinquent"])):
            for entry in group:
                accounts[entry["votePubkey"]] = VoteAccountInfo(
                    vote_account=entry["votePubkey"],
                    node_pubkey=entry["nodePubkey"],
                    commission=int(entry["commission"]),
                    activated_stake=int(entry["activatedStake"]),
                    last_vote=int(entry["lastVote"]),
                    root_slot=int(entry.get("rootSlot") or 0),
                    epoch_credits=tuple(tuple(c) for c in entry.get("epochCredits", [])),
                    delinquent=delinquent,
                )
        rate, supply = await asyncio.gather(
            self._optional("getInflationRate", []),
            self._optional("getSupply", [{"excludeNonCirculatingAccountsList": True}]),
        )
        return {
            "stake_rent_exempt_reserve": int(rent),
            "minimum_delegation": int(minimum["value"]),
            "vote_accounts": accounts,
            "version": str(version.get("solana-core", "")),
            "genesis_hash": str(genesis),
            "validator_inflation_rate": None if rate is None else float(rate["validator"]),
            "capitalization": None if supply is None else int(supply["value"]["total"]),
        }

    async def _optional(self, method: str, params: list[Any]) -> Any:
        """A read that only yield estimates need: a node that refuses it (some
        providers disable getSupply) leaves them unknown instead of failing the
        refresh."""
        try:
            return await self._call(method, params)
        except RpcError as exc:
            log.info("%s refused (%s): yield estimates are unavailable", method, exc.message)
            return None

    async def _call(self, method: str, params: list[Any]) -> Any:
        return await self._rpc.call(method, params, timeout=self._timeout)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.refresh()
            except (ChainUnavailable, RpcError, KeyError, TypeError, ValueError) as exc:
                self._failures += 1
                self._last_error = str(exc)
                if self._failures == 1:
                    log.warning("chain context refresh failed: %s", exc)
                if self._failures >= UNHEALTHY_AFTER_FAILURES or self._snapshot is None:
                    self._set_health(False)
            else:
                if self._failures:
                    log.info("chain context refresh recovered after %d failures", self._failures)
                self._failures = 0
                self._set_health(True)
            self._attempted.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._blockhash_refresh)

    def _set_health(self, healthy: bool) -> None:
        if healthy != self._healthy:
            self._healthy = healthy
            if self._on_health is not None:
                self._on_health(healthy)
