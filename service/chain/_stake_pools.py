"""Liquid staking through SPL stake pools: read the configured pools, build deposits
and withdrawals.

A pool's state changes with every deposit, so builds and reads fetch it per request:
one ``getMultipleAccounts`` with the Clock sysvar, the pool, its mint, its reserve
(and, when needed, its validator list) and the wallet's accounts. The pool's mint,
reserve and validator list never change, so their addresses are remembered after the
first read of a pool (which therefore costs one more round trip). DepositStake also
reads the named stake account and the stake sysvars (as the native unstake does).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from solders.pubkey import Pubkey

from service.core import errors as core_errors
from service.core._validate import parse_address
from service.core.fees import ServiceFee
from service.core.paging import PageToken, decode_page_token, fingerprint, page_offset, page_size
from service.core.plans import (
    LiquidStakeContext,
    LiquidStakeRequest,
    LiquidUnstakeContext,
    LiquidUnstakeMethod,
    LiquidUnstakeRequest,
    PreparedLiquidStakeTransaction,
    PreparedLiquidUnstakeTransaction,
    TransactionOptions,
    build_liquid_stake_transaction,
    build_liquid_unstake_transaction,
)
from service.core.policy import UNRESTRICTED, CallerPolicy
from service.core.positions import view_stake_account
from service.core.programs import (
    STAKE_ACCOUNT_SIZE,
    STAKE_POOL_PROGRAMS,
    SYSVAR_CLOCK,
    TOKEN_2022_PROGRAM,
    TOKEN_ACCOUNT_SIZE,
    TOKEN_PROGRAM,
)
from service.core.seeds import SeedPurpose, stake_account_address
from service.core.stake_pool_errors import StakePoolNotConfiguredError
from service.core.stake_pools import (
    InvalidStakePoolError,
    PoolSnapshot,
    decode_stake_pool,
    decode_validator_list,
    estimated_apy,
)
from service.core.sysvars import decode_clock
from service.core.tokens import (
    TokenAccount,
    associated_token_address,
    decode_mint,
    decode_token_account,
)

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
from ._stake_reads import StakeReader

_COMMITMENT: Final = "confirmed"
_SECONDS_PER_YEAR: Final = 365.25 * 24 * 3600
# Rent is (128 bytes of overhead + data) x a per-byte rate: a token account's rent
# follows from the stake account's that the chain context keeps.
_ACCOUNT_STORAGE_OVERHEAD: Final = 128


@dataclass(frozen=True, kw_only=True)
class StakePoolConfig:
    """A pool the operator offers: its StakePool account and a label for people."""

    address: str
    label: str = ""


@dataclass(frozen=True, kw_only=True)
class StakePoolInfo:
    """A configured pool as read now.

    Attributes:
        label: The operator's label.
        snapshot: The pool's state.
        estimated_apy: Yield implied by the last epoch's change of the pool token's value
            (None before the pool's second epoch).
    """

    label: str
    snapshot: PoolSnapshot
    estimated_apy: float | None


@dataclass(frozen=True, kw_only=True)
class StakePoolPage:
    pools: tuple[StakePoolInfo, ...]
    next_page_token: str
    total_size: int


@dataclass(frozen=True, kw_only=True)
class LiquidStakeParams:
    """A BuildLiquidStakeTransaction request as plain values (addresses still base58)."""

    wallet: str
    stake_pool: str
    amount_lamports: int = 0
    stake_account: str = ""
    min_pool_tokens: int | None = None
    request_id: str = ""
    options: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True, kw_only=True)
class LiquidUnstakeParams:
    """A BuildLiquidUnstakeTransaction request as plain values."""

    wallet: str
    stake_pool: str
    pool_tokens: int = 0
    method: LiquidUnstakeMethod | None = None
    min_lamports: int | None = None
    request_id: str = ""
    options: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True, kw_only=True)
class BuiltLiquidStake:
    plan: PreparedLiquidStakeTransaction
    simulation: Simulation | None
    label: str


@dataclass(frozen=True, kw_only=True)
class BuiltLiquidUnstake:
    plan: PreparedLiquidUnstakeTransaction
    simulation: Simulation | None
    label: str


@dataclass(frozen=True)
class _Layout:
    """A pool's accounts that never change."""

    program_id: Pubkey
    mint: Pubkey
    reserve: Pubkey
    validator_list: Pubkey
    token_program: Pubkey


def _data(value: Mapping[str, Any]) -> bytes:
    return base64.b64decode(value["data"][0])


def _is_token_account(value: Mapping[str, Any] | None) -> bool:
    """Whether an account read holds an initialized token account (lamports alone at
    the address make no token account: it is still to be created)."""
    if value is None or value.get("owner") not in _TOKEN_PROGRAMS:
        return False
    try:
        decode_token_account(_data(value))
    except core_errors.DomainError:
        return False
    return True


_TOKEN_PROGRAMS: Final = frozenset({str(TOKEN_PROGRAM), str(TOKEN_2022_PROGRAM)})


def epochs_per_year(chain: ChainSnapshot) -> float:
    """Epochs in a year at the cluster's current slot time."""
    seconds = chain.slots_in_epoch * chain.slot_seconds
    return _SECONDS_PER_YEAR / seconds if seconds > 0 else 0.0


class LiquidStakingOperations:
    """The configured stake pools: reads and builds."""

    def __init__(
        self,
        *,
        operations: StakingOperations,
        rpc: SolanaRpc,
        context: ChainContext,
        pools: Sequence[StakePoolConfig],
        rpc_timeout: float = 5.0,
    ) -> None:
        """Create the operations.

        Args:
            operations: The native staking operations, whose build steps (fees,
                lifetimes, simulation) these share.
            pools: The pools offered, in the order ListStakePools lists them.
        """
        self._operations = operations
        self._rpc = rpc
        self._context = context
        self._pools = {Pubkey.from_string(p.address): p for p in pools}
        self._timeout = rpc_timeout
        self._reader = StakeReader(rpc, timeout=rpc_timeout, cache_seconds=0)
        self._layouts: dict[Pubkey, _Layout] = {}

    # --- reads --------------------------------------------------------------------

    async def list_stake_pools(
        self, *, page_size_value: int = 0, page_token: str = ""
    ) -> StakePoolPage:
        """A page of the configured pools, as read now (their validator lists too, for
        their validator counts; the validators themselves are GetStakePool's).

        Raises:
            InvalidArgumentError: Bad page size or token.
            InvalidStakePoolError: A configured address is not a stake pool.
        """
        size = page_size(page_size_value)
        bound = fingerprint("stake_pools")
        token = decode_page_token(page_token, kind="stake_pools", fingerprint=bound)
        offset = page_offset(token)
        addresses = list(self._pools)[offset : offset + size]
        snapshots, _ = await self._read(addresses, validators=True) if addresses else ([], [])
        end = offset + len(addresses)
        next_token = ""
        if end < len(self._pools):
            next_token = PageToken(
                kind="stake_pools", fingerprint=bound, position=str(end)
            ).encode()
        return StakePoolPage(
            pools=tuple(self._info(s) for s in snapshots),
            next_page_token=next_token,
            total_size=len(self._pools),
        )

    async def get_stake_pool(self, stake_pool: str) -> StakePoolInfo:
        """One configured pool, with its validators.

        Raises:
            InvalidAddressError / StakePoolNotConfiguredError: Not a configured pool.
            InvalidStakePoolError: Its account is not a stake pool.
        """
        address = self._configured(stake_pool)
        snapshots, _ = await self._read([address], validators=True)
        return self._info(snapshots[0])

    def _info(self, snapshot: PoolSnapshot) -> StakePoolInfo:
        return StakePoolInfo(
            label=self._pools[snapshot.address].label,
            snapshot=snapshot,
            estimated_apy=estimated_apy(
                snapshot.pool, epochs_per_year=epochs_per_year(self._context.snapshot())
            ),
        )

    def _configured(self, text: str, field: str = "stake_pool") -> Pubkey:
        if not text:
            raise core_errors.InvalidArgumentError(
                "stake_pool is required (see ListStakePools)", field=field
            )
        address = parse_address(text, field=field)
        if address not in self._pools:
            raise StakePoolNotConfiguredError(stake_pool=str(address), field=field)
        return address

    async def _call(self, addresses: Sequence[Pubkey]) -> list[Any]:
        answer = await self._rpc.call(
            "getMultipleAccounts",
            [[str(a) for a in addresses], {"encoding": "base64", "commitment": _COMMITMENT}],
            timeout=self._timeout,
        )
        return list(answer["value"])

    async def _layout(self, addresses: Sequence[Pubkey]) -> None:
        """Learn the fixed accounts of pools read for the first time."""
        missing = [a for a in addresses if a not in self._layouts]
        if not missing:
            return
        for address, value in zip(missing, await self._call(missing), strict=True):
            state, owner = self._decode_pool(address, value)
            self._layouts[address] = _Layout(
                program_id=owner,
                mint=state.pool_mint,
                reserve=state.reserve_stake,
                validator_list=state.validator_list,
                token_program=state.token_program_id,
            )

    async def _token_account(self, stake_pool: Pubkey, owner: Pubkey) -> Pubkey:
        """``owner``'s associated token account for the pool's mint."""
        await self._layout([stake_pool])
        layout = self._layouts[stake_pool]
        return associated_token_address(
            owner=owner, mint=layout.mint, token_program=layout.token_program
        )

    def _decode_pool(self, address: Pubkey, value: Any) -> tuple[Any, Pubkey]:
        if value is None:
            raise InvalidStakePoolError(
                f"configured stake pool {address} does not exist on this cluster",
                metadata={"stake_pool": str(address)},
            )
        owner = Pubkey.from_string(value["owner"])
        if owner not in STAKE_POOL_PROGRAMS:
            raise InvalidStakePoolError(
                f"configured stake pool {address} is owned by {owner}, not by a stake-pool program",
                metadata={"stake_pool": str(address), "owner": str(owner)},
            )
        return decode_stake_pool(_data(value), address=str(address)), owner

    async def _read(
        self, addresses: Sequence[Pubkey], *, validators: bool, accounts: Sequence[Pubkey] = ()
    ) -> tuple[list[PoolSnapshot], list[Any]]:
        """The pools now, and the raw values of ``accounts`` (None: no account), from
        one getMultipleAccounts (after a first one for pools never read before)."""
        await self._layout(addresses)
        layouts = [self._layouts[a] for a in addresses]
        keys: list[Pubkey] = [SYSVAR_CLOCK]
        per_pool = 4 if validators else 3
        for address, layout in zip(addresses, layouts, strict=True):
            keys += [address, layout.mint, layout.reserve]
            if validators:
                keys.append(layout.validator_list)
        keys += accounts
        values = await self._call(keys)
        clock = values[0]
        if clock is None:
            raise InvalidStakePoolError("the node did not return the Clock sysvar")
        epoch = decode_clock(_data(clock)).epoch
        rent = self._context.snapshot().stake_rent_exempt_reserve
        snapshots = []
        for index, (address, layout) in enumerate(zip(addresses, layouts, strict=True)):
            pool_value, mint_value, reserve_value, *rest = values[
                1 + index * per_pool : 1 + (index + 1) * per_pool
            ]
            state, owner = self._decode_pool(address, pool_value)
            fixed = (owner, state.pool_mint, state.reserve_stake, state.validator_list)
            if fixed != (layout.program_id, layout.mint, layout.reserve, layout.validator_list):
                raise InvalidStakePoolError(f"stake pool {address} changed its accounts")
            if mint_value is None or reserve_value is None:
                raise InvalidStakePoolError(
                    f"the mint or reserve of stake pool {address} does not exist",
                    metadata={"stake_pool": str(address)},
                )
            validator_list = None
            if validators:
                if rest[0] is None:
                    raise InvalidStakePoolError(
                        f"the validator list of stake pool {address} does not exist",
                        metadata={"stake_pool": str(address)},
                    )
                validator_list = decode_validator_list(
                    _data(rest[0]), address=str(layout.validator_list)
                )
            snapshots.append(
                PoolSnapshot(
                    address=address,
                    program_id=owner,
                    pool=state,
                    mint=decode_mint(_data(mint_value), address=str(layout.mint)),
                    reserve_lamports=int(reserve_value["lamports"]),
                    reserve_rent_exempt_lamports=rent,
                    epoch=epoch,
                    validator_list=validator_list,
                )
            )
        return snapshots, values[1 + len(addresses) * per_pool :]

    # --- builds -------------------------------------------------------------------

    def _service_fee(self, policy: CallerPolicy) -> ServiceFee:
        fee = self._operations.fee_for(policy)
        return ServiceFee(
            bps=fee.bps, recipient=Pubkey.from_string(fee.recipient) if fee.recipient else None
        )

    async def build_liquid_stake(
        self, params: LiquidStakeParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltLiquidStake:
        """Plan a deposit (DepositSol of amount_lamports, or DepositStake of
        stake_account); simulate it when asked.

        Raises:
            DomainError: invalid fields (all reported together), a pool not offered,
                a pool out of date or restricted, a stake account the pool would not
                take, a deposit too small, slippage, insufficient funds, epoch rewards
                being distributed (DepositStake).
        """
        snapshot = self._context.snapshot()
        options = params.options
        wallet, pool_address, stake_account, nonce_account, nonce_authority, *_ = _collect(
            lambda: parse_address(params.wallet, field="wallet", require_on_curve=True),
            lambda: self._configured(params.stake_pool),
            lambda: _optional(params.stake_account, "stake_account"),
            *_request_checks(options, params.request_id),
        )
        assert isinstance(wallet, Pubkey) and isinstance(pool_address, Pubkey)
        named = stake_account if isinstance(stake_account, Pubkey) else None
        template = LiquidStakeRequest(
            wallet=wallet,
            amount_lamports=params.amount_lamports,
            stake_account=named,
            min_pool_tokens=params.min_pool_tokens,
            service_fee=self._service_fee(policy),
        )
        if named is not None:
            _check_rewards(snapshot)  # the Stake program refuses Authorize meanwhile
        policy.check(wallet=str(wallet), amount_lamports=params.amount_lamports, vote_account=None)
        token_account = await self._token_account(pool_address, wallet)
        read = self._read(
            [pool_address], validators=named is not None, accounts=[wallet, token_account]
        )
        lifetime = self._operations.lifetime(
            snapshot,
            nonce_account if isinstance(nonce_account, Pubkey) else None,
            nonce_authority if isinstance(nonce_authority, Pubkey) else wallet,
        )
        view = None
        if named is not None:
            (pools, values), lifetime_value, reads = await asyncio.gather(
                read, lifetime, self._reader.read(wallet, named=[(named, "stake_account")])
            )
            self._operations.check_epoch_rewards(reads, snapshot)
            clock = reads.sysvars.clock
            view = view_stake_account(
                reads.named[0],
                wallet=wallet,
                epoch=clock.epoch,
                unix_timestamp=clock.unix_timestamp,
                history=reads.sysvars.history,
                rent_exempt_reserve=snapshot.stake_rent_exempt_reserve,
            )
        else:
            (pools, values), lifetime_value = await asyncio.gather(read, lifetime)
        wallet_value, token_value = values
        exists = _is_token_account(token_value)
        # Lamports sent to the address before it is a token account count towards its
        # rent: CreateIdempotent takes only what is missing from the wallet.
        prefunded = int(token_value["lamports"]) if token_value is not None and not exists else 0
        context = LiquidStakeContext(
            lifetime=lifetime_value,
            pool=pools[0],
            token_account_exists=exists,
            token_account_rent_exempt_lamports=max(
                _rent_exempt(snapshot, TOKEN_ACCOUNT_SIZE) - prefunded, 0
            ),
            stake_account=view,
            wallet_balance_lamports=int(wallet_value["lamports"]) if wallet_value else 0,
        )

        def build(tx_options: TransactionOptions) -> PreparedLiquidStakeTransaction:
            return build_liquid_stake_transaction(replace(template, options=tx_options), context)

        tx_options = self._operations.transaction_options(options, policy)
        plan = build(tx_options)
        policy.check(wallet=str(wallet), amount_lamports=plan.deposit_lamports, vote_account=None)
        plan, simulation = await self._operations.prepare(
            build, lambda p: p.prepared, tx_options, options, first=plan
        )
        return BuiltLiquidStake(
            plan=plan, simulation=simulation, label=self._pools[pool_address].label
        )

    async def build_liquid_unstake(
        self, params: LiquidUnstakeParams, policy: CallerPolicy = UNRESTRICTED
    ) -> BuiltLiquidUnstake:
        """Plan a withdrawal (WithdrawSol when the reserve pays it, else WithdrawStake
        into a new seed-derived stake account); simulate it when asked.

        Raises:
            DomainError: invalid fields, a pool not offered or out of date, too few pool
                tokens, a withdrawal too small or too large, slippage, insufficient
                funds, epoch rewards being distributed.
        """
        snapshot = self._context.snapshot()
        _check_rewards(snapshot)  # both ways out of the pool go through the Stake program
        options = params.options
        wallet, pool_address, nonce_account, nonce_authority, *_ = _collect(
            lambda: parse_address(params.wallet, field="wallet", require_on_curve=True),
            lambda: self._configured(params.stake_pool),
            *_request_checks(options, params.request_id),
        )
        assert isinstance(wallet, Pubkey) and isinstance(pool_address, Pubkey)
        seed = self._operations.seed(SeedPurpose.STAKE, wallet, params.request_id)
        template = LiquidUnstakeRequest(
            wallet=wallet,
            pool_tokens=params.pool_tokens,
            seed=seed,
            method=params.method,
            min_lamports=params.min_lamports,
        )
        policy.check(wallet=str(wallet), amount_lamports=0, vote_account=None)
        token_account = await self._token_account(pool_address, wallet)
        new_account = stake_account_address(base=wallet, seed=seed)
        (pools, values), lifetime = await asyncio.gather(
            self._read(
                [pool_address], validators=True, accounts=[wallet, token_account, new_account]
            ),
            self._operations.lifetime(
                snapshot,
                nonce_account if isinstance(nonce_account, Pubkey) else None,
                nonce_authority if isinstance(nonce_authority, Pubkey) else wallet,
            ),
        )
        wallet_value, token_value, new_value = values
        held: TokenAccount | None = None
        if token_value is not None:
            held = decode_token_account(_data(token_value), address=str(token_account))
        context = LiquidUnstakeContext(
            lifetime=lifetime,
            pool=pools[0],
            token_account=held,
            stake_rent_exempt_lamports=snapshot.stake_rent_exempt_reserve,
            minimum_delegation_lamports=snapshot.minimum_delegation,
            new_stake_account_exists=new_value is not None,
            wallet_balance_lamports=int(wallet_value["lamports"]) if wallet_value else 0,
        )

        def build(tx_options: TransactionOptions) -> PreparedLiquidUnstakeTransaction:
            return build_liquid_unstake_transaction(replace(template, options=tx_options), context)

        tx_options = self._operations.transaction_options(options, policy)
        plan = build(tx_options)
        policy.check(wallet=str(wallet), amount_lamports=plan.quote.lamports, vote_account=None)
        plan, simulation = await self._operations.prepare(
            build, lambda p: p.prepared, tx_options, options, first=plan
        )
        return BuiltLiquidUnstake(
            plan=plan,
            simulation=simulation,
            label=self._pools[pool_address].label,
        )


def _rent_exempt(chain: ChainSnapshot, size: int) -> int:
    """Rent-exempt minimum of ``size`` bytes, from the stake account's (same rate)."""
    return (
        chain.stake_rent_exempt_reserve
        * (_ACCOUNT_STORAGE_OVERHEAD + size)
        // (_ACCOUNT_STORAGE_OVERHEAD + STAKE_ACCOUNT_SIZE)
    )
