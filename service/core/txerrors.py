"""Solana transaction errors, decoded for humans and machines (pure, no I/O).

A node reports a failed transaction as the JSON form of its ``TransactionError``
(``"BlockhashNotFound"``, ``{"InstructionError": [2, {"Custom": 1}]}``,
``{"InsufficientFundsForRent": {"account_index": 3}}``...). `decode_transaction_error`
turns it into a `DecodedTransactionError`: the variant, the failing instruction and
its program, the program-specific error name where the program is known (System,
Stake), the logs, and one sentence saying what happened and how to fix it.

The program error tables follow the programs' published error enums
(``solana_system_interface::error::SystemError`` and the stake program's
``StakeError`` in solana-program/stake ``interface/src/error.rs``); the wording
here is ours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from solders.message import Message, MessageV0

from service.core.errors import DomainError, ErrorKind, MalformedInstructionError
from service.core.programs import PROGRAM_NAMES, STAKE_PROGRAM, SYSTEM_PROGRAM
from service.core.summaries import summarize_message

# Longest log text put into error metadata: gRPC trailers are small (8 KiB by
# default), and a failure's explanation is at the end of its logs.
MAX_METADATA_LOG_CHARS: Final = 2000


@dataclass(frozen=True, kw_only=True)
class ProgramError:
    """One variant of a program's custom error enum."""

    name: str
    text: str
    hint: str = ""


def _table(*entries: tuple[str, str] | tuple[str, str, str]) -> Mapping[int, ProgramError]:
    return {
        code: ProgramError(name=e[0], text=e[1], hint=e[2] if len(e) > 2 else "")
        for code, e in enumerate(entries)
    }


# Custom codes of the System program, in enum order (code = position).
SYSTEM_ERRORS: Final = _table(
    ("AccountAlreadyInUse", "an account with this address already exists"),
    (
        "ResultWithNegativeLamports",
        "an account does not hold enough lamports for this operation",
        "fund the paying account or lower the amount",
    ),
    ("InvalidProgramId", "the account cannot be assigned to this program"),
    ("InvalidAccountDataLength", "account data of this length cannot be allocated"),
    ("MaxSeedLengthExceeded", "the seed is longer than 32 bytes"),
    ("AddressWithSeedMismatch", "the address does not match the one derived from the seed"),
    (
        "NonceNoRecentBlockhashes",
        "advancing a nonce needs the RecentBlockhashes sysvar to be populated",
    ),
    (
        "NonceBlockhashNotExpired",
        "the nonce was already advanced in this slot",
        "wait one slot before advancing the nonce again",
    ),
    (
        "NonceUnexpectedBlockhashValue",
        "the durable nonce in the transaction is not the nonce account's current value",
        "read the nonce account again and rebuild the transaction",
    ),
)

# Custom codes of the Stake program (StakeError), in enum order.
STAKE_ERRORS: Final = _table(
    ("NoCreditsToRedeem", "there are no credits to redeem"),
    (
        "LockupInForce",
        "the stake account's lockup has not expired",
        "wait until the lockup expires or have the custodian sign",
    ),
    ("AlreadyDeactivated", "the stake account is already deactivated"),
    ("TooSoonToRedelegate", "only one redelegation is permitted per epoch"),
    (
        "InsufficientStake",
        "the split amount is more than the stake account holds",
        "split a smaller amount",
    ),
    (
        "MergeTransientStake",
        "a stake account that is activating or deactivating cannot be merged",
        "wait for the epoch boundary, then merge",
    ),
    (
        "MergeMismatch",
        "the stake accounts differ in authorities, lockup or state and cannot be merged",
    ),
    ("CustodianMissing", "the lockup custodian's account is not in the instruction"),
    ("CustodianSignatureMissing", "the lockup custodian did not sign"),
    ("InsufficientReferenceVotes", "the reference vote account has not voted enough"),
    ("VoteAddressMismatch", "the stake account is not delegated to this vote account"),
    (
        "MinimumDelinquentEpochsForDeactivationNotMet",
        "the validator has not been delinquent long enough to deactivate its stake",
    ),
    (
        "InsufficientDelegation",
        "the delegation is below the minimum delegation",
        "stake at least the minimum delegation (see GetNetworkInfo)",
    ),
    ("RedelegateTransientOrInactiveStake", "transient or inactive stake cannot be redelegated"),
    ("RedelegateToSameVoteAccount", "stake cannot be redelegated to the same vote account"),
    (
        "RedelegatedStakeMustFullyActivateBeforeDeactivationIsPermitted",
        "redelegated stake must be fully active before it can be deactivated",
    ),
    (
        "EpochRewardsActive",
        "stake accounts are locked while the epoch's rewards are distributed",
        "retry in a few seconds: the distribution lasts a few slots at the start of an epoch",
    ),
)

