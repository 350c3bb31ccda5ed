"""Instruction decoder: every instruction of a message, explained for a human.

Understands the System, Stake, ComputeBudget and Memo programs (the ones our
transactions use, and what an agent may bring to SubmitTransaction); anything
else is summarised as an unknown instruction rather than rejected. Data that a
known program could not parse either raises :class:`MalformedInstructionError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from solders.instruction import Instruction
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey

from service.core import _bincode as bc
from service.core._format import format_amount, pascal_case
from service.core.encoders import ComputeBudgetTag, StakeAuthorize, StakeInstructionTag
from service.core.errors import MalformedInstructionError
from service.core.programs import (
    ASSOCIATED_TOKEN_PROGRAM,
    COMPUTE_BUDGET_PROGRAM,
    MEMO_PROGRAM,
    PROGRAM_NAMES,
    STAKE_CONFIG,
    STAKE_POOL_PROGRAMS,
    STAKE_PROGRAM,
    SYSTEM_PROGRAM,
    SYSVAR_CLOCK,
    SYSVAR_RECENT_BLOCKHASHES,
    SYSVAR_RENT,
    SYSVAR_STAKE_HISTORY,
    U64_MAX,
    VOTE_PROGRAM,
)
from service.core.stake_pool_instructions import (
    decode_associated_token_instruction,
    decode_stake_pool_instruction,
)

ParamValue: TypeAlias = int | str

WELL_KNOWN_ACCOUNTS: Final = {
    SYSVAR_CLOCK: "Clock sysvar",
    SYSVAR_RENT: "Rent sysvar",
    SYSVAR_STAKE_HISTORY: "StakeHistory sysvar",
    SYSVAR_RECENT_BLOCKHASHES: "RecentBlockhashes sysvar",
    STAKE_CONFIG: "stake config (unused)",
}
"""Accounts named by what they are, whatever the instruction's account list calls them."""


@dataclass(frozen=True, kw_only=True)
class AccountSummary:
    """One account an instruction touches, with the part it plays."""

    address: Pubkey
    role: str
    is_signer: bool
    is_writable: bool


@dataclass(frozen=True, kw_only=True)
class InstructionSummary:
    """A decoded instruction.

    Attributes:
        program: "System", "Stake", "ComputeBudget", "Memo", "Vote" or "Unknown".
        program_id: The program's address.
        type: The instruction variant, e.g. "CreateAccountWithSeed"; "Unknown" when the
            program or variant is not understood.
        description: One human-readable sentence; amounts in SOL and lamports.
        accounts: The accounts in instruction order, with roles.
        params: The decoded arguments (pubkeys as base58, amounts as int lamports).
        data: The instruction's data, as in the transaction.
    """

    program: str
    program_id: Pubkey
    type: str
    description: str
    accounts: tuple[AccountSummary, ...]
    params: tuple[tuple[str, ParamValue], ...] = ()
    data: bytes = b""

    def param(self, name: str) -> ParamValue:
        """The argument called ``name``.

        Raises:
            KeyError: No such argument.
        """
        for key, value in self.params:
            if key == name:
                return value
        raise KeyError(name)


def _owner_name(owner: Pubkey) -> str:
    name = PROGRAM_NAMES.get(owner)
    return f"the {name} program" if name else f"program {owner}"


_Meta: TypeAlias = tuple[Pubkey, bool, bool]
_Decoded: TypeAlias = tuple[str, str, Sequence[str], tuple[tuple[str, ParamValue], ...]]
_Decoder: TypeAlias = Callable[[bc.Reader, Sequence[Pubkey]], _Decoded]


def _acct(keys: Sequence[Pubkey], i: int) -> str:
    return str(keys[i]) if i < len(keys) else "(missing account)"


# --- System -----------------------------------------------------------------------------


