"""The async shell around the pure core: build (and optionally simulate) transactions,
list positions and validators.

BuildStakeTransaction reads the cached chain context. Unstake, withdraw, merge and
ListStakeAccounts depend on state that every transaction changes, so they read the
wallet's stake accounts and the Clock and StakeHistory sysvars per request
(``_stake_reads``). Every build turns plain request values into core values, calls the
core plan, prices it from the recent prioritization fees of the accounts it
write-locks when the caller chose a priority level (``_priority_fees``: one read per
set of accounts every few seconds), and talks to Solana again only when the caller
asks for it (durable nonce, simulation).
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from solders.hash import Hash
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.core import errors as core_errors
from service.core._validate import check_lamports, parse_address
from service.core.accounts import Lockup
from service.core.errors import (
    DomainError,
    ErrorKind,
    FieldErrors,
    InsufficientFundsError,
    VoteAccountNotFoundError,
)
from service.core.fees import PRIORITY_PERCENTILES, ServiceFee
from service.core.paging import (
    PageToken,
    decode_page_token,
    fingerprint,
    page_offset,
    page_size,
)
from service.core.plans import (
    MAX_MERGES,
    CheckedStake,
    DurableNonce,
    ManagedNonceMissingError,
    MergeContext,
    MergeRequest,
    PreparedMergeTransaction,
    PreparedStakeTransaction,
    PreparedTransaction,
    PreparedUnstakeTransaction,
    PreparedWithdrawTransaction,
    PriorityFeeCap,
    RecentBlockhash,
    StakeContext,
    StakeRequest,
    TransactionOptions,
    TransactionVersion,
    UnstakeContext,
    UnstakeRequest,
    WithdrawContext,
    WithdrawRequest,
    build_merge_transaction,
    build_unstake_transaction,
    build_withdraw_transaction,
    check_memo,
    check_stake,
    compute_units_with_margin,
    fee_market_accounts,
    managed_nonce_address,
)
from service.core.policy import UNRESTRICTED, CallerPolicy
from service.core.positions import (
    StakeTotals,
    StakeView,
    stake_totals,
    view_stake_account,
)
from service.core.seeds import (
    SeedPurpose,
    check_request_id,
    seed_from_entropy,
    seed_from_request_id,
    stake_account_address,
)
from service.core.txerrors import decode_transaction_error, instruction_refs
from service.core.validators import RankedValidator, filter_validators, rank_validators

from ._context import ChainContext, ChainSnapshot
from ._priority_fees import RecentPriorityFees
from ._rpc import RpcError, SolanaRpc
from ._stake_reads import StakeReader, StakeReads

# RetryInfo delay when the end of the epoch-rewards distribution is not known.
DEFAULT_EPOCH_REWARDS_RETRY_SECONDS = 4.0
# Bounds of the computed delay.
_RETRY_BOUNDS = (1.0, 600.0)


class EpochRewardsActiveError(DomainError):
    """Stake instructions fail while the epoch's rewards are being distributed.

    FAILED_PRECONDITION (the request is fine, the chain is not ready for it) with a
    RetryInfo: the distribution ends after a known number of blocks.
    """

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "EPOCH_REWARDS_ACTIVE"
    default_hint = (
        "Retry after the delay in RetryInfo: rewards are paid over the first blocks of "
        "the epoch, and the stake program refuses stake instructions meanwhile."
    )
    retry_after = DEFAULT_EPOCH_REWARDS_RETRY_SECONDS

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        metadata: Mapping[str, str | int] | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata)
        if retry_after is not None:
            self.retry_after = retry_after


class SimulationFailedError(DomainError):
    """The transaction would fail on chain."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "SIMULATION_FAILED"
    default_hint = "Read the logs in the error metadata; the transaction would fail as built."


@dataclass(frozen=True, kw_only=True)
class FeePolicy:
    """The operator's service fee: basis points of the staked amount, paid to `recipient`."""

    bps: int
    recipient: str


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """Transaction options as plain request values."""

    version: TransactionVersion = TransactionVersion.V0
    compute_unit_price_micro_lamports: int | None = None
    priority_level: str = "medium"
    compute_unit_limit: int = 0
    nonce_account: str = ""
    nonce_authority: str = ""
    simulate: bool = False
    memo: str = ""
    invalid: tuple[DomainError, ...] = ()
    """Fields of the request that could not be converted into these values (an enum
    out of range, say): the build reports them with its own checks."""


@dataclass(frozen=True, kw_only=True)
class StakeParams:
    """A BuildStakeTransaction request as plain values (addresses still base58)."""

    wallet: str
    amount_lamports: int
    vote_account: str = ""
    stake_authority: str = ""
    request_id: str = ""
    lockup: tuple[int, int, str] | None = None
    options: BuildOptions = BuildOptions()


@dataclass(frozen=True, kw_only=True)
class BalanceChange:
    address: str
    pre_lamports: int
    post_lamports: int


@dataclass(frozen=True, kw_only=True)
class Simulation:
    """What the transaction does when executed now, without landing it."""

    compute_units: int
    balance_changes: tuple[BalanceChange, ...]
    logs: tuple[str, ...]
    slot: int


@dataclass(frozen=True, kw_only=True)
class BuiltStake:
    plan: PreparedStakeTransaction
    simulation: Simulation | None
    expected_active_epoch: int


