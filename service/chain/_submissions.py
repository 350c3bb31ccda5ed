"""The relay's durable record: one row per submitted transaction, leased to one replica.

A submission is recorded (wire bytes, lifetime, state) before it is first sent. The
replica that relays it owns it under a lease it renews; when a replica dies (a
crash, ``kill -9``) its leases run out and another replica (or its own restart)
claims the submissions and carries on. Finished ones (finalized, failed, expired)
stay for status lookups until they are purged.

A :class:`SubmissionListener` (the events' outbox) hears every change of state that
``save`` writes, inside the same database transaction: what it records is committed
with the change, or neither is. Each submission keeps the W3C trace context of the
call that submitted it, so that what follows from it (events, their deliveries) can
link back to that call.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.core.txerrors import DecodedTransactionError
from service.core.txstatus import TxState, TxStatus
from service.store import Connection, Database, Row

# Most signatures per statement (a bound on the size of one IN list).
_BATCH: Final = 256
_COLUMNS: Final = (
    "signature, wire, state, slot, confirmations, error, last_valid_block_height, "
    "send_count, create_time, update_time"
)


@dataclass(frozen=True, kw_only=True)
class StoredSubmission:
    """A submission as recorded: its status and the bytes to rebroadcast."""

    status: TxStatus
    wire: bytes


@dataclass(frozen=True, kw_only=True)
class SubmissionChange:
    """A submission's state as ``save`` writes it, with what it was before."""

    status: TxStatus
    previous: TxState
    wire: bytes
    trace_context: str
    """W3C ``traceparent`` of the call that submitted it ("" when none was traced)."""


class SubmissionListener(Protocol):
    """Hears the changes of state of submissions, inside the transaction saving them."""

    async def submissions_changed(
        self, conn: Connection, changes: Sequence[SubmissionChange]
    ) -> None:
        """Write what follows from ``changes`` with ``conn`` (raising rolls the save
        back: the relay keeps the statuses and saves them again next tick)."""
        ...


def current_traceparent() -> str:
    """The W3C ``traceparent`` of the current span ("" outside a traced call)."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


class SubmissionLog(Protocol):
    """Where the relay records its submissions (see :class:`SqlSubmissionLog`).

    Every method is one transaction; failures raise
    :class:`~service.store.StoreUnavailableError`.
    """

    async def record(
        self, status: TxStatus, wire: bytes, *, cluster: str, owner: str, lease_until: float
    ) -> bool:
        """Record a new submission owned by ``owner``; False if the signature is
        recorded already (nothing written)."""
        ...

    async def save(self, statuses: Sequence[TxStatus], *, owner: str, now: float) -> None:
        """Write the statuses of submissions ``owner`` still owns (others are left
        alone: another replica took them over); terminal ones are finished."""
        ...

    async def renew(self, *, owner: str, lease_until: float) -> set[str]:
        """Extend the lease of every unfinished submission of ``owner``; the
        signatures it still owns."""
        ...

    async def claim(
        self, *, owner: str, cluster: str, now: float, lease_until: float, limit: int
    ) -> list[StoredSubmission]:
        """Take over up to ``limit`` unfinished submissions of ``cluster`` whose lease
        ended before ``now`` (oldest lease first), each at most once across replicas."""
        ...

    async def release(self, *, owner: str) -> int:
        """End ``owner``'s leases now (a graceful stop: others take over at once)."""
        ...

    async def get(self, signatures: Sequence[str]) -> dict[str, TxStatus]:
        """The recorded statuses of those of ``signatures`` that are recorded."""
        ...

    async def delete(self, signatures: Sequence[str]) -> None:
        """Forget submissions (recorded for another chain)."""
        ...

    async def purge(self, *, finished_before: float, limit: int) -> int:
        """Delete up to ``limit`` submissions finished before ``finished_before``."""
        ...


def _error_json(error: DecodedTransactionError | None) -> str | None:
    return None if error is None else json.dumps(dataclasses.asdict(error), sort_keys=True)


def _error_from_json(text: str | None) -> DecodedTransactionError | None:
    if text is None:
        return None
    fields: dict[str, Any] = json.loads(text)
    fields["logs"] = tuple(fields.get("logs") or ())
    return DecodedTransactionError(**fields)


def _status(row: Row) -> TxStatus:
    return TxStatus(
        signature=str(row["signature"]),
        state=TxState[str(row["state"])],
        slot=int(row["slot"]),
        confirmations=int(row["confirmations"]),
        error=_error_from_json(row["error"]),
        last_valid_block_height=int(row["last_valid_block_height"]),
        update_time=float(row["update_time"]),
        create_time=float(row["create_time"]),
        send_count=int(row["send_count"]),
    )


