"""The producer: one replica per deployment watches the chain and records what changed.

Leadership is a lease in the database (``event_leases``): every replica tries to take
it every third of ``lease`` seconds; the holder renews it, and every write of a round
is fenced by it (a replica that lost the lease, paused or partitioned, writes
nothing: its transaction renews the lease or rolls back). When the leader dies
(``kill -9``) its lease runs out and another replica takes over; since what was seen
is remembered in the database (the last state of every watched stake account and
validator) the new leader makes the events of whatever changed meanwhile, and the
dedupe keys keep anything seen twice from being recorded twice.

A round, every ``interval`` seconds and at once when the epoch changes:

1. the watched wallets: those of enabled webhooks and of open streams (any replica);
2. each wallet's stake accounts, read now and classified by the same activation
   math as ListStakeAccounts; their changes (``service.events._transitions``) are
   recorded with the new states, one transaction per wallet;
3. the validators those accounts are delegated to, from the chain context's vote
   accounts: delinquency and commission changes;
4. once the last completed epoch's inflation rewards are final, the rewards paid to
   the watched stake accounts (one epoch: the last completed one; if the producers
   were down for longer, earlier epochs are not reported);
5. API keys whose rotation time is within ``rotation_notice``;
6. every ``purge_interval``: events past the retention, finished deliveries, and
   what is remembered of wallets nobody watches any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Protocol

from opentelemetry import trace
from solders.pubkey import Pubkey

from service.chain import (
    ChainContext,
    ChainUnavailable,
    RewardsUnavailableError,
    RpcError,
    StakeReadError,
    VoteAccountInfo,
    current_traceparent,
)
from service.core.errors import DomainError
from service.core.positions import StakeView
from service.core.yields import InflationReward
from service.events._model import ApiKeyPayload, Event, EventType, NewEvent
from service.events._store import EventStore, NotLeaderError, WatchedWallet
from service.events._tasks import cancel
from service.events._transitions import (
    StakeRecord,
    rewards_events,
    stake_changes,
    validator_changes,
)
from service.keys import ApiKey
from service.store import Connection, StoreUnavailableError

log = logging.getLogger(__name__)

LEASE_NAME: Final = "producer"
REWARDS_MARK: Final = "rewards_epoch"
"""The last epoch whose rewards were reported."""
READ_CONCURRENCY: Final = 8
PURGE_BATCH: Final = 5000


class WalletReader(Protocol):
    async def wallet_views(self, wallet: Pubkey) -> tuple[int, tuple[StakeView, ...]]: ...


class RewardReader(Protocol):
    async def epoch_rewards(
        self, epoch: int, accounts: Sequence[str]
    ) -> Mapping[str, InflationReward | None] | None: ...


@dataclass(frozen=True, kw_only=True)
class ProducerConfig:
    """How the producer works (see the ``events_*`` settings)."""

    interval: float = 15.0
    lease: float = 15.0
    rotation_notice: timedelta = timedelta(days=7)
    max_wallets: int = 10_000
    retention: float = 7 * 86_400.0
    purge_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.lease <= 0 or self.max_wallets < 1:
            raise ValueError("interval, lease and max_wallets must be positive")


class Producer:
    """Runs the rounds while this replica leads (see the module docstring)."""

    def __init__(
        self,
        store: EventStore,
        *,
        wallets: WalletReader,
        context: ChainContext,
        rotation_due: Callable[[timedelta], Awaitable[list[ApiKey]]],
        config: ProducerConfig,
        owner: str,
        on_recorded: Callable[[Sequence[Event]], None],
        rewards: RewardReader | None = None,
        tracer: trace.Tracer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``rewards``: where inflation rewards are read (None: no rewards events)."""
        self._store = store
        self._rewards = rewards
        self._wallets = wallets
        self._context = context
        self._rotation_due = rotation_due
        self.config = config
        self.owner = owner
        self._on_recorded = on_recorded
        self._tracer = tracer or trace.get_tracer(__name__)
        self._clock = clock
        self.leader = False
        self.rounds = 0
        self.takeovers = 0
        self._counts: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_round = float("-inf")
        self._last_purge = float("-inf")
        self._epoch: int | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-producer")

    async def stop(self) -> None:
        """Stop and hand the lead back (another replica takes over at once)."""
        await cancel(self._task)
        self._task = None
        if self.leader:
            self.leader = False
            with contextlib.suppress(StoreUnavailableError):
                await self._store.release(LEASE_NAME, owner=self.owner)

    def wake(self) -> None:
        """Run a round now (if leading): e.g. a wallet was just registered."""
        self._wake.set()

    def counts(self) -> Mapping[str, int]:
        """Monotonic counts of the events this replica's rounds recorded, by type."""
        return dict(self._counts)

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        tick = min(self.config.interval, self.config.lease / 3)
        while True:
            now = self._clock()
            try:
                await self._lead(now)
                if self.leader and self._due(now):
                    self._wake.clear()
                    self._last_round = now
                    await self.round()
            except NotLeaderError:
                self._lost()
            except (StoreUnavailableError, ChainUnavailable, RpcError) as exc:
                log.debug("event producer: round failed: %s", exc)
            except Exception:
                log.exception("event producer: unexpected error")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()

    async def _lead(self, now: float) -> None:
        held = await self._store.acquire(
            LEASE_NAME, owner=self.owner, now=now, until=now + self.config.lease
        )
        if held and not self.leader:
            self.leader = True
            self.takeovers += 1
            self._last_round = float("-inf")
            log.info("event producer: this replica (%s) produces events now", self.owner)
        elif not held and self.leader:
            self._lost()

    def _lost(self) -> None:
        if self.leader:
            log.warning("event producer: lost the lead to another replica")
        self.leader = False

    def _due(self, now: float) -> bool:
        if self._wake.is_set() or now - self._last_round >= self.config.interval:
            return True
        epoch = self._context.stats().epoch
        changed = epoch is not None and epoch != self._epoch
        return changed

    # --- one round ----------------------------------------------------------------------

    async def round(self) -> None:
        """One round (see the module docstring); only while leading.

        Raises:
            NotLeaderError: The lease was lost during the round.
        """
        with self._tracer.start_as_current_span(
            "events.produce", context=trace.set_span_in_context(trace.INVALID_SPAN)
        ):
            traceparent = current_traceparent()
            snapshot = self._context.snapshot()
            now = self._clock()
            watched = await self._store.watched_wallets(now=now, limit=self.config.max_wallets)
            if len(watched) >= self.config.max_wallets:
                log.warning(
                    "event producer: %d wallets watched, the most it follows "
                    "(events_max_watched_wallets); later ones are not followed",
                    len(watched),
                )
            remembered = await self._store.stake_records([w.wallet for w in watched])
            slots = asyncio.Semaphore(READ_CONCURRENCY)

            async def one(wallet: WatchedWallet) -> list[StakeRecord]:
                async with slots:
                    return await self._wallet_round(wallet, remembered[wallet.wallet], traceparent)

            results = await asyncio.gather(*(one(w) for w in watched))
            delegations = [record for records in results for record in records]
            await self._validator_round(delegations, snapshot.vote_accounts, traceparent)
            await self._rewards_round(watched, delegations, snapshot.epoch, traceparent)
            await self._key_round(traceparent)
            self._epoch = snapshot.epoch
            self.rounds += 1
            if now - self._last_purge >= self.config.purge_interval:
                self._last_purge = now
                await self._store.forget_unwatched(now=now)
                await self._store.purge(before=now - self.config.retention, limit=PURGE_BATCH)

    async def _wallet_round(
        self, watched: WatchedWallet, remembered: Mapping[str, StakeRecord], traceparent: str
    ) -> list[StakeRecord]:
        """Record one wallet's changes; its current records (the remembered ones when
        the chain did not answer)."""
        try:
            epoch, views = await self._wallets.wallet_views(Pubkey.from_string(watched.wallet))
        except (ChainUnavailable, RpcError, StakeReadError, DomainError) as exc:
            log.debug("event producer: reading %s failed: %s", watched.wallet, exc)
            return list(remembered.values())
        changes = stake_changes(
            watched.wallet,
            views,
            remembered,
            epoch=epoch,
            now=self._clock(),
            baselined=watched.baselined,
            registered_epoch=watched.registered_epoch,
            trace_context=traceparent,
        )
        unchanged = (
            watched.baselined
            and not changes.events
            and not changes.gone
            and set(changes.records) == set(remembered.values())
        )
        if not unchanged:
            await self._write(
                changes.events,
                lambda conn: self._store.save_stake_changes(conn, watched.wallet, changes),
            )
        return list(changes.records)

    async def _validator_round(
        self,
        delegations: Sequence[StakeRecord],
        validators: Mapping[str, VoteAccountInfo],
        traceparent: str,
    ) -> None:
        remembered = await self._store.validator_records()
        changes = validator_changes(
            delegations,
            validators,
            remembered,
            epoch=self._context.snapshot().epoch,
            now=self._clock(),
            trace_context=traceparent,
        )
        if changes.records:
            await self._write(
                changes.events,
                lambda conn: self._store.save_validator_records(conn, changes.records),
            )

    async def _rewards_round(
        self,
        watched: Sequence[WatchedWallet],
        records: Sequence[StakeRecord],
        current_epoch: int,
        traceparent: str,
    ) -> None:
        epoch = current_epoch - 1
        if self._rewards is None or epoch < 0:
            return
        done = await self._store.mark(REWARDS_MARK)
        if done is not None and done >= epoch:
            return
        accounts = sorted({r.stake_account for r in records})
        try:
            rewards = await self._rewards.epoch_rewards(epoch, accounts) if accounts else {}
        except RewardsUnavailableError as exc:
            log.warning("event producer: rewards of epoch %d not reported: %s", epoch, exc)
            rewards = {}
        except (ChainUnavailable, RpcError, DomainError) as exc:
            log.debug("event producer: reading the rewards of epoch %d failed: %s", epoch, exc)
            return  # the next round tries again
        if rewards is None:
            return  # not final at the node yet
        events = rewards_events(
            records,
            rewards,
            {w.wallet: w.registered_epoch for w in watched},
            epoch=epoch,
            now=self._clock(),
            trace_context=traceparent,
        )
        await self._write(events, lambda conn: self._store.set_mark(conn, REWARDS_MARK, epoch))

    async def _key_round(self, traceparent: str) -> None:
        due = await self._rotation_due(self.config.rotation_notice)
        events = [
            NewEvent(
                type=EventType.API_KEY_ROTATION_DUE,
                payload=ApiKeyPayload(key_id=key.key_id, rotate_time=key.rotate_time.timestamp()),
                occurred_time=self._clock(),
                key_id=key.key_id,
                dedupe_key=f"{EventType.API_KEY_ROTATION_DUE}:{key.key_id}:"
                f"{key.rotate_time.timestamp():.6f}",
                trace_context=traceparent,
            )
            for key in due
        ]
        if events:
            await self._write(events, None)

    async def _write(
        self,
        events: Sequence[NewEvent],
        also: Callable[[Connection], Awaitable[None]] | None,
    ) -> None:
        """Record events (and what ``also`` writes) in one transaction fenced by the
        lease."""
        now = self._clock()
        async with self._store.database.transaction("events.produce") as conn:
            await self._store.fence(
                conn, LEASE_NAME, owner=self.owner, now=now, until=now + self.config.lease
            )
            written = await self._store.append(conn, events)
            if also is not None:
                await also(conn)
        for event in written:
            self._counts[event.type.value] += 1
        if written:
            self._on_recorded(written)
