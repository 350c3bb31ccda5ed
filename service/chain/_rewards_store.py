"""``inflation_rewards`` in the service's database: the durable rewards cache.

Completed epochs' rewards, per cluster (genesis hash), epoch and address, shared by
replicas and restarts (migration 3 of the one history in ``service.store``). Rows are
written once and never change (a completed epoch's rewards are final); concurrent
writers of the same row keep the first (``ON CONFLICT DO NOTHING``). An amount of
NULL records that the epoch paid the address nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from service.core.yields import InflationReward
from service.store import Database, Row

_COLUMNS: Final = "address, amount, post_balance, effective_slot, commission"
# Addresses per statement: far below SQLite's 32,766 bound variables.
_CHUNK: Final = 500


def _reward(epoch: int, row: Row) -> InflationReward | None:
    if row["amount"] is None:
        return None
    return InflationReward(
        epoch=epoch,
        amount=int(row["amount"]),
        post_balance=int(row["post_balance"]),
        effective_slot=int(row["effective_slot"]),
        commission=None if row["commission"] is None else int(row["commission"]),
    )


def _values(reward: InflationReward | None) -> tuple[int | None, ...]:
    if reward is None:
        return (None, None, None, None)
    return (reward.amount, reward.post_balance, reward.effective_slot, reward.commission)


class SqlRewardsStore:
    """The :class:`~service.chain.RewardsStore` of a :class:`~service.store.Database`."""

    def __init__(self, database: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = database
        self._clock = clock

    async def load(
        self, cluster: str, epoch: int, addresses: Sequence[str]
    ) -> dict[str, InflationReward | None]:
        """The rows of ``addresses`` for ``epoch`` (absent: never read).

        Raises:
            StoreUnavailableError: The database did not answer.
        """
        found: dict[str, InflationReward | None] = {}
        async with self._db.transaction("rewards.load", write=False) as conn:
            for start in range(0, len(addresses), _CHUNK):
                chunk = list(addresses[start : start + _CHUNK])
                marks = ", ".join(f"${i}" for i in range(3, len(chunk) + 3))
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM inflation_rewards "
                    f"WHERE cluster = $1 AND epoch = $2 AND address IN ({marks})",
                    cluster,
                    epoch,
                    *chunk,
                )
                for row in rows:
                    found[str(row["address"])] = _reward(epoch, row)
        return found

    async def save(
        self, cluster: str, epoch: int, rewards: Mapping[str, InflationReward | None]
    ) -> None:
        """Keep ``rewards`` of ``epoch`` (None: the address earned nothing).

        Raises:
            StoreUnavailableError: The database did not answer.
        """
        if not rewards:
            return
        now = self._clock()
        # Sorted: replicas saving overlapping rows insert them in the same order.
        rows = [
            (cluster, epoch, address, *_values(reward), now)
            for address, reward in sorted(rewards.items())
        ]
        async with self._db.transaction("rewards.save") as conn:
            await conn.executemany(
                f"INSERT INTO inflation_rewards (cluster, epoch, {_COLUMNS}, fetch_time) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT (cluster, epoch, address) DO NOTHING",
                rows,
            )
