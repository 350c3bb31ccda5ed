"""The API key resource, its policy and the authenticated principal."""

from __future__ import annotations

import enum
import functools
import heapq
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

from service.core import parse_address
from service.core.errors import FieldErrors
from service.keys._errors import KeyArgumentError

U64_MAX: Final = 2**64 - 1
U32_MAX: Final = 2**32 - 1
MAX_SERVICE_FEE_BPS: Final = 10_000
MAX_DISPLAY_NAME_LENGTH: Final = 100
MAX_POLICY_LIST: Final = 1000
"""Entries in one policy list (wallets, vote accounts, methods)."""
# RPC names as in the proto ("BuildStakeTransaction"); checked for shape only, the api
# layer knows the service descriptor.
_METHOD_RE: Final = re.compile(r"[A-Z][A-Za-z0-9]{0,99}")


class Scope(enum.StrEnum):
    """What a key may call: StakingService (``staking``) and/or KeyService (``admin``)."""

    STAKING = "staking"
    ADMIN = "admin"


class KeyState(enum.Enum):
    """State of a key, computed from its revoke and expire times at a given instant."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class KeyEvent(enum.StrEnum):
    """Lifecycle events written to the audit log."""

    CREATED = "created"
    ROTATED = "rotated"
    REVOKED = "revoked"
    EXPIRED = "expired"
    UPDATED = "updated"


class Unset(enum.Enum):
    """Type of :data:`UNSET`: "leave this field as it is" in :meth:`KeyManager.update`."""

    UNSET = "UNSET"


UNSET: Final = Unset.UNSET


def _invalid_policy(name: str, message: str) -> KeyArgumentError:
    return KeyArgumentError(message, field=f"policy.{name}", reason="INVALID_KEY_POLICY")


def _check_int(value: object, *, name: str, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise _invalid_policy(name, f"policy.{name} must be an integer from 0 to {high}")
    return value


def _unique_strings(value: object, *, name: str) -> tuple[str, ...]:
    # A bare string would iterate as characters: refuse it instead of guessing.
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise _invalid_policy(name, f"policy.{name} must be a list of strings")
    items = tuple(value)
    if not all(isinstance(item, str) for item in items):
        raise _invalid_policy(name, f"policy.{name} must be a list of strings")
    unique = tuple(dict.fromkeys(items))
    if len(unique) > MAX_POLICY_LIST:
        raise _invalid_policy(
            name, f"policy.{name} holds {len(unique)} entries; at most {MAX_POLICY_LIST}"
        )
    return unique


def _addresses(value: object, *, name: str) -> tuple[str, ...]:
    addresses = _unique_strings(value, name=name)
    # Every bad entry, named by its first place in the list as sent.
    errors = FieldErrors()
    sent: tuple[str, ...] = tuple(value)  # type: ignore[arg-type]  # a list of strings, checked
    places = {address: i for i, address in reversed(list(enumerate(sent)))}
    for address in addresses:
        field = f"policy.{name}[{places[address]}]"
        errors.check(functools.partial(parse_address, address, field=field))
    errors.raise_any()
    return addresses


def _method_names(value: object) -> tuple[str, ...]:
    methods = _unique_strings(value, name="allowed_methods")
    for method in methods:
        if not _METHOD_RE.fullmatch(method):
            raise _invalid_policy(
                "allowed_methods",
                f"policy.allowed_methods entry {method[:64]!r} is not an RPC name "
                "such as 'BuildStakeTransaction'",
            )
    return methods


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """A token bucket: sustained requests per minute and burst size (0: operator default)."""

    requests_per_minute: int
    burst: int

    def __post_init__(self) -> None:
        _check_int(self.requests_per_minute, name="rate_limit.requests_per_minute", high=U32_MAX)
        _check_int(self.burst, name="rate_limit.burst", high=U32_MAX)


@dataclass(frozen=True, kw_only=True)
class KeyPolicy:
    """Restrictions of a key; empty or zero fields restrict nothing.

    Validated on construction (raises :class:`KeyArgumentError` naming
    ``policy.<field>``); lists are stored as tuples without duplicates.
    """

    max_lamports_per_transaction: int = 0
    """Largest amount one built transaction may move; 0: no limit."""
    allowed_vote_accounts: tuple[str, ...] = ()
    """Vote accounts (base58) the key may delegate to; empty: any."""
    allowed_wallets: tuple[str, ...] = ()
    """Wallets (base58) the key may act for; empty: any."""
    service_fee_bps: int | None = None
    """Service fee override in basis points (0..10000); None: the operator's default."""
    rate_limit: RateLimit | None = None
    """Per-key rate limit; None: the operator's default."""
    allowed_methods: tuple[str, ...] = ()
    """StakingService RPC names the key may call, e.g. "BuildStakeTransaction"; empty: any."""
    max_priority_fee_lamports: int = 0
    """Largest priority fee a built transaction may carry; 0: the operator's maximum."""

    def __post_init__(self) -> None:
        # Every field is checked before any is reported.
        failures = FieldErrors()
        for name, high in (
            ("max_lamports_per_transaction", U64_MAX),
            ("max_priority_fee_lamports", U64_MAX),
        ):
            failures.check(partial(_check_int, getattr(self, name), name=name, high=high), 0)
        for name in ("allowed_vote_accounts", "allowed_wallets"):
            addresses = failures.check(partial(_addresses, getattr(self, name), name=name), ())
            object.__setattr__(self, name, addresses)
        if self.service_fee_bps is not None:
            fee_check = partial(
                _check_int, self.service_fee_bps, name="service_fee_bps", high=MAX_SERVICE_FEE_BPS
            )
            failures.check(fee_check, 0)
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            failures.add(_invalid_policy("rate_limit", "policy.rate_limit must be a RateLimit"))
        methods = failures.check(partial(_method_names, self.allowed_methods), ())
        object.__setattr__(self, "allowed_methods", methods)
        failures.raise_any()

    def to_json(self) -> dict[str, Any]:
        """The policy as a JSON-ready dict (the stores' and the audit log's format)."""
        return {
            "max_lamports_per_transaction": self.max_lamports_per_transaction,
            "allowed_vote_accounts": list(self.allowed_vote_accounts),
            "allowed_wallets": list(self.allowed_wallets),
            "service_fee_bps": self.service_fee_bps,
            "rate_limit": None
            if self.rate_limit is None
            else {
                "requests_per_minute": self.rate_limit.requests_per_minute,
                "burst": self.rate_limit.burst,
            },
            "allowed_methods": list(self.allowed_methods),
            "max_priority_fee_lamports": self.max_priority_fee_lamports,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyPolicy:
        """Inverse of :meth:`to_json`; missing fields take their defaults."""
        limit = data.get("rate_limit")
        return cls(
            max_lamports_per_transaction=data.get("max_lamports_per_transaction", 0),
            allowed_vote_accounts=tuple(data.get("allowed_vote_accounts", ())),
            allowed_wallets=tuple(data.get("allowed_wallets", ())),
            service_fee_bps=data.get("service_fee_bps"),
            rate_limit=None if limit is None else RateLimit(**limit),
            allowed_methods=tuple(data.get("allowed_methods", ())),
            max_priority_fee_lamports=data.get("max_priority_fee_lamports", 0),
        )


def key_state(
    *, revoke_time: datetime | None, expire_time: datetime | None, now: datetime
) -> KeyState:
    """The state of a key with these times at ``now``."""
    if revoke_time is not None:
        return KeyState.REVOKED
    if expire_time is not None and expire_time <= now:
        return KeyState.EXPIRED
    return KeyState.ACTIVE


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    """An API key's metadata, state and usage, as of one read. Never holds a secret."""

    key_id: str
    display_name: str
    scopes: frozenset[str]
    state: KeyState
    create_time: datetime
    update_time: datetime
    expire_time: datetime | None
    rotate_time: datetime
    """When the next rotation is due."""
    last_rotate_time: datetime | None
    grace_expire_time: datetime | None
    """End of the previous secret's grace period (in the past once it has ended); None if
    the key was never rotated."""
    revoke_time: datetime | None
    last_used_time: datetime | None
    request_count: int
    policy: KeyPolicy
    version: int
    """Incremented by every change of the key's metadata (optimistic concurrency)."""

    @property
    def name(self) -> str:
        """Resource name, ``apiKeys/{key_id}``."""
        return f"apiKeys/{self.key_id}"


@dataclass(frozen=True, kw_only=True)
class Principal:
    """The caller an API key authenticated: what the auth interceptor hands down."""

    key_id: str
    scopes: frozenset[str]
    policy: KeyPolicy

    def has_scope(self, scope: str) -> bool:
        """Whether the key was granted ``scope`` (a :class:`Scope` or its value)."""
        return scope in self.scopes


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One lifecycle event of a key. ``details`` is JSON-ready and never holds a secret."""

    key_id: str
    event: KeyEvent
    time: datetime
    details: Mapping[str, Any] = field(default_factory=dict)


def check_display_name(value: object) -> str:
    """Validate a display name: 1 to 100 characters, not blank, no control characters."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > MAX_DISPLAY_NAME_LENGTH
        or not value.isprintable()
    ):
        raise KeyArgumentError(
            f"display_name must be 1 to {MAX_DISPLAY_NAME_LENGTH} printable characters",
            field="display_name",
            reason="INVALID_DISPLAY_NAME",
        )
    return value


