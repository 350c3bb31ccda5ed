"""Relayed transaction lifecycle as plain values: states, statuses, chain answers.

The relay (``service.chain``) polls Solana and feeds what it reads into the pure
functions here; they decide the state, never the I/O. Times are plain floats
(unix seconds) handed in by the caller: nothing here reads the clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from service.core.txerrors import DecodedTransactionError


class TxState(enum.IntEnum):
    """Where a transaction is in its lifecycle (mirrors ``TransactionState``)."""

    RECEIVED = 1
    SENT = 2
    PROCESSED = 3
    CONFIRMED = 4
    FINALIZED = 5
    FAILED = 6
    EXPIRED = 7

    @property
    def terminal(self) -> bool:
        """FINALIZED, FAILED and EXPIRED never change again."""
        return self in (TxState.FINALIZED, TxState.FAILED, TxState.EXPIRED)

    @property
    def landed(self) -> bool:
        """Executed successfully in a block (at some commitment)."""
        return self in (TxState.PROCESSED, TxState.CONFIRMED, TxState.FINALIZED)


class Commitment(enum.IntEnum):
    """Solana commitment levels, ordered: processed < confirmed < finalized."""

    PROCESSED = 1
    CONFIRMED = 2
    FINALIZED = 3

    @property
    def state(self) -> TxState:
        """The successful state that corresponds to this commitment."""
        return _COMMITMENT_STATE[self]


_COMMITMENT_STATE: Final = {
    Commitment.PROCESSED: TxState.PROCESSED,
    Commitment.CONFIRMED: TxState.CONFIRMED,
    Commitment.FINALIZED: TxState.FINALIZED,
}
_CONFIRMATION_STATUS: Final = {
    "processed": TxState.PROCESSED,
    "confirmed": TxState.CONFIRMED,
    "finalized": TxState.FINALIZED,
}
# The successful path, in order; a watcher sees every step of it (see `steps_between`).
_PROGRESSION: Final = (TxState.SENT, TxState.PROCESSED, TxState.CONFIRMED, TxState.FINALIZED)


def reached(state: TxState, commitment: Commitment) -> bool:
    """Whether a caller waiting for `commitment` is done: reached it, or terminal."""
    if state in (TxState.FAILED, TxState.EXPIRED):
        return True
    return state.landed and state >= commitment.state


@dataclass(frozen=True, kw_only=True)
class TxStatus:
    """Status of one transaction, by its first signature (mirrors ``TransactionStatus``).

    Attributes:
        signature: First signature, base58.
        state: Lifecycle state.
        slot: Slot of the including block; 0 until processed and when expired.
        confirmations: Confirmed blocks on top (as getSignatureStatuses says); 0 once
            finalized.
        error: The decoded failure, set only when ``state`` is FAILED.
        last_valid_block_height: Upper bound of the block height at which it can still
            land; 0 when unknown (chain-only lookups) or with a durable nonce.
        update_time: Unix seconds of the last observed change.
        create_time: Unix seconds when the relay received it; None for chain-only lookups.
        send_count: sendTransaction calls made for it by this replica.
    """

    signature: str
    state: TxState
    slot: int = 0
    confirmations: int = 0
    error: DecodedTransactionError | None = None
    last_valid_block_height: int = 0
    update_time: float = 0.0
    create_time: float | None = None
    send_count: int = 0

    def __post_init__(self) -> None:
        if (self.error is not None) != (self.state is TxState.FAILED):
            raise ValueError("error is set exactly when the state is FAILED")
        if self.slot < 0 or self.confirmations < 0 or self.send_count < 0:
            raise ValueError("slot, confirmations and send_count are non-negative")

    def same_as(self, other: TxStatus) -> bool:
        """Equal for a watcher: the same state in the same slot.

        Confirmation counts move every slot; they ride along with the next change
        instead of making a change of their own.
        """
        return self.state is other.state and self.slot == other.slot


@dataclass(frozen=True, kw_only=True)
class ChainObservation:
    """One getSignatureStatuses entry, parsed.

    ``state`` is PROCESSED/CONFIRMED/FINALIZED from ``confirmationStatus``; ``err``
    is the raw JSON TransactionError (None on success).
    """

    state: TxState
    slot: int
    confirmations: int
    err: Any = None

    @property
    def failed(self) -> bool:
        return self.err is not None


def parse_signature_status(value: Mapping[str, Any] | None) -> ChainObservation | None:
    """Parse one entry of a getSignatureStatuses answer (None: unknown to the node).

    Raises:
        ValueError: the entry is not shaped as a node answers.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("signature status must be an object or null")
    confirmation = value.get("confirmationStatus")
    confirmations = value.get("confirmations")
    if confirmation is None:
        # Old nodes: null confirmations means rooted (finalized).
        confirmation = "finalized" if confirmations is None else "confirmed"
    state = _CONFIRMATION_STATUS.get(str(confirmation))
    if state is None:
        raise ValueError(f"unknown confirmationStatus {confirmation!r}")
    return ChainObservation(
        state=state,
        slot=int(value.get("slot") or 0),
        confirmations=int(confirmations or 0),
        err=value.get("err"),
    )


def steps_between(before: TxState, after: TxState) -> tuple[TxState, ...]:
    """The states a watcher is shown when `before` moves to `after`, `after` last.

    A poll can skip states (a block is often confirmed before the next poll sees it
    processed); a transaction that is confirmed was processed first, so the skipped
    steps of the successful path are reported in order. Anything else (failure,
    expiry, a fork dropping a block) is the one new state.
    """
    if before in _PROGRESSION and after in _PROGRESSION and after > before:
        start = _PROGRESSION.index(before) + 1
        return _PROGRESSION[start : _PROGRESSION.index(after) + 1]
    return (after,)


def with_steps(status: TxStatus, before: TxState) -> tuple[TxStatus, ...]:
    """`status` preceded by the skipped successful states (see `steps_between`)."""
    steps = steps_between(before, status.state)
    return tuple(
        status if state is status.state else replace(status, state=state, confirmations=0)
        for state in steps
    )
