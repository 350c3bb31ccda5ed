"""The BuildStakeTransaction plan: create, initialize and delegate a seed-derived
stake account and pay the service fee, in one transaction signed by the wallet.

Instructions, in order::

    [AdvanceNonceAccount]                  durable nonce only; must come first
    SetComputeUnitLimit                    measured default with margin, or the caller's
    [SetComputeUnitPrice]                  when a priority fee is asked for
    CreateAccountWithSeed                  wallet -> create_with_seed(wallet, seed, Stake),
                                           amount + rent-exempt reserve, 200 bytes
    Stake Initialize                       staker = wallet, withdrawer = wallet, lockup
    Stake DelegateStake                    signed by the wallet (the staker for now)
    [Stake Authorize (staker)]             when stake_authority != wallet, hand the stake
                                           role over, signed by the wallet
    [System Transfer]                      service fee, wallet -> fee recipient (bps > 0)
    [Memo]                                 signed by the wallet

Design choice for a separate stake authority: DelegateStake must be signed by the
staker. Initializing with ``staker = stake_authority`` would need that key's
signature too (two signers, or a second transaction). Instead the account is
initialized with the wallet as staker, delegated, and then ``Authorize`` moves the
stake role to ``stake_authority`` in the same transaction. The wallet stays the
only signer, the end state is identical, and the stake authority may even be a
program-derived address that can never sign a transaction. It costs one
instruction (~45 bytes, ~11.7k compute units).
"""

from __future__ import annotations

import enum
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.core._validate import (
    check_lamports,
    check_pubkey,
    check_u64,
    is_signing_key,
    not_signing_key,
)
from service.core.accounts import Lockup
from service.core.encoders import (
    NO_LOCKUP,
    StakeAuthorize,
    stake_authorize,
    stake_delegate,
    stake_initialize,
    system_create_account_with_seed,
    system_transfer,
)
from service.core.errors import (
    BelowMinimumDelegationError,
    InvalidAddressError,
    combine_violations,
    failed_checks,
)
from service.core.fees import ServiceFee
from service.core.plans._template import BLOCKHASH, FieldKind, MessageTemplate, Value, Values
from service.core.plans._transaction import (
    MEASURED_MEMO_CU,
    CompiledTransaction,
    DurableNonce,
    Lifetime,
    PreparedTransaction,
    RecentBlockhash,
    TransactionOptions,
    TransactionVersion,
    check_addresses,
    check_debit_fits,
    check_distinct,
    compile_transaction,
    compute_budget,
    compute_units_with_margin,
    finish_transaction,
)
from service.core.programs import (
    LAMPORTS_PER_SIGNATURE,
    STAKE_ACCOUNT_SIZE,
    STAKE_PROGRAM,
    UNSIGNABLE_KEYS,
)
from service.core.seeds import check_seed, stake_account_address

# Compute units consumed on LiteSVM (solders 0.29.0, core-BPF stake program 5.0),
# measured by tests/core/test_compute_units.py, which also asserts that every
# variant stays under the defaults below.
MEASURED_STAKE_CU: Final = 19_856
"""Nonce advance + limit + price + create + Initialize + DelegateStake + fee transfer."""
MEASURED_AUTHORIZE_CU: Final = 11_683
"""The extra Authorize (stake role) for a separate stake authority."""
DEFAULT_STAKE_COMPUTE_UNIT_LIMIT: Final = compute_units_with_margin(
    MEASURED_STAKE_CU + MEASURED_MEMO_CU
)
DEFAULT_STAKE_WITH_AUTHORIZE_COMPUTE_UNIT_LIMIT: Final = compute_units_with_margin(
    MEASURED_STAKE_CU + MEASURED_AUTHORIZE_CU + MEASURED_MEMO_CU
)


