"""The relay: verify, send, rebroadcast and confirm signed transactions; watch them.

One `Relay` per replica. `submit` verifies a wire transaction (pure checks in
`service.core.verify`, then the blockhash or durable nonce against a node),
sends it (preflight on unless skipped) and tracks it by its first signature.
A single landing task then, every ``poll_interval`` while anything is pending:

1. reads the finalized block height (only when some blockhash transaction has not
   landed), then the statuses of every pending and watched signature in batches
   of 256 (``getSignatureStatuses``);
2. moves each transaction along RECEIVED -> SENT -> PROCESSED -> CONFIRMED ->
   FINALIZED, or to FAILED (decoded error, once the failed block is confirmed), or
   to EXPIRED when the *finalized* block height has passed its last valid block
   height (or its durable nonce holds another value) and a history search still
   does not find it: every block that could have included it is then final, so
   EXPIRED is definite;
3. rebroadcasts (``skipPreflight``, ``maxRetries: 0``) what has not landed every
   ``rebroadcast_interval``, at most ``send_concurrency`` sends at a time and 512
   per tick (the longest unsent first).

Last valid block height: a node does not say which block height an arbitrary
blockhash expires at, so the relay bounds it from above: the block height when the
hash was first seen valid here + 150 (``MAX_PROCESSING_AGE``). The real value is
never later, so EXPIRED is never declared early; at worst a little late.

Memory and work are bounded: at most ``max_pending`` transactions in flight (then
RESOURCE_EXHAUSTED), terminal outcomes remembered for ``retain_seconds`` (at most
``max_retained``; older ones are answered from the chain), one task whatever the
load, one RPC per 256 signatures per tick. Watchers are queues registered per
signature and removed when the watcher ends (terminal state, cancellation,
deadline), and signatures watched but not relayed are polled only while watched.

Durability (with a `SubmissionLog`, the service's database): a submission is
recorded before it is first sent, and each change of its state is written by the
landing loop's next tick. The replica relaying it owns it under a lease of
``lease_seconds``, renewed every third of that; a replica that dies (``kill -9``)
stops renewing, and once its leases run out any replica (its own restart
included) claims the submissions, searches their statuses in the transaction
history and carries on rebroadcasting. A graceful `stop()` ends its leases at once.
Every replica answers the status of a recorded submission from the record (never
NOT_FOUND for a transaction that has not landed), watches it until it finishes,
and keeps finished ones for ``record_retain_seconds``.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from solders.message import Message, MessageV0, to_bytes_versioned
from solders.transaction import VersionedTransaction

from service.core.accounts import decode_nonce_account
from service.core.errors import (
    DomainError,
    ErrorKind,
    InvalidNonceAccountError,
    ShuttingDownError,
)
from service.core.txerrors import (
    DecodedTransactionError,
    InstructionRef,
    PreflightFailedError,
    decode_transaction_error,
    instruction_refs,
)
from service.core.txstatus import (
    ChainObservation,
    Commitment,
    TxState,
    TxStatus,
    parse_signature_status,
    reached,
    with_steps,
)
from service.core.verify import (
    DurableNonceUse,
    VerifiedTransaction,
    parse_signature,
    verify_transaction,
)
from service.store import StoreUnavailableError

from ._rpc import ChainUnavailable, RpcError, SolanaRpc
from ._submissions import StoredSubmission, SubmissionLog

log = logging.getLogger(__name__)

# Blocks a blockhash stays usable after the block that produced it.
MAX_PROCESSING_AGE: Final = 150
# getSignatureStatuses accepts at most 256 signatures per call.
MAX_SIGNATURES_PER_CALL: Final = 256
# getMultipleAccounts accepts at most 100 addresses per call.
MAX_ACCOUNTS_PER_CALL: Final = 100
# Solana JSON-RPC error codes the relay tells apart.
RPC_PREFLIGHT_FAILURE: Final = -32002
RPC_SIGNATURE_FAILURE: Final = -32003
RPC_NODE_UNHEALTHY: Final = -32005
# Status changes a slow watcher may fall behind by before the oldest are dropped
# (a transaction has at most a handful of changes).
WATCH_QUEUE_SIZE: Final = 16
_STOPPING: Final = -1
"""The version a watcher's queue gets when the relay ends every watch."""
# Upper bounds (seconds) of the time-to-confirm histogram buckets, Prometheus style.
TIME_TO_CONFIRM_BUCKETS: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
# Most recent time-to-confirm samples kept for inspection.
TIME_TO_CONFIRM_SAMPLES: Final = 1024
# Most rebroadcasts per tick (the stalest first), so one tick stays short however
# many transactions are in flight.
MAX_REBROADCASTS_PER_TICK: Final = 512
# Blockhashes whose first-seen expiry bound is remembered.
BLOCKHASH_MEMORY: Final = 1024
# Finished submissions deleted from the record per purge.
PURGE_BATCH: Final = 1000


# --- errors ---------------------------------------------------------------------------


class BlockhashExpiredError(DomainError):
    """The transaction's blockhash is unknown to the cluster or too old to land."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "BLOCKHASH_EXPIRED"
    default_hint = "Build and sign a new transaction (a fresh blockhash), then submit it at once."

    def __init__(self, *, blockhash: str) -> None:
        super().__init__(
            f"blockhash {blockhash} is expired or unknown to the cluster: the transaction "
            "can no longer land",
            metadata={"blockhash": blockhash},
        )


class NonceAdvancedError(DomainError):
    """A durable-nonce transaction whose nonce account holds another value."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "NONCE_ADVANCED"
    default_hint = "Read the nonce account again, rebuild and re-sign the transaction."

    def __init__(self, *, nonce_account: str, expected: str, actual: str) -> None:
        super().__init__(
            f"nonce account {nonce_account} holds {actual}, not the transaction's nonce "
            f"{expected}: the transaction can no longer land",
            metadata={"nonce_account": nonce_account, "expected": expected, "actual": actual},
        )


class RelayBusyError(DomainError):
    """The relay tracks as many in-flight transactions as it is configured for."""

    kind = ErrorKind.RESOURCE_EXHAUSTED
    default_reason = "RELAY_BUSY"
    default_hint = "Retry shortly: in-flight transactions land or expire within about a minute."
    retry_after = 2.0