@dataclass(frozen=True, kw_only=True)
class NetworkInfo:
    snapshot: ChainSnapshot
    fee: FeePolicy
    default_vote_account: str


@dataclass(frozen=True, kw_only=True)
class UnstakeParams:
    """A BuildUnstakeTransaction request as plain values (addresses still base58)."""

    wallet: str
    amount_lamports: int = 0
    stake_account: str = ""
    vote_account: str = ""
    request_id: str = ""
    options: BuildOptions = BuildOptions()


@dataclass(frozen=True, kw_only=True)
class WithdrawParams:
    """A BuildWithdrawTransaction request as plain values."""

    wallet: str
    amount_lamports: int = 0
    withdraw_all: bool = False
    stake_account: str = ""
    destination: str = ""
    request_id: str = ""
    options: BuildOptions = BuildOptions()


@dataclass(frozen=True, kw_only=True)
class MergeParams:
    """A BuildMergeTransaction request as plain values."""

    wallet: str
    destination_stake_account: str
    source_stake_accounts: tuple[str, ...] = ()
    request_id: str = ""
    options: BuildOptions = BuildOptions()


@dataclass(frozen=True, kw_only=True)
class BuiltUnstake:
    plan: PreparedUnstakeTransaction
    simulation: Simulation | None
    snapshot: ChainSnapshot


@dataclass(frozen=True, kw_only=True)
class BuiltWithdraw:
    plan: PreparedWithdrawTransaction
    simulation: Simulation | None


@dataclass(frozen=True, kw_only=True)
class BuiltMerge:
    plan: PreparedMergeTransaction
    simulation: Simulation | None


@dataclass(frozen=True, kw_only=True)
class StakePositions:
    """One page of a wallet's stake accounts.

    Attributes:
        accounts: This page, ordered by address.
        total_size: Accounts across all pages.
        totals: Sums across all pages.
        epoch: The epoch the positions are computed at (Clock sysvar).
        snapshot: The cached chain context, for wall-time estimates.
    """

    accounts: tuple[StakeView, ...]
    next_page_token: str
    total_size: int
    totals: StakeTotals
    epoch: int
    snapshot: ChainSnapshot


@dataclass(frozen=True, kw_only=True)
class ValidatorPage:
    """One page of the validator ranking (rank = position among the filtered, 1-based)."""

    validators: tuple[tuple[int, RankedValidator], ...]
    next_page_token: str
    total_size: int


def _collect(*checks: Callable[[], object]) -> list[object]:
    """Run every check; raise all their field violations at once."""
    errors = FieldErrors()
    results = [errors.check(check) for check in checks]
    errors.raise_any()
    return results


Plan = TypeVar("Plan")