def _system(r: bc.Reader, keys: Sequence[Pubkey]) -> _Decoded:
    tag = r.u32()
    if tag == 0:
        lamports, space, owner = r.u64(), r.u64(), r.pubkey()
        return (
            "CreateAccount",
            f"Create account {_acct(keys, 1)} with {space} bytes owned by {_owner_name(owner)}, "
            f"funded with {format_amount(lamports)} by {_acct(keys, 0)}",
            ["funding account", "new account"],
            (("lamports", lamports), ("space", space), ("owner", str(owner))),
        )
    if tag == 1:
        owner = r.pubkey()
        return (
            "Assign",
            f"Assign account {_acct(keys, 0)} to {_owner_name(owner)}",
            ["account"],
            (("owner", str(owner)),),
        )
    if tag == 2:
        lamports = r.u64()
        return (
            "Transfer",
            f"Transfer {format_amount(lamports)} from {_acct(keys, 0)} to {_acct(keys, 1)}",
            ["source", "destination"],
            (("lamports", lamports),),
        )
    if tag == 3:
        base, seed, lamports, space, owner = (
            r.pubkey(),
            r.rust_string(),
            r.u64(),
            r.u64(),
            r.pubkey(),
        )
        return (
            "CreateAccountWithSeed",
            f"Create account {_acct(keys, 1)} (base {base}, seed {seed!r}) with {space} bytes "
            f"owned by {_owner_name(owner)}, funded with {format_amount(lamports)} "
            f"by {_acct(keys, 0)}",
            ["funding account", "new account", "base"],
            (
                ("base", str(base)),
                ("seed", seed),
                ("lamports", lamports),
                ("space", space),
                ("owner", str(owner)),
            ),
        )
    if tag == 4:
        return (
            "AdvanceNonceAccount",
            f"Advance durable nonce account {_acct(keys, 0)} (authority {_acct(keys, 2)}); "
            "this makes the transaction valid until the nonce is used",
            ["nonce account", "RecentBlockhashes sysvar", "nonce authority"],
            (),
        )
    if tag == 5:
        lamports = r.u64()
        return (
            "WithdrawNonceAccount",
            f"Withdraw {format_amount(lamports)} from nonce account {_acct(keys, 0)} "
            f"to {_acct(keys, 1)}",
            [
                "nonce account",
                "destination",
                "RecentBlockhashes sysvar",
                "Rent sysvar",
                "nonce authority",
            ],
            (("lamports", lamports),),
        )
    if tag == 6:
        authority = r.pubkey()
        return (
            "InitializeNonceAccount",
            f"Initialize nonce account {_acct(keys, 0)} with authority {authority}",
            ["nonce account", "RecentBlockhashes sysvar", "Rent sysvar"],
            (("authority", str(authority)),),
        )
    if tag == 7:
        new_authority = r.pubkey()
        return (
            "AuthorizeNonceAccount",
            f"Set the authority of nonce account {_acct(keys, 0)} to {new_authority}",
            ["nonce account", "nonce authority"],
            (("new_authority", str(new_authority)),),
        )
    if tag == 8:
        space = r.u64()
        return (
            "Allocate",
            f"Allocate {space} bytes for account {_acct(keys, 0)}",
            ["account"],
            (("space", space),),
        )
    if tag == 9:
        base, seed, space, owner = r.pubkey(), r.rust_string(), r.u64(), r.pubkey()
        return (
            "AllocateWithSeed",
            f"Allocate {space} bytes for account {_acct(keys, 0)} (base {base}, seed {seed!r}) "
            f"and assign it to {_owner_name(owner)}",
            ["account", "base"],
            (("base", str(base)), ("seed", seed), ("space", space), ("owner", str(owner))),
        )
    if tag == 10:
        base, seed, owner = r.pubkey(), r.rust_string(), r.pubkey()
        return (
            "AssignWithSeed",
            f"Assign account {_acct(keys, 0)} (base {base}, seed {seed!r}) to {_owner_name(owner)}",
            ["account", "base"],
            (("base", str(base)), ("seed", seed), ("owner", str(owner))),
        )
    if tag == 11:
        lamports, from_seed, from_owner = r.u64(), r.rust_string(), r.pubkey()
        return (
            "TransferWithSeed",
            f"Transfer {format_amount(lamports)} from {_acct(keys, 0)} (seed {from_seed!r}) "
            f"to {_acct(keys, 2)}",
            ["source", "base", "destination"],
            (("lamports", lamports), ("from_seed", from_seed), ("from_owner", str(from_owner))),
        )
    if tag == 12:
        return (
            "UpgradeNonceAccount",
            f"Upgrade nonce account {_acct(keys, 0)} to the current version",
            ["nonce account"],
            (),
        )
    return _unknown_variant("System", tag)