def _stopping() -> ShuttingDownError:
    return ShuttingDownError(
        hint="Call again: another replica (or this one, restarted) answers, from the current "
        "status; the transaction stays tracked."
    )


class TransactionNotFoundError(DomainError):
    """Neither this service nor the cluster knows the signature."""

    kind = ErrorKind.NOT_FOUND
    default_reason = "TRANSACTION_NOT_FOUND"
    default_hint = (
        "Check the signature (the first one of the transaction); a transaction that was never "
        "submitted, or that expired unseen, is unknown."
    )

    def __init__(self, *, signature: str) -> None:
        super().__init__(
            f"transaction {signature} is unknown to this service and to the cluster",
            metadata={"signature": signature},
        )


class SendRejectedError(DomainError):
    """A Solana node refused the transaction for a reason other than its preflight."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "SEND_REJECTED"
    default_hint = "Read the node's message in the error; fix the transaction and submit again."


class _AlreadyRecorded(Exception):
    """The signature is in the submission log already (another replica relays it)."""


# --- values ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RelayConfig:
    """How the relay behaves (see `service.config.Settings`, the relay_* block)."""

    max_pending: int = 10_000
    poll_interval: float = 0.4
    rebroadcast_interval: float = 2.0
    retain_seconds: float = 600.0
    max_retained: int = 10_000
    send_concurrency: int = 16
    rpc_timeout: float = 5.0
    preflight_commitment: str = "confirmed"
    lease_seconds: float = 10.0
    record_retain_seconds: float = 86_400.0

    def __post_init__(self) -> None:
        if self.max_pending < 1 or self.max_retained < 0 or self.send_concurrency < 1:
            raise ValueError("max_pending and send_concurrency must be >= 1, max_retained >= 0")
        if (
            self.poll_interval <= 0
            or self.rebroadcast_interval <= 0
            or self.rpc_timeout <= 0
            or self.lease_seconds <= 0
        ):
            raise ValueError("intervals, timeouts and the lease must be positive")


@dataclass(frozen=True, kw_only=True)
class SubmitOutcome:
    """What SubmitTransaction answers."""

    status: TxStatus
    already_submitted: bool


@dataclass(frozen=True, kw_only=True)
class RelayStats:
    """Metrics-ready view of the relay (monotonic counters plus current gauges).

    Attributes:
        counters: Monotonic counts: ``submitted`` (accepted new transactions),
            ``duplicate`` (repeated submissions), ``rejected`` (refused submissions:
            verification, blockhash, preflight, capacity, chain unavailable), ``sent``
            (sendTransaction calls),
            ``rebroadcast`` (of which by the landing loop), ``processed``,
            ``confirmed``, ``finalized``, ``failed``, ``expired`` (outcomes of
            relayed transactions), ``dropped`` (seen in a block, then gone: a fork),
            ``taken_over`` (claimed from the record: its owner died or stopped),
            ``released`` (leases ended by a graceful stop), ``lost`` (taken over by
            another replica while this one still relayed it).
        rejections: Monotonic count of rejections by ErrorInfo reason.
        time_to_confirm_buckets: Cumulative (upper bound seconds, count) pairs, the
            last one ``inf``: seconds from receipt to the first CONFIRMED/FINALIZED.
        time_to_confirm_sum: Sum of all time-to-confirm samples, seconds.
        time_to_confirm_count: Number of samples.
        time_to_confirm_recent: The most recent samples (at most 1024).
        pending: Transactions in flight now.
        retained: Terminal outcomes remembered now.
        observed: Signatures polled only because they are watched.
        watchers: Open watch subscriptions.
    """

    counters: Mapping[str, int]
    rejections: Mapping[str, int]
    time_to_confirm_buckets: tuple[tuple[float, int], ...]
    time_to_confirm_sum: float
    time_to_confirm_count: int
    time_to_confirm_recent: tuple[float, ...]
    pending: int
    retained: int
    observed: int
    watchers: int


_COUNTED_STATES: Final = {
    TxState.PROCESSED: "processed",
    TxState.CONFIRMED: "confirmed",
    TxState.FINALIZED: "finalized",
    TxState.FAILED: "failed",
    TxState.EXPIRED: "expired",
}


@dataclass(eq=False, slots=True, kw_only=True)
class _Entry:
    """A tracked (relayed) or observed (watched only) transaction."""

    signature: str
    status: TxStatus
    wire_b64: str = ""
    """Empty for observed entries and once terminal (nothing to rebroadcast)."""
    instructions: tuple[InstructionRef, ...] = ()
    nonce: DurableNonceUse | None = None
    created: float = 0.0
    """Monotonic receipt time (time to confirm)."""
    last_sent: float = 0.0
    sending: asyncio.Task[bool] | None = None
    """The first send, while it runs; duplicates await it."""
    search_history: bool = False
    failed_unconfirmed: bool = False
    """Seen failed at processed: landed (no rebroadcast), FAILED once confirmed."""
    done_at: float = 0.0
    confirmed_recorded: bool = False
    version: int = 0
    """Bumped on every published change; watchers skip what they already saw."""
    recorded: bool = False
    """In the submission log, owned by this replica."""
    stored: bool = False
    """Observed: recorded by another replica, whose record is read while watched."""


def _relayed(verified: VerifiedTransaction, status: TxStatus, **fields: Any) -> _Entry:
    """The entry of a transaction this replica relays (with the bytes it rebroadcasts)."""
    return _Entry(
        signature=verified.signature,
        status=status,
        wire_b64=base64.b64encode(verified.wire).decode(),
        instructions=verified.instructions,
        nonce=verified.durable_nonce,
        **fields,
    )


@dataclass(eq=False, slots=True)
class _Subscriber:
    queue: asyncio.Queue[tuple[int, tuple[TxStatus, ...]]] = field(
        default_factory=lambda: asyncio.Queue(WATCH_QUEUE_SIZE)
    )


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Relay:
    """Submits, rebroadcasts, confirms and watches signed transactions."""

    def __init__(
        self,
        rpc: SolanaRpc,
        config: RelayConfig | None = None,
        *,
        submissions: SubmissionLog | None = None,
        owner: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Args:
        rpc: Where transactions go (the failover manager).
        config: Limits and intervals.
        submissions: The durable record; None keeps submissions in memory only
            (they are lost with the process).
        owner: This replica's name on its leases (default: host, pid, random).
        clock: Monotonic seconds; wall_clock: unix seconds (both injectable).
        """
        self._rpc = rpc
        self._config = config or RelayConfig()
        self._submissions = submissions
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._clock = clock
        self._wall = wall_clock
        self._dirty: dict[str, _Entry] = {}
        self._owner_task: asyncio.Task[None] | None = None
        self._owning = asyncio.Lock()
        self._pending: dict[str, _Entry] = {}
        self._done: OrderedDict[str, _Entry] = OrderedDict()
        self._observed: dict[str, _Entry] = {}
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self._watches_ended = False
        self._expiry_bounds: OrderedDict[str, int] = OrderedDict()
        self._counters: Counter[str] = Counter()
        self._rejections: Counter[str] = Counter()
        self._ttc_buckets = [0] * (len(TIME_TO_CONFIRM_BUCKETS) + 1)
        self._ttc_sum = 0.0
        self._ttc_recent: deque[float] = deque(maxlen=TIME_TO_CONFIRM_SAMPLES)
        self._send_slots = asyncio.Semaphore(self._config.send_concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._genesis_hash = ""
        self._failures = 0
        self._accepted: list[Callable[[bytes, str], Awaitable[None]]] = []

    def on_accepted(self, listener: Callable[[bytes, str], Awaitable[None]]) -> None:
        """Await ``listener(message, signature)`` for every transaction this relay
        accepts and sends (the server-held intents learn their signatures so). A
        listener's failure is logged, never the submitter's error."""
        self._accepted.append(listener)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the landing loop and, with a submission log, the ownership loop (which
        claims at once what nobody owns any more)."""
        with contextlib.suppress(ChainUnavailable, RpcError):
            await self._cluster()
        self._task = asyncio.create_task(self._run(), name="relay-landing-loop")
        if self._submissions is not None:
            self._owner_task = asyncio.create_task(self._keep_ownership(), name="relay-leases")

    async def stop(self) -> None:
        """Stop both loops, write the last states and end this replica's leases, so
        that another replica (or the next start) carries on at once."""
        if self._task is None and not self._pending:
            return  # never started (a start-up that did not get this far)
        for task in (self._task, self._owner_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._owner_task = None
        sending = [e.sending for e in self._pending.values() if e.sending is not None]
        if sending:
            await asyncio.wait(sending, timeout=self._config.rpc_timeout)
        if self._submissions is None:
            return
        for entry in self._pending.values():
            if entry.recorded:
                self._dirty[entry.signature] = entry  # the latest send counts too
        try:
            await self._save_dirty()
            released = await self._submissions.release(owner=self.owner)
        except StoreUnavailableError:
            log.warning(
                "relay: database unavailable at stop; the %d transactions in flight are "
                "taken over when their leases end (%g s)",
                len(self._pending),
                self._config.lease_seconds,
            )
            return
        self._counters["released"] += released
        if released:
            log.info("relay: handed %d in-flight transactions back to the database", released)

    # --- public API ---------------------------------------------------------------------

    async def submit(
        self,
        wire: bytes,
        *,
        allowed_fee_payers: frozenset[str] = frozenset(),
        commitment: Commitment | None = None,
        skip_preflight: bool = False,
        timeout: float | None = None,
    ) -> SubmitOutcome:
        """Verify, send and track a signed transaction; idempotent by signature.

        Args:
            wire: The signed wire transaction.
            allowed_fee_payers: The caller's allowed wallets (empty: any).
            commitment: Return once it reaches this commitment or a terminal state;
                None: return once sent.
            skip_preflight: Send without the node's preflight simulation.
            timeout: Bound of each RPC call made for this request (e.g. the time left
                before the gRPC deadline).

        Raises:
            DomainError: TRANSACTION_MALFORMED, TRANSACTION_TOO_LARGE,
                SIGNATURE_MISSING, SIGNATURE_INVALID, FEE_PAYER_NOT_ALLOWED,
                BLOCKHASH_EXPIRED, NONCE_ADVANCED, INVALID_NONCE_ACCOUNT,
                PREFLIGHT_FAILED, SEND_REJECTED, RELAY_BUSY, SOLANA_UNAVAILABLE,
                STORE_UNAVAILABLE (it could not be recorded, so it was not sent).
        """
        try:
            verified = verify_transaction(wire, allowed_fee_payers=allowed_fee_payers)
            outcome = await self._known(verified.signature, commitment)
            if outcome is not None:
                return outcome
            self._check_capacity()
            try:
                lifetime = await self._check_lifetime(verified, self._timeout(timeout))
            except (BlockhashExpiredError, NonceAdvancedError):
                # It cannot land now, perhaps because it did: after a restart, or once
                # memory let it go, the record (or the chain's history) still knows.
                landed = await self._known_afterwards(verified.signature, commitment)
                if landed is None:
                    raise
                return landed
            # Another call may have submitted the same bytes while we asked the node.
            outcome = await self._known(verified.signature, commitment)
            if outcome is not None:
                return outcome
            self._check_capacity()
            entry = self._track(verified, lifetime)
            sending = asyncio.create_task(
                self._first_send(entry, skip_preflight, self._timeout(timeout)),
                name=f"relay-send-{entry.signature[:8]}",
            )
            entry.sending = sending
            sending.add_done_callback(_consume_exception)
            # The send goes on even if the caller gives up: the transaction is tracked.
            already = await asyncio.shield(sending)
        except _AlreadyRecorded:
            self._counters["submitted"] -= 1  # not new after all
            return await self._known_elsewhere(verified.signature, commitment)
        except DomainError as exc:
            self._counters["rejected"] += 1
            self._rejections[exc.reason] += 1
            raise
        await self._tell_accepted(verified)
        status = entry.status
        if commitment is not None and not reached(status.state, commitment):
            status = await self.wait(entry.signature, commitment)
        return SubmitOutcome(status=status, already_submitted=already)

    async def _tell_accepted(self, verified: VerifiedTransaction) -> None:
        if not self._accepted:
            return
        message = to_bytes_versioned(verified.transaction.message)
        for listener in self._accepted:
            try:
                await listener(message, verified.signature)
            except StoreUnavailableError as exc:
                log.warning(
                    "relay: %s accepted but not noted for its intent: %s", verified.signature, exc
                )
            except Exception:
                log.exception("relay: a listener of accepted transactions failed")

    async def status(self, signature: str, *, timeout: float | None = None) -> TxStatus:
        """The tracked status of a signature, else the recorded one (any replica's
        submission), else the cluster's.

        Raises:
            DomainError: MALFORMED_SIGNATURE, TRANSACTION_NOT_FOUND, SOLANA_UNAVAILABLE.
        """
        signature = parse_signature(signature)
        entry = self._entry(signature)
        if entry is not None:
            return entry.status
        recorded = await self._recorded(signature)
        if recorded is not None:
            return recorded
        return await self._chain_status(signature, self._timeout(timeout))

    async def watch(
        self,
        signature: str,
        commitment: Commitment = Commitment.FINALIZED,
        *,
        timeout: float | None = None,
    ) -> AsyncGenerator[TxStatus, None]:
        """The current status, then every change, until `commitment` or a terminal state.

        The subscription is removed when the iteration ends for any reason (done,
        cancelled, closed); a signature watched but not relayed is polled only while
        somebody watches it.

        Raises:
            DomainError: MALFORMED_SIGNATURE, TRANSACTION_NOT_FOUND (unknown to this
                service and to the cluster), RELAY_BUSY, SOLANA_UNAVAILABLE.
        """
        signature = parse_signature(signature)
        if self._watches_ended:
            raise _stopping()
        subscriber = _Subscriber()
        self._subscribers.setdefault(signature, set()).add(subscriber)
        try:
            entry = self._entry(signature)
            if entry is None:
                current = await self._recorded(signature)
                stored = current is not None
                if current is None:
                    current = await self._chain_status(signature, self._timeout(timeout))
                entry = self._entry(signature) or self._observe(signature, current, stored=stored)
            seen, last = entry.version, entry.status
            yield last
            while not reached(last.state, commitment):
                version, statuses = await subscriber.queue.get()
                if version == _STOPPING:
                    raise _stopping()
                if version <= seen:
                    continue
                seen = version
                for status in statuses:
                    if not status.same_as(last):
                        yield status
                        last = status
                    if reached(last.state, commitment):
                        break
        finally:
            self._unsubscribe(signature, subscriber)

    async def wait(self, signature: str, commitment: Commitment) -> TxStatus:
        """Wait until the signature reaches `commitment` or a terminal state."""
        last: TxStatus | None = None
        async with contextlib.aclosing(self.watch(signature, commitment)) as statuses:
            async for status in statuses:
                last = status
        assert last is not None
        return last

    def stats(self) -> RelayStats:
        """Counters and gauges for metrics (see `RelayStats`)."""
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip(
            (*TIME_TO_CONFIRM_BUCKETS, float("inf")), self._ttc_buckets, strict=True
        ):
            running += count
            cumulative.append((bound, running))
        return RelayStats(
            counters=dict(self._counters),
            rejections=dict(self._rejections),
            time_to_confirm_buckets=tuple(cumulative),
            time_to_confirm_sum=self._ttc_sum,
            time_to_confirm_count=running,
            time_to_confirm_recent=tuple(self._ttc_recent),
            pending=len(self._pending),
            retained=len(self._done),
            observed=len(self._observed),
            watchers=self.watcher_count(),
        )

    def watcher_count(self) -> int:
        """Open watch subscriptions (including SubmitTransaction calls waiting)."""
        return sum(len(group) for group in self._subscribers.values())

    # --- submission ---------------------------------------------------------------------

    async def _known_elsewhere(
        self, signature: str, commitment: Commitment | None
    ) -> SubmitOutcome:
        """The answer to a submission another replica (or an earlier process) recorded
        first, or that the chain processed."""
        status = await self.status(signature)
        self._counters["duplicate"] += 1
        if commitment is not None and not reached(status.state, commitment):
            status = await self.wait(signature, commitment)
        return SubmitOutcome(status=status, already_submitted=True)

    async def _known_afterwards(
        self, signature: str, commitment: Commitment | None
    ) -> SubmitOutcome | None:
        """The answer to a repeated submission that memory no longer holds, from the
        record or the chain; None when neither has seen the signature."""
        try:
            return await self._known_elsewhere(signature, commitment)
        except TransactionNotFoundError:
            return None

    async def _recorded(self, signature: str) -> TxStatus | None:
        """The recorded status, or None (not recorded, no log, or the log is out: the
        chain answers then)."""
        if self._submissions is None:
            return None
        try:
            return (await self._submissions.get([signature])).get(signature)
        except StoreUnavailableError:
            return None

    async def _known(self, signature: str, commitment: Commitment | None) -> SubmitOutcome | None:
        """The answer to a repeated submission, or None for a new signature."""
        entry = self._entry(signature)
        if entry is None:
            return None
        self._counters["duplicate"] += 1
        if entry.sending is not None:
            # The first submission is still sending: share its fate (errors included).
            await asyncio.shield(entry.sending)
        status = entry.status
        if commitment is not None and not reached(status.state, commitment):
            status = await self.wait(signature, commitment)
        return SubmitOutcome(status=status, already_submitted=True)

    def _check_capacity(self) -> None:
        if len(self._pending) >= self._config.max_pending:
            raise RelayBusyError(
                f"the relay already tracks {len(self._pending)} transactions in flight",
                metadata={"max_pending": self._config.max_pending},
            )

    async def _check_lifetime(self, verified: VerifiedTransaction, timeout: float) -> int:
        """The last valid block height bound (0 with a durable nonce), or why it cannot land."""
        nonce = verified.durable_nonce
        if nonce is not None:
            values = await self._nonce_values([nonce.nonce_account], timeout)
            actual = values.get(nonce.nonce_account)
            if actual is None:
                raise InvalidNonceAccountError(
                    f"nonce account {nonce.nonce_account} does not exist or is not an "
                    "initialized nonce account",
                    metadata={"nonce_account": nonce.nonce_account},
                )
            if actual != nonce.nonce_value:
                raise NonceAdvancedError(
                    nonce_account=nonce.nonce_account, expected=nonce.nonce_value, actual=actual
                )
            return 0
        blockhash = verified.recent_blockhash
        valid, height = await asyncio.gather(
            self._ask("isBlockhashValid", [blockhash, {"commitment": "processed"}], timeout),
            self._ask("getBlockHeight", [{"commitment": "processed"}], timeout),
        )
        if not (isinstance(valid, Mapping) and valid.get("value") is True):
            raise BlockhashExpiredError(blockhash=blockhash)
        bound = self._expiry_bounds.get(blockhash)
        if bound is None:
            bound = int(height) + MAX_PROCESSING_AGE
            self._expiry_bounds[blockhash] = bound
            while len(self._expiry_bounds) > BLOCKHASH_MEMORY:
                self._expiry_bounds.popitem(last=False)
        return bound

    def _track(self, verified: VerifiedTransaction, last_valid_block_height: int) -> _Entry:
        now = self._wall()
        status = TxStatus(
            signature=verified.signature,
            state=TxState.RECEIVED,
            last_valid_block_height=last_valid_block_height,
            update_time=now,
            create_time=now,
        )
        entry = _relayed(verified, status, created=self._clock(), last_sent=self._clock())
        self._pending[entry.signature] = entry
        # A watcher-only entry for the same signature is superseded.
        self._observed.pop(entry.signature, None)
        self._counters["submitted"] += 1
        self._wake.set()
        return entry

    async def _first_send(self, entry: _Entry, skip_preflight: bool, timeout: float) -> bool:
        """Record, then send once; True when the cluster had already processed it.

        Raises:
            _AlreadyRecorded: Another replica recorded it first (nothing sent here).
            StoreUnavailableError: It could not be recorded (nothing sent).
        """
        try:
            await self._record(entry)
            await self._send(entry, preflight=not skip_preflight, timeout=timeout)
            # The record says what the caller is told (SENT), not RECEIVED.
            await self._save_dirty()
            return False
        except RpcError as exc:
            if _preflight_err(exc) == "AlreadyProcessed":
                # Landed before (another replica, a restart): track what the chain says.
                entry.search_history = True
                with contextlib.suppress(DomainError):
                    observed = await self._chain_status(entry.signature, timeout)
                    self._update(entry, replace(entry.status, **_chain_fields(observed)))
                return True
            await self._forget(entry)
            raise self._send_error(exc, entry) from None
        except BaseException:
            await self._forget(entry)
            raise
        finally:
            entry.sending = None

    async def _record(self, entry: _Entry) -> None:
        if self._submissions is None:
            return
        recorded = await self._submissions.record(
            entry.status,
            base64.b64decode(entry.wire_b64),
            cluster=await self._cluster(),
            owner=self.owner,
            lease_until=self._wall() + self._config.lease_seconds,
        )
        if not recorded:
            raise _AlreadyRecorded(entry.signature)
        entry.recorded = True

    async def _cluster(self) -> str:
        """The cluster's genesis hash (asked once): submissions are recorded per cluster.

        Raises:
            ChainUnavailable: Not known yet and the chain does not answer.
        """
        if not self._genesis_hash:
            self._genesis_hash = str(
                await self._ask("getGenesisHash", [], self._config.rpc_timeout)
            )
        return self._genesis_hash

    async def _send(self, entry: _Entry, *, preflight: bool, timeout: float) -> None:
        config: dict[str, Any] = {"encoding": "base64", "maxRetries": 0}
        if preflight:
            config["preflightCommitment"] = self._config.preflight_commitment
        else:
            config["skipPreflight"] = True
        entry.last_sent = self._clock()
        await self._rpc.call("sendTransaction", [entry.wire_b64, config], timeout=timeout)
        self._counters["sent"] += 1
        status = entry.status
        new_state = TxState.SENT if status.state is TxState.RECEIVED else status.state
        self._update(entry, replace(status, state=new_state, send_count=status.send_count + 1))

    def _send_error(self, exc: RpcError, entry: _Entry) -> DomainError:
        if exc.code == RPC_PREFLIGHT_FAILURE:
            data = exc.data if isinstance(exc.data, Mapping) else {}
            err = data.get("err")
            if err == "BlockhashNotFound":
                return BlockhashExpiredError(blockhash=_blockhash_of(entry))
            logs = data.get("logs") or ()
            return PreflightFailedError(
                decode_transaction_error(err, instructions=entry.instructions, logs=logs)
            )
        if exc.code == RPC_SIGNATURE_FAILURE:
            return SendRejectedError(
                f"the Solana node rejected a signature: {exc.message}", reason="SIGNATURE_INVALID"
            )
        if exc.code == RPC_NODE_UNHEALTHY:
            return ChainUnavailable(f"sendTransaction: {exc.message}")
        return SendRejectedError(
            f"the Solana node refused the transaction: {exc.message}",
            metadata={"rpc_code": exc.code},
        )

    async def _forget(self, entry: _Entry) -> None:
        """Drop a submission whose first send failed (the caller gets the error)."""
        if self._pending.get(entry.signature) is entry:
            del self._pending[entry.signature]
        if entry.recorded and self._submissions is not None:
            entry.recorded = False
            # Best effort: a record left behind is rebroadcast until it expires.
            with contextlib.suppress(StoreUnavailableError):
                await asyncio.shield(self._submissions.delete([entry.signature]))

    # --- lookups ------------------------------------------------------------------------

    def _entry(self, signature: str) -> _Entry | None:
        return (
            self._pending.get(signature)
            or self._done.get(signature)
            or self._observed.get(signature)
        )

    async def _chain_status(self, signature: str, timeout: float) -> TxStatus:
        answer = await self._ask(
            "getSignatureStatuses", [[signature], {"searchTransactionHistory": True}], timeout
        )
        try:
            observed = parse_signature_status(answer["value"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ChainUnavailable("getSignatureStatuses: malformed answer") from None
        if observed is None:
            raise TransactionNotFoundError(signature=signature)
        error = None
        if observed.failed:
            error = await self._decode_failure(signature, observed.err, (), timeout)
        return TxStatus(
            signature=signature,
            state=TxState.FAILED if error is not None else observed.state,
            slot=observed.slot,
            confirmations=0 if observed.state is TxState.FINALIZED else observed.confirmations,
            error=error,
            update_time=self._wall(),
        )

    async def _decode_failure(
        self,
        signature: str,
        err: Any,
        instructions: tuple[InstructionRef, ...],
        timeout: float,
    ) -> DecodedTransactionError:
        """Decode an on-chain failure, with the logs (and message) of the transaction."""
        logs: Sequence[str] = ()
        with contextlib.suppress(ChainUnavailable, RpcError, KeyError, TypeError, ValueError):
            found = await self._rpc.call(
                "getTransaction",
                [
                    signature,
                    {
                        "encoding": "base64",
                        "commitment": "confirmed",
                        "maxSupportedTransactionVersion": 0,
                    },
                ],
                timeout=timeout,
            )
            if isinstance(found, Mapping):
                logs = tuple((found.get("meta") or {}).get("logMessages") or ())
                if not instructions:
                    wire = base64.b64decode(found["transaction"][0])
                    message = VersionedTransaction.from_bytes(wire).message
                    if isinstance(message, Message | MessageV0):
                        instructions = instruction_refs(message)
        return decode_transaction_error(err, instructions=instructions, logs=logs)

    async def _statuses(
        self, signatures: Sequence[str], *, history: bool
    ) -> dict[str, ChainObservation | None]:
        found: dict[str, ChainObservation | None] = {}
        chunks = _chunks(signatures, MAX_SIGNATURES_PER_CALL)
        answers = await asyncio.gather(
            *(
                self._rpc.call(
                    "getSignatureStatuses",
                    [list(chunk), {"searchTransactionHistory": history}],
                    timeout=self._config.rpc_timeout,
                )
                for chunk in chunks
            )
        )
        for chunk, answer in zip(chunks, answers, strict=True):
            for signature, value in zip(chunk, answer["value"], strict=True):
                found[signature] = parse_signature_status(value)
        return found

    async def _nonce_values(self, accounts: Sequence[str], timeout: float) -> dict[str, str | None]:
        """The current value of each nonce account (None: missing or not a nonce)."""
        values: dict[str, str | None] = {}
        for chunk in _chunks(list(dict.fromkeys(accounts)), MAX_ACCOUNTS_PER_CALL):
            answer = await self._ask(
                "getMultipleAccounts",
                [list(chunk), {"encoding": "base64", "commitment": "confirmed"}],
                timeout,
            )
            for address, account in zip(chunk, answer["value"], strict=True):
                values[address] = None
                if account is not None:
                    with contextlib.suppress(InvalidNonceAccountError, ValueError, KeyError):
                        data = base64.b64decode(account["data"][0])
                        values[address] = str(decode_nonce_account(data, address=address).nonce)
        return values

    # --- the landing loop ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            busy = True
            try:
                busy = await self._tick()
                if self._failures:
                    log.info("relay: chain reachable again after %d failures", self._failures)
                self._failures = 0
            except (ChainUnavailable, RpcError, KeyError, TypeError, ValueError) as exc:
                self._failures += 1
                if self._failures == 1:
                    log.warning("relay: landing loop tick failed: %s", exc)
            except Exception:
                log.exception("relay: unexpected error in the landing loop")
            # Also after a failed tick: what changed before the failure is kept.
            await self._save_dirty()
            if busy:
                await asyncio.sleep(self._config.poll_interval)
            else:
                await self._wake.wait()

    async def _tick(self) -> bool:
        """One round of polling, expiry and rebroadcasting; False when idle."""
        self._evict()
        for signature in [s for s in self._observed if s in self._pending or s in self._done]:
            del self._observed[signature]
        await self._refresh_stored()
        entries = [*self._pending.values(), *self._observed.values()]
        if not entries:
            return False
        unlanded = [
            e
            for e in self._pending.values()
            if e.nonce is None and not e.status.state.landed and not e.failed_unconfirmed
        ]
        # Read the height before the statuses: if the finalized height already passed an
        # expiry bound, a status read afterwards sees any block that could include it.
        height = -1
        if unlanded:
            height = int(
                await self._rpc.call(
                    "getBlockHeight",
                    [{"commitment": "finalized"}],
                    timeout=self._config.rpc_timeout,
                )
            )
        found = await self._statuses(
            [e.signature for e in entries if not e.search_history], history=False
        )
        found.update(
            await self._statuses([e.signature for e in entries if e.search_history], history=True)
        )
        candidates = [
            e
            for e in unlanded
            if found.get(e.signature) is None and height > e.status.last_valid_block_height
        ]
        nonce_waiting = [
            e for e in self._pending.values() if e.nonce is not None and found[e.signature] is None
        ]
        if nonce_waiting:
            values = await self._nonce_values(
                [e.nonce.nonce_account for e in nonce_waiting if e.nonce is not None],
                self._config.rpc_timeout,
            )
            candidates += [
                e
                for e in nonce_waiting
                if e.nonce is not None and values.get(e.nonce.nonce_account) != e.nonce.nonce_value
            ]
        if candidates:
            # Definite answer only: search the whole history before declaring EXPIRED.
            again = await self._statuses([e.signature for e in candidates], history=True)
            for entry in candidates:
                if again[entry.signature] is None:
                    self._update(entry, replace(entry.status, state=TxState.EXPIRED, slot=0))
                else:
                    found[entry.signature] = again[entry.signature]
        for entry in entries:
            if not entry.status.state.terminal:
                await self._apply(entry, found.get(entry.signature))
        await self._rebroadcast()
        return True

    async def _apply(self, entry: _Entry, observed: ChainObservation | None) -> None:
        status = entry.status
        if observed is None:
            entry.failed_unconfirmed = False
            if status.state.landed and entry.wire_b64:
                # Seen in a block that the cluster then dropped (a fork): send it again.
                self._counters["dropped"] += 1
                self._update(entry, replace(status, state=TxState.SENT, slot=0, confirmations=0))
            return
        if observed.failed:
            tracked = bool(entry.wire_b64)
            if tracked and observed.state is TxState.PROCESSED:
                entry.failed_unconfirmed = True
                return
            error = await self._decode_failure(
                entry.signature, observed.err, entry.instructions, self._config.rpc_timeout
            )
            self._update(
                entry,
                replace(
                    status,
                    state=TxState.FAILED,
                    slot=observed.slot,
                    confirmations=observed.confirmations,
                    error=error,
                ),
            )
            return
        entry.failed_unconfirmed = False
        self._update(
            entry,
            replace(
                status,
                state=observed.state,
                slot=observed.slot,
                confirmations=0 if observed.state is TxState.FINALIZED else observed.confirmations,
            ),
        )

    async def _rebroadcast(self) -> None:
        now = self._clock()
        due = [
            e
            for e in self._pending.values()
            if e.sending is None
            and not e.failed_unconfirmed
            and e.status.state in (TxState.RECEIVED, TxState.SENT)
            and now - e.last_sent >= self._config.rebroadcast_interval
        ]
        if due:
            due.sort(key=lambda entry: entry.last_sent)
            await asyncio.gather(*(self._resend(e) for e in due[:MAX_REBROADCASTS_PER_TICK]))

    async def _resend(self, entry: _Entry) -> None:
        async with self._send_slots:
            try:
                await self._send(entry, preflight=False, timeout=self._config.rpc_timeout)
                self._counters["rebroadcast"] += 1
            except (ChainUnavailable, RpcError) as exc:
                # The next tick retries; the status poll decides the outcome.
                log.debug("relay: rebroadcast of %s failed: %s", entry.signature, exc)

    # --- state changes and watchers -----------------------------------------------------

    def _update(self, entry: _Entry, new: TxStatus) -> None:
        """Record a status; publish it to watchers when the state or slot changed."""
        old = entry.status
        if new.same_as(old):
            entry.status = replace(new, update_time=old.update_time)
            # No change a watcher sees, but the record's count must keep up: a crash
            # would take it back to the count of the last state change.
            recounted = new.send_count != old.send_count and entry.recorded
            if recounted and self._pending.get(entry.signature) is entry:
                self._dirty[entry.signature] = entry
            return
        new = replace(new, update_time=self._wall())
        entry.status = new
        entry.version += 1
        steps = with_steps(new, old.state)
        tracked = self._pending.get(entry.signature) is entry
        if tracked and entry.recorded:
            self._dirty[entry.signature] = entry
        if tracked:
            for step in steps:
                name = _COUNTED_STATES.get(step.state)
                if name is not None:
                    self._counters[name] += 1
            confirmed = new.state in (TxState.CONFIRMED, TxState.FINALIZED)
            if confirmed and not entry.confirmed_recorded:
                entry.confirmed_recorded = True
                self._record_time_to_confirm(self._clock() - entry.created)
        if new.state.terminal:
            if tracked:
                del self._pending[entry.signature]
                entry.wire_b64 = ""
                entry.done_at = self._clock()
                self._done[entry.signature] = entry
                self._evict()
            elif self._observed.get(entry.signature) is entry:
                del self._observed[entry.signature]
        self._publish(entry.signature, entry.version, steps)

    def _record_time_to_confirm(self, seconds: float) -> None:
        index = bisect.bisect_left(TIME_TO_CONFIRM_BUCKETS, seconds)
        self._ttc_buckets[index] += 1
        self._ttc_sum += seconds
        self._ttc_recent.append(seconds)

    def end_watches(self) -> None:
        """End every watch, and every wait for a commitment, with SERVER_SHUTTING_DOWN
        (the server is about to stop: its callers learn why and call again elsewhere,
        rather than being cut off without a word); new ones are refused alike."""
        self._watches_ended = True
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                while not subscriber.queue.empty():
                    subscriber.queue.get_nowait()
                subscriber.queue.put_nowait((_STOPPING, ()))

    def _publish(self, signature: str, version: int, statuses: tuple[TxStatus, ...]) -> None:
        for subscriber in self._subscribers.get(signature, ()):
            queue = subscriber.queue
            if queue.full():
                # A watcher that fell this far behind only needs the newest changes.
                queue.get_nowait()
            queue.put_nowait((version, statuses))

    def _observe(self, signature: str, status: TxStatus, *, stored: bool = False) -> _Entry:
        """Poll a signature this replica did not relay, for as long as it is watched
        (``stored``: another replica's submission; its record is read too)."""
        entry = _Entry(signature=signature, status=status, search_history=True, stored=stored)
        if status.state.terminal:
            return entry  # nothing will change: no polling needed
        if len(self._observed) >= self._config.max_pending:
            raise RelayBusyError(
                f"the relay already watches {len(self._observed)} signatures it did not relay",
                metadata={"max_observed": self._config.max_pending},
            )
        self._observed[signature] = entry
        self._wake.set()
        return entry

    def _unsubscribe(self, signature: str, subscriber: _Subscriber) -> None:
        group = self._subscribers.get(signature)
        if group is None:
            return
        group.discard(subscriber)
        if not group:
            del self._subscribers[signature]
            self._observed.pop(signature, None)

    def _evict(self) -> None:
        now = self._clock()
        limit = self._config.max_retained
        while self._done:
            signature, entry = next(iter(self._done.items()))
            if len(self._done) <= limit and now - entry.done_at < self._config.retain_seconds:
                break
            del self._done[signature]

    # --- durability -----------------------------------------------------------------------

    async def _save_dirty(self) -> None:
        """Write the changed states of this replica's submissions (kept for the next
        tick if the database is out)."""
        if self._submissions is None or not self._dirty:
            return
        batch, self._dirty = self._dirty, {}
        try:
            await self._submissions.save(
                [entry.status for entry in batch.values()], owner=self.owner, now=self._wall()
            )
        except StoreUnavailableError:
            for signature, entry in batch.items():
                self._dirty.setdefault(signature, entry)

    async def _refresh_stored(self) -> None:
        """Read the records of watched submissions that other replicas relay: their
        owner decides EXPIRED (and FAILED), which the chain alone cannot show."""
        stored = [e for e in self._observed.values() if e.stored]
        if not stored or self._submissions is None:
            return
        try:
            records = await self._submissions.get([e.signature for e in stored])
        except StoreUnavailableError:
            return
        for entry in stored:
            record = records.get(entry.signature)
            if record is None:
                continue
            if record.state.terminal or record.state > entry.status.state:
                self._update(entry, record)
            else:
                entry.status = replace(entry.status, send_count=record.send_count)

    async def _keep_ownership(self) -> None:
        interval = self._config.lease_seconds / 3
        while True:
            try:
                await self._own()
            except (ChainUnavailable, RpcError, StoreUnavailableError) as exc:
                log.debug("relay: lease round failed: %s", exc)
            except Exception:
                log.exception("relay: unexpected error in the lease round")
            await asyncio.sleep(interval)

    async def _own(self) -> None:
        """One round: renew this replica's leases, claim submissions whose owner is
        gone, purge old finished ones."""
        submissions = self._submissions
        if submissions is None:
            return
        async with self._owning:  # one round at a time (the loop's and a caller's)
            await self._own_round(submissions)

    async def _own_round(self, submissions: SubmissionLog) -> None:
        now = self._wall()
        lease_until = now + self._config.lease_seconds
        # Recorded before the renewal started: one recorded meanwhile is not "lost".
        held = [e for e in self._pending.values() if e.recorded]
        owned = await submissions.renew(owner=self.owner, lease_until=lease_until)
        for entry in held:
            if entry.signature not in owned and self._pending.get(entry.signature) is entry:
                self._lose(entry)
        room = self._config.max_pending - len(self._pending)
        if room > 0:
            claimed = await submissions.claim(
                owner=self.owner,
                cluster=await self._cluster(),
                now=now,
                lease_until=lease_until,
                limit=min(room, MAX_REBROADCASTS_PER_TICK),
            )
            if claimed:
                await self._adopt(claimed)
        await submissions.purge(
            finished_before=now - self._config.record_retain_seconds, limit=PURGE_BATCH
        )

    def _lose(self, entry: _Entry) -> None:
        """Another replica took this submission over (our lease ran out): watch it."""
        del self._pending[entry.signature]
        self._dirty.pop(entry.signature, None)
        entry.recorded = False
        entry.wire_b64 = ""
        entry.stored = True
        entry.search_history = True
        self._counters["lost"] += 1
        log.warning("relay: %s was taken over by another replica", entry.signature)
        if entry.signature in self._subscribers:
            self._observed[entry.signature] = entry

    async def _adopt(self, claimed: Sequence[StoredSubmission]) -> None:
        """Carry on with submissions claimed from the record: rebroadcast them at once
        and search their statuses in the whole history."""
        # A bound is at most 150 above the height when it was taken, and heights only
        # grow: one further ahead was recorded on another chain (a reset test cluster).
        ceiling: int | None = None
        with contextlib.suppress(ChainUnavailable, RpcError, TypeError, ValueError):
            height = await self._rpc.call(
                "getBlockHeight", [{"commitment": "processed"}], timeout=self._config.rpc_timeout
            )
            ceiling = int(height) + MAX_PROCESSING_AGE
        foreign: list[str] = []
        for item in claimed:
            status = item.status
            signature = status.signature
            try:
                verified = verify_transaction(item.wire)
            except DomainError:
                verified = None
            if verified is None or (
                ceiling is not None and status.last_valid_block_height > ceiling
            ):
                foreign.append(signature)
                continue
            entry = _relayed(
                verified,
                status,
                created=self._clock(),
                last_sent=float("-inf"),  # rebroadcast at the first tick
                search_history=True,
                confirmed_recorded=True,  # its time to confirm is not ours to measure
                recorded=True,
            )
            watched = self._observed.pop(signature, None)
            if watched is not None:
                # Watchers here go on from what they saw.
                entry.version = watched.version
                if watched.status.state > status.state:
                    entry.status = watched.status
            self._pending[signature] = entry
            self._counters["taken_over"] += 1
        if foreign:
            log.warning("relay: dropped %d recorded transactions of another chain", len(foreign))
            await self._submissions_delete(foreign)
        adopted = len(claimed) - len(foreign)
        if adopted:
            log.info(
                "relay: took over %d in-flight transactions whose owner stopped renewing its lease",
                adopted,
            )
            self._wake.set()

    async def _submissions_delete(self, signatures: Sequence[str]) -> None:
        if self._submissions is not None:
            with contextlib.suppress(StoreUnavailableError):
                await self._submissions.delete(signatures)

    async def _ask(self, method: str, params: list[Any], timeout: float) -> Any:
        """One RPC call on a request's path: a node's error object means UNAVAILABLE."""
        try:
            return await self._rpc.call(method, params, timeout=timeout)
        except RpcError as exc:
            raise ChainUnavailable(f"{method}: {exc.message}") from None

    def _timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return self._config.rpc_timeout
        return max(0.05, min(self._config.rpc_timeout, timeout))


def _consume_exception(task: asyncio.Task[bool]) -> None:
    # The submitting call may have gone (cancelled); its error is the caller's, not ours.
    if not task.cancelled():
        task.exception()


def _preflight_err(exc: RpcError) -> Any:
    if exc.code != RPC_PREFLIGHT_FAILURE or not isinstance(exc.data, Mapping):
        return None
    return exc.data.get("err")


def _blockhash_of(entry: _Entry) -> str:
    if entry.nonce is not None:
        return entry.nonce.nonce_value
    with contextlib.suppress(ValueError):
        wire = base64.b64decode(entry.wire_b64)
        return str(VersionedTransaction.from_bytes(wire).message.recent_blockhash)
    return ""


def _chain_fields(status: TxStatus) -> dict[str, Any]:
    return {
        "state": status.state,
        "slot": status.slot,
        "confirmations": status.confirmations,
        "error": status.error,
    }
