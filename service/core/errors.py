"""Domain errors raised by the pure core (and reused by chain/ and keys/).

Each error carries what the API layer needs to build a rich `google.rpc.Status`
without this module importing grpc:

- ``kind``: the status class it deserves (an :class:`ErrorKind`, named like
  ``grpc.StatusCode`` members so the mapping is ``StatusCode[kind.value]``);
- ``reason``: a stable UPPER_SNAKE code for ``google.rpc.ErrorInfo.reason``
  (domain :data:`ERROR_DOMAIN`);
- ``metadata``: ``dict[str, str]`` for ``ErrorInfo.metadata``;
- ``violations``: field violations for ``google.rpc.BadRequest`` (set whenever the
  error is about one or more request fields; field paths are the proto field
  names, dotted for nested messages, e.g. ``options.memo``);
- ``hint``: one sentence telling the caller how to fix it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, TypeVar, overload

ERROR_DOMAIN: Final = "agentstaking.v1"

_T = TypeVar("_T")
_F = TypeVar("_F")

_REASON_RE: Final = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")


class ErrorKind(enum.Enum):
    """The gRPC status class of a domain error; values are ``grpc.StatusCode`` names."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ABORTED = "ABORTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True, kw_only=True)
class FieldViolation:
    """One invalid request field (``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str
    reason: str = ""


class DomainError(Exception):
    """Base of every domain error.

    Subclasses set the class defaults ``kind``, ``default_reason`` and
    ``default_hint``; an instance may override reason and hint.
    """

    kind: ClassVar[ErrorKind] = ErrorKind.FAILED_PRECONDITION
    default_reason: ClassVar[str] = "FAILED_PRECONDITION"
    default_hint: ClassVar[str] = ""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str | int] | None = None,
        field: str | None = None,
        hint: str | None = None,
        violations: Iterable[FieldViolation] = (),
    ) -> None:
        """Create the error.

        Args:
            message: Human-readable explanation (safe to show to the caller).
            reason: Overrides the class's UPPER_SNAKE reason.
            metadata: ErrorInfo metadata; integer values are rendered in decimal.
            field: The request field at fault; adds a matching violation.
            hint: Overrides the class's fix-it hint.
            violations: Field violations (for several invalid fields at once).

        Raises:
            ValueError: If ``reason`` is not UPPER_SNAKE (a programming error).
        """
        super().__init__(message)
        self.message: str = message
        self.reason: str = reason if reason is not None else self.default_reason
        if not _REASON_RE.match(self.reason):
            raise ValueError(f"error reason must be UPPER_SNAKE, got {self.reason!r}")
        self.metadata: dict[str, str] = {k: str(v) for k, v in (metadata or {}).items()}
        self.field: str | None = field
        self.hint: str = hint if hint is not None else self.default_hint
        found = tuple(violations)
        if field is not None and not found:
            found = (FieldViolation(field=field, description=message, reason=self.reason),)
        self.violations: tuple[FieldViolation, ...] = found

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


# --- INVALID_ARGUMENT ------------------------------------------------------------------


class InvalidArgumentError(DomainError):
    """A request value is malformed, whatever the state of the chain."""

    kind = ErrorKind.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"
    default_hint = "Fix the field named in the error details and retry."


class FieldViolationsError(InvalidArgumentError):
    """Several request fields are invalid: one INVALID_ARGUMENT listing them all."""

    default_reason = "INVALID_FIELDS"

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        found = tuple(violations)
        if not found:
            raise ValueError("FieldViolationsError needs at least one violation")
        summary = "; ".join(f"{v.field}: {v.description}" for v in found)
        super().__init__(
            f"{len(found)} invalid field(s): {summary}",
            violations=found,
            metadata={"fields": ",".join(v.field for v in found)},
        )


class InvalidAddressError(InvalidArgumentError):
    """A field that must hold a Solana address does not."""

    default_reason = "INVALID_ADDRESS"
    default_hint = "Pass a base58-encoded 32-byte Solana public key."

    def __init__(self, *, field: str, value: str, detail: str = "not a valid address") -> None:
        # Cap the echoed value: it is attacker-controlled and ends up in logs.
        shown = value if len(value) <= 64 else value[:61] + "..."
        super().__init__(
            f"{field} {shown!r} is {detail}",
            field=field,
            metadata={"field": field, "value": shown},
        )


class InvalidAmountError(InvalidArgumentError):
    """A lamport amount is out of range."""

    default_reason = "INVALID_AMOUNT"
    default_hint = "Amounts are integer lamports (1 SOL = 1,000,000,000 lamports)."

    def __init__(self, message: str, *, field: str, value: int, hint: str | None = None) -> None:
        super().__init__(message, field=field, metadata={"field": field, "value": value}, hint=hint)


class BelowMinimumDelegationError(InvalidArgumentError):
    """The stake amount is below the cluster's minimum delegation."""

    default_reason = "BELOW_MINIMUM_DELEGATION"
    default_hint = "Stake at least the minimum delegation (see GetNetworkInfo)."

    def __init__(self, *, requested_lamports: int, minimum_lamports: int) -> None:
        super().__init__(
            f"amount_lamports {requested_lamports} is below the minimum delegation of "
            f"{minimum_lamports} lamports",
            field="amount_lamports",
            metadata={
                "requested_lamports": requested_lamports,
                "minimum_lamports": minimum_lamports,
            },
        )


