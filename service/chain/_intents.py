"""Server-held intents: what a request_id asked for, and what became of it.

A Build* call with a ``request_id`` is an *intent* of the calling API key. The first
call builds and records it (the request, and per transaction built: its message,
lifetime and the response as returned). Later calls with the same request_id:

- with other parameters are refused (IDEMPOTENCY_KEY_REUSED);
- while the latest transaction can still land, get the same response again (the
  same transaction: it can land at most once);
- once it landed, get ALREADY_EXISTS with its signature and the original response:
  never a second stake, unstake or withdrawal for one decision;
- once it expired (its blockhash, or its durable nonce moved on, without it
  landing) or failed on chain, get a fresh transaction for the same intent: the
  *attempt* after it, re-checked against the chain, saying what changed.

What became of a transaction is read when asked, never guessed: the relay knows
the ones submitted through it (SubmitTransaction tells the book the signature of an
intent's message); any other is looked for on chain in the wallet's history since
the build (``getSignaturesForAddress``), each candidate checked as the wallet's
Ed25519 signature of the exact message bytes. A transaction is declared EXPIRED
only once the *finalized* block height has passed its last valid block height (or
its nonce account holds another value), after reading the history: it can then
never land, so a rebuild can never make a second one land.

Replicas share the book through the service's database: the first insert of a
request_id wins (the others answer with its response), a rebuild is recorded only
over the attempt it replaces (compare-and-set), so two replicas racing on one
request_id produce one intent and one live transaction. Intents are forgotten
``retention`` seconds after their last change.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from solders.message import Message, MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature

from service.core.accounts import decode_nonce_account
from service.core.errors import DomainError, ErrorKind, InvalidArgumentError
from service.core.txerrors import (
    DecodedTransactionError,
    decode_transaction_error,
    instruction_refs,
)
from service.core.txstatus import TxState
from service.store import Database, Row, StoreUnavailableError

from ._relay import MAX_PROCESSING_AGE, Relay, TransactionNotFoundError
from ._rpc import ChainUnavailable, RpcError, SolanaRpc
from ._submissions import _error_from_json, _error_json

log = logging.getLogger(__name__)

# getSignaturesForAddress pages of the wallet's history searched for a transaction of
# an intent (newest first, back to the slot it was built in).
HISTORY_PAGE: Final = 1000
MAX_HISTORY_PAGES: Final = 10
# Intents deleted per purge statement, and the pause between purges.
PURGE_BATCH: Final = 1000
PURGE_INTERVAL: Final = 300.0


class IntentState(enum.Enum):
    """What became of an intent's latest transaction (mirrors ``IntentState``)."""

    BUILT = "BUILT"
    SUBMITTED = "SUBMITTED"
    LANDED = "LANDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"

    @property
    def live(self) -> bool:
        """It may still land: answer with it again, never build another."""
        return self in (IntentState.BUILT, IntentState.SUBMITTED)


# --- errors -------------------------------------------------------------------------------


class IdempotencyKeyReusedError(InvalidArgumentError):
    """The request_id was used (by this API key) for another request."""

    default_reason = "IDEMPOTENCY_KEY_REUSED"
    default_hint = (
        "Use a new request_id for a new request; retry with the same request_id only "
        "the same request (only options.simulate may differ)."
    )

    def __init__(self, *, request_id: str, kind: str, fields: Sequence[str]) -> None:
        shown = request_id if len(request_id) <= 64 else request_id[:61] + "..."
        what = ", ".join(fields)
        super().__init__(
            f"request_id {shown!r} was used for another {kind} request (it differs in: {what})",
            field="request_id",
            metadata={"request_id": shown, "kind": kind, "fields": ",".join(fields)},
        )


class IntentLandedError(DomainError):
    """The intent's transaction landed: building it again would do it twice.

    ``attachments`` carries the original response: its full proto type name and its
    encodings, the most complete first, each with a note of what it leaves out (the
    API layer packs the first that fits into the status).
    """

    kind = ErrorKind.ALREADY_EXISTS
    default_reason = "INTENT_ALREADY_LANDED"
    default_hint = (
        "Nothing to do: the transaction of this request_id landed (see the signature). "
        "Use a new request_id for a new request."
    )

    def __init__(self, intent: Intent, *, response_type: str) -> None:
        landed = intent.landed_attempt or intent.latest
        super().__init__(
            f"the transaction of request_id {intent.key.request_id!r} landed: {intent.signature}",
            metadata={
                "request_id": intent.key.request_id,
                "signature": intent.signature,
                "kind": intent.kind,
                "attempt": landed.number,
                "message_sha256": landed.message_sha256,
            },
        )
        self.response = landed.response
        self.attachments: tuple[tuple[str, tuple[tuple[bytes, str], ...]], ...] = (
            (response_type, ((landed.response, ""),)),
        )


