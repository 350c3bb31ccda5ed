"""The BuildUnstakeTransaction plan: deactivate whole stake accounts and, when the
amount falls inside an account, split that part into a new seed-derived account and
deactivate it, all in one transaction.

Instructions, in order::

    [AdvanceNonceAccount]                  durable nonce only
    SetComputeUnitLimit / [SetComputeUnitPrice]
    Stake Deactivate                       one per whole account, signed by its staker
    [CreateAccountWithSeed]                split only: wallet -> create_with_seed(wallet,
                                           seed, Stake), rent-exempt reserve, 200 bytes
    [Stake Split]                          split only: the part moves into the new account
    [Stake Deactivate]                     split only: the new account
    [Memo]

Choosing accounts for an amount (:func:`choose_unstake`): whole accounts first (an
exact sum of whole accounts, fewest accounts), else whole accounts plus one split,
again with the fewest accounts; the split source is the smallest account that keeps
at least the minimum delegation on both sides. Only accounts whose stake authority is
the wallet are chosen automatically, so the wallet alone signs; a named account with
another stake authority adds that authority to the required signers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from service.core._validate import check_lamports, check_pubkey
from service.core.accounts import Delegation
from service.core.activation import StakeHistoryEntry, stake_activation
from service.core.encoders import stake_deactivate, stake_split, system_create_account_with_seed
from service.core.errors import (
    InsufficientStakeError,
    InvalidArgumentError,
    StakeAccountNotFoundError,
    StakeAccountStateError,
    combine_violations,
    failed_checks,
)
from service.core.fees import ServiceFee
from service.core.plans._amounts import amount_error, nearest_amounts
from service.core.plans._transaction import (
    MEASURED_BUDGET_CU,
    MEASURED_MEMO_CU,
    Lifetime,
    PreparedTransaction,
    TransactionOptions,
    check_addresses,
    compute_units_with_margin,
    prepare_transaction,
)
from service.core.positions import FetchedStakeAccount, settling_epoch
from service.core.programs import LAMPORTS_PER_SIGNATURE, STAKE_ACCOUNT_SIZE, STAKE_PROGRAM
from service.core.seeds import check_seed, stake_account_address

# Most existing stake accounts one unstake transaction touches (whole accounts plus
# the split source). Chosen so that the largest variant (durable nonce with its own
# authority, a separate staker, price, split, 200-byte memo) fits in 1232 bytes.
MAX_UNSTAKE_ACCOUNTS: Final = 8
# Budget of the exhaustive search for an exact choice (nodes visited).
_SEARCH_BUDGET: Final = 50_000
# How many of the largest accounts the "what would work" suggestion considers.
_SUGGESTION_ACCOUNTS: Final = 10

# Compute units measured on LiteSVM (tests/core/test_compute_units_lifecycle.py).
MEASURED_DEACTIVATE_CU: Final = 10_740
"""One Stake Deactivate."""
MEASURED_SPLIT_CU: Final = 28_030
"""CreateAccountWithSeed + Split + Deactivate of the new account."""


class UnstakeAmountError(InvalidArgumentError):
    """The amount cannot be deactivated exactly without leaving (or splitting off) less
    than the minimum delegation."""

    default_reason = "BELOW_MINIMUM_DELEGATION"
    default_hint = (
        "Unstake an amount that leaves at least the minimum delegation on both sides of "
        "the split, or whole accounts (see nearest_lower_lamports / nearest_higher_lamports)."
    )


def default_unstake_compute_unit_limit(*, whole_accounts: int, split: bool) -> int:
    """The plan's default compute unit limit (measured, +20%, rounded up)."""
    units = MEASURED_BUDGET_CU + MEASURED_MEMO_CU
    units += whole_accounts * MEASURED_DEACTIVATE_CU
    if split:
        units += MEASURED_SPLIT_CU
    return compute_units_with_margin(units)


