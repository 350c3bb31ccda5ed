"""Message templates: a plan's transaction compiled once per shape, filled in per call.

A plan's *shape* is what fixes its message layout (version, which optional
instructions it carries, which keys coincide): for one shape only the values change
(addresses, amounts, seed, memo, blockhash). A :class:`MessageTemplate` is learnt
from the plan's general builder, run on two sets of distinct probe values: which
account sits in which signer/writable class, each instruction's program, accounts
and data layout (literal bytes and fields), and each summary's text with the places
where the values appear. :meth:`MessageTemplate.fill` then writes a call's values
into the bytes and the summaries without building any instruction or message
object, and without decoding what it just wrote.

Within a class, accounts are ordered as Solana's compiler orders them (the payer
first, then by the key's bytes), so the order is computed per call. A call whose
accounts coincide with each other or with the template's fixed accounts has
another layout: ``fill`` returns None and the plan uses its general builder.

The template also tells which accounts price the transaction
(:meth:`MessageTemplate.fee_market_accounts`) from the values alone, without filling
it: a build priced from recent fees reads them first and fills once, priced.

Learning checks itself: the template filled with the second probe set must equal
the general builder's result for it, byte for byte and summary for summary, and so
must the accounts that price it.
"""

from __future__ import annotations

import bisect
import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from solders.hash import Hash
from solders.message import Message, MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey

from service.core import _bincode as bc
from service.core._format import format_amount
from service.core.plans._transaction import CompiledTransaction, fee_market_accounts
from service.core.summaries import WELL_KNOWN_ACCOUNTS, AccountSummary, InstructionSummary

Value: TypeAlias = Pubkey | int | str | Hash
Values: TypeAlias = Mapping[str, Value]

BLOCKHASH: Final = "blockhash"
"""The value every template needs: the recent blockhash (or durable nonce value)."""


class FieldKind(enum.Enum):
    """How a field's value is written into instruction data."""

    PUBKEY = "pubkey"  # 32 bytes
    U32 = "u32"
    U64 = "u64"
    I64 = "i64"
    STRING = "string"  # bincode String: u64 length, UTF-8
    TEXT = "text"  # UTF-8, the rest of the data (a memo)


_ENCODERS: Final[Mapping[FieldKind, Callable[[Value], bytes]]] = {
    FieldKind.PUBKEY: lambda v: bytes(v),  # type: ignore[arg-type]
    FieldKind.U32: lambda v: bc.u32(v),  # type: ignore[arg-type]
    FieldKind.U64: lambda v: bc.u64(v),  # type: ignore[arg-type]
    FieldKind.I64: lambda v: bc.i64(v),  # type: ignore[arg-type]
    FieldKind.STRING: lambda v: bc.rust_string(v),  # type: ignore[arg-type]
    FieldKind.TEXT: lambda v: v.encode(),  # type: ignore[union-attr]
}


def _grouped(value: Value) -> str:
    return f"{value:,}"


# How the summaries print a field's value, longest first where one contains another
# (``format_amount`` contains the grouped number).
_RENDERINGS: Final[Mapping[FieldKind, tuple[Callable[[Value], str], ...]]] = {
    FieldKind.PUBKEY: (str,),
    FieldKind.U32: (_grouped, str),
    FieldKind.U64: (format_amount, _grouped, str),  # type: ignore[dict-item]
    FieldKind.I64: (_grouped, str),
    FieldKind.STRING: (repr, str),
    FieldKind.TEXT: (repr, str),
}


class TemplateError(ValueError):
    """A plan's general builder does not fit a template for the probes given (a
    programming error: the probes are not distinct, or a value changes the layout)."""


def _compact(n: int) -> bytes:
    """Solana's compact-u16 (shortvec) length."""
    if n < 0x80:
        return _SHORT[n]
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SHORT: Final = tuple(bytes((n,)) for n in range(0x80))

# A slot names an account: a field (str) or a fixed key.
_Slot: TypeAlias = str | Pubkey
# Instruction data: literal bytes, or a field written by its kind.
_Segment: TypeAlias = bytes | str
# An account of a summary: fixed, or (field, role, signer, writable).
_AccountPart: TypeAlias = AccountSummary | tuple[str, str, bool, bool]
# A summary parameter: (name, _FIXED, value), (name, _FIELD, the field whose value it
# is) or (name, _SHOWN, index of the call's rendering: a key as text).
_ParamPart: TypeAlias = tuple[str, int, Value]
_FIXED, _FIELD, _SHOWN = 0, 1, 2
_Rendering: TypeAlias = tuple[str, Callable[[Value], str]]


@dataclass(frozen=True)
class _Instruction:
    program: _Slot
    accounts: tuple[_Slot, ...]
    data: tuple[_Segment, ...]
    # The summary.
    program_name: str
    program_id: Pubkey
    type: str
    description: str  # str.format text over the call's renderings
    summary_accounts: tuple[_AccountPart, ...]
    params: tuple[_ParamPart, ...]