class IntentNotFoundError(DomainError):
    """No intent of this API key has the request_id (or it was forgotten)."""

    kind = ErrorKind.NOT_FOUND
    default_reason = "INTENT_NOT_FOUND"
    default_hint = (
        "Check the request_id; intents belong to the API key that built them and are "
        "forgotten after the operator's retention time."
    )

    def __init__(self, *, request_id: str) -> None:
        shown = request_id if len(request_id) <= 64 else request_id[:61] + "..."
        super().__init__(
            f"no intent with request_id {shown!r} for this API key",
            metadata={"request_id": shown},
        )


class IntentUnresolvedError(DomainError):
    """The wallet's history since the build is too long to search for the intent's
    transaction: whether it landed cannot be decided, so nothing is built."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "INTENT_UNRESOLVED"
    default_hint = (
        "Look the transaction up by its signature (GetTransactionStatus) if you have "
        "it; submit through SubmitTransaction so that the service knows it; or use a "
        "new request_id once you know it did not land."
    )


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class IntentKey:
    """An intent's identity: the API key that made it (empty without one) and the
    request_id."""

    scope: str
    request_id: str


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One transaction built for an intent."""

    number: int
    message_sha256: str
    message: bytes
    response: bytes
    """The Build*Response as returned (serialized proto)."""
    recent_blockhash: str
    last_valid_block_height: int
    nonce_account: str
    build_slot: int
    """The chain's slot when it was built: it cannot have landed before."""
    state: IntentState
    signature: str
    create_time: float


@dataclass(frozen=True, kw_only=True)
class Intent:
    key: IntentKey
    kind: str
    wallet: str
    request: bytes
    state: IntentState
    signature: str
    error: DecodedTransactionError | None
    attempts: tuple[Attempt, ...]
    create_time: float
    update_time: float
    expire_time: float

    @property
    def latest(self) -> Attempt:
        return self.attempts[-1]

    @property
    def landed_attempt(self) -> Attempt | None:
        for attempt in self.attempts:
            if attempt.state is IntentState.LANDED:
                return attempt
        return None


@dataclass(frozen=True, kw_only=True)
class BuiltAttempt:
    """What a build hands the book: the response and the transaction's identity."""

    response: bytes
    message: bytes
    wallet: str
    recent_blockhash: str
    last_valid_block_height: int
    nonce_account: str
    build_slot: int


@dataclass(frozen=True, kw_only=True)
class IntentOutcome:
    """The answer to a Build* call with a request_id."""

    response: bytes
    intent: Intent
    replayed: bool
    """The response of an earlier call, returned again (nothing was built)."""


Make = Callable[[int, Attempt | None, IntentState | None], Awaitable[BuiltAttempt]]
"""Build attempt ``n`` (after ``previous``, whose state it is): the response bytes."""
Differs = Callable[[str, bytes], tuple[str, ...]]
"""The request fields in which the recorded (kind, request) differ from this call's."""


# --- the store ------------------------------------------------------------------------------

_ATTEMPT_COLUMNS: Final = (
    "attempt, message_sha256, message, response, recent_blockhash, last_valid_block_height, "
    "nonce_account, build_slot, state, signature, create_time"
)
_INTENT_COLUMNS: Final = (
    "kind, wallet, request, attempt, state, signature, error, create_time, update_time, expire_time"
)


def _attempt(row: Row) -> Attempt:
    return Attempt(
        number=int(row["attempt"]),
        message_sha256=str(row["message_sha256"]),
        message=bytes(row["message"]),
        response=bytes(row["response"]),
        recent_blockhash=str(row["recent_blockhash"]),
        last_valid_block_height=int(row["last_valid_block_height"]),
        nonce_account=str(row["nonce_account"]),
        build_slot=int(row["build_slot"]),
        state=IntentState(str(row["state"])),
        signature=str(row["signature"]),
        create_time=float(row["create_time"]),
    )