@dataclass(frozen=True, kw_only=True)
class UnstakeChoice:
    """Which candidates to deactivate: indices into the candidate list."""

    whole: tuple[int, ...] = ()
    split: int | None = None
    split_lamports: int = 0


def _exact_whole(
    stakes: Sequence[int], amount: int, max_accounts: int, budget: list[int]
) -> tuple[int, ...] | None:
    """Fewest indices (stakes sorted descending) whose stakes sum to ``amount``."""
    n = len(stakes)

    def dfs(start: int, k: int, remaining: int) -> tuple[int, ...] | None:
        if k == 0:
            return () if remaining == 0 else None
        for i in range(start, n - k + 1):
            budget[0] -= 1
            if budget[0] <= 0:
                return None
            s = stakes[i]
            if s > remaining:
                continue
            if sum(stakes[i : i + k]) < remaining:
                break  # the largest k left cannot reach it; later ones are smaller
            found = dfs(i + 1, k - 1, remaining - s)
            if found is not None:
                return (i, *found)
        return None

    for k in range(1, min(max_accounts, n) + 1):
        found = dfs(0, k, amount)
        if found is not None:
            return found
    return None


def _with_split(
    stakes: Sequence[int], amount: int, minimum: int, max_accounts: int, budget: list[int]
) -> UnstakeChoice | None:
    """Fewest whole accounts plus one split whose parts both keep ``minimum``."""
    n = len(stakes)

    def source_for(chosen: tuple[int, ...], remaining: int) -> int | None:
        if remaining < minimum:
            return None
        # The smallest account that can give `remaining` and keep `minimum`.
        for j in range(n - 1, -1, -1):
            if j not in chosen and stakes[j] >= remaining + minimum:
                return j
        return None

    def dfs(start: int, k: int, chosen: tuple[int, ...], remaining: int) -> UnstakeChoice | None:
        if k == 0:
            j = source_for(chosen, remaining)
            if j is None:
                return None
            return UnstakeChoice(whole=chosen, split=j, split_lamports=remaining)
        for i in range(start, n - k + 1):
            budget[0] -= 1
            if budget[0] <= 0:
                return None
            if stakes[i] > remaining - minimum:
                continue
            found = dfs(i + 1, k - 1, (*chosen, i), remaining - stakes[i])
            if found is not None:
                return found
        return None

    for k in range(0, min(max_accounts - 1, n - 1) + 1):
        found = dfs(0, k, (), amount)
        if found is not None:
            return found
    return None


def choose_unstake(
    stakes: Sequence[int],
    amount: int,
    *,
    minimum_delegation: int,
    max_accounts: int = MAX_UNSTAKE_ACCOUNTS,
) -> UnstakeChoice | None:
    """Choose whole accounts (and at most one split) deactivating exactly ``amount``.

    Args:
        stakes: Delegated stake of each candidate, sorted from largest to smallest.
        amount: Lamports of stake to deactivate.
        minimum_delegation: What each part of a split must keep.
        max_accounts: Most existing accounts touched.

    Returns:
        The choice, or None when no choice deactivates exactly ``amount``.
    """
    if list(stakes) != sorted(stakes, reverse=True):
        raise ValueError("stakes must be sorted from largest to smallest")
    budget = [_SEARCH_BUDGET]
    whole = _exact_whole(stakes, amount, max_accounts, budget)
    if whole is not None:
        return UnstakeChoice(whole=whole)
    budget = [_SEARCH_BUDGET]
    return _with_split(stakes, amount, minimum_delegation, max_accounts, budget)


