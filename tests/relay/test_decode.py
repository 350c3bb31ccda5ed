"""Transaction errors, statuses and their protos: the sans-io core, no sockets."""

from __future__ import annotations

from typing import Any

import pytest
from agentstaking.v1 import types_pb2
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0

from service.api._converters import (
    commitment_to_domain,
    submit_response_to_proto,
    transaction_status_to_proto,
)
from service.chain import SubmitOutcome
from service.core.encoders import memo, stake_deactivate
from service.core.errors import ErrorKind, InvalidArgumentError
from service.core.programs import STAKE_PROGRAM, SYSTEM_PROGRAM
from service.core.txerrors import (
    MAX_METADATA_LOG_CHARS,
    STAKE_ERRORS,
    SYSTEM_ERRORS,
    InstructionRef,
    PreflightFailedError,
    decode_transaction_error,
    instruction_refs,
)
from service.core.txstatus import (
    Commitment,
    TxState,
    TxStatus,
    parse_signature_status,
    reached,
    steps_between,
    with_steps,
)

from ._helpers import signed

MEMO = InstructionRef(program_id="MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", program_name="Memo")
STAKE = InstructionRef(
    program_id=str(STAKE_PROGRAM), program_name="Stake", instruction_type="Deactivate"
)
SYSTEM = InstructionRef(
    program_id=str(SYSTEM_PROGRAM), program_name="System", instruction_type="Transfer"
)


def test_stake_custom_error_is_named_with_its_instruction() -> None:
    error = decode_transaction_error(
        {"InstructionError": [1, {"Custom": 2}]},
        instructions=[MEMO, STAKE],
        logs=["Program Stake111 invoke [1]", "Program Stake111 failed"],
    )
    assert error.kind == "InstructionError"
    assert (error.instruction_index, error.program, error.program_name) == (
        1,
        str(STAKE_PROGRAM),
        "Stake",
    )
    assert (error.instruction_error, error.custom_code, error.program_error) == (
        "Custom",
        2,
        "AlreadyDeactivated",
    )
    assert error.message == (
        "instruction 1 (Stake Deactivate) failed: the stake account is already deactivated"
    )
    assert error.logs[-1] == "Program Stake111 failed"


@pytest.mark.parametrize(
    ("ref", "code", "name", "hinted"),
    [
        (SYSTEM, 0, "AccountAlreadyInUse", False),
        (SYSTEM, 1, "ResultWithNegativeLamports", True),
        (STAKE, 1, "LockupInForce", True),
        (STAKE, 6, "MergeMismatch", False),
        (STAKE, 12, "InsufficientDelegation", True),
        (STAKE, 16, "EpochRewardsActive", True),
    ],
)
def test_known_program_errors(ref: InstructionRef, code: int, name: str, hinted: bool) -> None:
    error = decode_transaction_error(
        {"InstructionError": [0, {"Custom": code}]}, instructions=[ref]
    )
    assert error.program_error == name
    assert bool(error.hint) is hinted
    if hinted:
        assert error.message.endswith(error.hint)


def test_error_tables_follow_the_program_enums() -> None:
    assert len(STAKE_ERRORS) == 17 and len(SYSTEM_ERRORS) == 9
    assert STAKE_ERRORS[0].name == "NoCreditsToRedeem"
    assert SYSTEM_ERRORS[8].name == "NonceUnexpectedBlockhashValue"


def test_custom_error_of_an_unknown_program_keeps_its_code() -> None:
    other = InstructionRef(program_id=str(Keypair().pubkey()))
    error = decode_transaction_error(
        {"InstructionError": [0, {"Custom": 42}]}, instructions=[other]
    )
    assert (error.custom_code, error.program_error) == (42, "")
    assert "custom program error 0x2a" in error.message
    assert error.program_name == "Unknown"


def test_builtin_instruction_errors_and_payloads() -> None:
    error = decode_transaction_error(
        {"InstructionError": [0, "MissingRequiredSignature"]}, instructions=[SYSTEM]
    )
    assert error.instruction_error == "MissingRequiredSignature" and error.custom_code is None
    assert "signature is missing" in error.message and error.hint
    borsh = decode_transaction_error({"InstructionError": [0, {"BorshIoError": "eof"}]})
    assert borsh.instruction_error == "BorshIoError" and "(eof)" in borsh.message
    # No message at hand: the index is still reported, the program is not.
    bare = decode_transaction_error({"InstructionError": [5, "InvalidAccountData"]})
    assert (bare.instruction_index, bare.program, bare.program_name) == (5, "", "")
    assert bare.message.startswith("instruction 5 failed:")


