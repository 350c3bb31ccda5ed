"""The chain shell of the stake management builds: split, move, authorize, set lockup,
redelegate.

Each reads the accounts it names and the Clock and StakeHistory sysvars per request
(they change with every transaction), turns plain request values into core values,
calls the core plan, and simulates when asked. The steps every build shares (durable
nonce, priority fee and its cap, simulation, seeds, the epoch-rewards check) are
those of :class:`StakingOperations`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from solders.pubkey import Pubkey

from service.core._validate import parse_address
from service.core.encoders import StakeAuthorize
from service.core.errors import (
    InvalidArgumentError,
    StakeAccountExistsError,
    VoteAccountNotFoundError,
)
from service.core.plans import (
    AuthorizeContext,
    AuthorizeRequest,
    DurableNonce,
    MoveContext,
    MoveRequest,
    MoveType,
    PreparedAuthorizeTransaction,
    PreparedMoveTransaction,
    PreparedRedelegateTransaction,
    PreparedSetLockupTransaction,
    PreparedSplitTransaction,
    PreparedTransaction,
    RecentBlockhash,
    RedelegateContext,
    RedelegateRequest,
    RedelegateStep,
    RedelegateStrategy,
    SetLockupContext,
    SetLockupRequest,
    SplitContext,
    SplitRequest,
    StakeCoolingDownError,
    TransactionOptions,
    build_authorize_transaction,
    build_move_transaction,
    build_redelegate_transaction,
    build_set_lockup_transaction,
    build_split_transaction,
)
from service.core.policy import UNRESTRICTED, CallerPolicy
from service.core.positions import seconds_until_epoch
from service.core.seeds import SeedPurpose, stake_account_address

from ._context import ChainContext, ChainSnapshot
from ._operations import (
    BuildOptions,
    Simulation,
    StakingOperations,
    _check_rewards,
    _collect,
    _optional,
    _request_checks,
)
from ._rpc import SolanaRpc
from ._stake_reads import StakeReader, StakeReads

Plan = TypeVar("Plan")


@dataclass(frozen=True, kw_only=True)
class SplitParams:
    """A BuildSplitTransaction request as plain values (addresses still base58)."""

    wallet: str
    stake_account: str
    amount_lamports: int
    request_id: str = ""
    options: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True, kw_only=True)
class MoveParams:
    """A BuildMoveStakeTransaction request as plain values."""

    wallet: str
    source_stake_account: str
    destination_stake_account: str
    amount_lamports: int
    move_type: MoveType = MoveType.STAKE
    request_id: str = ""
    options: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True, kw_only=True)
class AuthorizeParams:
    """A BuildAuthorizeTransaction request as plain values.

    Attributes:
        authority_type: None when the request did not name one (refused).
    """

    wallet: str
    stake_account: str
    new_authority: str
    authority_type: StakeAuthorize | None
    unchecked: bool = False
    custodian: str = ""
    request_id: str = ""
    options: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True, kw_only=True)
class SetLockupParams:
    """A BuildSetLockupTransaction request as plain values (None: field unchanged)."""

    wallet: str
    stake_account: str
    unix_timestamp: int | None = None
    epoch: int | None = None
    custodian: str = ""
    custodian_signs: bool = False
    request_id: str = ""
    options: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True, kw_only=True)
class RedelegateParams:
    """A BuildRedelegateTransaction request as plain values."""

    wallet: str
    stake_account: str
    vote_account: str
    strategy: RedelegateStrategy = RedelegateStrategy.AUTO
    request_id: str = ""
    options: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True, kw_only=True)
class BuiltSplit:
    plan: PreparedSplitTransaction
    simulation: Simulation | None


@dataclass(frozen=True, kw_only=True)
class BuiltMove:
    plan: PreparedMoveTransaction
    simulation: Simulation | None


@dataclass(frozen=True, kw_only=True)
class BuiltAuthorize:
    plan: PreparedAuthorizeTransaction
    simulation: Simulation | None


@dataclass(frozen=True, kw_only=True)
class BuiltSetLockup:
    plan: PreparedSetLockupTransaction
    simulation: Simulation | None


@dataclass(frozen=True, kw_only=True)
class BuiltRedelegate:
    """The redelegation plan; ``snapshot`` dates its epochs."""

    plan: PreparedRedelegateTransaction
    simulation: Simulation | None
    snapshot: ChainSnapshot


@dataclass(frozen=True, kw_only=True)
class _Call:
    """What every build parses and reads first."""

    wallet: Pubkey
    snapshot: ChainSnapshot
    options: BuildOptions
    policy: CallerPolicy
    nonce_account: Pubkey | None
    nonce_authority: Pubkey


def _address(text: str, field: str) -> Callable[[], object]:
    return lambda: parse_address(text, field=field)


def _key(parsed: object) -> Pubkey:
    assert isinstance(parsed, Pubkey)  # parse_address returned it
    return parsed


def _maybe_key(parsed: object) -> Pubkey | None:
    return parsed if isinstance(parsed, Pubkey) else None


class StakeManagement:
    """Builds split, move, authorize, set-lockup and redelegate transactions."""

    def __init__(
        self,
        *,
        operations: StakingOperations,
        rpc: SolanaRpc,
        context: ChainContext,
        rpc_timeout: float = 5.0,
    ) -> None:
        """Create the builds.

        Args:
            operations: The native staking operations, whose build steps these share.
            rpc: Where the named accounts are read (per request, never cached).
            context: The cached chain context (rent, minimum delegation, vote accounts).
        """
        self._ops = operations
        self._context = context
        self._reader = StakeReader(rpc, timeout=rpc_timeout, cache_seconds=0)

    # --- the steps every build here shares ------------------------------------------

    def _begin(
        self,
        wallet: str,
        options: BuildOptions,
        request_id: str,
        policy: CallerPolicy,
        *fields: Callable[[], object],
    ) -> tuple[_Call, list[object]]:
        """Parse the wallet, the durable nonce, the request id and ``fields`` (all
        violations reported at once); refuse while epoch rewards are paid."""
        snapshot = self._context.snapshot()
        _check_rewards(snapshot)
        owner, nonce_account, nonce_authority, _, _, _, *parsed = _collect(
            lambda: parse_address(wallet, field="wallet", require_on_curve=True),
            *_request_checks(options, request_id),
            *fields,
        )
        assert isinstance(owner, Pubkey)
        call = _Call(
            wallet=owner,
            snapshot=snapshot,
            options=options,
            policy=policy,
            nonce_account=nonce_account if isinstance(nonce_account, Pubkey) else None,
            nonce_authority=nonce_authority if isinstance(nonce_authority, Pubkey) else owner,
        )
        return call, parsed

    async def _read(
        self,
        call: _Call,
        named: Sequence[tuple[Pubkey, str]],
        extra: Sequence[Pubkey] = (),
    ) -> tuple[StakeReads, RecentBlockhash | DurableNonce]:
        """The named accounts (the wallet's: else NOT_WITHDRAW_AUTHORITY), the sysvars,
        the balances of the wallet and ``extra``, and the transaction's lifetime."""
        reads, lifetime = await asyncio.gather(
            self._reader.read(call.wallet, named=named, extra=extra),
            self._ops.lifetime(call.snapshot, call.nonce_account, call.nonce_authority),
        )
        self._ops.check_epoch_rewards(reads, call.snapshot)
        return reads, lifetime

    async def _finish(
        self,
        call: _Call,
        build: Callable[[TransactionOptions], Plan],
        prepared_of: Callable[[Plan], PreparedTransaction],
        first: Plan,
    ) -> tuple[Plan, Simulation | None]:
        return await self._ops.prepare(
            build,
            prepared_of,
            self._tx_options(call),
            call.options,
            first=first,
        )

    def _tx_options(self, call: _Call) -> TransactionOptions:
        return self._ops.transaction_options(call.options, call.policy)

    # --- builds ---------------------------------------------------------------------

    async def build_split(
        self, params: SplitParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltSplit:
        """Plan a split of a stake account of the wallet into a new seed-derived one.

        Raises:
            DomainError: invalid fields, unknown or foreign stake account, an amount
                that leaves a part below the minimum delegation (with the nearest
                amounts that work) or more than the account has, the new account
                already existing (the request_id was used), epoch rewards.
        """
        call, parsed = self._begin(
            params.wallet,
            params.options,
            params.request_id,
            policy,
            _address(params.stake_account, "stake_account"),
        )
        wallet, stake_account = call.wallet, _key(parsed[0])
        seed = self._ops.seed(SeedPurpose.SPLIT, wallet, params.request_id)
        template = SplitRequest(
            wallet=wallet,
            stake_account=stake_account,
            amount_lamports=params.amount_lamports,
            seed=seed,
        )
        policy.check(wallet=str(wallet), amount_lamports=params.amount_lamports, vote_account=None)
        new_account = stake_account_address(base=wallet, seed=seed)
        reads, lifetime = await self._read(
            call, [(stake_account, "stake_account")], extra=[new_account]
        )
        context = SplitContext(
            lifetime=lifetime,
            account=reads.named[0],
            epoch=reads.sysvars.clock.epoch,
            history=reads.sysvars.history,
            rent_exempt_reserve_lamports=call.snapshot.stake_rent_exempt_reserve,
            minimum_delegation_lamports=call.snapshot.minimum_delegation,
            wallet_balance_lamports=reads.balances.get(wallet) or 0,
        )

        def build(tx_options: TransactionOptions) -> PreparedSplitTransaction:
            return build_split_transaction(replace(template, options=tx_options), context)

        plan = build(self._tx_options(call))
        if reads.balances.get(new_account) is not None:
            raise StakeAccountExistsError(stake_account=str(new_account), seed=seed)
        plan, simulation = await self._finish(call, build, lambda p: p.prepared, plan)
        return BuiltSplit(plan=plan, simulation=simulation)

    async def build_move(
        self, params: MoveParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltMove:
        """Plan a MoveStake or MoveLamports between two stake accounts of the wallet.

        Raises:
            DomainError: invalid fields, the same account twice, unknown or foreign
                stake accounts, accounts that cannot move into each other
                (MOVE_MISMATCH naming why), amounts below the minimum delegation or
                above what the source has, epoch rewards.
        """
        call, parsed = self._begin(
            params.wallet,
            params.options,
            params.request_id,
            policy,
            _address(params.source_stake_account, "source_stake_account"),
            _address(params.destination_stake_account, "destination_stake_account"),
        )
        wallet, source, destination = call.wallet, _key(parsed[0]), _key(parsed[1])
        template = MoveRequest(
            wallet=wallet,
            source=source,
            destination=destination,
            amount_lamports=params.amount_lamports,
            move_type=params.move_type,
        )
        policy.check(wallet=str(wallet), amount_lamports=params.amount_lamports, vote_account=None)
        reads, lifetime = await self._read(
            call,
            [(source, "source_stake_account"), (destination, "destination_stake_account")],
        )
        clock = reads.sysvars.clock
        context = MoveContext(
            lifetime=lifetime,
            source=reads.named[0],
            destination=reads.named[1],
            epoch=clock.epoch,
            unix_timestamp=clock.unix_timestamp,
            history=reads.sysvars.history,
            rent_exempt_reserve_lamports=call.snapshot.stake_rent_exempt_reserve,
            minimum_delegation_lamports=call.snapshot.minimum_delegation,
            wallet_balance_lamports=reads.balances.get(wallet) or 0,
        )

        def build(tx_options: TransactionOptions) -> PreparedMoveTransaction:
            return build_move_transaction(replace(template, options=tx_options), context)

        plan, simulation = await self._finish(
            call, build, lambda p: p.prepared, build(self._tx_options(call))
        )
        return BuiltMove(plan=plan, simulation=simulation)

    async def build_authorize(
        self, params: AuthorizeParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltAuthorize:
        """Plan a change of the stake or withdraw authority of a stake account.

        Raises:
            DomainError: invalid fields (AuthorizeChecked to a key that cannot sign),
                unknown or foreign stake account, an unchanged authority, a
                withdrawer change under a lockup without its custodian, a new
                withdrawer (or an account balance) the key's policy does not allow,
                epoch rewards.
        """
        call, parsed = self._begin(
            params.wallet,
            params.options,
            params.request_id,
            policy,
            _address(params.stake_account, "stake_account"),
            _address(params.new_authority, "new_authority"),
            lambda: _optional(params.custodian, "custodian"),
            lambda: _authority_type(params.authority_type),
        )
        wallet, stake_account, new_authority = call.wallet, _key(parsed[0]), _key(parsed[1])
        role = parsed[3]
        assert isinstance(role, StakeAuthorize)
        template = AuthorizeRequest(
            wallet=wallet,
            stake_account=stake_account,
            new_authority=new_authority,
            role=role,
            checked=not params.unchecked,
            custodian=_maybe_key(parsed[2]),
        )
        withdrawer = role is StakeAuthorize.WITHDRAWER
        policy.check(
            wallet=str(wallet),
            amount_lamports=0,
            vote_account=None,
            new_withdrawer=str(new_authority) if withdrawer else None,
        )
        reads, lifetime = await self._read(call, [(stake_account, "stake_account")])
        account = reads.named[0]
        if withdrawer:
            # Handing the withdraw authority over moves the account's whole balance.
            policy.check(wallet=str(wallet), amount_lamports=account.lamports, vote_account=None)
        clock = reads.sysvars.clock
        context = AuthorizeContext(
            lifetime=lifetime,
            account=account,
            epoch=clock.epoch,
            unix_timestamp=clock.unix_timestamp,
            wallet_balance_lamports=reads.balances.get(wallet) or 0,
        )

        def build(tx_options: TransactionOptions) -> PreparedAuthorizeTransaction:
            return build_authorize_transaction(replace(template, options=tx_options), context)

        plan, simulation = await self._finish(
            call, build, lambda p: p.prepared, build(self._tx_options(call))
        )
        return BuiltAuthorize(plan=plan, simulation=simulation)

    async def build_set_lockup(
        self, params: SetLockupParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltSetLockup:
        """Plan a SetLockupChecked on a stake account of the wallet.

        Raises:
            DomainError: invalid fields (nothing to change, a new custodian that
                cannot sign), unknown or foreign stake account, a lockup in force
                without its custodian signing, an unchanged lockup, epoch rewards.
        """
        call, parsed = self._begin(
            params.wallet,
            params.options,
            params.request_id,
            policy,
            _address(params.stake_account, "stake_account"),
            lambda: _optional(params.custodian, "lockup.custodian"),
        )
        wallet, stake_account = call.wallet, _key(parsed[0])
        template = SetLockupRequest(
            wallet=wallet,
            stake_account=stake_account,
            unix_timestamp=params.unix_timestamp,
            epoch=params.epoch,
            custodian=_maybe_key(parsed[1]),
            custodian_signs=params.custodian_signs,
        )
        policy.check(wallet=str(wallet), amount_lamports=0, vote_account=None)
        reads, lifetime = await self._read(call, [(stake_account, "stake_account")])
        clock = reads.sysvars.clock
        context = SetLockupContext(
            lifetime=lifetime,
            account=reads.named[0],
            epoch=clock.epoch,
            unix_timestamp=clock.unix_timestamp,
            wallet_balance_lamports=reads.balances.get(wallet) or 0,
        )

        def build(tx_options: TransactionOptions) -> PreparedSetLockupTransaction:
            return build_set_lockup_transaction(replace(template, options=tx_options), context)

        plan, simulation = await self._finish(
            call, build, lambda p: p.prepared, build(self._tx_options(call))
        )
        return BuiltSetLockup(plan=plan, simulation=simulation)

    async def build_redelegate(
        self, params: RedelegateParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltRedelegate:
        """Plan the next step of moving a position to another validator.

        Raises:
            DomainError: invalid fields, unknown vote account, unknown or foreign
                stake account, already delegated there, cooling down (with a
                RetryInfo delay until it can be delegated), a new account the wallet
                cannot fund (NEW_ACCOUNT), the key's policy, epoch rewards.
        """
        call, parsed = self._begin(
            params.wallet,
            params.options,
            params.request_id,
            policy,
            _address(params.stake_account, "stake_account"),
            _address(params.vote_account, "vote_account"),
        )
        wallet, stake_account, vote_account = call.wallet, _key(parsed[0]), _key(parsed[1])
        seed = self._ops.seed(SeedPurpose.STAKE, wallet, params.request_id)
        template = RedelegateRequest(
            wallet=wallet,
            stake_account=stake_account,
            vote_account=vote_account,
            seed=seed,
            strategy=params.strategy,
        )
        policy.check(wallet=str(wallet), amount_lamports=0, vote_account=str(vote_account))
        if str(vote_account) not in call.snapshot.vote_accounts:
            raise VoteAccountNotFoundError(vote_account=str(vote_account))
        new_account = stake_account_address(base=wallet, seed=seed)
        reads, lifetime = await self._read(
            call, [(stake_account, "stake_account")], extra=[new_account]
        )
        context = RedelegateContext(
            lifetime=lifetime,
            account=reads.named[0],
            epoch=reads.sysvars.clock.epoch,
            history=reads.sysvars.history,
            rent_exempt_reserve_lamports=call.snapshot.stake_rent_exempt_reserve,
            minimum_delegation_lamports=call.snapshot.minimum_delegation,
            wallet_balance_lamports=reads.balances.get(wallet) or 0,
        )

        def build(tx_options: TransactionOptions) -> PreparedRedelegateTransaction:
            return build_redelegate_transaction(replace(template, options=tx_options), context)

        try:
            plan = build(self._tx_options(call))
        except StakeCoolingDownError as exc:
            exc.retry_after = max(_seconds_until(call.snapshot, exc.ready_epoch), 1.0)
            raise
        if plan.step is RedelegateStep.NEW_ACCOUNT and reads.balances.get(new_account) is not None:
            raise StakeAccountExistsError(stake_account=str(new_account), seed=seed)
        policy.check(wallet=str(wallet), amount_lamports=plan.stake_lamports, vote_account=None)
        plan, simulation = await self._finish(call, build, lambda p: p.prepared, plan)
        return BuiltRedelegate(plan=plan, simulation=simulation, snapshot=call.snapshot)


def _authority_type(value: StakeAuthorize | None) -> StakeAuthorize:
    if value is None:
        raise InvalidArgumentError(
            "authority_type is required: STAKE_AUTHORITY_TYPE_STAKER or "
            "STAKE_AUTHORITY_TYPE_WITHDRAWER",
            field="authority_type",
        )
    return value


def _seconds_until(snapshot: ChainSnapshot, epoch: int) -> float:
    """Seconds from now until ``epoch`` starts, from the cached chain context."""
    elapsed = max(0.0, time.monotonic() - snapshot.fetched_at)
    ahead = seconds_until_epoch(
        epoch,
        epoch=snapshot.epoch,
        slot_index=snapshot.slot_index,
        slots_in_epoch=snapshot.slots_in_epoch,
        slot_seconds=snapshot.slot_seconds,
    )
    return max(ahead - elapsed, 0.0)
