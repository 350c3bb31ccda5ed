"""The one gate every Build* RPC goes through: a signed receipt on every built
transaction, and the server-held intent of a request with a ``request_id``.

A servicer method marked :func:`build_rpc` hands its request to the servicer's
:class:`BuildGate`, which calls the method's body to build (once, or again to
rebuild an expired intent) and signs what it returns. The gate converts (requests
and responses as protos, receipts as their canonical payload) and delegates:
the payload to ``service.core.receipts``, the signature to the receipt key
(``service.receipts``), the intent's decisions to ``service.chain.IntentBook``.
Without a request_id a build costs one payload and one Ed25519 signature more,
and no I/O.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar

import grpc
from agentstaking.v1 import receipts_pb2, staking_pb2, types_pb2
from google.protobuf import message_factory
from google.protobuf.message import Message

from service.chain import (
    Attempt,
    BuiltAttempt,
    ChainContext,
    IntentBook,
    IntentLandedError,
    IntentState,
)
from service.core.errors import DomainError, InvalidArgumentError
from service.core.receipts import (
    InstructionAmount,
    ReceiptFees,
    ReceiptPayload,
    changes_between,
    parse_receipt_payload,
    receipt_payload,
)
from service.receipts import ReceiptSigner

from ._intent_converters import intent_key, intent_state_to_proto, receipt_key_to_proto
from ._principal import current_principal

BUILD_RPC_MARK: Final = "__build_rpc__"
"""Set on servicer methods that go through the gate (a test checks every Build*)."""


Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Self = TypeVar("Self", bound="HasGate")


class HasGate(Protocol):
    """A servicer with a gate."""

    @property
    def build_gate(self) -> BuildGate: ...


def caller_scope() -> str:
    """The intent scope of the call: its API key id (empty without one)."""
    principal = current_principal.get()
    return principal.key_id if principal is not None else ""


def _fees(prepared: types_pb2.PreparedTransaction) -> ReceiptFees:
    fees = prepared.fees
    return ReceiptFees(
        service_fee_lamports=fees.service_fee_lamports,
        service_fee_bps=fees.service_fee_bps,
        fee_recipient=fees.fee_recipient,
        network_fee_lamports=fees.network_fee_lamports,
        priority_fee_lamports=fees.priority_fee_lamports,
        rent_exempt_reserve_lamports=fees.rent_exempt_reserve_lamports,
        total_debit_lamports=fees.total_debit_lamports,
    )


# What a receipt reads of an instruction that states no amount: nothing (it moves
# nothing the receipt lists), so every such instruction is this one.
_NO_AMOUNT = InstructionAmount(program="", type="", accounts=(), lamports=None)


def _amount(instruction: types_pb2.InstructionSummary) -> InstructionAmount:
    """The build's own decoding of an instruction, as its receipt reads it (the
    accounts only matter where an amount moves)."""
    if not instruction.HasField("lamports"):
        return _NO_AMOUNT
    return InstructionAmount(
        program=instruction.program_name,
        type=instruction.type,
        accounts=tuple(a.address for a in instruction.accounts),
        lamports=instruction.lamports,
    )


def _wallet_balance(prepared: types_pb2.PreparedTransaction) -> int | None:
    """The wallet's balance before the transaction, when the build simulated it."""
    if not prepared.HasField("simulation") or not prepared.required_signers:
        return None
    wallet = prepared.required_signers[0]
    for change in prepared.simulation.balance_changes:
        if change.address == wallet:
            return change.pre_lamports
    return None


