"""The service's one database: SQLite embedded, PostgreSQL at scale.

:class:`Database` opens the engine the URL names, applies the migration history, and
runs every owner's transactions with the same guarantees:

- **bounded time**: each transaction (waiting for a connection included) ends within
  ``timeout`` seconds, answered or failed; a hung server cannot hold a caller until
  its deadline;
- **fail fast during an outage**: the first failure starts an outage; until a
  background probe (every ``recheck`` seconds) gets an answer again, transactions
  fail at once with :class:`StoreUnavailableError` instead of each waiting for its
  own timeout. Each transition is logged once and reported to the listeners (health,
  metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from service.store._engines import (
    Connection,
    Dialect,
    Engine,
    PostgresEngine,
    SqliteEngine,
)
from service.store._errors import StoreBusyError, StoreConflictError, StoreUnavailableError
from service.store._migrations import (
    MIGRATIONS,
    POSTGRES_MIGRATIONS_TABLE,
    SQLITE_MIGRATIONS_TABLE,
)

log = logging.getLogger(__name__)

_SQLITE_PREFIX: Final = "sqlite:///"
_POSTGRES_SCHEMES: Final = ("postgresql", "postgres")


@dataclass(frozen=True, kw_only=True)
class DatabaseStats:
    """Metrics-ready view of the database.

    Attributes:
        up: No outage now (False also before the first connection).
        transactions: Transactions run (monotonic).
        errors: Transactions that failed on the database: unreachable, refused,
            timed out (monotonic).
        timeouts: Of which ran out of time (monotonic).
        rejected: Transactions refused without trying during an outage (monotonic).
        outages: Outages begun (monotonic).
    """

    up: bool
    transactions: int
    errors: int
    timeouts: int
    rejected: int
    outages: int


FAILURES_TO_OPEN = 3
"""Failed transactions in a row that make an outage: calls then fail at once until a
probe succeeds (a refused or unreachable database fails three calls in milliseconds;
a slow transaction on a busy machine alone does not stop the service)."""


def describe_url(url: str) -> str:
    """The URL without credentials or query (for logs): ``postgresql://host:port/db``."""
    if url.startswith(_SQLITE_PREFIX):
        return url
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def _engine(url: str, pool_size: int) -> Engine:
    if url.startswith(_SQLITE_PREFIX):
        return SqliteEngine(url[len(_SQLITE_PREFIX) :])
    if urlsplit(url).scheme in _POSTGRES_SCHEMES:
        return PostgresEngine(url, pool_size=pool_size)
    # Never echo the URL: it may carry a password.
    raise ValueError(
        "unsupported database URL: use sqlite:///PATH (sqlite:////ABSOLUTE/PATH, "
        "sqlite:///:memory:) or postgresql://USER@HOST:PORT/DATABASE"
    )