class SeedTooLongError(InvalidArgumentError):
    """A create-with-seed seed is longer than the runtime allows."""

    default_reason = "SEED_TOO_LONG"
    default_hint = "Seeds are at most 32 bytes; omit the seed to let the service derive one."

    def __init__(self, *, field: str, length: int, maximum: int) -> None:
        super().__init__(
            f"{field} is {length} bytes long; the maximum is {maximum}",
            field=field,
            metadata={"length": length, "maximum": maximum},
        )


class InvalidSeedError(InvalidArgumentError):
    """A seed or idempotency key holds characters we do not accept."""

    default_reason = "INVALID_SEED"
    default_hint = "Seeds are printable ASCII without spaces."


class MemoTooLongError(InvalidArgumentError):
    """The memo does not fit the documented limit."""

    default_reason = "MEMO_TOO_LONG"
    default_hint = "Shorten the memo."

    def __init__(self, *, length: int, maximum: int, field: str = "options.memo") -> None:
        super().__init__(
            f"memo is {length} bytes of UTF-8; the maximum is {maximum}",
            field=field,
            metadata={"length": length, "maximum": maximum},
        )


class TransactionTooLargeError(InvalidArgumentError):
    """The serialized transaction exceeds the packet limit."""

    default_reason = "TRANSACTION_TOO_LARGE"
    default_hint = "Shorten or drop the memo, or use fewer distinct signers."

    def __init__(self, *, size: int, maximum: int) -> None:
        super().__init__(
            f"the transaction is {size} bytes; the network accepts at most {maximum}",
            metadata={"size": size, "maximum": maximum},
        )


class MalformedInstructionError(InvalidArgumentError):
    """Instruction data of a known program cannot be decoded."""

    default_reason = "MALFORMED_INSTRUCTION"
    default_hint = "The transaction was not built by a compatible encoder."


# --- FAILED_PRECONDITION --------------------------------------------------------------


class PriorityFeeTooHighError(InvalidArgumentError):
    """The compute unit price the caller set makes a priority fee over the maximum."""

    default_reason = "PRIORITY_FEE_TOO_HIGH"
    default_hint = (
        "Lower options.compute_unit_price_micro_lamports (or options.compute_unit_limit); "
        "the metadata says the largest price that fits."
    )


class InsufficientFundsError(DomainError):
    """The wallet cannot pay for what the transaction debits."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "INSUFFICIENT_FUNDS"
    default_hint = "Fund the wallet or lower the amount."

    def __init__(self, *, required_lamports: int, available_lamports: int, address: str) -> None:
        super().__init__(
            f"{address} holds {available_lamports} lamports but the transaction debits "
            f"{required_lamports}",
            metadata={
                "required_lamports": required_lamports,
                "available_lamports": available_lamports,
                "shortfall_lamports": required_lamports - available_lamports,
                "address": address,
            },
        )


class InvalidNonceAccountError(DomainError):
    """A durable nonce account is missing, uninitialized or has another authority."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "INVALID_NONCE_ACCOUNT"
    default_hint = "Pass an initialized System nonce account and its current authority."