def nearest_unstake_amounts(
    stakes: Sequence[int],
    amount: int,
    *,
    minimum_delegation: int,
    max_accounts: int = MAX_UNSTAKE_ACCOUNTS,
) -> tuple[int | None, int | None]:
    """The achievable amounts closest to ``amount`` from below and from above, over the
    largest accounts (an amount is achievable when :func:`choose_unstake` finds it)."""
    top = sorted(stakes, reverse=True)[:_SUGGESTION_ACCOUNTS]

    def achievable() -> Iterator[tuple[int, int]]:
        indices = range(len(top))
        for size in range(0, min(max_accounts, len(top)) + 1):
            for subset in itertools.combinations(indices, size):
                total = sum(top[i] for i in subset)
                if subset:
                    yield total, total
                if size + 1 > max_accounts:
                    continue
                for j in indices:
                    if j not in subset and top[j] >= 2 * minimum_delegation:
                        yield total + minimum_delegation, total + top[j] - minimum_delegation

    return nearest_amounts(achievable(), amount)


@dataclass(frozen=True, kw_only=True)
class UnstakeRequest:
    """A BuildUnstakeTransaction request, as domain values.

    Attributes:
        wallet: Fee payer, withdraw authority of the accounts, base of the split seed.
        amount_lamports: Stake to deactivate; 0 with ``stake_account`` = the whole account.
        stake_account: The account to deactivate (or split); None = choose.
        vote_account: When choosing, only stake delegated to this vote account.
        split_seed: Seed of the new account if a split is needed.
        options: Version, compute budget, memo.
    """

    wallet: Pubkey
    amount_lamports: int
    split_seed: str
    stake_account: Pubkey | None = None
    vote_account: Pubkey | None = None
    options: TransactionOptions = field(default_factory=TransactionOptions)

    def __post_init__(self) -> None:
        errors = failed_checks(
            lambda: check_pubkey(self.wallet, field="wallet"),
            lambda: check_lamports(self.amount_lamports, field="amount_lamports"),
            lambda: check_seed(self.split_seed, field="split_seed"),
        )
        if self.stake_account is None and self.amount_lamports == 0:
            errors.append(
                InvalidArgumentError(
                    "set amount_lamports, stake_account, or both",
                    field="amount_lamports",
                )
            )
        problem = combine_violations(errors)
        if problem is not None:
            raise problem


@dataclass(frozen=True, kw_only=True)
class UnstakeContext:
    """Chain state the unstake plan needs (read per request).

    Attributes:
        accounts: The named account, or every stake account of the wallet.
        epoch: Current epoch (Clock sysvar).
        history: StakeHistory sysvar entries (for the expected inactive epoch).
    """

    lifetime: Lifetime
    accounts: Sequence[FetchedStakeAccount]
    epoch: int
    history: Mapping[int, StakeHistoryEntry]
    rent_exempt_reserve_lamports: int
    minimum_delegation_lamports: int
    lamports_per_signature: int = LAMPORTS_PER_SIGNATURE
    wallet_balance_lamports: int | None = None


@dataclass(frozen=True, kw_only=True)
class SplitAccount:
    """A new stake account split off an existing one."""

    stake_account: Pubkey
    seed: str
    source_stake_account: Pubkey
    stake_lamports: int
    rent_exempt_reserve_lamports: int


@dataclass(frozen=True, kw_only=True)
class PreparedUnstakeTransaction:
    """The unstake plan's result.

    Attributes:
        stake_accounts: Every account deactivated, split accounts included.
        splits: New accounts created by splitting.
        deactivate_lamports: Total stake deactivated.
        deactivation_epoch: The epoch of the deactivation (now).
        expected_inactive_epoch: Projected first epoch in which all of it is inactive.
    """

    prepared: PreparedTransaction
    stake_accounts: tuple[Pubkey, ...]
    splits: tuple[SplitAccount, ...]
    deactivate_lamports: int
    deactivation_epoch: int
    expected_inactive_epoch: int


def _deactivatable(fetched: FetchedStakeAccount) -> Delegation | None:
    d = fetched.delegation
    if d is None or d.is_deactivated or d.stake == 0:
        return None
    return d