@dataclass(frozen=True, kw_only=True)
class StakeRequest:
    """A BuildStakeTransaction request, as domain values.

    Attributes:
        wallet: Fee payer, withdraw authority and seed base; the only signer.
        vote_account: The validator's vote account.
        amount_lamports: Lamports to delegate (the rent-exempt reserve comes on top).
        seed: The create-with-seed seed (see ``seeds``: from request_id or entropy).
        stake_authority: Who may delegate/deactivate later; default the wallet.
        lockup: Optional withdrawal lockup.
        service_fee: The operator's fee policy for this call.
        options: Version, compute budget, memo.
    """

    wallet: Pubkey
    vote_account: Pubkey
    amount_lamports: int
    seed: str
    stake_authority: Pubkey | None = None
    lockup: Lockup | None = None
    service_fee: ServiceFee = field(default_factory=ServiceFee)
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        errors = failed_checks(
            lambda: check_pubkey(self.wallet, field="wallet"),
            lambda: check_pubkey(self.vote_account, field="vote_account"),
        )
        if not errors and not is_signing_key(self.wallet):
            errors.append(
                InvalidAddressError(
                    field="wallet",
                    value=str(self.wallet),
                    detail=not_signing_key(self.wallet),
                )
            )
        if self.stake_authority in UNSIGNABLE_KEYS:
            errors.append(
                InvalidAddressError(
                    field="stake_authority",
                    value=str(self.stake_authority),
                    detail=f"{not_signing_key(self.stake_authority)}, so no one could "
                    "delegate or deactivate the stake",
                )
            )
        errors += failed_checks(
            lambda: check_lamports(self.amount_lamports, field="amount_lamports", minimum=1),
            lambda: check_seed(self.seed, field="seed"),
        )
        if not errors:
            errors.extend(
                check_distinct(
                    [
                        ("wallet", self.wallet),
                        ("vote_account", self.vote_account),
                        ("fee_recipient", self.service_fee.recipient),
                    ]
                )
            )
        problem = combine_violations(errors)
        if problem is not None:
            raise problem

    @property
    def effective_stake_authority(self) -> Pubkey:
        return self.stake_authority if self.stake_authority is not None else self.wallet


@dataclass(frozen=True, kw_only=True)
class StakeContext:
    """Chain state the stake plan needs (cached by chain/, read per request for the
    nonce and balance).

    Attributes:
        lifetime: Recent blockhash, or the durable nonce read from its account.
        rent_exempt_reserve_lamports: Rent-exempt minimum for 200 bytes.
        minimum_delegation_lamports: The stake program's minimum delegation.
        epoch: Current epoch, reported as the expected activation epoch.
        lamports_per_signature: Base fee per signature.
        wallet_balance_lamports: When known, the build fails early with
            INSUFFICIENT_FUNDS instead of on chain.
    """

    lifetime: Lifetime
    rent_exempt_reserve_lamports: int
    minimum_delegation_lamports: int
    epoch: int | None = None
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None

    def __post_init__(self) -> None:
        check_lamports(self.rent_exempt_reserve_lamports, field="rent_exempt_reserve_lamports")
        check_lamports(self.minimum_delegation_lamports, field="minimum_delegation_lamports")
        check_lamports(self.lamports_per_signature, field="lamports_per_signature")
        if self.epoch is not None:
            check_u64(self.epoch, field="epoch")
        if self.wallet_balance_lamports is not None:
            check_lamports(self.wallet_balance_lamports, field="wallet_balance_lamports")


@dataclass(frozen=True, kw_only=True)
class PreparedStakeTransaction:
    """The stake plan's result: the transaction plus what it creates.

    Attributes:
        prepared: The unsigned transaction, signers, fees and summaries.
        stake_account: The seed-derived stake account address.
        seed: Its seed (base = wallet, owner = Stake program).
        stake_lamports: Lamports delegated (the request's amount).
        stake_authority: The stake account's staker after the transaction.
        withdraw_authority: The stake account's withdrawer (the wallet).
        vote_account: The validator delegated to.
        activation_epoch: The epoch the stake activates in if it lands now (it starts
            earning from the next one); None when the context had no epoch.
    """

    prepared: PreparedTransaction
    stake_account: Pubkey
    seed: str
    stake_lamports: int
    stake_authority: Pubkey
    withdraw_authority: Pubkey
    vote_account: Pubkey
    activation_epoch: int | None


def default_stake_compute_unit_limit(*, separate_stake_authority: bool) -> int:
    """The plan's default compute unit limit (measured, +20%, rounded up)."""
    if separate_stake_authority:
        return DEFAULT_STAKE_WITH_AUTHORIZE_COMPUTE_UNIT_LIMIT
    return DEFAULT_STAKE_COMPUTE_UNIT_LIMIT