def check_scopes(value: Iterable[str]) -> frozenset[str]:
    """Validate scopes: at least one, each a :class:`Scope` value."""
    if isinstance(value, str | bytes):
        raise KeyArgumentError("scopes must be a list", field="scopes", reason="INVALID_SCOPE")
    scopes = frozenset(value)
    known = {scope.value for scope in Scope}
    unknown = heapq.nsmallest(10, (str(s)[:32] for s in scopes if s not in known))
    if unknown or not scopes:
        raise KeyArgumentError(
            f"scopes must be one or more of {sorted(known)}"
            + (f"; unknown: {unknown}" if unknown else ""),
            field="scopes",
            reason="INVALID_SCOPE",
        )
    return frozenset(Scope(s).value for s in scopes)


def check_expire_time(value: datetime | None, *, now: datetime) -> datetime | None:
    """Validate an expire time: None (never) or later than ``now``; naive means UTC."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise KeyArgumentError(
            "expire_time must be a timestamp", field="expire_time", reason="INVALID_EXPIRE_TIME"
        )
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if value <= now:
        raise KeyArgumentError(
            "expire_time must be in the future", field="expire_time", reason="INVALID_EXPIRE_TIME"
        )
    return value


def check_grace_period(value: timedelta, *, maximum: timedelta) -> timedelta:
    """Validate a rotation grace period: 0 (the old secret stops at once) to ``maximum``."""
    if not isinstance(value, timedelta) or not timedelta(0) <= value <= maximum:
        raise KeyArgumentError(
            f"grace_period must be from 0 to {maximum.days} days",
            field="grace_period",
            reason="INVALID_GRACE_PERIOD",
        )
    return value
