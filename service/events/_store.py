"""The events' tables in the service's database: the outbox, webhooks, deliveries, and
what the producers remember.

``append`` writes events inside a transaction someone else opened (the relay's save of
a transaction status, a producer's round), so an event is recorded if and only if
the change that made it is. It takes the next sequence numbers from the one row of
``event_sequence``: that row's lock is held until the transaction ends, so events
commit in sequence order and a reader that has seen number N has seen every event
up to N (streams resume without gaps). It also queues a delivery for every enabled
webhook that receives the event, in the same transaction.

Deliveries are claimed with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL): a
replica owns a delivery while it sends it, another takes it over once the lease ends
(the owner died between sending and recording: the event is sent again, never lost).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from service.core.positions import AccountState
from service.events._model import (
    Attempt,
    Audience,
    Delivery,
    DeliveryState,
    Event,
    EventType,
    NewEvent,
    Webhook,
    WebhookState,
    payload_from_json,
    payload_to_json,
)
from service.events._transitions import StakeChanges, StakeRecord, ValidatorRecord
from service.store import Connection, Database, Row

# Most values in one IN list.
_BATCH: Final = 500
_EVENT_COLUMNS: Final = (
    "seq, event_type, wallet, key_id, webhook_id, occurred_time, payload, trace_context"
)
_WEBHOOK_COLUMNS: Final = (
    "webhook_id, key_id, url, description, event_types, wallets, all_wallets, state, "
    "disabled_reason, create_time, update_time, disable_time, previous_secret_expire_time"
)
_DELIVERY_COLUMNS: Final = (
    "d.delivery_id, d.webhook_id, d.event_seq, d.state, d.attempts, d.create_time, "
    "d.next_attempt_time, d.last_response_code, d.last_latency, d.last_error"
)


class NotLeaderError(Exception):
    """The producer's lease was lost: another replica produces now (nothing written)."""


