"""Signed receipts: what the service offered, as canonical bytes anyone can verify.

A receipt is a canonical JSON payload describing one built transaction (who asked,
for what, the sha256 of the exact message bytes, every fee, every lamport the
message moves, its lifetime) and an Ed25519 signature of exactly those bytes by the
service's receipt key. This module is pure: it turns plain values (and the message
bytes) into the payload and its signing input, parses a payload back, compares two
payloads and checks a signature. The keys and the clock live elsewhere
(``service.receipts``).

The canonical form (documented in docs/intents.md, relied upon by verifiers that
never re-serialize it):

- one JSON object, ASCII only (anything else ``\\uXXXX``-escaped), object keys sorted
  by code point, no whitespace (``json.dumps(..., sort_keys=True,
  separators=(",", ":"), ensure_ascii=True)``);
- no JSON numbers, booleans or nulls: integers are decimal strings (exact in every
  language), absent values are empty strings;
- ``"type": "agentstaking.v1.Receipt"`` and ``"version": "1"`` in every payload, so
  that the signed bytes can never be mistaken for anything else the key could sign.

The signing input is the payload's bytes, unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final

from solders.message import Message, MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature

from service.core.programs import SYSTEM_PROGRAM
from service.core.summaries import InstructionSummary, summarize_message

RECEIPT_TYPE: Final = "agentstaking.v1.Receipt"
RECEIPT_VERSION: Final = "1"
KEY_ID_PREFIX: Final = "rk_"
PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64

# (program, instruction type) -> (index of the account debited, index of the account
# credited) among the instruction's accounts, for instructions that carry an amount.
_MOVEMENTS: Final[Mapping[tuple[str, str], tuple[int, int]]] = {
    ("System", "CreateAccount"): (0, 1),
    ("System", "CreateAccountWithSeed"): (0, 1),
    ("System", "Transfer"): (0, 1),
    ("System", "TransferWithSeed"): (0, 2),
    ("System", "WithdrawNonceAccount"): (0, 1),
    ("Stake", "Split"): (0, 1),
    ("Stake", "Withdraw"): (0, 1),
    ("Stake", "MoveStake"): (0, 1),
    ("Stake", "MoveLamports"): (0, 1),
    ("StakePool", "DepositSol"): (3, 2),
    ("StakePool", "DepositSolWithSlippage"): (3, 2),
}
_ADVANCE_NONCE_TAG: Final = b"\x04\x00\x00\x00"


@dataclass(frozen=True, kw_only=True)
class LamportMovement:
    """Lamports one instruction of the message moves from one account to another."""

    instruction: int
    """Index of the instruction in the message."""
    program: str
    type: str
    source: str
    destination: str
    lamports: int


@dataclass(frozen=True, kw_only=True)
class ReceiptFees:
    """The fee breakdown of the build (``PreparedTransaction.fees``)."""

    service_fee_lamports: int
    service_fee_bps: int
    fee_recipient: str
    network_fee_lamports: int
    priority_fee_lamports: int
    rent_exempt_reserve_lamports: int
    total_debit_lamports: int


@dataclass(frozen=True, kw_only=True)
class ReceiptPayload:
    """Everything a receipt states, as plain values.

    Attributes:
        key_id: The receipt key that signs it.
        issue_time: When it was issued, RFC 3339 UTC with milliseconds.
        api_key_id: The API key that asked (empty without one).
        cluster: Genesis hash of the cluster the transaction is for.
        kind: The RPC that built it, e.g. ``BuildStakeTransaction``.
        request_id: The request's idempotency key (empty without one).
        attempt: Which build of the request's intent this is (1, then one more per
            rebuild); 0 without a request_id.
        wallet: The fee payer (first required signer).
        message_sha256: Hex SHA-256 of the exact message bytes to sign.
        transaction_version: ``v0`` or ``legacy``.
        required_signers: Every signer, in signature-slot order.
        writable_accounts: Every account the message may modify, in message order.
        recent_blockhash: The message's blockhash, or durable nonce value.
        nonce_account: The durable nonce account (empty with a blockhash).
        last_valid_block_height: 0 with a durable nonce.
        fees: The fee breakdown.
        lamport_movements: Every amount the message's instructions move.
    """

    key_id: str
    issue_time: str
    api_key_id: str
    cluster: str
    kind: str
    request_id: str
    attempt: int
    wallet: str
    message_sha256: str
    transaction_version: str
    required_signers: tuple[str, ...]
    writable_accounts: tuple[str, ...]
    recent_blockhash: str
    nonce_account: str
    last_valid_block_height: int
    fees: ReceiptFees
    lamport_movements: tuple[LamportMovement, ...]

    def to_json(self) -> dict[str, Any]:
        """The payload as a JSON-ready object (every value a string, list or object):
        the reference form of :meth:`canonical`."""
        return {
            "type": RECEIPT_TYPE,
            "version": RECEIPT_VERSION,
            "key_id": self.key_id,
            "issue_time": self.issue_time,
            "api_key_id": self.api_key_id,
            "cluster": self.cluster,
            "kind": self.kind,
            "request_id": self.request_id,
            "attempt": str(self.attempt),
            "wallet": self.wallet,
            "message_sha256": self.message_sha256,
            "transaction_version": self.transaction_version,
            "required_signers": list(self.required_signers),
            "writable_accounts": list(self.writable_accounts),
            "recent_blockhash": self.recent_blockhash,
            "nonce_account": self.nonce_account,
            "last_valid_block_height": str(self.last_valid_block_height),
            "fees": {f.name: str(getattr(self.fees, f.name)) for f in fields(ReceiptFees)},
            "lamport_movements": [
                {
                    "instruction": str(m.instruction),
                    "program": m.program,
                    "type": m.type,
                    "from": m.source,
                    "to": m.destination,
                    "lamports": str(m.lamports),
                }
                for m in self.lamport_movements
            ],
        }

    def canonical(self) -> str:
        """The canonical JSON text; its ASCII bytes are what the receipt key signs.

        Written directly, keys in their sorted order: the same text as
        ``json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"),
        ensure_ascii=True)`` (a property test holds them equal) at a third of the
        cost, on every build's path.
        """
        q = _quoted
        fees = self.fees
        movements = ",".join(
            [
                f'{{"from":{q(m.source)},"instruction":"{m.instruction!s}",'
                f'"lamports":"{m.lamports!s}","program":{q(m.program)},'
                f'"to":{q(m.destination)},"type":{q(m.type)}}}'
                for m in self.lamport_movements
            ]
        )
        return (
            f'{{"api_key_id":{q(self.api_key_id)},"attempt":"{self.attempt!s}",'
            f'"cluster":{q(self.cluster)},"fees":{{'
            f'"fee_recipient":{q(fees.fee_recipient)},'
            f'"network_fee_lamports":"{fees.network_fee_lamports!s}",'
            f'"priority_fee_lamports":"{fees.priority_fee_lamports!s}",'
            f'"rent_exempt_reserve_lamports":"{fees.rent_exempt_reserve_lamports!s}",'
            f'"service_fee_bps":"{fees.service_fee_bps!s}",'
            f'"service_fee_lamports":"{fees.service_fee_lamports!s}",'
            f'"total_debit_lamports":"{fees.total_debit_lamports!s}"}},'
            f'"issue_time":{q(self.issue_time)},"key_id":{q(self.key_id)},'
            f'"kind":{q(self.kind)},"lamport_movements":[{movements}],'
            f'"last_valid_block_height":"{self.last_valid_block_height!s}",'
            f'"message_sha256":{q(self.message_sha256)},'
            f'"nonce_account":{q(self.nonce_account)},'
            f'"recent_blockhash":{q(self.recent_blockhash)},'
            f'"request_id":{q(self.request_id)},'
            f'"required_signers":[{",".join([q(s) for s in self.required_signers])}],'
            f'"transaction_version":{q(self.transaction_version)},'
            f'"type":{_QUOTED_TYPE},"version":{_QUOTED_VERSION},'
            f'"wallet":{q(self.wallet)},'
            f'"writable_accounts":[{",".join([q(s) for s in self.writable_accounts])}]}}'
        )

    def signing_input(self) -> bytes:
        """The exact bytes signed: the canonical text, ASCII encoded."""
        return self.canonical().encode("ascii")


# A JSON string literal, ASCII only (json's own C encoder of strings).
_quoted: Final[Callable[[str], str]] = json.encoder.encode_basestring_ascii
_QUOTED_TYPE: Final = _quoted(RECEIPT_TYPE)
_QUOTED_VERSION: Final = _quoted(RECEIPT_VERSION)


def format_issue_time(unix_millis: int) -> str:
    """Unix milliseconds as RFC 3339 UTC with milliseconds: ``2030-01-01T00:00:00.000Z``."""
    return f"{_second_text(unix_millis // 1000)}.{unix_millis % 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _second_text(unix_seconds: int) -> str:
    # Receipts come many to a second: the date and time of one are formatted once.
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def key_id_for(public_key: bytes) -> str:
    """The id of a receipt key: ``rk_`` and the first 16 hex digits of the SHA-256 of
    its 32-byte public key (so an id always names the same key).

    Raises:
        ValueError: Not a 32-byte key.
    """
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
    return KEY_ID_PREFIX + hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class InstructionAmount:
    """One instruction of the message as a receipt reads it: program and type names,
    its accounts, and the lamports it states (None: none)."""

    program: str
    type: str
    accounts: tuple[str, ...]
    lamports: int | None


def instruction_amounts(summaries: Sequence[InstructionSummary]) -> tuple[InstructionAmount, ...]:
    """The receipt's view of decoded instructions."""
    found = []
    for summary in summaries:
        lamports = dict(summary.params).get("lamports")
        found.append(
            InstructionAmount(
                program=summary.program,
                type=summary.type,
                accounts=tuple(str(a.address) for a in summary.accounts),
                lamports=lamports if isinstance(lamports, int) else None,
            )
        )
    return tuple(found)