class Database:
    """The engine at ``url``, with a timeout per transaction and an outage breaker.

    Construction does no I/O; :meth:`connect` opens and migrates. Until then, and
    during an outage, transactions raise :class:`StoreUnavailableError`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        recheck: float = 1.0,
        pool_size: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
            url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
                (parent directories are created), ``sqlite:///:memory:``, or
                ``postgresql://user[:password]@host[:port]/database[?search_path=schema]``
                (query parameters other than libpq's become server settings).
            timeout: Seconds one transaction may take, waiting for a connection
                included (and each connection attempt).
            recheck: Seconds between two probes during an outage.
            pool_size: Most PostgreSQL connections held.
            clock: Monotonic seconds (injectable for tests).

        Raises:
            ValueError: The URL has another scheme.
        """
        if timeout <= 0 or recheck <= 0:
            raise ValueError("timeout and recheck must be positive")
        self._engine = _engine(url, pool_size)
        self.url = describe_url(url)
        self.timeout = timeout
        self._recheck = recheck
        self._clock = clock
        self._connected = False
        self._closed = False
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._probe_task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[bool], None]] = []
        self._transactions = 0
        self._errors = 0
        self._timeouts = 0
        self._rejected = 0
        self._outages = 0
        # One slow transaction on a busy machine is not an outage; several in a row are.
        self._failures_in_a_row = 0

    @property
    def dialect(self) -> Dialect:
        """The SQL dialect ("sqlite" or "postgresql")."""
        return self._engine.dialect

    @property
    def up(self) -> bool:
        """Connected, and no outage now."""
        return self._connected and self._down_since is None

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(up)`` at every transition (outage begun, outage over)."""
        self._listeners.append(listener)

    def stats(self) -> DatabaseStats:
        return DatabaseStats(
            up=self.up,
            transactions=self._transactions,
            errors=self._errors,
            timeouts=self._timeouts,
            rejected=self._rejected,
            outages=self._outages,
        )

    # --- lifecycle ----------------------------------------------------------------------

    async def connect(self) -> list[int]:
        """Open the database and apply the migrations it lacks (once, idempotent).

        Returns:
            The migration versions applied now.

        Raises:
            StoreUnavailableError: It cannot be reached or migrated (call again to retry).
        """
        if not self._connected:
            try:
                await asyncio.wait_for(self._engine.connect(self.timeout), self.timeout)
            except self._engine.driver_errors as exc:
                # Not an outage yet (never connected): the caller reports it. The
                # driver's text may name the host, never the password.
                self._errors += 1
                what = (
                    f"no answer within {self.timeout:g} s"
                    if isinstance(exc, TimeoutError)
                    else _describe(exc)
                )
                raise StoreUnavailableError(
                    "connect", retry_after=self._recheck, detail=what
                ) from exc
            self._connected = True
        applied = await self.migrate()
        self._recovered()
        return applied

    async def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; their versions.

        Safe to run concurrently from several processes: one applies, the others wait
        and find nothing left to do.
        """
        applied: list[int] = []
        table = SQLITE_MIGRATIONS_TABLE if self.dialect == "sqlite" else POSTGRES_MIGRATIONS_TABLE
        # Creating an index on a large table may take a while: more time than a call.
        async with self.transaction(
            "migrate", write=True, breaker=False, timeout=max(self.timeout, 30.0)
        ) as conn:
            # Two replicas starting together: the second waits here, then finds every
            # version applied. The lock ends with the transaction.
            await conn.lock("store.migrate")
            await conn.execute(table)
            rows = await conn.fetch("SELECT version FROM schema_migrations")
            done = {int(row[0]) for row in rows}
            for migration in MIGRATIONS[self.dialect]:
                if migration.version in done:
                    continue
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    migration.version,
                    _migration_time(self.dialect),
                )
                applied.append(migration.version)
        if applied:
            log.info("database (%s) migrated to version %d", self.dialect, applied[-1])
        return applied

    async def close(self) -> None:
        """Stop probing and release every connection (idempotent)."""
        self._closed = True
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        self._connected = False
        await self._engine.close()

    # --- transactions -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(
        self,
        operation: str,
        *,
        write: bool = True,
        breaker: bool = True,
        timeout: float | None = None,
    ) -> AsyncIterator[Connection]:
        """One transaction, committed when the block ends, rolled back if it raises.

        Args:
            operation: What it does, for logs and errors ("get", "add_usage", ...).
            write: It writes (SQLite then takes the write lock at once).
            breaker: False only for the probe and migrations, which try even during
                an outage.
            timeout: Seconds it may take; default: the database's ``timeout``.

        Raises:
            StoreUnavailableError: Not connected, a known outage, or the database
                failed or did not answer within the timeout.
            StoreConflictError: A uniqueness constraint refused a write.
        """
        if not self._connected:
            self._rejected += 1
            raise StoreUnavailableError(operation, retry_after=self._recheck)
        if breaker and self._down_since is not None:
            self._rejected += 1
            raise StoreUnavailableError(
                operation, retry_after=max(0.05, self._next_probe - self._clock())
            )
        self._transactions += 1
        try:
            async with self._engine.transaction(
                write=write, timeout=self.timeout if timeout is None else timeout
            ) as conn:
                yield conn
        except StoreConflictError:
            self._failures_in_a_row = 0
            raise
        except self._engine.driver_errors as exc:
            # A wait for this process's own connection is contention, not an outage.
            busy = isinstance(exc, StoreBusyError)
            raise self._unavailable(operation, exc, counted=breaker and not busy) from exc
        self._failures_in_a_row = 0

    def _unavailable(
        self, operation: str, exc: BaseException, *, counted: bool = True
    ) -> StoreUnavailableError:
        self._errors += 1
        timed_out = isinstance(exc, TimeoutError)
        if timed_out:
            self._timeouts += 1
        if isinstance(exc, StoreBusyError):
            what = str(exc)
        else:
            what = f"no answer within {self.timeout:g} s" if timed_out else _describe(exc)
        if counted:
            self._failures_in_a_row += 1
        if self._down_since is None and self._failures_in_a_row < FAILURES_TO_OPEN:
            log.warning("database %s failed during %s: %s", self.url, operation, what)
        elif self._down_since is None:
            self._outages += 1
            self._down_since = self._clock()
            self._next_probe = self._down_since + self._recheck
            log.error(
                "database %s unreachable during %s (%s); calls that need it fail at once "
                "until it answers again",
                self.url,
                operation,
                what,
            )
            if self._connected and not self._closed:
                self._probe_task = asyncio.get_running_loop().create_task(
                    self._probe_until_up(), name="database-probe"
                )
            self._notify(False)
        else:
            log.debug("database %s failed during %s: %s", self.url, operation, what)
        return StoreUnavailableError(operation, retry_after=self._recheck, detail=what)

    async def _probe_until_up(self) -> None:
        while not self._closed and self._down_since is not None:
            await asyncio.sleep(max(0.0, self._next_probe - self._clock()))
            self._next_probe = self._clock() + self._recheck
            try:
                async with self.transaction("probe", write=False, breaker=False) as conn:
                    await conn.fetchval("SELECT 1")
            except StoreUnavailableError:
                continue
            self._probe_task = None
            self._recovered()

    def _recovered(self) -> None:
        down_since, self._down_since = self._down_since, None
        if down_since is None:
            return
        if self._probe_task is not None:
            self._probe_task.cancel()
            self._probe_task = None
        log.warning("database %s answers again after %.1f s", self.url, self._clock() - down_since)
        self._notify(True)

    def _notify(self, up: bool) -> None:
        for listener in self._listeners:
            try:
                listener(up)
            except Exception:
                log.exception("database listener failed")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _migration_time(dialect: Dialect) -> object:
    now = datetime.now(UTC)
    if dialect == "postgresql":
        return now
    return now.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


async def open_database(
    url: str, *, timeout: float = 2.0, recheck: float = 1.0, pool_size: int = 10
) -> Database:
    """A connected, migrated :class:`Database` (see its arguments).

    Raises:
        ValueError: The URL has another scheme.
        StoreUnavailableError: It cannot be reached or migrated.
    """
    database = Database(url, timeout=timeout, recheck=recheck, pool_size=pool_size)
    try:
        await database.connect()
    except BaseException:
        await database.close()
        raise
    return database


async def migrate(url: str) -> list[int]:
    """Apply pending migrations to the database at ``url`` (the CLI's entry point).

    Returns:
        The versions applied now (empty when the schema was already current).
    """
    database = Database(url)
    try:
        return await database.connect()
    finally:
        await database.close()