def new_stake_account_instructions(
    *,
    wallet: Pubkey,
    seed: str,
    lamports: int,
    vote_account: Pubkey,
    staker: Pubkey,
    lockup: Lockup = NO_LOCKUP,
) -> list[Instruction]:
    """A new stake account at ``create_with_seed(wallet, seed, Stake)``, funded with
    ``lamports`` (stake plus rent-exempt reserve) by the wallet and delegated to
    ``vote_account``, signed by the wallet alone: CreateAccountWithSeed, Initialize
    (the wallet as both authorities), DelegateStake, and an Authorize handing the stake
    role to ``staker`` when it is another key (see the module docstring).
    """
    stake_account = stake_account_address(base=wallet, seed=seed)
    body = [
        system_create_account_with_seed(
            payer=wallet,
            new_account=stake_account,
            base=wallet,
            seed=seed,
            lamports=lamports,
            space=STAKE_ACCOUNT_SIZE,
            owner=STAKE_PROGRAM,
        ),
        stake_initialize(
            stake_account=stake_account, staker=wallet, withdrawer=wallet, lockup=lockup
        ),
        stake_delegate(stake_account=stake_account, vote_account=vote_account, staker=wallet),
    ]
    if staker != wallet:
        body.append(
            stake_authorize(
                stake_account=stake_account,
                authority=wallet,
                new_authority=staker,
                role=StakeAuthorize.STAKER,
            )
        )
    return body


class _NonceSigner(enum.Enum):
    NONE = "none"  # a recent blockhash
    WALLET = "wallet"  # a durable nonce that the wallet advances
    OTHER = "other"  # a durable nonce with its own authority (a second signer)


class _StakeShape(NamedTuple):
    """What fixes a stake transaction's layout (see ``_template``); a tuple, as it is
    looked up on every build."""

    version: TransactionVersion
    nonce: _NonceSigner
    priority_fee: bool
    separate_stake_authority: bool
    service_fee: bool
    memo: bool
    lockup: bool
    """Initialize states a lockup (its summary then names it)."""


_STAKE_FIELDS: Final = {
    "wallet": FieldKind.PUBKEY,
    "stake_account": FieldKind.PUBKEY,
    "vote_account": FieldKind.PUBKEY,
    "fee_recipient": FieldKind.PUBKEY,
    "nonce_account": FieldKind.PUBKEY,
    "nonce_authority": FieldKind.PUBKEY,
    "stake_authority": FieldKind.PUBKEY,
    "lockup_custodian": FieldKind.PUBKEY,
    "lamports": FieldKind.U64,
    "service_fee": FieldKind.U64,
    "compute_unit_price": FieldKind.U64,
    "lockup_epoch": FieldKind.U64,
    "lockup_unix_timestamp": FieldKind.I64,
    "compute_unit_limit": FieldKind.U32,
    "seed": FieldKind.STRING,
    "memo": FieldKind.TEXT,
}


def _compile_stake(shape: _StakeShape, values: Values) -> CompiledTransaction:
    """The general builder: the shape's instructions from ``values``, compiled."""
    v: dict[str, Value] = dict(values)
    wallet = v["wallet"]
    assert isinstance(wallet, Pubkey)
    body = new_stake_account_instructions(
        wallet=wallet,
        seed=v["seed"],  # type: ignore[arg-type]
        lamports=v["lamports"],  # type: ignore[arg-type]
        vote_account=v["vote_account"],  # type: ignore[arg-type]
        staker=v.get("stake_authority", wallet),  # type: ignore[arg-type]
        lockup=Lockup(
            unix_timestamp=v["lockup_unix_timestamp"],  # type: ignore[arg-type]
            epoch=v.get("lockup_epoch", 0),  # type: ignore[arg-type]
            custodian=v["lockup_custodian"],  # type: ignore[arg-type]
        ),
    )
    if shape.service_fee:
        body.append(
            system_transfer(
                source=wallet,
                destination=v["fee_recipient"],  # type: ignore[arg-type]
                lamports=v["service_fee"],  # type: ignore[arg-type]
            )
        )
    blockhash = v[BLOCKHASH]
    assert isinstance(blockhash, Hash)
    lifetime: Lifetime = RecentBlockhash(blockhash=blockhash, last_valid_block_height=0)
    if shape.nonce is not _NonceSigner.NONE:
        lifetime = DurableNonce(
            nonce_account=v["nonce_account"],  # type: ignore[arg-type]
            nonce_authority=v.get("nonce_authority", wallet),  # type: ignore[arg-type]
            nonce=blockhash,
        )
    return compile_transaction(
        payer=wallet,
        body=body,
        version=shape.version,
        lifetime=lifetime,
        limit=v["compute_unit_limit"],  # type: ignore[arg-type]
        price=v.get("compute_unit_price", 0),  # type: ignore[arg-type]
        memo_text=v.get("memo", ""),  # type: ignore[arg-type]
    )