PROGRAM_ERRORS: Final[Mapping[str, Mapping[int, ProgramError]]] = {
    str(SYSTEM_PROGRAM): SYSTEM_ERRORS,
    str(STAKE_PROGRAM): STAKE_ERRORS,
}

# TransactionError variants (the failure is not inside an instruction).
_TRANSACTION_ERRORS: Final[Mapping[str, tuple[str, str]]] = {
    "AccountInUse": ("an account is locked by another transaction in flight", "retry"),
    "AccountLoadedTwice": ("an account appears twice in the message", ""),
    "AccountNotFound": (
        "the fee payer account does not exist (it holds no SOL)",
        "fund the fee payer",
    ),
    "ProgramAccountNotFound": ("a program the transaction calls does not exist", ""),
    "InsufficientFundsForFee": (
        "the fee payer cannot pay the transaction fee",
        "fund the fee payer",
    ),
    "InvalidAccountForFee": ("the fee payer is not a System-owned account", ""),
    "AlreadyProcessed": ("the transaction has already been processed", ""),
    "BlockhashNotFound": (
        "the blockhash is unknown or expired",
        "build and sign a new transaction with a recent blockhash",
    ),
    "CallChainTooDeep": ("cross-program invocations are nested too deeply", ""),
    "MissingSignatureForFee": ("the fee payer did not sign", "sign with the fee payer"),
    "InvalidAccountIndex": ("an instruction refers to an account the message lacks", ""),
    "SignatureFailure": ("a signature does not verify", "sign the exact message bytes"),
    "InvalidProgramForExecution": ("an account called as a program is not executable", ""),
    "SanitizeFailure": ("the message is malformed", ""),
    "ClusterMaintenance": ("the cluster is in maintenance", "retry later"),
    "WouldExceedMaxBlockCostLimit": ("the block is full", "retry, or pay a priority fee"),
    "WouldExceedMaxAccountCostLimit": (
        "an account is written too much in this block",
        "retry, or pay a priority fee",
    ),
    "WouldExceedAccountDataBlockLimit": ("the block's account data limit is reached", "retry"),
    "TooManyAccountLocks": ("the transaction locks too many accounts", ""),
    "UnsupportedVersion": ("the transaction version is not supported", ""),
    "InvalidWritableAccount": ("a read-only account is marked writable", ""),
    "DuplicateInstruction": ("an instruction appears twice", ""),
    "InsufficientFundsForRent": (
        "an account would be left below its rent-exempt minimum",
        "leave the rent-exempt reserve in the account or close it completely",
    ),
    "MaxLoadedAccountsDataSizeExceeded": ("the accounts loaded exceed the data size limit", ""),
    "UnbalancedTransaction": ("the transaction does not balance lamports", ""),
    "ProgramCacheHitMaxLimit": ("the program cache is full", "retry"),
}

