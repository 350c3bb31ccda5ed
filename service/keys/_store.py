"""The durable key store: one protocol, a SQLite and a PostgreSQL implementation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from service.keys._migrations import Dialect
from service.keys._model import AuditEvent, KeyState
from service.keys._records import KeyRecord, UsageDelta


class KeyStore(Protocol):
    """Persistence of keys and their audit log.

    Every method is one transaction. Driver failures surface as
    :class:`KeyStoreUnavailableError`. Writes of key metadata are optimistic
    (``version``); usage counters are only ever added to, so they never conflict.
    """

    @property
    def dialect(self) -> Dialect:
        """The SQL dialect ("sqlite" or "postgresql")."""
        ...

    async def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; return their versions.

        Safe to run concurrently from several processes: one applies, the others wait
        and find nothing left to do.
        """
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
        """Release connections (idempotent)."""
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


_SQLITE_PREFIX = "sqlite:///"


async def _connect(database_url: str) -> KeyStore:
    # Imported here: each implementation imports this module for its helpers.
    from service.keys._postgres import PostgresKeyStore
    from service.keys._sqlite import SqliteKeyStore

    if database_url.startswith(_SQLITE_PREFIX):
        return await SqliteKeyStore.open(database_url[len(_SQLITE_PREFIX) :])
    if urlsplit(database_url).scheme in ("postgresql", "postgres"):
        return await PostgresKeyStore.open(database_url)
    # Never echo the URL: it may carry a password.
    raise ValueError(
        "unsupported database URL: use sqlite:///PATH (sqlite:////ABSOLUTE/PATH, "
        "sqlite:///:memory:) or postgresql://USER@HOST:PORT/DATABASE"
    )


async def open_store(database_url: str) -> KeyStore:
    """Open the key store at ``database_url`` and bring its schema up to date.

    Args:
        database_url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
            (parent directories are created), ``sqlite:///:memory:``, or
            ``postgresql://user[:password]@host[:port]/database[?search_path=schema]``
            (query parameters other than libpq's become server settings).

    Raises:
        ValueError: The URL has another scheme.
        KeyStoreUnavailableError: The database cannot be reached or migrated.
    """
    store = await _connect(database_url)
    try:
        await store.migrate()
    except BaseException:
        await store.close()
        raise
    return store


async def migrate(database_url: str) -> list[int]:
    """Apply pending migrations to the database at ``database_url`` (CLI entry point).

    Returns:
        The versions applied now (empty when the schema was already current).
    """
    store = await _connect(database_url)
    try:
        return await store.migrate()
    finally:
        await store.close()
