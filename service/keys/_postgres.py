"""The PostgreSQL key store (several replicas share it), over an asyncpg pool."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from service.keys._errors import KeyStoreUnavailableError
from service.keys._migrations import MIGRATIONS, POSTGRES_MIGRATIONS_TABLE, Dialect
from service.keys._model import AuditEvent, KeyState
from service.keys._records import (
    KEY_COLUMNS,
    UPDATABLE_COLUMNS,
    DuplicateKeyIdError,
    KeyRecord,
    UsageDelta,
    event_details_json,
    event_from_row,
    record_from_row,
    record_values,
)
from service.keys._store import state_condition

log = logging.getLogger(__name__)

_SELECT: Final = f"SELECT {', '.join(KEY_COLUMNS)} FROM api_keys"
_INSERT: Final = (
    f"INSERT INTO api_keys ({', '.join(KEY_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(KEY_COLUMNS) + 1))})"
)
_UPDATE: Final = (
    "UPDATE api_keys SET "
    + ", ".join(f"{c} = ${i}" for i, c in enumerate(UPDATABLE_COLUMNS, start=1))
    + f" WHERE key_id = ${len(UPDATABLE_COLUMNS) + 1} AND version = ${len(UPDATABLE_COLUMNS) + 2}"
)
_INSERT_EVENT: Final = (
    "INSERT INTO api_key_events (key_id, event, event_time, details) VALUES ($1, $2, $3, $4)"
)
_ADD_USAGE: Final = (
    "UPDATE api_keys SET request_count = request_count + $2, "
    "last_used_time = GREATEST(last_used_time, $3) WHERE key_id = $1"
)
# Transaction-scoped advisory locks, per schema so that separate schemas (test runs,
# tenants) in one database do not wait for each other.
_LOCK_MIGRATIONS: Final = (
    "SELECT pg_advisory_xact_lock(hashtext('agent_staking.keys.migrate.' || current_schema()))"
)
_LOCK_BOOTSTRAP: Final = (
    "SELECT pg_advisory_xact_lock(hashtext('agent_staking.keys.bootstrap.' || current_schema()))"
)
# Seconds to wait for a pooled connection / for one statement before calling the
# store unavailable (a hung database must not hang every caller).
_ACQUIRE_TIMEOUT: Final = 10.0
_COMMAND_TIMEOUT: Final = 10.0
# What a broken or unreachable database raises (constraint violations are handled first).
_DRIVER_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _time(value: Any) -> datetime:
    # asyncpg returns TIMESTAMPTZ as aware datetimes already in UTC.
    result: datetime = value
    return result


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _binder(params: list[object]) -> Callable[[object], str]:
    """Append a query parameter, return its ``$n`` placeholder."""

    def bind(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    return bind


class PostgresKeyStore:
    """Keys in PostgreSQL. Each method runs on a pooled connection in one transaction."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._closed = False

    @property
    def dialect(self) -> Dialect:
        return "postgresql"

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> PostgresKeyStore:
        """Connect a pool to ``dsn`` (a ``postgresql://`` URL)."""
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, command_timeout=_COMMAND_TIMEOUT
            )
        except _DRIVER_ERRORS as exc:
            # The exception text may hold the host but never the password.
            log.error("cannot connect to the PostgreSQL key store: %s", exc)
            raise KeyStoreUnavailableError("connect") from exc
        return cls(pool)

    @asynccontextmanager
    async def _transaction(self, operation: str) -> AsyncIterator[Any]:
        try:
            async with self._pool.acquire(timeout=_ACQUIRE_TIMEOUT) as conn, conn.transaction():
                yield conn
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "api_keys_pkey":
                raise DuplicateKeyIdError(exc.constraint_name) from None
            raise KeyStoreUnavailableError(operation) from exc
        except _DRIVER_ERRORS as exc:
            log.warning("PostgreSQL key store failed during %s: %s", operation, exc)
            raise KeyStoreUnavailableError(operation) from exc

    async def migrate(self) -> list[int]:
        applied: list[int] = []
        async with self._transaction("migrate") as conn:
            # Two replicas starting together: the second waits here, then finds
            # every version applied. The lock ends with the transaction.
            await conn.execute(_LOCK_MIGRATIONS)
            await conn.execute(POSTGRES_MIGRATIONS_TABLE)
            done = {
                row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")
            }
            for migration in MIGRATIONS["postgresql"]:
                if migration.version in done:
                    continue
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())",
                    migration.version,
                )
                applied.append(migration.version)
        if applied:
            log.info("key store (postgresql) migrated to version %d", applied[-1])
        return applied

    @staticmethod
    async def _log_event(conn: Any, event: AuditEvent) -> None:
        await conn.execute(
            _INSERT_EVENT,
            event.key_id,
            event.event.value,
            _utc(event.time),
            event_details_json(event),
        )

    async def insert(
        self, items: Sequence[tuple[KeyRecord, AuditEvent]], *, only_if_empty: bool = False
    ) -> bool:
        async with self._transaction("insert") as conn:
            if only_if_empty:
                # Serialise bootstraps: without the lock two empty-store checks could
                # both pass and each replica would create its own first keys.
                await conn.execute(_LOCK_BOOTSTRAP)
                if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM api_keys)"):
                    return False
            for record, event in items:
                await conn.execute(_INSERT, *record_values(record, KEY_COLUMNS, encode_time=_utc))
                await self._log_event(conn, event)
        return True

    async def get(self, key_id: str) -> KeyRecord | None:
        async with self._transaction("get") as conn:
            row = await conn.fetchrow(f"{_SELECT} WHERE key_id = $1", key_id)
        return None if row is None else record_from_row(row, decode_time=_time)

    async def list_keys(
        self, *, after: str, limit: int, state: KeyState | None, now: datetime
    ) -> tuple[list[KeyRecord], int]:
        page_params: list[object] = [after, limit]
        page_condition = state_condition(state, _utc(now), _binder(page_params))
        count_params: list[object] = []
        count_condition = state_condition(state, _utc(now), _binder(count_params))
        async with self._transaction("list") as conn:
            rows = await conn.fetch(
                f"{_SELECT} WHERE key_id > $1 AND {page_condition} ORDER BY key_id LIMIT $2",
                *page_params,
            )
            total: int = await conn.fetchval(
                f"SELECT count(*) FROM api_keys WHERE {count_condition}", *count_params
            )
        return [record_from_row(row, decode_time=_time) for row in rows], total

    async def list_overdue(self, now: datetime) -> list[KeyRecord]:
        async with self._transaction("list_overdue") as conn:
            rows = await conn.fetch(
                f"{_SELECT} WHERE revoke_time IS NULL AND rotate_time <= $1 "
                "AND (expire_time IS NULL OR expire_time > $1) ORDER BY key_id",
                _utc(now),
            )
        return [record_from_row(row, decode_time=_time) for row in rows]

    async def update(self, record: KeyRecord, *, expected_version: int, event: AuditEvent) -> bool:
        values = record_values(record, UPDATABLE_COLUMNS, encode_time=_utc)
        async with self._transaction("update") as conn:
            # Under READ COMMITTED a concurrent writer of the same row blocks this UPDATE
            # until it commits; the WHERE is then re-checked against the new version,
            # so exactly one of two racing writers matches.
            status = await conn.execute(_UPDATE, *values, record.key_id, expected_version)
            if status != "UPDATE 1":
                return False
            await self._log_event(conn, event)
        return True

    async def add_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        if not usage:
            return
        # Sorted: replicas flushing overlapping keys lock rows in the same order
        # (no deadlock); one transaction, so a failed flush can be retried whole.
        rows = [
            (key, delta.calls, _utc(delta.last_used_time)) for key, delta in sorted(usage.items())
        ]
        async with self._transaction("add_usage") as conn:
            await conn.executemany(_ADD_USAGE, rows)

    async def audit_events(self, key_id: str) -> list[AuditEvent]:
        async with self._transaction("audit_events") as conn:
            rows = await conn.fetch(
                "SELECT key_id, event, event_time, details FROM api_key_events "
                "WHERE key_id = $1 ORDER BY id",
                key_id,
            )
        return [event_from_row(row, decode_time=_time) for row in rows]

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pool.close()
