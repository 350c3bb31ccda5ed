"""Pure proto <-> domain conversions for the KeyService."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

from agentstaking.v1 import keys_pb2, staking_pb2
from google.protobuf import duration_pb2, timestamp_pb2

from service.core.errors import (
    FieldViolation,
    FieldViolationsError,
    InvalidArgumentError,
    combine_violations,
    failed_checks,
)
from service.core.policy import CallerPolicy
from service.keys import ApiKey, KeyArgumentError, KeyPolicy, KeyState, RateLimit

NAME_PREFIX = "apiKeys/"

_STATE_TO_PROTO = {
    KeyState.ACTIVE: keys_pb2.ApiKey.STATE_ACTIVE,
    KeyState.EXPIRED: keys_pb2.ApiKey.STATE_EXPIRED,
    KeyState.REVOKED: keys_pb2.ApiKey.STATE_REVOKED,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}

UPDATABLE_PATHS = frozenset({"display_name", "scopes", "policy", "expire_time"})
POLICY_FIELDS = frozenset(keys_pb2.KeyPolicy.DESCRIPTOR.fields_by_name)
# Every updatable path fits many times over: more is not a mask, it is abuse.
MAX_MASK_PATHS = 64
MAX_MASK_PATH_CHARS = 128
STAKING_METHODS: Final = frozenset(
    staking_pb2.DESCRIPTOR.services_by_name["StakingService"].methods_by_name
)
"""What `policy.allowed_methods` may name: the RPCs of the StakingService."""


def key_id_from_name(name: str, *, field: str = "name") -> str:
    """`apiKeys/{key_id}` -> key_id."""
    key_id = name.removeprefix(NAME_PREFIX)
    if not name.startswith(NAME_PREFIX) or not key_id or "/" in key_id:
        raise InvalidArgumentError(
            f"{field} must look like `apiKeys/{{key_id}}`, got {name[:80]!r}", field=field
        )
    return key_id


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


# The ranges google.protobuf.Timestamp and Duration define (0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999999999Z; +-10,000 years).
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_DURATION_SECONDS = 315_576_000_000
_NANOS = 999_999_999


def timestamp_to_datetime(stamp: timestamp_pb2.Timestamp, *, field: str) -> datetime:
    """The datetime of a Timestamp.

    Raises:
        InvalidArgumentError: Outside the range a Timestamp may hold.
    """
    low, high = _TIMESTAMP_SECONDS
    if not low <= stamp.seconds <= high or not 0 <= stamp.nanos <= _NANOS:
        raise InvalidArgumentError(
            f"{field} is not a valid timestamp: seconds must be {low}..{high} "
            f"(years 1 to 9999) and nanos 0..{_NANOS}",
            field=field,
            reason="INVALID_TIMESTAMP",
        )
    return stamp.ToDatetime(tzinfo=UTC)


def duration_to_timedelta(duration: duration_pb2.Duration, *, field: str) -> timedelta:
    """The timedelta of a Duration.

    Raises:
        InvalidArgumentError: Outside the range a Duration may hold.
    """
    seconds, nanos = duration.seconds, duration.nanos
    if (
        abs(seconds) > _DURATION_SECONDS
        or abs(nanos) > _NANOS
        or (seconds > 0 > nanos)
        or (seconds < 0 < nanos)
    ):
        raise InvalidArgumentError(
            f"{field} is not a valid duration: seconds must be within "
            f"+-{_DURATION_SECONDS} and nanos within +-{_NANOS}, of the same sign",
            field=field,
            reason="INVALID_DURATION",
        )
    return duration.ToTimedelta()


def policy_to_proto(policy: KeyPolicy) -> keys_pb2.KeyPolicy:
    proto = keys_pb2.KeyPolicy(
        max_lamports_per_transaction=policy.max_lamports_per_transaction,
        allowed_vote_accounts=policy.allowed_vote_accounts,
        allowed_wallets=policy.allowed_wallets,
        allowed_methods=policy.allowed_methods,
        max_priority_fee_lamports=policy.max_priority_fee_lamports,
    )
    if policy.service_fee_bps is not None:
        proto.service_fee_bps = policy.service_fee_bps
    if policy.rate_limit is not None:
        proto.rate_limit.CopyFrom(
            keys_pb2.RateLimit(
                requests_per_minute=policy.rate_limit.requests_per_minute,
                burst=policy.rate_limit.burst,
            )
        )
    return proto


def policy_to_domain(proto: keys_pb2.KeyPolicy) -> KeyPolicy:
    """The domain policy; every invalid field is reported, field paths relative to the
    policy (``policy.<field>``).

    Raises:
        KeyArgumentError: One field is invalid; FieldViolationsError: several are.
    """
    methods = tuple(proto.allowed_methods)
    unknown = [method for method in dict.fromkeys(methods) if method not in STAKING_METHODS]

    def build() -> KeyPolicy:
        rate_limit = None
        if proto.HasField("rate_limit"):
            rate_limit = RateLimit(
                requests_per_minute=proto.rate_limit.requests_per_minute,
                burst=proto.rate_limit.burst,
            )
        return KeyPolicy(
            max_lamports_per_transaction=proto.max_lamports_per_transaction,
            allowed_vote_accounts=tuple(proto.allowed_vote_accounts),
            allowed_wallets=tuple(proto.allowed_wallets),
            service_fee_bps=proto.service_fee_bps if proto.HasField("service_fee_bps") else None,
            rate_limit=rate_limit,
            # Unknown names are reported here, not once more by the model's shape check.
            allowed_methods=() if unknown else methods,
            max_priority_fee_lamports=proto.max_priority_fee_lamports,
        )

    if not unknown:
        return build()
    shown = ", ".join(repr(name[:64]) for name in unknown[:5]) + (
        f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    )
    methods_error = KeyArgumentError(
        f"policy.allowed_methods names what is not a StakingService RPC: {shown} "
        "(e.g. 'BuildStakeTransaction', 'ListStakeAccounts')",
        field="policy.allowed_methods",
        reason="INVALID_KEY_POLICY",
    )
    raise combine_violations([methods_error, *failed_checks(build)]) or methods_error


def selected_policy(proto: keys_pb2.KeyPolicy, fields: Collection[str]) -> keys_pb2.KeyPolicy:
    """`proto` with only the named fields set: a field the update mask does not select is
    neither validated nor applied."""
    chosen = keys_pb2.KeyPolicy()
    chosen.CopyFrom(proto)
    for name in POLICY_FIELDS - set(fields):
        chosen.ClearField(name)  # type: ignore[arg-type]
    return chosen


@contextlib.contextmanager
def fields_within(message_field: str) -> Iterator[None]:
    """Field violations raised inside name ``<message_field>.<path>``: the domain names
    fields relative to the resource, a BadRequest relative to the request (AIP-193)."""
    try:
        yield
    except InvalidArgumentError as exc:
        if not exc.violations:
            raise
        raise _within(exc, f"{message_field}.") from None


def _within(error: InvalidArgumentError, prefix: str) -> InvalidArgumentError:
    violations = [
        FieldViolation(field=prefix + v.field, description=v.description, reason=v.reason)
        for v in error.violations
    ]
    if isinstance(error, FieldViolationsError):
        return FieldViolationsError(violations)
    metadata = {
        key: prefix + value if key == "field" else value for key, value in error.metadata.items()
    }
    return InvalidArgumentError(
        error.message,
        reason=error.reason,
        metadata=metadata,
        hint=error.hint,
        violations=violations,
    )


def caller_policy(policy: KeyPolicy) -> CallerPolicy:
    return CallerPolicy(
        max_lamports_per_transaction=policy.max_lamports_per_transaction,
        allowed_vote_accounts=frozenset(policy.allowed_vote_accounts),
        allowed_wallets=frozenset(policy.allowed_wallets),
        service_fee_bps=policy.service_fee_bps,
        max_priority_fee_lamports=policy.max_priority_fee_lamports,
    )


def state_to_domain(state: keys_pb2.ApiKey.State.ValueType) -> KeyState | None:
    if state == keys_pb2.ApiKey.STATE_UNSPECIFIED:
        return None
    if state not in _STATE_FROM_PROTO:
        raise InvalidArgumentError(f"unknown state {state}", field="state")
    return _STATE_FROM_PROTO[state]


def api_key_to_proto(key: ApiKey) -> keys_pb2.ApiKey:
    return keys_pb2.ApiKey(
        name=key.name,
        key_id=key.key_id,
        display_name=key.display_name,
        scopes=sorted(key.scopes),
        state=_STATE_TO_PROTO[key.state],
        create_time=_timestamp(key.create_time),
        update_time=_timestamp(key.update_time),
        expire_time=_timestamp(key.expire_time),
        rotate_time=_timestamp(key.rotate_time),
        grace_expire_time=_timestamp(key.grace_expire_time),
        revoke_time=_timestamp(key.revoke_time),
        last_used_time=_timestamp(key.last_used_time),
        request_count=key.request_count,
        policy=policy_to_proto(key.policy),
        last_rotate_time=_timestamp(key.last_rotate_time),
    )


def update_paths(request: keys_pb2.UpdateApiKeyRequest) -> tuple[set[str], set[str]]:
    """(top-level fields, policy sub-fields) to update, from the mask or, without
    one, from the populated fields (AIP-134)."""
    paths = list(request.update_mask.paths)
    if len(paths) > MAX_MASK_PATHS or any(len(path) > MAX_MASK_PATH_CHARS for path in paths):
        raise InvalidArgumentError(
            f"update_mask may hold at most {MAX_MASK_PATHS} paths of at most "
            f"{MAX_MASK_PATH_CHARS} characters",
            field="update_mask",
        )
    key = request.api_key
    if not paths:
        paths = [
            name
            for name in UPDATABLE_PATHS
            if (
                key.HasField(name)  # type: ignore[arg-type]
                if name in ("policy", "expire_time")
                else bool(getattr(key, name))
            )
        ]
    top: set[str] = set()
    policy_fields: set[str] = set()
    for path in paths:
        if path == "*":
            top |= UPDATABLE_PATHS
        elif path.startswith("policy."):
            sub = path.removeprefix("policy.")
            if sub not in POLICY_FIELDS:
                raise InvalidArgumentError(f"unknown field path {path!r}", field="update_mask")
            policy_fields.add(sub)
        elif path in UPDATABLE_PATHS:
            top.add(path)
        else:
            raise InvalidArgumentError(
                f"field path {path!r} cannot be updated; allowed: "
                f"{', '.join(sorted(UPDATABLE_PATHS))}, policy.<field>, *",
                field="update_mask",
            )
    if not top and not policy_fields:
        raise InvalidArgumentError("nothing to update", field="update_mask")
    return top, policy_fields