# --- Stake ------------------------------------------------------------------------------


def _epoch_text(epoch: int) -> str:
    return "none" if epoch == U64_MAX else str(epoch)


def _stake(r: bc.Reader, keys: Sequence[Pubkey]) -> _Decoded:
    tag = r.u32()
    stake = _acct(keys, 0)
    if tag == StakeInstructionTag.INITIALIZE:
        staker, withdrawer = r.pubkey(), r.pubkey()
        ts, epoch, custodian = r.i64(), r.u64(), r.pubkey()
        lockup = (
            "no lockup"
            if ts <= 0 and epoch == 0
            else f"lockup until unix time {ts} and epoch {epoch} (custodian {custodian})"
        )
        return (
            "Initialize",
            f"Initialize stake account {stake}: stake authority {staker}, "
            f"withdraw authority {withdrawer}, {lockup}",
            ["stake account", "Rent sysvar"],
            (
                ("staker", str(staker)),
                ("withdrawer", str(withdrawer)),
                ("lockup_unix_timestamp", ts),
                ("lockup_epoch", epoch),
                ("lockup_custodian", str(custodian)),
            ),
        )
    if tag == StakeInstructionTag.AUTHORIZE:
        new_authority, role_tag = r.pubkey(), r.u32()
        role = _stake_role(role_tag)
        return (
            "Authorize",
            f"Set the {role} authority of stake account {stake} to {new_authority} "
            f"(signed by {_acct(keys, 2)})",
            ["stake account", "Clock sysvar", "current authority", "lockup custodian"],
            (("new_authority", str(new_authority)), ("role", role)),
        )
    if tag == StakeInstructionTag.AUTHORIZE_CHECKED:
        role = _stake_role(r.u32())
        return (
            "AuthorizeChecked",
            f"Set the {role} authority of stake account {stake} to {_acct(keys, 3)} "
            f"(signed by {_acct(keys, 2)} and by the new authority)",
            [
                "stake account",
                "Clock sysvar",
                "current authority",
                "new authority",
                "lockup custodian",
            ],
            (("new_authority", _acct(keys, 3)), ("role", role)),
        )
    if tag in (StakeInstructionTag.SET_LOCKUP, StakeInstructionTag.SET_LOCKUP_CHECKED):
        checked = tag == StakeInstructionTag.SET_LOCKUP_CHECKED
        until_ts = r.i64() if _option(r) else None
        until_epoch = r.u64() if _option(r) else None
        if checked:
            new_custodian = _acct(keys, 2) if len(keys) > 2 else None
        else:
            new_custodian = str(r.pubkey()) if _option(r) else None
        params: list[tuple[str, ParamValue]] = []
        changes = []
        if until_ts is not None:
            params.append(("lockup_unix_timestamp", until_ts))
            changes.append(f"end time unix {until_ts}")
        if until_epoch is not None:
            params.append(("lockup_epoch", until_epoch))
            changes.append(f"end epoch {until_epoch}")
        if new_custodian is not None:
            params.append(("lockup_custodian", new_custodian))
            changes.append(f"custodian {new_custodian}")
        return (
            "SetLockupChecked" if checked else "SetLockup",
            f"Set the lockup of stake account {stake}: {', '.join(changes) or 'no change'} "
            f"(signed by {_acct(keys, 1)})",
            ["stake account", "lockup authority", "new lockup custodian"],
            tuple(params),
        )
    if tag == StakeInstructionTag.DELEGATE_STAKE:
        return (
            "DelegateStake",
            f"Delegate stake account {stake} to vote account {_acct(keys, 1)} "
            f"(signed by stake authority {_acct(keys, 5)}); the stake warms up from the "
            "next epoch",
            [
                "stake account",
                "vote account",
                "Clock sysvar",
                "StakeHistory sysvar",
                "stake config (unused)",
                "stake authority",
            ],
            (),
        )
    if tag == StakeInstructionTag.SPLIT:
        lamports = r.u64()
        return (
            "Split",
            f"Split {format_amount(lamports)} from stake account {stake} into {_acct(keys, 1)}",
            ["stake account", "split destination", "stake authority"],
            (("lamports", lamports),),
        )
    if tag == StakeInstructionTag.WITHDRAW:
        lamports = r.u64()
        return (
            "Withdraw",
            f"Withdraw {format_amount(lamports)} from stake account {stake} to {_acct(keys, 1)}",
            [
                "stake account",
                "destination",
                "Clock sysvar",
                "StakeHistory sysvar",
                "withdraw authority",
                "lockup custodian",
            ],
            (("lamports", lamports),),
        )
    if tag == StakeInstructionTag.DEACTIVATE:
        return (
            "Deactivate",
            f"Deactivate stake account {stake} (signed by stake authority {_acct(keys, 2)}); "
            "it cools down from the next epoch",
            ["stake account", "Clock sysvar", "stake authority"],
            (),
        )
    if tag == StakeInstructionTag.MERGE:
        return (
            "Merge",
            f"Merge stake account {_acct(keys, 1)} into {stake}; {_acct(keys, 1)} is closed",
            [
                "destination stake account",
                "source stake account",
                "Clock sysvar",
                "StakeHistory sysvar",
                "stake authority",
            ],
            (),
        )
    if tag == StakeInstructionTag.GET_MINIMUM_DELEGATION:
        return ("GetMinimumDelegation", "Return the minimum stake delegation", [], ())
    if tag in (StakeInstructionTag.MOVE_STAKE, StakeInstructionTag.MOVE_LAMPORTS):
        lamports = r.u64()
        what = "stake" if tag == StakeInstructionTag.MOVE_STAKE else "inactive lamports"
        return (
            pascal_case(StakeInstructionTag(tag).name),
            f"Move {format_amount(lamports)} of {what} from stake account {stake} "
            f"to {_acct(keys, 1)}",
            ["source stake account", "destination stake account", "stake authority"],
            (("lamports", lamports),),
        )
    try:
        name = pascal_case(StakeInstructionTag(tag).name)
    except ValueError:
        return _unknown_variant("Stake", tag)
    return (name, f"Stake program {name} on {stake}", ["stake account"], ())


