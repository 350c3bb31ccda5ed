from __future__ import annotations

import re

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.core import (
    ERROR_DOMAIN,
    BelowMinimumDelegationError,
    DomainError,
    ErrorKind,
    FieldViolation,
    FieldViolationsError,
    InsufficientFundsError,
    InvalidAddressError,
    InvalidArgumentError,
    MemoTooLongError,
    SeedTooLongError,
    StakeAccountExistsError,
    TransactionTooLargeError,
    VoteAccountNotFoundError,
    combine_violations,
    parse_address,
    parse_blockhash,
)


def _all_error_classes() -> list[type[DomainError]]:
    # Only the core's own: which other modules are imported depends on test order,
    # and collection must be the same in every worker.
    found: list[type[DomainError]] = []
    pending: list[type[DomainError]] = [DomainError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("service.core."):
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__qualname__)


def test_domain_is_the_api_package() -> None:
    assert ERROR_DOMAIN == "agentstaking.v1"


@pytest.mark.parametrize("cls", _all_error_classes(), ids=lambda c: c.__name__)
def test_every_reason_is_upper_snake_and_kind_is_a_grpc_status_name(
    cls: type[DomainError],
) -> None:
    assert re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", cls.default_reason)
    assert cls.kind.value == cls.kind.name


@pytest.mark.parametrize(
    ("error", "reason", "kind"),
    [
        (InvalidAddressError(field="wallet", value="x"), "INVALID_ADDRESS", "INVALID_ARGUMENT"),
        (
            BelowMinimumDelegationError(requested_lamports=5, minimum_lamports=10),
            "BELOW_MINIMUM_DELEGATION",
            "INVALID_ARGUMENT",
        ),
        (
            InsufficientFundsError(required_lamports=10, available_lamports=3, address="w"),
            "INSUFFICIENT_FUNDS",
            "FAILED_PRECONDITION",
        ),
        (VoteAccountNotFoundError(vote_account="v"), "VOTE_ACCOUNT_NOT_FOUND", "NOT_FOUND"),
        (
            SeedTooLongError(field="seed", length=33, maximum=32),
            "SEED_TOO_LONG",
            "INVALID_ARGUMENT",
        ),
        (MemoTooLongError(length=300, maximum=200), "MEMO_TOO_LONG", "INVALID_ARGUMENT"),
        (
            TransactionTooLargeError(size=1300, maximum=1232),
            "TRANSACTION_TOO_LARGE",
            "INVALID_ARGUMENT",
        ),
        (
            StakeAccountExistsError(stake_account="s", seed="x"),
            "STAKE_ACCOUNT_EXISTS",
            "ALREADY_EXISTS",
        ),
    ],
)
def test_reason_and_kind(error: DomainError, reason: str, kind: str) -> None:
    assert error.reason == reason
    assert error.kind is ErrorKind[kind]
    assert error.hint
    assert all(isinstance(v, str) for v in error.metadata.values())


def test_below_minimum_carries_the_minimum_and_the_field() -> None:
    err = BelowMinimumDelegationError(requested_lamports=5, minimum_lamports=1_000_000_000)
    assert err.metadata == {"requested_lamports": "5", "minimum_lamports": "1000000000"}
    assert err.field == "amount_lamports"
    assert err.violations == (
        FieldViolation(
            field="amount_lamports", description=err.message, reason="BELOW_MINIMUM_DELEGATION"
        ),
    )


def test_insufficient_funds_reports_the_shortfall() -> None:
    err = InsufficientFundsError(required_lamports=10, available_lamports=3, address="w")
    assert err.metadata["shortfall_lamports"] == "7"
    assert err.violations == ()


def test_invalid_address_caps_the_echoed_value() -> None:
    err = InvalidAddressError(field="wallet", value="z" * 500)
    assert len(err.metadata["value"]) == 64
    assert len(err.message) < 200


def test_reason_override_must_be_upper_snake() -> None:
    assert InvalidArgumentError("x", reason="LOCKUP_IN_FORCE").reason == "LOCKUP_IN_FORCE"
    with pytest.raises(ValueError):
        InvalidArgumentError("x", reason="lower-case")


def test_combine_keeps_a_single_error_and_merges_several() -> None:
    assert combine_violations([]) is None
    one = InvalidAddressError(field="wallet", value="x")
    assert combine_violations([one]) is one
    two = SeedTooLongError(field="seed", length=40, maximum=32)
    merged = combine_violations([one, two])
    assert isinstance(merged, FieldViolationsError)
    assert merged.kind is ErrorKind.INVALID_ARGUMENT
    assert [v.field for v in merged.violations] == ["wallet", "seed"]
    assert [v.reason for v in merged.violations] == ["INVALID_ADDRESS", "SEED_TOO_LONG"]
    assert merged.metadata == {"fields": "wallet,seed"}


def test_field_violations_error_needs_violations() -> None:
    with pytest.raises(ValueError):
        FieldViolationsError([])


def test_parse_address() -> None:
    key = Keypair().pubkey()
    assert parse_address(str(key), field="wallet", require_on_curve=True) == key
    for bad in ("", "0OIl", "x" * 45, "abc"):
        with pytest.raises(InvalidAddressError) as info:
            parse_address(bad, field="vote_account")
        assert info.value.field == "vote_account"
        assert info.value.violations[0].reason == "INVALID_ADDRESS"
    pda = Pubkey.find_program_address([b"seed"], Pubkey.default())[0]
    assert parse_address(str(pda), field="stake_authority") == pda
    with pytest.raises(InvalidAddressError, match="signing key"):
        parse_address(str(pda), field="wallet", require_on_curve=True)


def test_parse_blockhash() -> None:
    h = Hash.new_unique()
    assert parse_blockhash(str(h), field="recent_blockhash") == h
    with pytest.raises(InvalidArgumentError):
        parse_blockhash("not-a-hash", field="recent_blockhash")