class StakingOperations:
    """Builds transactions and answers reads; simulates on request."""

    def __init__(
        self,
        *,
        rpc: SolanaRpc,
        context: ChainContext,
        fee: FeePolicy,
        default_vote_account: str = "",
        featured_vote_accounts: Sequence[str] = (),
        stake_accounts_cache_seconds: float = 3.0,
        entropy: Callable[[int], bytes] = os.urandom,
        rpc_timeout: float = 5.0,
        max_priority_fee_lamports: int = 10_000_000,
        priority_fees_cache_seconds: float = 2.0,
    ) -> None:
        """Create the operations.

        Args:
            default_vote_account: The operator's validator for stakes that name none;
                empty: the top of the ListValidators ranking (allowed by the caller).
            featured_vote_accounts: Validators the operator features (flagged).
            stake_accounts_cache_seconds: How long a wallet's ListStakeAccounts read
                is reused (0: never).
            max_priority_fee_lamports: The operator's cap on the priority fee of any
                built transaction (a key's policy may lower it).
            priority_fees_cache_seconds: How long the recent prioritization fees of
                a set of write-locked accounts are reused (0: asked on every build).
        """
        self._rpc = rpc
        self._context = context
        self._fee = fee
        self._default_vote_account = default_vote_account
        self._featured = frozenset(featured_vote_accounts)
        self._entropy = entropy
        self._timeout = rpc_timeout
        self._max_priority_fee = max_priority_fee_lamports
        self._priority_fees = RecentPriorityFees(
            rpc, cache_seconds=priority_fees_cache_seconds, rpc_timeout=rpc_timeout
        )
        self._reader = StakeReader(
            rpc, timeout=rpc_timeout, cache_seconds=stake_accounts_cache_seconds
        )
        # (vote accounts mapping the ranking was made from, epoch, ranking)
        self._ranking: tuple[Mapping[str, Any], int, tuple[RankedValidator, ...]] | None = None

    def fee_for(self, policy: CallerPolicy) -> FeePolicy:
        """The service fee that applies to a caller: its key's override, else the
        operator's; no recipient when it is 0 (nothing is paid to anyone)."""
        bps = self._fee.bps if policy.service_fee_bps is None else policy.service_fee_bps
        return FeePolicy(bps=bps, recipient=self._fee.recipient if bps else "")

    def network_info(self, policy: CallerPolicy = UNRESTRICTED) -> NetworkInfo:
        return NetworkInfo(
            snapshot=self._context.snapshot(),
            fee=self.fee_for(policy),
            default_vote_account=self.default_vote_account(policy),
        )

    # --- validators -----------------------------------------------------------------

    def ranking(self) -> tuple[RankedValidator, ...]:
        """Every validator ranked for delegation, best first.

        Recomputed when the cached chain context brings new vote accounts (every
        ``context_refresh_seconds`` and at each epoch change), so its age is bounded
        by the context's.
        """
        snapshot = self._context.snapshot()
        cached = self._ranking
        if (
            cached is not None
            and cached[0] is snapshot.vote_accounts
            and cached[1] == snapshot.epoch
        ):
            return cached[2]
        ranked = rank_validators(
            list(snapshot.vote_accounts.values()),
            epoch=snapshot.epoch,
            featured=self._featured,
            yields=snapshot.yield_inputs,
        )
        self._ranking = (snapshot.vote_accounts, snapshot.epoch, ranked)
        return ranked

    def default_vote_account(self, policy: CallerPolicy = UNRESTRICTED) -> str:
        """The configured validator, else the best-ranked one the caller may use."""
        if self._default_vote_account:
            return self._default_vote_account
        allowed = policy.allowed_vote_accounts
        for validator in self.ranking():
            if validator.delinquent:
                break
            if not allowed or validator.vote_account in allowed:
                return validator.vote_account
        return ""

    def list_validators(
        self,
        *,
        page_size_value: int = 0,
        page_token: str = "",
        max_commission_percent: int | None = None,
        include_delinquent: bool = False,
        min_estimated_apy: float | None = None,
    ) -> ValidatorPage:
        """A page of the ranking restricted by the filters.

        Raises:
            InvalidArgumentError: Negative page size, commission above 100, a minimum
                APY that is negative or not a number, or a page token of another
                request.
        """
        errors = FieldErrors()
        size = errors.check(lambda: page_size(page_size_value), 0)
        if max_commission_percent is not None and not 0 <= max_commission_percent <= 100:
            errors.add(
                core_errors.InvalidArgumentError(
                    f"max_commission_percent must be 0..100, got {max_commission_percent}",
                    field="max_commission_percent",
                )
            )
        if min_estimated_apy is not None and not (
            math.isfinite(min_estimated_apy) and min_estimated_apy >= 0
        ):
            errors.add(
                core_errors.InvalidArgumentError(
                    "min_estimated_apy must be a fraction >= 0 (0.07 = 7%), got "
                    f"{min_estimated_apy}",
                    field="min_estimated_apy",
                )
            )
        bound = fingerprint(max_commission_percent, include_delinquent, min_estimated_apy)
        token = errors.check(
            lambda: decode_page_token(page_token, kind="validators", fingerprint=bound)
        )
        errors.raise_any()
        offset = page_offset(token)
        matching = filter_validators(
            self.ranking(),
            max_commission_percent=max_commission_percent,
            include_delinquent=include_delinquent,
            min_estimated_apy=min_estimated_apy,
        )
        page = matching[offset : offset + size]
        end = offset + len(page)
        next_token = ""
        if end < len(matching):
            next_token = PageToken(kind="validators", fingerprint=bound, position=str(end)).encode()
        return ValidatorPage(
            validators=tuple((offset + i + 1, v) for i, v in enumerate(page)),
            next_page_token=next_token,
            total_size=len(matching),
        )

    # --- positions ------------------------------------------------------------------

    async def list_stake_accounts(
        self,
        *,
        wallet: str,
        page_size_value: int = 0,
        page_token: str = "",
        policy: CallerPolicy = UNRESTRICTED,
    ) -> StakePositions:
        """A page of the wallet's stake accounts (withdraw authority = wallet).

        Raises:
            InvalidArgumentError: Bad wallet, page size or page token.
            PolicyViolationError: The caller may not act for this wallet.
        """
        errors = FieldErrors()
        size = errors.check(lambda: page_size(page_size_value), 0)
        owner = errors.check(lambda: parse_address(wallet, field="wallet"))
        bound = fingerprint(owner)
        # A token is bound to its wallet: without one, there is nothing to hold it to.
        token = (
            errors.check(
                lambda: decode_page_token(page_token, kind="stake_accounts", fingerprint=bound)
            )
            if owner is not None
            else None
        )
        errors.raise_any()
        assert owner is not None
        policy.check(wallet=str(owner), amount_lamports=0, vote_account=None)
        epoch, views, snapshot = await self._wallet_views(owner, fresh=False)
        after = token.position if token is not None else ""
        remaining = [v for v in views if str(v.address) > after] if after else list(views)
        page = remaining[:size]
        next_token = ""
        if len(remaining) > size:
            next_token = PageToken(
                kind="stake_accounts", fingerprint=bound, position=str(page[-1].address)
            ).encode()
        return StakePositions(
            accounts=tuple(page),
            next_page_token=next_token,
            total_size=len(views),
            totals=stake_totals(views),
            epoch=epoch,
            snapshot=snapshot,
        )

    async def wallet_views(self, wallet: Pubkey) -> tuple[int, tuple[StakeView, ...]]:
        """The wallet's stake accounts as ListStakeAccounts classifies them, read now
        (not from the per-wallet cache), with the epoch of the read.

        Raises:
            ChainUnavailable, StakeReadError: The chain did not answer.
        """
        epoch, views, _ = await self._wallet_views(wallet, fresh=True)
        return epoch, views

    async def _wallet_views(
        self, wallet: Pubkey, *, fresh: bool
    ) -> tuple[int, tuple[StakeView, ...], ChainSnapshot]:
        snapshot = self._context.snapshot()
        if fresh:
            reads = await self._reader.read(wallet, wallet_accounts=True)
        else:
            reads = await self._reader.cached_wallet_read(wallet)
        return reads.sysvars.clock.epoch, self._views(wallet, reads, snapshot), snapshot

    def _views(
        self, wallet: Pubkey, reads: StakeReads, snapshot: ChainSnapshot
    ) -> tuple[StakeView, ...]:
        clock = reads.sysvars.clock
        return tuple(
            view_stake_account(
                account,
                wallet=wallet,
                epoch=clock.epoch,
                unix_timestamp=clock.unix_timestamp,
                history=reads.sysvars.history,
                rent_exempt_reserve=snapshot.stake_rent_exempt_reserve,
            )
            for account in sorted(reads.accounts, key=lambda a: str(a.address))
        )

    # --- builds ---------------------------------------------------------------------

    async def build_stake(
        self, params: StakeParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltStake:
        """Plan a stake transaction; simulate it when asked.

        Raises:
            DomainError: invalid fields (all reported together), unknown vote account,
                the request_id's stake account exists already, below the minimum
                delegation, insufficient funds (simulation), chain unavailable, epoch
                rewards being distributed.
        """
        snapshot = self._context.snapshot()
        _check_rewards(snapshot)
        options = params.options
        vote_text = params.vote_account or self.default_vote_account(policy)
        wallet, vote_account, stake_authority, custodian, nonce_account, nonce_authority, *_ = (
            _collect(
                lambda: parse_address(params.wallet, field="wallet", require_on_curve=True),
                lambda: _required_vote(vote_text),
                lambda: _optional(params.stake_authority, "stake_authority"),
                lambda: _optional(params.lockup[2] if params.lockup else "", "lockup.custodian"),
                *_request_checks(options, params.request_id),
                lambda: check_lamports(params.amount_lamports, field="amount_lamports", minimum=1),
            )
        )
        assert isinstance(wallet, Pubkey) and isinstance(vote_account, Pubkey)
        policy.check(
            wallet=str(wallet),
            amount_lamports=params.amount_lamports,
            vote_account=str(vote_account),
        )
        fee = self.fee_for(policy)
        if str(vote_account) not in snapshot.vote_accounts:
            raise VoteAccountNotFoundError(vote_account=str(vote_account))
        seed = self._seed(SeedPurpose.STAKE, wallet, params.request_id)
        # A seed from entropy names a fresh address; one from a request_id may name an
        # account that a build of the same wallet and request_id already landed (with
        # another API key, whose intents this one does not see).
        if params.request_id:
            address = stake_account_address(base=wallet, seed=seed)
            if await self._account_exists(address):
                raise core_errors.StakeAccountExistsError(stake_account=str(address), seed=seed)
        lockup = None
        if params.lockup is not None:
            lockup = Lockup(
                unix_timestamp=params.lockup[0],
                epoch=params.lockup[1],
                custodian=custodian if isinstance(custodian, Pubkey) else Pubkey.default(),
            )
        lifetime = await self._lifetime(
            snapshot,
            nonce_account if isinstance(nonce_account, Pubkey) else None,
            nonce_authority if isinstance(nonce_authority, Pubkey) else wallet,
        )
        service_fee = ServiceFee(
            bps=fee.bps,
            recipient=Pubkey.from_string(fee.recipient) if fee.recipient else None,
        )
        context = StakeContext(
            lifetime=lifetime,
            rent_exempt_reserve_lamports=snapshot.stake_rent_exempt_reserve,
            minimum_delegation_lamports=snapshot.minimum_delegation,
            epoch=snapshot.epoch,
        )

        def request(tx_options: TransactionOptions) -> StakeRequest:
            return StakeRequest(
                wallet=wallet,
                vote_account=vote_account,
                amount_lamports=params.amount_lamports,
                seed=seed,
                stake_authority=stake_authority if isinstance(stake_authority, Pubkey) else None,
                lockup=lockup,
                service_fee=service_fee,
                options=tx_options,
            )

        checks: list[CheckedStake] = []

        def checked(tx_options: TransactionOptions) -> CheckedStake:
            # Asked for the accounts that price it, then built with the same options
            # unless a price came of them: checked once for both.
            if not checks or checks[-1].request.options is not tx_options:
                checks.append(check_stake(request(tx_options), context))
            return checks[-1]

        plan, simulation = await self._prepare(
            lambda tx_options: checked(tx_options).build(),
            lambda p: p.prepared,
            self._tx_options(options, policy),
            options,
            accounts=lambda tx_options: checked(tx_options).fee_market_accounts(),
        )
        return BuiltStake(
            plan=plan, simulation=simulation, expected_active_epoch=snapshot.epoch + 1
        )

    async def build_unstake(
        self, params: UnstakeParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltUnstake:
        """Plan a deactivation (splitting when the amount falls inside an account).

        Raises:
            DomainError: invalid fields, unknown or foreign stake account, insufficient
                stake, no split keeping the minimum delegation (with the nearest amounts
                that work), epoch rewards being distributed, insufficient funds.
        """
        snapshot = self._context.snapshot()
        _check_rewards(snapshot)
        options = params.options
        wallet, stake_account, vote_filter, nonce_account, nonce_authority, *_ = _collect(
            lambda: parse_address(params.wallet, field="wallet", require_on_curve=True),
            lambda: _optional(params.stake_account, "stake_account"),
            lambda: _optional(params.vote_account, "vote_account"),
            *_request_checks(options, params.request_id),
            lambda: _check_amount(params.amount_lamports, required=not params.stake_account),
        )
        assert isinstance(wallet, Pubkey)
        policy.check(wallet=str(wallet), amount_lamports=params.amount_lamports, vote_account=None)
        seed = self._seed(SeedPurpose.SPLIT, wallet, params.request_id)
        split_address = stake_account_address(base=wallet, seed=seed)
        named = [(stake_account, "stake_account")] if isinstance(stake_account, Pubkey) else []
        reads, lifetime = await asyncio.gather(
            self._reader.read(
                wallet, named=named, wallet_accounts=not named, extra=[split_address]
            ),
            self._lifetime(
                snapshot,
                nonce_account if isinstance(nonce_account, Pubkey) else None,
                nonce_authority if isinstance(nonce_authority, Pubkey) else wallet,
            ),
        )
        self._check_reads(reads, snapshot)
        context = UnstakeContext(
            lifetime=lifetime,
            accounts=reads.accounts,
            epoch=reads.sysvars.clock.epoch,
            history=reads.sysvars.history,
            rent_exempt_reserve_lamports=snapshot.stake_rent_exempt_reserve,
            minimum_delegation_lamports=snapshot.minimum_delegation,
            wallet_balance_lamports=reads.balances.get(wallet) or 0,
        )

        def build(tx_options: TransactionOptions) -> PreparedUnstakeTransaction:
            request = UnstakeRequest(
                wallet=wallet,
                amount_lamports=params.amount_lamports,
                split_seed=seed,
                stake_account=stake_account if isinstance(stake_account, Pubkey) else None,
                vote_account=vote_filter if isinstance(vote_filter, Pubkey) else None,
                options=tx_options,
            )
            return build_unstake_transaction(request, context)

        plan = build(self._tx_options(options, policy))
        if plan.splits and reads.balances.get(split_address) is not None:
            raise core_errors.StakeAccountExistsError(stake_account=str(split_address), seed=seed)
        policy.check(
            wallet=str(wallet), amount_lamports=plan.deactivate_lamports, vote_account=None
        )
        plan, simulation = await self._prepare(
            build,
            lambda p: p.prepared,
            self._tx_options(options, policy),
            options,
            first=plan,
        )
        return BuiltUnstake(plan=plan, simulation=simulation, snapshot=snapshot)

    async def build_withdraw(
        self, params: WithdrawParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltWithdraw:
        """Plan a withdrawal of what the stake program lets the wallet take now.

        Raises:
            DomainError: invalid fields, unknown or foreign stake account, lockup in
                force (LOCKUP_IN_FORCE), less withdrawable than asked
                (INSUFFICIENT_FUNDS), epoch rewards being distributed.
        """
        snapshot = self._context.snapshot()
        _check_rewards(snapshot)
        options = params.options
        wallet, stake_account, destination, nonce_account, nonce_authority, *_ = _collect(
            lambda: parse_address(params.wallet, field="wallet", require_on_curve=True),
            lambda: _optional(params.stake_account, "stake_account"),
            lambda: _optional(params.destination, "destination"),
            *_request_checks(options, params.request_id),
        )
        assert isinstance(wallet, Pubkey)
        policy.check(wallet=str(wallet), amount_lamports=params.amount_lamports, vote_account=None)
        named = [(stake_account, "stake_account")] if isinstance(stake_account, Pubkey) else []
        reads, lifetime = await asyncio.gather(
            self._reader.read(wallet, named=named, wallet_accounts=True),
            self._lifetime(
                snapshot,
                nonce_account if isinstance(nonce_account, Pubkey) else None,
                nonce_authority if isinstance(nonce_authority, Pubkey) else wallet,
            ),
        )
        self._check_reads(reads, snapshot)
        context = WithdrawContext(
            lifetime=lifetime,
            accounts=self._views(wallet, reads, snapshot),
            wallet_balance_lamports=reads.balances.get(wallet) or 0,
        )

        def build(tx_options: TransactionOptions) -> PreparedWithdrawTransaction:
            request = WithdrawRequest(
                wallet=wallet,
                amount_lamports=params.amount_lamports,
                withdraw_all=params.withdraw_all,
                stake_account=stake_account if isinstance(stake_account, Pubkey) else None,
                destination=destination if isinstance(destination, Pubkey) else None,
                options=tx_options,
            )
            return build_withdraw_transaction(request, context)

        plan = build(self._tx_options(options, policy))
        policy.check(wallet=str(wallet), amount_lamports=plan.withdraw_lamports, vote_account=None)
        plan, simulation = await self._prepare(
            build,
            lambda p: p.prepared,
            self._tx_options(options, policy),
            options,
            first=plan,
        )
        return BuiltWithdraw(plan=plan, simulation=simulation)

    async def build_merge(
        self, params: MergeParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltMerge:
        """Plan a merge of the wallet's stake accounts into one.

        Raises:
            DomainError: invalid fields, unknown or foreign stake account, accounts
                that cannot be merged (MERGE_MISMATCH naming the field), epoch rewards
                being distributed.
        """
        snapshot = self._context.snapshot()
        _check_rewards(snapshot)
        options = params.options
        checks: list[Callable[[], object]] = [
            lambda: parse_address(params.wallet, field="wallet", require_on_curve=True),
            lambda: parse_address(
                params.destination_stake_account, field="destination_stake_account"
            ),
            *_request_checks(options, params.request_id),
        ]
        sources_given = params.source_stake_accounts
        if len(sources_given) > MAX_MERGES:
            # One violation for the list, not one per entry: a megabyte of entries
            # would otherwise cost seconds of the serving loop.
            checks.append(lambda: _too_many_sources(len(sources_given)))
        else:
            checks += [_source_check(i, text) for i, text in enumerate(sources_given)]
        wallet, destination, nonce_account, nonce_authority, _, _, _, *sources = _collect(*checks)
        assert isinstance(wallet, Pubkey) and isinstance(destination, Pubkey)
        source_keys = tuple(s for s in sources if isinstance(s, Pubkey))
        request_template = MergeRequest(wallet=wallet, destination=destination, sources=source_keys)
        policy.check(wallet=str(wallet), amount_lamports=0, vote_account=None)
        named = [(destination, "destination_stake_account")]
        named += [(s, "source_stake_accounts") for s in source_keys]
        reads, lifetime = await asyncio.gather(
            self._reader.read(wallet, named=named, wallet_accounts=not source_keys),
            self._lifetime(
                snapshot,
                nonce_account if isinstance(nonce_account, Pubkey) else None,
                nonce_authority if isinstance(nonce_authority, Pubkey) else wallet,
            ),
        )
        self._check_reads(reads, snapshot)
        clock = reads.sysvars.clock
        context = MergeContext(
            lifetime=lifetime,
            accounts=reads.accounts,
            epoch=clock.epoch,
            unix_timestamp=clock.unix_timestamp,
            history=reads.sysvars.history,
            wallet_balance_lamports=reads.balances.get(wallet) or 0,
        )

        def build(tx_options: TransactionOptions) -> PreparedMergeTransaction:
            return build_merge_transaction(replace(request_template, options=tx_options), context)

        plan, simulation = await self._prepare(
            build, lambda p: p.prepared, self._tx_options(options, policy), options
        )
        return BuiltMerge(plan=plan, simulation=simulation)

    # --- shared steps ---------------------------------------------------------------

    def _seed(self, purpose: SeedPurpose, wallet: Pubkey, request_id: str) -> str:
        if request_id:
            return seed_from_request_id(purpose=purpose, wallet=wallet, request_id=request_id)
        return seed_from_entropy(purpose=purpose, wallet=wallet, entropy=self._entropy(16))

    def _check_reads(self, reads: StakeReads, snapshot: ChainSnapshot) -> None:
        """EPOCH_REWARDS_ACTIVE when the sysvar read just now says so, with the delay
        until the distribution's last block."""
        rewards = reads.sysvars.epoch_rewards
        if not rewards.active:
            return
        blocks = rewards.end_block_height - snapshot.estimated_block_height(time.monotonic())
        low, high = _RETRY_BOUNDS
        raise EpochRewardsActiveError(
            f"epoch {reads.sysvars.clock.epoch} rewards are being distributed (until block "
            f"height {rewards.end_block_height}); the stake program refuses stake "
            "instructions meanwhile",
            retry_after=min(max(blocks * snapshot.slot_seconds, low), high),
            metadata={
                "epoch": reads.sysvars.clock.epoch,
                "distribution_end_block_height": rewards.end_block_height,
            },
        )

    def _tx_options(self, options: BuildOptions, policy: CallerPolicy) -> TransactionOptions:
        cap = PriorityFeeCap(lamports=self._max_priority_fee)
        if 0 < policy.max_priority_fee_lamports < cap.lamports:
            cap = PriorityFeeCap(lamports=policy.max_priority_fee_lamports, by_policy=True)
        return TransactionOptions(
            version=options.version,
            # An automatic price is set by ``_prepare``, once the accounts are known.
            compute_unit_price_micro_lamports=options.compute_unit_price_micro_lamports or 0,
            compute_unit_limit=options.compute_unit_limit,
            memo=options.memo,
            priority_fee_cap=cap,
            automatic_price=options.compute_unit_price_micro_lamports is None,
        )

    async def _prepare(
        self,
        build: Callable[[TransactionOptions], Plan],
        prepared_of: Callable[[Plan], PreparedTransaction],
        tx_options: TransactionOptions,
        options: BuildOptions,
        *,
        first: Plan | None = None,
        accounts: Callable[[TransactionOptions], Sequence[Pubkey] | None] | None = None,
    ) -> tuple[Plan, Simulation | None]:
        """Build; price it from recent fees when the caller chose a priority level;
        when asked, simulate, size the compute unit limit from the simulation (unless
        the caller set one) and simulate the final transaction again, so that the
        receipt describes exactly the bytes returned.

        ``accounts``, for a plan that can tell them without being built, gives the
        accounts that price it (``fee_market_accounts`` of the plan ``build`` would
        give; None: build it and ask), after every check ``build`` makes before it
        builds: a priced plan is then built once.
        """
        plan = first
        percentile = PRIORITY_PERCENTILES.get(options.priority_level)
        if options.compute_unit_price_micro_lamports is None and percentile is not None:
            # The price adds an instruction without accounts: the accounts of the
            # unpriced plan are those of the priced one.
            known = accounts(tx_options) if plan is None and accounts is not None else None
            if known is None:
                plan = plan if plan is not None else build(tx_options)
                known = fee_market_accounts(prepared_of(plan))
            price = await self._priority_fees.price(known, percentile)
            if price:
                tx_options = replace(tx_options, compute_unit_price_micro_lamports=price)
                plan = build(tx_options)
        if plan is None:
            plan = build(tx_options)
        if not options.simulate:
            return plan, None
        simulation = await self.simulate(prepared_of(plan))
        limit = prepared_of(plan).compute_unit_limit
        if options.compute_unit_limit == 0 and simulation.compute_units:
            sized = compute_units_with_margin(simulation.compute_units)
            if sized < limit:
                plan = build(replace(tx_options, compute_unit_limit=sized))
                simulation = await self.simulate(prepared_of(plan))
        return plan, simulation

    async def _account_exists(self, address: Pubkey) -> bool:
        answer = await self._rpc.call(
            "getAccountInfo",
            [
                str(address),
                {
                    "encoding": "base64",
                    "commitment": "confirmed",
                    "dataSlice": {"offset": 0, "length": 0},
                },
            ],
            timeout=self._timeout,
        )
        return isinstance(answer, dict) and answer.get("value") is not None

    async def _lifetime(
        self, snapshot: ChainSnapshot, nonce_account: Pubkey | None, nonce_authority: Pubkey
    ) -> RecentBlockhash | DurableNonce:
        if nonce_account is None:
            return RecentBlockhash(
                blockhash=Hash.from_string(snapshot.blockhash),
                last_valid_block_height=snapshot.last_valid_block_height,
            )
        # A per-request read on the build path, only for durable nonces.
        answer = await self._rpc.call(
            "getAccountInfo",
            [str(nonce_account), {"encoding": "base64", "commitment": "confirmed"}],
            timeout=self._timeout,
        )
        value = answer.get("value") if isinstance(answer, dict) else None
        if value is None and nonce_account == managed_nonce_address(nonce_authority):
            raise ManagedNonceMissingError(nonce_account=nonce_account, wallet=nonce_authority)
        if value is None:
            raise core_errors.InvalidNonceAccountError(
                f"nonce account {nonce_account} does not exist",
                field="options.durable_nonce.nonce_account",
                metadata={"nonce_account": str(nonce_account)},
            )
        return DurableNonce.from_account(
            nonce_account=nonce_account,
            nonce_authority=nonce_authority,
            data=base64.b64decode(value["data"][0]),
            owner=Pubkey.from_string(value["owner"]),
        )

    # Shared build steps, public for the other operations of this package
    # (``_stake_pools``): the same seeds, lifetimes, options, simulation and checks.
    seed = _seed
    lifetime = _lifetime
    transaction_options = _tx_options
    prepare = _prepare
    check_epoch_rewards = _check_reads

    async def simulate(self, prepared: PreparedTransaction) -> Simulation:
        """Execute the unsigned transaction against the latest bank, without landing it.

        Signature verification is off and the blockhash is replaced by the node's
        latest for the simulation only (the returned transaction keeps its own), so a
        receipt can be had for any build. Balances before and after come from the
        simulation itself when the node reports them (``preBalances`` /
        ``postBalances``), else from a read of the same accounts.

        Raises:
            InsufficientFundsError: the wallet cannot cover the debits.
            EpochRewardsActiveError: the stake program refuses stake instructions now.
            SimulationFailedError: any other failure, decoded, with the logs.
        """
        message = VersionedTransaction.from_bytes(prepared.transaction).message
        assert isinstance(message, Message | MessageV0)  # the plans build nothing else
        keys = [str(k) for k in message.account_keys]
        touched = _writable_keys(message)
        payer = str(prepared.required_signers[0])
        simulated, before = await asyncio.gather(
            self._simulate_call(prepared.transaction, touched),
            self._rpc.call(
                "getMultipleAccounts",
                [
                    touched,
                    {
                        "encoding": "base64",
                        "commitment": "confirmed",
                        "dataSlice": {"offset": 0, "length": 0},
                    },
                ],
                timeout=self._timeout,
            ),
        )
        value = simulated["value"]
        error = value.get("err")
        logs = tuple(value.get("logs") or ())
        pre_by_key, post_by_key = _balances(keys, value)
        pre = [
            pre_by_key.get(address, (account or {}).get("lamports", 0))
            for address, account in zip(touched, before["value"], strict=False)
        ]
        if error is not None:
            if _is_insufficient_funds(error, logs):
                raise InsufficientFundsError(
                    required_lamports=prepared.fees.total_debit_lamports,
                    available_lamports=pre[touched.index(payer)] if payer in touched else 0,
                    address=payer,
                )
            decoded = decode_transaction_error(
                error, instructions=instruction_refs(message), logs=logs
            )
            if decoded.program_error == "EpochRewardsActive":
                raise EpochRewardsActiveError(
                    f"the transaction would fail now: {decoded.message}",
                    metadata={"simulation_error": decoded.raw},
                )
            raise SimulationFailedError(
                f"the transaction would fail: {decoded.message}",
                metadata=decoded.metadata(),
                hint=decoded.hint or None,
            )
        accounts = value.get("accounts") or []
        post = [
            post_by_key.get(address, (account or {}).get("lamports", 0))
            for address, account in zip(touched, accounts, strict=False)
        ]
        if not accounts:
            post = [post_by_key.get(address, p) for address, p in zip(touched, pre, strict=True)]
        changes = tuple(
            BalanceChange(address=address, pre_lamports=p, post_lamports=q)
            for address, p, q in zip(touched, pre, post, strict=False)
        )
        return Simulation(
            compute_units=int(value.get("unitsConsumed") or 0),
            balance_changes=changes,
            logs=logs,
            slot=int(simulated["context"]["slot"]),
        )

    async def _simulate_call(self, transaction: bytes, touched: list[str]) -> Any:
        try:
            return await self._rpc.call(
                "simulateTransaction",
                [
                    base64.b64encode(transaction).decode(),
                    {
                        "encoding": "base64",
                        "sigVerify": False,
                        "replaceRecentBlockhash": True,
                        "commitment": "confirmed",
                        "accounts": {"encoding": "base64", "addresses": touched},
                    },
                ],
                timeout=self._timeout,
            )
        except RpcError as exc:
            # The node would not even run it (it answers an error object, not a result
            # with `err`): the transaction cannot land as built either.
            raise SimulationFailedError(
                f"the Solana node refused to simulate the transaction: {exc.message}",
                metadata={"rpc_error_code": exc.code},
            ) from None


def _too_many_sources(count: int) -> None:
    raise core_errors.InvalidArgumentError(
        f"source_stake_accounts holds {count} accounts; at most {MAX_MERGES} fit in one "
        "transaction",
        field="source_stake_accounts",
        metadata={"maximum": MAX_MERGES},
    )


def _source_check(index: int, text: str) -> Callable[[], object]:
    return lambda: parse_address(text, field=f"source_stake_accounts[{index}]")


def _check_rewards(snapshot: ChainSnapshot) -> None:
    if snapshot.epoch_rewards_active:
        raise EpochRewardsActiveError(
            f"epoch {snapshot.epoch} rewards are being distributed; the stake program "
            "refuses stake instructions meanwhile",
            metadata={"epoch": snapshot.epoch},
        )


def _check_amount(amount: int, *, required: bool) -> int:
    if required and amount == 0:
        raise core_errors.InvalidArgumentError(
            "set amount_lamports, stake_account, or both", field="amount_lamports"
        )
    return amount


def _request_checks(options: BuildOptions, request_id: str) -> tuple[Callable[[], object], ...]:
    """The checks of the fields every build shares, for :func:`_collect`; their results
    in order: the durable nonce's account and authority, the request_id, the memo, and
    what the request's conversion found."""
    return (
        lambda: _optional(options.nonce_account, "options.durable_nonce.nonce_account"),
        lambda: _optional(
            options.nonce_authority, "options.durable_nonce.nonce_authority", on_curve=True
        ),
        lambda: check_request_id(request_id),
        lambda: check_memo(options.memo),
        FieldErrors(options.invalid).raise_any,
    )


def _writable_keys(message: Message | MessageV0) -> list[str]:
    """The accounts a message write-locks (the fee payer first), from its header."""
    header = message.header
    keys = list(message.account_keys)
    signed = header.num_required_signatures
    writable_signed = signed - header.num_readonly_signed_accounts
    writable_unsigned_end = len(keys) - header.num_readonly_unsigned_accounts
    return [
        str(key)
        for index, key in enumerate(keys)
        if index < writable_signed or signed <= index < writable_unsigned_end
    ]


def _balances(
    keys: Sequence[str], value: Mapping[str, Any]
) -> tuple[dict[str, int], dict[str, int]]:
    """Balances before and after from the simulation, by address, when reported for
    every account key (newer nodes); empty otherwise."""
    pre, post = value.get("preBalances"), value.get("postBalances")
    if not (
        isinstance(pre, list) and isinstance(post, list) and len(pre) == len(post) == len(keys)
    ):
        return {}, {}
    return (
        {k: int(v) for k, v in zip(keys, pre, strict=True)},
        {k: int(v) for k, v in zip(keys, post, strict=True)},
    )


def _required_vote(text: str) -> Pubkey:
    if not text:
        raise core_errors.InvalidArgumentError(
            "vote_account is required: no default validator is configured and none of the "
            "ranked validators is allowed for this API key",
            field="vote_account",
        )
    return parse_address(text, field="vote_account")


def _optional(text: str, field: str, *, on_curve: bool = False) -> Pubkey | None:
    return parse_address(text, field=field, require_on_curve=on_curve) if text else None


def _is_insufficient_funds(error: object, logs: Sequence[str]) -> bool:
    if error in ("InsufficientFundsForFee", "AccountNotFound"):
        return True
    if isinstance(error, dict) and "InsufficientFundsForRent" in error:
        return False
    if isinstance(error, dict) and "InstructionError" in error:
        # System program: custom error 1 = ResultWithNegativeLamports (not enough lamports).
        _, inner = error["InstructionError"]
        return inner == {"Custom": 1} and any("insufficient lamports" in line for line in logs)
    return False
