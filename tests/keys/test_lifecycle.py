"""The key lifecycle through KeyManager, on SQLite and PostgreSQL, with a fake clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.errors import DomainError, ErrorKind
from service.keys import (
    API_KEY_EXPIRED,
    API_KEY_MALFORMED,
    API_KEY_REVOKED,
    API_KEY_ROTATED,
    API_KEY_UNKNOWN,
    AuthenticationError,
    KeyArgumentError,
    KeyEvent,
    KeyManager,
    KeyPolicy,
    KeyState,
    KeyStore,
    RateLimit,
    Scope,
)
from tests.conftest import FakeClock

WALLET = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # of key ids
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"  # base64url, in order


async def _refused(manager: KeyManager, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await manager.authenticate(token)
    assert caught.value.kind is ErrorKind.UNAUTHENTICATED
    return caught.value.reason


async def test_lifecycle(manager: KeyManager, clock: FakeClock) -> None:
    policy = KeyPolicy(
        max_lamports_per_transaction=5_000_000_000,
        allowed_wallets=(WALLET,),
        service_fee_bps=0,
        rate_limit=RateLimit(requests_per_minute=60, burst=5),
        allowed_methods=("BuildStakeTransaction",),
    )
    created = clock.now
    key, first = await manager.create(display_name="agent one", scopes=["staking"], policy=policy)
    assert (key.state, key.scopes, key.policy, key.version) == (
        KeyState.ACTIVE,
        frozenset({"staking"}),
        policy,
        1,
    )
    assert key.name == f"apiKeys/{key.key_id}"
    assert first.startswith(f"ask_{key.key_id}_")
    assert (key.create_time, key.rotate_time, key.expire_time) == (
        created,
        created + 30 * DAY,
        None,
    )
    assert await manager.get(key.key_id) == key

    principal = await manager.authenticate(first)
    assert (principal.key_id, principal.policy) == (key.key_id, policy)
    assert principal.has_scope(Scope.STAKING) and not principal.has_scope(Scope.ADMIN)

    # Update: the local cache is invalidated at once (its TTL here is a minute).
    clock.advance(HOUR)
    updated = await manager.update(key.key_id, display_name="agent 1", scopes=["staking", "admin"])
    assert (updated.display_name, updated.version, updated.update_time) == ("agent 1", 2, clock.now)
    assert (await manager.authenticate(first)).has_scope(Scope.ADMIN)
    assert await manager.update(key.key_id) == updated  # nothing to change: no write

    # Rotate with a one-hour grace: both secrets work inside it, the old one not after.
    clock.advance(HOUR)
    rotated, second = await manager.rotate(key.key_id, grace_period=HOUR)
    assert (rotated.last_rotate_time, rotated.grace_expire_time, rotated.rotate_time) == (
        clock.now,
        clock.now + HOUR,
        clock.now + 30 * DAY,
    )
    assert second != first
    clock.advance(59 * timedelta(minutes=1))
    assert (await manager.authenticate(first)).key_id == key.key_id
    assert (await manager.authenticate(second)).key_id == key.key_id
    clock.advance(timedelta(minutes=1))
    assert await _refused(manager, first) == API_KEY_ROTATED
    assert (await manager.authenticate(second)).key_id == key.key_id

    # Rotating again ends the previous secret's grace at once: only one is kept.
    _, third = await manager.rotate(key.key_id)
    _, fourth = await manager.rotate(key.key_id)
    assert await _refused(manager, second) == API_KEY_UNKNOWN
    assert (await manager.authenticate(third)).key_id == key.key_id  # in its 24 h grace
    assert (await manager.authenticate(fourth)).key_id == key.key_id

    # Revoke: every secret stops, including the one in its grace period; idempotent.
    revoked = await manager.revoke(key.key_id)
    assert (revoked.state, revoked.revoke_time) == (KeyState.REVOKED, clock.now)
    assert await _refused(manager, third) == API_KEY_REVOKED
    assert await _refused(manager, fourth) == API_KEY_REVOKED
    clock.advance(HOUR)
    assert await manager.revoke(key.key_id) == revoked
    for action in (
        lambda: manager.rotate(key.key_id),
        lambda: manager.update(key.key_id, display_name="again"),
    ):
        with pytest.raises(DomainError) as caught:
            await action()
        assert (caught.value.kind, caught.value.reason) == (
            ErrorKind.FAILED_PRECONDITION,
            "KEY_REVOKED",
        )

    events = [e.event for e in await manager.audit_events(key.key_id)]
    assert events == [
        KeyEvent.CREATED,
        KeyEvent.UPDATED,
        KeyEvent.ROTATED,
        KeyEvent.ROTATED,
        KeyEvent.ROTATED,
        KeyEvent.REVOKED,
    ]


async def test_expiry_and_reactivation(manager: KeyManager, clock: FakeClock) -> None:
    key, token = await manager.create(
        display_name="short-lived", scopes=["staking"], expire_time=clock.now + HOUR
    )
    assert (await manager.authenticate(token)).key_id == key.key_id  # now cached
    clock.advance(HOUR)
    # The cached entry is re-checked against the clock.
    assert await _refused(manager, token) == API_KEY_EXPIRED
    assert (await manager.get(key.key_id)).state is KeyState.EXPIRED
    with pytest.raises(DomainError) as caught:
        await manager.rotate(key.key_id)
    assert (caught.value.kind, caught.value.reason) == (
        ErrorKind.FAILED_PRECONDITION,
        "KEY_EXPIRED",
    )

    extended = await manager.update(key.key_id, expire_time=clock.now + DAY)
    assert extended.state is KeyState.ACTIVE
    assert (await manager.authenticate(token)).key_id == key.key_id
    never = await manager.update(key.key_id, expire_time=None)
    assert (never.expire_time, never.state) == (None, KeyState.ACTIVE)


async def test_rotation_without_grace_stops_the_old_secret_now(
    manager: KeyManager, clock: FakeClock
) -> None:
    key, old = await manager.create(display_name="k", scopes=["staking"])
    await manager.authenticate(old)
    _, new = await manager.rotate(key.key_id, grace_period=timedelta(0))
    assert await _refused(manager, old) == API_KEY_ROTATED
    assert (await manager.authenticate(new)).key_id == key.key_id


async def test_list_pages_in_key_id_order_with_state_filter(
    manager: KeyManager, clock: FakeClock
) -> None:
    created = [
        (await manager.create(display_name=f"key {i}", scopes=["staking"]))[0] for i in range(7)
    ]
    for key in created[:2]:
        await manager.revoke(key.key_id)
    await manager.update(created[2].key_id, expire_time=clock.now + HOUR)
    clock.advance(HOUR)

    async def every_page(size: int, state: KeyState | None) -> tuple[list[str], int, int]:
        ids: list[str] = []
        token, pages = "", 0
        while True:
            page, token, total = await manager.list(page_size=size, page_token=token, state=state)
            assert len(page) <= size
            ids += [key.key_id for key in page]
            pages += 1
            if not token:
                return ids, total, pages

    ids, total, pages = await every_page(3, None)
    assert (ids, total, pages) == (sorted(k.key_id for k in created), 7, 3)
    expected = {
        KeyState.REVOKED: sorted(k.key_id for k in created[:2]),
        KeyState.EXPIRED: [created[2].key_id],
        KeyState.ACTIVE: sorted(k.key_id for k in created[3:]),
    }
    for state, want in expected.items():
        ids, total, _ = await every_page(2, state)
        assert (ids, total) == (want, len(want))
        page, _, _ = await manager.list(state=state)
        assert {key.state for key in page} == {state}

    assert len((await manager.list(page_size=0))[0]) == 7  # 0: the default size

    _, active_token, _ = await manager.list(page_size=1, state=KeyState.ACTIVE)
    bad: list[dict[str, Any]] = [
        {"page_size": -1},
        {"page_token": "not a token"},
        {"page_token": "eyJhZnRlciI6IDF9"},  # base64 of a JSON object without our fields
        {"page_token": active_token, "state": KeyState.REVOKED},  # another filter
        {"page_token": active_token},
    ]
    for kwargs in bad:
        with pytest.raises(DomainError) as caught:
            await manager.list(**kwargs)
        assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
        field = "page_size" if "page_size" in kwargs else "page_token"
        assert [v.field for v in caught.value.violations] == [field]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"display_name": ""}, "display_name"),
        ({"display_name": "   "}, "display_name"),
        ({"display_name": "x" * 101}, "display_name"),
        ({"display_name": "two\nlines"}, "display_name"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["staking", "root"]}, "scopes"),
        ({"scopes": "staking"}, "scopes"),
        ({"expire_time": "past"}, "expire_time"),
    ],
)
async def test_create_rejects_invalid_arguments(
    manager: KeyManager, clock: FakeClock, kwargs: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"display_name": "ok", "scopes": ["staking"], **kwargs}
    if arguments.get("expire_time") == "past":
        arguments["expire_time"] = clock.now
    with pytest.raises(DomainError) as caught:
        await manager.create(**arguments)
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == [field]
    assert (await manager.list())[2] == 0


async def test_every_invalid_argument_is_named_before_the_key_is_read(
    manager: KeyManager, clock: FakeClock
) -> None:
    with pytest.raises(DomainError) as caught:
        await manager.create(display_name="", scopes=["root"], expire_time=clock.now)
    assert caught.value.reason == "INVALID_FIELDS"
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("display_name", "INVALID_DISPLAY_NAME"),
        ("scopes", "INVALID_SCOPE"),
        ("expire_time", "INVALID_EXPIRE_TIME"),
    ]
    # A caller's own conversion failures are reported with the manager's checks.
    found = KeyArgumentError("bad", field="policy.allowed_methods", reason="INVALID_KEY_POLICY")
    with pytest.raises(DomainError) as caught:
        await manager.update(
            "0000000000000000", display_name=" ", expire_time=clock.now, invalid=[found]
        )
    assert [v.field for v in caught.value.violations] == [
        "policy.allowed_methods",
        "display_name",
        "expire_time",
    ]
    assert (await manager.list())[2] == 0


async def test_an_update_of_policy_fields_keeps_the_others(manager: KeyManager) -> None:
    key, _ = await manager.create(
        display_name="k",
        scopes=["staking"],
        policy=KeyPolicy(allowed_wallets=(WALLET,), service_fee_bps=3),
    )
    updated = await manager.update(
        key.key_id,
        policy=KeyPolicy(allowed_methods=("GetNetworkInfo",), allowed_wallets=()),
        policy_fields={"allowed_methods"},
    )
    assert updated.policy == KeyPolicy(
        allowed_wallets=(WALLET,), service_fee_bps=3, allowed_methods=("GetNetworkInfo",)
    )


async def test_other_argument_and_lookup_errors(manager: KeyManager, clock: FakeClock) -> None:
    key, _ = await manager.create(display_name="k", scopes=["admin"])
    cases: list[tuple[Any, ErrorKind, str, str | None]] = [
        (
            lambda: manager.rotate(key.key_id, grace_period=-timedelta(seconds=1)),
            ErrorKind.INVALID_ARGUMENT,
            "INVALID_GRACE_PERIOD",
            "grace_period",
        ),
        (
            lambda: manager.rotate(key.key_id, grace_period=timedelta(days=31)),
            ErrorKind.INVALID_ARGUMENT,
            "INVALID_GRACE_PERIOD",
            "grace_period",
        ),
        (
            lambda: manager.update(key.key_id, expire_time=clock.now - HOUR),
            ErrorKind.INVALID_ARGUMENT,
            "INVALID_EXPIRE_TIME",
            "expire_time",
        ),
        (
            lambda: manager.update(key.key_id, scopes=["nope"]),
            ErrorKind.INVALID_ARGUMENT,
            "INVALID_SCOPE",
            "scopes",
        ),
        (lambda: manager.get("0000000000000000"), ErrorKind.NOT_FOUND, "KEY_NOT_FOUND", None),
        (lambda: manager.get("apiKeys/../x"), ErrorKind.NOT_FOUND, "KEY_NOT_FOUND", None),
        (lambda: manager.revoke("0000000000000000"), ErrorKind.NOT_FOUND, "KEY_NOT_FOUND", None),
        (lambda: manager.rotate("0000000000000000"), ErrorKind.NOT_FOUND, "KEY_NOT_FOUND", None),
        (
            lambda: manager.update("0000000000000000", display_name="x"),
            ErrorKind.NOT_FOUND,
            "KEY_NOT_FOUND",
            None,
        ),
    ]
    for call, kind, reason, field in cases:
        with pytest.raises(DomainError) as caught:
            await call()
        assert (caught.value.kind, caught.value.reason) == (kind, reason)
        assert [v.field for v in caught.value.violations] == ([field] if field else [])
    assert (await manager.get(key.key_id)).version == 1  # nothing was written


async def test_unknown_key_and_wrong_secret_share_one_reason(manager: KeyManager) -> None:
    _, token = await manager.create(display_name="k", scopes=["staking"])
    other, _ = await manager.create(display_name="other", scopes=["staking"])
    secret = token.split("_", 2)[2]
    assert await _refused(manager, f"ask_0000000000000000_{secret}") == API_KEY_UNKNOWN
    assert await _refused(manager, f"ask_{other.key_id}_{secret}") == API_KEY_UNKNOWN
    # Another spelling of the same 32 bytes (base64's spare low bits) is not the secret.
    respelled = secret[:-1] + _B64[_B64.index(secret[-1]) ^ 1]
    assert await _refused(manager, token[: -len(secret)] + respelled) == API_KEY_UNKNOWN
    assert await _refused(manager, token[:-1]) == API_KEY_MALFORMED


async def test_bootstrap_only_on_an_empty_store(manager: KeyManager) -> None:
    created = await manager.bootstrap_if_empty()
    assert sorted((key.display_name, sorted(key.scopes)) for key, _ in created) == [
        ("admin", ["admin", "staking"]),
        ("staking", ["staking"]),
    ]
    for key, token in created:
        assert (await manager.authenticate(token)).scopes == key.scopes
    assert await manager.bootstrap_if_empty() == []
    assert (await manager.list())[2] == 2


_near_tokens = st.builds(
    lambda prefix, key_id, secret: f"{prefix}_{key_id}_{secret}",
    st.sampled_from(["ask", "ask", "ASK", "sk"]),
    st.text(_ALPHABET, min_size=15, max_size=17),
    st.text(_B64, min_size=42, max_size=44),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(token=st.one_of(st.text(), _near_tokens))
async def test_authenticate_never_raises_anything_else(manager: KeyManager, token: str) -> None:
    try:
        await manager.authenticate(token)
    except AuthenticationError as exc:
        assert exc.reason in (API_KEY_MALFORMED, API_KEY_UNKNOWN)
    else:
        pytest.fail("an arbitrary token was accepted")


async def test_a_secret_passed_as_key_id_is_not_echoed(manager: KeyManager) -> None:
    _, token = await manager.create(display_name="k", scopes=["staking"])
    with pytest.raises(DomainError) as caught:
        await manager.rotate(token)
    assert caught.value.reason == "KEY_NOT_FOUND"
    secret = token.split("_", 2)[2]
    assert secret[:8] not in caught.value.message + str(caught.value.metadata)


class _CountedStore:
    """The real store, with its reads of single keys counted."""

    def __init__(self, inner: KeyStore) -> None:
        self.inner = inner
        self.gets = 0

    async def get(self, key_id: str) -> Any:
        self.gets += 1
        return await self.inner.get(key_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_guessed_key_ids_cost_one_read_each_per_cache_ttl(
    store: KeyStore, clock: FakeClock
) -> None:
    counted = _CountedStore(store)
    keys = KeyManager(cast(KeyStore, counted), clock=clock, cache_ttl=60.0)
    try:
        guess = f"ask_{'a' * 16}_{'b' * 43}"
        for _ in range(20):
            with pytest.raises(AuthenticationError):
                await keys.authenticate(guess)
        assert counted.gets == 1
        # A known key id is what a blocked peer must present; a guessed one is not.
        assert not keys.may_be_valid(guess)
        key, secret = await keys.create(display_name="real", scopes=["staking"])
        assert keys.may_be_valid(secret)
        assert keys.may_be_valid(f"ask_{key.key_id}_{'c' * 43}")  # the id, not the secret
        assert not keys.may_be_valid("not a token")
    finally:
        await keys.stop()


async def test_every_active_key_id_is_known_after_a_scan(store: KeyStore, clock: FakeClock) -> None:
    """Keys created elsewhere (another replica) are learnt by the periodic scan."""
    elsewhere = KeyManager(store, clock=clock)
    created = [await elsewhere.create(display_name=f"k{i}", scopes=["staking"]) for i in range(3)]
    revoked, revoked_secret = await elsewhere.create(display_name="gone", scopes=["staking"])
    await elsewhere.revoke(revoked.key_id)
    here = KeyManager(store, clock=clock)
    try:
        assert not any(here.may_be_valid(secret) for _, secret in created)
        await here.scan_overdue()
        assert all(here.may_be_valid(secret) for _, secret in created)
        assert not here.may_be_valid(revoked_secret)
    finally:
        await here.stop()