# InstructionError variants (builtin, not program-specific).
_INSTRUCTION_ERRORS: Final[Mapping[str, tuple[str, str]]] = {
    "GenericError": ("the program failed", ""),
    "InvalidArgument": ("an argument is invalid", ""),
    "InvalidInstructionData": ("the instruction data is invalid", ""),
    "InvalidAccountData": ("an account's data is invalid for this instruction", ""),
    "AccountDataTooSmall": ("an account's data is too small", ""),
    "InsufficientFunds": (
        "an account does not hold enough lamports",
        "fund the account or lower the amount",
    ),
    "IncorrectProgramId": ("an account is owned by the wrong program", ""),
    "MissingRequiredSignature": (
        "a required signature is missing",
        "have the authority named in the instruction sign",
    ),
    "AccountAlreadyInitialized": ("the account is already initialized", ""),
    "UninitializedAccount": ("the account is not initialized", ""),
    "NotEnoughAccountKeys": ("the instruction lacks accounts", ""),
    "AccountBorrowFailed": ("an account could not be borrowed", ""),
    "MaxSeedLengthExceeded": ("the seed is longer than 32 bytes", ""),
    "InvalidSeeds": ("the seeds do not derive the address", ""),
    "ComputationalBudgetExceeded": (
        "the compute budget was exhausted",
        "raise the compute unit limit",
    ),
    "ProgramFailedToComplete": (
        "the program did not complete (often: out of compute units)",
        "raise the compute unit limit",
    ),
    "AccountNotRentExempt": ("an account would not be rent exempt", ""),
    "IncorrectAuthority": ("the authority is not the account's authority", ""),
    "ExternalAccountLamportSpend": ("a program spent lamports of an account it does not own", ""),
    "ReadonlyLamportChange": ("a read-only account's lamports changed", ""),
    "ReadonlyDataModified": ("a read-only account's data changed", ""),
    "ExecutableModified": ("an executable account was modified", ""),
    "InvalidAccountOwner": ("an account has the wrong owner", ""),
    "ArithmeticOverflow": ("an amount overflowed", ""),
    "Immutable": ("the account is immutable", ""),
    "BorshIoError": ("the instruction data could not be deserialized", ""),
    "UnsupportedSysvar": ("a sysvar is not supported", ""),
    "InvalidRealloc": ("an account was reallocated beyond the limit", ""),
}


@dataclass(frozen=True, kw_only=True)
class InstructionRef:
    """What the decoder needs to know about one instruction of the message."""

    program_id: str
    program_name: str = "Unknown"
    instruction_type: str = ""


@dataclass(frozen=True, kw_only=True)
class DecodedTransactionError:
    """A Solana TransactionError, decoded (mirrors the ``TransactionError`` message).

    Attributes:
        kind: TransactionError variant, e.g. "InstructionError", "BlockhashNotFound".
        message: One sentence: what failed, why, and the fix when one is known.
        instruction_index: Failing instruction, for "InstructionError".
        program: Program id (base58) of the failing instruction, else "".
        program_name: "System", "Stake", ... or "Unknown"; "" without an instruction.
        instruction_type: Decoded instruction name ("Deactivate"), when known.
        instruction_error: InstructionError variant, e.g. "Custom".
        custom_code: Program-specific code, for instruction_error "Custom".
        program_error: Name of the custom code when the program is known.
        hint: How to fix it, when known ("" otherwise).
        logs: Program logs of the failed execution.
        raw: The error as the node reported it (compact JSON).
    """

    kind: str
    message: str
    instruction_index: int | None = None
    program: str = ""
    program_name: str = ""
    instruction_type: str = ""
    instruction_error: str = ""
    custom_code: int | None = None
    program_error: str = ""
    hint: str = ""
    logs: tuple[str, ...] = ()
    raw: str = ""

    def metadata(self) -> dict[str, str | int]:
        """ErrorInfo metadata: every field that is set, logs trimmed to their tail."""
        found: dict[str, str | int] = {"error_kind": self.kind}
        if self.instruction_index is not None:
            found["instruction_index"] = self.instruction_index
        for key, value in (
            ("program", self.program),
            ("program_name", self.program_name),
            ("instruction_type", self.instruction_type),
            ("instruction_error", self.instruction_error),
            ("program_error", self.program_error),
            ("raw_error", self.raw),
        ):
            if value:
                found[key] = value
        if self.custom_code is not None:
            found["custom_code"] = self.custom_code
        if self.logs:
            found["logs"] = "\n".join(self.logs)[-MAX_METADATA_LOG_CHARS:]
        return found


def instruction_refs(message: Message | MessageV0) -> tuple[InstructionRef, ...]:
    """The program (and, when decodable, the instruction name) of every instruction.

    Never fails: instructions whose data does not decode keep an empty type.
    """
    keys = list(message.account_keys)
    types: list[str] = []
    try:
        types = [summary.type for summary in summarize_message(message)]
    except (MalformedInstructionError, IndexError, ValueError):
        types = []
    refs: list[InstructionRef] = []
    for i, ix in enumerate(message.instructions):
        index = ix.program_id_index
        program = keys[index] if index < len(keys) else None
        ix_type = types[i] if i < len(types) and types[i] != "Unknown" else ""
        refs.append(
            InstructionRef(
                program_id=str(program) if program is not None else "",
                program_name=PROGRAM_NAMES.get(program, "Unknown")
                if program is not None
                else "Unknown",
                instruction_type=ix_type,
            )
        )
    return tuple(refs)


