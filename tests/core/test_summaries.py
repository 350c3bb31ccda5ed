"""Instruction summaries: wording, roles, unknown and malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from solders.hash import Hash
from solders.instruction import AccountMeta, CompiledInstruction, Instruction
from solders.message import MessageAddressTableLookup, MessageHeader, MessageV0
from solders.pubkey import Pubkey

from service.core import (
    MalformedInstructionError,
    format_amount,
    format_sol,
    stake_delegate,
    summarize_instruction,
    summarize_message,
    system_transfer,
)
from service.core.programs import MEMO_PROGRAM, STAKE_PROGRAM, SYSTEM_PROGRAM, VOTE_PROGRAM
from tests.core.strategies import lamports


@given(amount=lamports)
def test_format_sol_is_exact(amount: int) -> None:
    text = format_sol(amount)
    whole, _, frac = text.removesuffix(" SOL").partition(".")
    assert int(whole) * 10**9 + int((frac or "0").ljust(9, "0")) == amount


def test_format_examples() -> None:
    assert format_sol(0) == "0 SOL"
    assert format_sol(1) == "0.000000001 SOL"
    assert format_sol(2_002_282_880) == "2.00228288 SOL"
    assert format_sol(5 * 10**9) == "5 SOL"
    assert format_amount(1_500_000_000) == "1.5 SOL (1,500,000,000 lamports)"


def test_transfer_description() -> None:
    a, b = Pubkey.new_unique(), Pubkey.new_unique()
    s = summarize_instruction(system_transfer(source=a, destination=b, lamports=2_000_000))
    assert s.description == f"Transfer 0.002 SOL (2,000,000 lamports) from {a} to {b}"
    assert [(x.role, x.is_signer, x.is_writable) for x in s.accounts] == [
        ("source", True, True),
        ("destination", False, True),
    ]


def test_delegate_roles_name_the_sysvars() -> None:
    s = summarize_instruction(
        stake_delegate(
            stake_account=Pubkey.new_unique(),
            vote_account=Pubkey.new_unique(),
            staker=Pubkey.new_unique(),
        )
    )
    assert [a.role for a in s.accounts] == [
        "stake account",
        "vote account",
        "Clock sysvar",
        "StakeHistory sysvar",
        "stake config (unused)",
        "stake authority",
    ]


def test_unknown_programs_and_variants_are_summarised_not_rejected() -> None:
    other = Pubkey.new_unique()
    s = summarize_instruction(Instruction(other, b"\x01\x02", [AccountMeta(other, False, True)]))
    assert (s.program, s.type) == ("Unknown", "Unknown")
    assert s.accounts[0].role == "account #0"
    assert summarize_instruction(Instruction(VOTE_PROGRAM, b"\x00" * 4, [])).program == "Vote"
    s = summarize_instruction(Instruction(SYSTEM_PROGRAM, struct.pack("<I", 99), []))
    assert (s.program, s.type, s.param("tag")) == ("System", "Unknown", 99)
    s = summarize_instruction(Instruction(STAKE_PROGRAM, struct.pack("<I", 6) + bytes(3), []))
    assert s.type == "SetLockup"


@pytest.mark.parametrize(
    "ix",
    [
        Instruction(SYSTEM_PROGRAM, struct.pack("<I", 2) + b"\x01", []),
        Instruction(STAKE_PROGRAM, b"\x00\x00", []),
        Instruction(STAKE_PROGRAM, struct.pack("<I", 1) + bytes(32) + struct.pack("<I", 7), []),
        Instruction(MEMO_PROGRAM, b"\xff\xfe", []),
    ],
)
def test_malformed_data_of_known_programs_raises(ix: Instruction) -> None:
    with pytest.raises(MalformedInstructionError):
        summarize_instruction(ix)


def test_lookup_table_accounts_resolve_only_when_given() -> None:
    payer, table, looked_up = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    header = MessageHeader(
        num_required_signatures=1,
        num_readonly_signed_accounts=0,
        num_readonly_unsigned_accounts=1,
    )
    transfer = CompiledInstruction(
        program_id_index=1, accounts=bytes([0, 2]), data=struct.pack("<IQ", 2, 5)
    )
    msg = MessageV0(
        header,
        [payer, SYSTEM_PROGRAM],
        Hash.default(),
        [transfer],
        [MessageAddressTableLookup(table, bytes([0]), bytes([]))],
    )
    with pytest.raises(MalformedInstructionError, match="lookup"):
        summarize_message(msg)
    (s,) = summarize_message(msg, loaded_writable=[looked_up])
    assert [(a.address, a.is_writable) for a in s.accounts] == [(payer, True), (looked_up, True)]
    assert s.param("lamports") == 5
