"""Rewards and yield: GetRewards and EstimateRewards over the chain and a cache.

GetRewards reads ``getInflationReward`` (finalized) once per epoch for every address
it has not seen, in batches of 100. A completed epoch's rewards never change, so
every answer (a reward, or none) is kept: in memory, and in the service's database
(``RewardsStore``) so that replicas and restarts share it. Epochs whose rewards the
node has not finalized yet are reported as pending and not kept.

EstimateRewards and the validators' estimated APY are computed from the cached chain
context (inflation rate, supply, vote accounts): no request reaches the chain.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from solders.pubkey import Pubkey

from service.core import errors as core_errors
from service.core._validate import parse_address
from service.core.accounts import WITHDRAWER_OFFSET
from service.core.errors import DomainError, ErrorKind, VoteAccountNotFoundError
from service.core.paging import (
    PageToken,
    decode_page_token,
    fingerprint,
    page_offset,
    page_size,
)
from service.core.policy import UNRESTRICTED, CallerPolicy, PolicyViolationError
from service.core.programs import STAKE_ACCOUNT_SIZE, STAKE_PROGRAM
from service.core.yields import (
    EpochRewardView,
    InflationReward,
    RewardHistory,
    YieldEstimate,
    epochs_in_days,
    estimate_yield,
    mean_credit_ratio,
    project_rewards,
    reward_history,
    reward_range,
)

from ._context import ChainContext, ChainSnapshot
from ._operations import StakingOperations
from ._rpc import RpcError, SolanaRpc
from ._stake_reads import StakeReader

log = logging.getLogger(__name__)

# getInflationReward addresses per request (what providers commonly accept).
MAX_REWARD_ADDRESSES: Final = 100
# Accounts GetRewards reports per call when they are named.
MAX_STAKE_ACCOUNTS: Final = 100
# Epochs fetched from the chain at once.
EPOCH_CONCURRENCY: Final = 4
DEFAULT_CACHE_ENTRIES: Final = 200_000
MAX_HORIZON_EPOCHS: Final = 5_000
MAX_HORIZON_DAYS: Final = 3_653
DEFAULT_HORIZON_DAYS: Final = 365
# Node answers that mean "not finalized yet": block not available, rewards period active.
_NOT_YET: Final = frozenset({-32004, -32019})
# Node answers that mean "this node no longer has it": cleaned up, skipped in long-term
# storage, no transaction history.
_GONE: Final = frozenset({-32001, -32009, -32011})


class RewardsUnavailableError(DomainError):
    """The node cannot answer for an epoch it should know (pruned history)."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "REWARDS_UNAVAILABLE"
    default_hint = (
        "Ask for later epochs, or configure an RPC endpoint with long-term history "
        "(getInflationReward reads the blocks of the epoch's end)."
    )


class RewardsReadError(DomainError):
    """The node refused a read GetRewards needs."""

    kind = ErrorKind.UNAVAILABLE
    default_reason = "SOLANA_RPC_ERROR"
    default_hint = "Retry shortly."
    retry_after = 2.0


class NoCompletedEpochError(DomainError):
    """The cluster is in its first epoch: nothing has been paid yet."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "NO_COMPLETED_EPOCH"
    default_hint = "Rewards are paid at the end of each epoch; ask again after the first."


class RewardsStore(Protocol):
    """Durable rows of completed epochs' rewards (``SqlRewardsStore``)."""

    async def load(
        self, cluster: str, epoch: int, addresses: Sequence[str]
    ) -> dict[str, InflationReward | None]:
        """The known rewards of ``addresses`` for ``epoch`` (absent: never read)."""
        ...

    async def save(
        self, cluster: str, epoch: int, rewards: Mapping[str, InflationReward | None]
    ) -> None:
        """Keep ``rewards`` of ``epoch`` (None: the address earned nothing)."""
        ...


@dataclass(frozen=True, kw_only=True)
class RewardsCacheStats:
    """Where GetRewards found each (epoch, address) it needed."""

    memory_hits: int
    store_hits: int
    chain_reads: int
    store_failures: int