class InvalidStakeAccountError(DomainError):
    """Account data is not a stake account in the expected state."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "INVALID_STAKE_ACCOUNT"
    default_hint = "Pass the address of a stake account owned by the Stake program."


class LockupInForceError(DomainError):
    """A lockup forbids the withdrawal unless its custodian signs."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "LOCKUP_IN_FORCE"
    default_hint = "Wait until the lockup expires or have the custodian sign."


class InsufficientStakeError(DomainError):
    """The wallet has less stake to deactivate than asked for."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "INSUFFICIENT_STAKE"
    default_hint = "Unstake at most the active and activating stake listed by ListStakeAccounts."


class InsufficientLamportsError(DomainError):
    """A stake account has fewer free lamports (beyond its stake and rent-exempt
    reserve) than an operation asks it to give."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "INSUFFICIENT_FUNDS"
    default_hint = "Ask for at most available_lamports (see nearest_lower_lamports)."


class StakeAccountStateError(DomainError):
    """A stake account is not in the state the operation needs (e.g. already deactivated,
    never delegated)."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "STAKE_ACCOUNT_STATE"
    default_hint = "Check the account's state with ListStakeAccounts."


class NotWithdrawAuthorityError(DomainError):
    """A named stake account does not belong to the wallet (its withdraw authority is
    another key)."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "NOT_WITHDRAW_AUTHORITY"
    default_hint = "Name a stake account whose withdraw authority is the wallet."

    def __init__(self, *, stake_account: str, withdrawer: str, wallet: str, field: str) -> None:
        super().__init__(
            f"stake account {stake_account} has withdraw authority {withdrawer}, not the "
            f"wallet {wallet}",
            field=field,
            metadata={"stake_account": stake_account, "withdrawer": withdrawer, "wallet": wallet},
        )


