"""API keys: the domain model, the lifecycle manager and its durable stores.

A key's secret has the form ``ask_<key_id>_<secret>``; only a SHA-256 digest of the
secret is stored. :class:`KeyManager` creates, rotates, revokes and updates keys and
authenticates callers (cached per replica for ``cache_ttl`` seconds); :class:`SqlKeyStore`
keeps them in the service's database (:mod:`service.store`: SQLite embedded,
PostgreSQL shared by replicas); :func:`open_store` opens one on a database of its own.
"""

from service.keys._errors import (
    API_KEY_AMBIGUOUS,
    API_KEY_EXPIRED,
    API_KEY_MALFORMED,
    API_KEY_MISSING,
    API_KEY_REVOKED,
    API_KEY_ROTATED,
    API_KEY_UNKNOWN,
    AuthenticationError,
    ConcurrentModificationError,
    KeyArgumentError,
    KeyExpiredError,
    KeyNotFoundError,
    KeyRevokedError,
    KeyStoreUnavailableError,
)
from service.keys._manager import (
    DEFAULT_PAGE_SIZE,
    MAX_GRACE_PERIOD,
    MAX_PAGE_SIZE,
    KeyManager,
    now_utc,
    parse_key_id,
)
from service.keys._model import (
    UNSET,
    ApiKey,
    AuditEvent,
    KeyEvent,
    KeyPolicy,
    KeyState,
    Principal,
    RateLimit,
    Scope,
    Unset,
)
from service.keys._records import KeyRecord, UsageDelta
from service.keys._store import KeyStore, SqlKeyStore, open_store

__all__ = [
    "API_KEY_AMBIGUOUS",
    "API_KEY_EXPIRED",
    "API_KEY_MALFORMED",
    "API_KEY_MISSING",
    "API_KEY_REVOKED",
    "API_KEY_ROTATED",
    "API_KEY_UNKNOWN",
    "DEFAULT_PAGE_SIZE",
    "MAX_GRACE_PERIOD",
    "MAX_PAGE_SIZE",
    "UNSET",
    "ApiKey",
    "AuditEvent",
    "AuthenticationError",
    "ConcurrentModificationError",
    "KeyArgumentError",
    "KeyEvent",
    "KeyExpiredError",
    "KeyManager",
    "KeyNotFoundError",
    "KeyPolicy",
    "KeyRecord",
    "KeyRevokedError",
    "KeyState",
    "KeyStore",
    "KeyStoreUnavailableError",
    "Principal",
    "RateLimit",
    "Scope",
    "SqlKeyStore",
    "Unset",
    "UsageDelta",
    "now_utc",
    "open_store",
    "parse_key_id",
]