def _option(r: bc.Reader) -> bool:
    """A bincode ``Option`` tag: whether a value follows."""
    tag = r.u8()
    if tag > 1:
        raise MalformedInstructionError(f"invalid option tag {tag}")
    return tag == 1


def _stake_role(tag: int) -> str:
    try:
        return StakeAuthorize(tag).name.lower()
    except ValueError:
        raise MalformedInstructionError(f"unknown stake authority type {tag}") from None


# --- ComputeBudget, Memo ------------------------------------------------------------------


def _compute_budget(r: bc.Reader, keys: Sequence[Pubkey]) -> _Decoded:
    tag = r.u8()
    if tag == ComputeBudgetTag.SET_COMPUTE_UNIT_LIMIT:
        units = r.u32()
        return (
            "SetComputeUnitLimit",
            f"Set the compute unit limit to {units:,}",
            [],
            (("units", units),),
        )
    if tag == ComputeBudgetTag.SET_COMPUTE_UNIT_PRICE:
        price = r.u64()
        return (
            "SetComputeUnitPrice",
            f"Set the priority fee to {price:,} micro-lamports per compute unit",
            [],
            (("micro_lamports", price),),
        )
    if tag == ComputeBudgetTag.REQUEST_HEAP_FRAME:
        size = r.u32()
        return ("RequestHeapFrame", f"Request a {size:,}-byte heap", [], (("bytes", size),))
    if tag == ComputeBudgetTag.SET_LOADED_ACCOUNTS_DATA_SIZE_LIMIT:
        size = r.u32()
        return (
            "SetLoadedAccountsDataSizeLimit",
            f"Limit loaded account data to {size:,} bytes",
            [],
            (("bytes", size),),
        )
    return _unknown_variant("ComputeBudget", tag)