def _variant(value: Any) -> tuple[str, Any]:
    """Serde's JSON enum forms: "Unit", {"Variant": payload}."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, Mapping) and len(value) == 1:
        name, payload = next(iter(value.items()))
        return str(name), payload
    raise ValueError(f"not a Solana error variant: {value!r}")


def _raw(err: Any) -> str:
    try:
        return json.dumps(err, separators=(",", ":"), sort_keys=True)[:300]
    except (TypeError, ValueError):
        return repr(err)[:300]


def _sentence(text: str, hint: str) -> str:
    return f"{text}; {hint}" if hint else text


def decode_transaction_error(
    err: Any,
    *,
    instructions: Sequence[InstructionRef] = (),
    logs: Sequence[str] = (),
) -> DecodedTransactionError:
    """Decode a node's JSON TransactionError.

    Args:
        err: The ``err`` value of a status, a simulation or preflight failure.
        instructions: The message's instructions (see `instruction_refs`), to name the
            failing instruction's program; empty when the message is unknown.
        logs: Program logs of the execution, when the node returned them.

    Unknown variants are kept by name rather than rejected: nodes add new ones.
    """
    raw = _raw(err)
    log_lines = tuple(str(line) for line in logs)
    try:
        kind, payload = _variant(err)
    except ValueError:
        return DecodedTransactionError(
            kind="Unknown", message=f"the transaction failed: {raw}", logs=log_lines, raw=raw
        )
    if kind != "InstructionError":
        text, hint = _TRANSACTION_ERRORS.get(kind, (f"the transaction failed ({kind})", ""))
        if kind == "InsufficientFundsForRent" and isinstance(payload, Mapping):
            text = f"account {payload.get('account_index')} would be left below rent exemption"
        elif kind == "DuplicateInstruction" and isinstance(payload, int):
            text = f"instruction {payload} appears twice"
        return DecodedTransactionError(
            kind=kind, message=_sentence(text, hint), hint=hint, logs=log_lines, raw=raw
        )
    return _decode_instruction_error(payload, instructions, log_lines, raw)


def _decode_instruction_error(
    payload: Any, instructions: Sequence[InstructionRef], logs: tuple[str, ...], raw: str
) -> DecodedTransactionError:
    if not (isinstance(payload, Sequence) and len(payload) == 2 and isinstance(payload[0], int)):
        return DecodedTransactionError(
            kind="InstructionError",
            message=f"an instruction failed: {raw}",
            logs=logs,
            raw=raw,
        )
    index, inner = int(payload[0]), payload[1]
    ref = instructions[index] if 0 <= index < len(instructions) else None
    try:
        variant, detail = _variant(inner)
    except ValueError:
        variant, detail = "Unknown", None
    custom_code: int | None = None
    program_error = ""
    hint = ""
    if variant == "Custom" and isinstance(detail, int):
        custom_code = detail
        known = PROGRAM_ERRORS.get(ref.program_id, {}) if ref is not None else {}
        found = known.get(custom_code)
        if found is not None:
            program_error, text, hint = found.name, found.text, found.hint
        else:
            text = f"custom program error {custom_code:#x}"
    else:
        text, hint = _INSTRUCTION_ERRORS.get(variant, (f"instruction error {variant}", ""))
        if variant == "BorshIoError" and isinstance(detail, str) and detail:
            text = f"{text} ({detail})"
    where = f"instruction {index}"
    if ref is not None:
        label = " ".join(part for part in (ref.program_name, ref.instruction_type) if part)
        where = f"{where} ({label})"
    return DecodedTransactionError(
        kind="InstructionError",
        message=_sentence(f"{where} failed: {text}", hint),
        instruction_index=index,
        program=ref.program_id if ref is not None else "",
        program_name=ref.program_name if ref is not None else "",
        instruction_type=ref.instruction_type if ref is not None else "",
        instruction_error=variant,
        custom_code=custom_code,
        program_error=program_error,
        hint=hint,
        logs=logs,
        raw=raw,
    )


class PreflightFailedError(DomainError):
    """The node's preflight simulation of a submitted transaction failed."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "PREFLIGHT_FAILED"
    default_hint = "Read the decoded error and logs in the metadata; nothing was sent."

    def __init__(self, error: DecodedTransactionError) -> None:
        super().__init__(
            f"preflight simulation failed: {error.message}",
            metadata=error.metadata(),
            hint=error.hint or None,
        )
        self.error = error
