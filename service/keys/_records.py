"""What the stores hold: one row per key, plus the audit log."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from service.keys._model import AuditEvent, KeyEvent, KeyPolicy
from service.store import Row

# Column order shared by both dialects' INSERT and SELECT.
KEY_COLUMNS: Final = (
    "key_id",
    "display_name",
    "scopes",
    "policy",
    "secret_digest",
    "previous_digest",
    "grace_expire_time",
    "create_time",
    "update_time",
    "expire_time",
    "rotate_time",
    "last_rotate_time",
    "revoke_time",
    "last_used_time",
    "request_count",
    "version",
)
# What an optimistic update writes: everything except the identity, the creation time
# and the usage columns (those are only ever added to, see KeyStore.add_usage).
UPDATABLE_COLUMNS: Final = tuple(
    c for c in KEY_COLUMNS if c not in {"key_id", "create_time", "last_used_time", "request_count"}
)


@dataclass(frozen=True, kw_only=True)
class KeyRecord:
    """A stored key: the resource plus the digests of its current and previous secrets."""

    key_id: str
    display_name: str
    scopes: frozenset[str]
    policy: KeyPolicy
    secret_digest: bytes
    previous_digest: bytes | None
    """Digest of the secret replaced by the last rotation (accepted until grace_expire_time)."""
    grace_expire_time: datetime | None
    create_time: datetime
    update_time: datetime
    expire_time: datetime | None
    rotate_time: datetime
    last_rotate_time: datetime | None
    revoke_time: datetime | None
    last_used_time: datetime | None
    request_count: int
    version: int


class UsageDelta(NamedTuple):
    """Calls counted in memory since the last flush, and the latest of them."""

    calls: int
    last_used_time: datetime


class DuplicateKeyIdError(Exception):
    """An insert collided with an existing key id (the caller draws a new one)."""


def record_values(
    record: KeyRecord,
    columns: tuple[str, ...],
    *,
    encode_time: Callable[[datetime], Any],
) -> list[Any]:
    """The record's values for ``columns``, encoded for a driver."""
    values: list[Any] = []
    for column in columns:
        value = getattr(record, column)
        if column == "scopes":
            value = json.dumps(sorted(value))
        elif column == "policy":
            value = json.dumps(record.policy.to_json(), sort_keys=True)
        elif isinstance(value, datetime):
            value = encode_time(value)
        values.append(value)
    return values


def record_from_row(row: Row, *, decode_time: Callable[[Any], datetime]) -> KeyRecord:
    """A record from a row selected with :data:`KEY_COLUMNS`."""

    def optional_time(column: str) -> datetime | None:
        value = row[column]
        return None if value is None else decode_time(value)

    previous = row["previous_digest"]
    return KeyRecord(
        key_id=row["key_id"],
        display_name=row["display_name"],
        scopes=frozenset(json.loads(row["scopes"])),
        policy=KeyPolicy.from_json(json.loads(row["policy"])),
        secret_digest=bytes(row["secret_digest"]),
        previous_digest=None if previous is None else bytes(previous),
        grace_expire_time=optional_time("grace_expire_time"),
        create_time=decode_time(row["create_time"]),
        update_time=decode_time(row["update_time"]),
        expire_time=optional_time("expire_time"),
        rotate_time=decode_time(row["rotate_time"]),
        last_rotate_time=optional_time("last_rotate_time"),
        revoke_time=optional_time("revoke_time"),
        last_used_time=optional_time("last_used_time"),
        request_count=int(row["request_count"]),
        version=int(row["version"]),
    )


def event_details_json(event: AuditEvent) -> str:
    """The event's details as stored (datetimes as ISO 8601)."""
    return json.dumps(dict(event.details), sort_keys=True, default=_json_default)


def event_from_row(row: Row, *, decode_time: Callable[[Any], datetime]) -> AuditEvent:
    """An audit event from a row of ``api_key_events``."""
    return AuditEvent(
        key_id=row["key_id"],
        event=KeyEvent(row["event"]),
        time=decode_time(row["event_time"]),
        details=json.loads(row["details"]),
    )


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
