"""The two SQL engines behind :class:`~service.store.Database`: SQLite and PostgreSQL.

Each opens connections and runs one transaction at a time per connection, bounded
by a deadline; both speak ``$1, $2, ...`` placeholders (SQLite's ``?NNN`` are
rewritten), so most statements are written once for both.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import aiosqlite
import asyncpg  # type: ignore[import-untyped,unused-ignore]

from service.store._errors import StoreBusyError, StoreConflictError

Dialect = Literal["sqlite", "postgresql"]

_PLACEHOLDER: Final = re.compile(r"\$(\d+)")
# What a broken, unreachable or hung database raises (constraint violations apart).
PG_DRIVER_ERRORS: Final[tuple[type[Exception], ...]] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
SQLITE_DRIVER_ERRORS: Final[tuple[type[Exception], ...]] = (
    OSError,
    TimeoutError,
    sqlite3.Error,
)


class Row(Protocol):
    """A row addressable by column name or position (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: str | int, /) -> Any: ...


class Connection(Protocol):
    """One transaction's statements. SQL uses ``$1, $2, ...`` placeholders."""

    async def execute(self, sql: str, *args: object) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """Run a statement once per row of arguments."""
        ...

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        """Every row of a query."""
        ...

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        """The first row of a query, or None."""
        ...

    async def fetchval(self, sql: str, *args: object) -> Any:
        """The first column of the first row, or None."""
        ...

    async def lock(self, name: str) -> None:
        """Serialise with every other transaction that takes the lock ``name`` (held
        until this one ends). SQLite write transactions are serial already."""
        ...


class Engine(Protocol):
    dialect: Dialect
    driver_errors: tuple[type[Exception], ...]
    """What the driver raises when the database is broken, unreachable or hung."""

    async def connect(self, timeout: float) -> None: ...

    def transaction(
        self, *, write: bool, timeout: float
    ) -> AbstractAsyncContextManager[Connection]: ...

    async def close(self) -> None: ...


# --- SQLite -----------------------------------------------------------------------------