@pytest.mark.parametrize(
    ("err", "kind", "text"),
    [
        ("BlockhashNotFound", "BlockhashNotFound", "blockhash is unknown or expired"),
        ("InsufficientFundsForFee", "InsufficientFundsForFee", "cannot pay"),
        ({"InsufficientFundsForRent": {"account_index": 2}}, "InsufficientFundsForRent", "2"),
        ({"DuplicateInstruction": 3}, "DuplicateInstruction", "instruction 3"),
        ("SomethingNewInAFutureRelease", "SomethingNewInAFutureRelease", "failed"),
        (None, "Unknown", "failed"),
        ([1, 2], "Unknown", "failed"),
        ({"InstructionError": "bad"}, "InstructionError", "an instruction failed"),
    ],
)
def test_transaction_level_errors(err: Any, kind: str, text: str) -> None:
    error = decode_transaction_error(err)
    assert error.kind == kind
    assert text in error.message
    assert error.instruction_index is None or kind == "InstructionError"


def test_preflight_error_metadata() -> None:
    logs = [f"Program log: line {i} " + "x" * 50 for i in range(100)]
    decoded = decode_transaction_error(
        {"InstructionError": [1, {"Custom": 2}]}, instructions=[MEMO, STAKE], logs=logs
    )
    error = PreflightFailedError(decoded)
    assert error.kind is ErrorKind.FAILED_PRECONDITION and error.reason == "PREFLIGHT_FAILED"
    metadata = error.metadata
    assert metadata["error_kind"] == "InstructionError"
    assert metadata["instruction_index"] == "1" and metadata["custom_code"] == "2"
    assert metadata["program"] == str(STAKE_PROGRAM) and metadata["program_name"] == "Stake"
    assert metadata["program_error"] == "AlreadyDeactivated"
    assert metadata["raw_error"] == '{"InstructionError":[1,{"Custom":2}]}'
    # Trailers are small: the logs keep their end, where the failure is.
    assert len(metadata["logs"]) == MAX_METADATA_LOG_CHARS
    assert metadata["logs"].endswith(logs[-1])
    assert error.message.startswith("preflight simulation failed: instruction 1 (Stake")


def test_instruction_refs_of_a_message() -> None:
    payer = Keypair()
    stake = Keypair().pubkey()
    tx = signed(
        payer,
        [memo("hi"), stake_deactivate(stake_account=stake, staker=payer.pubkey())],
        Hash.new_unique(),
    )
    assert isinstance(tx.message, MessageV0)
    refs = instruction_refs(tx.message)
    assert [(r.program_name, r.instruction_type) for r in refs] == [
        ("Memo", "Memo"),
        ("Stake", "Deactivate"),
    ]


# --- statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "state", "confirmations"),
    [
        (
            {"slot": 5, "confirmations": 0, "err": None, "confirmationStatus": "processed"},
            TxState.PROCESSED,
            0,
        ),
        (
            {"slot": 5, "confirmations": 3, "err": None, "confirmationStatus": "confirmed"},
            TxState.CONFIRMED,
            3,
        ),
        (
            {"slot": 5, "confirmations": None, "err": None, "confirmationStatus": "finalized"},
            TxState.FINALIZED,
            0,
        ),
        ({"slot": 5, "confirmations": None, "err": None}, TxState.FINALIZED, 0),
        ({"slot": 5, "confirmations": 2, "err": None}, TxState.CONFIRMED, 2),
    ],
)
def test_signature_status_entries(
    value: dict[str, Any], state: TxState, confirmations: int
) -> None:
    observed = parse_signature_status(value)
    assert observed is not None
    assert (observed.state, observed.slot, observed.confirmations) == (state, 5, confirmations)
    assert not observed.failed


def test_signature_status_entries_edge_cases() -> None:
    assert parse_signature_status(None) is None
    failed = parse_signature_status(
        {"slot": 9, "confirmations": 1, "err": "X", "confirmationStatus": "confirmed"}
    )
    assert failed is not None and failed.failed and failed.err == "X"
    with pytest.raises(ValueError):
        parse_signature_status({"slot": 1, "confirmationStatus": "rooted"})