def _in_list(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


def _event(row: Row) -> Event:
    event_type = EventType(str(row["event_type"]))
    return Event(
        seq=int(row["seq"]),
        type=event_type,
        payload=payload_from_json(event_type, str(row["payload"])),
        occurred_time=float(row["occurred_time"]),
        wallet=str(row["wallet"]),
        key_id=str(row["key_id"]),
        webhook_id=str(row["webhook_id"]),
        trace_context=str(row["trace_context"]),
    )


def _webhook(row: Row) -> Webhook:
    def optional(name: str) -> float | None:
        value = row[name]
        return None if value is None else float(value)

    return Webhook(
        webhook_id=str(row["webhook_id"]),
        key_id=str(row["key_id"]),
        url=str(row["url"]),
        description=str(row["description"]),
        event_types=tuple(EventType(t) for t in json.loads(row["event_types"])),
        wallets=tuple(json.loads(row["wallets"])),
        all_wallets=bool(row["all_wallets"]),
        state=WebhookState(str(row["state"])),
        disabled_reason=str(row["disabled_reason"]),
        create_time=float(row["create_time"]),
        update_time=float(row["update_time"]),
        disable_time=optional("disable_time"),
        previous_secret_expire_time=optional("previous_secret_expire_time"),
    )


def _delivery(row: Row, event_type: EventType, attempts: tuple[Attempt, ...]) -> Delivery:
    return Delivery(
        delivery_id=int(row["delivery_id"]),
        webhook_id=str(row["webhook_id"]),
        event_seq=int(row["event_seq"]),
        event_type=event_type,
        state=DeliveryState(str(row["state"])),
        attempt_count=int(row["attempts"]),
        create_time=float(row["create_time"]),
        next_attempt_time=float(row["next_attempt_time"]),
        last_response_code=int(row["last_response_code"]),
        last_latency=float(row["last_latency"]),
        last_error=str(row["last_error"]),
        attempts=attempts,
    )


@dataclass(frozen=True, kw_only=True)
class ClaimedDelivery:
    """A delivery this replica now owns, with what sending it needs."""

    delivery_id: int
    attempt: int
    """The number of the attempt about to be made (1 for the first)."""
    event: Event
    webhook: Webhook
    signing_secrets: tuple[str, ...]
    """The current secret, then the previous one while its grace period lasts."""


@dataclass(frozen=True, kw_only=True)
class QueueStats:
    """The deliveries waiting (of enabled webhooks), as of one read.

    Attributes:
        pending: Not delivered yet (waiting for an attempt or a retry).
        due: Of which an attempt is due now (not yet made).
        oldest_pending_age: Seconds since the oldest pending one was queued.
        oldest_due_lag: Seconds the most overdue attempt is late.
        webhooks: Webhooks by state.
    """

    pending: int = 0
    due: int = 0
    oldest_pending_age: float = 0.0
    oldest_due_lag: float = 0.0
    webhooks: Mapping[str, int] | None = None


@dataclass(frozen=True, kw_only=True)
class WatchedWallet:
    """A wallet some webhook or stream watches, and what the producer knows of it."""

    wallet: str
    registered_epoch: int | None
    baselined: bool


class EventStore:
    """The events' tables in the service's :class:`~service.store.Database`."""

    def __init__(self, database: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self._clock = clock
        postgres = database.dialect == "postgresql"
        self._skip_locked = " FOR UPDATE OF d SKIP LOCKED" if postgres else ""

    # --- the outbox ---------------------------------------------------------------------

    async def append(self, conn: Connection, events: Sequence[NewEvent]) -> list[Event]:
        """Record ``events`` (those whose dedupe key is new) and queue their deliveries,
        inside the caller's transaction.

        Returns:
            The events recorded now, in sequence order.
        """
        if not events:
            return []
        now = self._clock()
        top = int(
            await conn.fetchval(
                "UPDATE event_sequence SET value = value + $1 WHERE name = 'events' "
                "RETURNING value",
                len(events),
            )
        )
        written: list[Event] = []
        for seq, new in enumerate(events, start=top - len(events) + 1):
            inserted = await conn.execute(
                f"INSERT INTO events ({_EVENT_COLUMNS}, create_time, dedupe_key) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                "ON CONFLICT (dedupe_key) DO NOTHING",
                seq,
                new.type.value,
                new.wallet,
                new.key_id,
                new.webhook_id,
                new.occurred_time,
                payload_to_json(new.payload),
                new.trace_context,
                now,
                new.dedupe_key,
            )
            if not inserted:
                continue  # recorded before (same change seen again)
            event = Event(
                seq=seq,
                type=new.type,
                payload=new.payload,
                occurred_time=new.occurred_time,
                wallet=new.wallet,
                key_id=new.key_id,
                webhook_id=new.webhook_id,
                trace_context=new.trace_context,
            )
            written.append(event)
            await self._fan_out(conn, event, now)
        return written

    async def _fan_out(self, conn: Connection, event: Event, now: float) -> None:
        if event.webhook_id:
            targets = [event.webhook_id]
        else:
            if event.type.key_scoped:
                rows = await conn.fetch(
                    "SELECT webhook_id, key_id, event_types, wallets, all_wallets FROM webhooks "
                    "WHERE state = 'enabled' AND (key_id = $1 OR all_wallets)",
                    event.key_id,
                )
            else:
                rows = await conn.fetch(
                    "SELECT webhook_id, key_id, event_types, wallets, all_wallets FROM webhooks "
                    "WHERE state = 'enabled' AND (all_wallets OR webhook_id IN "
                    "(SELECT webhook_id FROM webhook_wallets WHERE wallet = $1))",
                    event.wallet,
                )
            targets = [str(row["webhook_id"]) for row in rows if _audience(row).receives(event)]
        if targets:
            await conn.executemany(
                "INSERT INTO webhook_deliveries (webhook_id, event_seq, state, attempts, "
                "create_time, next_attempt_time, lease_expire_time, last_response_code, "
                "last_latency, last_error) VALUES ($1, $2, 'pending', 0, $3, $3, 0, 0, 0, '') "
                "ON CONFLICT (webhook_id, event_seq) DO NOTHING",
                [(target, event.seq, now) for target in sorted(targets)],
            )

    async def head(self) -> tuple[int, int]:
        """(the last event number committed, the highest number purged)."""
        async with self.database.transaction("events.head", write=False) as conn:
            row = await conn.fetchrow(
                "SELECT value, purged_through FROM event_sequence WHERE name = 'events'"
            )
        assert row is not None
        return int(row["value"]), int(row["purged_through"])

    async def read(
        self, *, after: int, upto: int, audience: Audience | None, limit: int
    ) -> list[Event]:
        """Events numbered in (after, upto], oldest first, at most ``limit``; only those
        ``audience`` receives (None: every event)."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > $1 AND seq <= $2"
        args: list[object] = [after, upto]
        if audience is not None:
            sql += " AND webhook_id = ''"
            if audience.types:
                types = sorted(t.value for t in audience.types)
                sql += f" AND event_type IN ({_in_list(len(types), len(args) + 1)})"
                args += types
            if not audience.all_wallets:
                wallets = sorted(audience.wallets)
                sql += f" AND (key_id = ${len(args) + 1}"
                args.append(audience.key_id)
                if wallets:
                    sql += f" OR wallet IN ({_in_list(len(wallets), len(args) + 1)})"
                    args += wallets
                sql += ")"
        sql += f" ORDER BY seq LIMIT ${len(args) + 1}"
        args.append(limit)
        async with self.database.transaction("events.read", write=False) as conn:
            rows = await conn.fetch(sql, *args)
        return [
            event for event in map(_event, rows) if audience is None or audience.receives(event)
        ]

    # --- webhooks -------------------------------------------------------------------------

    async def create_webhook(
        self, webhook: Webhook, secret: str, *, max_per_key: int, epoch: int | None
    ) -> bool:
        """Record a new webhook; False (nothing written) when its key already has
        ``max_per_key`` webhooks."""
        async with self.database.transaction("events.create_webhook") as conn:
            await conn.lock(f"webhooks.{webhook.key_id}")
            count = int(
                await conn.fetchval(
                    "SELECT COUNT(*) FROM webhooks WHERE key_id = $1", webhook.key_id
                )
            )
            if count >= max_per_key:
                return False
            await conn.execute(
                f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}, secret) VALUES ($1, $2, $3, $4, $5, "
                "$6, $7, $8, $9, $10, $11, $12, $13, $14)",
                *_webhook_values(webhook),
                secret,
            )
            await self._set_wallets(conn, webhook, epoch)
        return True

    async def _set_wallets(self, conn: Connection, webhook: Webhook, epoch: int | None) -> None:
        await conn.execute("DELETE FROM webhook_wallets WHERE webhook_id = $1", webhook.webhook_id)
        if webhook.wallets:
            await conn.executemany(
                "INSERT INTO webhook_wallets (wallet, webhook_id) VALUES ($1, $2)",
                [(wallet, webhook.webhook_id) for wallet in webhook.wallets],
            )
            if webhook.state is WebhookState.ENABLED:
                await register_wallets(conn, webhook.wallets, epoch)

    async def get_webhook(self, webhook_id: str) -> tuple[Webhook, tuple[str, ...]] | None:
        """The webhook and its signing secrets (current first), or None."""
        async with self.database.transaction("events.get_webhook", write=False) as conn:
            row = await conn.fetchrow(
                f"SELECT {_WEBHOOK_COLUMNS}, secret, previous_secret FROM webhooks "
                "WHERE webhook_id = $1",
                webhook_id,
            )
        if row is None:
            return None
        webhook = _webhook(row)
        return webhook, _secrets(row, webhook, self._clock())

    async def list_webhooks(self, *, key_id: str | None, after: str, limit: int) -> list[Webhook]:
        """Webhooks by id (creation order), after ``after``; of ``key_id`` (None: all)."""
        sql = f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id > $1"
        args: list[object] = [after]
        if key_id is not None:
            sql += " AND key_id = $2"
            args.append(key_id)
        sql += f" ORDER BY webhook_id LIMIT ${len(args) + 1}"
        async with self.database.transaction("events.list_webhooks", write=False) as conn:
            rows = await conn.fetch(sql, *args, limit)
        return [_webhook(row) for row in rows]

    async def update_webhook(self, webhook: Webhook, *, epoch: int | None) -> bool:
        """Write a webhook's new values; re-enabling it makes its pending deliveries due
        now. False when it no longer exists."""
        async with self.database.transaction("events.update_webhook") as conn:
            before = await conn.fetchval(
                "SELECT state FROM webhooks WHERE webhook_id = $1", webhook.webhook_id
            )
            if before is None:
                return False
            values = _webhook_values(webhook)
            await conn.execute(
                "UPDATE webhooks SET url = $2, description = $3, event_types = $4, "
                "wallets = $5, all_wallets = $6, state = $7, disabled_reason = $8, "
                "update_time = $9, disable_time = $10 WHERE webhook_id = $1",
                webhook.webhook_id,
                *values[2:9],
                *values[10:12],
            )
            await self._set_wallets(conn, webhook, epoch)
            if before != webhook.state.value and webhook.state is WebhookState.ENABLED:
                await conn.execute(
                    "UPDATE webhook_deliveries SET next_attempt_time = $2 "
                    "WHERE webhook_id = $1 AND state = 'pending'",
                    webhook.webhook_id,
                    self._clock(),
                )
        return True

    async def rotate_secret(
        self, webhook_id: str, secret: str, *, previous_until: float | None, now: float
    ) -> Webhook | None:
        """Make ``secret`` the signing secret; the current one signs too until
        ``previous_until`` (None: it stops now)."""
        previous = "NULL" if previous_until is None else "secret"
        async with self.database.transaction("events.rotate_secret") as conn:
            row = await conn.fetchrow(
                f"UPDATE webhooks SET previous_secret = {previous}, secret = $2, "
                "previous_secret_expire_time = $3, update_time = $4 WHERE webhook_id = $1 "
                f"RETURNING {_WEBHOOK_COLUMNS}",
                webhook_id,
                secret,
                previous_until,
                now,
            )
        return None if row is None else _webhook(row)

    async def delete_webhook(self, webhook_id: str) -> bool:
        """Delete a webhook with its deliveries; False when there was none."""
        async with self.database.transaction("events.delete_webhook") as conn:
            return await conn.execute("DELETE FROM webhooks WHERE webhook_id = $1", webhook_id) > 0

    async def send_test(self, webhook: Webhook, new: NewEvent) -> Event | None:
        """Record a test event for ``webhook``; None when the webhook is gone."""
        async with self.database.transaction("events.send_test") as conn:
            exists = await conn.fetchval(
                "SELECT 1 FROM webhooks WHERE webhook_id = $1", webhook.webhook_id
            )
            if exists is None:
                return None
            [event] = await self.append(conn, [new])
        return event

    # --- deliveries -----------------------------------------------------------------------

    async def claim(
        self, *, owner: str, now: float, lease_until: float, limit: int
    ) -> list[ClaimedDelivery]:
        """Take up to ``limit`` due deliveries (earliest due first), each by one replica
        at a time, with what sending them needs."""
        if limit <= 0:
            return []
        async with self.database.transaction("events.claim") as conn:
            rows = await conn.fetch(
                "UPDATE webhook_deliveries SET owner = $1, lease_expire_time = $2 "
                "WHERE delivery_id IN (SELECT d.delivery_id FROM webhook_deliveries d "
                "JOIN webhooks w ON w.webhook_id = d.webhook_id "
                "JOIN events e ON e.seq = d.event_seq "
                "WHERE d.state = 'pending' AND d.next_attempt_time <= $3 "
                "AND d.lease_expire_time < $3 AND (w.state = 'enabled' OR e.webhook_id <> '') "
                f"ORDER BY d.next_attempt_time LIMIT $4{self._skip_locked}) "
                "RETURNING delivery_id, webhook_id, event_seq, attempts",
                owner,
                lease_until,
                now,
                limit,
            )
            if not rows:
                return []
            seqs = sorted({int(row["event_seq"]) for row in rows})
            events = {
                e.seq: e
                for e in map(
                    _event,
                    await conn.fetch(
                        f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq IN ({_in_list(len(seqs))})",
                        *seqs,
                    ),
                )
            }
            ids = sorted({str(row["webhook_id"]) for row in rows})
            hooks = {
                str(row["webhook_id"]): row
                for row in await conn.fetch(
                    f"SELECT {_WEBHOOK_COLUMNS}, secret, previous_secret FROM webhooks "
                    f"WHERE webhook_id IN ({_in_list(len(ids))})",
                    *ids,
                )
            }
        claimed: list[ClaimedDelivery] = []
        for row in rows:
            hook = hooks[str(row["webhook_id"])]
            webhook = _webhook(hook)
            claimed.append(
                ClaimedDelivery(
                    delivery_id=int(row["delivery_id"]),
                    attempt=int(row["attempts"]) + 1,
                    event=events[int(row["event_seq"])],
                    webhook=webhook,
                    signing_secrets=_secrets(hook, webhook, now),
                )
            )
        return claimed

    async def finish(
        self,
        delivery_id: int,
        *,
        owner: str,
        attempt: Attempt | None,
        state: DeliveryState,
        next_attempt_time: float,
        error: str,
        disable_reason: str | None = None,
    ) -> bool:
        """Record an attempt (if one was made) and the delivery's new state; disable its
        webhook with ``disable_reason``. False when another replica took the delivery
        over meanwhile (the attempt is recorded anyway)."""
        now = self._clock()
        async with self.database.transaction("events.finish") as conn:
            if attempt is not None:
                await conn.execute(
                    "INSERT INTO webhook_attempts (delivery_id, attempt, replica, start_time, "
                    "latency, response_code, succeeded, error) VALUES ($1, $2, $3, $4, $5, $6, "
                    "$7, $8) ON CONFLICT (delivery_id, attempt) DO NOTHING",
                    delivery_id,
                    attempt.attempt,
                    attempt.replica,
                    attempt.start_time,
                    attempt.latency,
                    attempt.response_code,
                    attempt.succeeded,
                    attempt.error,
                )
            done = now if state is not DeliveryState.PENDING else None
            updated = await conn.fetchrow(
                "UPDATE webhook_deliveries SET state = $3, attempts = attempts + $4, "
                "next_attempt_time = $5, done_time = $6, owner = NULL, lease_expire_time = 0, "
                "last_response_code = $7, last_latency = $8, last_error = $9 "
                "WHERE delivery_id = $1 AND owner = $2 RETURNING webhook_id",
                delivery_id,
                owner,
                state.value,
                1 if attempt is not None else 0,
                next_attempt_time,
                done,
                attempt.response_code if attempt is not None else 0,
                attempt.latency if attempt is not None else 0.0,
                error[:500],
            )
            if updated is not None and disable_reason is not None:
                await conn.execute(
                    "UPDATE webhooks SET state = 'disabled', disabled_reason = $2, "
                    "disable_time = $3, update_time = $3 "
                    "WHERE webhook_id = $1 AND state = 'enabled'",
                    str(updated["webhook_id"]),
                    disable_reason[:500],
                    now,
                )
        return updated is not None

    async def first_attempt_time(self, delivery_id: int) -> float | None:
        """When the delivery's first recorded attempt started (None: none recorded)."""
        async with self.database.transaction("events.first_attempt", write=False) as conn:
            found = await conn.fetchval(
                "SELECT MIN(start_time) FROM webhook_attempts WHERE delivery_id = $1",
                delivery_id,
            )
        return None if found is None else float(found)

    async def list_deliveries(
        self, webhook_id: str, *, state: DeliveryState | None, before: int | None, limit: int
    ) -> list[Delivery]:
        """Deliveries of a webhook, newest first (ids below ``before``), with attempts."""
        sql = (
            f"SELECT {_DELIVERY_COLUMNS}, COALESCE(e.event_type, '') AS event_type "
            "FROM webhook_deliveries d LEFT JOIN events e ON e.seq = d.event_seq "
            "WHERE d.webhook_id = $1"
        )
        args: list[object] = [webhook_id]
        if state is not None:
            args.append(state.value)
            sql += f" AND d.state = ${len(args)}"
        if before is not None:
            args.append(before)
            sql += f" AND d.delivery_id < ${len(args)}"
        args.append(limit)
        sql += f" ORDER BY d.delivery_id DESC LIMIT ${len(args)}"
        async with self.database.transaction("events.list_deliveries", write=False) as conn:
            rows = await conn.fetch(sql, *args)
            ids = [int(row["delivery_id"]) for row in rows]
            attempts: dict[int, list[Attempt]] = {}
            if ids:
                for row in await conn.fetch(
                    "SELECT delivery_id, attempt, replica, start_time, latency, response_code, "
                    f"succeeded, error FROM webhook_attempts WHERE delivery_id IN "
                    f"({_in_list(len(ids))}) ORDER BY delivery_id, attempt",
                    *ids,
                ):
                    attempts.setdefault(int(row["delivery_id"]), []).append(
                        Attempt(
                            attempt=int(row["attempt"]),
                            start_time=float(row["start_time"]),
                            latency=float(row["latency"]),
                            response_code=int(row["response_code"]),
                            succeeded=bool(row["succeeded"]),
                            error=str(row["error"]),
                            replica=str(row["replica"]),
                        )
                    )
        return [
            _delivery(
                row,
                EventType(str(row["event_type"])) if row["event_type"] else EventType.WEBHOOK_TEST,
                tuple(attempts.get(int(row["delivery_id"]), ())),
            )
            for row in rows
        ]

    async def queue_stats(self) -> QueueStats:
        """How many deliveries wait and how late they are (enabled webhooks only)."""
        now = self._clock()
        async with self.database.transaction("events.queue_stats", write=False) as conn:
            pending = await conn.fetchrow(
                "SELECT COUNT(*) AS n, MIN(d.create_time) AS oldest FROM webhook_deliveries d "
                "JOIN webhooks w ON w.webhook_id = d.webhook_id "
                "WHERE d.state = 'pending' AND w.state = 'enabled'"
            )
            due = await conn.fetchrow(
                "SELECT COUNT(*) AS n, MIN(d.next_attempt_time) AS oldest "
                "FROM webhook_deliveries d JOIN webhooks w ON w.webhook_id = d.webhook_id "
                "WHERE d.state = 'pending' AND w.state = 'enabled' "
                "AND d.next_attempt_time <= $1 AND d.lease_expire_time < $1",
                now,
            )
            states = await conn.fetch("SELECT state, COUNT(*) AS n FROM webhooks GROUP BY state")
        assert pending is not None and due is not None
        by_state = {state.value: 0 for state in WebhookState}
        by_state.update({str(row["state"]): int(row["n"]) for row in states})
        return QueueStats(
            pending=int(pending["n"]),
            due=int(due["n"]),
            oldest_pending_age=max(0.0, now - float(pending["oldest"]))
            if pending["oldest"] is not None
            else 0.0,
            oldest_due_lag=max(0.0, now - float(due["oldest"]))
            if due["oldest"] is not None
            else 0.0,
            webhooks=by_state,
        )

    async def purge(self, *, before: float, limit: int) -> int:
        """Forget up to ``limit`` events recorded before ``before`` (their pending
        deliveries fail), finished deliveries older than that, and ended stream
        watches. Returns the events deleted."""
        now = self._clock()
        async with self.database.transaction("events.purge") as conn:
            through = await conn.fetchval(
                "SELECT MAX(seq) FROM (SELECT seq FROM events WHERE create_time < $1 "
                "ORDER BY seq LIMIT $2) AS old",
                before,
                limit,
            )
            deleted = 0
            if through is not None:
                deleted = await conn.execute("DELETE FROM events WHERE seq <= $1", int(through))
                await conn.execute(
                    "UPDATE event_sequence SET purged_through = $1 "
                    "WHERE name = 'events' AND purged_through < $1",
                    int(through),
                )
                await conn.execute(
                    "UPDATE webhook_deliveries SET state = 'failed', done_time = $2, owner = NULL, "
                    "last_error = 'the event left the retained history before it was delivered' "
                    "WHERE state = 'pending' AND event_seq <= $1",
                    int(through),
                    now,
                )
            await conn.execute(
                "DELETE FROM webhook_deliveries WHERE delivery_id IN (SELECT delivery_id FROM "
                "webhook_deliveries WHERE done_time IS NOT NULL AND done_time < $1 LIMIT $2)",
                before,
                limit,
            )
            await conn.execute("DELETE FROM event_watches WHERE expire_time < $1", now)
        return deleted

    # --- the producers --------------------------------------------------------------------

    async def acquire(self, name: str, *, owner: str, now: float, until: float) -> bool:
        """Take or renew the lease ``name`` (held by ``owner`` or ended); whether
        ``owner`` holds it now."""
        async with self.database.transaction("events.lease") as conn:
            row = await conn.fetchrow(
                "INSERT INTO event_leases (name, owner, lease_expire_time) VALUES ($1, $2, $3) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
                "lease_expire_time = excluded.lease_expire_time "
                "WHERE event_leases.owner = excluded.owner OR event_leases.lease_expire_time < $4 "
                "RETURNING owner",
                name,
                owner,
                until,
                now,
            )
        return row is not None

    async def release(self, name: str, *, owner: str) -> None:
        """End ``owner``'s lease now (a graceful stop: another replica takes over)."""
        async with self.database.transaction("events.release") as conn:
            await conn.execute(
                "UPDATE event_leases SET lease_expire_time = 0 WHERE name = $1 AND owner = $2",
                name,
                owner,
            )

    async def fence(
        self, conn: Connection, name: str, *, owner: str, now: float, until: float
    ) -> None:
        """Inside a producer's transaction: renew its lease, or raise
        :class:`NotLeaderError` (and so roll back) when it no longer holds it."""
        renewed = await conn.execute(
            "UPDATE event_leases SET lease_expire_time = $3 "
            "WHERE name = $1 AND owner = $2 AND lease_expire_time >= $4",
            name,
            owner,
            until,
            now,
        )
        if not renewed:
            raise NotLeaderError(name)

    async def watched_wallets(self, *, now: float, limit: int) -> list[WatchedWallet]:
        """The wallets of enabled webhooks and of open streams (in address order, at
        most ``limit``)."""
        async with self.database.transaction("events.watched", write=False) as conn:
            rows = await conn.fetch(
                "SELECT w.wallet, ew.registered_epoch, ew.baselined FROM ("
                "SELECT ww.wallet FROM webhook_wallets ww JOIN webhooks h "
                "ON h.webhook_id = ww.webhook_id WHERE h.state = 'enabled' "
                "UNION SELECT wallet FROM event_watches WHERE expire_time >= $1) AS w "
                "LEFT JOIN event_wallets ew ON ew.wallet = w.wallet "
                "ORDER BY w.wallet LIMIT $2",
                now,
                limit,
            )
        return [
            WatchedWallet(
                wallet=str(row["wallet"]),
                registered_epoch=None
                if row["registered_epoch"] is None
                else int(row["registered_epoch"]),
                baselined=bool(row["baselined"]),
            )
            for row in rows
        ]

    async def watch(
        self, holder: str, wallets: Sequence[str], *, until: float, epoch: int | None
    ) -> None:
        """Record that ``holder`` (a replica's streams) watches exactly ``wallets`` until
        ``until``."""
        async with self.database.transaction("events.watch") as conn:
            current = {
                str(row["wallet"])
                for row in await conn.fetch(
                    "SELECT wallet FROM event_watches WHERE holder = $1", holder
                )
            }
            dropped = sorted(current - set(wallets))
            for chunk in _chunks(dropped):
                await conn.execute(
                    "DELETE FROM event_watches WHERE holder = $1 "
                    f"AND wallet IN ({_in_list(len(chunk), 2)})",
                    holder,
                    *chunk,
                )
            await conn.executemany(
                "INSERT INTO event_watches (wallet, holder, expire_time) VALUES ($1, $2, $3) "
                "ON CONFLICT (wallet, holder) DO UPDATE SET expire_time = excluded.expire_time",
                [(wallet, holder, until) for wallet in wallets],
            )
            await register_wallets(conn, [w for w in wallets if w not in current], epoch)

    async def stake_records(self, wallets: Sequence[str]) -> dict[str, dict[str, StakeRecord]]:
        """What the producer remembers of these wallets' stake accounts."""
        found: dict[str, dict[str, StakeRecord]] = {wallet: {} for wallet in wallets}
        async with self.database.transaction("events.stake_records", write=False) as conn:
            for chunk in _chunks(list(wallets)):
                for row in await conn.fetch(
                    "SELECT stake_account, wallet, state, vote_account, activation_epoch, "
                    "deactivation_epoch FROM event_stake_states "
                    f"WHERE wallet IN ({_in_list(len(chunk))})",
                    *chunk,
                ):
                    record = StakeRecord(
                        stake_account=str(row["stake_account"]),
                        wallet=str(row["wallet"]),
                        state=AccountState[str(row["state"])],
                        vote_account=str(row["vote_account"]),
                        activation_epoch=_int_or_none(row["activation_epoch"]),
                        deactivation_epoch=_int_or_none(row["deactivation_epoch"]),
                    )
                    found[record.wallet][record.stake_account] = record
        return found

    async def save_stake_changes(
        self, conn: Connection, wallet: str, changes: StakeChanges
    ) -> None:
        """Inside a producer's transaction: the wallet's records as they now are."""
        now = self._clock()
        await conn.executemany(
            "INSERT INTO event_stake_states (stake_account, wallet, state, vote_account, "
            "activation_epoch, deactivation_epoch, update_time) VALUES ($1, $2, $3, $4, $5, $6, "
            "$7) ON CONFLICT (stake_account) DO UPDATE SET wallet = excluded.wallet, "
            "state = excluded.state, vote_account = excluded.vote_account, "
            "activation_epoch = excluded.activation_epoch, "
            "deactivation_epoch = excluded.deactivation_epoch, update_time = excluded.update_time",
            [
                (
                    r.stake_account,
                    r.wallet,
                    r.state.name,
                    r.vote_account,
                    r.activation_epoch,
                    r.deactivation_epoch,
                    now,
                )
                for r in changes.records
            ],
        )
        for chunk in _chunks(changes.gone):
            await conn.execute(
                f"DELETE FROM event_stake_states WHERE stake_account IN ({_in_list(len(chunk))})",
                *chunk,
            )
        await conn.execute(
            "INSERT INTO event_wallets (wallet, registered_epoch, baselined) VALUES ($1, NULL, $2) "
            "ON CONFLICT (wallet) DO UPDATE SET baselined = excluded.baselined",
            wallet,
            True,
        )

    async def validator_records(self) -> dict[str, ValidatorRecord]:
        async with self.database.transaction("events.validator_records", write=False) as conn:
            rows = await conn.fetch(
                "SELECT vote_account, delinquent, commission, changes FROM event_validator_states"
            )
        return {
            str(row["vote_account"]): ValidatorRecord(
                vote_account=str(row["vote_account"]),
                delinquent=bool(row["delinquent"]),
                commission=int(row["commission"]),
                changes=int(row["changes"]),
            )
            for row in rows
        }

    async def save_validator_records(
        self, conn: Connection, records: Sequence[ValidatorRecord]
    ) -> None:
        now = self._clock()
        await conn.executemany(
            "INSERT INTO event_validator_states (vote_account, delinquent, commission, changes, "
            "update_time) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (vote_account) DO UPDATE SET "
            "delinquent = excluded.delinquent, commission = excluded.commission, "
            "changes = excluded.changes, update_time = excluded.update_time",
            [(r.vote_account, r.delinquent, r.commission, r.changes, now) for r in records],
        )

    async def mark(self, name: str) -> int | None:
        """A producer's progress mark, or None when never set."""
        async with self.database.transaction("events.mark", write=False) as conn:
            value = await conn.fetchval("SELECT value FROM event_marks WHERE name = $1", name)
        return None if value is None else int(value)

    async def set_mark(self, conn: Connection, name: str, value: int) -> None:
        """Inside a producer's transaction: move a progress mark."""
        await conn.execute(
            "INSERT INTO event_marks (name, value) VALUES ($1, $2) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            name,
            value,
        )

    async def forget_unwatched(self, *, now: float) -> None:
        """Drop what the producer remembers of wallets nobody watches any more (a wallet
        watched again later is baselined again)."""
        watched = (
            "SELECT ww.wallet FROM webhook_wallets ww JOIN webhooks h "
            "ON h.webhook_id = ww.webhook_id WHERE h.state = 'enabled' "
            "UNION SELECT wallet FROM event_watches WHERE expire_time >= $1"
        )
        async with self.database.transaction("events.forget") as conn:
            await conn.execute(
                f"DELETE FROM event_stake_states WHERE wallet NOT IN ({watched})", now
            )
            await conn.execute(f"DELETE FROM event_wallets WHERE wallet NOT IN ({watched})", now)


async def register_wallets(conn: Connection, wallets: Sequence[str], epoch: int | None) -> None:
    """Note that ``wallets`` are watched from ``epoch`` on (kept if already noted)."""
    if wallets:
        await conn.executemany(
            "INSERT INTO event_wallets (wallet, registered_epoch, baselined) VALUES ($1, $2, $3) "
            "ON CONFLICT (wallet) DO NOTHING",
            [(wallet, epoch, False) for wallet in wallets],
        )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _audience(row: Row) -> Audience:
    return Audience(
        key_id=str(row["key_id"]),
        wallets=frozenset(json.loads(row["wallets"])),
        all_wallets=bool(row["all_wallets"]),
        types=frozenset(EventType(t) for t in json.loads(row["event_types"])),
    )


def _secrets(row: Row, webhook: Webhook, now: float) -> tuple[str, ...]:
    found = [str(row["secret"])]
    until = webhook.previous_secret_expire_time
    if row["previous_secret"] is not None and until is not None and until > now:
        found.append(str(row["previous_secret"]))
    return tuple(found)


def _webhook_values(webhook: Webhook) -> tuple[object, ...]:
    return (
        webhook.webhook_id,
        webhook.key_id,
        webhook.url,
        webhook.description,
        json.dumps([t.value for t in webhook.event_types]),
        json.dumps(list(webhook.wallets)),
        webhook.all_wallets,
        webhook.state.value,
        webhook.disabled_reason,
        webhook.create_time,
        webhook.update_time,
        webhook.disable_time,
        webhook.previous_secret_expire_time,
    )