def lamport_movements(
    instructions: Sequence[InstructionAmount],
) -> tuple[LamportMovement, ...]:
    """The amounts the instructions move, in instruction order (instructions whose
    amount the message does not state, such as Merge, move nothing here)."""
    found: list[LamportMovement] = []
    for index, instruction in enumerate(instructions):
        where = _MOVEMENTS.get((instruction.program, instruction.type))
        if where is None or instruction.lamports is None:
            continue
        source, destination = where
        accounts = instruction.accounts
        if max(source, destination) >= len(accounts):
            continue
        found.append(
            LamportMovement(
                instruction=index,
                program=instruction.program,
                type=instruction.type,
                source=accounts[source],
                destination=accounts[destination],
                lamports=instruction.lamports,
            )
        )
    return tuple(found)


def _nonce_account(message: Message | MessageV0) -> str:
    """The nonce account when the first instruction advances a durable nonce."""
    if not message.instructions:
        return ""
    first = message.instructions[0]
    keys = message.account_keys
    if keys[first.program_id_index] != SYSTEM_PROGRAM or not bytes(first.data).startswith(
        _ADVANCE_NONCE_TAG
    ):
        return ""
    accounts = bytes(first.accounts)
    return str(keys[accounts[0]]) if accounts else ""


def receipt_payload(
    *,
    message: bytes,
    instructions: Sequence[InstructionAmount] | None = None,
    fees: ReceiptFees,
    last_valid_block_height: int,
    kind: str,
    request_id: str,
    attempt: int,
    api_key_id: str,
    cluster: str,
    key_id: str,
    issue_time_millis: int,
) -> ReceiptPayload:
    """The payload of a receipt for the message a build returns.

    Signers, writable accounts, blockhash or nonce are read from the message bytes
    themselves, so the receipt states what the signer signs; the lamport movements
    from ``instructions``, the build's own decoding of the same message (None: the
    message is decoded here, at some cost).

    Raises:
        ValueError: The bytes are not a legacy or v0 message.
    """
    parsed = from_bytes_versioned(message)
    if not isinstance(parsed, Message | MessageV0):
        raise ValueError("not a legacy or version 0 message")
    keys = [str(k) for k in parsed.account_keys]
    header = parsed.header
    signed = header.num_required_signatures
    writable = [
        key
        for index, key in enumerate(keys)
        if index < signed - header.num_readonly_signed_accounts
        or signed <= index < len(keys) - header.num_readonly_unsigned_accounts
    ]
    signers = tuple(keys[:signed])
    return ReceiptPayload(
        key_id=key_id,
        issue_time=format_issue_time(issue_time_millis),
        api_key_id=api_key_id,
        cluster=cluster,
        kind=kind,
        request_id=request_id,
        attempt=attempt,
        wallet=signers[0],
        message_sha256=hashlib.sha256(message).hexdigest(),
        transaction_version="legacy" if isinstance(parsed, Message) else "v0",
        required_signers=signers,
        writable_accounts=tuple(writable),
        recent_blockhash=str(parsed.recent_blockhash),
        nonce_account=_nonce_account(parsed),
        last_valid_block_height=last_valid_block_height,
        fees=fees,
        lamport_movements=lamport_movements(
            instruction_amounts(summarize_message(parsed)) if instructions is None else instructions
        ),
    )