def _attempt_args(key: IntentKey, attempt: Attempt) -> tuple[object, ...]:
    return (
        key.scope,
        key.request_id,
        attempt.number,
        attempt.message_sha256,
        attempt.message,
        attempt.response,
        attempt.recent_blockhash,
        attempt.last_valid_block_height,
        attempt.nonce_account,
        attempt.build_slot,
        attempt.state.value,
        attempt.signature,
        attempt.create_time,
    )


_INSERT_ATTEMPT: Final = (
    f"INSERT INTO intent_attempts (scope, request_id, {_ATTEMPT_COLUMNS}) VALUES "
    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)


class SqlIntentStore:
    """``intents`` and ``intent_attempts`` in the service's database. Every method is
    one transaction; failures raise :class:`~service.store.StoreUnavailableError`."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, key: IntentKey) -> Intent | None:
        async with self._db.transaction("intents.get", write=False) as conn:
            rows = await conn.fetch(
                f"SELECT {_INTENT_COLUMNS} FROM intents WHERE scope = $1 AND request_id = $2",
                key.scope,
                key.request_id,
            )
            if not rows:
                return None
            attempts = await conn.fetch(
                f"SELECT {_ATTEMPT_COLUMNS} FROM intent_attempts "
                "WHERE scope = $1 AND request_id = $2 ORDER BY attempt",
                key.scope,
                key.request_id,
            )
        row = rows[0]
        return Intent(
            key=key,
            kind=str(row["kind"]),
            wallet=str(row["wallet"]),
            request=bytes(row["request"]),
            state=IntentState(str(row["state"])),
            signature=str(row["signature"]),
            error=_error_from_json(row["error"]),
            attempts=tuple(_attempt(a) for a in attempts),
            create_time=float(row["create_time"]),
            update_time=float(row["update_time"]),
            expire_time=float(row["expire_time"]),
        )

    async def insert(self, intent: Intent) -> bool:
        """Record a new intent with its first attempt; False when the request_id is
        taken already (another call, maybe on another replica, was first)."""
        async with self._db.transaction("intents.insert") as conn:
            inserted = await conn.execute(
                f"INSERT INTO intents (scope, request_id, {_INTENT_COLUMNS}) VALUES "
                "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
                "ON CONFLICT (scope, request_id) DO NOTHING",
                intent.key.scope,
                intent.key.request_id,
                intent.kind,
                intent.wallet,
                intent.request,
                intent.latest.number,
                intent.state.value,
                intent.signature,
                _error_json(intent.error),
                intent.create_time,
                intent.update_time,
                intent.expire_time,
            )
            if inserted != 1:
                return False
            await conn.execute(_INSERT_ATTEMPT, *_attempt_args(intent.key, intent.latest))
        return True

    async def add_attempt(
        self, key: IntentKey, *, replaces: int, attempt: Attempt, expire_time: float
    ) -> bool:
        """Record a rebuild, only if attempt ``replaces`` is still the latest (a
        concurrent rebuild, maybe on another replica, wins otherwise: False)."""
        async with self._db.transaction("intents.rebuild") as conn:
            moved = await conn.execute(
                "UPDATE intents SET attempt = $3, state = $4, signature = '', error = NULL, "
                "update_time = $5, expire_time = $6 "
                "WHERE scope = $1 AND request_id = $2 AND attempt = $7 AND state <> $8",
                key.scope,
                key.request_id,
                attempt.number,
                attempt.state.value,
                attempt.create_time,
                expire_time,
                replaces,
                IntentState.LANDED.value,
            )
            if moved != 1:
                return False
            await conn.execute(_INSERT_ATTEMPT, *_attempt_args(key, attempt))
        return True

    async def observe(
        self,
        key: IntentKey,
        *,
        attempt: int,
        state: IntentState,
        signature: str,
        error: DecodedTransactionError | None,
        now: float,
        expire_time: float,
    ) -> None:
        """Record what became of attempt ``attempt`` (a landed intent stays landed)."""
        async with self._db.transaction("intents.observe") as conn:
            await conn.execute(
                "UPDATE intent_attempts SET state = $4, signature = $5 "
                "WHERE scope = $1 AND request_id = $2 AND attempt = $3 AND state <> $6",
                key.scope,
                key.request_id,
                attempt,
                state.value,
                signature,
                IntentState.LANDED.value,
            )
            await conn.execute(
                "UPDATE intents SET state = $4, signature = $5, error = $6, update_time = $7, "
                "expire_time = $8 "
                "WHERE scope = $1 AND request_id = $2 AND attempt = $3 AND state <> $9",
                key.scope,
                key.request_id,
                attempt,
                state.value,
                signature,
                _error_json(error),
                now,
                expire_time,
                IntentState.LANDED.value,
            )

    async def submitted(
        self, *, message_sha256: str, signature: str, now: float, expire_time: float
    ) -> int:
        """The relay accepted the signed transaction of an intent's message: record
        its signature (BUILT becomes SUBMITTED). The number of attempts it matched."""
        async with self._db.transaction("intents.submitted") as conn:
            rows = await conn.fetch(
                "UPDATE intent_attempts SET signature = $2, state = $3 "
                "WHERE message_sha256 = $1 AND state = $4 "
                "RETURNING scope, request_id, attempt",
                message_sha256,
                signature,
                IntentState.SUBMITTED.value,
                IntentState.BUILT.value,
            )
            for row in rows:
                await conn.execute(
                    "UPDATE intents SET state = $4, signature = $5, update_time = $6, "
                    "expire_time = $7 "
                    "WHERE scope = $1 AND request_id = $2 AND attempt = $3 AND state = $8",
                    row["scope"],
                    row["request_id"],
                    row["attempt"],
                    IntentState.SUBMITTED.value,
                    signature,
                    now,
                    expire_time,
                    IntentState.BUILT.value,
                )
        return len(rows)

    async def purge(self, *, expired_before: float, limit: int) -> int:
        """Forget up to ``limit`` intents whose retention ended before ``expired_before``."""
        async with self._db.transaction("intents.purge") as conn:
            rows = await conn.fetch(
                "SELECT scope, request_id FROM intents WHERE expire_time < $1 LIMIT $2",
                expired_before,
                limit,
            )
            for row in rows:
                await conn.execute(
                    "DELETE FROM intent_attempts WHERE scope = $1 AND request_id = $2",
                    row["scope"],
                    row["request_id"],
                )
                await conn.execute(
                    "DELETE FROM intents WHERE scope = $1 AND request_id = $2",
                    row["scope"],
                    row["request_id"],
                )
        return len(rows)


# --- the book -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Observation:
    state: IntentState
    signature: str = ""
    error: DecodedTransactionError | None = None


class IntentBook:
    """Records intents, answers repeated request_ids, tells what became of them.

    Args:
        store: The durable record (shared by the replicas).
        rpc: Solana, for what the relay does not know.
        relay: The relay (the status of submitted transactions); None: the chain only.
        retention: Seconds an intent is kept after its last change.
        rpc_timeout: Bound of each Solana call.
        wall_clock: Unix seconds.
    """

    def __init__(
        self,
        store: SqlIntentStore,
        *,
        rpc: SolanaRpc,
        relay: Relay | None = None,
        retention: float = 30 * 86_400.0,
        rpc_timeout: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._rpc = rpc
        self._relay = relay
        self._retention = retention
        self._timeout = rpc_timeout
        self._wall = wall_clock
        self._purger: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Forget expired intents now and every ``PURGE_INTERVAL`` seconds."""
        if self._purger is None:
            self._purger = asyncio.get_running_loop().create_task(
                self._purge_loop(), name="intents-purge"
            )

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None

    async def _purge_loop(self) -> None:
        while True:
            try:
                await self.purge()
            except StoreUnavailableError as exc:
                log.debug("intents: purge skipped: %s", exc)
            except Exception:
                log.exception("intents: unexpected error in the purge")
            await asyncio.sleep(PURGE_INTERVAL)

    async def purge(self) -> int:
        """Forget every intent whose retention has ended; how many."""
        total = 0
        while True:
            count = await self._store.purge(expired_before=self._wall(), limit=PURGE_BATCH)
            total += count
            if count < PURGE_BATCH:
                return total

    # --- builds ---------------------------------------------------------------------------

    async def build(
        self,
        key: IntentKey,
        *,
        kind: str,
        request: bytes,
        response_type: str,
        differs: Differs,
        make: Make,
    ) -> IntentOutcome:
        """Answer a Build* call with a request_id (see the module's description).

        Args:
            key: The API key's scope and the request_id.
            kind: The RPC.
            request: The request as recorded (what a repeated call must equal).
            response_type: Full proto name of the response (for ALREADY_EXISTS).
            differs: Names the fields in which a recorded request differs.
            make: Builds attempt ``n``.

        Raises:
            IdempotencyKeyReusedError: The request_id was used for another request.
            IntentLandedError: The intent's transaction landed.
            IntentUnresolvedError: Whether it landed cannot be decided.
            DomainError: The build's own errors; STORE_UNAVAILABLE, SOLANA_UNAVAILABLE.
        """
        intent = await self._store.get(key)
        if intent is None:
            built = await make(1, None, None)
            now = self._wall()
            attempt = self._attempt(1, built, now)
            fresh = Intent(
                key=key,
                kind=kind,
                wallet=built.wallet,
                request=request,
                state=attempt.state,
                signature="",
                error=None,
                attempts=(attempt,),
                create_time=now,
                update_time=now,
                expire_time=now + self._retention,
            )
            if await self._store.insert(fresh):
                return IntentOutcome(response=built.response, intent=fresh, replayed=False)
            # Another call (maybe on another replica) recorded this request_id first:
            # its transaction is the intent's; ours is dropped unsigned.
            intent = await self._store.get(key)
            if intent is None:  # recorded and purged meanwhile: nothing left to answer
                raise StoreUnavailableError("intents.get", retry_after=0.1)
        fields = differs(intent.kind, intent.request)
        if fields:
            raise IdempotencyKeyReusedError(
                request_id=key.request_id, kind=intent.kind, fields=fields
            )
        intent = await self._refresh(intent)
        if intent.state is IntentState.LANDED:
            raise IntentLandedError(intent, response_type=response_type)
        latest = intent.latest
        if intent.state.live:
            return IntentOutcome(response=latest.response, intent=intent, replayed=True)
        built = await make(latest.number + 1, latest, intent.state)
        now = self._wall()
        attempt = self._attempt(latest.number + 1, built, now)
        if await self._store.add_attempt(
            key, replaces=latest.number, attempt=attempt, expire_time=now + self._retention
        ):
            rebuilt = replace(
                intent,
                state=attempt.state,
                signature="",
                error=None,
                attempts=(*intent.attempts, attempt),
                update_time=now,
                expire_time=now + self._retention,
            )
            return IntentOutcome(response=built.response, intent=rebuilt, replayed=False)
        # A concurrent rebuild won: answer with its transaction.
        winner = await self._store.get(key)
        if winner is None:
            raise StoreUnavailableError("intents.get", retry_after=0.1)
        return IntentOutcome(response=winner.latest.response, intent=winner, replayed=True)

    def _attempt(self, number: int, built: BuiltAttempt, now: float) -> Attempt:
        return Attempt(
            number=number,
            message_sha256=hashlib.sha256(built.message).hexdigest(),
            message=built.message,
            response=built.response,
            recent_blockhash=built.recent_blockhash,
            last_valid_block_height=built.last_valid_block_height,
            nonce_account=built.nonce_account,
            build_slot=built.build_slot,
            state=IntentState.BUILT,
            signature="",
            create_time=now,
        )

    async def get(self, key: IntentKey) -> Intent:
        """The intent, with what became of its latest transaction read now.

        Raises:
            IntentNotFoundError: No such request_id for this API key.
        """
        intent = await self._store.get(key)
        if intent is None:
            raise IntentNotFoundError(request_id=key.request_id)
        return await self._refresh(intent)

    async def submitted(self, message: bytes, signature: str) -> None:
        """The relay accepted a signed transaction: if it is an intent's, note it."""
        now = self._wall()
        await self._store.submitted(
            message_sha256=hashlib.sha256(message).hexdigest(),
            signature=signature,
            now=now,
            expire_time=now + self._retention,
        )

    # --- what became of it ------------------------------------------------------------------

    async def _refresh(self, intent: Intent) -> Intent:
        """Read what became of the latest transaction (unless that is known for good)
        and record any change."""
        latest = intent.latest
        if intent.state is IntentState.LANDED or not latest.state.live:
            return intent
        seen = await self._observe(intent.wallet, latest)
        if (seen.state, seen.signature) == (latest.state, latest.signature):
            return intent
        now = self._wall()
        await self._store.observe(
            intent.key,
            attempt=latest.number,
            state=seen.state,
            signature=seen.signature,
            error=seen.error,
            now=now,
            expire_time=now + self._retention,
        )
        attempts = (
            *intent.attempts[:-1],
            replace(latest, state=seen.state, signature=seen.signature),
        )
        return replace(
            intent,
            state=seen.state,
            signature=seen.signature,
            error=seen.error,
            attempts=attempts,
            update_time=now,
            expire_time=now + self._retention,
        )

    async def _observe(self, wallet: str, attempt: Attempt) -> _Observation:
        if attempt.signature and self._relay is not None:
            seen = await self._relayed(attempt)
            if seen is not None:
                return seen
        # Whether it can still land is read before the history: a transaction that
        # landed before its lifetime ended is then in the history read after.
        over = await self._lifetime_over(attempt)
        found = await self._find(wallet, attempt)
        if found is not None:
            signature, err = found
            if err is None:
                return _Observation(state=IntentState.LANDED, signature=signature)
            return _Observation(
                state=IntentState.FAILED, signature=signature, error=self._decode(err, attempt)
            )
        if over:
            return _Observation(state=IntentState.EXPIRED, signature=attempt.signature)
        return _Observation(state=attempt.state, signature=attempt.signature)

    async def _relayed(self, attempt: Attempt) -> _Observation | None:
        """What the relay says of a submitted transaction (None: it does not know)."""
        assert self._relay is not None
        try:
            status = await self._relay.status(attempt.signature, timeout=self._timeout)
        except TransactionNotFoundError:
            return None
        if status.state in (TxState.CONFIRMED, TxState.FINALIZED):
            return _Observation(state=IntentState.LANDED, signature=attempt.signature)
        if status.state is TxState.FAILED:
            return _Observation(
                state=IntentState.FAILED, signature=attempt.signature, error=status.error
            )
        if status.state is TxState.EXPIRED:
            return _Observation(state=IntentState.EXPIRED, signature=attempt.signature)
        return _Observation(state=IntentState.SUBMITTED, signature=attempt.signature)

    async def _ask(self, method: str, params: list[Any]) -> Any:
        try:
            return await self._rpc.call(method, params, timeout=self._timeout)
        except RpcError as exc:
            raise ChainUnavailable(f"{method}: {exc.message}") from None

    async def _lifetime_over(self, attempt: Attempt) -> bool:
        """Whether the transaction can never land any more: the finalized block height
        passed its last valid one, or its nonce account holds another value."""
        if attempt.nonce_account:
            answer = await self._ask(
                "getAccountInfo",
                [attempt.nonce_account, {"encoding": "base64", "commitment": "confirmed"}],
            )
            value = answer.get("value") if isinstance(answer, dict) else None
            if value is None:
                return True
            try:
                data = base64.b64decode(value["data"][0])
                current = str(decode_nonce_account(data, address=attempt.nonce_account).nonce)
            except (DomainError, KeyError, IndexError, TypeError, ValueError):
                return True
            return current != attempt.recent_blockhash
        height = await self._ask("getBlockHeight", [{"commitment": "finalized"}])
        return int(height) > attempt.last_valid_block_height

    async def _find(self, wallet: str, attempt: Attempt) -> tuple[str, Any] | None:
        """The signature (and error) of the attempt's transaction in the wallet's
        history since it was built, recognised as the wallet's signature of its message.

        Raises:
            IntentUnresolvedError: Too much history to search.
        """
        payer = Pubkey.from_string(wallet)
        since = max(0, attempt.build_slot - MAX_PROCESSING_AGE)
        before: str | None = None
        for _ in range(MAX_HISTORY_PAGES):
            config: dict[str, Any] = {"limit": HISTORY_PAGE, "commitment": "confirmed"}
            if before is not None:
                config["before"] = before
            page = await self._ask("getSignaturesForAddress", [wallet, config])
            if not isinstance(page, list):
                raise ChainUnavailable("getSignaturesForAddress: malformed answer")
            for entry in page:
                if int(entry["slot"]) < since:
                    return None
                text = str(entry["signature"])
                with contextlib.suppress(ValueError):
                    if Signature.from_string(text).verify(payer, attempt.message):
                        return text, entry.get("err")
            if len(page) < HISTORY_PAGE:
                return None
            before = str(page[-1]["signature"])
        raise IntentUnresolvedError(
            f"wallet {wallet} has more than {MAX_HISTORY_PAGES * HISTORY_PAGE} transactions "
            f"since attempt {attempt.number} was built: whether it landed cannot be decided",
            metadata={"wallet": wallet, "message_sha256": attempt.message_sha256},
        )

    def _decode(self, err: Any, attempt: Attempt) -> DecodedTransactionError:
        message = from_bytes_versioned(attempt.message)
        refs = instruction_refs(message) if isinstance(message, Message | MessageV0) else ()
        return decode_transaction_error(err, instructions=refs)
