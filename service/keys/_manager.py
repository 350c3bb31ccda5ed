"""KeyManager: the key lifecycle, authentication with a short cache, batched usage."""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from opentelemetry import trace

from service.core.errors import DomainError, FieldErrors
from service.keys._errors import (
    API_KEY_EXPIRED,
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
from service.keys._model import (
    UNSET,
    ApiKey,
    AuditEvent,
    KeyEvent,
    KeyPolicy,
    KeyState,
    Principal,
    Scope,
    Unset,
    check_display_name,
    check_expire_time,
    check_grace_period,
    check_scopes,
    key_state,
)
from service.keys._records import DuplicateKeyIdError, KeyRecord, UsageDelta, utc
from service.keys._store import KeyStore
from service.keys._tokens import ParsedToken, is_key_id, new_key_id, new_secret, parse_token

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500
MAX_GRACE_PERIOD: Final = timedelta(days=30)
KNOWN_ID_SECONDS: Final = 3600.0
"""How long a key id seen in the store counts as known (``may_be_valid``); the overdue
scan renews every active key's."""
# Store calls that get a child span of the call being served.
_TRACED_STORE_CALLS: Final = frozenset(
    {"insert", "get", "list_keys", "list_overdue", "update", "add_usage", "audit_events"}
)


@dataclass(frozen=True, kw_only=True)
class KeyStats:
    """Metrics-ready view of the keys, as of the last overdue scan (``scanned``).

    Attributes:
        by_state: Keys per state (``active``, ``expired``, ``revoked``) in the store.
        overdue: Active keys past their rotate_time.
        scanned: The last scan completed (before it the counts are all 0).
        cached_tokens: Verified tokens in this replica's cache.
        stale_authentications: Calls authenticated from an expired cache entry while
            the store was unavailable (monotonic).
        unflushed_calls: Calls counted and not yet written to the store.
        usage_flush_failures: Usage flushes that failed (the counts were kept; monotonic).
    """

    by_state: dict[str, int]
    overdue: int
    scanned: bool
    cached_tokens: int
    stale_authentications: int = 0
    unflushed_calls: int = 0
    usage_flush_failures: int = 0


class _TracedStore:
    """The store, its calls made inside a served call recorded as child spans."""

    def __init__(self, store: KeyStore, tracer: trace.Tracer) -> None:
        self._store = store
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in _TRACED_STORE_CALLS:
            return attribute

        async def traced(*args: Any, **kwargs: Any) -> Any:
            with self._span(name):
                return await attribute(*args, **kwargs)

        return traced

    @contextlib.contextmanager
    def _span(self, operation: str) -> Iterator[None]:
        # Background jobs (usage flush, overdue scan) are not traced: no root spans.
        if not trace.get_current_span().get_span_context().is_valid:
            yield
            return
        with self._tracer.start_as_current_span(
            f"KeyStore.{operation}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "db.system.name": str(self._store.dialect),
                "db.operation.name": operation,
            },
        ):
            yield


def now_utc() -> datetime:
    """The wall clock, in UTC (the default clock of :class:`KeyManager`)."""
    return datetime.now(UTC)


def parse_key_id(token: str) -> str:
    """The key id of a well-formed token (for logs; proves nothing about the secret).

    Raises:
        AuthenticationError: ``API_KEY_MALFORMED``.
    """
    return parse_token(token).key_id


@dataclass(frozen=True, slots=True)
class _AuthSnapshot:
    """What one database read said about one presented token.

    Cached as is; the verdict is computed from it and the clock on every call, so a
    cached entry still expires on time.
    """

    principal: Principal | None
    """None: no such key, or the secret is none of the key's."""
    revoked: bool
    expire_time: datetime | None
    previous: bool
    """The token is the key's previous secret (accepted until grace_expire_time)."""
    grace_expire_time: datetime | None


_UNKNOWN: Final = _AuthSnapshot(
    principal=None, revoked=False, expire_time=None, previous=False, grace_expire_time=None
)


def _snapshot(record: KeyRecord | None, token: ParsedToken) -> _AuthSnapshot:
    if record is None:
        return _UNKNOWN
    current = hmac.compare_digest(token.secret_digest, record.secret_digest)
    previous = record.previous_digest is not None and hmac.compare_digest(
        token.secret_digest, record.previous_digest
    )
    if not current and not previous:
        return _UNKNOWN
    return _AuthSnapshot(
        principal=Principal(key_id=record.key_id, scopes=record.scopes, policy=record.policy),
        revoked=record.revoke_time is not None,
        expire_time=record.expire_time,
        previous=not current,
        grace_expire_time=record.grace_expire_time,
    )