def _memo(r: bc.Reader, keys: Sequence[Pubkey]) -> _Decoded:
    raw = r.take(r.remaining())
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise MalformedInstructionError("memo is not valid UTF-8") from None
    signed = f" (signed by {', '.join(map(str, keys))})" if keys else ""
    return ("Memo", f"Memo: {text!r}{signed}", ["signer"] * len(keys), (("memo", text),))


def _unknown_variant(program: str, tag: int) -> _Decoded:
    return ("Unknown", f"{program} program instruction with unknown tag {tag}", [], (("tag", tag),))


_DECODERS: Final[dict[Pubkey, _Decoder]] = {
    SYSTEM_PROGRAM: _system,
    STAKE_PROGRAM: _stake,
    COMPUTE_BUDGET_PROGRAM: _compute_budget,
    MEMO_PROGRAM: _memo,
    ASSOCIATED_TOKEN_PROGRAM: decode_associated_token_instruction,
    **{program: decode_stake_pool_instruction for program in STAKE_POOL_PROGRAMS},
}


def _summarize(program_id: Pubkey, data: bytes, metas: Sequence[_Meta]) -> InstructionSummary:
    keys = [m[0] for m in metas]
    decoder = _DECODERS.get(program_id)
    if decoder is None:
        name = "Vote" if program_id == VOTE_PROGRAM else "Unknown"
        decoded: _Decoded = (
            "Unknown",
            f"Instruction for program {program_id} with {len(data)} bytes of data",
            [],
            (),
        )
    else:
        name = PROGRAM_NAMES[program_id]
        try:
            decoded = decoder(bc.Reader(data), keys)
        except (bc.TruncatedError, UnicodeDecodeError) as exc:
            raise MalformedInstructionError(
                f"{name} instruction data cannot be decoded: {exc}",
                metadata={"program": name, "length": len(data)},
            ) from None
    ix_type, description, roles, params = decoded
    accounts = tuple(
        AccountSummary(
            address=key,
            role=WELL_KNOWN_ACCOUNTS.get(key) or (roles[i] if i < len(roles) else f"account #{i}"),
            is_signer=signer,
            is_writable=writable,
        )
        for i, (key, signer, writable) in enumerate(metas)
    )
    return InstructionSummary(
        program=name,
        program_id=program_id,
        type=ix_type,
        description=description,
        accounts=accounts,
        params=params,
        data=data,
    )


def summarize_instruction(ix: Instruction) -> InstructionSummary:
    """Decode one instruction (as built, before compilation into a message).

    Raises:
        MalformedInstructionError: Data of a known program does not parse.
    """
    metas = [(m.pubkey, m.is_signer, m.is_writable) for m in ix.accounts]
    return _summarize(ix.program_id, bytes(ix.data), metas)


def summarize_message(
    message: Message | MessageV0,
    *,
    loaded_writable: Sequence[Pubkey] = (),
    loaded_readonly: Sequence[Pubkey] = (),
) -> tuple[InstructionSummary, ...]:
    """Decode every instruction of a legacy or v0 message.

    Args:
        message: The message.
        loaded_writable: For v0 messages with address lookup tables, the resolved
            writable addresses, in lookup order.
        loaded_readonly: Likewise, the resolved read-only addresses.

    Raises:
        MalformedInstructionError: An account index is out of range (unresolved
            lookups) or data of a known program does not parse.
    """
    static = list(message.account_keys)
    header = message.header
    n_signed = header.num_required_signatures
    n_static = len(static)

    def writable(i: int) -> bool:
        if i < n_signed:
            return i < n_signed - header.num_readonly_signed_accounts
        if i < n_static:
            return i < n_static - header.num_readonly_unsigned_accounts
        return i < n_static + len(loaded_writable)

    keys = static + list(loaded_writable) + list(loaded_readonly)

    def key(i: int) -> Pubkey:
        if i >= len(keys):
            raise MalformedInstructionError(
                f"account index {i} is beyond the {len(keys)} known accounts "
                "(unresolved address lookup table?)"
            )
        return keys[i]

    out = []
    for ci in message.instructions:
        metas = [(key(i), i < n_signed, writable(i)) for i in bytes(ci.accounts)]
        out.append(_summarize(key(ci.program_id_index), bytes(ci.data), metas))
    return tuple(out)
