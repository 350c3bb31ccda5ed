"""Encoders and summaries of AuthorizeChecked, SetLockup(Checked), MoveStake and
MoveLamports: the bincode layout byte by byte, the accounts and their roles, and the
decoder's account of each (the runtime executing them is tested in
test_stake_management.py)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair

from service.core import (
    MalformedInstructionError,
    StakeAuthorize,
    StakeInstructionTag,
    stake_authorize_checked,
    stake_move_lamports,
    stake_move_stake,
    stake_set_lockup_checked,
    summarize_instruction,
)
from service.core.programs import STAKE_PROGRAM, SYSVAR_CLOCK
from tests.core.strategies import i64s, u64s

STAKE, AUTHORITY, NEW, CUSTODIAN = (Keypair().pubkey() for _ in range(4))


def _metas(ix: Instruction) -> list[tuple[object, bool, bool]]:
    return [(m.pubkey, m.is_signer, m.is_writable) for m in ix.accounts]


@pytest.mark.parametrize("role", list(StakeAuthorize))
def test_authorize_checked_layout_and_summary(role: StakeAuthorize) -> None:
    ix = stake_authorize_checked(
        stake_account=STAKE, authority=AUTHORITY, new_authority=NEW, role=role, custodian=CUSTODIAN
    )
    assert ix.program_id == STAKE_PROGRAM
    assert bytes(ix.data) == struct.pack("<II", StakeInstructionTag.AUTHORIZE_CHECKED, role)
    assert _metas(ix) == [
        (STAKE, False, True),
        (SYSVAR_CLOCK, False, False),
        (AUTHORITY, True, False),
        (NEW, True, False),
        (CUSTODIAN, True, False),
    ]
    summary = summarize_instruction(ix)
    assert summary.type == "AuthorizeChecked"
    assert summary.param("role") == role.name.lower()
    assert summary.param("new_authority") == str(NEW)
    assert [a.role for a in summary.accounts] == [
        "stake account",
        "Clock sysvar",
        "current authority",
        "new authority",
        "lockup custodian",
    ]
    plain = stake_authorize_checked(
        stake_account=STAKE, authority=AUTHORITY, new_authority=NEW, role=role
    )
    assert len(plain.accounts) == 4


@given(
    timestamp=st.none() | i64s,
    epoch=st.none() | u64s,
    custodian=st.booleans(),
)
def test_set_lockup_checked_layout_and_summary(
    timestamp: int | None, epoch: int | None, custodian: bool
) -> None:
    ix = stake_set_lockup_checked(
        stake_account=STAKE,
        authority=AUTHORITY,
        unix_timestamp=timestamp,
        epoch=epoch,
        new_custodian=CUSTODIAN if custodian else None,
    )
    expected = struct.pack("<I", StakeInstructionTag.SET_LOCKUP_CHECKED)
    expected += b"\x00" if timestamp is None else b"\x01" + struct.pack("<q", timestamp)
    expected += b"\x00" if epoch is None else b"\x01" + struct.pack("<Q", epoch)
    assert bytes(ix.data) == expected
    assert _metas(ix) == [(STAKE, False, True), (AUTHORITY, True, False)] + (
        [(CUSTODIAN, True, False)] if custodian else []
    )
    summary = summarize_instruction(ix)
    params = dict(summary.params)
    assert summary.type == "SetLockupChecked"
    assert params.get("lockup_unix_timestamp") == timestamp
    assert params.get("lockup_epoch") == epoch
    assert params.get("lockup_custodian") == (str(CUSTODIAN) if custodian else None)


def test_unchecked_set_lockup_is_explained_too() -> None:
    data = struct.pack("<I", StakeInstructionTag.SET_LOCKUP) + b"\x00\x01" + struct.pack("<Q", 7)
    data += b"\x01" + bytes(CUSTODIAN)
    ix = Instruction(
        STAKE_PROGRAM,
        data,
        [AccountMeta(STAKE, False, True), AccountMeta(AUTHORITY, True, False)],
    )
    summary = summarize_instruction(ix)
    assert summary.type == "SetLockup"
    assert dict(summary.params) == {"lockup_epoch": 7, "lockup_custodian": str(CUSTODIAN)}
    assert str(CUSTODIAN) in summary.description and "end epoch 7" in summary.description
    bad = Instruction(
        STAKE_PROGRAM, struct.pack("<I", StakeInstructionTag.SET_LOCKUP) + b"\x02", []
    )
    with pytest.raises(MalformedInstructionError):
        summarize_instruction(bad)


@pytest.mark.parametrize(
    ("encoder", "tag", "name"),
    [
        (stake_move_stake, StakeInstructionTag.MOVE_STAKE, "MoveStake"),
        (stake_move_lamports, StakeInstructionTag.MOVE_LAMPORTS, "MoveLamports"),
    ],
)
def test_move_layouts(
    encoder: Callable[..., Instruction], tag: StakeInstructionTag, name: str
) -> None:
    ix = encoder(source=STAKE, destination=NEW, staker=AUTHORITY, lamports=1_234)
    assert bytes(ix.data) == struct.pack("<IQ", tag, 1_234)
    assert _metas(ix) == [(STAKE, False, True), (NEW, False, True), (AUTHORITY, True, False)]
    summary = summarize_instruction(ix)
    assert (summary.type, summary.param("lamports")) == (name, 1_234)
    with pytest.raises(Exception, match="lamports"):
        encoder(source=STAKE, destination=NEW, staker=AUTHORITY, lamports=0)