class RewardsCache:
    """Completed epochs' rewards: a bounded memory LRU in front of a durable store.

    A failing store never fails a call: it is logged and the chain is asked instead.
    """

    def __init__(
        self, store: RewardsStore | None = None, *, max_entries: int = DEFAULT_CACHE_ENTRIES
    ) -> None:
        self._store = store
        self._max = max_entries
        self._memory: OrderedDict[tuple[str, int, str], InflationReward | None] = OrderedDict()
        self._memory_hits = self._store_hits = self._chain_reads = self._store_failures = 0

    def stats(self) -> RewardsCacheStats:
        return RewardsCacheStats(
            memory_hits=self._memory_hits,
            store_hits=self._store_hits,
            chain_reads=self._chain_reads,
            store_failures=self._store_failures,
        )

    async def get(
        self, cluster: str, epoch: int, addresses: Sequence[str]
    ) -> dict[str, InflationReward | None]:
        """What is known of ``addresses`` for ``epoch`` (absent: unknown)."""
        found: dict[str, InflationReward | None] = {}
        missing: list[str] = []
        for address in addresses:
            key = (cluster, epoch, address)
            if key in self._memory:
                self._memory.move_to_end(key)
                found[address] = self._memory[key]
            else:
                missing.append(address)
        self._memory_hits += len(found)
        if missing and self._store is not None:
            try:
                stored = await self._store.load(cluster, epoch, missing)
            except DomainError as exc:
                self._store_failures += 1
                log.warning("rewards cache read failed, asking the chain: %s", exc.message)
                stored = {}
            self._store_hits += len(stored)
            self._remember(cluster, epoch, stored)
            found.update(stored)
        return found

    async def put(
        self, cluster: str, epoch: int, rewards: Mapping[str, InflationReward | None]
    ) -> None:
        """Keep what the chain answered for ``epoch``."""
        self._chain_reads += len(rewards)
        self._remember(cluster, epoch, rewards)
        if self._store is not None and rewards:
            try:
                await self._store.save(cluster, epoch, rewards)
            except DomainError as exc:
                self._store_failures += 1
                log.warning("rewards cache write failed (kept in memory): %s", exc.message)

    def _remember(
        self, cluster: str, epoch: int, rewards: Mapping[str, InflationReward | None]
    ) -> None:
        for address, reward in rewards.items():
            self._memory[(cluster, epoch, address)] = reward
            self._memory.move_to_end((cluster, epoch, address))
        while len(self._memory) > self._max:
            self._memory.popitem(last=False)


@dataclass(frozen=True, kw_only=True)
class RewardsParams:
    """A GetRewards request as plain values."""

    wallet: str = ""
    stake_accounts: tuple[str, ...] = ()
    start_epoch: int | None = None
    end_epoch: int | None = None
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, kw_only=True)
class RewardsPage:
    """One page of GetRewards.

    Attributes:
        rewards: This page of the history's entries.
        history: The whole history (totals, pending epochs).
    """

    rewards: tuple[EpochRewardView, ...]
    history: RewardHistory
    start_epoch: int
    end_epoch: int
    next_page_token: str


@dataclass(frozen=True, kw_only=True)
class EstimateParams:
    """An EstimateRewards request as plain values (``epochs``/``days``: the horizon
    set, at most one)."""

    amount_lamports: int
    vote_account: str = ""
    epochs: int | None = None
    days: int | None = None


@dataclass(frozen=True, kw_only=True)
class RewardEstimate:
    """Projected rewards of an amount staked with one validator."""

    vote_account: str
    amount_lamports: int
    epochs: int
    projected_rewards: int
    estimate: YieldEstimate
    delinquent: bool
    notes: tuple[str, ...]