def parse_receipt_payload(text: str | bytes) -> ReceiptPayload:
    """A payload read back from its JSON (any key order: the signature, not this
    parse, vouches for the bytes).

    Raises:
        ValueError: Not a receipt payload of this version.
    """
    try:
        value = json.loads(text)
        if value.get("type") != RECEIPT_TYPE or value.get("version") != RECEIPT_VERSION:
            raise ValueError(f"not a {RECEIPT_TYPE} payload of version {RECEIPT_VERSION}")
        fee_values = value["fees"]
        return ReceiptPayload(
            key_id=_text(value, "key_id"),
            issue_time=_text(value, "issue_time"),
            api_key_id=_text(value, "api_key_id"),
            cluster=_text(value, "cluster"),
            kind=_text(value, "kind"),
            request_id=_text(value, "request_id"),
            attempt=_integer(value, "attempt"),
            wallet=_text(value, "wallet"),
            message_sha256=_text(value, "message_sha256"),
            transaction_version=_text(value, "transaction_version"),
            required_signers=tuple(str(s) for s in value["required_signers"]),
            writable_accounts=tuple(str(s) for s in value["writable_accounts"]),
            recent_blockhash=_text(value, "recent_blockhash"),
            nonce_account=_text(value, "nonce_account"),
            last_valid_block_height=_integer(value, "last_valid_block_height"),
            fees=ReceiptFees(
                service_fee_lamports=_integer(fee_values, "service_fee_lamports"),
                service_fee_bps=_integer(fee_values, "service_fee_bps"),
                fee_recipient=_text(fee_values, "fee_recipient"),
                network_fee_lamports=_integer(fee_values, "network_fee_lamports"),
                priority_fee_lamports=_integer(fee_values, "priority_fee_lamports"),
                rent_exempt_reserve_lamports=_integer(fee_values, "rent_exempt_reserve_lamports"),
                total_debit_lamports=_integer(fee_values, "total_debit_lamports"),
            ),
            lamport_movements=tuple(
                LamportMovement(
                    instruction=_integer(m, "instruction"),
                    program=_text(m, "program"),
                    type=_text(m, "type"),
                    source=_text(m, "from"),
                    destination=_text(m, "to"),
                    lamports=_integer(m, "lamports"),
                )
                for m in value["lamport_movements"]
            ),
        )
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed receipt payload: {exc}") from None


