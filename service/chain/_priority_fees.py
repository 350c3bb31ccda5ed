"""Automatic compute-unit prices: recent prioritization fees of the accounts a
transaction write-locks, kept briefly per set of accounts.

A validator's prioritization fee cache answers ``getRecentPrioritizationFees`` per
recent block: the lowest compute-unit price that landed in it, raised to the lowest
price paid by the transactions that write-locked each account asked about. Asked with
no accounts it gives only the blocks' lowest prices, often 0 on a busy cluster, which
says nothing of the accounts a transaction contends for; so a build asks with its
own (``fee_market_accounts``: everything it write-locks but the accounts it creates,
which have no history).

The answer depends on the whole set, and most sets differ from build to build (each
stake build has its own wallet), so it is kept per set, for a short time (a price
a few seconds old is as good as the per-slot minimums it comes from), at most
``max_entries`` sets: a stake build pays one RPC round trip the first time its
wallet builds, none again; concurrent builds with the same accounts share one
request. Past its cache time an answer is used for as long again while one request
refreshes it in the background, so a wallet that keeps building never waits for the
node; an answer older than that is not used (the build waits for a new one).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from solders.pubkey import Pubkey

from service.core.fees import PRIORITY_PERCENTILES, priority_fee_percentile

from ._rpc import ChainUnavailable, RpcError, SolanaRpc
from ._stake_reads import StakeReadError

# getRecentPrioritizationFees takes at most this many accounts (Agave's
# MAX_TX_ACCOUNT_LOCKS); no plan writes more.
MAX_ACCOUNTS = 128

_Levels = Mapping[int, int]


class RecentPriorityFees:
    """The compute-unit price (micro-lamports) of each priority level for a set of
    write-locked accounts, from the cluster's recent prioritization fees."""

    def __init__(
        self,
        rpc: SolanaRpc,
        *,
        cache_seconds: float = 2.0,
        max_entries: int = 4096,
        rpc_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            cache_seconds: How long an answer is reused as it is for the same
                accounts; for as long again it is used while being refreshed (0: ask
                on every build).
            max_entries: Most sets of accounts kept; the oldest answers go first.
        """
        self._rpc = rpc
        self._ttl = cache_seconds
        self._max = max_entries
        self._timeout = rpc_timeout
        self._clock = clock
        # accounts -> (refreshed after, dropped after, price per percentile), oldest
        # first (a fixed lifetime: insertion order is expiry order).
        self._answers: OrderedDict[frozenset[Pubkey], tuple[float, float, _Levels]] = OrderedDict()
        self._pending: dict[frozenset[Pubkey], asyncio.Future[_Levels]] = {}

    async def price(self, accounts: Sequence[Pubkey], percentile: int) -> int:
        """The ``percentile`` (nearest rank) of the per-block fees the cluster reports
        for ``accounts``; 0 when it reports none.

        Raises:
            ChainUnavailable: no endpoint answered (or answered nonsense).
            StakeReadError: the node refused the read (SOLANA_RPC_ERROR).
        """
        key = frozenset(accounts[:MAX_ACCOUNTS])
        now = self._clock()
        cached = self._answers.get(key)
        pending = self._pending.get(key)
        if cached is not None and now < cached[1]:
            if now >= cached[0] and pending is None:
                self._ask_in_background(key)
            return cached[2][percentile]
        if pending is None:
            pending = self._ask_in_background(key)
        # A caller that gives up (deadline) leaves the request to the others.
        return (await asyncio.shield(pending))[percentile]

    def _ask_in_background(self, key: frozenset[Pubkey]) -> asyncio.Future[_Levels]:
        pending = asyncio.ensure_future(self._ask(key))
        self._pending[key] = pending
        pending.add_done_callback(lambda done: self._done(key, done))
        return pending

    async def _ask(self, key: frozenset[Pubkey]) -> _Levels:
        method = "getRecentPrioritizationFees"
        try:
            answer = await self._rpc.call(
                method, [sorted(str(a) for a in key)], timeout=self._timeout
            )
        except RpcError as exc:
            raise StakeReadError(
                f"the Solana node refused {method}: {exc.message}",
                metadata={"method": method, "rpc_code": exc.code},
                hint="Retry; or set options.compute_unit_price_micro_lamports (or "
                "PRIORITY_LEVEL_NONE), which needs no recent fees.",
            ) from exc
        try:
            fees = [int(entry["prioritizationFee"]) for entry in answer]
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainUnavailable(f"malformed {method} answer ({exc!r})") from None
        levels = {p: priority_fee_percentile(fees, p) for p in PRIORITY_PERCENTILES.values()}
        if self._ttl > 0:
            self._store(key, levels)
        return levels

    def _done(self, key: frozenset[Pubkey], done: asyncio.Future[_Levels]) -> None:
        self._pending.pop(key, None)
        # Retrieved: every waiter may have given up, or none waited (a refresh). A
        # failed refresh leaves the answer it was to replace in use until it is dropped.
        if not done.cancelled():
            done.exception()

    def _store(self, key: frozenset[Pubkey], levels: _Levels) -> None:
        now = self._clock()
        answers = self._answers
        answers.pop(key, None)
        answers[key] = (now + self._ttl, now + 2 * self._ttl, levels)
        while answers and (len(answers) > self._max or next(iter(answers.values()))[1] <= now):
            answers.popitem(last=False)

    def __len__(self) -> int:
        """Sets of accounts currently kept."""
        return len(self._answers)
