"""Verification of a signed wire transaction before it is relayed (pure, no I/O).

What can be checked without the chain is checked here, in this order, and the
first failure is raised: size within the packet limit, a well-formed legacy or
v0 transaction (no trailing bytes, sane header and indexes), every required
signature present (not all zero) and valid (ed25519 over the message), and the
fee payer allowed by the caller's policy. The blockhash (or durable nonce) is
checked by the chain shell, which has to ask a node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from solders.errors import BincodeError
from solders.message import Message, MessageV0
from solders.signature import Signature
from solders.transaction import SanitizeError, VersionedTransaction

from service.core.errors import DomainError, ErrorKind, InvalidArgumentError
from service.core.programs import MAX_TRANSACTION_SIZE, SYSTEM_PROGRAM
from service.core.txerrors import InstructionRef, instruction_refs

_ZERO_SIGNATURE: Final = Signature.default()
# System instruction tag of AdvanceNonceAccount (u32 little endian).
_ADVANCE_NONCE_TAG: Final = (4).to_bytes(4, "little")
# Base58 text of a 64-byte signature is at most 88 characters.
_MAX_SIGNATURE_CHARS: Final = 88


class TransactionMalformedError(InvalidArgumentError):
    """The bytes are not a well-formed legacy or v0 Solana transaction."""

    default_reason = "TRANSACTION_MALFORMED"
    default_hint = (
        "Send the signed transaction in wire format (the bytes of VersionedTransaction or "
        "Transaction serialization), not base58/base64 text."
    )

    def __init__(self, detail: str) -> None:
        super().__init__(f"transaction is malformed: {detail}", field="transaction")


class SubmittedTransactionTooLargeError(InvalidArgumentError):
    """The wire transaction exceeds the network's packet limit."""

    default_reason = "TRANSACTION_TOO_LARGE"
    default_hint = "Use fewer instructions, accounts or signers; the network limit is 1232 bytes."

    def __init__(self, *, size: int, maximum: int) -> None:
        super().__init__(
            f"transaction is {size} bytes; the network accepts at most {maximum}",
            field="transaction",
            metadata={"size": size, "maximum": maximum},
        )


class SignatureMissingError(InvalidArgumentError):
    """A required signature slot is still zero (the transaction is not fully signed)."""

    default_reason = "SIGNATURE_MISSING"
    default_hint = "Sign the message with every required signer and put each signature in its slot."

    def __init__(self, *, signers: Sequence[str], indexes: Sequence[int]) -> None:
        super().__init__(
            f"transaction is missing the signature of {', '.join(signers)}",
            field="transaction",
            metadata={
                "missing_signers": ",".join(signers),
                "signature_indexes": ",".join(str(i) for i in indexes),
            },
        )


class SignatureInvalidError(InvalidArgumentError):
    """A signature does not verify: wrong key, or the message changed after signing."""

    default_reason = "SIGNATURE_INVALID"
    default_hint = (
        "Sign the exact message bytes with the key of each required signer, and do not "
        "change the transaction after signing."
    )

    def __init__(self, *, signers: Sequence[str], indexes: Sequence[int]) -> None:
        super().__init__(
            f"the signature of {', '.join(signers)} does not verify against the message",
            field="transaction",
            metadata={
                "invalid_signers": ",".join(signers),
                "signature_indexes": ",".join(str(i) for i in indexes),
            },
        )


class FeePayerNotAllowedError(DomainError):
    """The caller's API key may not relay transactions paid by this wallet."""

    kind = ErrorKind.PERMISSION_DENIED
    default_reason = "FEE_PAYER_NOT_ALLOWED"
    default_hint = "Submit with a key whose policy allows this wallet, or ask the operator."

    def __init__(self, *, fee_payer: str) -> None:
        super().__init__(
            f"this API key may not submit transactions paid by {fee_payer}",
            metadata={"policy": "allowed_wallets", "fee_payer": fee_payer},
        )


class MalformedSignatureError(InvalidArgumentError):
    """A signature field does not hold a base58 64-byte signature."""

    default_reason = "MALFORMED_SIGNATURE"
    default_hint = "Pass the transaction's first signature, base58-encoded (64 bytes)."


@dataclass(frozen=True, kw_only=True)
class DurableNonceUse:
    """The nonce a durable-nonce transaction consumes (its first instruction)."""

    nonce_account: str
    nonce_authority: str
    nonce_value: str
    """The value the nonce account must hold: the message's recent_blockhash."""


@dataclass(frozen=True, kw_only=True)
class VerifiedTransaction:
    """A transaction that passed every check that needs no chain.

    Attributes:
        transaction: The parsed transaction.
        wire: The exact bytes received (what is sent to nodes).
        signature: First signature, base58: the transaction's id.
        fee_payer: First account key, base58.
        signers: Every required signer, base58, in signature order.
        recent_blockhash: The message's recent blockhash (or nonce value), base58.
        version: "legacy" or "v0".
        durable_nonce: Set when the first instruction is AdvanceNonceAccount.
        instructions: Program (and decoded name) of each instruction.
    """

    transaction: VersionedTransaction
    wire: bytes
    signature: str
    fee_payer: str
    signers: tuple[str, ...]
    recent_blockhash: str
    version: str
    durable_nonce: DurableNonceUse | None
    instructions: tuple[InstructionRef, ...]


