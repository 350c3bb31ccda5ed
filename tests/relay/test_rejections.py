"""What SubmitTransaction refuses, with which code and reason, and that nothing is sent."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import grpc
import pytest
from agentstaking.v1 import keys_pb2, staking_pb2, staking_pb2_grpc, types_pb2
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from service.chain import Relay
from service.core.encoders import memo
from tests._grpc_auth import keyed_channel
from tests.api._helpers import rich_details

from ._helpers import eventually, latest_blockhash, signed, submit, transfer
from .conftest import Service

LAMPORTS = 1_234_567


def _garbage(wallet: Keypair, blockhash: Hash) -> bytes:
    return b"\x07 this is not a transaction"


def _empty(wallet: Keypair, blockhash: Hash) -> bytes:
    return b""


def _base64_text(wallet: Keypair, blockhash: Hash) -> bytes:
    return base64.b64encode(bytes(transfer(wallet, blockhash)))


def _trailing_bytes(wallet: Keypair, blockhash: Hash) -> bytes:
    return bytes(transfer(wallet, blockhash)) + b"\x00"


def _unsigned(wallet: Keypair, blockhash: Hash) -> bytes:
    message = transfer(wallet, blockhash).message
    return bytes(VersionedTransaction.populate(message, [Signature.default()]))


def _co_signer_missing(wallet: Keypair, blockhash: Hash) -> bytes:
    other = Keypair()
    message = MessageV0.try_compile(
        wallet.pubkey(),
        [memo("two signers", signers=[other.pubkey()])],
        [],
        blockhash,
    )
    own = wallet.sign_message(to_bytes_versioned(message))
    return bytes(VersionedTransaction.populate(message, [own, Signature.default()]))


def _wrong_signer(wallet: Keypair, blockhash: Hash) -> bytes:
    message = transfer(wallet, blockhash).message
    impostor = Keypair().sign_message(to_bytes_versioned(message))
    return bytes(VersionedTransaction.populate(message, [impostor]))


def _tampered(wallet: Keypair, blockhash: Hash) -> bytes:
    wire = bytearray(bytes(transfer(wallet, blockhash, lamports=LAMPORTS)))
    amount = LAMPORTS.to_bytes(8, "little")
    at = wire.index(amount)
    wire[at : at + 8] = (LAMPORTS * 1000).to_bytes(8, "little")
    return bytes(wire)


def _oversized(wallet: Keypair, blockhash: Hash) -> bytes:
    return bytes(signed(wallet, [memo("x" * 1200, signers=[wallet.pubkey()])], blockhash))


def _unknown_blockhash(wallet: Keypair, blockhash: Hash) -> bytes:
    return bytes(transfer(wallet, Hash.new_unique()))


CASES: dict[str, tuple[Callable[[Keypair, Hash], bytes], grpc.StatusCode, str]] = {
    "garbage": (_garbage, grpc.StatusCode.INVALID_ARGUMENT, "TRANSACTION_MALFORMED"),
    "empty": (_empty, grpc.StatusCode.INVALID_ARGUMENT, "TRANSACTION_MALFORMED"),
    "base64 text": (_base64_text, grpc.StatusCode.INVALID_ARGUMENT, "TRANSACTION_MALFORMED"),
    "trailing bytes": (_trailing_bytes, grpc.StatusCode.INVALID_ARGUMENT, "TRANSACTION_MALFORMED"),
    "unsigned": (_unsigned, grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_MISSING"),
    "co-signer missing": (
        _co_signer_missing,
        grpc.StatusCode.INVALID_ARGUMENT,
        "SIGNATURE_MISSING",
    ),
    "wrong signer": (_wrong_signer, grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_INVALID"),
    "tampered": (_tampered, grpc.StatusCode.INVALID_ARGUMENT, "SIGNATURE_INVALID"),
    "oversized": (_oversized, grpc.StatusCode.INVALID_ARGUMENT, "TRANSACTION_TOO_LARGE"),
    "unknown blockhash": (
        _unknown_blockhash,
        grpc.StatusCode.FAILED_PRECONDITION,
        "BLOCKHASH_EXPIRED",
    ),
}


def _relay(service: Service) -> Relay:
    assert service.server.relay is not None
    return service.server.relay


async def _signature_on_chain(service: Service, wire: bytes) -> bool:
    try:
        tx = VersionedTransaction.from_bytes(wire)
    except ValueError:
        return False
    found = await service.rpc.get_signature_statuses(
        [tx.signatures[0]], search_transaction_history=True
    )
    return found.value[0] is not None


@pytest.mark.parametrize("case", list(CASES))
async def test_invalid_transactions_are_refused_and_nothing_is_sent(
    service: Service, wallet: Keypair, case: str
) -> None:
    make, code, reason = CASES[case]
    relay = _relay(service)
    # Nothing else in flight, so the send counter only moves for this submission.
    await eventually(lambda: relay.stats().pending == 0, timeout=15)
    sent_before = relay.stats().counters.get("sent", 0)
    rejected_before = relay.stats().rejections.get(reason, 0)
    wire = make(wallet, await latest_blockhash(service.rpc))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(service.staking, wire)

    assert caught.value.code() == code
    details = rich_details(caught.value)
    assert details["ErrorInfo"].reason == reason
    assert details["ErrorInfo"].metadata["hint"]
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        [violation] = details["BadRequest"].field_violations
        assert violation.field == "transaction"
    stats = relay.stats()
    assert stats.counters.get("sent", 0) == sent_before
    assert stats.rejections[reason] == rejected_before + 1
    assert stats.pending == 0
    await asyncio.sleep(0.3)  # a few slots: a sent transaction would have landed
    assert not await _signature_on_chain(service, wire)


async def test_signature_errors_name_the_signer(service: Service, wallet: Keypair) -> None:
    wire = _co_signer_missing(wallet, await latest_blockhash(service.rpc))
    message = VersionedTransaction.from_bytes(wire).message
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(service.staking, wire)
    metadata = rich_details(caught.value)["ErrorInfo"].metadata
    assert metadata["missing_signers"] == str(message.account_keys[1])
    assert metadata["signature_indexes"] == "1"


async def test_duplicate_submissions_return_the_same_tracking(
    service: Service, wallet: Keypair
) -> None:
    tx = transfer(wallet, await latest_blockhash(service.rpc), note="duplicate")
    # Concurrent duplicates share the first submission; later ones read its status.
    first, second = await asyncio.gather(submit(service.staking, tx), submit(service.staking, tx))
    third = await submit(service.staking, tx, commitment=types_pb2.COMMITMENT_CONFIRMED)

    assert first.signature == second.signature == third.signature == str(tx.signatures[0])
    assert sorted([first.already_submitted, second.already_submitted]) == [False, True]
    assert third.already_submitted
    assert third.status.state in (
        types_pb2.TRANSACTION_STATE_CONFIRMED,
        types_pb2.TRANSACTION_STATE_FINALIZED,
    )
    # One send in all: duplicates send nothing.
    assert third.status.send_count == 1
    assert third.status.create_time == first.status.create_time


async def test_fee_payer_outside_the_key_policy_is_refused(
    service: Service, wallet: Keypair
) -> None:
    created = await service.keys.CreateApiKey(
        keys_pb2.CreateApiKeyRequest(
            display_name="restricted",
            scopes=["staking"],
            policy=keys_pb2.KeyPolicy(allowed_wallets=[str(Keypair().pubkey())]),
        )
    )
    channel = keyed_channel(service.address, created.secret)
    try:
        restricted = staking_pb2_grpc.StakingServiceStub(channel)
        tx = transfer(wallet, await latest_blockhash(service.rpc), note="restricted")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(restricted, tx)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        info = rich_details(caught.value)["ErrorInfo"]
        assert info.reason == "FEE_PAYER_NOT_ALLOWED"
        assert info.metadata["fee_payer"] == str(wallet.pubkey())
        assert not await _signature_on_chain(service, bytes(tx))
    finally:
        await channel.close()


@pytest.mark.parametrize(
    ("signature", "code", "reason"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_SIGNATURE"),
        ("not-base58-0OIl", grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_SIGNATURE"),
        (str(Keypair().pubkey()), grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_SIGNATURE"),
        (str(Signature.new_unique()), grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND"),
    ],
    ids=["empty", "not base58", "a pubkey", "unknown"],
)
async def test_status_and_watch_of_bad_or_unknown_signatures(
    service: Service, signature: str, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.staking.GetTransactionStatus(
            staking_pb2.GetTransactionStatusRequest(signature=signature)
        )
    assert (caught.value.code(), rich_details(caught.value)["ErrorInfo"].reason) == (code, reason)
    call = service.staking.WatchTransaction(
        staking_pb2.WatchTransactionRequest(signature=signature), timeout=5
    )
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        async for _ in call:
            pass
    assert (streamed.value.code(), rich_details(streamed.value)["ErrorInfo"].reason) == (
        code,
        reason,
    )
    assert _relay(service).watcher_count() == 0


async def test_unknown_commitment_is_an_invalid_argument(service: Service, wallet: Keypair) -> None:
    tx = transfer(wallet, await latest_blockhash(service.rpc))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(service.staking, tx, commitment=42)  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_details(caught.value)["BadRequest"].field_violations[0].field == "commitment"


def test_tampering_case_changes_the_amount_only() -> None:
    # The tampering case relies on the amount appearing once in the wire bytes.
    tx = transfer(Keypair(), Hash.new_unique(), lamports=LAMPORTS)
    assert bytes(tx).count(LAMPORTS.to_bytes(8, "little")) == 1
