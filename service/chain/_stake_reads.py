"""Per-request reads for unstake, withdraw, merge and ListStakeAccounts.

What these need moves with every transaction (the wallet's stake accounts, the Clock
and the StakeHistory sysvar), so unlike the build context it is read per request:
one ``getMultipleAccounts`` (sysvars, wallet, named accounts) and, when the wallet's
accounts are wanted, one ``getProgramAccounts`` (Stake program, ``dataSize`` 200,
``memcmp`` of the wallet at the withdrawer offset 44), concurrently. ListStakeAccounts
reuses a wallet's read for a few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from solders.pubkey import Pubkey

from service.core.accounts import WITHDRAWER_OFFSET, decode_stake_account
from service.core.activation import StakeHistoryEntry, decode_stake_history
from service.core.errors import (
    DomainError,
    ErrorKind,
    InvalidStakeAccountError,
    NotWithdrawAuthorityError,
    StakeAccountNotFoundError,
)
from service.core.positions import FetchedStakeAccount, is_listable
from service.core.programs import (
    STAKE_ACCOUNT_SIZE,
    STAKE_PROGRAM,
    SYSVAR_CLOCK,
    SYSVAR_STAKE_HISTORY,
)
from service.core.sysvars import (
    ClockSysvar,
    EpochRewardsSysvar,
    decode_clock,
    decode_epoch_rewards,
)

from ._rpc import RpcError, SolanaRpc

SYSVAR_EPOCH_REWARDS: Final = Pubkey.from_string("SysvarEpochRewards1111111111111111111111111")
# Wallets whose ListStakeAccounts reads are kept at once (least recently used dropped).
MAX_CACHED_WALLETS: Final = 10_000
_COMMITMENT: Final = "confirmed"


class StakeReadError(DomainError):
    """The Solana node refused a read the call needs (e.g. a provider that disables
    getProgramAccounts)."""

    kind = ErrorKind.UNAVAILABLE
    default_reason = "SOLANA_RPC_ERROR"
    default_hint = "Retry, or configure an RPC endpoint that serves getProgramAccounts."


@dataclass(frozen=True, kw_only=True)
class StakeSysvars:
    """The sysvars stake math reads, as of one getMultipleAccounts."""

    clock: ClockSysvar
    history: dict[int, StakeHistoryEntry]
    epoch_rewards: EpochRewardsSysvar


@dataclass(frozen=True, kw_only=True)
class StakeReads:
    """One request's view of the chain.

    Attributes:
        accounts: The wallet's stake accounts (when asked for) and the named ones, by
            address, without duplicates.
        named: The named accounts, in the order asked.
        balances: Lamports of the wallet and of each extra address (None: no account).
        fetched_at: Monotonic time of the read.
    """

    sysvars: StakeSysvars
    accounts: tuple[FetchedStakeAccount, ...]
    named: tuple[FetchedStakeAccount, ...]
    balances: dict[Pubkey, int | None]
    fetched_at: float


def _decode(address: Pubkey, value: Any, *, field: str | None) -> FetchedStakeAccount:
    """A fetched account as a stake account; errors name the request field."""
    if value is None:
        if field is None:
            raise InvalidStakeAccountError(f"stake account {address} vanished")
        raise StakeAccountNotFoundError(stake_account=str(address), field=field)
    data = base64.b64decode(value["data"][0])
    metadata = {"stake_account": str(address), "owner": str(value.get("owner", ""))}
    if value.get("owner") != str(STAKE_PROGRAM) or len(data) != STAKE_ACCOUNT_SIZE:
        raise InvalidStakeAccountError(
            f"{address} is not a stake account (owner {value.get('owner')}, {len(data)} bytes)",
            field=field,
            metadata=metadata,
        )
    account = decode_stake_account(data)
    if not is_listable(account):
        raise InvalidStakeAccountError(
            f"stake account {address} is {account.state.name.lower()}",
            field=field,
            metadata=metadata,
        )
    return FetchedStakeAccount(address=address, lamports=int(value["lamports"]), account=account)


def _data(value: Any) -> bytes:
    return base64.b64decode(value["data"][0]) if value else b""


class StakeReader:
    """Reads stake accounts and sysvars; caches ListStakeAccounts reads per wallet."""

    def __init__(
        self,
        rpc: SolanaRpc,
        *,
        timeout: float = 5.0,
        cache_seconds: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rpc = rpc
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: OrderedDict[Pubkey, StakeReads] = OrderedDict()

    async def read(
        self,
        wallet: Pubkey,
        *,
        named: Sequence[tuple[Pubkey, str]] = (),
        wallet_accounts: bool = False,
        extra: Sequence[Pubkey] = (),
    ) -> StakeReads:
        """Read the sysvars, the wallet's balance and the accounts asked for.

        Args:
            wallet: Whose accounts; named accounts must have it as withdraw authority.
            named: (address, request field) of accounts the request names.
            wallet_accounts: Also list every stake account of the wallet.
            extra: Addresses whose balance (or absence) matters, e.g. a new account.

        Raises:
            StakeAccountNotFoundError / InvalidStakeAccountError /
            NotWithdrawAuthorityError: A named account is missing, no stake account,
                or another wallet's (the request field is named).
            ChainUnavailable / RpcError: No answer.
        """
        addresses = [SYSVAR_CLOCK, SYSVAR_STAKE_HISTORY, SYSVAR_EPOCH_REWARDS, wallet]
        addresses += [*extra, *(address for address, _ in named)]
        multiple = self.call(
            "getMultipleAccounts",
            [[str(a) for a in addresses], {"encoding": "base64", "commitment": _COMMITMENT}],
        )
        if wallet_accounts:
            answer, listed = await asyncio.gather(multiple, self._wallet_accounts(wallet))
        else:
            answer, listed = await multiple, []
        values = answer["value"]
        clock, history, rewards, wallet_value = values[:4]
        if clock is None or history is None:
            raise InvalidStakeAccountError("the node did not return the Clock/StakeHistory sysvars")
        sysvars = StakeSysvars(
            clock=decode_clock(_data(clock)),
            history=decode_stake_history(_data(history)),
            epoch_rewards=decode_epoch_rewards(_data(rewards)),
        )
        balances: dict[Pubkey, int | None] = {
            wallet: int(wallet_value["lamports"]) if wallet_value else None
        }
        for address, value in zip(extra, values[4 : 4 + len(extra)], strict=True):
            balances[address] = int(value["lamports"]) if value else None
        found: list[FetchedStakeAccount] = []
        for (address, field), value in zip(named, values[4 + len(extra) :], strict=True):
            fetched = _decode(address, value, field=field)
            if fetched.withdrawer != wallet:
                raise NotWithdrawAuthorityError(
                    stake_account=str(address),
                    withdrawer=str(fetched.withdrawer),
                    wallet=str(wallet),
                    field=field,
                )
            found.append(fetched)
        merged = {a.address: a for a in listed}
        for fetched in found:
            merged[fetched.address] = fetched
        return StakeReads(
            sysvars=sysvars,
            accounts=tuple(sorted(merged.values(), key=lambda a: str(a.address))),
            named=tuple(found),
            balances=balances,
            fetched_at=self._clock(),
        )

    async def cached_wallet_read(self, wallet: Pubkey) -> StakeReads:
        """The wallet's accounts and the sysvars, reused for ``cache_seconds``."""
        now = self._clock()
        cached = self._cache.get(wallet)
        if cached is not None and now - cached.fetched_at < self._cache_seconds:
            self._cache.move_to_end(wallet)
            return cached
        reads = await self.read(wallet, wallet_accounts=True)
        if self._cache_seconds > 0:
            self._cache[wallet] = reads
            self._cache.move_to_end(wallet)
            while len(self._cache) > MAX_CACHED_WALLETS:
                self._cache.popitem(last=False)
        return reads

    async def call(self, method: str, params: list[Any]) -> Any:
        """One read; a node's refusal becomes :class:`StakeReadError`."""
        try:
            return await self._rpc.call(method, params, timeout=self._timeout)
        except RpcError as exc:
            raise StakeReadError(
                f"the Solana node refused {method}: {exc.message}",
                metadata={"method": method, "rpc_code": exc.code},
            ) from exc

    async def _wallet_accounts(self, wallet: Pubkey) -> list[FetchedStakeAccount]:
        answer = await self.call(
            "getProgramAccounts",
            [
                str(STAKE_PROGRAM),
                {
                    "encoding": "base64",
                    "commitment": _COMMITMENT,
                    "filters": [
                        {"dataSize": STAKE_ACCOUNT_SIZE},
                        {"memcmp": {"offset": WITHDRAWER_OFFSET, "bytes": str(wallet)}},
                    ],
                },
            ],
        )
        items = answer["value"] if isinstance(answer, dict) else answer
        out: list[FetchedStakeAccount] = []
        for item in items:
            try:
                fetched = _decode(Pubkey.from_string(item["pubkey"]), item["account"], field=None)
            except (InvalidStakeAccountError, ValueError):
                continue  # not decodable as an initialized stake account: not a position
            if fetched.withdrawer == wallet:
                out.append(fetched)
        return out