def _text(value: Mapping[str, Any], name: str) -> str:
    found = value[name]
    if not isinstance(found, str):
        raise TypeError(f"{name} must be a string")
    return found


def _integer(value: Mapping[str, Any], name: str) -> int:
    found = _text(value, name)
    if not found.isdigit():
        raise TypeError(f"{name} must be a decimal string")
    return int(found)


def signature_valid(*, payload: str, signature: bytes, public_key: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``payload`` (its ASCII bytes,
    as issued) by ``public_key``."""
    if len(signature) != SIGNATURE_BYTES or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    try:
        data = payload.encode("ascii")
    except UnicodeEncodeError:
        return False  # a canonical payload is ASCII: this one was altered
    return Signature.from_bytes(signature).verify(Pubkey.from_bytes(public_key), data)


@dataclass(frozen=True, kw_only=True)
class Change:
    """One thing that differs between two builds of the same intent."""

    field: str
    """What changed: a fee (``fees.priority_fee_lamports``), the signers, the lamport
    movements, ``wallet_balance_lamports``, ..."""
    previous: str
    current: str

    @property
    def description(self) -> str:
        return f"{self.field}: {self.previous or '(none)'} -> {self.current or '(none)'}"


def _movement_text(movement: LamportMovement) -> str:
    return (
        f"{movement.program}.{movement.type} {movement.lamports} lamports "
        f"{movement.source} -> {movement.destination}"
    )


def changes_between(
    previous: ReceiptPayload,
    current: ReceiptPayload,
    *,
    previous_wallet_balance: int | None = None,
    current_wallet_balance: int | None = None,
) -> tuple[Change, ...]:
    """What a rebuild changed besides its lifetime (blockhash or nonce value, which
    always changes): fees, signers, format, the accounts and amounts moved, and the
    wallet's balance when both builds know it (from a simulation)."""
    pairs: list[tuple[str, object, object]] = [
        (f"fees.{f.name}", getattr(previous.fees, f.name), getattr(current.fees, f.name))
        for f in fields(ReceiptFees)
    ]
    pairs += [
        (name, ",".join(getattr(previous, name)), ",".join(getattr(current, name)))
        for name in ("required_signers", "writable_accounts")
    ]
    pairs += [
        (name, getattr(previous, name), getattr(current, name))
        for name in ("transaction_version", "nonce_account")
    ]
    pairs.append(
        (
            "lamport_movements",
            "; ".join(_movement_text(m) for m in previous.lamport_movements),
            "; ".join(_movement_text(m) for m in current.lamport_movements),
        )
    )
    if previous_wallet_balance is not None and current_wallet_balance is not None:
        pairs.append(("wallet_balance_lamports", previous_wallet_balance, current_wallet_balance))
    found = [
        Change(field=name, previous=str(before), current=str(after))
        for name, before, after in pairs
        if before != after
    ]
    return tuple(found)