class WithdrawUnavailableError(DomainError):
    """More lamports asked for than a Withdraw can take now."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "INSUFFICIENT_FUNDS"
    default_hint = (
        "Withdraw at most withdrawable_lamports (see ListStakeAccounts); deactivating stake "
        "becomes withdrawable when its cooldown ends."
    )


class MergeMismatchError(DomainError):
    """Two stake accounts cannot be merged; ``mismatch`` names the differing field:
    ``authorities``, ``lockup``, ``voter``, ``transient_state`` or ``state``."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "MERGE_MISMATCH"
    default_hint = (
        "Merge only accounts with the same authorities, lockup and vote account, none of "
        "them activating or deactivating (wait for the epoch boundary)."
    )
    operation: ClassVar[str] = "merged"
    """What the accounts cannot be, in messages."""

    def __init__(
        self,
        message: str,
        *,
        mismatch: str,
        destination: str,
        source: str,
        metadata: Mapping[str, str | int] | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(
            message,
            field=field,
            metadata={
                "mismatch": mismatch,
                "destination_stake_account": destination,
                "source_stake_account": source,
                **(metadata or {}),
            },
        )
        self.mismatch = mismatch


class MoveMismatchError(MergeMismatchError):
    """MoveStake or MoveLamports cannot move between two stake accounts; ``mismatch``
    names why: ``authorities``, ``lockup``, ``transient_state``, ``voter`` or ``state``."""

    default_reason = "MOVE_MISMATCH"
    default_hint = (
        "Move only between accounts with the same authorities and lockup, neither of them "
        "activating or deactivating: stake from a fully active account to a fully active "
        "one delegated to the same vote account or to an inactive one; lamports from a "
        "fully active or inactive account."
    )
    operation = "moved"


class SameStakeAccountError(InvalidArgumentError):
    """An operation on two stake accounts names the same account twice."""

    default_reason = "SAME_STAKE_ACCOUNT"
    default_hint = "Name two different stake accounts."


class NothingToMergeError(DomainError):
    """No stake account of the wallet can be merged into the destination."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "NO_MERGEABLE_STAKE_ACCOUNTS"
    default_hint = "Name the source accounts to see why each cannot be merged."


# --- others ---------------------------------------------------------------------------


class VoteAccountNotFoundError(DomainError):
    """The vote account does not exist or is not owned by the Vote program."""

    kind = ErrorKind.NOT_FOUND
    default_reason = "VOTE_ACCOUNT_NOT_FOUND"
    default_hint = "Pick a validator from ListValidators."

    def __init__(self, *, vote_account: str, field: str = "vote_account") -> None:
        super().__init__(
            f"vote account {vote_account} was not found",
            field=field,
            metadata={"vote_account": vote_account},
        )


class StakeAccountNotFoundError(DomainError):
    """A named stake account does not exist."""

    kind = ErrorKind.NOT_FOUND
    default_reason = "STAKE_ACCOUNT_NOT_FOUND"
    default_hint = "List the wallet's stake accounts with ListStakeAccounts."

    def __init__(self, *, stake_account: str, field: str) -> None:
        super().__init__(
            f"stake account {stake_account} was not found",
            field=field,
            metadata={"stake_account": stake_account},
        )


class StakeAccountExistsError(DomainError):
    """The seed-derived stake account address is already in use."""

    kind = ErrorKind.ALREADY_EXISTS
    default_reason = "STAKE_ACCOUNT_EXISTS"
    default_hint = (
        "A transaction with this request_id already landed; use a new request_id to stake again."
    )

    def __init__(self, *, stake_account: str, seed: str) -> None:
        super().__init__(
            f"stake account {stake_account} (seed {seed!r}) already exists",
            metadata={"stake_account": stake_account, "seed": seed},
        )


def failed_checks(*checks: Callable[[], object]) -> list[DomainError]:
    """Run every check; the domain errors they raised, so all can be reported at once."""
    errors = FieldErrors()
    for check in checks:
        errors.check(check)
    return errors.found


class ShuttingDownError(DomainError):
    """The server stops before a long call (a watch, a stream) has its answer: the
    caller learns why and calls again, elsewhere or later."""

    kind = ErrorKind.UNAVAILABLE
    default_reason = "SERVER_SHUTTING_DOWN"
    default_hint = "Call again: another replica (or this one, restarted) answers."
    retry_after = 1.0

    def __init__(
        self,
        message: str = "the server is shutting down before this call's answer",
        *,
        metadata: Mapping[str, str | int] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata, hint=hint)


class FieldErrors:
    """The invalid fields of one request, gathered so that the caller learns of all of
    them at once (:func:`combine_violations`): the error itself when there is one,
    ``INVALID_FIELDS`` listing every field when there are several."""

    def __init__(self, found: Iterable[DomainError] = ()) -> None:
        self.found: list[DomainError] = list(found)

    @overload
    def check(self, check: Callable[[], _T]) -> _T | None: ...
    @overload
    def check(self, check: Callable[[], _T], fallback: _F) -> _T | _F: ...
    def check(self, check: Callable[[], _T], fallback: object = None) -> object:
        """``check()``'s value; ``fallback`` when it raised a domain error (kept)."""
        try:
            return check()
        except DomainError as exc:
            self.found.append(exc)
            return fallback

    async def check_async(self, check: Awaitable[_T]) -> _T | None:
        """The awaited value of ``check``; None when it raised a domain error (kept)."""
        try:
            return await check
        except DomainError as exc:
            self.found.append(exc)
            return None

    def add(self, error: DomainError) -> None:
        self.found.append(error)

    def raise_any(self) -> None:
        """Raise what was found, if anything."""
        problem = combine_violations(self.found)
        if problem is not None:
            raise problem


def combine_violations(errors: Iterable[DomainError]) -> DomainError | None:
    """Fold field errors found by one validation pass into the error to raise.

    One error is returned as it is (keeping its specific reason); several become a
    :class:`FieldViolationsError` listing all their violations.
    """
    found = list(errors)
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    return FieldViolationsError(
        v
        for e in found
        for v in (
            e.violations or (FieldViolation(field="", description=e.message, reason=e.reason),)
        )
    )