def _check_named(fetched: FetchedStakeAccount) -> Delegation:
    d = fetched.delegation
    address = str(fetched.address)
    if d is None:
        raise StakeAccountStateError(
            f"stake account {address} was never delegated: there is no stake to deactivate",
            reason="STAKE_NOT_DELEGATED",
            field="stake_account",
            metadata={"stake_account": address},
            hint="Withdraw its lamports instead (BuildWithdrawTransaction).",
        )
    if d.is_deactivated:
        raise StakeAccountStateError(
            f"stake account {address} was already deactivated in epoch {d.deactivation_epoch}",
            reason="STAKE_ALREADY_DEACTIVATED",
            field="stake_account",
            metadata={"stake_account": address, "deactivation_epoch": d.deactivation_epoch},
            hint="Wait for its cooldown to end, then withdraw it.",
        )
    return d


def _choose(
    request: UnstakeRequest, context: UnstakeContext
) -> tuple[list[FetchedStakeAccount], FetchedStakeAccount | None, int]:
    """(whole accounts, split source, split lamports)."""
    minimum = context.minimum_delegation_lamports
    amount = request.amount_lamports
    if request.stake_account is not None:
        found = [a for a in context.accounts if a.address == request.stake_account]
        if not found:
            raise StakeAccountNotFoundError(
                stake_account=str(request.stake_account), field="stake_account"
            )
        named = found[0]
        stake = _check_named(named).stake
        if amount in (0, stake):
            return [named], None, 0
        if amount > stake:
            raise InsufficientStakeError(
                f"stake account {named.address} has {stake} lamports of stake, less than "
                f"amount_lamports {amount}",
                field="amount_lamports",
                metadata={
                    "stake_account": str(named.address),
                    "available_lamports": stake,
                    "requested_lamports": amount,
                },
            )
        if minimum <= amount <= stake - minimum:
            return [], named, amount
        lower, higher = nearest_unstake_amounts(
            [stake], amount, minimum_delegation=minimum, max_accounts=1
        )
        why = (
            f"amount_lamports {amount} is below the minimum delegation of {minimum}"
            if amount < minimum
            else f"splitting {amount} off stake account {named.address} ({stake} lamports) "
            f"would leave {stake - amount}, below the minimum delegation of {minimum}"
        )
        raise amount_error(
            UnstakeAmountError, why, amount=amount, minimum=minimum, lower=lower, higher=higher
        )

    candidates = [
        a
        for a in context.accounts
        if _deactivatable(a) is not None
        and a.staker == request.wallet
        and (request.vote_account is None or _voter(a) == request.vote_account)
    ]
    candidates.sort(key=lambda a: (-_stake_of(a), str(a.address)))
    stakes = [_stake_of(a) for a in candidates]
    available = sum(stakes)
    if amount > available:
        others = sum(
            _stake_of(a)
            for a in context.accounts
            if _deactivatable(a) is not None and a.staker != request.wallet
        )
        metadata: dict[str, str | int] = {
            "available_lamports": available,
            "requested_lamports": amount,
        }
        message = (
            f"the wallet has {available} lamports of active and activating stake"
            + (f" delegated to {request.vote_account}" if request.vote_account else "")
            + f" that it can deactivate, less than amount_lamports {amount}"
        )
        if others:
            metadata["other_stake_authority_lamports"] = others
            message += (
                f" ({others} more lamports are in accounts with another stake authority: "
                "name them in stake_account)"
            )
        raise InsufficientStakeError(message, field="amount_lamports", metadata=metadata)
    choice = choose_unstake(stakes, amount, minimum_delegation=minimum)
    if choice is None:
        lower, higher = nearest_unstake_amounts(stakes, amount, minimum_delegation=minimum)
        why = (
            f"amount_lamports {amount} is below the minimum delegation of {minimum} and "
            "matches no whole stake account"
            if amount < minimum
            else f"no choice of whole stake accounts and one split deactivates exactly "
            f"{amount} lamports while leaving at least the minimum delegation of {minimum} "
            f"on both sides of the split (at most {MAX_UNSTAKE_ACCOUNTS} accounts)"
        )
        raise amount_error(
            UnstakeAmountError, why, amount=amount, minimum=minimum, lower=lower, higher=higher
        )
    whole = [candidates[i] for i in choice.whole]
    source = candidates[choice.split] if choice.split is not None else None
    return whole, source, choice.split_lamports