class RewardOperations:
    """GetRewards and EstimateRewards."""

    def __init__(
        self,
        *,
        rpc: SolanaRpc,
        context: ChainContext,
        operations: StakingOperations,
        cache: RewardsCache,
        rpc_timeout: float = 5.0,
        stake_accounts_cache_seconds: float = 3.0,
    ) -> None:
        """Create the operations.

        Args:
            operations: For the validator ranking and the default validator.
            cache: Completed epochs' rewards already read.
            stake_accounts_cache_seconds: How long a wallet's stake accounts are reused.
        """
        self._rpc = rpc
        self._context = context
        self._operations = operations
        self._cache = cache
        self._timeout = rpc_timeout
        self._reader = StakeReader(
            rpc, timeout=rpc_timeout, cache_seconds=stake_accounts_cache_seconds
        )

    def cache_stats(self) -> RewardsCacheStats:
        """Where the rewards GetRewards needed were found so far."""
        return self._cache.stats()

    # --- GetRewards -------------------------------------------------------------------

    async def get_rewards(
        self, params: RewardsParams, policy: CallerPolicy = UNRESTRICTED
    ) -> RewardsPage:
        """The rewards of the wallet's (or the named) stake accounts over an epoch range.

        Raises:
            InvalidArgumentError: Wallet and accounts both or neither set, bad
                addresses, duplicates, too many, bad range, page size or token.
            PolicyViolationError: The key may not read this wallet's accounts.
            NoCompletedEpochError: The cluster has not finished an epoch yet.
            RewardsUnavailableError: The node has pruned an epoch asked for.
            ChainUnavailable / RewardsReadError: The chain did not answer.
        """
        snapshot = self._context.snapshot()
        size = page_size(params.page_size)
        named = self._check_request(params)
        epochs = reward_range(
            start_epoch=params.start_epoch,
            end_epoch=params.end_epoch,
            current_epoch=snapshot.epoch,
        )
        if epochs is None:
            raise NoCompletedEpochError(
                "the cluster is in its first epoch: no rewards have been paid yet",
                metadata={"epoch": snapshot.epoch},
            )
        if named:
            await self._check_named(named, policy)
            accounts = [str(a) for a in named]
        else:
            owner = parse_address(params.wallet, field="wallet")
            policy.check(wallet=str(owner), amount_lamports=0, vote_account=None)
            reads = await self._reader.cached_wallet_read(owner)
            accounts = [str(a.address) for a in reads.accounts]
        bound = fingerprint(params.wallet, sorted(accounts), epochs.start, epochs.stop)
        token = decode_page_token(params.page_token, kind="rewards", fingerprint=bound)
        known = await self._known(snapshot, accounts, epochs)
        history = reward_history(
            accounts,
            epochs,
            known,
            rent_exempt_reserve=snapshot.stake_rent_exempt_reserve,
            slots_in_epoch=snapshot.slots_in_epoch,
        )
        offset = page_offset(token)
        page = history.entries[offset : offset + size]
        end = offset + len(page)
        next_token = ""
        if end < len(history.entries):
            next_token = PageToken(kind="rewards", fingerprint=bound, position=str(end)).encode()
        return RewardsPage(
            rewards=page,
            history=history,
            start_epoch=epochs.start,
            end_epoch=epochs.stop - 1,
            next_page_token=next_token,
        )

    def _check_request(self, params: RewardsParams) -> list[Pubkey]:
        if bool(params.wallet) == bool(params.stake_accounts):
            raise core_errors.InvalidArgumentError(
                "set wallet or stake_accounts (exactly one of them)",
                field="wallet" if params.wallet else "stake_accounts",
            )
        if len(params.stake_accounts) > MAX_STAKE_ACCOUNTS:
            raise core_errors.InvalidArgumentError(
                f"at most {MAX_STAKE_ACCOUNTS} stake_accounts per call, got "
                f"{len(params.stake_accounts)}",
                field="stake_accounts",
                metadata={"maximum": MAX_STAKE_ACCOUNTS},
            )
        failures = core_errors.failed_checks(
            *(
                (lambda text=text: parse_address(text, field="stake_accounts"))
                for text in params.stake_accounts
            )
        )
        problem = core_errors.combine_violations(failures)
        if problem is not None:
            raise problem
        named = [Pubkey.from_string(text) for text in params.stake_accounts]
        if len(set(named)) != len(named):
            raise core_errors.InvalidArgumentError(
                "stake_accounts lists an account twice", field="stake_accounts"
            )
        return named

    async def _check_named(self, named: Sequence[Pubkey], policy: CallerPolicy) -> None:
        """With a key restricted to some wallets, every named account must exist and
        be withdrawable by one of them."""
        if not policy.allowed_wallets:
            return
        answer = await self._reader.call(
            "getMultipleAccounts",
            [
                [str(a) for a in named],
                {
                    "encoding": "base64",
                    "commitment": "confirmed",
                    "dataSlice": {"offset": WITHDRAWER_OFFSET, "length": 32},
                },
            ],
        )
        for address, value in zip(named, answer["value"], strict=True):
            withdrawer = ""
            if value is not None and value.get("owner") == str(STAKE_PROGRAM):
                data = base64.b64decode(value["data"][0])
                if len(data) == 32 and value.get("space", STAKE_ACCOUNT_SIZE) == STAKE_ACCOUNT_SIZE:
                    withdrawer = str(Pubkey(data))
            if withdrawer not in policy.allowed_wallets:
                raise PolicyViolationError(
                    f"this API key may not read stake account {address}: its withdraw "
                    "authority is not one of the key's wallets"
                    if withdrawer
                    else f"this API key may not read {address}: no stake account of its "
                    "wallets is there",
                    reason="POLICY_WALLET_NOT_ALLOWED",
                    metadata={"policy": "allowed_wallets", "stake_account": str(address)},
                )

    async def epoch_rewards(
        self, epoch: int, accounts: Sequence[str]
    ) -> dict[str, InflationReward | None] | None:
        """Every account's reward for a completed epoch (None for an account paid
        nothing), through the cache; None while the node has not finalized them.

        Raises:
            RewardsUnavailableError: The node no longer has that epoch.
            ChainUnavailable / RewardsReadError: The chain did not answer.
        """
        snapshot = self._context.snapshot()
        return await self._epoch(
            snapshot.genesis_hash, epoch, accounts, context_only=False, snapshot=snapshot
        )

    async def _known(
        self, snapshot: ChainSnapshot, accounts: Sequence[str], epochs: range
    ) -> dict[int, dict[str, InflationReward | None]]:
        """Per epoch of the range (and the one before it), every account's reward;
        epochs not yet final at the node are left out."""
        cluster = snapshot.genesis_hash
        wanted = range(max(epochs.start - 1, 0), epochs.stop)
        limit = asyncio.Semaphore(EPOCH_CONCURRENCY)

        async def one(epoch: int) -> tuple[int, dict[str, InflationReward | None] | None]:
            async with limit:
                return epoch, await self._epoch(
                    cluster, epoch, accounts, context_only=epoch < epochs.start, snapshot=snapshot
                )

        results = await asyncio.gather(*(one(e) for e in wanted))
        return {epoch: found for epoch, found in results if found is not None}

    async def _epoch(
        self,
        cluster: str,
        epoch: int,
        accounts: Sequence[str],
        *,
        context_only: bool,
        snapshot: ChainSnapshot,
    ) -> dict[str, InflationReward | None] | None:
        found = await self._cache.get(cluster, epoch, accounts) if accounts else {}
        missing = [a for a in accounts if a not in found]
        fetched: dict[str, InflationReward | None] = {}
        try:
            for start in range(0, len(missing), MAX_REWARD_ADDRESSES):
                chunk = missing[start : start + MAX_REWARD_ADDRESSES]
                answer = await self._rpc.call(
                    "getInflationReward",
                    [chunk, {"epoch": epoch, "commitment": "finalized"}],
                    timeout=self._timeout,
                )
                for address, value in zip(chunk, answer, strict=True):
                    fetched[address] = _reward(epoch, value)
        except RpcError as exc:
            if fetched:
                await self._cache.put(cluster, epoch, fetched)
            if context_only:
                return None  # only for the first epoch's other credits: unknown then
            if exc.code in _NOT_YET and epoch >= snapshot.epoch - 1:
                return None  # paid, not yet final: pending
            if exc.code in _NOT_YET or exc.code in _GONE:
                raise RewardsUnavailableError(
                    f"the Solana node has no rewards for epoch {epoch}: {exc.message}",
                    metadata={"epoch": epoch, "rpc_code": exc.code},
                ) from exc
            raise RewardsReadError(
                f"the Solana node refused getInflationReward: {exc.message}",
                metadata={"method": "getInflationReward", "rpc_code": exc.code},
            ) from exc
        if fetched:
            await self._cache.put(cluster, epoch, fetched)
        found.update(fetched)
        return found

    # --- EstimateRewards ----------------------------------------------------------------

    def estimate(
        self, params: EstimateParams, policy: CallerPolicy = UNRESTRICTED
    ) -> RewardEstimate:
        """Project the rewards of ``params.amount_lamports`` with a validator.

        Raises:
            InvalidArgumentError: No amount, a bad vote account or horizon.
            VoteAccountNotFoundError: The cluster reports no such vote account.
            ChainUnavailable: No chain context.
            RewardsUnavailableError: The node does not report its inflation or supply.
        """
        snapshot = self._context.snapshot()
        vote_text = params.vote_account or self._operations.default_vote_account(policy)
        checks = [
            lambda: _positive(params.amount_lamports),
            lambda: _horizon(params.epochs, params.days),
            lambda: (
                parse_address(vote_text, field="vote_account")
                if vote_text
                else _no_default_validator()
            ),
        ]
        problem = core_errors.combine_violations(core_errors.failed_checks(*checks))
        if problem is not None:
            raise problem
        inputs = snapshot.yield_inputs
        if inputs is None:
            raise RewardsUnavailableError(
                "the Solana node does not report its inflation rate or supply "
                "(getInflationRate, getSupply)",
                hint="Configure an RPC endpoint that serves getInflationRate and getSupply.",
            )
        ranked = {v.vote_account: v for v in self._operations.ranking()}
        validator = ranked.get(vote_text)
        if validator is None:
            raise VoteAccountNotFoundError(vote_account=vote_text)
        mean = mean_credit_ratio((v.activated_stake, v.performance) for v in ranked.values())
        estimate = estimate_yield(
            inputs,
            commission_percent=validator.commission,
            credit_ratio=0.0 if validator.delinquent else min(validator.performance, 1.0),
            mean_ratio=mean,
        )
        if params.epochs is not None:
            epochs = params.epochs
        else:
            days = params.days if params.days is not None else DEFAULT_HORIZON_DAYS
            epochs = epochs_in_days(days, inputs.epochs_per_year)
        notes = [
            "the inflation rate, supply, active stake, commission and vote performance "
            "stay as they are now (the schedule lowers inflation by 15% a year)",
            "every epoch's reward is added to the delegated stake and earns from the "
            "next epoch on (compounding per epoch)",
            "the stake is active for the whole horizon: a new delegation first earns in "
            "the epoch after the one it is made in",
        ]
        if validator.delinquent:
            notes.append("the validator is delinquent now: it earns nothing while it does not vote")
        return RewardEstimate(
            vote_account=vote_text,
            amount_lamports=params.amount_lamports,
            epochs=epochs,
            projected_rewards=project_rewards(
                params.amount_lamports, estimate.per_epoch_rate, epochs
            ),
            estimate=estimate,
            delinquent=validator.delinquent,
            notes=tuple(notes),
        )


