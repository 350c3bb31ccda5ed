"""The async shell around the pure core: build (and optionally simulate) transactions.

Reads the cached chain context (no network I/O on the default path), turns plain
request values into core values, calls the core plan, and only when the caller
asks for it (durable nonce, simulation) talks to Solana.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from solders.hash import Hash
from solders.pubkey import Pubkey

from service.core import errors as core_errors
from service.core._validate import parse_address
from service.core.accounts import Lockup
from service.core.errors import (
    DomainError,
    ErrorKind,
    InsufficientFundsError,
    VoteAccountNotFoundError,
    combine_violations,
)
from service.core.fees import ServiceFee, priority_fee_percentile
from service.core.plans import (
    DurableNonce,
    PreparedStakeTransaction,
    PreparedTransaction,
    RecentBlockhash,
    StakeContext,
    StakeRequest,
    TransactionOptions,
    TransactionVersion,
    build_stake_transaction,
)
from service.core.policy import UNRESTRICTED, CallerPolicy
from service.core.seeds import SeedPurpose, seed_from_entropy, seed_from_request_id

from ._context import ChainContext, ChainSnapshot
from ._rpc import SolanaRpc

# Percentile of recent prioritization fees per priority level.
PRIORITY_PERCENTILES = {"none": None, "low": 25, "medium": 50, "high": 75, "very_high": 95}


class EpochRewardsActiveError(DomainError):
    """Stake instructions fail while the epoch's rewards are being distributed."""

    kind = ErrorKind.UNAVAILABLE
    default_reason = "EPOCH_REWARDS_ACTIVE"
    default_hint = "Retry in a few seconds: distribution lasts a few slots at epoch start."
    retry_after = 4.0


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


def _collect(*checks: Callable[[], object]) -> list[object]:
    """Run every check; raise all their field violations at once."""
    results: list[object] = []
    failures: list[DomainError] = []
    for check in checks:
        try:
            results.append(check())
        except DomainError as exc:
            failures.append(exc)
            results.append(None)
    problem = combine_violations(failures)
    if problem is not None:
        raise problem
    return results