def _shape_fields(shape: _StakeShape) -> set[str]:
    """The values a shape's transaction carries."""
    names = {
        "wallet",
        "stake_account",
        "vote_account",
        "lamports",
        "seed",
        "compute_unit_limit",
        "lockup_unix_timestamp",
        "lockup_custodian",
        BLOCKHASH,
    }
    optional = {
        "fee_recipient": shape.service_fee,
        "service_fee": shape.service_fee,
        "nonce_account": shape.nonce is not _NonceSigner.NONE,
        "nonce_authority": shape.nonce is _NonceSigner.OTHER,
        "stake_authority": shape.separate_stake_authority,
        "compute_unit_price": shape.priority_fee,
        "memo": shape.memo,
        "lockup_epoch": shape.lockup,
    }
    return names | {name for name, present in optional.items() if present}


def _probe(shape: _StakeShape, n: int) -> Values:
    """Probe values for learning a shape's template: every field distinct, numbers with
    a 0 digit (never inside a base58 address), both sets of different lengths."""

    def key(name: str) -> Pubkey:
        # A signing key's address (on the curve), as a wallet or nonce authority must be.
        seed = hashlib.sha256(f"stake template {name} {n}".encode()).digest()
        return Keypair.from_seed(seed).pubkey()

    pad = "0" * n
    lockup_ts = 1_900_000_007 + n if shape.lockup else -1_000_000_007 * n
    values: dict[str, Value] = {
        **{name: key(name) for name, kind in _STAKE_FIELDS.items() if kind is FieldKind.PUBKEY},
        "lamports": 3_000_000_007 * n,
        "service_fee": 7_000_003 * n,
        "compute_unit_price": 50_003 * n,
        "lockup_epoch": 700_001 * n if shape.lockup else 0,
        "lockup_unix_timestamp": lockup_ts,
        "compute_unit_limit": 190_007 * n,
        "seed": f"probe:seed{pad}",
        "memo": f"probe memo {pad}",
        BLOCKHASH: Hash(hashlib.sha256(f"stake template blockhash {n}".encode()).digest()),
    }
    # The builder derives the stake account from the wallet and the seed.
    values["stake_account"] = stake_account_address(
        base=values["wallet"],  # type: ignore[arg-type]
        seed=values["seed"],  # type: ignore[arg-type]
    )
    return {name: values[name] for name in _shape_fields(shape)}


@functools.cache
def _stake_template(shape: _StakeShape) -> MessageTemplate:
    build = functools.partial(_compile_stake, shape)
    return MessageTemplate(build, _STAKE_FIELDS, (_probe(shape, 1), _probe(shape, 2)))


class _StakeParts(NamedTuple):
    """A checked stake request: its shape, the values its message carries, and the
    amounts the plan states."""

    shape: _StakeShape
    values: dict[str, Value]
    stake_account: Pubkey
    staker: Pubkey
    funded: int
    fee: int
    limit: int
    price: int


def _stake_parts(request: StakeRequest, context: StakeContext) -> _StakeParts:
    """Check ``request`` against ``context`` and find what its message carries."""
    wallet = request.wallet
    amount = request.amount_lamports
    if amount < context.minimum_delegation_lamports:
        raise BelowMinimumDelegationError(
            requested_lamports=amount, minimum_lamports=context.minimum_delegation_lamports
        )
    stake_account = stake_account_address(base=wallet, seed=request.seed)
    check_addresses(
        [
            ("wallet", wallet),
            ("stake_account", stake_account),
            ("vote_account", request.vote_account),
            ("fee_recipient", request.service_fee.recipient),
        ],
        context.lifetime,
    )

    rent = context.rent_exempt_reserve_lamports
    funded = amount + rent
    fee = request.service_fee.on(amount)
    check_debit_fits(amount, rent, fee)
    staker = request.effective_stake_authority
    lockup = request.lockup if request.lockup is not None else NO_LOCKUP

    separate = staker != wallet
    recipient = request.service_fee.recipient
    options = request.options
    limit, price = compute_budget(
        options, default_stake_compute_unit_limit(separate_stake_authority=separate)
    )
    lifetime = context.lifetime
    nonce = _NonceSigner.NONE
    values: dict[str, Value] = {
        "wallet": wallet,
        "stake_account": stake_account,
        "vote_account": request.vote_account,
        "lamports": funded,
        "seed": request.seed,
        "compute_unit_limit": limit,
        "lockup_unix_timestamp": lockup.unix_timestamp,
        "lockup_custodian": lockup.custodian,
    }
    if isinstance(lifetime, DurableNonce):
        nonce = _NonceSigner.WALLET
        values["nonce_account"] = lifetime.nonce_account
        values[BLOCKHASH] = lifetime.nonce
        if lifetime.nonce_authority != wallet:
            nonce = _NonceSigner.OTHER
            values["nonce_authority"] = lifetime.nonce_authority
    else:
        values[BLOCKHASH] = lifetime.blockhash
    # ServiceFee guarantees a recipient when bps > 0.
    service_fee = bool(fee and recipient is not None)
    if service_fee:
        values["fee_recipient"] = recipient  # type: ignore[assignment]
        values["service_fee"] = fee
    if separate:
        values["stake_authority"] = staker
    if price:
        values["compute_unit_price"] = price
    if options.memo:
        values["memo"] = options.memo
    if not lockup.is_none:
        values["lockup_epoch"] = lockup.epoch
    shape = _StakeShape(
        version=options.version,
        nonce=nonce,
        priority_fee=bool(price),
        separate_stake_authority=separate,
        service_fee=service_fee,
        memo=bool(options.memo),
        lockup=not lockup.is_none,
    )
    return _StakeParts(
        shape=shape,
        values=values,
        stake_account=stake_account,
        staker=staker,
        funded=funded,
        fee=fee,
        limit=limit,
        price=price,
    )


