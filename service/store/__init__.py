"""The service's one database: SQLite embedded, PostgreSQL at scale, one migration history.

:class:`Database` opens the engine a URL names and runs transactions with a timeout
each and a breaker for outages (:class:`StoreUnavailableError`, at once, while the
database is known to be out). Every owner of state (API keys, relay submissions,
and later intents, events, the rewards cache) writes its own SQL against the
:class:`Connection` of a transaction and adds its tables to the one history in
``_migrations.py``.
"""

from service.store._database import (
    FAILURES_TO_OPEN,
    Database,
    DatabaseStats,
    describe_url,
    migrate,
    open_database,
)
from service.store._engines import Connection, Dialect, Row
from service.store._errors import StoreConflictError, StoreUnavailableError
from service.store._migrations import MIGRATIONS, Migration

__all__ = [
    "FAILURES_TO_OPEN",
    "MIGRATIONS",
    "Connection",
    "Database",
    "DatabaseStats",
    "Dialect",
    "Migration",
    "Row",
    "StoreConflictError",
    "StoreUnavailableError",
    "describe_url",
    "migrate",
    "open_database",
]