def _verdict(snapshot: _AuthSnapshot, now: datetime) -> Principal:
    principal = snapshot.principal
    if principal is None:
        raise AuthenticationError("the API key is not valid", reason=API_KEY_UNKNOWN)
    if snapshot.revoked:
        raise AuthenticationError(f"API key {principal.key_id} was revoked", reason=API_KEY_REVOKED)
    if snapshot.expire_time is not None and snapshot.expire_time <= now:
        raise AuthenticationError(f"API key {principal.key_id} has expired", reason=API_KEY_EXPIRED)
    if snapshot.previous and (
        snapshot.grace_expire_time is None or snapshot.grace_expire_time <= now
    ):
        raise AuthenticationError(
            f"this secret of API key {principal.key_id} was replaced by a rotation",
            reason=API_KEY_ROTATED,
        )
    return principal


class _Usage:
    __slots__ = ("count", "last_used_time")

    def __init__(self, when: datetime) -> None:
        self.count = 1
        self.last_used_time = when


def _to_api(record: KeyRecord, now: datetime) -> ApiKey:
    return ApiKey(
        key_id=record.key_id,
        display_name=record.display_name,
        scopes=record.scopes,
        state=key_state(revoke_time=record.revoke_time, expire_time=record.expire_time, now=now),
        create_time=record.create_time,
        update_time=record.update_time,
        expire_time=record.expire_time,
        rotate_time=record.rotate_time,
        last_rotate_time=record.last_rotate_time,
        grace_expire_time=record.grace_expire_time,
        revoke_time=record.revoke_time,
        last_used_time=record.last_used_time,
        request_count=record.request_count,
        policy=record.policy,
        version=record.version,
    )


def _encode_page_token(after: str, state: KeyState | None) -> str:
    payload = json.dumps({"after": after, "state": None if state is None else state.value})
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode("ascii")


def _decode_page_token(token: str, state: KeyState | None) -> str:
    """The last key id of the previous page; the filter must be the same as then."""
    if not token:
        return ""
    invalid = KeyArgumentError(
        "page_token is not a next_page_token of ListApiKeys",
        field="page_token",
        reason="INVALID_PAGE_TOKEN",
    )
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
        payload = json.loads(raw)
    except (ValueError, TypeError, RecursionError):  # RecursionError: nested past the parser
        raise invalid from None
    if not isinstance(payload, dict) or set(payload) != {"after", "state"}:
        raise invalid
    after = payload["after"]
    if not isinstance(after, str) or not is_key_id(after):
        raise invalid
    if payload["state"] != (None if state is None else state.value):
        raise KeyArgumentError(
            "page_token was issued for another state filter: repeat the request's other "
            "fields unchanged",
            field="page_token",
            reason="INVALID_PAGE_TOKEN",
        )
    return after


_POLICY_FIELDS: Final = frozenset(f.name for f in fields(KeyPolicy))


def _check_policy(policy: object) -> KeyPolicy:
    if not isinstance(policy, KeyPolicy):
        raise KeyArgumentError(
            "policy must be a KeyPolicy", field="policy", reason="INVALID_KEY_POLICY"
        )
    return policy