def _reward(epoch: int, value: Any) -> InflationReward | None:
    if value is None:
        return None
    commission = value.get("commission")
    return InflationReward(
        epoch=epoch,
        amount=int(value["amount"]),
        post_balance=int(value["postBalance"]),
        effective_slot=int(value["effectiveSlot"]),
        commission=None if commission is None else int(commission),
    )


def _positive(amount: int) -> int:
    if amount <= 0:
        raise core_errors.InvalidArgumentError(
            "amount_lamports is required (lamports to stake, above 0)", field="amount_lamports"
        )
    return amount


def _horizon(epochs: int | None, days: int | None) -> None:
    if epochs is not None and not 1 <= epochs <= MAX_HORIZON_EPOCHS:
        raise core_errors.InvalidArgumentError(
            f"epochs must be 1..{MAX_HORIZON_EPOCHS}, got {epochs}",
            field="epochs",
            metadata={"maximum": MAX_HORIZON_EPOCHS},
        )
    if days is not None and not 1 <= days <= MAX_HORIZON_DAYS:
        raise core_errors.InvalidArgumentError(
            f"days must be 1..{MAX_HORIZON_DAYS}, got {days}",
            field="days",
            metadata={"maximum": MAX_HORIZON_DAYS},
        )


def _no_default_validator() -> None:
    raise core_errors.InvalidArgumentError(
        "vote_account is required: no default validator is configured and none of the "
        "ranked validators is allowed for this API key",
        field="vote_account",
    )
