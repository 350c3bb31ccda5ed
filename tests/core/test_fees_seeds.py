"""Fee arithmetic and seed derivation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.pubkey import Pubkey

from service.core import (
    InvalidAmountError,
    InvalidArgumentError,
    InvalidSeedError,
    SeedPurpose,
    SeedTooLongError,
    ServiceFee,
    check_seed,
    network_fee_lamports,
    priority_fee_lamports,
    seed_from_entropy,
    seed_from_request_id,
    service_fee_lamports,
    stake_account_address,
)
from service.core.programs import MAX_COMPUTE_UNIT_LIMIT, STAKE_PROGRAM, U64_MAX
from tests.core.strategies import lamports, pubkeys


@given(amount=lamports, bps=st.integers(0, 10_000))
def test_service_fee_is_floored_and_never_exceeds_the_amount(amount: int, bps: int) -> None:
    fee = service_fee_lamports(amount, bps)
    assert fee * 10_000 <= amount * bps < (fee + 1) * 10_000
    assert 0 <= fee <= amount


def test_service_fee_examples() -> None:
    assert service_fee_lamports(2_000_000_000, 10) == 2_000_000
    assert service_fee_lamports(9_999, 1) == 0
    assert service_fee_lamports(10_000, 1) == 1
    assert service_fee_lamports(U64_MAX, 10_000) == U64_MAX
    with pytest.raises(InvalidArgumentError):
        service_fee_lamports(1, 10_001)
    with pytest.raises(InvalidAmountError):
        service_fee_lamports(-1, 5)


def test_service_fee_policy() -> None:
    assert ServiceFee().on(10**9) == 0
    with pytest.raises(InvalidArgumentError) as info:
        ServiceFee(bps=10)
    assert info.value.field == "fee_recipient"
    assert ServiceFee(bps=10, recipient=Pubkey.new_unique()).on(10**9) == 1_000_000


@given(price=st.integers(0, 10**12), limit=st.integers(0, MAX_COMPUTE_UNIT_LIMIT))
def test_priority_fee_is_the_ceiling(price: int, limit: int) -> None:
    fee = priority_fee_lamports(price, limit)
    assert (fee - 1) * 1_000_000 < price * limit <= fee * 1_000_000 or fee == price * limit == 0


def test_fee_examples() -> None:
    assert priority_fee_lamports(1_000, 200_000) == 200
    assert priority_fee_lamports(12_345, 33_333) == 412  # 411.49... rounds up
    assert priority_fee_lamports(0, 200_000) == 0
    assert network_fee_lamports(1) == 5_000
    assert network_fee_lamports(2, 10_000) == 20_000
    with pytest.raises(InvalidArgumentError):
        network_fee_lamports(0)


# --- seeds ----------------------------------------------------------------------------------


@given(wallet=pubkeys, request_id=st.text(min_size=1, max_size=64))
def test_request_id_seed_is_deterministic_and_valid(wallet: Pubkey, request_id: str) -> None:
    seed = seed_from_request_id(purpose=SeedPurpose.STAKE, wallet=wallet, request_id=request_id)
    assert seed == seed_from_request_id(
        purpose=SeedPurpose.STAKE, wallet=wallet, request_id=request_id
    )
    assert check_seed(seed) == seed
    assert len(seed) == 32 and seed.startswith("stake:")
    assert stake_account_address(base=wallet, seed=seed) == Pubkey.create_with_seed(
        wallet, seed, STAKE_PROGRAM
    )


@given(
    wallet=pubkeys,
    other=pubkeys,
    a=st.text(min_size=1, max_size=60),
    b=st.text(min_size=1, max_size=60),
)
def test_seeds_separate_wallets_keys_and_purposes(
    wallet: Pubkey, other: Pubkey, a: str, b: str
) -> None:
    s = seed_from_request_id(purpose=SeedPurpose.STAKE, wallet=wallet, request_id=a)
    if a != b:
        assert s != seed_from_request_id(purpose=SeedPurpose.STAKE, wallet=wallet, request_id=b)
    if other != wallet:
        assert s != seed_from_request_id(purpose=SeedPurpose.STAKE, wallet=other, request_id=a)
    split = seed_from_request_id(purpose=SeedPurpose.SPLIT, wallet=wallet, request_id=a)
    assert split.startswith("split:") and split[6:] != s[6:]


def test_seeds_never_change() -> None:
    """A request_id's stake account must be the same address in every release (a
    retry after an upgrade must not stake twice): the derivation pinned."""
    wallet = Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")
    pinned = {
        (SeedPurpose.STAKE, "order-42"): "stake:k5il3wtpddfudj3j7kc6fjl4b6",
        (SeedPurpose.SPLIT, "order-42"): "split:6nikgkgowvmpfxqqzdu4fuouyp",
    }
    for (purpose, request_id), seed in pinned.items():
        assert seed_from_request_id(purpose=purpose, wallet=wallet, request_id=request_id) == seed
    entropy = bytes(range(16))
    assert (
        seed_from_entropy(purpose=SeedPurpose.STAKE, wallet=wallet, entropy=entropy)
        == "stake:p5fgxii2stjjpknvcqjnhina2c"
    )


@given(wallet=pubkeys, entropy=st.binary(min_size=16, max_size=64))
def test_entropy_seed(wallet: Pubkey, entropy: bytes) -> None:
    seed = seed_from_entropy(purpose=SeedPurpose.STAKE, wallet=wallet, entropy=entropy)
    assert check_seed(seed) == seed
    assert seed != seed_from_request_id(
        purpose=SeedPurpose.STAKE, wallet=wallet, request_id=entropy.hex()
    )


def test_seed_validation() -> None:
    with pytest.raises(SeedTooLongError) as info:
        check_seed("x" * 33)
    assert info.value.metadata == {"length": "33", "maximum": "32"}
    for bad in ("", "has space", "tab\t", "émoji"):
        with pytest.raises((InvalidSeedError, SeedTooLongError)):
            check_seed(bad)
    with pytest.raises(InvalidArgumentError) as info2:
        seed_from_request_id(purpose=SeedPurpose.STAKE, wallet=Pubkey.default(), request_id="")
    assert info2.value.field == "request_id"
    with pytest.raises(InvalidArgumentError):
        seed_from_request_id(
            purpose=SeedPurpose.STAKE, wallet=Pubkey.default(), request_id="r" * 257
        )
    with pytest.raises(ValueError):
        seed_from_entropy(purpose=SeedPurpose.STAKE, wallet=Pubkey.default(), entropy=b"short")