def _json_ready(value: Any) -> Any:
    if isinstance(value, KeyPolicy):
        return value.to_json()
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class KeyManager:
    """The keys domain service: create, read, rotate, revoke, update, authenticate.

    Several replicas may share one store. Metadata changes are optimistic (a lost race
    raises :class:`ConcurrentModificationError`); usage counts are added, never
    overwritten. Verified tokens are cached per replica for ``cache_ttl`` seconds: a
    revoke, rotate or update takes effect at once on the replica that made it and
    within ``cache_ttl`` on the others (strictly: ``cache_ttl`` after the end of a
    database read that started before the change committed).

    While the store is unavailable, a token whose cache entry expired less than
    ``outage_grace`` seconds ago still authenticates (its expiry and grace periods
    still checked against the clock): the price is that a change made meanwhile where
    the store is reachable takes effect here only when it is reachable again, at the
    latest ``outage_grace`` later. Usage stays counted in memory and is written by
    the first flush that succeeds.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        clock: Callable[[], datetime] = now_utc,
        cache_ttl: float = 5.0,
        cache_max_entries: int = 10_000,
        outage_grace: float = 300.0,
        usage_flush_interval: float = 1.0,
        usage_flush_calls: int = 100,
        rotation_period: timedelta = timedelta(days=30),
        default_grace: timedelta = timedelta(hours=24),
        overdue_scan_interval: float = 60.0,
        expire_overdue_after: timedelta | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        """Create the manager (no I/O until used; :meth:`start` runs the background jobs).

        Args:
            store: Where keys live (see :func:`open_store`); :meth:`stop` closes it.
            clock: Current time, for states, expiry and rotation (tests inject one).
            cache_ttl: Seconds a verified token is trusted without a database read; the
                bound on how late other replicas see a revoke/rotate/update. 0: no cache.
            cache_max_entries: Tokens cached at most (oldest dropped first).
            outage_grace: Seconds after its cache entry expired that a token still
                authenticates while the store is unavailable. 0: never.
            usage_flush_interval: Seconds between writes of the usage counters.
            usage_flush_calls: Calls counted that start a write before the interval
                ends: under load a crash loses fewer than twice this (one batch being
                written, one filling).
            rotation_period: rotate_time is this long after creation or rotation.
            default_grace: How long the previous secret works after a rotation.
            overdue_scan_interval: Seconds between scans for keys past rotate_time.
            expire_overdue_after: If set, keys overdue for rotation by more than this
                are expired by the scan.
            tracer: Records the store calls made while a call is served as child
                spans of it.
        """
        if cache_ttl < 0 or cache_max_entries < 1:
            raise ValueError("cache_ttl must be >= 0 and cache_max_entries >= 1")
        if usage_flush_interval <= 0 or overdue_scan_interval <= 0 or usage_flush_calls < 1:
            raise ValueError("background job intervals and usage_flush_calls must be positive")
        if outage_grace < 0:
            raise ValueError("outage_grace must not be negative")
        if rotation_period <= timedelta(0):
            raise ValueError("rotation_period must be positive")
        check_grace_period(default_grace, maximum=MAX_GRACE_PERIOD)
        if expire_overdue_after is not None and expire_overdue_after < timedelta(0):
            raise ValueError("expire_overdue_after must not be negative")
        self._store = store if tracer is None else cast(KeyStore, _TracedStore(store, tracer))
        self._clock = clock
        self._cache_ttl = cache_ttl
        self._cache_max = cache_max_entries
        self._outage_grace = outage_grace
        self._usage_interval = usage_flush_interval
        self._usage_flush_calls = usage_flush_calls
        self._rotation_period = rotation_period
        self._default_grace = default_grace
        self._scan_interval = overdue_scan_interval
        self._expire_overdue_after = expire_overdue_after

        self._cache: OrderedDict[ParsedToken, tuple[float, _AuthSnapshot]] = OrderedDict()
        # Bumped by every local invalidation: a lookup that started before one must
        # not cache what it read (it may predate the change).
        self._generation = 0
        self._inflight: dict[ParsedToken, asyncio.Task[_AuthSnapshot]] = {}
        # Key ids the store did not have, trusted for cache_ttl: guessed ids repeated in
        # a loop cost no database read (a key created meanwhile on another replica works
        # here at most cache_ttl later, as a revocation takes effect).
        self._unknown_ids: OrderedDict[str, float] = OrderedDict()
        # Key ids seen to exist: a peer over its failed-authentication budget may still
        # present one of these (a valid key behind the same address as an attacker).
        self._known_ids: OrderedDict[str, float] = OrderedDict()
        self._usage: dict[str, _Usage] = {}
        self._unflushed = 0
        self._flush_wanted = asyncio.Event()
        self._flush_failing = False
        self._flush_failures = 0
        self._stale_served = 0
        self._overdue = 0
        self._by_state: dict[str, int] = {state.value: 0 for state in KeyState}
        self._scanned = False
        self._stopping = asyncio.Event()
        self._tasks: builtins.list[asyncio.Task[None]] = []

    def _now(self) -> datetime:
        return utc(self._clock())

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the background jobs: usage flush and overdue-rotation scan."""
        if self._tasks:
            return
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(
                self._every(
                    self._usage_interval, self.flush_usage, "usage flush", early=self._flush_wanted
                ),
                name="keys-usage-flush",
            ),
            asyncio.create_task(
                self._every(self._scan_interval, self.scan_overdue, "overdue scan", at_once=True),
                name="keys-overdue-scan",
            ),
        ]

    async def stop(self) -> None:
        """Stop the background jobs (letting a running one finish), flush usage, and
        close the store: the manager owns the store it was given."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.flush_usage()
        except DomainError as exc:
            log.error(
                "final flush of API key usage failed (%s): %d counted calls are lost",
                exc.message,
                self._unflushed,
            )
        except Exception:
            log.exception("final flush of API key usage failed; these counts are lost")
        finally:
            await self._store.close()

    async def _every(
        self,
        interval: float,
        job: Callable[[], Awaitable[object]],
        what: str,
        *,
        at_once: bool = False,
        early: asyncio.Event | None = None,
    ) -> None:
        """Run ``job`` every ``interval`` seconds, and as soon as ``early`` is set."""
        if at_once:
            await self._run(job, what)
        while True:
            # Waiting on the stop event (not sleeping) lets stop() end the loop between
            # runs instead of cancelling a write half-way.
            waits = [asyncio.ensure_future(self._stopping.wait())]
            if early is not None:
                waits.append(asyncio.ensure_future(early.wait()))
            try:
                await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            if self._stopping.is_set():
                return
            if early is not None:
                early.clear()
            await self._run(job, what)

    @staticmethod
    async def _run(job: Callable[[], Awaitable[object]], what: str) -> None:
        try:
            await job()
        except KeyStoreUnavailableError as exc:
            # The database logs the outage once; one line per run would flood the log.
            log.debug("API key %s failed: %s", what, exc.message)
        except DomainError as exc:
            log.warning("API key %s failed: %s", what, exc.message)
        except Exception:
            log.exception("API key %s failed", what)

    # --- administration ----------------------------------------------------------

    def _new_key(
        self,
        *,
        now: datetime,
        display_name: str,
        scopes: frozenset[str],
        policy: KeyPolicy,
        expire_time: datetime | None,
        details: dict[str, Any] | None = None,
    ) -> tuple[KeyRecord, AuditEvent, str]:
        key_id = new_key_id(now)
        token, digest = new_secret(key_id)
        record = KeyRecord(
            key_id=key_id,
            display_name=display_name,
            scopes=scopes,
            policy=policy,
            secret_digest=digest,
            previous_digest=None,
            grace_expire_time=None,
            create_time=now,
            update_time=now,
            expire_time=expire_time,
            rotate_time=now + self._rotation_period,
            last_rotate_time=None,
            revoke_time=None,
            last_used_time=None,
            request_count=0,
            version=1,
        )
        event = AuditEvent(
            key_id=key_id,
            event=KeyEvent.CREATED,
            time=now,
            details={
                "display_name": display_name,
                "scopes": sorted(scopes),
                "policy": policy.to_json(),
                "expire_time": _json_ready(expire_time),
                **(details or {}),
            },
        )
        return record, event, token

    async def create(
        self,
        *,
        display_name: str,
        scopes: Iterable[str],
        policy: KeyPolicy = KeyPolicy(),  # noqa: B008 - frozen, so sharing it is safe
        expire_time: datetime | None = None,
        invalid: Iterable[DomainError] = (),
    ) -> tuple[ApiKey, str]:
        """Create an active key.

        Args:
            invalid: Violations the caller found converting other fields of the same
                request; reported together with these arguments' own.

        Returns:
            The key and its secret ``ask_<key_id>_<secret>``: the only time the secret
            exists outside the caller.

        Raises:
            KeyArgumentError: display_name, scopes, policy or expire_time is invalid
                (``FieldViolationsError`` naming each when several are, or when
                ``invalid`` is not empty).
        """
        failures = FieldErrors(invalid)
        now = self._now()
        name = failures.check(lambda: check_display_name(display_name), "")
        granted = failures.check(lambda: check_scopes(scopes), frozenset[str]())
        failures.check(lambda: _check_policy(policy))
        expires = failures.check(lambda: check_expire_time(expire_time, now=now))
        failures.raise_any()
        attempts = 0
        while True:
            record, event, token = self._new_key(
                now=now, display_name=name, scopes=granted, policy=policy, expire_time=expires
            )
            try:
                await self._store.insert([(record, event)])
            except DuplicateKeyIdError:
                # Same millisecond and the same 35 random bits: draw another id.
                attempts += 1
                if attempts == 3:
                    raise
                continue
            self._invalidate(record.key_id)
            self._remember_id(self._known_ids, record.key_id, KNOWN_ID_SECONDS)
            log.info("API key %s created", record.key_id)
            return _to_api(record, now), token

    async def bootstrap_if_empty(self) -> builtins.list[tuple[ApiKey, str]]:
        """First start: if the store holds no key, create "admin" (scopes admin and
        staking) and "staking" (scope staking) and return them with their secrets.

        Returns:
            The two keys and secrets, or ``[]`` when the store already held keys (also
            when another replica bootstrapped it at the same moment).
        """
        now = self._now()
        created = [
            self._new_key(
                now=now,
                display_name=name,
                scopes=scopes,
                policy=KeyPolicy(),
                expire_time=None,
                details={"bootstrap": True},
            )
            for name, scopes in (
                ("admin", frozenset({Scope.ADMIN.value, Scope.STAKING.value})),
                ("staking", frozenset({Scope.STAKING.value})),
            )
        ]
        if not await self._store.insert(
            [(record, event) for record, event, _ in created], only_if_empty=True
        ):
            return []
        log.info("bootstrapped API keys %s", ", ".join(record.key_id for record, _, _ in created))
        return [(_to_api(record, now), token) for record, _, token in created]

    async def _load(self, key_id: str) -> KeyRecord:
        if not is_key_id(key_id):
            raise KeyNotFoundError(None)
        record = await self._store.get(key_id)
        if record is None:
            raise KeyNotFoundError(key_id)
        return record

    async def get(self, key_id: str) -> ApiKey:
        """The key's metadata, state and usage (usage as of the last flush).

        Raises:
            KeyNotFoundError: No key has this id.
        """
        record = await self._load(key_id)
        return _to_api(record, self._now())

    async def list(
        self,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str = "",
        state: KeyState | None = None,
        invalid: Iterable[DomainError] = (),
    ) -> tuple[builtins.list[ApiKey], str, int]:
        """One page of keys in key-id order (which is creation order, to the millisecond).

        Args:
            page_size: Keys per page; 0 means 50, above 500 means 500.
            page_token: ``next_page_token`` of the previous page; "" for the first.
            state: Only keys in this state now; None: all.
            invalid: Violations the caller found converting other fields of the same
                request; reported together with these arguments' own.

        Returns:
            (keys, next_page_token or "" on the last page, keys matching in all).

        Raises:
            KeyArgumentError: page_size is negative or page_token is not one of ours
                for the same filter.
        """
        failures = FieldErrors(invalid)
        if page_size < 0:
            failures.add(
                KeyArgumentError(
                    "page_size must not be negative", field="page_size", reason="INVALID_PAGE_SIZE"
                )
            )
        after = failures.check(lambda: _decode_page_token(page_token, state), "")
        failures.raise_any()
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        now = self._now()
        records, total = await self._store.list_keys(
            after=after, limit=size + 1, state=state, now=now
        )
        next_token = (
            _encode_page_token(records[size - 1].key_id, state) if len(records) > size else ""
        )
        return [_to_api(record, now) for record in records[:size]], next_token, total

    async def _save(self, old: KeyRecord, new: KeyRecord, event: AuditEvent) -> None:
        """Write ``new`` over ``old`` if nobody changed the key meanwhile."""
        try:
            written = await self._store.update(new, expected_version=old.version, event=event)
        finally:
            # Written or lost to another writer: either way the cached view is stale.
            self._invalidate(old.key_id)
        if not written:
            raise ConcurrentModificationError(old.key_id)
        log.info("API key %s %s", old.key_id, event.event.value)

    async def rotate(
        self,
        key_id: str,
        *,
        grace_period: timedelta | None = None,
        invalid: Iterable[DomainError] = (),
    ) -> tuple[ApiKey, str]:
        """Issue a new secret. The previous one works until now + ``grace_period``;
        the one before it (if still in its grace period) stops now.

        Args:
            grace_period: 0 to 30 days; None: the manager's default (24 h).
            invalid: Violations the caller found converting other fields of the same
                request; reported together with grace_period's, before the key is read.

        Returns:
            The key (rotate_time, last_rotate_time, grace_expire_time updated) and the
            new secret, shown only this once.

        Raises:
            KeyArgumentError: grace_period out of range.
            KeyNotFoundError, KeyRevokedError, KeyExpiredError.
            ConcurrentModificationError: Another change of the key won the race.
        """
        failures = FieldErrors(invalid)
        grace = failures.check(
            lambda: check_grace_period(
                self._default_grace if grace_period is None else grace_period,
                maximum=MAX_GRACE_PERIOD,
            ),
            self._default_grace,
        )
        failures.raise_any()
        record = await self._load(key_id)
        now = self._now()
        self._check_changeable(record, now, "rotated", allow_expired=False)
        token, digest = new_secret(record.key_id)
        ended_early = record.grace_expire_time is not None and record.grace_expire_time > now
        new = replace(
            record,
            secret_digest=digest,
            previous_digest=record.secret_digest,
            grace_expire_time=now + grace,
            last_rotate_time=now,
            rotate_time=now + self._rotation_period,
            update_time=now,
            version=record.version + 1,
        )
        event = AuditEvent(
            key_id=record.key_id,
            event=KeyEvent.ROTATED,
            time=now,
            details={
                "grace_period_seconds": int(grace.total_seconds()),
                "grace_expire_time": _json_ready(new.grace_expire_time),
                "rotate_time": _json_ready(new.rotate_time),
                "ended_previous_grace": ended_early,
            },
        )
        await self._save(record, new, event)
        return _to_api(new, now), token

    async def revoke(self, key_id: str) -> ApiKey:
        """Stop every secret of the key now (on other replicas within ``cache_ttl``).
        Revoking a revoked key returns it unchanged.

        Raises:
            KeyNotFoundError, ConcurrentModificationError.
        """
        record = await self._load(key_id)
        now = self._now()
        if record.revoke_time is not None:
            return _to_api(record, now)
        new = replace(record, revoke_time=now, update_time=now, version=record.version + 1)
        event = AuditEvent(key_id=record.key_id, event=KeyEvent.REVOKED, time=now, details={})
        await self._save(record, new, event)
        return _to_api(new, now)

    async def update(
        self,
        key_id: str,
        *,
        display_name: str | Unset = UNSET,
        scopes: Iterable[str] | Unset = UNSET,
        policy: KeyPolicy | Unset = UNSET,
        policy_fields: Collection[str] | None = None,
        expire_time: datetime | Unset | None = UNSET,
        invalid: Iterable[DomainError] = (),
    ) -> ApiKey:
        """Change the given fields (:data:`UNSET` ones stay). ``expire_time=None`` means
        never; a later expire_time makes an expired key active again.

        Args:
            policy_fields: Only these fields of ``policy`` (KeyPolicy field names)
                replace the key's; None: the whole policy.
            invalid: Violations the caller found converting other fields of the same
                request; reported together with these arguments' own, before the key
                is read.

        Raises:
            KeyArgumentError: A value is invalid (expire_time must be in the future);
                ``FieldViolationsError`` naming each when several are.
            KeyNotFoundError, ConcurrentModificationError.
            KeyRevokedError: Revoked keys cannot change.
            ValueError: ``policy_fields`` names something that is not a KeyPolicy field.
        """
        if policy_fields is not None and not _POLICY_FIELDS.issuperset(policy_fields):
            raise ValueError(f"policy_fields must name KeyPolicy fields, got {policy_fields}")
        failures = FieldErrors(invalid)
        now = self._now()
        changes: dict[str, Any] = {}
        if not isinstance(display_name, Unset):
            changes["display_name"] = failures.check(lambda: check_display_name(display_name), "")
        if not isinstance(scopes, Unset):
            changes["scopes"] = failures.check(lambda: check_scopes(scopes), frozenset[str]())
        if not isinstance(policy, Unset):
            changes["policy"] = failures.check(lambda: _check_policy(policy), KeyPolicy())
        if not isinstance(expire_time, Unset):
            changes["expire_time"] = failures.check(lambda: check_expire_time(expire_time, now=now))
        failures.raise_any()
        record = await self._load(key_id)
        self._check_changeable(record, now, "updated", allow_expired=True)
        if "policy" in changes and policy_fields is not None:
            chosen = {name: getattr(changes["policy"], name) for name in policy_fields}
            changes["policy"] = replace(record.policy, **chosen)
        if not changes:
            return _to_api(record, now)
        new = replace(record, **changes, update_time=now, version=record.version + 1)
        event = AuditEvent(
            key_id=record.key_id,
            event=KeyEvent.UPDATED,
            time=now,
            details={name: _json_ready(value) for name, value in changes.items()},
        )
        await self._save(record, new, event)
        return _to_api(new, now)

    @staticmethod
    def _check_changeable(
        record: KeyRecord, now: datetime, action: str, *, allow_expired: bool
    ) -> None:
        state = key_state(revoke_time=record.revoke_time, expire_time=record.expire_time, now=now)
        if state is KeyState.REVOKED:
            raise KeyRevokedError(record.key_id, action)
        if state is KeyState.EXPIRED and not allow_expired:
            raise KeyExpiredError(record.key_id, action)

    async def audit_events(self, key_id: str) -> builtins.list[AuditEvent]:
        """The key's lifecycle events, oldest first ([] for an unknown key)."""
        return await self._store.audit_events(key_id) if is_key_id(key_id) else []

    # --- authentication ----------------------------------------------------------

    async def authenticate(self, token: str) -> Principal:
        """Verify a presented credential.

        Served from the per-replica cache when this token was looked up less than
        ``cache_ttl`` seconds ago; expiry and grace periods are still checked against
        the clock. Concurrent first calls with one token share one database read.
        While the store is unavailable, an entry expired less than ``outage_grace``
        seconds ago is used still.

        Raises:
            AuthenticationError: reason ``API_KEY_MALFORMED``, ``API_KEY_UNKNOWN`` (no
                such key id or a wrong secret: one reason, so ids cannot be probed),
                ``API_KEY_EXPIRED``, ``API_KEY_REVOKED`` or ``API_KEY_ROTATED``.
            KeyStoreUnavailableError: Not cached (or not recently enough) and the
                store failed.
        """
        parsed = parse_token(token)
        cached = self._cache.get(parsed)
        if cached is not None and cached[0] > time.monotonic():
            snapshot = cached[1]
        else:
            try:
                snapshot = await self._lookup(parsed)
            except KeyStoreUnavailableError:
                if cached is None or cached[0] + self._outage_grace <= time.monotonic():
                    raise
                snapshot = cached[1]
                self._stale_served += 1
        return _verdict(snapshot, self._now())

    async def _lookup(self, token: ParsedToken) -> _AuthSnapshot:
        task = self._inflight.get(token)
        if task is None:
            task = asyncio.create_task(self._read_snapshot(token))
            self._inflight[token] = task
            task.add_done_callback(lambda done: self._lookup_done(token, done))
        # Shielded: one caller giving up (deadline) must not cancel the others' read.
        return await asyncio.shield(task)

    def _lookup_done(self, token: ParsedToken, task: asyncio.Task[_AuthSnapshot]) -> None:
        if self._inflight.get(token) is task:
            del self._inflight[token]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not reported

    def may_be_valid(self, token: str) -> bool:
        """Whether ``token`` names a key id known to exist (no database read): what a
        peer over its failed-authentication budget must present to be heard."""
        try:
            key_id = parse_token(token).key_id
        except AuthenticationError:
            return False
        expiry = self._known_ids.get(key_id)
        return expiry is not None and expiry > time.monotonic()

    def _remember_id(self, ids: OrderedDict[str, float], key_id: str, ttl: float) -> None:
        ids[key_id] = time.monotonic() + ttl
        ids.move_to_end(key_id)
        while len(ids) > self._cache_max:
            ids.popitem(last=False)

    async def _read_snapshot(self, token: ParsedToken) -> _AuthSnapshot:
        unknown_until = self._unknown_ids.get(token.key_id)
        if unknown_until is not None and unknown_until > time.monotonic():
            return _UNKNOWN
        generation = self._generation
        record = await self._store.get(token.key_id)
        if record is None:
            if self._cache_ttl > 0:
                self._remember_id(self._unknown_ids, token.key_id, self._cache_ttl)
        else:
            self._remember_id(self._known_ids, token.key_id, KNOWN_ID_SECONDS)
        snapshot = _snapshot(record, token)
        if self._cache_ttl > 0 and generation == self._generation:
            self._cache[token] = (time.monotonic() + self._cache_ttl, snapshot)
            self._cache.move_to_end(token)
            while len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
        return snapshot

    def _invalidate(self, key_id: str) -> None:
        self._generation += 1
        self._unknown_ids.pop(key_id, None)
        for token in [token for token in self._cache if token.key_id == key_id]:
            del self._cache[token]

    # --- usage -------------------------------------------------------------------

    def record_use(self, key_id: str) -> None:
        """Count one authenticated call; written by the next flush, not now."""
        now = self._now()
        usage = self._usage.get(key_id)
        if usage is None:
            self._usage[key_id] = _Usage(now)
        else:
            usage.count += 1
            usage.last_used_time = max(usage.last_used_time, now)
        self._unflushed += 1
        # Many calls flush early; not while flushes fail (they run at the interval then).
        if self._unflushed >= self._usage_flush_calls and not self._flush_failing:
            self._flush_wanted.set()

    async def flush_usage(self) -> None:
        """Add the counted calls to the store: one additive UPDATE per key.

        On failure the counts are kept for the next flush.
        """
        if not self._usage:
            return
        batch, self._usage = self._usage, {}
        calls, self._unflushed = self._unflushed, 0
        try:
            await self._store.add_usage(
                {key: UsageDelta(u.count, u.last_used_time) for key, u in batch.items()}
            )
            self._flush_failing = False
        except BaseException:
            self._flush_failing = True
            self._flush_failures += 1
            self._unflushed += calls
            for key, usage in batch.items():
                pending = self._usage.get(key)
                if pending is None:
                    self._usage[key] = usage
                else:
                    pending.count += usage.count
                    pending.last_used_time = max(pending.last_used_time, usage.last_used_time)
            raise

    # --- rotation hygiene --------------------------------------------------------

    def overdue_count(self) -> int:
        """Active keys past their rotate_time at the last scan (for a gauge)."""
        return self._overdue

    def stats(self) -> KeyStats:
        """Keys per state and overdue for rotation (as of the last scan), for gauges."""
        return KeyStats(
            by_state=dict(self._by_state),
            overdue=self._overdue,
            scanned=self._scanned,
            cached_tokens=len(self._cache),
            stale_authentications=self._stale_served,
            unflushed_calls=self._unflushed,
            usage_flush_failures=self._flush_failures,
        )

    async def scan_overdue(self) -> builtins.list[str]:
        """Find active keys past rotate_time; with ``expire_overdue_after``, expire those
        overdue by more than that (audited as "expired"). Also counts the keys per
        state (:meth:`stats`).

        Returns:
            Ids of the keys still active and overdue (also :meth:`overdue_count`).
        """
        now = self._now()
        overdue: builtins.list[str] = []
        for record in await self._store.list_overdue(now):
            limit = self._expire_overdue_after
            if limit is not None and now - record.rotate_time > limit:
                await self._expire_overdue(record, now)
            else:
                overdue.append(record.key_id)
        self._overdue = len(overdue)
        if overdue:
            shown = ", ".join(overdue[:20]) + (" ..." if len(overdue) > 20 else "")
            log.warning("%d API key(s) past their rotation time: %s", len(overdue), shown)
        for state in KeyState:
            _, self._by_state[state.value] = await self._store.list_keys(
                after="", limit=1, state=state, now=now
            )
        await self._learn_active_ids(now)
        self._scanned = True
        return overdue

    async def rotation_due(self, within: timedelta) -> builtins.list[ApiKey]:
        """Active keys whose rotate_time is at most ``within`` from now (overdue ones
        included): the same store query as the overdue scan, looking ahead."""
        now = self._now()
        keys = [_to_api(record, now) for record in await self._store.list_overdue(now + within)]
        return [key for key in keys if key.state is KeyState.ACTIVE]

    async def _learn_active_ids(self, now: datetime) -> None:
        """Remember every active key's id (``may_be_valid``): a key created on another
        replica is heard from a blocked peer at most one scan later."""
        after = ""
        while True:
            records, _ = await self._store.list_keys(
                after=after, limit=MAX_PAGE_SIZE, state=KeyState.ACTIVE, now=now
            )
            for record in records:
                self._remember_id(self._known_ids, record.key_id, KNOWN_ID_SECONDS)
            if len(records) < MAX_PAGE_SIZE:
                return
            after = records[-1].key_id

    async def _expire_overdue(self, record: KeyRecord, now: datetime) -> None:
        # Expiring sets expire_time to now: the state stays a pure function of the
        # times, and a later expire_time (update) reactivates the key. NOTE: its
        # rotate_time is still past, so rotate it before the next scan expires it again.
        new = replace(record, expire_time=now, update_time=now, version=record.version + 1)
        event = AuditEvent(
            key_id=record.key_id,
            event=KeyEvent.EXPIRED,
            time=now,
            details={
                "reason": "rotation_overdue",
                "rotate_time": _json_ready(record.rotate_time),
                "previous_expire_time": _json_ready(record.expire_time),
            },
        )
        try:
            await self._save(record, new, event)
        except ConcurrentModificationError:
            # Typically another replica's scan expired it first; otherwise the key
            # changed and the next scan looks at it again.
            log.info("API key %s changed during the overdue scan; left to the next", record.key_id)
