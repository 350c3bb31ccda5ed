"""The service's database on both engines: one SQL for both, conflicts, rollback, the
migration history; and on PostgreSQL behind a TCP fault proxy: the timeout of every
transaction and the outage breaker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.store import (
    FAILURES_TO_OPEN,
    MIGRATIONS,
    Database,
    StoreConflictError,
    StoreUnavailableError,
    describe_url,
    open_database,
)
from tests._proxy import TcpProxy
from tests._wait import until
from tests.conftest import Backend

TIMEOUT = 0.3
RECHECK = 0.1
# Far above TIMEOUT: a transaction still running then has hung.
HUNG = 10.0


@pytest.fixture
async def database(backend: Backend) -> AsyncIterator[Database]:
    opened = await open_database(backend.url)
    async with opened.transaction("create") as conn:
        await conn.execute("CREATE TABLE things (name TEXT PRIMARY KEY, size INTEGER NOT NULL)")
    yield opened
    await opened.close()


async def test_one_sql_for_both_engines(database: Database) -> None:
    async with database.transaction("write") as conn:
        assert await conn.execute("INSERT INTO things (name, size) VALUES ($1, $2)", "a", 1) == 1
        await conn.executemany(
            "INSERT INTO things (name, size) VALUES ($1, $2)", [("b", 2), ("c", 3)]
        )
        changed = await conn.execute("UPDATE things SET size = size + $1 WHERE size > $2", 10, 1)
        assert changed == 2
    async with database.transaction("read", write=False) as conn:
        rows = await conn.fetch("SELECT name, size FROM things ORDER BY name")
        assert [(row["name"], row[1]) for row in rows] == [("a", 1), ("b", 12), ("c", 13)]
        row = await conn.fetchrow("SELECT size FROM things WHERE name = $1", "b")
        assert row is not None and row["size"] == 12
        assert await conn.fetchrow("SELECT size FROM things WHERE name = $1", "z") is None
        # $2 used before $1, and twice: numbered, not positional.
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM things WHERE size > $2 OR name = $1 OR name = $1", "a", 5
            )
            == 3
        )


async def test_a_failed_block_writes_nothing_and_a_conflict_is_no_outage(
    database: Database,
) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction("write") as conn:
            await conn.execute("INSERT INTO things (name, size) VALUES ($1, $2)", "a", 1)
            raise RuntimeError("the caller changed its mind")
    async with database.transaction("write") as conn:
        await conn.execute("INSERT INTO things (name, size) VALUES ($1, $2)", "a", 1)
    with pytest.raises(StoreConflictError) as caught:
        async with database.transaction("write") as conn:
            await conn.execute("INSERT INTO things (name, size) VALUES ($1, $2)", "b", 2)
            await conn.execute("INSERT INTO things (name, size) VALUES ($1, $2)", "a", 2)
    assert "things" in caught.value.constraint
    assert database.up
    async with database.transaction("read", write=False) as conn:
        assert await conn.fetchval("SELECT count(*) FROM things") == 1


def test_the_history_has_each_version_once_in_both_dialects() -> None:
    sqlite, postgresql = MIGRATIONS["sqlite"], MIGRATIONS["postgresql"]
    assert [(m.version, m.owner, m.description) for m in sqlite] == [
        (m.version, m.owner, m.description) for m in postgresql
    ]
    assert [m.version for m in sqlite] == list(range(1, len(sqlite) + 1))
    assert {m.owner for m in sqlite} >= {"keys", "relay"}


def test_urls_in_logs_carry_no_credentials() -> None:
    shown = describe_url("postgresql://user:hunter2@db.internal:5433/app?sslmode=require")
    assert shown == "postgresql://db.internal:5433/app"
    assert describe_url("sqlite:///data/keys.db") == "sqlite:///data/keys.db"
    with pytest.raises(ValueError) as caught:
        Database("mysql://user:hunter2@db/keys")
    assert "hunter2" not in str(caught.value)


@contextlib.contextmanager
def _writing(path: Path, *, wal: bool) -> Iterator[sqlite3.Connection]:
    """Another process's connection holding the write lock of the SQLite file at `path`
    (until the block ends or the test commits)."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        if wal:
            other.execute("PRAGMA journal_mode = WAL")
        other.execute("BEGIN IMMEDIATE")
        yield other
    finally:
        other.close()


async def test_sqlite_first_start_waits_for_a_writer_of_the_new_file(tmp_path: Path) -> None:
    """Switching a file to WAL while another connection writes it is refused at once
    ("database is locked"), whatever the busy timeout: the switch is tried again."""
    path = tmp_path / "keys.db"
    with _writing(path, wal=False) as other:
        asyncio.get_running_loop().call_later(TIMEOUT, other.commit)
        database = Database(f"sqlite:///{path}", timeout=HUNG)
        try:
            assert await database.connect() == [m.version for m in MIGRATIONS["sqlite"]]
        finally:
            await database.close()


