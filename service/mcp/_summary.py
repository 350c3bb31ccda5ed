"""Short human summaries of tool results, for the model and the person reading along.

Driven by the response's fields, so that a new RPC gets a summary without code here:
a PreparedTransaction is explained (what it does, every lamport it moves, who must
sign, how to sign), a TransactionStatus is one line, lists of stake accounts and
validators are a few lines each, and other scalars are `name: value` (lamports
with their SOL value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agentstaking.v1 import staking_pb2, types_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from service.core import format_amount
from service.mcp._schema import enum_type_of, message_type_of

LIST_LIMIT = 10
"""Items of a repeated field listed in a summary (the structured result has all)."""


def summarize(rpc: str, response: Message) -> str:
    """What `rpc` answered, in a few lines."""
    lines = [f"{rpc} succeeded."]
    lines += _fields(response)
    return "\n".join(lines)


def summarize_stream(rpc: str, messages: list[Message], complete: bool) -> str:
    """A server stream collected into one result: its last message, and whether it ended."""
    ended = "the stream ended" if complete else "the stream is still open (call again to go on)"
    lines = [f"{rpc}: {len(messages)} message(s); {ended}."]
    if messages:
        lines.append("Last:")
        lines += [f"  {line}" for line in _fields(messages[-1])]
    return "\n".join(lines)


def _fields(message: Message) -> list[str]:
    lines: list[str] = []
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.is_repeated:
            lines += _repeated(field, value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            explain = _MESSAGES.get(message_type_of(field).full_name)
            if explain is not None:
                lines += explain(value)
            elif isinstance(value, Timestamp | Duration):
                lines.append(f"{field.name}: {value.ToJsonString()}")
            elif not message_type_of(field).GetOptions().map_entry:
                inner = _scalars(value)
                if inner:
                    lines.append(f"{field.name}: " + "; ".join(inner))
        elif field.is_repeated:
            lines.append(f"{field.name}: " + ", ".join(str(v) for v in value[:LIST_LIMIT]))
        else:
            line = _scalar(field, value)
            if line:
                lines.append(line)
    return lines


def _scalars(message: Message) -> list[str]:
    out = []
    for field, value in message.ListFields():
        if field.is_repeated:
            continue
        line = _scalar(field, value)
        if line:
            out.append(line)
    return out


def _scalar(field: FieldDescriptor, value: Any) -> str:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return ""  # in the structured result, base64
    if field.type == FieldDescriptor.TYPE_ENUM:
        return f"{field.name}: {enum_type_of(field).values_by_number[value].name}"
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if isinstance(value, Timestamp | Duration):
            return f"{field.name}: {value.ToJsonString()}"
        return ""
    if field.name.endswith("_lamports") and isinstance(value, int):
        return f"{field.name}: {format_amount(value)}"
    return f"{field.name}: {value}"


def _repeated(field: FieldDescriptor, items: Iterable[Message]) -> list[str]:
    items = list(items)
    explain = _ITEMS.get(message_type_of(field).full_name)
    if explain is None:
        return [f"{field.name}: {len(items)}"]
    lines = [f"{field.name}: {len(items)}"]
    lines += [f"  {explain(item)}" for item in items[:LIST_LIMIT]]
    if len(items) > LIST_LIMIT:
        lines.append(f"  ... and {len(items) - LIST_LIMIT} more (see the structured result)")
    return lines


def _prepared(prepared: types_pb2.PreparedTransaction) -> list[str]:
    signers = ", ".join(prepared.required_signers)
    version = types_pb2.TransactionVersion.Name(prepared.version).removeprefix(
        "TRANSACTION_VERSION_"
    )
    lines = [
        f"Unsigned {version} transaction ({len(prepared.transaction)} bytes); "
        f"must be signed by: {signers}.",
        "What it does:",
    ]
    for i, instruction in enumerate(prepared.instructions, 1):
        lines.append(
            f"  {i}. {instruction.program_name}.{instruction.type}: {instruction.description}"
        )
    fees = prepared.fees
    lines.append(
        f"Total debit from the wallet: {format_amount(fees.total_debit_lamports)}, of which"
    )
    if fees.service_fee_lamports:
        lines.append(
            f"  service fee {format_amount(fees.service_fee_lamports)} "
            f"({fees.service_fee_bps} bps, to {fees.fee_recipient})"
        )
    if fees.rent_exempt_reserve_lamports:
        lines.append(
            f"  rent-exempt reserve {format_amount(fees.rent_exempt_reserve_lamports)} "
            "(stays in the new account)"
        )
    lines.append(f"  network fee {format_amount(fees.network_fee_lamports)}")
    lines.append(f"  priority fee {format_amount(fees.priority_fee_lamports)}")
    if prepared.HasField("simulation"):
        lines.append(
            f"Simulated: {prepared.simulation.compute_units} compute units, "
            f"{len(prepared.simulation.balance_changes)} balance changes."
        )
    deadline = (
        f"before block height {prepared.last_valid_block_height}"
        if prepared.last_valid_block_height
        else "(durable nonce: no expiry by block height)"
    )
    lines.append(
        "To execute: sign `transaction.message` (base64) locally with each required "
        "signer's key, place the signatures in the transaction's signature slots in "
        "that order, and call submit_transaction with the signed transaction (base64) "
        f"{deadline}. Never send a private key to any tool."
    )
    return lines


def _status(status: types_pb2.TransactionStatus) -> list[str]:
    state = types_pb2.TransactionState.Name(status.state).removeprefix("TRANSACTION_STATE_")
    line = f"Transaction {status.signature}: {state}"
    if status.slot:
        line += f" in slot {status.slot}"
    if status.HasField("error"):
        line += f"; error: {status.error.message}"
    return [line + "."]


def _stake_account(account: staking_pb2.StakeAccount) -> str:
    state = staking_pb2.StakeAccountState.Name(account.state).removeprefix("STAKE_ACCOUNT_STATE_")
    voter = f" to {account.voter}" if account.voter else ""
    return (
        f"{account.address}: {state}{voter}, delegated "
        f"{format_amount(account.delegated_lamports)}, withdrawable "
        f"{format_amount(account.withdrawable_lamports)}"
    )


def _validator(validator: staking_pb2.Validator) -> str:
    flags = " (featured)" if validator.featured else ""
    flags += " (delinquent)" if validator.delinquent else ""
    return (
        f"#{validator.rank} {validator.vote_account}{flags}: commission "
        f"{validator.commission_percent}%, score {validator.score:.3f}"
    )


def _withdrawal(withdrawal: staking_pb2.StakeWithdrawal) -> str:
    closes = " (closes it)" if withdrawal.closes_account else ""
    return f"{format_amount(withdrawal.withdraw_lamports)} from {withdrawal.stake_account}{closes}"


def _split(split: staking_pb2.SplitStakeAccount) -> str:
    return (
        f"new {split.stake_account} (seed {split.seed!r}) with "
        f"{format_amount(split.stake_lamports)} split from {split.source_stake_account}"
    )


_MESSAGES: dict[str, Callable[[Any], list[str]]] = {
    types_pb2.PreparedTransaction.DESCRIPTOR.full_name: _prepared,
    types_pb2.TransactionStatus.DESCRIPTOR.full_name: _status,
}
"""Explanations of single message fields, by message type."""

_ITEMS: dict[str, Callable[[Any], str]] = {
    staking_pb2.StakeAccount.DESCRIPTOR.full_name: _stake_account,
    staking_pb2.Validator.DESCRIPTOR.full_name: _validator,
    staking_pb2.StakeWithdrawal.DESCRIPTOR.full_name: _withdrawal,
    staking_pb2.SplitStakeAccount.DESCRIPTOR.full_name: _split,
}
"""One-line explanations of repeated message items, by message type."""