def _voter(fetched: FetchedStakeAccount) -> Pubkey | None:
    d = fetched.delegation
    return d.voter if d is not None else None


def _stake_of(fetched: FetchedStakeAccount) -> int:
    d = fetched.delegation
    return d.stake if d is not None else 0


def build_unstake_transaction(
    request: UnstakeRequest, context: UnstakeContext
) -> PreparedUnstakeTransaction:
    """Plan an unstake: one unsigned transaction.

    Raises:
        InsufficientStakeError: Less deactivatable stake than asked for.
        UnstakeAmountError: No exact choice keeps the minimum delegation everywhere.
        StakeAccountStateError: The named account was never delegated or is already
            deactivated.
        TransactionTooLargeError / InsufficientFundsError: As for every plan.
    """
    wallet = request.wallet
    whole, source, split_lamports = _choose(request, context)
    split_address = stake_account_address(base=wallet, seed=request.split_seed)
    check_addresses(
        [
            ("wallet", wallet),
            ("split_stake_account", split_address if source is not None else None),
        ],
        context.lifetime,
    )
    rent = context.rent_exempt_reserve_lamports
    body: list[Instruction] = [
        stake_deactivate(stake_account=a.address, staker=a.staker) for a in whole
    ]
    splits: list[SplitAccount] = []
    deactivated = [a.address for a in whole]
    delegations = [a.delegation for a in whole]
    if source is not None:
        body += [
            system_create_account_with_seed(
                payer=wallet,
                new_account=split_address,
                base=wallet,
                seed=request.split_seed,
                lamports=rent,
                space=STAKE_ACCOUNT_SIZE,
                owner=STAKE_PROGRAM,
            ),
            stake_split(
                stake_account=source.address,
                destination=split_address,
                staker=source.staker,
                lamports=split_lamports,
            ),
            stake_deactivate(stake_account=split_address, staker=source.staker),
        ]
        splits.append(
            SplitAccount(
                stake_account=split_address,
                seed=request.split_seed,
                source_stake_account=source.address,
                stake_lamports=split_lamports,
                rent_exempt_reserve_lamports=rent,
            )
        )
        deactivated.append(split_address)
        assert source.delegation is not None
        delegations.append(
            Delegation(
                voter=source.delegation.voter,
                stake=split_lamports,
                activation_epoch=source.delegation.activation_epoch,
            )
        )
    epoch = context.epoch
    expected = epoch
    for d in delegations:
        assert d is not None
        stopped = Delegation(
            voter=d.voter,
            stake=d.stake,
            activation_epoch=d.activation_epoch,
            deactivation_epoch=epoch,
        )
        if stake_activation(stopped, epoch, context.history).deactivating:
            settled = settling_epoch(stopped, epoch, context.history)
            expected = max(expected, settled if settled is not None else epoch + 1)
    prepared = prepare_transaction(
        payer=wallet,
        body=body,
        options=request.options,
        lifetime=context.lifetime,
        default_compute_unit_limit=default_unstake_compute_unit_limit(
            whole_accounts=len(whole), split=source is not None
        ),
        body_debit_lamports=rent if source is not None else 0,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
        rent_exempt_reserve_lamports=rent if source is not None else 0,
        lamports_per_signature=context.lamports_per_signature,
        payer_balance_lamports=context.wallet_balance_lamports,
    )
    return PreparedUnstakeTransaction(
        prepared=prepared,
        stake_accounts=tuple(deactivated),
        splits=tuple(splits),
        deactivate_lamports=sum(_stake_of(a) for a in whole) + split_lamports,
        deactivation_epoch=epoch,
        expected_inactive_epoch=expected,
    )