class _SqliteConnection:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, *args: object) -> int:
        cursor = await self._db.execute(_PLACEHOLDER.sub(r"?\1", sql), args)
        return max(0, cursor.rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._db.executemany(_PLACEHOLDER.sub(r"?\1", sql), rows)

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        async with self._db.execute(_PLACEHOLDER.sub(r"?\1", sql), args) as cursor:
            return list(await cursor.fetchall())

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        async with self._db.execute(_PLACEHOLDER.sub(r"?\1", sql), args) as cursor:
            row: Row | None = await cursor.fetchone()
            return row

    async def fetchval(self, sql: str, *args: object) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def lock(self, name: str) -> None:
        pass  # BEGIN IMMEDIATE: one writer at a time already


def _busy_ms(timeout: float) -> int:
    """The busy timeout that ends a wait for another process's lock inside ``timeout``
    (with time left to report it: aiosqlite's thread cannot be interrupted)."""
    return max(1, int(timeout * 800))


class SqliteEngine:
    """One SQLite file (WAL mode, so other processes may read while one writes).

    One connection; an asyncio lock keeps each transaction's statements together.
    Writes use ``BEGIN IMMEDIATE`` so that concurrent writers from other processes
    wait for the file lock (busy timeout, fitted to each transaction's timeout) instead
    of failing mid-transaction.
    """

    dialect: Dialect = "sqlite"
    driver_errors: tuple[type[Exception], ...] = SQLITE_DRIVER_ERRORS

    def __init__(self, path: str) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._busy_ms = 0

    async def connect(self, timeout: float) -> None:
        path = self._path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = sqlite3.Row
        self._busy_ms = 0  # a new connection starts without one
        try:
            # Waiting for another process's write lock stays inside the call's timeout.
            await self._set_busy_timeout(db, timeout)
            await db.execute("PRAGMA foreign_keys = ON")
            if path != ":memory:":
                await _switch_to_wal(db, timeout)
                # WAL + NORMAL: durable across process crashes, faster commits.
                await db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def _set_busy_timeout(self, db: aiosqlite.Connection, timeout: float) -> None:
        busy = _busy_ms(timeout)
        if busy != self._busy_ms:
            await db.execute(f"PRAGMA busy_timeout = {busy}")
            self._busy_ms = busy

    @asynccontextmanager
    async def transaction(self, *, write: bool, timeout: float) -> AsyncIterator[Connection]:
        db = self._db
        if db is None:
            raise sqlite3.OperationalError("not connected")
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            raise StoreBusyError(f"queued {timeout:g} s behind other transactions") from None
        try:
            async with asyncio.timeout_at(deadline):
                try:
                    # A migration may wait for another process's lock longer than a call.
                    await self._set_busy_timeout(db, timeout)
                    await db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    yield _SqliteConnection(db)
                    await db.execute("COMMIT")
                except BaseException as exc:
                    # Also after a cancelled BEGIN: aiosqlite runs statements in order,
                    # so this ends whatever the connection started.
                    with suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
                        # "UNIQUE constraint failed: api_keys.key_id"
                        raise StoreConflictError(str(exc).rpartition(": ")[2]) from None
                    raise
        finally:
            self._lock.release()

    async def close(self) -> None:
        # Until it runs, aiosqlite's worker thread (not a daemon) would keep the process
        # from exiting.
        db, self._db = self._db, None
        if db is not None:
            await db.close()


async def _switch_to_wal(db: aiosqlite.Connection, timeout: float) -> None:
    """Put the file in WAL mode (once per file; a no-op afterwards).

    Two connections switching a new file at once, or one switching while another
    writes it, is refused at once with "database is locked" (SQLite skips the busy
    handler where waiting could deadlock): try again until ``timeout`` (minus the
    margin `_busy_ms` keeps) has passed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _busy_ms(timeout) / 1000
    while True:
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or loop.time() >= deadline:
                raise
        await asyncio.sleep(0.01)


# --- PostgreSQL -------------------------------------------------------------------------


class _PostgresConnection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: object) -> int:
        status: str = await self._conn.execute(sql, *args)
        # "UPDATE 3", "INSERT 0 1", "DELETE 0"; other commands change no rows.
        last = status.rpartition(" ")[2]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._conn.executemany(sql, list(rows))

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return list(await self._conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        row: Row | None = await self._conn.fetchrow(sql, *args)
        return row

    async def fetchval(self, sql: str, *args: object) -> Any:
        return await self._conn.fetchval(sql, *args)

    async def lock(self, name: str) -> None:
        # Transaction-scoped, per schema: separate schemas (test runs, tenants) in one
        # database do not wait for each other.
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1 || current_schema()))",
            f"agent_staking.{name}.",
        )


class PostgresEngine:
    """PostgreSQL over an asyncpg pool; several replicas share it.

    A transaction that outlives its deadline has its connection terminated: a hung
    (blackholed) server cannot keep a caller waiting, and the server rolls the
    transaction back when the connection drops.
    """

    dialect: Dialect = "postgresql"
    driver_errors: tuple[type[Exception], ...] = PG_DRIVER_ERRORS

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: Any = None

    async def connect(self, timeout: float) -> None:
        # The pool opens one connection now (so a bad URL fails here) and the others
        # when needed; `timeout` bounds each connection attempt. No floor to keep:
        # during an outage asyncpg would retry it every second or so, logging a
        # traceback each time; the store's own probe reports the outage instead.
        self._pool = await asyncpg.create_pool(
            self._dsn, init_size=1, min_size=0, max_size=self._pool_size, timeout=timeout
        )

    @asynccontextmanager
    async def transaction(self, *, write: bool, timeout: float) -> AsyncIterator[Connection]:
        pool = self._pool
        if pool is None:
            raise asyncpg.InterfaceError("not connected")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await pool.acquire(timeout=timeout)
        watchdog = loop.call_at(deadline, conn.terminate)
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                yield _PostgresConnection(conn)
            except BaseException:
                if not conn.is_closed():
                    with suppress(*PG_DRIVER_ERRORS):
                        await transaction.rollback()
                raise
            await transaction.commit()
        except asyncpg.UniqueViolationError as exc:
            raise StoreConflictError(exc.constraint_name or "unique") from None
        except PG_DRIVER_ERRORS:
            if loop.time() >= deadline:
                raise TimeoutError(f"no answer within {timeout:g} s") from None
            raise
        finally:
            watchdog.cancel()
            # Resetting a healthy connection takes one round trip; a hung one is
            # terminated when the budget left runs out.
            with suppress(*PG_DRIVER_ERRORS):
                await pool.release(conn, timeout=max(0.01, deadline - loop.time()))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except PG_DRIVER_ERRORS:
                pool.terminate()