async def test_sqlite_migrations_wait_for_another_writer_beyond_the_call_timeout(
    tmp_path: Path,
) -> None:
    """Another replica migrating (or any writer) holds the lock longer than one call may
    take: a starting replica's migrations wait for it, as long as migrations may take."""
    path = tmp_path / "keys.db"
    with _writing(path, wal=True) as other:
        asyncio.get_running_loop().call_later(3 * TIMEOUT, other.commit)
        database = Database(f"sqlite:///{path}", timeout=TIMEOUT)
        try:
            assert await database.connect() == [m.version for m in MIGRATIONS["sqlite"]]
        finally:
            await database.close()


async def test_sqlite_calls_queued_past_their_timeout_are_no_outage(tmp_path: Path) -> None:
    """One SQLite connection serves the process's transactions in turn: calls that time
    out waiting behind a slow one (a busy machine) fail, but the database is up."""
    database = await open_database(f"sqlite:///{tmp_path / 'keys.db'}", timeout=TIMEOUT)
    try:
        holding = asyncio.Event()

        async def slow() -> None:
            async with database.transaction("slow", timeout=HUNG):
                holding.set()
                await asyncio.sleep(3 * TIMEOUT)

        holder = asyncio.create_task(slow())
        await holding.wait()

        async def queued() -> None:
            async with database.transaction("queued", write=False):
                pass

        results = await asyncio.gather(
            *(queued() for _ in range(2 * FAILURES_TO_OPEN)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailableError) for r in results), results
        assert database.up
        await holder
        async with database.transaction("after", write=False) as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await database.close()


async def test_not_connected_fails_at_once_and_connect_says_why(postgres_url: str) -> None:
    proxy = TcpProxy.for_url(postgres_url)
    await proxy.start()
    await proxy.refuse()
    database = Database(proxy.url_through(postgres_url), timeout=TIMEOUT)
    try:
        with pytest.raises(StoreUnavailableError):
            async with database.transaction("get", write=False):
                raise AssertionError("a transaction ran without a connection")
        with pytest.raises(StoreUnavailableError) as caught:
            await database.connect()
        assert "ConnectionRefusedError" in caught.value.detail
        assert not database.up
        await proxy.restore()
        # An empty schema: the whole history is applied.
        assert await database.connect() == [m.version for m in MIGRATIONS["postgresql"]]
        assert database.up
    finally:
        await database.close()
        await proxy.stop()


@pytest.fixture
async def behind_proxy(postgres_url: str) -> AsyncIterator[tuple[Database, TcpProxy, list[bool]]]:
    proxy = TcpProxy.for_url(postgres_url)
    await proxy.start()
    database = await open_database(
        proxy.url_through(postgres_url), timeout=TIMEOUT, recheck=RECHECK
    )
    changes: list[bool] = []
    database.on_change(changes.append)
    yield database, proxy, changes
    await proxy.restore()
    await database.close()
    await proxy.stop()


async def _select_one(database: Database) -> object:
    async with database.transaction("probe-like", write=False) as conn:
        return await conn.fetchval("SELECT 1")


@pytest.mark.parametrize("fault", ["refused", "blackholed"])
async def test_an_outage_answers_in_bounded_time_fails_fast_and_ends(
    behind_proxy: tuple[Database, TcpProxy, list[bool]],
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    database, proxy, changes = behind_proxy
    assert await _select_one(database) == 1
    if fault == "refused":
        await proxy.refuse()
    else:
        proxy.blackhole()
    # The first calls find out (a blackhole: each when its timeout runs out, not the
    # caller's deadline); FAILURES_TO_OPEN in a row make an outage (one slow call on a
    # busy machine does not)...
    for _ in range(FAILURES_TO_OPEN):
        assert changes == [] and database.up
        with pytest.raises(StoreUnavailableError) as first:
            await asyncio.wait_for(_select_one(database), HUNG)
        assert first.value.retry_after > 0 and first.value.detail
    assert changes == [False] and not database.up
    if fault == "blackholed":
        assert database.stats().timeouts == FAILURES_TO_OPEN
    # ... the next ones fail at once, without trying, while the probe keeps trying.
    for _ in range(20):
        with pytest.raises(StoreUnavailableError):
            await _select_one(database)
    assert database.stats().rejected == 20
    await proxy.restore()
    await until(lambda: database.up, what="the database back")
    assert changes == [False, True]
    assert await _select_one(database) == 1
    assert database.stats().outages == 1
    # The outage is the store's to report (one line each way), not a driver's
    # traceback every second.
    assert [r for r in caplog.records if r.name.startswith("asyncpg")] == []
