"""Verification of submitted wire transactions: the sans-io core, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from service.core.encoders import memo, system_advance_nonce, system_transfer
from service.core.errors import DomainError, ErrorKind
from service.core.programs import MAX_TRANSACTION_SIZE, SYSTEM_PROGRAM
from service.core.verify import (
    FeePayerNotAllowedError,
    MalformedSignatureError,
    SignatureInvalidError,
    SignatureMissingError,
    SubmittedTransactionTooLargeError,
    TransactionMalformedError,
    parse_signature,
    verify_transaction,
)

from ._helpers import signed, transfer

PAYER = Keypair.from_seed(bytes(range(32)))
BLOCKHASH = Hash(bytes([7] * 32))


def _wire(*, legacy: bool = False) -> bytes:
    return bytes(transfer(PAYER, BLOCKHASH, to=Keypair().pubkey(), legacy=legacy))


@pytest.mark.parametrize("legacy", [False, True], ids=["v0", "legacy"])
def test_a_signed_transaction_verifies(legacy: bool) -> None:
    wire = _wire(legacy=legacy)
    verified = verify_transaction(wire)
    tx = VersionedTransaction.from_bytes(wire)
    assert verified.signature == str(tx.signatures[0])
    assert verified.fee_payer == str(PAYER.pubkey())
    assert verified.signers == (str(PAYER.pubkey()),)
    assert verified.recent_blockhash == str(BLOCKHASH)
    assert verified.version == ("legacy" if legacy else "v0")
    assert verified.durable_nonce is None
    assert verified.wire == wire
    [ref] = verified.instructions
    assert (ref.program_id, ref.program_name, ref.instruction_type) == (
        str(SYSTEM_PROGRAM),
        "System",
        "Transfer",
    )


def test_durable_nonce_transactions_are_recognised() -> None:
    nonce, authority = Keypair().pubkey(), Keypair()
    tx = signed(
        PAYER,
        [
            system_advance_nonce(nonce_account=nonce, nonce_authority=authority.pubkey()),
            memo("x"),
        ],
        BLOCKHASH,
        signers=[authority],
    )
    use = verify_transaction(bytes(tx)).durable_nonce
    assert use is not None
    assert (use.nonce_account, use.nonce_authority, use.nonce_value) == (
        str(nonce),
        str(authority.pubkey()),
        str(BLOCKHASH),
    )


@pytest.mark.parametrize(
    "wire",
    [b"", b"\x00", b"\x01" + bytes(64), b"garbage", bytes(200)],
    ids=["empty", "no signatures", "truncated", "text", "zeros"],
)
def test_undecodable_bytes_are_malformed(wire: bytes) -> None:
    with pytest.raises(TransactionMalformedError) as caught:
        verify_transaction(wire)
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert caught.value.reason == "TRANSACTION_MALFORMED"
    assert caught.value.violations[0].field == "transaction"


def test_trailing_bytes_are_malformed() -> None:
    with pytest.raises(TransactionMalformedError, match="follow the end"):
        verify_transaction(_wire() + b"\x00\x00")


def test_signature_count_must_match_the_header() -> None:
    message = transfer(PAYER, BLOCKHASH).message
    extra = VersionedTransaction.populate(message, [Signature.new_unique(), Signature.new_unique()])
    with pytest.raises(TransactionMalformedError, match="requires 1 signature"):
        verify_transaction(bytes(extra))


def test_size_is_checked_first() -> None:
    big = bytes(signed(PAYER, [memo("m" * 1300, signers=[PAYER.pubkey()])], BLOCKHASH))
    assert len(big) > MAX_TRANSACTION_SIZE
    with pytest.raises(SubmittedTransactionTooLargeError) as caught:
        verify_transaction(big)
    assert caught.value.metadata == {"size": str(len(big)), "maximum": "1232"}
    with pytest.raises(SubmittedTransactionTooLargeError):
        verify_transaction(bytes(MAX_TRANSACTION_SIZE + 1))


def test_missing_signatures_name_their_signers() -> None:
    other = Keypair()
    message = MessageV0.try_compile(
        PAYER.pubkey(), [memo("both", signers=[other.pubkey()])], [], BLOCKHASH
    )
    both_missing = VersionedTransaction.populate(message, [Signature.default()] * 2)
    with pytest.raises(SignatureMissingError) as caught:
        verify_transaction(bytes(both_missing))
    assert caught.value.metadata["missing_signers"] == f"{PAYER.pubkey()},{other.pubkey()}"
    assert caught.value.metadata["signature_indexes"] == "0,1"


def test_a_signature_by_another_key_is_invalid() -> None:
    message = transfer(PAYER, BLOCKHASH).message
    forged = Keypair().sign_message(to_bytes_versioned(message))
    with pytest.raises(SignatureInvalidError) as caught:
        verify_transaction(bytes(VersionedTransaction.populate(message, [forged])))
    assert caught.value.metadata["invalid_signers"] == str(PAYER.pubkey())


def test_fee_payer_policy() -> None:
    wire = _wire()
    assert verify_transaction(wire, allowed_fee_payers=frozenset({str(PAYER.pubkey())}))
    with pytest.raises(FeePayerNotAllowedError) as caught:
        verify_transaction(wire, allowed_fee_payers=frozenset({str(Keypair().pubkey())}))
    assert caught.value.kind is ErrorKind.PERMISSION_DENIED
    assert caught.value.reason == "FEE_PAYER_NOT_ALLOWED"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1400))
def test_arbitrary_bytes_never_escape_as_anything_but_a_domain_error(wire: bytes) -> None:
    try:
        verify_transaction(wire)
    except DomainError as exc:
        assert exc.kind is ErrorKind.INVALID_ARGUMENT
        assert exc.reason in {
            "TRANSACTION_MALFORMED",
            "TRANSACTION_TOO_LARGE",
            "SIGNATURE_MISSING",
            "SIGNATURE_INVALID",
        }
    else:
        raise AssertionError("random bytes verified as a signed transaction")


SIGNED = _wire()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SIGNED) - 1), st.integers(1, 255))
def test_any_single_byte_change_of_a_signed_transaction_is_refused(at: int, flip: int) -> None:
    tampered = bytearray(SIGNED)
    tampered[at] ^= flip
    with pytest.raises(DomainError) as caught:
        verify_transaction(bytes(tampered))
    assert caught.value.reason in {
        "TRANSACTION_MALFORMED",
        "SIGNATURE_INVALID",
        "SIGNATURE_MISSING",
    }


def test_signature_parsing() -> None:
    signature = Signature.new_unique()
    assert parse_signature(str(signature)) == str(signature)
    for bad in ("", "0OIl", str(Keypair().pubkey()), "1" * 89):
        with pytest.raises(MalformedSignatureError) as caught:
            parse_signature(bad)
        assert caught.value.violations[0].field == "signature"


def test_transfer_helper_builds_a_system_transfer() -> None:
    ix = system_transfer(source=PAYER.pubkey(), destination=PAYER.pubkey(), lamports=1)
    assert ix.program_id == SYSTEM_PROGRAM
