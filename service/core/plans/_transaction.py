"""What every plan shares: options, lifetime (blockhash or durable nonce), and the
step that wraps a plan's instructions into an unsigned, explained transaction."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from service.core._validate import (
    check_lamports,
    check_pubkey,
    check_range,
    check_u64,
    is_signing_key,
    not_signing_key,
)
from service.core.accounts import decode_nonce_account
from service.core.encoders import compute_unit_limit, compute_unit_price, memo, system_advance_nonce
from service.core.errors import (
    InsufficientFundsError,
    InvalidAddressError,
    InvalidAmountError,
    InvalidArgumentError,
    InvalidNonceAccountError,
    MemoTooLongError,
    NotWithdrawAuthorityError,
    PriorityFeeTooHighError,
    TransactionTooLargeError,
    combine_violations,
)
from service.core.fees import (
    MICRO_LAMPORTS_PER_LAMPORT,
    FeeBreakdown,
    ServiceFee,
    network_fee_lamports,
    priority_fee_lamports,
)
from service.core.policy import PolicyViolationError
from service.core.positions import FetchedStakeAccount
from service.core.programs import (
    LAMPORTS_PER_SIGNATURE,
    MAX_COMPUTE_UNIT_LIMIT,
    MAX_TRANSACTION_SIZE,
    SYSTEM_PROGRAM,
    U64_MAX,
)
from service.core.summaries import InstructionSummary, summarize_message

# Documented memo limit. Chosen so that the largest stake plan (durable nonce with
# its own authority, a separate stake authority, priority fee, 32-byte seed) still
# fits in 1232 bytes; a test builds that worst case. Longer memos would only turn
# MEMO_TOO_LONG into a less helpful TRANSACTION_TOO_LARGE.
MAX_MEMO_BYTES: Final = 200


# Headroom over measured (or simulated) compute units: +20%, then up to the next
# thousand (readable; the priority fee difference is at most 1,000 units' worth).
COMPUTE_UNIT_MARGIN_PERCENT: Final = 120

# Compute units measured on LiteSVM that every plan shares (tests/core/test_compute_units*.py).
MEASURED_MEMO_CU: Final = 626
"""A memo of MAX_MEMO_BYTES (200) signed by the wallet; the cost follows the byte count."""
MEASURED_BUDGET_CU: Final = 450
"""Nonce advance + SetComputeUnitLimit + SetComputeUnitPrice."""


def compute_units_with_margin(units: int) -> int:
    """A compute unit limit for ``units`` measured: +20%, rounded up to a thousand,
    within the runtime's bounds."""
    padded = -(-units * COMPUTE_UNIT_MARGIN_PERCENT // 100)
    return min(max(-(-padded // 1_000) * 1_000, 1_000), MAX_COMPUTE_UNIT_LIMIT)


class TransactionVersion(enum.Enum):
    """Wire format of the built transaction."""

    LEGACY = "legacy"
    V0 = "v0"  # MessageV0 without address lookup tables


@dataclass(frozen=True, kw_only=True)
class RecentBlockhash:
    """A recent blockhash and the last block height at which it is still valid."""

    blockhash: Hash
    last_valid_block_height: int

    def __post_init__(self) -> None:
        check_u64(self.last_valid_block_height, field="last_valid_block_height")


@dataclass(frozen=True, kw_only=True)
class DurableNonce:
    """A durable nonce in place of a blockhash: the transaction stays valid until the
    nonce is advanced. ``nonce`` is the value stored in the nonce account now."""

    nonce_account: Pubkey
    nonce_authority: Pubkey
    nonce: Hash

    def __post_init__(self) -> None:
        check_pubkey(self.nonce_account, field="options.durable_nonce.nonce_account")
        check_pubkey(self.nonce_authority, field="options.durable_nonce.nonce_authority")
        if not is_signing_key(self.nonce_authority):
            raise InvalidAddressError(
                field="options.durable_nonce.nonce_authority",
                value=str(self.nonce_authority),
                detail=not_signing_key(self.nonce_authority),
            )

    @classmethod
    def from_account(
        cls,
        *,
        nonce_account: Pubkey,
        nonce_authority: Pubkey,
        data: bytes,
        owner: Pubkey | None = None,
    ) -> DurableNonce:
        """The durable nonce stored in a fetched nonce account, checked against the
        authority the caller named.

        Args:
            nonce_account: The account's address.
            nonce_authority: The authority the request says will sign.
            data: The account data.
            owner: The account owner, when known; must be the System program.

        Raises:
            InvalidNonceAccountError: Not an initialized System nonce account, or its
                authority is another key.
        """
        if owner is not None and owner != SYSTEM_PROGRAM:
            raise InvalidNonceAccountError(
                f"nonce account {nonce_account} is owned by {owner}, not the System program",
                field="options.durable_nonce.nonce_account",
                metadata={"nonce_account": str(nonce_account), "owner": str(owner)},
            )
        state = decode_nonce_account(data, address=str(nonce_account))
        if state.authority != nonce_authority:
            raise InvalidNonceAccountError(
                f"nonce account {nonce_account} has authority {state.authority}, "
                f"not {nonce_authority}",
                field="options.durable_nonce.nonce_authority",
                metadata={
                    "nonce_account": str(nonce_account),
                    "authority": str(state.authority),
                },
            )
        return cls(nonce_account=nonce_account, nonce_authority=nonce_authority, nonce=state.nonce)


Lifetime: TypeAlias = RecentBlockhash | DurableNonce


@dataclass(frozen=True, kw_only=True)
class PriorityFeeCap:
    """The most priority fee a transaction may carry, and who set it."""

    lamports: int
    by_policy: bool = False
    """The caller's key policy set it (else the operator's maximum)."""


@dataclass(frozen=True, kw_only=True)
class TransactionOptions:
    """Caller options shared by every build.

    Attributes:
        version: V0 (default) or LEGACY.
        compute_unit_price_micro_lamports: Priority fee per compute unit; 0 adds no
            SetComputeUnitPrice instruction.
        compute_unit_limit: 0 means the plan's measured default (with margin).
        memo: Optional UTF-8 memo (at most :data:`MAX_MEMO_BYTES`); empty means none.
        priority_fee_cap: The most priority fee (price times limit) allowed; None: no cap.
        automatic_price: The price came from recent fees, not from the caller: over the
            cap it is lowered to fit instead of refused.
    """

    version: TransactionVersion = TransactionVersion.V0
    compute_unit_price_micro_lamports: int = 0
    compute_unit_limit: int = 0
    memo: str = ""
    priority_fee_cap: PriorityFeeCap | None = None
    automatic_price: bool = False

    def __post_init__(self) -> None:
        check_u64(
            self.compute_unit_price_micro_lamports,
            field="options.compute_unit_price_micro_lamports",
        )
        check_range(
            self.compute_unit_limit,
            field="options.compute_unit_limit",
            low=0,
            high=MAX_COMPUTE_UNIT_LIMIT,
        )
        check_memo(self.memo)


def check_debit_fits(amount_lamports: int, *more_lamports: int) -> None:
    """Check that the amount asked for, with what the transaction adds to it (rent,
    fees), fits a u64: the caller learns of its own amount, not of a sum it never sent.

    Raises:
        InvalidAmountError: It does not (field ``amount_lamports``).
    """
    if amount_lamports + sum(more_lamports) > U64_MAX:
        raise InvalidAmountError(
            f"amount_lamports plus rent and fees overflows a u64 ({U64_MAX} lamports)",
            field="amount_lamports",
            value=amount_lamports,
        )


def check_memo(memo: str) -> str:
    """Check a memo's size (at most :data:`MAX_MEMO_BYTES` bytes of UTF-8).

    Raises:
        MemoTooLongError: Longer (field ``options.memo``).
    """
    size = len(memo.encode())
    if size > MAX_MEMO_BYTES:
        raise MemoTooLongError(length=size, maximum=MAX_MEMO_BYTES)
    return memo


@dataclass(frozen=True, kw_only=True)
class PreparedTransaction:
    """An unsigned transaction with everything a signer needs to know.

    Attributes:
        transaction: Wire bytes with zeroed signature slots, ready to sign and send.
        message: The exact bytes to sign (for v0, including the version prefix).
        required_signers: Who signs, in signature-slot order; the first pays fees.
        recent_blockhash: The blockhash, or the durable nonce value.
        last_valid_block_height: 0 with a durable nonce.
        version: LEGACY or V0.
        fees: Every lamport the transaction costs the payer, itemised.
        instructions: One summary per instruction, in order.
        compute_unit_limit: The limit the transaction requests.
        compute_unit_price_micro_lamports: Priority fee per compute unit.
        durable_nonce: The nonce used in place of a blockhash, if any.
    """

    transaction: bytes
    message: bytes
    required_signers: tuple[Pubkey, ...]
    recent_blockhash: Hash
    last_valid_block_height: int
    version: TransactionVersion
    fees: FeeBreakdown
    instructions: tuple[InstructionSummary, ...]
    compute_unit_limit: int
    compute_unit_price_micro_lamports: int = 0
    durable_nonce: DurableNonce | None = None


# System instructions that create their second account.
_CREATING: Final = frozenset({"CreateAccount", "CreateAccountWithSeed"})


def fee_market_accounts(
    prepared: PreparedTransaction | CompiledTransaction,
) -> tuple[Pubkey, ...]:
    """The accounts whose recent prioritization fees price ``prepared``: every account
    it write-locks, the fee payer first, but the accounts it creates (a new address has
    no fee history: the creation would fail had anything funded it)."""
    created = {
        ix.accounts[1].address
        for ix in prepared.instructions
        if ix.program == "System" and ix.type in _CREATING and len(ix.accounts) > 1
    }
    found = dict.fromkeys(prepared.required_signers[:1])
    for ix in prepared.instructions:
        for account in ix.accounts:
            if account.is_writable and account.address not in created:
                found[account.address] = None
    return tuple(found)


def check_distinct(
    named: Sequence[tuple[str, Pubkey | None]], *, reason: str = "must differ from"
) -> list[InvalidArgumentError]:
    """Field errors for any two named addresses that coincide (None is skipped)."""
    errors: list[InvalidArgumentError] = []
    seen: dict[Pubkey, str] = {}
    for name, key in named:
        if key is None:
            continue
        if key in seen:
            errors.append(
                InvalidArgumentError(
                    f"{name} {reason} {seen[key]} ({key})",
                    field=name,
                    metadata={"field": name, "conflicts_with": seen[key]},
                )
            )
        else:
            seen[key] = name
    return errors


def capped_unit_price(options: TransactionOptions, limit: int) -> int:
    """The compute-unit price to use with ``limit`` units under the options' cap.

    Raises:
        PriorityFeeTooHighError: A price the caller set costs more than the operator's
            maximum.
        PolicyViolationError: ... or than the caller's key policy allows.
    """
    price = options.compute_unit_price_micro_lamports
    cap = options.priority_fee_cap
    if cap is None or priority_fee_lamports(price, limit) <= cap.lamports:
        return price
    if options.automatic_price:
        # Floor: price * limit / 10^6 rounded up stays within the cap.
        return cap.lamports * MICRO_LAMPORTS_PER_LAMPORT // limit
    fee = priority_fee_lamports(price, limit)
    field = "options.compute_unit_price_micro_lamports"
    metadata = {
        "priority_fee_lamports": fee,
        "max_priority_fee_lamports": cap.lamports,
        "compute_unit_limit": limit,
        "max_compute_unit_price_micro_lamports": cap.lamports * MICRO_LAMPORTS_PER_LAMPORT // limit,
    }
    message = (
        f"a compute unit price of {price} micro-lamports for {limit} units is a priority fee "
        f"of {fee} lamports, over the {{}} of {cap.lamports}"
    )
    if cap.by_policy:
        raise PolicyViolationError(
            message.format("limit of this API key's policy"),
            reason="POLICY_MAX_PRIORITY_FEE_EXCEEDED",
            metadata={"policy": "max_priority_fee_lamports", **metadata},
        )
    raise PriorityFeeTooHighError(
        message.format("service's maximum"), field=field, metadata=metadata
    )


def check_addresses(named: Sequence[tuple[str, Pubkey | None]], lifetime: Lifetime) -> None:
    """Refuse a plan whose named addresses (and durable nonce account) coincide.

    Raises:
        InvalidArgumentError / FieldViolationsError: Naming the fields that collide.
    """
    nonce = lifetime.nonce_account if isinstance(lifetime, DurableNonce) else None
    problem = combine_violations(
        check_distinct([*named, ("options.durable_nonce.nonce_account", nonce)])
    )
    if problem is not None:
        raise problem


def wallet_account(
    account: FetchedStakeAccount, *, named: Pubkey, wallet: Pubkey, field: str
) -> FetchedStakeAccount:
    """The stake account a request names, as read, checked to belong to the wallet.

    Raises:
        NotWithdrawAuthorityError: Its withdraw authority is another key.
        ValueError: The read account is not the one named (a programming error).
    """
    if account.address != named:
        raise ValueError(f"read stake account {account.address}, the request names {named}")
    if account.withdrawer != wallet:
        raise NotWithdrawAuthorityError(
            stake_account=str(account.address),
            withdrawer=str(account.withdrawer),
            wallet=str(wallet),
            field=field,
        )
    return account


@dataclass(frozen=True, kw_only=True)
class CompiledTransaction:
    """A plan's instructions as a message: what its shape and values alone decide.

    Attributes:
        transaction: Wire bytes with zeroed signature slots.
        message: The exact bytes to sign (for v0, including the version prefix).
        required_signers: Who signs, in signature-slot order; the first pays fees.
        instructions: One summary per instruction, in order.
    """

    transaction: bytes
    message: bytes
    required_signers: tuple[Pubkey, ...]
    instructions: tuple[InstructionSummary, ...]


def compute_budget(options: TransactionOptions, default_compute_unit_limit: int) -> tuple[int, int]:
    """The compute unit limit (the caller's, else the plan's default) and the price under
    the options' cap.

    Raises:
        PriorityFeeTooHighError / PolicyViolationError: See :func:`capped_unit_price`.
    """
    limit = options.compute_unit_limit or default_compute_unit_limit
    return limit, capped_unit_price(options, limit)


def compile_transaction(
    *,
    payer: Pubkey,
    body: Sequence[Instruction],
    version: TransactionVersion,
    lifetime: Lifetime,
    limit: int,
    price: int,
    memo_text: str,
) -> CompiledTransaction:
    """Compile ``[AdvanceNonceAccount]`` (must come first) + SetComputeUnitLimit +
    ``[SetComputeUnitPrice]`` + body + ``[Memo signed by the payer]`` into an unsigned
    transaction, and decode its instructions for the summaries."""
    prefix: list[Instruction] = []
    if isinstance(lifetime, DurableNonce):
        prefix.append(
            system_advance_nonce(
                nonce_account=lifetime.nonce_account, nonce_authority=lifetime.nonce_authority
            )
        )
        blockhash = lifetime.nonce
    else:
        blockhash = lifetime.blockhash
    prefix.append(compute_unit_limit(limit))
    if price:
        prefix.append(compute_unit_price(price))
    suffix = [memo(memo_text, signers=[payer])] if memo_text else []
    instructions = [*prefix, *body, *suffix]

    msg: Message | MessageV0
    if version is TransactionVersion.LEGACY:
        msg = Message.new_with_blockhash(instructions, payer, blockhash)
    else:
        msg = MessageV0.try_compile(payer, instructions, [], blockhash)
    n_signers = msg.header.num_required_signatures
    tx = VersionedTransaction.populate(msg, [Signature.default()] * n_signers)
    return CompiledTransaction(
        transaction=bytes(tx),
        message=to_bytes_versioned(msg),
        required_signers=tuple(msg.account_keys[:n_signers]),
        instructions=summarize_message(msg),
    )


def finish_transaction(
    compiled: CompiledTransaction,
    *,
    payer: Pubkey,
    version: TransactionVersion,
    lifetime: Lifetime,
    limit: int,
    price: int,
    body_debit_lamports: int,
    service_fee: ServiceFee,
    service_fee_lamports: int,
    rent_exempt_reserve_lamports: int = 0,
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE,
    payer_balance_lamports: int | None = None,
) -> PreparedTransaction:
    """Check a compiled transaction's size and the payer's balance, and itemise its fees
    (the arguments as in :func:`prepare_transaction`).

    Raises:
        TransactionTooLargeError: Serialized size over 1232 bytes.
        InsufficientFundsError: ``payer_balance_lamports`` below the total debit.
    """
    wire = compiled.transaction
    if len(wire) > MAX_TRANSACTION_SIZE:
        raise TransactionTooLargeError(size=len(wire), maximum=MAX_TRANSACTION_SIZE)
    network = network_fee_lamports(len(compiled.required_signers), lamports_per_signature)
    priority = priority_fee_lamports(price, limit)
    total = body_debit_lamports + network + priority
    check_lamports(total, field="amount_lamports")
    if payer_balance_lamports is not None and payer_balance_lamports < total:
        raise InsufficientFundsError(
            required_lamports=total, available_lamports=payer_balance_lamports, address=str(payer)
        )
    fees = FeeBreakdown(
        service_fee_lamports=service_fee_lamports,
        service_fee_bps=service_fee.bps,
        fee_recipient=service_fee.recipient if service_fee_lamports else None,
        network_fee_lamports=network,
        priority_fee_lamports=priority,
        rent_exempt_reserve_lamports=rent_exempt_reserve_lamports,
        total_debit_lamports=total,
    )
    if isinstance(lifetime, DurableNonce):
        nonce: DurableNonce | None = lifetime
        blockhash, last_valid = lifetime.nonce, 0
    else:
        nonce, blockhash, last_valid = None, lifetime.blockhash, lifetime.last_valid_block_height
    return PreparedTransaction(
        transaction=wire,
        message=compiled.message,
        required_signers=compiled.required_signers,
        recent_blockhash=blockhash,
        last_valid_block_height=last_valid,
        version=version,
        fees=fees,
        instructions=compiled.instructions,
        compute_unit_limit=limit,
        compute_unit_price_micro_lamports=price,
        durable_nonce=nonce,
    )


def prepare_transaction(
    *,
    payer: Pubkey,
    body: Sequence[Instruction],
    options: TransactionOptions,
    lifetime: Lifetime,
    default_compute_unit_limit: int,
    body_debit_lamports: int,
    service_fee: ServiceFee,
    service_fee_lamports: int,
    rent_exempt_reserve_lamports: int = 0,
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE,
    payer_balance_lamports: int | None = None,
) -> PreparedTransaction:
    """Wrap a plan's instructions into an unsigned transaction and explain it.

    Order: ``[AdvanceNonceAccount]`` (must come first) + SetComputeUnitLimit +
    ``[SetComputeUnitPrice]`` + body + ``[Memo signed by the payer]``.

    Args:
        payer: Fee payer; first signer.
        body: The plan's own instructions.
        options: Caller options.
        lifetime: Recent blockhash or durable nonce.
        default_compute_unit_limit: Used when ``options.compute_unit_limit`` is 0.
        body_debit_lamports: What the body moves out of the payer (amount, rent,
            service fee); network and priority fees are added here.
        service_fee: The fee policy applied (for the breakdown).
        service_fee_lamports: The fee the body transfers.
        rent_exempt_reserve_lamports: Rent the body locks in new accounts.
        lamports_per_signature: The cluster's base fee per signature.
        payer_balance_lamports: When known, checked against the total debit.
            NOTE: only the debit is checked; the runtime also refuses to leave the
            payer with a non-zero balance below its rent-exempt minimum.

    Raises:
        TransactionTooLargeError: Serialized size over 1232 bytes.
        InsufficientFundsError: ``payer_balance_lamports`` below the total debit.
    """
    limit, price = compute_budget(options, default_compute_unit_limit)
    compiled = compile_transaction(
        payer=payer,
        body=body,
        version=options.version,
        lifetime=lifetime,
        limit=limit,
        price=price,
        memo_text=options.memo,
    )
    return finish_transaction(
        compiled,
        payer=payer,
        version=options.version,
        lifetime=lifetime,
        limit=limit,
        price=price,
        body_debit_lamports=body_debit_lamports,
        service_fee=service_fee,
        service_fee_lamports=service_fee_lamports,
        rent_exempt_reserve_lamports=rent_exempt_reserve_lamports,
        lamports_per_signature=lamports_per_signature,
        payer_balance_lamports=payer_balance_lamports,
    )