@dataclass(frozen=True)
class _Layout:
    """The parts of a message that follow from its account order."""

    keys: list[bytes]
    """The account keys' bytes, the fields' left empty (filled per call)."""
    key_fields: tuple[tuple[int, str], ...]
    signers: tuple[_Slot, ...]
    heads: tuple[bytes, ...]
    """Per instruction: program index, account count and indices."""


class _Class:
    """One signer/writable class of accounts: its fixed keys, sorted, and its fields."""

    def __init__(self, slots: Sequence[_Slot], skip: str) -> None:
        fixed = sorted((bytes(slot), slot) for slot in slots if isinstance(slot, Pubkey))
        self.fixed_bytes = [raw for raw, _ in fixed]
        self.fixed: tuple[Pubkey, ...] = tuple(key for _, key in fixed)
        self.fields = tuple(slot for slot in slots if isinstance(slot, str) and slot != skip)


class MessageTemplate:
    """One shape of a plan's transaction; see the module docstring.

    Args:
        build: The plan's general builder for this shape, from values.
        fields: Every field the values may carry, with how data holds it (the
            blockhash apart: it is always :data:`BLOCKHASH`).
        probes: Two value sets, every field differing between them (a field equal in
            both is fixed for the shape) and no two fields equal within one.

    Raises:
        TemplateError: The builder's results do not fit one template.
    """

    def __init__(
        self,
        build: Callable[[Values], CompiledTransaction],
        fields: Mapping[str, FieldKind],
        probes: tuple[Values, Values],
    ) -> None:
        first, second = probes
        self._fields = {
            name: kind for name, kind in fields.items() if first.get(name) != second.get(name)
        }
        compiled = build(first)
        message = from_bytes_versioned(compiled.message)
        if not isinstance(message, Message | MessageV0):
            raise TemplateError("the builder's message is neither legacy nor v0")
        self._v0 = isinstance(message, MessageV0)
        if self._v0 and bytes(compiled.message)[-1:] != b"\x00":
            raise TemplateError("a v0 message with address lookup tables")
        if message.recent_blockhash != first[BLOCKHASH]:
            raise TemplateError("the message's blockhash is not the blockhash value")
        keyed = {
            first[name]: name for name, kind in self._fields.items() if kind is FieldKind.PUBKEY
        }
        keys: list[_Slot] = [keyed.get(key, key) for key in message.account_keys]
        payer = keys[0]
        if not isinstance(payer, str):
            raise TemplateError("the payer is not a field")
        header = message.header
        signed, n = header.num_required_signatures, len(keys)
        bounds = (
            0,
            signed - header.num_readonly_signed_accounts,
            signed,
            n - header.num_readonly_unsigned_accounts,
            n,
        )
        # Signer-writable (payer first), signer-readonly, writable, readonly.
        self._classes = tuple(_Class(keys[bounds[i] : bounds[i + 1]], payer) for i in range(4))
        self._payer = payer
        self._prefix = b"\x80" if self._v0 else b""
        self._start = (
            self._prefix
            + bytes(
                (signed, header.num_readonly_signed_accounts, header.num_readonly_unsigned_accounts)
            )
            + _compact(n)
        )
        self._signers = signed
        self._key_fields = tuple(slot for slot in keys if isinstance(slot, str))
        self._avoid = frozenset(
            {slot for slot in keys if isinstance(slot, Pubkey)} | set(WELL_KNOWN_ACCOUNTS)
        )
        self._renderings: list[_Rendering] = []
        self._instructions = tuple(
            self._learn(keys, ci.program_id_index, bytes(ci.accounts), bytes(ci.data), s, first)
            for ci, s in zip(message.instructions, compiled.instructions, strict=True)
        )
        self._n_instructions = _compact(len(self._instructions))
        self._suffix = b"\x00" if self._v0 else b""
        self._flatten()
        # Per class with fields: its fields and its fixed keys' bytes, sorted.
        self._sorted = tuple((c.fields, c.fixed_bytes) for c in self._classes if c.fields)
        self._layouts: dict[tuple[tuple[str, int], ...], _Layout] = {}
        self._fee_market: tuple[_Slot, ...] = tuple(
            keyed.get(key, key) for key in fee_market_accounts(compiled)
        )
        expected = build(second)
        if self.fill(second) != expected:
            raise TemplateError(
                "filled with the second probes, the template differs from the builder"
            )
        if self.fee_market_accounts(second) != fee_market_accounts(expected):
            raise TemplateError(
                "with the second probes, the template's fee market accounts differ from "
                "the builder's"
            )

    # --- learning -----------------------------------------------------------------------

    def _learn(
        self,
        keys: Sequence[_Slot],
        program_index: int,
        account_indices: bytes,
        data: bytes,
        summary: InstructionSummary,
        probe: Values,
    ) -> _Instruction:
        if summary.data != data:
            raise TemplateError("a summary's data is not its instruction's data")
        accounts = tuple(keys[i] for i in account_indices)
        summary_accounts: list[_AccountPart] = []
        for slot, account in zip(accounts, summary.accounts, strict=True):
            if isinstance(slot, str):
                summary_accounts.append(
                    (slot, account.role, account.is_signer, account.is_writable)
                )
            else:
                summary_accounts.append(account)
        return _Instruction(
            program=keys[program_index],
            accounts=accounts,
            data=self._data_template(data, probe),
            program_name=summary.program,
            program_id=summary.program_id,
            type=summary.type,
            description=self._text_template(summary.description, probe),
            summary_accounts=tuple(summary_accounts),
            params=tuple(self._param(name, value, probe) for name, value in summary.params),
        )

    def _data_template(self, data: bytes, probe: Values) -> tuple[_Segment, ...]:
        encoded = {
            _ENCODERS[kind](probe[name]): name
            for name, kind in self._fields.items()
            if name in probe
        }
        encoded.pop(b"", None)
        if not encoded:
            return (data,)
        pattern = re.compile(
            b"|".join(re.escape(raw) for raw in sorted(encoded, key=len, reverse=True))
        )
        segments: list[_Segment] = []
        position = 0
        for match in pattern.finditer(data):
            if match.start() > position:
                segments.append(data[position : match.start()])
            segments.append(encoded[match.group()])
            position = match.end()
        if position < len(data):
            segments.append(data[position:])
        return tuple(segments)

    def _rendering(self, rendering: _Rendering) -> int:
        """The index of a rendering among those every call makes (added when new)."""
        if rendering not in self._renderings:
            self._renderings.append(rendering)
        return self._renderings.index(rendering)

    def _text_template(self, text: str, probe: Values) -> str:
        shown: dict[str, _Rendering] = {}
        for name, kind in self._fields.items():
            if name in probe:
                for render in _RENDERINGS[kind]:
                    shown.setdefault(render(probe[name]), (name, render))
        shown.pop("", None)
        if not shown:
            return text.replace("{", "{{").replace("}", "}}")
        pattern = re.compile("|".join(re.escape(t) for t in sorted(shown, key=len, reverse=True)))
        parts: list[str] = []
        position = 0
        for match in pattern.finditer(text):
            parts.append(text[position : match.start()].replace("{", "{{").replace("}", "}}"))
            parts.append(f"{{{self._rendering(shown[match.group()])}}}")
            position = match.end()
        parts.append(text[position:].replace("{", "{{").replace("}", "}}"))
        return "".join(parts)

    def _param(self, name: str, value: Value, probe: Values) -> _ParamPart:
        for field, kind in self._fields.items():
            if field not in probe:
                continue
            if kind is FieldKind.PUBKEY and value == str(probe[field]):
                return (name, _SHOWN, self._rendering((field, str)))
            if kind is not FieldKind.PUBKEY and value == probe[field]:
                return (name, _FIELD, field)
        return (name, _FIXED, value)

    def _flatten(self) -> None:
        """Every instruction's data, summary accounts and parameters as one list each:
        the fixed parts in place, the fields' positions apart (filled per call), and
        each instruction's span."""
        data: list[bytes] = []
        data_fields: list[tuple[int, str, Callable[[Value], bytes]]] = []
        accounts: list[AccountSummary | None] = []
        account_fields: list[tuple[int, str, str, bool, bool]] = []
        params: list[tuple[str, int | str] | None] = []
        param_fields: list[tuple[int, str, int, Value]] = []
        spans: list[tuple[int, int, int, int, int, int]] = []
        for ix in self._instructions:
            start = (len(data), len(accounts), len(params))
            for segment in ix.data:
                if isinstance(segment, str):
                    data_fields.append((len(data), segment, _ENCODERS[self._fields[segment]]))
                    data.append(b"")
                else:
                    data.append(segment)
            for part in ix.summary_accounts:
                if isinstance(part, AccountSummary):
                    accounts.append(part)
                else:
                    account_fields.append((len(accounts), *part))
                    accounts.append(None)
            for name, how, value in ix.params:
                if how == _FIXED:
                    assert isinstance(value, int | str)
                    params.append((name, value))
                else:
                    param_fields.append((len(params), name, how, value))
                    params.append(None)
            spans.append((start[0], len(data), start[1], len(accounts), start[2], len(params)))
        self._data_parts, self._data_fields = data, tuple(data_fields)
        self._account_parts, self._account_fields = accounts, tuple(account_fields)
        self._param_parts, self._param_fields = params, tuple(param_fields)
        self._spans = tuple(spans)

    def _layout(self, places: tuple[tuple[str, int], ...]) -> _Layout:
        """The account order and instruction heads when each field (in the order of
        its class's keys) goes at its place among its class's fixed keys."""
        where = dict(places)
        keys: list[_Slot] = [self._payer]
        for cls in self._classes:
            merged: list[_Slot] = list(cls.fixed)
            # Last first, so that each goes before the ones after it.
            for slot in reversed([slot for slot, _ in places if slot in cls.fields]):
                merged.insert(where[slot], slot)
            keys.extend(merged)
        index = {slot: i for i, slot in enumerate(keys)}
        heads = tuple(
            bytes((index[ix.program],))
            + _compact(len(ix.accounts))
            + bytes(index[slot] for slot in ix.accounts)
            for ix in self._instructions
        )
        layout = _Layout(
            keys=[b"" if isinstance(slot, str) else bytes(slot) for slot in keys],
            key_fields=tuple((i, slot) for i, slot in enumerate(keys) if isinstance(slot, str)),
            signers=tuple(keys[: self._signers]),
            heads=heads,
        )
        self._layouts[places] = layout
        return layout

    # --- filling ------------------------------------------------------------------------

    def _coincide(self, values: Values) -> bool:
        """Whether the accounts of ``values`` coincide with each other or with the
        template's fixed accounts (another layout, which the template does not hold)."""
        keys = [values[name] for name in self._key_fields]
        distinct = set(keys)
        return len(distinct) != len(keys) or not self._avoid.isdisjoint(distinct)

    def fee_market_accounts(self, values: Values) -> tuple[Pubkey, ...] | None:
        """``fee_market_accounts`` of what :meth:`fill` gives for ``values``, without
        filling; None where ``fill`` gives None."""
        if self._coincide(values):
            return None
        return tuple(
            [slot if isinstance(slot, Pubkey) else values[slot] for slot in self._fee_market]  # type: ignore[misc]
        )

    def fill(self, values: Values) -> CompiledTransaction | None:
        """The transaction and its summaries for ``values`` (every field of the shape
        present); None when its accounts coincide (another layout)."""
        if self._coincide(values):
            return None
        # Solana's order: the payer, then each class sorted by the keys' bytes.
        raw = {slot: bytes(values[slot]) for slot in self._key_fields}  # type: ignore[arg-type]
        places: list[tuple[str, int]] = []
        for fields, fixed in self._sorted:
            ordered = sorted(fields, key=raw.__getitem__) if len(fields) > 1 else fields
            places.extend((slot, bisect.bisect(fixed, raw[slot])) for slot in ordered)
        signature = tuple(places)
        layout = self._layouts.get(signature) or self._layout(signature)

        shown = [render(values[name]) for name, render in self._renderings]
        data = self._data_parts.copy()
        for i, name, encode in self._data_fields:
            data[i] = encode(values[name])
        accounts = self._account_parts.copy()
        for i, name, role, signer, writable in self._account_fields:
            accounts[i] = AccountSummary(
                address=values[name],  # type: ignore[arg-type]
                role=role,
                is_signer=signer,
                is_writable=writable,
            )
        params = self._param_parts.copy()
        for i, name, how, value in self._param_fields:
            params[i] = (name, values[value] if how == _FIELD else shown[value])  # type: ignore[assignment,index]
        message_keys = layout.keys.copy()
        for i, slot in layout.key_fields:
            message_keys[i] = raw[slot]

        compiled: list[bytes] = []
        summaries: list[InstructionSummary] = []
        for ix, head, (d0, d1, a0, a1, p0, p1) in zip(
            self._instructions, layout.heads, self._spans, strict=True
        ):
            ix_data = b"".join(data[d0:d1])
            compiled.append(head + _compact(len(ix_data)) + ix_data)
            summaries.append(
                InstructionSummary(
                    program=ix.program_name,
                    program_id=ix.program_id,
                    type=ix.type,
                    description=ix.description.format(*shown),
                    accounts=tuple(accounts[a0:a1]),  # type: ignore[arg-type]
                    params=tuple(params[p0:p1]),  # type: ignore[arg-type]
                    data=ix_data,
                )
            )
        message = b"".join(
            [
                self._start,
                *message_keys,
                bytes(values[BLOCKHASH]),  # type: ignore[arg-type]
                self._n_instructions,
                *compiled,
                self._suffix,
            ]
        )
        signers = self._signers
        return CompiledTransaction(
            transaction=_compact(signers) + bytes(64 * signers) + message,
            message=message,
            required_signers=tuple(
                [slot if isinstance(slot, Pubkey) else values[slot] for slot in layout.signers]  # type: ignore[misc]
            ),
            instructions=tuple(summaries),
        )
