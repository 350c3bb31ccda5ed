"""The service's one migration history: every table of every owner, in order.

Owners (keys, relay submissions, the rewards cache, intents, and later events) add
their tables by appending a migration here, with the same version in both dialects;
a migration is never edited once released. ``schema_migrations(version,
applied_at)`` records what a database has applied. A migration only adds (tables,
columns, indexes), so the previous release still runs against a newer schema: a
rollback needs no down-migration.

Key timestamps are UTC: ``TIMESTAMPTZ`` in PostgreSQL, ISO 8601 text ending in ``Z``
(fixed width, so text order is time order) in SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, kw_only=True)
class Migration:
    """One schema version: statements run in order, in one transaction."""

    version: int
    owner: str
    """The package whose tables these are (``keys``, ``relay``, ...)."""
    description: str
    statements: tuple[str, ...]


SQLITE_MIGRATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)"""

POSTGRES_MIGRATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
)"""

MIGRATIONS: Final[dict[Dialect, tuple[Migration, ...]]] = {
    "sqlite": (
        Migration(
            version=1,
            owner="keys",
            description="api_keys and api_key_events",
            statements=(
                """
                CREATE TABLE api_keys (
                    key_id TEXT PRIMARY KEY,
                    display_name TEXT NOT NULL,
                    scopes TEXT NOT NULL,
                    policy TEXT NOT NULL,
                    secret_digest BLOB NOT NULL CHECK (length(secret_digest) = 32),
                    previous_digest BLOB CHECK (length(previous_digest) = 32),
                    grace_expire_time TEXT,
                    create_time TEXT NOT NULL,
                    update_time TEXT NOT NULL,
                    expire_time TEXT,
                    rotate_time TEXT NOT NULL,
                    last_rotate_time TEXT,
                    revoke_time TEXT,
                    last_used_time TEXT,
                    request_count INTEGER NOT NULL DEFAULT 0,
                    version INTEGER NOT NULL
                )""",
                # The overdue scan reads unrevoked keys by rotate_time.
                "CREATE INDEX api_keys_rotate_time ON api_keys (rotate_time)"
                " WHERE revoke_time IS NULL",
                """
                CREATE TABLE api_key_events (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    key_id TEXT NOT NULL REFERENCES api_keys (key_id),
                    event TEXT NOT NULL,
                    event_time TEXT NOT NULL,
                    details TEXT NOT NULL
                )""",
                "CREATE INDEX api_key_events_key_id ON api_key_events (key_id, id)",
            ),
        ),
        Migration(
            version=2,
            owner="relay",
            description="relay_submissions",
            statements=(
                # Times are unix seconds (the relay's wall clock).
                """
                CREATE TABLE relay_submissions (
                    signature TEXT PRIMARY KEY,
                    cluster TEXT NOT NULL,
                    wire BLOB NOT NULL,
                    state TEXT NOT NULL,
                    slot INTEGER NOT NULL,
                    confirmations INTEGER NOT NULL,
                    error TEXT,
                    last_valid_block_height INTEGER NOT NULL,
                    send_count INTEGER NOT NULL,
                    create_time REAL NOT NULL,
                    update_time REAL NOT NULL,
                    done_time REAL,
                    owner TEXT,
                    lease_expire_time REAL NOT NULL
                )""",
                # Takeover scans unfinished submissions by lease; renewal by owner;
                # the purge finished ones by age.
                "CREATE INDEX relay_submissions_lease ON relay_submissions"
                " (lease_expire_time) WHERE done_time IS NULL",
                "CREATE INDEX relay_submissions_owner ON relay_submissions (owner)"
                " WHERE done_time IS NULL",
                "CREATE INDEX relay_submissions_done ON relay_submissions (done_time)"
                " WHERE done_time IS NOT NULL",
            ),
        ),
        Migration(
            version=3,
            owner="rewards",
            description="inflation_rewards (completed epochs' rewards, per cluster)",
            statements=(
                # One row per (cluster, epoch, address); amount NULL: the epoch paid the
                # address nothing. Rows never change once written. fetch_time: unix
                # seconds.
                """
                CREATE TABLE inflation_rewards (
                    cluster TEXT NOT NULL,
                    epoch INTEGER NOT NULL CHECK (epoch >= 0),
                    address TEXT NOT NULL,
                    amount INTEGER CHECK (amount >= 0),
                    post_balance INTEGER,
                    effective_slot INTEGER,
                    commission INTEGER,
                    fetch_time REAL NOT NULL,
                    PRIMARY KEY (cluster, epoch, address),
                    CHECK ((amount IS NULL) = (post_balance IS NULL)),
                    CHECK ((amount IS NULL) = (effective_slot IS NULL))
                )""",
            ),
        ),
        Migration(
            version=4,
            owner="intents",
            description="intents and intent_attempts",
            statements=(
                # An intent per (API key, request_id); times are unix seconds.
                """
                CREATE TABLE intents (
                    scope TEXT NOT NULL,
                    request_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    wallet TEXT NOT NULL,
                    request BLOB NOT NULL,
                    attempt INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    signature TEXT NOT NULL,
                    error TEXT,
                    create_time REAL NOT NULL,
                    update_time REAL NOT NULL,
                    expire_time REAL NOT NULL,
                    PRIMARY KEY (scope, request_id)
                )""",
                "CREATE INDEX intents_expire ON intents (expire_time)",
                """
                CREATE TABLE intent_attempts (
                    scope TEXT NOT NULL,
                    request_id TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    message_sha256 TEXT NOT NULL,
                    message BLOB NOT NULL,
                    response BLOB NOT NULL,
                    recent_blockhash TEXT NOT NULL,
                    last_valid_block_height INTEGER NOT NULL,
                    nonce_account TEXT NOT NULL,
                    build_slot INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    signature TEXT NOT NULL,
                    create_time REAL NOT NULL,
                    PRIMARY KEY (scope, request_id, attempt)
                )""",
                # The relay finds the attempt a submitted transaction belongs to.
                "CREATE INDEX intent_attempts_message ON intent_attempts (message_sha256)",
            ),
        ),
        Migration(
            version=5,
            owner="events",
            description="events, webhooks and their deliveries, the producers' state; "
            "relay_submissions.trace_context",
            statements=(
                # The trace of the call that submitted a transaction: its events' deliveries
                # link to it.
                "ALTER TABLE relay_submissions ADD COLUMN trace_context TEXT",
                # One row: the last event sequence number handed out (its row lock orders
                # the writers, so sequence order is commit order) and the highest purged.
                """
                CREATE TABLE event_sequence (
                    name TEXT PRIMARY KEY,
                    value INTEGER NOT NULL,
                    purged_through INTEGER NOT NULL
                )""",
                "INSERT INTO event_sequence (name, value, purged_through) VALUES ('events', 0, 0)",
                # Times are unix seconds.
                """
                CREATE TABLE events (
                    seq INTEGER PRIMARY KEY,
                    event_type TEXT NOT NULL,
                    wallet TEXT NOT NULL,
                    key_id TEXT NOT NULL,
                    webhook_id TEXT NOT NULL,
                    occurred_time REAL NOT NULL,
                    create_time REAL NOT NULL,
                    payload TEXT NOT NULL,
                    dedupe_key TEXT UNIQUE,
                    trace_context TEXT NOT NULL
                )""",
                "CREATE INDEX events_wallet ON events (wallet, seq)",
                "CREATE INDEX events_key ON events (key_id, seq) WHERE key_id <> ''",
                "CREATE INDEX events_create_time ON events (create_time)",
                """
                CREATE TABLE webhooks (
                    webhook_id TEXT PRIMARY KEY,
                    key_id TEXT NOT NULL,
                    url TEXT NOT NULL,
                    description TEXT NOT NULL,
                    event_types TEXT NOT NULL,
                    wallets TEXT NOT NULL,
                    all_wallets INTEGER NOT NULL,
                    secret TEXT NOT NULL,
                    previous_secret TEXT,
                    previous_secret_expire_time REAL,
                    state TEXT NOT NULL,
                    disabled_reason TEXT NOT NULL,
                    create_time REAL NOT NULL,
                    update_time REAL NOT NULL,
                    disable_time REAL
                )""",
                "CREATE INDEX webhooks_key ON webhooks (key_id, webhook_id)",
                """
                CREATE TABLE webhook_wallets (
                    wallet TEXT NOT NULL,
                    webhook_id TEXT NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
                    PRIMARY KEY (wallet, webhook_id)
                )""",
                "CREATE INDEX webhook_wallets_webhook ON webhook_wallets (webhook_id)",
                """
                CREATE TABLE webhook_deliveries (
                    delivery_id INTEGER PRIMARY KEY AUTOINCREMENT,
                    webhook_id TEXT NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
                    event_seq INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    attempts INTEGER NOT NULL,
                    create_time REAL NOT NULL,
                    next_attempt_time REAL NOT NULL,
                    done_time REAL,
                    owner TEXT,
                    lease_expire_time REAL NOT NULL,
                    last_response_code INTEGER NOT NULL,
                    last_latency REAL NOT NULL,
                    last_error TEXT NOT NULL,
                    UNIQUE (webhook_id, event_seq)
                )""",
                # Claims scan pending deliveries by due time; lists go by webhook; the
                # purge takes finished ones by age.
                "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_time)"
                " WHERE state = 'pending'",
                "CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries"
                " (webhook_id, delivery_id)",
                "CREATE INDEX webhook_deliveries_done ON webhook_deliveries (done_time)"
                " WHERE done_time IS NOT NULL",
                """
                CREATE TABLE webhook_attempts (
                    delivery_id INTEGER NOT NULL
                        REFERENCES webhook_deliveries (delivery_id) ON DELETE CASCADE,
                    attempt INTEGER NOT NULL,
                    replica TEXT NOT NULL,
                    start_time REAL NOT NULL,
                    latency REAL NOT NULL,
                    response_code INTEGER NOT NULL,
                    succeeded INTEGER NOT NULL,
                    error TEXT NOT NULL,
                    PRIMARY KEY (delivery_id, attempt)
                )""",
                # The producers' leader (one row per role) and what they remember.
                """
                CREATE TABLE event_leases (
                    name TEXT PRIMARY KEY,
                    owner TEXT NOT NULL,
                    lease_expire_time REAL NOT NULL
                )""",
                """
                CREATE TABLE event_watches (
                    wallet TEXT NOT NULL,
                    holder TEXT NOT NULL,
                    expire_time REAL NOT NULL,
                    PRIMARY KEY (wallet, holder)
                )""",
                """
                CREATE TABLE event_wallets (
                    wallet TEXT PRIMARY KEY,
                    registered_epoch INTEGER,
                    baselined INTEGER NOT NULL
                )""",
                """
                CREATE TABLE event_stake_states (
                    stake_account TEXT PRIMARY KEY,
                    wallet TEXT NOT NULL,
                    state TEXT NOT NULL,
                    vote_account TEXT NOT NULL,
                    activation_epoch INTEGER,
                    deactivation_epoch INTEGER,
                    update_time REAL NOT NULL
                )""",
                "CREATE INDEX event_stake_states_wallet ON event_stake_states (wallet)",
                """
                CREATE TABLE event_validator_states (
                    vote_account TEXT PRIMARY KEY,
                    delinquent INTEGER NOT NULL,
                    commission INTEGER NOT NULL,
                    changes INTEGER NOT NULL,
                    update_time REAL NOT NULL
                )""",
                # Progress marks of the producers (the last epoch whose rewards were
                # reported).
                """
                CREATE TABLE event_marks (
                    name TEXT PRIMARY KEY,
                    value INTEGER NOT NULL
                )""",
            ),
        ),
    ),
    "postgresql": (
        Migration(
            version=1,
            owner="keys",
            description="api_keys and api_key_events",
            statements=(
                """
                CREATE TABLE api_keys (
                    key_id TEXT PRIMARY KEY,
                    display_name TEXT NOT NULL,
                    scopes JSONB NOT NULL,
                    policy JSONB NOT NULL,
                    secret_digest BYTEA NOT NULL CHECK (octet_length(secret_digest) = 32),
                    previous_digest BYTEA CHECK (octet_length(previous_digest) = 32),
                    grace_expire_time TIMESTAMPTZ,
                    create_time TIMESTAMPTZ NOT NULL,
                    update_time TIMESTAMPTZ NOT NULL,
                    expire_time TIMESTAMPTZ,
                    rotate_time TIMESTAMPTZ NOT NULL,
                    last_rotate_time TIMESTAMPTZ,
                    revoke_time TIMESTAMPTZ,
                    last_used_time TIMESTAMPTZ,
                    request_count BIGINT NOT NULL DEFAULT 0,
                    version BIGINT NOT NULL
                )""",
                "CREATE INDEX api_keys_rotate_time ON api_keys (rotate_time)"
                " WHERE revoke_time IS NULL",
                """
                CREATE TABLE api_key_events (
                    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    key_id TEXT NOT NULL REFERENCES api_keys (key_id),
                    event TEXT NOT NULL,
                    event_time TIMESTAMPTZ NOT NULL,
                    details JSONB NOT NULL
                )""",
                "CREATE INDEX api_key_events_key_id ON api_key_events (key_id, id)",
            ),
        ),
        Migration(
            version=2,
            owner="relay",
            description="relay_submissions",
            statements=(
                """
                CREATE TABLE relay_submissions (
                    signature TEXT PRIMARY KEY,
                    cluster TEXT NOT NULL,
                    wire BYTEA NOT NULL,
                    state TEXT NOT NULL,
                    slot BIGINT NOT NULL,
                    confirmations INTEGER NOT NULL,
                    error TEXT,
                    last_valid_block_height BIGINT NOT NULL,
                    send_count INTEGER NOT NULL,
                    create_time DOUBLE PRECISION NOT NULL,
                    update_time DOUBLE PRECISION NOT NULL,
                    done_time DOUBLE PRECISION,
                    owner TEXT,
                    lease_expire_time DOUBLE PRECISION NOT NULL
                )""",
                "CREATE INDEX relay_submissions_lease ON relay_submissions"
                " (lease_expire_time) WHERE done_time IS NULL",
                "CREATE INDEX relay_submissions_owner ON relay_submissions (owner)"
                " WHERE done_time IS NULL",
                "CREATE INDEX relay_submissions_done ON relay_submissions (done_time)"
                " WHERE done_time IS NOT NULL",
            ),
        ),
        Migration(
            version=3,
            owner="rewards",
            description="inflation_rewards (completed epochs' rewards, per cluster)",
            statements=(
                """
                CREATE TABLE inflation_rewards (
                    cluster TEXT NOT NULL,
                    epoch BIGINT NOT NULL CHECK (epoch >= 0),
                    address TEXT NOT NULL,
                    amount BIGINT CHECK (amount >= 0),
                    post_balance BIGINT,
                    effective_slot BIGINT,
                    commission SMALLINT,
                    fetch_time DOUBLE PRECISION NOT NULL,
                    PRIMARY KEY (cluster, epoch, address),
                    CHECK ((amount IS NULL) = (post_balance IS NULL)),
                    CHECK ((amount IS NULL) = (effective_slot IS NULL))
                )""",
            ),
        ),
        Migration(
            version=4,
            owner="intents",
            description="intents and intent_attempts",
            statements=(
                """
                CREATE TABLE intents (
                    scope TEXT NOT NULL,
                    request_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    wallet TEXT NOT NULL,
                    request BYTEA NOT NULL,
                    attempt INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    signature TEXT NOT NULL,
                    error TEXT,
                    create_time DOUBLE PRECISION NOT NULL,
                    update_time DOUBLE PRECISION NOT NULL,
                    expire_time DOUBLE PRECISION NOT NULL,
                    PRIMARY KEY (scope, request_id)
                )""",
                "CREATE INDEX intents_expire ON intents (expire_time)",
                """
                CREATE TABLE intent_attempts (
                    scope TEXT NOT NULL,
                    request_id TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    message_sha256 TEXT NOT NULL,
                    message BYTEA NOT NULL,
                    response BYTEA NOT NULL,
                    recent_blockhash TEXT NOT NULL,
                    last_valid_block_height BIGINT NOT NULL,
                    nonce_account TEXT NOT NULL,
                    build_slot BIGINT NOT NULL,
                    state TEXT NOT NULL,
                    signature TEXT NOT NULL,
                    create_time DOUBLE PRECISION NOT NULL,
                    PRIMARY KEY (scope, request_id, attempt)
                )""",
                # The relay finds the attempt a submitted transaction belongs to.
                "CREATE INDEX intent_attempts_message ON intent_attempts (message_sha256)",
            ),
        ),
        Migration(
            version=5,
            owner="events",
            description="events, webhooks and their deliveries, the producers' state; "
            "relay_submissions.trace_context",
            statements=(
                "ALTER TABLE relay_submissions ADD COLUMN trace_context TEXT",
                """
                CREATE TABLE event_sequence (
                    name TEXT PRIMARY KEY,
                    value BIGINT NOT NULL,
                    purged_through BIGINT NOT NULL
                )""",
                "INSERT INTO event_sequence (name, value, purged_through) VALUES ('events', 0, 0)",
                """
                CREATE TABLE events (
                    seq BIGINT PRIMARY KEY,
                    event_type TEXT NOT NULL,
                    wallet TEXT NOT NULL,
                    key_id TEXT NOT NULL,
                    webhook_id TEXT NOT NULL,
                    occurred_time DOUBLE PRECISION NOT NULL,
                    create_time DOUBLE PRECISION NOT NULL,
                    payload TEXT NOT NULL,
                    dedupe_key TEXT UNIQUE,
                    trace_context TEXT NOT NULL
                )""",
                "CREATE INDEX events_wallet ON events (wallet, seq)",
                "CREATE INDEX events_key ON events (key_id, seq) WHERE key_id <> ''",
                "CREATE INDEX events_create_time ON events (create_time)",
                """
                CREATE TABLE webhooks (
                    webhook_id TEXT PRIMARY KEY,
                    key_id TEXT NOT NULL,
                    url TEXT NOT NULL,
                    description TEXT NOT NULL,
                    event_types TEXT NOT NULL,
                    wallets TEXT NOT NULL,
                    all_wallets BOOLEAN NOT NULL,
                    secret TEXT NOT NULL,
                    previous_secret TEXT,
                    previous_secret_expire_time DOUBLE PRECISION,
                    state TEXT NOT NULL,
                    disabled_reason TEXT NOT NULL,
                    create_time DOUBLE PRECISION NOT NULL,
                    update_time DOUBLE PRECISION NOT NULL,
                    disable_time DOUBLE PRECISION
                )""",
                "CREATE INDEX webhooks_key ON webhooks (key_id, webhook_id)",
                """
                CREATE TABLE webhook_wallets (
                    wallet TEXT NOT NULL,
                    webhook_id TEXT NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
                    PRIMARY KEY (wallet, webhook_id)
                )""",
                "CREATE INDEX webhook_wallets_webhook ON webhook_wallets (webhook_id)",
                """
                CREATE TABLE webhook_deliveries (
                    delivery_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    webhook_id TEXT NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
                    event_seq BIGINT NOT NULL,
                    state TEXT NOT NULL,
                    attempts INTEGER NOT NULL,
                    create_time DOUBLE PRECISION NOT NULL,
                    next_attempt_time DOUBLE PRECISION NOT NULL,
                    done_time DOUBLE PRECISION,
                    owner TEXT,
                    lease_expire_time DOUBLE PRECISION NOT NULL,
                    last_response_code INTEGER NOT NULL,
                    last_latency DOUBLE PRECISION NOT NULL,
                    last_error TEXT NOT NULL,
                    UNIQUE (webhook_id, event_seq)
                )""",
                "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_time)"
                " WHERE state = 'pending'",
                "CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries"
                " (webhook_id, delivery_id)",
                "CREATE INDEX webhook_deliveries_done ON webhook_deliveries (done_time)"
                " WHERE done_time IS NOT NULL",
                """
                CREATE TABLE webhook_attempts (
                    delivery_id BIGINT NOT NULL
                        REFERENCES webhook_deliveries (delivery_id) ON DELETE CASCADE,
                    attempt INTEGER NOT NULL,
                    replica TEXT NOT NULL,
                    start_time DOUBLE PRECISION NOT NULL,
                    latency DOUBLE PRECISION NOT NULL,
                    response_code INTEGER NOT NULL,
                    succeeded BOOLEAN NOT NULL,
                    error TEXT NOT NULL,
                    PRIMARY KEY (delivery_id, attempt)
                )""",
                """
                CREATE TABLE event_leases (
                    name TEXT PRIMARY KEY,
                    owner TEXT NOT NULL,
                    lease_expire_time DOUBLE PRECISION NOT NULL
                )""",
                """
                CREATE TABLE event_watches (
                    wallet TEXT NOT NULL,
                    holder TEXT NOT NULL,
                    expire_time DOUBLE PRECISION NOT NULL,
                    PRIMARY KEY (wallet, holder)
                )""",
                """
                CREATE TABLE event_wallets (
                    wallet TEXT PRIMARY KEY,
                    registered_epoch BIGINT,
                    baselined BOOLEAN NOT NULL
                )""",
                """
                CREATE TABLE event_stake_states (
                    stake_account TEXT PRIMARY KEY,
                    wallet TEXT NOT NULL,
                    state TEXT NOT NULL,
                    vote_account TEXT NOT NULL,
                    activation_epoch BIGINT,
                    deactivation_epoch BIGINT,
                    update_time DOUBLE PRECISION NOT NULL
                )""",
                "CREATE INDEX event_stake_states_wallet ON event_stake_states (wallet)",
                """
                CREATE TABLE event_validator_states (
                    vote_account TEXT PRIMARY KEY,
                    delinquent BOOLEAN NOT NULL,
                    commission INTEGER NOT NULL,
                    changes INTEGER NOT NULL,
                    update_time DOUBLE PRECISION NOT NULL
                )""",
                """
                CREATE TABLE event_marks (
                    name TEXT PRIMARY KEY,
                    value BIGINT NOT NULL
                )""",
            ),
        ),
    ),
}
