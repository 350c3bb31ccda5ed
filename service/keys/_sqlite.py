"""The SQLite key store (the embedded default), over aiosqlite."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import aiosqlite

from service.keys._errors import KeyStoreUnavailableError
from service.keys._migrations import MIGRATIONS, SQLITE_MIGRATIONS_TABLE, Dialect
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
    f"VALUES ({', '.join('?' for _ in KEY_COLUMNS)})"
)
_UPDATE: Final = (
    f"UPDATE api_keys SET {', '.join(f'{c} = ?' for c in UPDATABLE_COLUMNS)} "
    "WHERE key_id = ? AND version = ?"
)
_INSERT_EVENT: Final = (
    "INSERT INTO api_key_events (key_id, event, event_time, details) VALUES (?, ?, ?, ?)"
)
_ADD_USAGE: Final = (
    "UPDATE api_keys SET request_count = request_count + ?, "
    "last_used_time = max(coalesce(last_used_time, ?), ?) WHERE key_id = ?"
)


def encode_time(value: datetime) -> str:
    """UTC, fixed-width ISO 8601 (text order is time order)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def decode_time(value: object) -> datetime:
    """Inverse of :func:`encode_time`."""
    return datetime.fromisoformat(str(value)).astimezone(UTC)


class SqliteKeyStore:
    """Keys in one SQLite file (WAL mode, so other processes may read while one writes).

    One connection per store; an asyncio lock keeps each transaction's statements
    together. Writes use ``BEGIN IMMEDIATE`` so that concurrent writers from other
    processes wait for the file lock (busy timeout) instead of failing mid-transaction.
    """

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def dialect(self) -> Dialect:
        return "sqlite"

    @classmethod
    async def open(cls, path: str) -> SqliteKeyStore:
        """Open (creating if needed) the database file at ``path`` or ``:memory:``."""
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            log.error("cannot open the SQLite key store: %s", exc)
            raise KeyStoreUnavailableError("connect") from exc
        db.row_factory = sqlite3.Row
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            await db.execute("PRAGMA foreign_keys = ON")
            if path != ":memory:":
                await db.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL: durable across process crashes, faster commits.
                await db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            await db.close()
            raise KeyStoreUnavailableError("connect") from exc
        return cls(db)

    @asynccontextmanager
    async def _transaction(self, operation: str, *, write: bool) -> AsyncIterator[None]:
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield
                except BaseException:
                    await self._db.execute("ROLLBACK")
                    raise
                await self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                if "api_keys.key_id" in str(exc):
                    raise DuplicateKeyIdError(str(exc)) from None
                raise KeyStoreUnavailableError(operation) from exc
            except sqlite3.Error as exc:
                log.warning("SQLite key store failed during %s: %s", operation, exc)
                raise KeyStoreUnavailableError(operation) from exc

    async def migrate(self) -> list[int]:
        applied: list[int] = []
        async with self._transaction("migrate", write=True):
            await self._db.execute(SQLITE_MIGRATIONS_TABLE)
            async with self._db.execute("SELECT version FROM schema_migrations") as cursor:
                done = {int(row[0]) for row in await cursor.fetchall()}
            for migration in MIGRATIONS["sqlite"]:
                if migration.version in done:
                    continue
                for statement in migration.statements:
                    await self._db.execute(statement)
                await self._db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (migration.version, encode_time(datetime.now(UTC))),
                )
                applied.append(migration.version)
        if applied:
            log.info("key store (sqlite) migrated to version %d", applied[-1])
        return applied

    async def _log_event(self, event: AuditEvent) -> None:
        await self._db.execute(
            _INSERT_EVENT,
            (event.key_id, event.event.value, encode_time(event.time), event_details_json(event)),
        )

    async def insert(
        self, items: Sequence[tuple[KeyRecord, AuditEvent]], *, only_if_empty: bool = False
    ) -> bool:
        async with self._transaction("insert", write=True):
            if only_if_empty:
                async with self._db.execute("SELECT 1 FROM api_keys LIMIT 1") as cursor:
                    if await cursor.fetchone() is not None:
                        return False
            for record, event in items:
                await self._db.execute(
                    _INSERT, record_values(record, KEY_COLUMNS, encode_time=encode_time)
                )
                await self._log_event(event)
        return True

    async def get(self, key_id: str) -> KeyRecord | None:
        async with (
            self._transaction("get", write=False),
            self._db.execute(f"{_SELECT} WHERE key_id = ?", (key_id,)) as cursor,
        ):
            row = await cursor.fetchone()
        return None if row is None else record_from_row(row, decode_time=decode_time)

    async def list_keys(
        self, *, after: str, limit: int, state: KeyState | None, now: datetime
    ) -> tuple[list[KeyRecord], int]:
        params: list[object] = []

        def bind(value: object) -> str:
            params.append(value)
            return "?"

        condition = state_condition(state, encode_time(now), bind)
        async with self._transaction("list", write=False):
            async with self._db.execute(
                f"SELECT count(*) FROM api_keys WHERE {condition}", params
            ) as cursor:
                row = await cursor.fetchone()
                total = 0 if row is None else int(row[0])
            async with self._db.execute(
                f"{_SELECT} WHERE key_id > ? AND {condition} ORDER BY key_id LIMIT ?",
                [after, *params, limit],
            ) as cursor:
                rows = await cursor.fetchall()
        return [record_from_row(row, decode_time=decode_time) for row in rows], total

    async def list_overdue(self, now: datetime) -> list[KeyRecord]:
        at = encode_time(now)
        async with (
            self._transaction("list_overdue", write=False),
            self._db.execute(
                f"{_SELECT} WHERE revoke_time IS NULL AND rotate_time <= ? "
                "AND (expire_time IS NULL OR expire_time > ?) ORDER BY key_id",
                (at, at),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [record_from_row(row, decode_time=decode_time) for row in rows]

    async def update(self, record: KeyRecord, *, expected_version: int, event: AuditEvent) -> bool:
        values = record_values(record, UPDATABLE_COLUMNS, encode_time=encode_time)
        async with self._transaction("update", write=True):
            cursor = await self._db.execute(_UPDATE, [*values, record.key_id, expected_version])
            if cursor.rowcount != 1:
                return False
            await self._log_event(event)
        return True

    async def add_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        if not usage:
            return
        rows = [
            (delta.calls, encode_time(delta.last_used_time), encode_time(delta.last_used_time), key)
            for key, delta in sorted(usage.items())
        ]
        async with self._transaction("add_usage", write=True):
            await self._db.executemany(_ADD_USAGE, rows)

    async def audit_events(self, key_id: str) -> list[AuditEvent]:
        async with (
            self._transaction("audit_events", write=False),
            self._db.execute(
                "SELECT key_id, event, event_time, details FROM api_key_events "
                "WHERE key_id = ? ORDER BY id",
                (key_id,),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [event_from_row(row, decode_time=decode_time) for row in rows]

    async def close(self) -> None:
        # Idempotent. Until it runs, aiosqlite's worker thread (not a daemon) would keep
        # the process from exiting.
        if not self._closed:
            self._closed = True
            await self._db.close()