def _in_list(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


class SqlSubmissionLog:
    """``relay_submissions`` in the service's :class:`~service.store.Database`."""

    def __init__(self, database: Database, *, listener: SubmissionListener | None = None) -> None:
        """``listener`` hears every change of state ``save`` writes (same transaction)."""
        self._db = database
        self.listener = listener
        # PostgreSQL: replicas claiming at once skip each other's rows instead of
        # waiting for them. SQLite: one writer at a time already.
        self._skip_locked = " FOR UPDATE SKIP LOCKED" if database.dialect == "postgresql" else ""

    async def record(
        self, status: TxStatus, wire: bytes, *, cluster: str, owner: str, lease_until: float
    ) -> bool:
        async with self._db.transaction("relay.record") as conn:
            return (
                await conn.execute(
                    f"INSERT INTO relay_submissions ({_COLUMNS}, cluster, owner, "
                    "lease_expire_time, trace_context) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
                    "$9, $10, $11, $12, $13, $14) ON CONFLICT (signature) DO NOTHING",
                    status.signature,
                    wire,
                    status.state.name,
                    status.slot,
                    status.confirmations,
                    _error_json(status.error),
                    status.last_valid_block_height,
                    status.send_count,
                    status.create_time or status.update_time,
                    status.update_time,
                    cluster,
                    owner,
                    lease_until,
                    current_traceparent(),
                )
                == 1
            )

    async def save(self, statuses: Sequence[TxStatus], *, owner: str, now: float) -> None:
        if not statuses:
            return
        rows = [
            (
                s.signature,
                s.state.name,
                s.slot,
                s.confirmations,
                _error_json(s.error),
                s.send_count,
                s.update_time,
                now if s.state.terminal else None,
                owner,
            )
            for s in statuses
        ]
        async with self._db.transaction("relay.save") as conn:
            before = await self._before(conn, statuses, owner) if self.listener else {}
            await conn.executemany(
                "UPDATE relay_submissions SET state = $2, slot = $3, confirmations = $4, "
                "error = $5, send_count = $6, update_time = $7, done_time = $8 "
                "WHERE signature = $1 AND owner = $9 AND done_time IS NULL",
                rows,
            )
            if self.listener is not None:
                changes = [
                    SubmissionChange(
                        status=s,
                        previous=TxState[str(row["state"])],
                        wire=bytes(row["wire"]),
                        trace_context=str(row["trace_context"] or ""),
                    )
                    for s in statuses
                    if (row := before.get(s.signature)) is not None
                    and str(row["state"]) != s.state.name
                ]
                if changes:
                    await self.listener.submissions_changed(conn, changes)

    @staticmethod
    async def _before(conn: Connection, statuses: Sequence[TxStatus], owner: str) -> dict[str, Row]:
        """The recorded rows that ``save`` is about to change (owned, unfinished)."""
        found: dict[str, Row] = {}
        signatures = [s.signature for s in statuses]
        for start in range(0, len(signatures), _BATCH):
            chunk = signatures[start : start + _BATCH]
            for row in await conn.fetch(
                "SELECT signature, state, wire, trace_context FROM relay_submissions "
                f"WHERE signature IN ({_in_list(len(chunk))}) AND owner = ${len(chunk) + 1} "
                "AND done_time IS NULL",
                *chunk,
                owner,
            ):
                found[str(row["signature"])] = row
        return found

    async def renew(self, *, owner: str, lease_until: float) -> set[str]:
        async with self._db.transaction("relay.renew") as conn:
            rows = await conn.fetch(
                "UPDATE relay_submissions SET lease_expire_time = $1 "
                "WHERE owner = $2 AND done_time IS NULL RETURNING signature",
                lease_until,
                owner,
            )
        return {str(row[0]) for row in rows}

    async def claim(
        self, *, owner: str, cluster: str, now: float, lease_until: float, limit: int
    ) -> list[StoredSubmission]:
        if limit <= 0:
            return []
        async with self._db.transaction("relay.claim") as conn:
            rows = await conn.fetch(
                "UPDATE relay_submissions SET owner = $1, lease_expire_time = $2 "
                "WHERE signature IN (SELECT signature FROM relay_submissions "
                "WHERE done_time IS NULL AND lease_expire_time < $3 AND cluster = $4 "
                f"ORDER BY lease_expire_time LIMIT $5{self._skip_locked}) "
                f"RETURNING {_COLUMNS}",
                owner,
                lease_until,
                now,
                cluster,
                limit,
            )
        return [StoredSubmission(status=_status(row), wire=bytes(row["wire"])) for row in rows]

    async def release(self, *, owner: str) -> int:
        async with self._db.transaction("relay.release") as conn:
            return await conn.execute(
                "UPDATE relay_submissions SET owner = NULL, lease_expire_time = 0 "
                "WHERE owner = $1 AND done_time IS NULL",
                owner,
            )

    async def get(self, signatures: Sequence[str]) -> dict[str, TxStatus]:
        found: dict[str, TxStatus] = {}
        async with self._db.transaction("relay.get", write=False) as conn:
            for start in range(0, len(signatures), _BATCH):
                chunk = signatures[start : start + _BATCH]
                for row in await conn.fetch(
                    f"SELECT {_COLUMNS} FROM relay_submissions "
                    f"WHERE signature IN ({_in_list(len(chunk))})",
                    *chunk,
                ):
                    found[str(row["signature"])] = _status(row)
        return found

    async def delete(self, signatures: Sequence[str]) -> None:
        async with self._db.transaction("relay.delete") as conn:
            for start in range(0, len(signatures), _BATCH):
                chunk = signatures[start : start + _BATCH]
                await conn.execute(
                    f"DELETE FROM relay_submissions WHERE signature IN ({_in_list(len(chunk))})",
                    *chunk,
                )

    async def purge(self, *, finished_before: float, limit: int) -> int:
        async with self._db.transaction("relay.purge") as conn:
            return await conn.execute(
                "DELETE FROM relay_submissions WHERE signature IN (SELECT signature FROM "
                "relay_submissions WHERE done_time IS NOT NULL AND done_time < $1 LIMIT $2)",
                finished_before,
                limit,
            )
