"""Stake and nonce account decoding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from service.core import (
    STAKER_OFFSET,
    VOTER_OFFSET,
    WITHDRAWER_OFFSET,
    Authorized,
    Delegation,
    InvalidNonceAccountError,
    InvalidStakeAccountError,
    Lockup,
    Meta,
    StakeAccount,
    StakeStateKind,
    decode_nonce_account,
    decode_stake_account,
    encode_stake_account,
)
from service.core.programs import STAKE_ACCOUNT_SIZE, U64_MAX
from tests.core._chain import create_nonce_account, stored_nonce
from tests.core.strategies import lockups, pubkeys, u64s

metas = st.builds(
    Meta,
    rent_exempt_reserve=u64s,
    authorized=st.builds(Authorized, staker=pubkeys, withdrawer=pubkeys),
    lockup=lockups,
)
delegations = st.builds(
    Delegation,
    voter=pubkeys,
    stake=u64s,
    activation_epoch=u64s,
    deactivation_epoch=u64s,
    reserved=st.binary(min_size=8, max_size=8),
)
stake_accounts = st.one_of(
    st.sampled_from([StakeStateKind.UNINITIALIZED, StakeStateKind.REWARDS_POOL]).map(
        lambda s: StakeAccount(state=s)
    ),
    metas.map(lambda m: StakeAccount(state=StakeStateKind.INITIALIZED, meta=m)),
    st.builds(
        StakeAccount,
        state=st.just(StakeStateKind.STAKE),
        meta=metas,
        delegation=delegations,
        credits_observed=u64s,
        stake_flags=st.integers(0, 255),
    ),
)


@given(account=stake_accounts)
def test_encode_decode_round_trip(account: StakeAccount) -> None:
    data = encode_stake_account(account)
    assert len(data) == STAKE_ACCOUNT_SIZE
    assert decode_stake_account(data) == account


def test_documented_offsets() -> None:
    staker, withdrawer, voter = (Pubkey.new_unique() for _ in range(3))
    account = StakeAccount(
        state=StakeStateKind.STAKE,
        meta=Meta(
            rent_exempt_reserve=2_282_880,
            authorized=Authorized(staker=staker, withdrawer=withdrawer),
            lockup=Lockup(unix_timestamp=11, epoch=12),
        ),
        delegation=Delegation(voter=voter, stake=5, activation_epoch=6, deactivation_epoch=7),
        credits_observed=8,
        stake_flags=1,
    )
    data = encode_stake_account(account)
    assert struct.unpack_from("<I", data, 0)[0] == 2
    assert struct.unpack_from("<Q", data, 4)[0] == 2_282_880
    assert data[STAKER_OFFSET : STAKER_OFFSET + 32] == bytes(staker)
    assert data[WITHDRAWER_OFFSET : WITHDRAWER_OFFSET + 32] == bytes(withdrawer)
    assert struct.unpack_from("<qQ", data, 76) == (11, 12)
    assert data[VOTER_OFFSET : VOTER_OFFSET + 32] == bytes(voter)
    assert struct.unpack_from("<QQQ", data, 156) == (5, 6, 7)
    assert struct.unpack_from("<Q", data, 188)[0] == 8
    assert data[196] == 1


def test_value_invariants() -> None:
    with pytest.raises(ValueError):
        StakeAccount(state=StakeStateKind.STAKE)
    with pytest.raises(ValueError):
        StakeAccount(
            state=StakeStateKind.UNINITIALIZED, delegation=Delegation(stake=1, activation_epoch=0)
        )
    d = Delegation(stake=1, activation_epoch=U64_MAX)
    assert d.is_bootstrap and not d.is_deactivated


def test_lockup_in_force_rules() -> None:
    custodian = Pubkey.new_unique()
    lockup = Lockup(unix_timestamp=100, epoch=5, custodian=custodian)
    assert lockup.in_force(epoch=5, unix_timestamp=99)
    assert lockup.in_force(epoch=4, unix_timestamp=100)
    assert not lockup.in_force(epoch=5, unix_timestamp=100)
    assert not lockup.in_force(epoch=0, unix_timestamp=0, custodian=custodian)
    assert lockup.in_force(epoch=0, unix_timestamp=0, custodian=Pubkey.new_unique())
    assert Lockup().is_none and not Lockup().in_force(epoch=0, unix_timestamp=0)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "truncated"),
        (struct.pack("<I", 9) + bytes(196), "unknown stake state tag 9"),
        (struct.pack("<I", 2) + bytes(100), "truncated"),
    ],
)
def test_malformed_stake_data(data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidStakeAccountError, match=fragment) as info:
        decode_stake_account(data)
    assert info.value.reason == "INVALID_STAKE_ACCOUNT"


def test_nonce_account_as_the_runtime_writes_it(svm: LiteSVM, wallet: Keypair) -> None:
    nonce = create_nonce_account(svm, wallet, wallet.pubkey())
    account = svm.get_account(nonce)
    assert account is not None
    decoded = decode_nonce_account(bytes(account.data))
    assert decoded.authority == wallet.pubkey()
    assert decoded.lamports_per_signature == 5000
    assert decoded.nonce == stored_nonce(svm, nonce)


def test_malformed_nonce_data() -> None:
    with pytest.raises(InvalidNonceAccountError, match="not initialized"):
        decode_nonce_account(bytes(80))
    with pytest.raises(InvalidNonceAccountError, match="truncated"):
        decode_nonce_account(struct.pack("<II", 1, 1) + bytes(10))
    with pytest.raises(InvalidNonceAccountError, match="unknown version"):
        decode_nonce_account(struct.pack("<II", 7, 1) + bytes(72))