def check_stake(request: StakeRequest, context: StakeContext) -> CheckedStake:
    """Make every check of the stake plan for ``request`` in ``context``, and find what
    its message carries, without filling it in.

    Raises:
        What ``build_stake_transaction`` raises before it fills the message.
    """
    return CheckedStake(request, context, _stake_parts(request, context))


@dataclass(frozen=True, slots=True)
class CheckedStake:
    """A stake request checked against its context (:func:`check_stake`): built, or
    asked which accounts price it without being built. A build priced from recent
    fees asks first, then builds the same request once it knows the price; when there
    is none, it builds what it asked of, checked once."""

    request: StakeRequest
    context: StakeContext
    _parts: _StakeParts

    def fee_market_accounts(self) -> tuple[Pubkey, ...] | None:
        """``fee_market_accounts`` of the plan :meth:`build` gives, without filling it
        in. (A compute-unit price adds an instruction without accounts: the accounts
        are the same priced or not.) None where the template cannot tell (the accounts
        coincide): build the plan and ask it."""
        parts = self._parts
        return _stake_template(parts.shape).fee_market_accounts(parts.values)

    def build(self, *, template: bool = True) -> PreparedStakeTransaction:
        """The plan (see :func:`build_stake_transaction`).

        Raises:
            TransactionTooLargeError, InsufficientFundsError: As
                ``build_stake_transaction`` does once the request is checked.
        """
        request, context, parts = self.request, self.context, self._parts
        shape, values = parts.shape, parts.values
        compiled = _stake_template(shape).fill(values) if template else None
        if compiled is None:
            compiled = _compile_stake(shape, values)

        wallet = request.wallet
        options = request.options
        prepared = finish_transaction(
            compiled,
            payer=wallet,
            version=options.version,
            lifetime=context.lifetime,
            limit=parts.limit,
            price=parts.price,
            body_debit_lamports=parts.funded + parts.fee,
            service_fee=request.service_fee,
            service_fee_lamports=parts.fee,
            rent_exempt_reserve_lamports=context.rent_exempt_reserve_lamports,
            lamports_per_signature=context.lamports_per_signature,
            payer_balance_lamports=context.wallet_balance_lamports,
        )
        return PreparedStakeTransaction(
            prepared=prepared,
            stake_account=parts.stake_account,
            seed=request.seed,
            stake_lamports=request.amount_lamports,
            stake_authority=parts.staker,
            withdraw_authority=wallet,
            vote_account=request.vote_account,
            activation_epoch=context.epoch,
        )


def build_stake_transaction(
    request: StakeRequest, context: StakeContext, *, template: bool = True
) -> PreparedStakeTransaction:
    """Plan a stake: one unsigned transaction that only the wallet signs
    (plus the nonce authority, when it is another key).

    Deterministic: the same request and context give the same bytes. The message is
    filled into the template of its shape (learnt once per shape from the general
    builder, see ``_template``); ``template=False`` builds it the general way (the
    same bytes and summaries, slower).

    Raises:
        BelowMinimumDelegationError: ``amount_lamports`` below the minimum delegation.
        InvalidAmountError: amount + rent + fees overflow u64.
        InvalidArgumentError / FieldViolationsError: Conflicting addresses (the
            durable nonce account must be a separate account).
        TransactionTooLargeError: Over 1232 bytes (not reachable with the memo limit).
        InsufficientFundsError: ``context.wallet_balance_lamports`` too low.
    """
    return check_stake(request, context).build(template=template)
