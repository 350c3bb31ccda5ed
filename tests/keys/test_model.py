"""Pure parts: the token format, the policy's validation, error shapes (no database)."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.errors import ErrorKind, InvalidArgumentError
from service.keys import (
    API_KEY_MALFORMED,
    AuthenticationError,
    KeyArgumentError,
    KeyPolicy,
    RateLimit,
    parse_key_id,
)
from service.keys._tokens import new_key_id, new_secret, parse_token

WALLET = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"
TOKEN_RE = re.compile(r"ask_[0-9a-hjkmnp-tv-z]{16}_[A-Za-z0-9_-]{43}")


def test_a_new_secret_has_the_documented_shape_and_parses_back() -> None:
    key_id = new_key_id(datetime(2030, 1, 1, tzinfo=UTC))
    token, digest = new_secret(key_id)
    assert TOKEN_RE.fullmatch(token)
    encoded = token.split("_", 2)[2]
    assert len(base64.urlsafe_b64decode(encoded + "=")) == 32
    parsed = parse_token(token)
    assert (parsed.key_id, parsed.secret_digest) == (key_id, digest)
    assert digest == hashlib.sha256(encoded.encode()).digest()
    assert parse_key_id(token) == key_id


def test_secrets_containing_underscores_parse() -> None:
    key_id = new_key_id(datetime(2030, 1, 1, tzinfo=UTC))
    for _ in range(200):
        token, digest = new_secret(key_id)
        if "_" in token.split("_", 2)[2]:
            assert parse_token(token).secret_digest == digest
            return
    pytest.fail("no secret with '_' in 200 draws")


def test_key_ids_sort_by_creation_time() -> None:
    earlier = new_key_id(datetime(2030, 1, 1, tzinfo=UTC))
    later = new_key_id(datetime(2030, 1, 1, 0, 0, 0, 1000, tzinfo=UTC))
    assert earlier[:9] < later[:9]


def _valid_token() -> str:
    return new_secret(new_key_id(datetime(2030, 1, 1, tzinfo=UTC)))[0]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: "ask_",
        lambda t: "Bearer " + t,
        lambda t: t + " ",
        lambda t: t + "\n",
        lambda t: t[:-1],
        lambda t: "ASK" + t[3:],
        lambda t: t.replace("ask_", "ask-", 1),
        lambda t: t[:4] + t[4:20].upper() + t[20:],  # key id is lowercase
        lambda t: t[:4] + "i" + t[5:],  # not in the Crockford alphabet
        lambda t: t[:-1] + "=",
        lambda t: t[:-1] + "é",
        lambda t: t[:21] + "+" + t[22:],  # standard, not URL-safe, base64
    ],
)
def test_malformed_tokens_are_refused_as_malformed(mangle: Any) -> None:
    token = _valid_token()
    with pytest.raises(AuthenticationError) as caught:
        parse_token(mangle(token))
    assert caught.value.reason == API_KEY_MALFORMED
    assert caught.value.kind is ErrorKind.UNAUTHENTICATED
    assert token[4:] not in caught.value.message


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none()))
def test_parse_token_raises_nothing_but_malformed(value: object) -> None:
    try:
        parse_token(value)
    except AuthenticationError as exc:
        assert exc.reason == API_KEY_MALFORMED


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_lamports_per_transaction": -1}, "policy.max_lamports_per_transaction"),
        ({"max_lamports_per_transaction": 2**64}, "policy.max_lamports_per_transaction"),
        ({"max_lamports_per_transaction": True}, "policy.max_lamports_per_transaction"),
        ({"allowed_vote_accounts": ("not-base58!",)}, "policy.allowed_vote_accounts[0]"),
        ({"allowed_wallets": WALLET}, "policy.allowed_wallets"),  # a str, not a list
        ({"allowed_wallets": (WALLET, "")}, "policy.allowed_wallets[1]"),
        ({"service_fee_bps": 10_001}, "policy.service_fee_bps"),
        ({"service_fee_bps": -1}, "policy.service_fee_bps"),
        ({"allowed_methods": ("buildStake",)}, "policy.allowed_methods"),
        ({"allowed_methods": ("Build Stake",)}, "policy.allowed_methods"),
    ],
)
def test_invalid_policy_values_name_their_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(Exception) as caught:
        KeyPolicy(**kwargs)
    error = caught.value
    assert getattr(error, "kind", None) is ErrorKind.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == [field]  # type: ignore[attr-defined]


def test_a_policy_names_every_invalid_field_with_its_own_reason() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        KeyPolicy(
            allowed_wallets=("x",),
            allowed_vote_accounts=(WALLET, "y"),
            service_fee_bps=10_001,
            allowed_methods=("buildStake",),
        )
    assert caught.value.reason == "INVALID_FIELDS"
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("policy.allowed_vote_accounts[1]", "INVALID_ADDRESS"),
        ("policy.allowed_wallets[0]", "INVALID_ADDRESS"),
        ("policy.service_fee_bps", "INVALID_KEY_POLICY"),
        ("policy.allowed_methods", "INVALID_KEY_POLICY"),
    ]


def test_invalid_rate_limit_names_its_field() -> None:
    with pytest.raises(KeyArgumentError) as caught:
        RateLimit(requests_per_minute=-1, burst=0)
    assert caught.value.field == "policy.rate_limit.requests_per_minute"


def test_policy_lists_become_deduplicated_tuples() -> None:
    policy = KeyPolicy(
        allowed_wallets=[WALLET, WALLET],  # type: ignore[arg-type]
        allowed_methods=("BuildStakeTransaction",),
        rate_limit=RateLimit(requests_per_minute=60, burst=10),
        service_fee_bps=0,
    )
    assert policy.allowed_wallets == (WALLET,)
    assert KeyPolicy.from_json(policy.to_json()) == policy


def test_every_bad_entry_of_a_policy_list_is_named_by_its_place() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        KeyPolicy(allowed_wallets=("x", WALLET, "y", "x"))
    assert [v.field for v in caught.value.violations] == [
        "policy.allowed_wallets[0]",
        "policy.allowed_wallets[2]",
    ]