def recorded_request(request: Message) -> bytes:
    """What a repeated call must equal: the request without its request_id and
    without options.simulate (a retry may ask for a simulation, or not)."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    if copy.HasField("options"):
        copy.options.ClearField("simulate")  # type: ignore[attr-defined]
    return copy.SerializeToString(deterministic=True)


def request_differences(current: Message, stored: bytes) -> tuple[str, ...]:
    """The fields (dotted one level into messages) in which two recorded requests
    differ."""
    mine = type(current).FromString(recorded_request(current))
    theirs = type(current).FromString(stored)
    found: list[str] = []
    for field in mine.DESCRIPTOR.fields:
        a, b = getattr(mine, field.name), getattr(theirs, field.name)
        if a == b:
            continue
        if field.message_type is not None and not field.is_repeated:
            inner = [
                f"{field.name}.{sub.name}"
                for sub in field.message_type.fields
                if getattr(a, sub.name) != getattr(b, sub.name)
            ]
            found.extend(inner or [field.name])
        else:
            found.append(field.name)
    return tuple(found)


class BuildGate:
    """Signs every build's receipt; holds the intents of builds with a request_id.

    Args:
        signer: The receipt keys.
        chain: The cached chain context (the cluster's genesis hash, the slot of a
            build).
        book: The server-held intents.
        wall_clock: Unix seconds (the receipts' issue time).
    """

    def __init__(
        self,
        *,
        signer: ReceiptSigner,
        chain: ChainContext,
        book: IntentBook,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.book = book
        self._chain = chain
        self._wall = wall_clock

    def receipt_keys(self) -> list[receipts_pb2.ReceiptKey]:
        """The published keys (for GetNetworkInfo)."""
        return [receipt_key_to_proto(key) for key in self.signer.published()]

    def sign(
        self,
        prepared: types_pb2.PreparedTransaction,
        *,
        kind: str,
        request_id: str,
        attempt: int,
        scope: str,
    ) -> ReceiptPayload:
        """Set ``prepared.receipt``: the payload of this build, signed. Its payload."""
        key = self.signer.signing_key()
        payload = receipt_payload(
            message=prepared.message,
            instructions=[_amount(i) for i in prepared.instructions],
            fees=_fees(prepared),
            last_valid_block_height=prepared.last_valid_block_height,
            kind=kind,
            request_id=request_id,
            attempt=attempt,
            api_key_id=scope,
            cluster=self._chain.snapshot().genesis_hash,
            key_id=key.key_id,
            issue_time_millis=int(self._wall() * 1000),
        )
        text = payload.canonical()
        # Set where it lives (every field of Receipt): no message built to be copied in.
        receipt = prepared.receipt
        receipt.payload = text
        receipt.signature = key.sign(text.encode("ascii"))
        receipt.key_id = key.key_id
        return payload

    async def run(self, kind: str, request: Req, build: Callable[[Req], Awaitable[Resp]]) -> Resp:
        """Build (or answer from the intent) and sign.

        Raises:
            DomainError: The build's errors; for a request_id also
                IDEMPOTENCY_KEY_REUSED, INTENT_ALREADY_LANDED, INTENT_UNRESOLVED,
                STORE_UNAVAILABLE.
        """
        scope = caller_scope()
        request_id: str = getattr(request, "request_id", "")
        if not request_id:
            response = await build(request)
            self.sign(_prepared(response), kind=kind, request_id=request_id, attempt=0, scope=scope)
            return response

        try:
            key = intent_key(request_id, scope=scope)
        except InvalidArgumentError as bad_id:
            # The build checks every field, the request_id among them, and reports all
            # of them together; only a build with no field to fault would get this far.
            await build(request)
            raise bad_id from None
        response_class = _response_class(kind)
        made: list[tuple[BuiltAttempt, Resp]] = []

        async def make(
            number: int, previous: Attempt | None, previous_state: IntentState | None
        ) -> BuiltAttempt:
            attempt, response = await self._attempt(
                kind, request, build, response_class, number, previous, previous_state, scope
            )
            made.append((attempt, response))
            return attempt

        try:
            outcome = await self.book.build(
                key,
                kind=kind,
                request=recorded_request(request),
                response_type=_response_type(kind),
                differs=lambda stored_kind, stored: (
                    ("kind",) if stored_kind != kind else request_differences(request, stored)
                ),
                make=make,
            )
        except IntentLandedError as exc:
            # Should the whole response not fit in the status, the simulation goes
            # first, then the instruction summaries (GetIntent returns it whole).
            lighter = response_class.FromString(exc.response)
            _prepared(lighter).ClearField("simulation")
            lightest = response_class.FromString(lighter.SerializeToString())
            _prepared(lightest).ClearField("instructions")
            exc.attachments = (
                (
                    _response_type(kind),
                    (
                        (exc.response, ""),
                        (
                            lighter.SerializeToString(),
                            "the original response without its simulation (GetIntent "
                            "returns it whole)",
                        ),
                        (
                            lightest.SerializeToString(),
                            "the original response without its simulation and instruction "
                            "summaries (GetIntent returns it whole)",
                        ),
                    ),
                ),
            )
            raise
        for attempt, response in made:
            if outcome.response is attempt.response:  # this call's build is the answer
                return response
        answer: Resp = response_class.FromString(outcome.response)
        return answer

    async def _attempt(
        self,
        kind: str,
        request: Req,
        build: Callable[[Req], Awaitable[Resp]],
        response_class: type[Resp],
        number: int,
        previous: Attempt | None,
        previous_state: IntentState | None,
        scope: str,
    ) -> tuple[BuiltAttempt, Resp]:
        """The attempt to record, and the response it encodes."""
        # Taken before building: the transaction cannot land in an earlier slot.
        slot = self._chain.snapshot().slot
        earlier: types_pb2.PreparedTransaction | None = None
        asked = request
        if previous is not None:
            earlier = _prepared(response_class.FromString(previous.response))
            # The same transaction again, re-checked against the chain: simulated, with
            # the compute unit limit of the previous attempt (same shape, same fees
            # unless the world changed).
            asked = type(request)()
            asked.CopyFrom(request)
            options: types_pb2.TransactionOptions = asked.options  # type: ignore[attr-defined]
            options.simulate = True
            if not options.compute_unit_limit:
                options.compute_unit_limit = earlier.compute_unit_limit
        try:
            response = await build(asked)
            if (
                previous is not None
                and not previous.nonce_account
                and _message_sha256(response) == previous.message_sha256
            ):
                # The previous attempt's very transaction: the cached blockhash has not
                # moved since it was built. That one landed and failed, and the cluster
                # refuses it now as already processed: only a newer blockhash makes a
                # transaction that can land.
                await self._chain.newer_blockhash(than=previous.recent_blockhash)
                response = await build(asked)
        except DomainError as exc:
            if previous_state is not None:
                exc.metadata.setdefault("request_id", getattr(request, "request_id", ""))
                exc.metadata.setdefault("intent_state", previous_state.value)
                exc.metadata.setdefault("attempt", str(number))
            raise
        prepared = _prepared(response)
        intent = prepared.intent
        intent.request_id = getattr(request, "request_id", "")
        intent.attempt = number
        payload = self.sign(
            prepared, kind=kind, request_id=intent.request_id, attempt=number, scope=scope
        )
        if earlier is not None and previous is not None and previous_state is not None:
            intent.previous_state = intent_state_to_proto(previous_state)
            intent.previous_message_sha256 = previous.message_sha256
            for change in changes_between(
                parse_receipt_payload(earlier.receipt.payload),
                payload,
                previous_wallet_balance=_wallet_balance(earlier),
                current_wallet_balance=_wallet_balance(prepared),
            ):
                intent.changes.add(
                    field=change.field,
                    previous=change.previous,
                    current=change.current,
                    description=change.description,
                )
        built = BuiltAttempt(
            response=response.SerializeToString(),
            message=prepared.message,
            wallet=payload.wallet,
            recent_blockhash=payload.recent_blockhash,
            last_valid_block_height=payload.last_valid_block_height,
            nonce_account=payload.nonce_account,
            build_slot=slot,
        )
        return built, response


def _message_sha256(response: Message) -> str:
    return hashlib.sha256(_prepared(response).message).hexdigest()


def _prepared(response: Message) -> types_pb2.PreparedTransaction:
    prepared = getattr(response, "transaction", None)
    if not isinstance(prepared, types_pb2.PreparedTransaction):
        raise TypeError(f"{type(response).__name__} has no PreparedTransaction `transaction`")
    return prepared


def _response_type(kind: str) -> str:
    return f"agentstaking.v1.{kind}Response"


def _response_class(kind: str) -> Any:
    method = staking_pb2.DESCRIPTOR.services_by_name["StakingService"].methods_by_name[kind]
    return message_factory.GetMessageClass(method.output_type)


def build_rpc(
    method: Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    """Route a Build* servicer method through the servicer's gate: its receipt, and
    the intent of its request_id. Apply under :func:`handle_errors`."""
    kind = method.__name__

    @functools.wraps(method)
    async def wrapper(
        self: Self, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> Resp:
        return await self.build_gate.run(kind, request, lambda asked: method(self, asked, context))

    setattr(wrapper, BUILD_RPC_MARK, kind)
    return wrapper
