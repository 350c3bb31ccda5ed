"""Fixtures shared by every suite: one localnet per test process, and databases.

PostgreSQL isolation: each test gets a schema of its own (``ks_<session>_<n>``, dropped
afterwards), selected through the URL's ``search_path`` server setting, so parallel
test processes never see each other's tables. Unreachable PostgreSQL skips those
tests, except in CI (``CI=true``) where it fails them.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import asyncpg
import pytest

from service.localnet import LocalnetConfig, LocalnetServer
from tests._require import unavailable


@pytest.fixture(scope="session")
async def localnet() -> AsyncIterator[LocalnetServer]:
    """A localnet over HTTP on an ephemeral port, shared by the whole session.

    Slots are 100 ms so confirmation depths are reached quickly while a fetched
    blockhash still stays valid for 15 s.
    """
    server = LocalnetServer(LocalnetConfig(slot_duration=0.1, slots_per_epoch=432_000))
    await server.start()
    yield server
    await server.stop()


POSTGRES_URL = os.environ.get(
    "AGENT_STAKING_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
_SESSION = secrets.token_hex(4)
_schemas = itertools.count()


class FakeClock:
    """An injectable clock that moves only when told."""

    def __init__(self, start: datetime = datetime(2030, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass(frozen=True)
class Backend:
    """A fresh, empty database for one test."""

    name: str
    url: str
    sqlite_path: Path | None = None

    @property
    def dialect(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.sqlite_path is not None else "postgresql"

    async def execute(self, sql: str) -> None:
        """Run one statement on a connection of its own (an operator's, not the store's)."""
        if self.sqlite_path is not None:
            async with aiosqlite.connect(self.sqlite_path) as db:
                await db.execute(sql)
                await db.commit()
            return
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, read with the driver directly."""
        if self.sqlite_path is not None:
            async with aiosqlite.connect(self.sqlite_path) as db:
                async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as c:
                    tables = [str(row[0]) for row in await c.fetchall()]
                dump: dict[str, list[tuple[Any, ...]]] = {}
                for table in tables:
                    async with db.execute(f'SELECT * FROM "{table}"') as cursor:
                        dump[table] = [tuple(row) for row in await cursor.fetchall()]
                return dump
        conn = await asyncpg.connect(self.url)
        try:
            tables = [
                row["table_name"]
                for row in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                )
            ]
            return {
                table: [tuple(row.values()) for row in await conn.fetch(f'SELECT * FROM "{table}"')]
                for table in tables
            }
        finally:
            await conn.close()


def _postgres_unreachable(exc: BaseException) -> None:
    unavailable(f"PostgreSQL at {POSTGRES_URL} is unreachable ({exc!r}); the keys suite needs it")


@pytest.fixture(scope="session")
async def postgres_admin() -> AsyncIterator[Any]:
    """One connection that creates and drops the per-test schemas."""
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _postgres_unreachable(exc)
    yield conn
    # Leftovers of tests that failed before their own teardown.
    for row in await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"ks_{_SESSION}_%"
    ):
        await conn.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
    await conn.close()


@pytest.fixture
async def postgres_url(postgres_admin: Any) -> AsyncIterator[str]:
    """A URL whose connections work in a fresh, empty schema."""
    schema = f"ks_{_SESSION}_{next(_schemas)}"
    await postgres_admin.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}search_path={schema}"
    await postgres_admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh database of each kind (SQLite in a nested temp directory)."""
    if request.param == "sqlite":
        path = tmp_path / "state" / "keys.db"
        yield Backend("sqlite", f"sqlite:///{path}", sqlite_path=path)
    else:
        yield Backend("postgresql", request.getfixturevalue("postgres_url"))
