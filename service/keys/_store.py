"""The durable key store: the keys' tables in the service's database (both dialects)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from service.keys._errors import KeyStoreUnavailableError
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
from service.store import (
    Connection,
    Database,
    Dialect,
    StoreConflictError,
    StoreUnavailableError,
    open_database,
)


class KeyStore(Protocol):
    """Persistence of keys and their audit log.

    Every method is one transaction. Database failures surface as
    :class:`KeyStoreUnavailableError`. Writes of key metadata are optimistic
    (``version``); usage counters are only ever added to, so they never conflict.
    """

    @property
    def dialect(self) -> Dialect:
        """The SQL dialect ("sqlite" or "postgresql")."""
        ...

    async def insert(
        self, items: Sequence[tuple[KeyRecord, AuditEvent]], *, only_if_empty: bool = False
    ) -> bool:
        """Insert new keys with their "created" events, all or none.

        Returns:
            False (and nothing written) if ``only_if_empty`` and the store holds a key.

        Raises:
            DuplicateKeyIdError: A key id is taken.
        """
        ...

    async def get(self, key_id: str) -> KeyRecord | None:
        """The key, or None."""
        ...

    async def list_keys(
        self, *, after: str, limit: int, state: KeyState | None, now: datetime
    ) -> tuple[list[KeyRecord], int]:
        """Up to ``limit`` keys with key_id > ``after`` in key-id order, in ``state`` at
        ``now`` (None: any); and how many keys match the filter in all."""
        ...

    async def list_overdue(self, now: datetime) -> list[KeyRecord]:
        """Active keys (at ``now``) whose rotate_time is not after ``now``."""
        ...

    async def update(self, record: KeyRecord, *, expected_version: int, event: AuditEvent) -> bool:
        """Write ``record``'s metadata and log ``event`` if the stored version is still
        ``expected_version``; False (nothing written) otherwise. Usage columns are
        left alone."""
        ...

    async def add_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        """Add counted calls: ``request_count += count``, ``last_used_time`` = the later."""
        ...

    async def audit_events(self, key_id: str) -> list[AuditEvent]:
        """The key's audit log, oldest first."""
        ...

    async def close(self) -> None:
        """Release what the store owns (idempotent)."""
        ...


def state_condition(state: KeyState | None, now: object, bind: Callable[[object], str]) -> str:
    """SQL condition selecting keys in ``state`` at ``now`` (both dialects).

    ``bind`` adds a query parameter and returns its placeholder.
    """
    if state is None:
        return "TRUE"
    if state is KeyState.REVOKED:
        return "revoke_time IS NOT NULL"
    at = bind(now)
    if state is KeyState.ACTIVE:
        return f"revoke_time IS NULL AND (expire_time IS NULL OR expire_time > {at})"
    return f"revoke_time IS NULL AND expire_time <= {at}"