def parse_signature(value: str, *, field: str = "signature") -> str:
    """Check a base58 transaction signature from a request field; return it normalized.

    Raises:
        MalformedSignatureError: empty, too long, not base58 or not 64 bytes.
    """
    if not value:
        raise MalformedSignatureError(f"{field} is required", field=field)
    if len(value) > _MAX_SIGNATURE_CHARS:
        raise MalformedSignatureError(
            f"{field} is {len(value)} characters; a signature has at most 88", field=field
        )
    try:
        return str(Signature.from_string(value))
    except ValueError:
        raise MalformedSignatureError(
            f"{field} {value!r} is not a base58 64-byte signature", field=field
        ) from None


def parse_wire_transaction(
    wire: bytes, *, max_size: int = MAX_TRANSACTION_SIZE
) -> VersionedTransaction:
    """Parse a wire transaction, checking size, exact length and sanity.

    Raises:
        TransactionMalformedError: empty, undecodable, trailing bytes, or insane message.
        SubmittedTransactionTooLargeError: more than ``max_size`` bytes.
    """
    if not wire:
        raise TransactionMalformedError("transaction is empty")
    if len(wire) > max_size:
        raise SubmittedTransactionTooLargeError(size=len(wire), maximum=max_size)
    try:
        tx = VersionedTransaction.from_bytes(wire)
    except (ValueError, TypeError, BincodeError) as exc:
        raise TransactionMalformedError(f"cannot decode the wire format ({exc})") from None
    if len(bytes(tx)) != len(wire):
        raise TransactionMalformedError(
            f"{len(wire) - len(bytes(tx))} bytes follow the end of the transaction"
        )
    message = tx.message
    if not isinstance(message, Message | MessageV0):
        raise TransactionMalformedError("only legacy and version 0 messages are accepted")
    required = message.header.num_required_signatures
    if required == 0:
        raise TransactionMalformedError("the message requires no signature (no fee payer)")
    if len(tx.signatures) != required:
        raise TransactionMalformedError(
            f"the message requires {required} signature(s) but {len(tx.signatures)} are present"
        )
    try:
        tx.sanitize()
    except SanitizeError as exc:
        raise TransactionMalformedError(f"the message is not sane ({exc})") from None
    return tx


def _durable_nonce(message: Message | MessageV0) -> DurableNonceUse | None:
    if not message.instructions:
        return None
    first = message.instructions[0]
    keys = list(message.account_keys)
    if keys[first.program_id_index] != SYSTEM_PROGRAM:
        return None
    if bytes(first.data)[:4] != _ADVANCE_NONCE_TAG or len(first.accounts) < 3:
        return None
    # AdvanceNonceAccount: [nonce w, RecentBlockhashes sysvar, authority s]. Accounts
    # loaded through lookup tables are not resolvable here: treat as no nonce.
    nonce_index, authority_index = first.accounts[0], first.accounts[2]
    if nonce_index >= len(keys) or authority_index >= len(keys):
        return None
    return DurableNonceUse(
        nonce_account=str(keys[nonce_index]),
        nonce_authority=str(keys[authority_index]),
        nonce_value=str(message.recent_blockhash),
    )


def verify_transaction(
    wire: bytes,
    *,
    allowed_fee_payers: frozenset[str] = frozenset(),
    max_size: int = MAX_TRANSACTION_SIZE,
) -> VerifiedTransaction:
    """Verify a signed wire transaction as far as possible without the chain.

    Args:
        wire: The transaction bytes (legacy or v0).
        allowed_fee_payers: The caller's allowed wallets; empty = any fee payer.
        max_size: Packet limit.

    Raises:
        TransactionMalformedError, SubmittedTransactionTooLargeError: not a valid
            transaction (INVALID_ARGUMENT).
        SignatureMissingError: a required signature slot is zero.
        SignatureInvalidError: a signature does not verify (wrong key or tampered).
        FeePayerNotAllowedError: the policy does not allow the fee payer.
    """
    tx = parse_wire_transaction(wire, max_size=max_size)
    message = tx.message
    assert isinstance(message, Message | MessageV0)  # parse_wire_transaction checked it
    required = message.header.num_required_signatures
    signers = [str(key) for key in list(message.account_keys)[:required]]
    missing = [i for i, sig in enumerate(tx.signatures) if sig == _ZERO_SIGNATURE]
    if missing:
        raise SignatureMissingError(signers=[signers[i] for i in missing], indexes=missing)
    invalid = [i for i, ok in enumerate(tx.verify_with_results()) if not ok]
    if invalid:
        raise SignatureInvalidError(signers=[signers[i] for i in invalid], indexes=invalid)
    fee_payer = signers[0]
    if allowed_fee_payers and fee_payer not in allowed_fee_payers:
        raise FeePayerNotAllowedError(fee_payer=fee_payer)
    return VerifiedTransaction(
        transaction=tx,
        wire=bytes(wire),
        signature=str(tx.signatures[0]),
        fee_payer=fee_payer,
        signers=tuple(signers),
        recent_blockhash=str(message.recent_blockhash),
        version="legacy" if isinstance(message, Message) else "v0",
        durable_nonce=_durable_nonce(message),
        instructions=instruction_refs(message),
    )
