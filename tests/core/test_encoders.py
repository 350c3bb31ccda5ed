"""Encoders: exact byte layouts, and encoder -> decoder round trips (hypothesis)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders import compute_budget as cb
from solders import system_program as sp
from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey

from service.core import (
    InvalidAmountError,
    InvalidArgumentError,
    Lockup,
    SeedTooLongError,
    StakeAuthorize,
    compute_unit_limit,
    compute_unit_price,
    memo,
    stake_authorize,
    stake_deactivate,
    stake_delegate,
    stake_get_minimum_delegation,
    stake_initialize,
    stake_merge,
    stake_split,
    stake_withdraw,
    summarize_instruction,
    summarize_message,
    system_advance_nonce,
    system_allocate_with_seed,
    system_assign_with_seed,
    system_create_account_with_seed,
    system_transfer,
)
from service.core.programs import (
    COMPUTE_BUDGET_PROGRAM,
    MAX_COMPUTE_UNIT_LIMIT,
    MEMO_PROGRAM,
    STAKE_CONFIG,
    STAKE_PROGRAM,
    SYSTEM_PROGRAM,
    SYSVAR_CLOCK,
    SYSVAR_RECENT_BLOCKHASHES,
    SYSVAR_RENT,
    SYSVAR_STAKE_HISTORY,
)
from tests.core.strategies import (
    hashes,
    i64s,
    lamports,
    lockups,
    positive_lamports,
    pubkeys,
    seeds,
    u64s,
)


def _metas(ix: Instruction) -> list[tuple[Pubkey, bool, bool]]:
    return [(m.pubkey, m.is_signer, m.is_writable) for m in ix.accounts]


# --- exact layouts -----------------------------------------------------------------------


def test_initialize_layout_matches_the_stake_program() -> None:
    stake, staker, withdrawer, custodian = (Pubkey.new_unique() for _ in range(4))
    lockup = Lockup(unix_timestamp=-5, epoch=7, custodian=custodian)
    ix = stake_initialize(stake_account=stake, staker=staker, withdrawer=withdrawer, lockup=lockup)
    assert ix.program_id == STAKE_PROGRAM
    assert bytes(ix.data) == (
        struct.pack("<I", 0)
        + bytes(staker)
        + bytes(withdrawer)
        + struct.pack("<qQ", -5, 7)
        + bytes(custodian)
    )
    assert len(ix.data) == 116
    assert _metas(ix) == [(stake, False, True), (SYSVAR_RENT, False, False)]


def test_delegate_accounts_in_program_order() -> None:
    stake, vote, staker = (Pubkey.new_unique() for _ in range(3))
    ix = stake_delegate(stake_account=stake, vote_account=vote, staker=staker)
    assert bytes(ix.data) == struct.pack("<I", 2)
    assert _metas(ix) == [
        (stake, False, True),
        (vote, False, False),
        (SYSVAR_CLOCK, False, False),
        (SYSVAR_STAKE_HISTORY, False, False),
        (STAKE_CONFIG, False, False),
        (staker, True, False),
    ]


def test_authorize_split_withdraw_deactivate_merge_layouts() -> None:
    a, b, c, d = (Pubkey.new_unique() for _ in range(4))
    auth = stake_authorize(
        stake_account=a, authority=b, new_authority=c, role=StakeAuthorize.WITHDRAWER, custodian=d
    )
    assert bytes(auth.data) == struct.pack("<I", 1) + bytes(c) + struct.pack("<I", 1)
    assert _metas(auth) == [
        (a, False, True),
        (SYSVAR_CLOCK, False, False),
        (b, True, False),
        (d, True, False),
    ]

    split = stake_split(stake_account=a, destination=b, staker=c, lamports=42)
    assert bytes(split.data) == struct.pack("<IQ", 3, 42)
    assert _metas(split) == [(a, False, True), (b, False, True), (c, True, False)]

    withdraw = stake_withdraw(stake_account=a, destination=b, withdrawer=c, lamports=9)
    assert bytes(withdraw.data) == struct.pack("<IQ", 4, 9)
    assert _metas(withdraw) == [
        (a, False, True),
        (b, False, True),
        (SYSVAR_CLOCK, False, False),
        (SYSVAR_STAKE_HISTORY, False, False),
        (c, True, False),
    ]

    deactivate = stake_deactivate(stake_account=a, staker=b)
    assert bytes(deactivate.data) == struct.pack("<I", 5)
    assert _metas(deactivate) == [(a, False, True), (SYSVAR_CLOCK, False, False), (b, True, False)]

    merge = stake_merge(destination=a, source=b, staker=c)
    assert bytes(merge.data) == struct.pack("<I", 7)
    assert _metas(merge) == [
        (a, False, True),
        (b, False, True),
        (SYSVAR_CLOCK, False, False),
        (SYSVAR_STAKE_HISTORY, False, False),
        (c, True, False),
    ]

    minimum = stake_get_minimum_delegation()
    assert bytes(minimum.data) == struct.pack("<I", 13)
    assert minimum.accounts == []


@given(units=st.integers(min_value=0, max_value=MAX_COMPUTE_UNIT_LIMIT), price=u64s)
def test_compute_budget_matches_solders(units: int, price: int) -> None:
    assert compute_unit_limit(units) == cb.set_compute_unit_limit(units)
    assert compute_unit_price(price) == cb.set_compute_unit_price(price)
    assert bytes(compute_unit_limit(units).data)[0] == 2
    assert bytes(compute_unit_price(price).data)[0] == 3


def test_memo_is_utf8_with_optional_signers() -> None:
    signer = Pubkey.new_unique()
    ix = memo("héllo", signers=[signer])
    assert ix.program_id == MEMO_PROGRAM
    assert bytes(ix.data) == "héllo".encode()
    assert _metas(ix) == [(signer, True, False)]
    assert memo("x").accounts == []


def test_range_checks_raise_domain_errors() -> None:
    a, b, c = (Pubkey.new_unique() for _ in range(3))
    with pytest.raises(InvalidAmountError):
        stake_split(stake_account=a, destination=b, staker=c, lamports=0)
    with pytest.raises(InvalidAmountError):
        stake_withdraw(stake_account=a, destination=b, withdrawer=c, lamports=2**64)
    with pytest.raises(InvalidArgumentError):
        compute_unit_limit(MAX_COMPUTE_UNIT_LIMIT + 1)
    with pytest.raises(InvalidArgumentError):
        compute_unit_price(-1)
    with pytest.raises(SeedTooLongError):
        system_create_account_with_seed(
            payer=a, new_account=b, base=a, seed="s" * 33, lamports=1, space=200, owner=c
        )
    with pytest.raises(InvalidArgumentError):
        Lockup(unix_timestamp=2**63)


# --- round trips through the decoder -----------------------------------------------------


@given(stake=pubkeys, staker=pubkeys, withdrawer=pubkeys, lockup=lockups)
def test_initialize_round_trip(
    stake: Pubkey, staker: Pubkey, withdrawer: Pubkey, lockup: Lockup
) -> None:
    s = summarize_instruction(
        stake_initialize(stake_account=stake, staker=staker, withdrawer=withdrawer, lockup=lockup)
    )
    assert (s.program, s.type) == ("Stake", "Initialize")
    assert s.param("staker") == str(staker)
    assert s.param("withdrawer") == str(withdrawer)
    assert s.param("lockup_unix_timestamp") == lockup.unix_timestamp
    assert s.param("lockup_epoch") == lockup.epoch
    assert s.param("lockup_custodian") == str(lockup.custodian)
    assert [a.address for a in s.accounts] == [stake, SYSVAR_RENT]
    assert s.accounts[0].role == "stake account"


@given(
    a=pubkeys,
    b=pubkeys,
    c=pubkeys,
    role=st.sampled_from(StakeAuthorize),
    custodian=st.none() | pubkeys,
)
def test_authorize_round_trip(
    a: Pubkey, b: Pubkey, c: Pubkey, role: StakeAuthorize, custodian: Pubkey | None
) -> None:
    s = summarize_instruction(
        stake_authorize(
            stake_account=a, authority=b, new_authority=c, role=role, custodian=custodian
        )
    )
    assert s.type == "Authorize"
    assert s.param("new_authority") == str(c)
    assert s.param("role") == role.name.lower()
    assert len(s.accounts) == (4 if custodian else 3)


@given(a=pubkeys, b=pubkeys, c=pubkeys, amount=positive_lamports)
def test_split_withdraw_round_trip(a: Pubkey, b: Pubkey, c: Pubkey, amount: int) -> None:
    split = summarize_instruction(
        stake_split(stake_account=a, destination=b, staker=c, lamports=amount)
    )
    assert (split.type, split.param("lamports")) == ("Split", amount)
    withdraw = summarize_instruction(
        stake_withdraw(stake_account=a, destination=b, withdrawer=c, lamports=amount)
    )
    assert (withdraw.type, withdraw.param("lamports")) == ("Withdraw", amount)
    assert f"{amount:,} lamports" in withdraw.description
    assert [x.role for x in withdraw.accounts][-1] == "withdraw authority"


@given(a=pubkeys, b=pubkeys, c=pubkeys)
def test_delegate_deactivate_merge_round_trip(a: Pubkey, b: Pubkey, c: Pubkey) -> None:
    delegate = summarize_instruction(stake_delegate(stake_account=a, vote_account=b, staker=c))
    assert delegate.type == "DelegateStake"
    assert delegate.accounts[1].address == b
    assert delegate.accounts[1].role == "vote account"
    assert summarize_instruction(stake_deactivate(stake_account=a, staker=b)).type == "Deactivate"
    merge = summarize_instruction(stake_merge(destination=a, source=b, staker=c))
    assert merge.type == "Merge"
    assert [x.address for x in merge.accounts][:2] == [a, b]


@given(
    payer=pubkeys,
    base=pubkeys,
    owner=pubkeys,
    seed=seeds,
    amount=lamports,
    space=st.integers(0, 10_240),
)
def test_create_account_with_seed_round_trip(
    payer: Pubkey, base: Pubkey, owner: Pubkey, seed: str, amount: int, space: int
) -> None:
    new = Pubkey.create_with_seed(base, seed, owner)
    ix = system_create_account_with_seed(
        payer=payer,
        new_account=new,
        base=base,
        seed=seed,
        lamports=amount,
        space=space,
        owner=owner,
    )
    s = summarize_instruction(ix)
    assert (s.program, s.type) == ("System", "CreateAccountWithSeed")
    assert (
        s.param("base"),
        s.param("seed"),
        s.param("lamports"),
        s.param("space"),
        s.param("owner"),
    ) == (str(base), seed, amount, space, str(owner))
    # And solders' own decoder agrees with what we encoded.
    decoded = sp.decode_create_account_with_seed(ix)
    assert (decoded["seed"], decoded["lamports"], decoded["space"]) == (seed, amount, space)


@given(source=pubkeys, destination=pubkeys, amount=lamports)
def test_transfer_round_trip(source: Pubkey, destination: Pubkey, amount: int) -> None:
    s = summarize_instruction(
        system_transfer(source=source, destination=destination, lamports=amount)
    )
    assert (s.type, s.param("lamports")) == ("Transfer", amount)
    assert [(a.address, a.role) for a in s.accounts] == [
        (source, "source"),
        (destination, "destination"),
    ]


@given(nonce=pubkeys, authority=pubkeys, base=pubkeys, owner=pubkeys, seed=seeds, space=u64s)
def test_nonce_and_allocate_assign_round_trip(
    nonce: Pubkey, authority: Pubkey, base: Pubkey, owner: Pubkey, seed: str, space: int
) -> None:
    advance = summarize_instruction(
        system_advance_nonce(nonce_account=nonce, nonce_authority=authority)
    )
    assert advance.type == "AdvanceNonceAccount"
    assert [a.address for a in advance.accounts] == [nonce, SYSVAR_RECENT_BLOCKHASHES, authority]
    address = Pubkey.create_with_seed(base, seed, owner)
    allocate = summarize_instruction(
        system_allocate_with_seed(address=address, base=base, seed=seed, space=space, owner=owner)
    )
    assert (allocate.type, allocate.param("seed"), allocate.param("space")) == (
        "AllocateWithSeed",
        seed,
        space,
    )
    assign = summarize_instruction(
        system_assign_with_seed(address=address, base=base, seed=seed, owner=owner)
    )
    assert (assign.type, assign.param("owner")) == ("AssignWithSeed", str(owner))


@given(units=st.integers(0, MAX_COMPUTE_UNIT_LIMIT), price=u64s, text=st.text(max_size=300))
def test_compute_budget_and_memo_round_trip(units: int, price: int, text: str) -> None:
    assert summarize_instruction(compute_unit_limit(units)).param("units") == units
    assert summarize_instruction(compute_unit_price(price)).param("micro_lamports") == price
    s = summarize_instruction(memo(text))
    assert (s.program, s.type, s.param("memo")) == ("Memo", "Memo", text)


@given(
    payer=pubkeys,
    stake=pubkeys,
    vote=pubkeys,
    amount=lamports,
    ts=i64s,
    blockhash=hashes,
)
def test_message_summaries_equal_instruction_summaries(
    payer: Pubkey, stake: Pubkey, vote: Pubkey, amount: int, ts: int, blockhash: Hash
) -> None:
    ixs = [
        compute_unit_limit(1000),
        system_transfer(source=payer, destination=stake, lamports=amount),
        stake_initialize(
            stake_account=stake, staker=payer, withdrawer=payer, lockup=Lockup(unix_timestamp=ts)
        ),
        stake_delegate(stake_account=stake, vote_account=vote, staker=payer),
        memo("hi", signers=[payer]),
    ]
    direct = [summarize_instruction(ix) for ix in ixs]
    for msg in (
        Message.new_with_blockhash(ixs, payer, blockhash),
        MessageV0.try_compile(payer, ixs, [], blockhash),
    ):
        compiled = summarize_message(msg)
        assert [(s.program, s.type, s.params, s.description) for s in compiled] == [
            (s.program, s.type, s.params, s.description) for s in direct
        ]
        assert [[a.address for a in s.accounts] for s in compiled] == [
            [a.address for a in s.accounts] for s in direct
        ]


def test_program_ids() -> None:
    a = Pubkey.new_unique()
    assert system_transfer(source=a, destination=a, lamports=1).program_id == SYSTEM_PROGRAM
    assert compute_unit_limit(1).program_id == COMPUTE_BUDGET_PROGRAM