class StakingOperations:
    """Builds transactions from the cached chain context; simulates on request."""

    def __init__(
        self,
        *,
        rpc: SolanaRpc,
        context: ChainContext,
        fee: FeePolicy,
        default_vote_account: str = "",
        entropy: Callable[[int], bytes] = os.urandom,
        rpc_timeout: float = 5.0,
    ) -> None:
        self._rpc = rpc
        self._context = context
        self._fee = fee
        self._default_vote_account = default_vote_account
        self._entropy = entropy
        self._timeout = rpc_timeout

    def fee_for(self, policy: CallerPolicy) -> FeePolicy:
        """The service fee that applies to a caller: its key's override, else the operator's."""
        if policy.service_fee_bps is None:
            return self._fee
        return FeePolicy(bps=policy.service_fee_bps, recipient=self._fee.recipient)

    def network_info(self, policy: CallerPolicy = UNRESTRICTED) -> NetworkInfo:
        return NetworkInfo(
            snapshot=self._context.snapshot(),
            fee=self.fee_for(policy),
            default_vote_account=self._default_vote_account,
        )

    async def build_stake(
        self, params: StakeParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltStake:
        """Plan a stake transaction; simulate it when asked.

        Raises:
            DomainError: invalid fields (all reported together), unknown vote account,
                below the minimum delegation, insufficient funds (simulation), chain
                unavailable.
        """
        snapshot = self._context.snapshot()
        if snapshot.epoch_rewards_active:
            raise EpochRewardsActiveError(
                f"epoch {snapshot.epoch} rewards are being distributed; stake accounts are locked"
            )
        options = params.options
        vote_text = params.vote_account or self._default_vote_account
        wallet, vote_account, stake_authority, custodian, nonce_account, nonce_authority = _collect(
            lambda: parse_address(params.wallet, field="wallet", require_on_curve=True),
            lambda: _required_vote(vote_text),
            lambda: _optional(params.stake_authority, "stake_authority"),
            lambda: _optional(params.lockup[2] if params.lockup else "", "lockup.custodian"),
            lambda: _optional(options.nonce_account, "options.durable_nonce.nonce_account"),
            lambda: _optional(
                options.nonce_authority, "options.durable_nonce.nonce_authority", on_curve=True
            ),
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
        if params.request_id:
            seed = seed_from_request_id(
                purpose=SeedPurpose.STAKE, wallet=wallet, request_id=params.request_id
            )
        else:
            seed = seed_from_entropy(
                purpose=SeedPurpose.STAKE, wallet=wallet, entropy=self._entropy(16)
            )
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
        request = StakeRequest(
            wallet=wallet,
            vote_account=vote_account,
            amount_lamports=params.amount_lamports,
            seed=seed,
            stake_authority=stake_authority if isinstance(stake_authority, Pubkey) else None,
            lockup=lockup,
            service_fee=ServiceFee(
                bps=fee.bps,
                recipient=Pubkey.from_string(fee.recipient) if fee.recipient else None,
            ),
            options=TransactionOptions(
                version=options.version,
                compute_unit_price_micro_lamports=self._unit_price(snapshot, options),
                compute_unit_limit=options.compute_unit_limit,
                memo=options.memo,
            ),
        )
        plan = build_stake_transaction(
            request,
            StakeContext(
                lifetime=lifetime,
                rent_exempt_reserve_lamports=snapshot.stake_rent_exempt_reserve,
                minimum_delegation_lamports=snapshot.minimum_delegation,
                epoch=snapshot.epoch,
            ),
        )
        simulation = None
        if options.simulate:
            simulation = await self.simulate(plan.prepared)
        return BuiltStake(
            plan=plan, simulation=simulation, expected_active_epoch=snapshot.epoch + 1
        )

    def _unit_price(self, snapshot: ChainSnapshot, options: BuildOptions) -> int:
        if options.compute_unit_price_micro_lamports is not None:
            return options.compute_unit_price_micro_lamports
        percentile = PRIORITY_PERCENTILES[options.priority_level]
        if percentile is None:
            return 0
        return priority_fee_percentile(snapshot.recent_priority_fees, percentile)

    async def _lifetime(
        self, snapshot: ChainSnapshot, nonce_account: Pubkey | None, nonce_authority: Pubkey
    ) -> RecentBlockhash | DurableNonce:
        if nonce_account is None:
            return RecentBlockhash(
                blockhash=Hash.from_string(snapshot.blockhash),
                last_valid_block_height=snapshot.last_valid_block_height,
            )
        # The one per-request read on the build path, and only for durable nonces.
        answer = await self._rpc.call(
            "getAccountInfo",
            [str(nonce_account), {"encoding": "base64", "commitment": "confirmed"}],
            timeout=self._timeout,
        )
        value = answer.get("value") if isinstance(answer, dict) else None
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

    async def simulate(self, prepared: PreparedTransaction) -> Simulation:
        """Execute the unsigned transaction against current state, without landing it.

        Raises:
            InsufficientFundsError: the wallet cannot cover the debits.
            SimulationFailedError: any other failure, with the error and logs.
        """
        touched = _writable_accounts(prepared)
        payer = str(prepared.required_signers[0])
        simulated, before = await asyncio.gather(
            self._rpc.call(
                "simulateTransaction",
                [
                    base64.b64encode(prepared.transaction).decode(),
                    {
                        "encoding": "base64",
                        "sigVerify": False,
                        "commitment": "confirmed",
                        "accounts": {"encoding": "base64", "addresses": touched},
                    },
                ],
                timeout=self._timeout,
            ),
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
        pre = [(account or {}).get("lamports", 0) for account in before["value"]]
        error = value.get("err")
        logs = tuple(value.get("logs") or ())
        if error is not None:
            if _is_insufficient_funds(error, logs):
                raise InsufficientFundsError(
                    required_lamports=prepared.fees.total_debit_lamports,
                    available_lamports=pre[touched.index(payer)] if payer in touched else 0,
                    address=payer,
                )
            raise SimulationFailedError(
                f"the transaction would fail: {error}",
                metadata={"error": str(error), "logs": "\n".join(logs[-10:])},
            )
        post = [(account or {}).get("lamports", 0) for account in value.get("accounts") or []]
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


def _required_vote(text: str) -> Pubkey:
    if not text:
        raise core_errors.InvalidArgumentError(
            "vote_account is required: the operator configured no default validator",
            field="vote_account",
        )
    return parse_address(text, field="vote_account")


def _optional(text: str, field: str, *, on_curve: bool = False) -> Pubkey | None:
    return parse_address(text, field=field, require_on_curve=on_curve) if text else None


def _writable_accounts(prepared: PreparedTransaction) -> list[str]:
    seen: dict[str, None] = {}
    for instruction in prepared.instructions:
        for account in instruction.accounts:
            if account.is_writable:
                seen.setdefault(str(account.address), None)
    return list(seen)


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