def test_skipped_successful_steps_are_reported_in_order() -> None:
    assert steps_between(TxState.SENT, TxState.FINALIZED) == (
        TxState.PROCESSED,
        TxState.CONFIRMED,
        TxState.FINALIZED,
    )
    assert steps_between(TxState.PROCESSED, TxState.CONFIRMED) == (TxState.CONFIRMED,)
    assert steps_between(TxState.CONFIRMED, TxState.SENT) == (TxState.SENT,)  # a fork
    assert steps_between(TxState.SENT, TxState.FAILED) == (TxState.FAILED,)
    status = TxStatus(signature="s", state=TxState.FINALIZED, slot=7, confirmations=0)
    steps = with_steps(status, TxState.SENT)
    assert [s.state for s in steps] == [TxState.PROCESSED, TxState.CONFIRMED, TxState.FINALIZED]
    assert all(s.slot == 7 for s in steps)


def test_reached() -> None:
    assert reached(TxState.CONFIRMED, Commitment.PROCESSED)
    assert reached(TxState.CONFIRMED, Commitment.CONFIRMED)
    assert not reached(TxState.CONFIRMED, Commitment.FINALIZED)
    assert not reached(TxState.SENT, Commitment.PROCESSED)
    assert reached(TxState.FAILED, Commitment.FINALIZED)
    assert reached(TxState.EXPIRED, Commitment.PROCESSED)
    assert [s for s in TxState if s.terminal] == [
        TxState.FINALIZED,
        TxState.FAILED,
        TxState.EXPIRED,
    ]


def test_status_invariants() -> None:
    with pytest.raises(ValueError):
        TxStatus(signature="s", state=TxState.FAILED)
    with pytest.raises(ValueError):
        TxStatus(signature="s", state=TxState.SENT, error=decode_transaction_error("X"))
    with pytest.raises(ValueError):
        TxStatus(signature="s", state=TxState.SENT, slot=-1)


# --- protos --------------------------------------------------------------------------------


def test_status_to_proto() -> None:
    error = decode_transaction_error(
        {"InstructionError": [1, {"Custom": 2}]}, instructions=[MEMO, STAKE], logs=["a", "b"]
    )
    status = TxStatus(
        signature="sig",
        state=TxState.FAILED,
        slot=12,
        confirmations=3,
        error=error,
        last_valid_block_height=200,
        update_time=1_700_000_000.5,
        create_time=1_700_000_000.0,
        send_count=2,
    )
    proto = transaction_status_to_proto(status)
    assert proto.state == types_pb2.TRANSACTION_STATE_FAILED
    assert (proto.slot, proto.confirmations, proto.last_valid_block_height, proto.send_count) == (
        12,
        3,
        200,
        2,
    )
    assert proto.update_time.ToNanoseconds() == 1_700_000_000_500_000_000
    assert proto.create_time.seconds == 1_700_000_000
    assert proto.error.instruction_index == 1 and proto.error.custom_code == 2
    assert proto.error.program_error == "AlreadyDeactivated"
    assert list(proto.error.logs) == ["a", "b"]
    # Optional fields stay unset when the error has none.
    plain = transaction_status_to_proto(
        TxStatus(signature="s", state=TxState.FAILED, error=decode_transaction_error("X"))
    )
    assert not plain.error.HasField("instruction_index")
    assert not plain.error.HasField("custom_code")
    assert not plain.HasField("create_time")
    chain_only = transaction_status_to_proto(TxStatus(signature="s", state=TxState.CONFIRMED))
    assert not chain_only.HasField("error") and not chain_only.HasField("update_time")


def test_every_state_has_a_proto_value() -> None:
    names = {
        types_pb2.TransactionState.Name(
            transaction_status_to_proto(TxStatus(signature="s", state=state)).state
        )
        for state in TxState
        if state is not TxState.FAILED
    }
    assert len(names) == len(TxState) - 1


def test_submit_response() -> None:
    outcome = SubmitOutcome(
        status=TxStatus(signature="sig", state=TxState.SENT, send_count=1), already_submitted=True
    )
    response = submit_response_to_proto(outcome)
    assert response.signature == "sig" and response.already_submitted
    assert response.status.state == types_pb2.TRANSACTION_STATE_SENT


def test_commitments() -> None:
    assert commitment_to_domain(types_pb2.COMMITMENT_UNSPECIFIED) is None
    assert commitment_to_domain(types_pb2.COMMITMENT_CONFIRMED) is Commitment.CONFIRMED
    with pytest.raises(InvalidArgumentError) as caught:
        commitment_to_domain(9)  # type: ignore[arg-type]
    assert caught.value.violations[0].field == "commitment"