def _binder(params: list[object]) -> Callable[[object], str]:
    """Append a query parameter, return its ``$n`` placeholder."""

    def bind(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    return bind


def _placeholders(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


_SELECT: Final = f"SELECT {', '.join(KEY_COLUMNS)} FROM api_keys"
_INSERT: Final = (
    f"INSERT INTO api_keys ({', '.join(KEY_COLUMNS)}) VALUES ({_placeholders(len(KEY_COLUMNS))})"
)
_UPDATE: Final = (
    "UPDATE api_keys SET "
    + ", ".join(f"{c} = ${i}" for i, c in enumerate(UPDATABLE_COLUMNS, start=1))
    + f" WHERE key_id = ${len(UPDATABLE_COLUMNS) + 1} AND version = ${len(UPDATABLE_COLUMNS) + 2}"
)
_INSERT_EVENT: Final = (
    "INSERT INTO api_key_events (key_id, event, event_time, details) VALUES ($1, $2, $3, $4)"
)
# The later of the stored and the new last_used_time (NULL: never used before).
_ADD_USAGE: Final[dict[Dialect, str]] = {
    "sqlite": "UPDATE api_keys SET request_count = request_count + $2, "
    "last_used_time = max(coalesce(last_used_time, $3), $3) WHERE key_id = $1",
    "postgresql": "UPDATE api_keys SET request_count = request_count + $2, "
    "last_used_time = GREATEST(last_used_time, $3) WHERE key_id = $1",
}
# The constraint a duplicate key id breaks, as each engine names it.
_KEY_ID_CONSTRAINTS: Final = frozenset({"api_keys.key_id", "api_keys_pkey"})


def _sqlite_time(value: datetime) -> str:
    """UTC, fixed-width ISO 8601 (text order is time order)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _sqlite_parse_time(value: object) -> datetime:
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _postgres_time(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _postgres_parse_time(value: Any) -> datetime:
    # asyncpg returns TIMESTAMPTZ as aware datetimes already in UTC.
    result: datetime = value
    return result


class SqlKeyStore:
    """The keys' tables (``api_keys``, ``api_key_events``) in a :class:`Database`."""

    def __init__(self, database: Database, *, owns_database: bool = False) -> None:
        """``owns_database``: :meth:`close` closes the database too (a store opened on
        its own, as by :func:`open_store`; the server closes its shared one itself)."""
        self._db = database
        self._owns = owns_database
        self._closed = False
        if database.dialect == "sqlite":
            self._encode_time: Callable[[datetime], Any] = _sqlite_time
            self._decode_time: Callable[[Any], datetime] = _sqlite_parse_time
        else:
            self._encode_time = _postgres_time
            self._decode_time = _postgres_parse_time

    @property
    def dialect(self) -> Dialect:
        return self._db.dialect

    @contextlib.asynccontextmanager
    async def _transaction(self, operation: str, *, write: bool) -> AsyncIterator[Connection]:
        try:
            async with self._db.transaction(operation, write=write) as conn:
                yield conn
        except StoreUnavailableError as exc:
            raise KeyStoreUnavailableError(operation, retry_after=exc.retry_after) from exc
        except StoreConflictError as exc:
            if exc.constraint in _KEY_ID_CONSTRAINTS:
                raise DuplicateKeyIdError(exc.constraint) from None
            raise KeyStoreUnavailableError(operation) from exc

    async def _log_event(self, conn: Connection, event: AuditEvent) -> None:
        await conn.execute(
            _INSERT_EVENT,
            event.key_id,
            event.event.value,
            self._encode_time(event.time),
            event_details_json(event),
        )

    async def insert(
        self, items: Sequence[tuple[KeyRecord, AuditEvent]], *, only_if_empty: bool = False
    ) -> bool:
        async with self._transaction("insert", write=True) as conn:
            if only_if_empty:
                # Serialise bootstraps: without the lock two empty-store checks could
                # both pass and each replica would create its own first keys.
                await conn.lock("keys.bootstrap")
                if await conn.fetchrow("SELECT 1 FROM api_keys LIMIT 1") is not None:
                    return False
            for record, event in items:
                await conn.execute(
                    _INSERT, *record_values(record, KEY_COLUMNS, encode_time=self._encode_time)
                )
                await self._log_event(conn, event)
        return True

    async def get(self, key_id: str) -> KeyRecord | None:
        async with self._transaction("get", write=False) as conn:
            row = await conn.fetchrow(f"{_SELECT} WHERE key_id = $1", key_id)
        return None if row is None else record_from_row(row, decode_time=self._decode_time)

    async def list_keys(
        self, *, after: str, limit: int, state: KeyState | None, now: datetime
    ) -> tuple[list[KeyRecord], int]:
        at = self._encode_time(now)
        page_params: list[object] = [after, limit]
        page_condition = state_condition(state, at, _binder(page_params))
        count_params: list[object] = []
        count_condition = state_condition(state, at, _binder(count_params))
        async with self._transaction("list", write=False) as conn:
            rows = await conn.fetch(
                f"{_SELECT} WHERE key_id > $1 AND {page_condition} ORDER BY key_id LIMIT $2",
                *page_params,
            )
            total = await conn.fetchval(
                f"SELECT count(*) FROM api_keys WHERE {count_condition}", *count_params
            )
        records = [record_from_row(row, decode_time=self._decode_time) for row in rows]
        return records, int(total or 0)

    async def list_overdue(self, now: datetime) -> list[KeyRecord]:
        async with self._transaction("list_overdue", write=False) as conn:
            rows = await conn.fetch(
                f"{_SELECT} WHERE revoke_time IS NULL AND rotate_time <= $1 "
                "AND (expire_time IS NULL OR expire_time > $1) ORDER BY key_id",
                self._encode_time(now),
            )
        return [record_from_row(row, decode_time=self._decode_time) for row in rows]

    async def update(self, record: KeyRecord, *, expected_version: int, event: AuditEvent) -> bool:
        values = record_values(record, UPDATABLE_COLUMNS, encode_time=self._encode_time)
        async with self._transaction("update", write=True) as conn:
            # PostgreSQL (READ COMMITTED): a concurrent writer of the same row blocks
            # this UPDATE until it commits; the WHERE is then re-checked against the
            # new version, so exactly one of two racing writers matches. SQLite: one
            # writer at a time.
            if await conn.execute(_UPDATE, *values, record.key_id, expected_version) != 1:
                return False
            await self._log_event(conn, event)
        return True

    async def add_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        if not usage:
            return
        # Sorted: replicas flushing overlapping keys lock rows in the same order (no
        # deadlock); one transaction, so a failed flush can be retried whole.
        rows = [
            (key, delta.calls, self._encode_time(delta.last_used_time))
            for key, delta in sorted(usage.items())
        ]
        async with self._transaction("add_usage", write=True) as conn:
            await conn.executemany(_ADD_USAGE[self.dialect], rows)

    async def audit_events(self, key_id: str) -> list[AuditEvent]:
        async with self._transaction("audit_events", write=False) as conn:
            rows = await conn.fetch(
                "SELECT key_id, event, event_time, details FROM api_key_events "
                "WHERE key_id = $1 ORDER BY id",
                key_id,
            )
        return [event_from_row(row, decode_time=self._decode_time) for row in rows]

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._owns:
                await self._db.close()


async def open_store(database_url: str) -> KeyStore:
    """A key store on a database of its own at ``database_url``, connected and migrated
    (the command line's and tests' way; the server shares its :class:`Database`).

    Raises:
        ValueError: The URL has another scheme.
        KeyStoreUnavailableError: The database cannot be reached or migrated.
    """
    try:
        database = await open_database(database_url)
    except StoreUnavailableError as exc:
        raise KeyStoreUnavailableError("connect") from exc
    return SqlKeyStore(database, owns_database=True)
