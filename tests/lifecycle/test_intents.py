"""Receipts and server-held intents over gRPC, on the lifecycle localnet.

Every transaction is signed by the wallet and executed on the localnet, through the
relay (SubmitTransaction) or sent to the node directly (the service then finds it in
the wallet's history). Receipts are verified with two Ed25519 implementations that
did not sign them (libsodium through PyNaCl, and solders' ed25519-dalek), against
the keys GetNetworkInfo publishes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentstaking.v1 import intents_pb2, receipts_pb2, staking_pb2, types_pb2
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from service.core import system_transfer
from service.core.plans import managed_nonce_address
from service.localnet import LocalnetServer
from service.receipts import read_key_file, write_key_file
from tests.api._helpers import attached, refused_once_landed, rich_details, sign
from tests.lifecycle.conftest import SOL, Lifecycle, open_lifecycle

SIMULATE = types_pb2.TransactionOptions(simulate=True)
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
STATE = receipts_pb2.IntentState


async def _keys(lc: Lifecycle) -> dict[str, receipts_pb2.ReceiptKey]:
    info = await lc.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    return {key.key_id: key for key in info.receipt_keys}


def _verified(receipt: receipts_pb2.Receipt, keys: dict[str, receipts_pb2.ReceiptKey]) -> bool:
    """Both independent implementations agree on a receipt (True: valid)."""
    public = keys[receipt.key_id].public_key
    try:
        VerifyKey(public).verify(receipt.payload.encode(), receipt.signature)
        sodium = True
    except BadSignatureError:
        sodium = False
    dalek = Signature.from_bytes(receipt.signature).verify(
        Pubkey.from_bytes(public), receipt.payload.encode()
    )
    assert sodium == dalek
    return sodium


async def _submit(lc: Lifecycle, prepared: types_pb2.PreparedTransaction, *signers: Keypair) -> str:
    """Sign and relay; return once confirmed."""
    submitted = await lc.staking.SubmitTransaction(
        staking_pb2.SubmitTransactionRequest(
            transaction=bytes(sign(prepared, *signers)), commitment=types_pb2.COMMITMENT_CONFIRMED
        )
    )
    assert submitted.status.state in (
        types_pb2.TRANSACTION_STATE_CONFIRMED,
        types_pb2.TRANSACTION_STATE_FINALIZED,
    ), submitted.status
    return submitted.signature


async def _intent(lc: Lifecycle, request_id: str) -> intents_pb2.Intent:
    return (await lc.staking.GetIntent(intents_pb2.GetIntentRequest(request_id=request_id))).intent


async def _expire(lc: Lifecycle, prepared: types_pb2.PreparedTransaction) -> None:
    """Move the chain past the transaction's last valid block height (finalized), and
    wait until the service's cached blockhash is a newer one."""
    await lc.call("localnet_advanceSlots", 300)
    for _ in range(200):
        info = await lc.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
        if info.block_height > prepared.last_valid_block_height + 100:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the service never saw the new blocks")


def _stake(
    wallet: Keypair, request_id: str, **fields: Any
) -> staking_pb2.BuildStakeTransactionRequest:
    values: dict[str, Any] = {"amount_lamports": 2 * SOL, **fields}
    return staking_pb2.BuildStakeTransactionRequest(
        wallet=str(wallet.pubkey()), request_id=request_id, **values
    )


async def test_receipt_verifies_independently_and_tampering_fails(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(10)
    built = await lc.staking.BuildStakeTransaction(_stake(wallet, "receipt-1", options=SIMULATE))
    prepared = built.transaction
    keys = await _keys(lc)
    (active,) = [k for k in keys.values() if k.status == receipts_pb2.RECEIPT_KEY_STATUS_ACTIVE]
    receipt = prepared.receipt
    assert receipt.key_id == active.key_id and active.algorithm == "ed25519"
    assert _verified(receipt, keys)
    payload = json.loads(receipt.payload)
    assert payload["message_sha256"] == hashlib.sha256(prepared.message).hexdigest()
    assert (payload["kind"], payload["request_id"], payload["attempt"]) == (
        "BuildStakeTransaction",
        "receipt-1",
        "1",
    )
    assert payload["wallet"] == str(wallet.pubkey())
    assert payload["cluster"] == (await lc.call("getGenesisHash"))
    assert payload["api_key_id"] and receipt.payload.isascii()
    moves = [(m["type"], m["to"], m["lamports"]) for m in payload["lamport_movements"]]
    assert moves == [
        (
            "CreateAccountWithSeed",
            built.stake_account,
            str(2 * SOL + prepared.fees.rent_exempt_reserve_lamports),
        ),
        ("Transfer", prepared.fees.fee_recipient, str(prepared.fees.service_fee_lamports)),
    ]
    # Any change to the payload, the signature or the key breaks it.
    tampered = receipts_pb2.Receipt()
    tampered.CopyFrom(receipt)
    tampered.payload = receipt.payload.replace(str(2 * SOL + 2_282_880), str(3 * SOL + 2_282_880))
    assert tampered.payload != receipt.payload and not _verified(tampered, keys)
    tampered.CopyFrom(receipt)
    tampered.signature = bytes([receipt.signature[0] ^ 1]) + receipt.signature[1:]
    assert not _verified(tampered, keys)
    # A receipt never certifies another message: its hash is in the signed payload.
    other = await lc.staking.BuildStakeTransaction(_stake(wallet, "receipt-2"))
    assert (
        json.loads(other.transaction.receipt.payload)["message_sha256"] != payload["message_sha256"]
    )


async def test_rotation_keeps_old_receipts_verifiable(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(10)
    assert lc.server.receipts is not None
    path = lc.server.receipts.path
    before = await lc.staking.BuildStakeTransaction(_stake(wallet, ""))
    old = before.transaction.receipt.key_id
    # Two steps, as for several replicas: publish the next key, then sign with it.
    write_key_file(path, read_key_file(path).stage(lc.server.receipts.ring().active.create_time))
    staged = await _until(lambda: _keys(lc), lambda keys: len(keys) == 2)
    (upcoming,) = [k for k in staged if k != old]
    assert staged[upcoming].status == receipts_pb2.RECEIPT_KEY_STATUS_NEXT
    write_key_file(path, read_key_file(path).rotate(staged[old].create_time.ToDatetime()))

    async def build() -> staking_pb2.BuildStakeTransactionResponse:
        return await lc.staking.BuildStakeTransaction(_stake(wallet, ""))

    after = await _until(build, lambda r: r.transaction.receipt.key_id == upcoming)
    keys = await _keys(lc)
    assert keys[old].status == receipts_pb2.RECEIPT_KEY_STATUS_RETIRED
    assert keys[old].HasField("retire_time")
    assert keys[upcoming].status == receipts_pb2.RECEIPT_KEY_STATUS_ACTIVE
    assert _verified(before.transaction.receipt, keys)
    assert _verified(after.transaction.receipt, keys)
    # Signed by the old key, the new receipt would not verify: keys are not mixed up.
    forged = receipts_pb2.Receipt()
    forged.CopyFrom(after.transaction.receipt)
    forged.key_id = old
    assert not _verified(forged, keys)


async def _until(
    produce: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], attempts: int = 100
) -> Any:
    for _ in range(attempts):
        value = await produce()
        if done(value):
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("never happened")


async def test_landed_stake_answers_already_exists_with_its_signature(
    lifecycle: Lifecycle,
) -> None:
    lc = lifecycle
    wallet = await lc.wallet(10)
    request = _stake(wallet, "stake-once", options=SIMULATE)
    built = await lc.staking.BuildStakeTransaction(request)
    intent = built.transaction.intent
    assert (intent.request_id, intent.attempt, len(intent.changes)) == ("stake-once", 1, 0)
    # Until it lands, the same request gets the same answer, receipt included.
    again = await lc.staking.BuildStakeTransaction(request)
    assert again == built
    assert (await _intent(lc, "stake-once")).state == STATE.INTENT_STATE_BUILT
    signature = await _submit(lc, built.transaction, wallet)
    refusal = await refused_once_landed(lambda: lc.staking.BuildStakeTransaction(request))
    assert refusal.code() == ALREADY_EXISTS
    info = rich_details(refusal)["ErrorInfo"]
    assert info.reason == "INTENT_ALREADY_LANDED"
    assert info.metadata["signature"] == signature and info.metadata["attempt"] == "1"
    # The original response, lightened to fit in a status (GetIntent has it whole):
    # what the note says is left out is, and nothing else.
    original = attached(refusal, staking_pb2.BuildStakeTransactionResponse)
    note = info.metadata["attachment"]
    assert "without its simulation" in note
    lighter = staking_pb2.BuildStakeTransactionResponse()
    lighter.CopyFrom(built)
    lighter.transaction.ClearField("simulation")
    if "instruction summaries" in note:
        lighter.transaction.ClearField("instructions")
    assert original == lighter
    landed = await _intent(lc, "stake-once")
    assert (landed.state, landed.signature, landed.kind) == (
        STATE.INTENT_STATE_LANDED,
        signature,
        "BuildStakeTransaction",
    )
    (attempt,) = landed.attempts
    assert (attempt.state, attempt.signature) == (STATE.INTENT_STATE_LANDED, signature)
    assert attempt.message_sha256 == json.loads(built.transaction.receipt.payload)["message_sha256"]
    whole = staking_pb2.BuildStakeTransactionResponse()
    assert landed.response.Unpack(whole) and whole == built
    # Without the simulation the request is the same one: refused as well.
    plain = _stake(wallet, "stake-once")
    refused = await refused_once_landed(lambda: lc.staking.BuildStakeTransaction(plain))
    assert refused.code() == ALREADY_EXISTS
    # Another API key has no such intent, but the request_id derives the same address,
    # and an account lives there now: a transaction creating it again could never land.
    from service.keys import KeyPolicy

    other = await lc.staking_with(KeyPolicy())
    for options in (types_pb2.TransactionOptions(), SIMULATE):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await other.BuildStakeTransaction(_stake(wallet, "stake-once", options=options))
        assert caught.value.code() == ALREADY_EXISTS
        info = rich_details(caught.value)["ErrorInfo"]
        assert info.reason == "STAKE_ACCOUNT_EXISTS"
        assert info.metadata["stake_account"] == built.stake_account


async def test_a_landing_outside_the_relay_is_found_on_chain(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(10)
    request = _stake(wallet, "stake-direct")
    built = await lc.staking.BuildStakeTransaction(request)
    # Straight to the node: the service never sees the signature.
    await lc.execute(built.transaction, wallet)
    refusal = await refused_once_landed(lambda: lc.staking.BuildStakeTransaction(request))
    assert refusal.code() == ALREADY_EXISTS
    signature = rich_details(refusal)["ErrorInfo"].metadata["signature"]
    assert Signature.from_string(signature).verify(wallet.pubkey(), built.transaction.message)
    assert (await _intent(lc, "stake-direct")).state == STATE.INTENT_STATE_LANDED


async def test_unstake_and_withdraw_by_amount_never_twice(lifecycle: Lifecycle) -> None:
    """Without the intent, a retry of either would pick the next account (or the
    rest of one) and do it again."""
    lc = lifecycle
    wallet = await lc.wallet(20)
    owner = str(wallet.pubkey())
    for _ in range(2):
        await lc.stake(wallet, 2 * SOL)
    await lc.advance_epochs(1)
    unstake = staking_pb2.BuildUnstakeTransactionRequest(
        wallet=owner, amount_lamports=2 * SOL, request_id="unstake-once"
    )
    built = await lc.staking.BuildUnstakeTransaction(unstake)
    assert not built.split_stake_accounts  # one whole account
    await lc.execute(built.transaction, wallet)
    refusal = await refused_once_landed(lambda: lc.staking.BuildUnstakeTransaction(unstake))
    assert refusal.code() == ALREADY_EXISTS
    assert attached(refusal, staking_pb2.BuildUnstakeTransactionResponse) == built
    states = [a.state for a in (await lc.positions(wallet)).stake_accounts]
    assert states.count(staking_pb2.STAKE_ACCOUNT_STATE_DEACTIVATING) == 1

    await lc.advance_epochs(1)
    withdraw = staking_pb2.BuildWithdrawTransactionRequest(
        wallet=owner, amount_lamports=SOL, request_id="withdraw-once"
    )
    before = await lc.balance(owner)
    taken = await lc.staking.BuildWithdrawTransaction(withdraw)
    assert taken.remaining_withdrawable_lamports > SOL  # room for a second one
    await lc.execute(taken.transaction, wallet)
    refusal = await refused_once_landed(lambda: lc.staking.BuildWithdrawTransaction(withdraw))
    assert refusal.code() == ALREADY_EXISTS
    assert await lc.balance(owner) == before + SOL - taken.transaction.fees.total_debit_lamports


async def test_an_expired_intent_is_rebuilt_and_lands_once(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(10)
    request = _stake(wallet, "stake-expired")
    first = await lc.staking.BuildStakeTransaction(request)
    stale = sign(first.transaction, wallet)
    await _expire(lc, first.transaction)
    expired = await _intent(lc, "stake-expired")
    assert expired.state == STATE.INTENT_STATE_EXPIRED
    second = await lc.staking.BuildStakeTransaction(request)
    intent = second.transaction.intent
    assert (intent.attempt, intent.previous_state) == (2, STATE.INTENT_STATE_EXPIRED)
    assert intent.previous_message_sha256 == expired.attempts[0].message_sha256
    assert list(intent.changes) == []  # the same accounts and amounts
    assert second.transaction.recent_blockhash != first.transaction.recent_blockhash
    assert (second.stake_account, second.seed) == (first.stake_account, first.seed)
    assert second.transaction.HasField("simulation")  # re-checked against the chain
    assert json.loads(second.transaction.receipt.payload)["attempt"] == "2"
    # The expired transaction can no longer land; the rebuilt one lands, once.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.SubmitTransaction(
            staking_pb2.SubmitTransactionRequest(transaction=bytes(stale))
        )
    assert rich_details(caught.value)["ErrorInfo"].reason == "BLOCKHASH_EXPIRED"
    assert await lc.staking.BuildStakeTransaction(request) == second
    signature = await _submit(lc, second.transaction, wallet)
    refusal = await refused_once_landed(lambda: lc.staking.BuildStakeTransaction(request))
    assert rich_details(refusal)["ErrorInfo"].metadata["attempt"] == "2"
    landed = await _intent(lc, "stake-expired")
    assert [a.state for a in landed.attempts] == [
        STATE.INTENT_STATE_EXPIRED,
        STATE.INTENT_STATE_LANDED,
    ]
    assert landed.signature == signature
    stakes = (await lc.positions(wallet)).stake_accounts
    assert [s.address for s in stakes] == [first.stake_account]
    assert stakes[0].delegated_lamports == 2 * SOL


async def test_a_rebuild_says_what_changed(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(10)
    request = _stake(wallet, "stake-changed", options=SIMULATE)
    first = await lc.staking.BuildStakeTransaction(request)
    await _expire(lc, first.transaction)
    # The world changes: most of the wallet's SOL goes elsewhere.
    drain = await lc.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()), amount_lamports=8 * SOL
        )
    )
    await lc.execute(drain.transaction, wallet)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.BuildStakeTransaction(request)
    info = rich_details(caught.value)["ErrorInfo"]
    assert info.reason == "INSUFFICIENT_FUNDS"
    assert (info.metadata["intent_state"], info.metadata["attempt"]) == ("EXPIRED", "2")
    await lc.call("requestAirdrop", str(wallet.pubkey()), 5 * SOL)
    second = await _until(
        lambda: lc.staking.BuildStakeTransaction(request),
        lambda r: r.transaction.intent.attempt == 2,
    )
    changes = {c.field: c for c in second.transaction.intent.changes}
    assert set(changes) == {"wallet_balance_lamports"}
    balance = changes["wallet_balance_lamports"]
    assert int(balance.previous) == 10 * SOL
    assert int(balance.current) == await lc.balance(wallet.pubkey())
    assert (
        balance.description == f"wallet_balance_lamports: {balance.previous} -> {balance.current}"
    )


async def test_reused_request_id_is_refused_and_scoped_to_the_api_key(
    lifecycle: Lifecycle,
) -> None:
    lc = lifecycle
    wallet = await lc.wallet(10)
    await lc.staking.BuildStakeTransaction(_stake(wallet, "reused"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.BuildStakeTransaction(
            _stake(
                wallet,
                "reused",
                amount_lamports=3 * SOL,
                options=types_pb2.TransactionOptions(memo="x"),
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = rich_details(caught.value)
    info = details["ErrorInfo"]
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert info.metadata["fields"] == "amount_lamports,options.memo"
    assert [v.field for v in details["BadRequest"].field_violations] == ["request_id"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.BuildUnstakeTransaction(
            staking_pb2.BuildUnstakeTransactionRequest(
                wallet=str(wallet.pubkey()), amount_lamports=SOL, request_id="reused"
            )
        )
    info = rich_details(caught.value)["ErrorInfo"]
    assert (info.reason, info.metadata["fields"]) == ("IDEMPOTENCY_KEY_REUSED", "kind")
    assert info.metadata["kind"] == "BuildStakeTransaction"
    # Another API key: another intent of its own.
    from service.keys import KeyPolicy

    other = await lc.staking_with(KeyPolicy())
    mine = await other.BuildStakeTransaction(_stake(wallet, "reused", amount_lamports=3 * SOL))
    assert mine.transaction.intent.attempt == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await other.GetIntent(intents_pb2.GetIntentRequest(request_id="never-used"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert rich_details(caught.value)["ErrorInfo"].reason == "INTENT_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await other.GetIntent(intents_pb2.GetIntentRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_failed_transaction_is_rebuilt(lifecycle: Lifecycle) -> None:
    """Landed and failed (nothing happened but the fee): the intent is FAILED, with the
    decoded error, and the same request_id builds it again."""
    await _fail_then_rebuild(lifecycle, "stake-fails")


async def test_a_rebuild_before_the_blockhash_moves_waits_for_a_newer_one(
    lifecycle_localnet: LocalnetServer, tmp_path: Path
) -> None:
    """Rebuilt while the service still hands out the blockhash the failed transaction
    was built on (here: never refreshed on its own), the same request would make that
    very transaction again, which the cluster refuses as already processed: the
    rebuild takes a newer blockhash instead, and lands."""
    async with open_lifecycle(lifecycle_localnet, tmp_path, blockhash_refresh_seconds=3600) as lc:
        built, rebuilt = await _fail_then_rebuild(lc, "stake-fails-at-once")
    first, second = (
        json.loads(p.transaction.receipt.payload)["recent_blockhash"] for p in (built, rebuilt)
    )
    assert first != second


async def _fail_then_rebuild(
    lc: Lifecycle, request_id: str
) -> tuple[staking_pb2.BuildStakeTransactionResponse, staking_pb2.BuildStakeTransactionResponse]:
    """Build a stake, let it land and fail, rebuild it with the same request_id and land
    that: the two builds."""
    wallet = await lc.wallet(3)
    request = _stake(wallet, request_id)
    built = await lc.staking.BuildStakeTransaction(request)
    # Leave the fee but not the stake: the transaction lands and fails.
    rest = await lc.balance(wallet.pubkey())
    sink = Keypair()
    blockhash = (await lc.call("getLatestBlockhash", {"commitment": "confirmed"}))["value"][
        "blockhash"
    ]
    spend = VersionedTransaction(
        MessageV0.try_compile(
            wallet.pubkey(),
            [
                system_transfer(
                    source=wallet.pubkey(), destination=sink.pubkey(), lamports=rest - SOL
                )
            ],
            [],
            Hash.from_string(blockhash),
        ),
        [wallet],
    )
    await lc.rpc.send_raw_transaction(bytes(spend))
    await _until(lambda: lc.balance(wallet.pubkey()), lambda b: b <= SOL)
    failed = await lc.staking.SubmitTransaction(
        staking_pb2.SubmitTransactionRequest(
            transaction=bytes(sign(built.transaction, wallet)),
            skip_preflight=True,
            commitment=types_pb2.COMMITMENT_CONFIRMED,
        )
    )
    assert failed.status.state == types_pb2.TRANSACTION_STATE_FAILED
    intent = await _until(
        lambda: _intent(lc, request_id), lambda i: i.state != STATE.INTENT_STATE_SUBMITTED
    )
    assert intent.state == STATE.INTENT_STATE_FAILED and intent.signature == failed.signature
    assert intent.error.kind == "InstructionError"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.BuildStakeTransaction(request)
    info = rich_details(caught.value)["ErrorInfo"]
    assert (info.reason, info.metadata["intent_state"]) == ("INSUFFICIENT_FUNDS", "FAILED")
    await lc.call("requestAirdrop", str(wallet.pubkey()), 5 * SOL)
    rebuilt = await _until(
        lambda: lc.staking.BuildStakeTransaction(request),
        lambda r: r.transaction.intent.attempt == 2,
    )
    assert rebuilt.transaction.intent.previous_state == STATE.INTENT_STATE_FAILED
    await _submit(lc, rebuilt.transaction, wallet)
    assert (await _intent(lc, request_id)).state == STATE.INTENT_STATE_LANDED
    return built, rebuilt


async def test_managed_nonce_signs_once_submits_later(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(10)
    owner = str(wallet.pubkey())
    managed = types_pb2.TransactionOptions(durable_nonce=types_pb2.DurableNonce(managed=True))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.BuildStakeTransaction(_stake(wallet, "", options=managed))
    info = rich_details(caught.value)["ErrorInfo"]
    assert info.reason == "MANAGED_NONCE_MISSING"
    address = str(managed_nonce_address(wallet.pubkey()))
    assert info.metadata["nonce_account"] == address
    create = await lc.staking.BuildNonceAccountTransaction(
        intents_pb2.BuildNonceAccountTransactionRequest(wallet=owner, options=SIMULATE)
    )
    assert (create.nonce_account, create.nonce_authority) == (address, owner)
    await lc.execute_as_promised(create.transaction, wallet)
    assert await lc.balance(address) == create.account_lamports
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.BuildNonceAccountTransaction(
            intents_pb2.BuildNonceAccountTransactionRequest(wallet=owner)
        )
    assert rich_details(caught.value)["ErrorInfo"].reason == "MANAGED_NONCE_EXISTS"
    await asyncio.sleep(0.25)  # a nonce advances only once the blockhash has moved on

    # Two decisions signed now against the same nonce value; one lands later.
    first = await lc.staking.BuildStakeTransaction(_stake(wallet, "nonce-a", options=managed))
    second = await lc.staking.BuildStakeTransaction(_stake(wallet, "nonce-b", options=managed))
    payload = json.loads(first.transaction.receipt.payload)
    assert (payload["nonce_account"], payload["last_valid_block_height"]) == (address, "0")
    assert first.transaction.last_valid_block_height == 0
    signed = sign(first.transaction, wallet)
    await lc.call("localnet_advanceSlots", 300)  # any blockhash would have expired
    await lc.staking.SubmitTransaction(
        staking_pb2.SubmitTransactionRequest(
            transaction=bytes(signed), commitment=types_pb2.COMMITMENT_CONFIRMED
        )
    )
    await refused_once_landed(
        lambda: lc.staking.BuildStakeTransaction(_stake(wallet, "nonce-a", options=managed))
    )
    # The nonce moved on: the other transaction can never land; its intent is rebuilt
    # against the new nonce value.
    assert (await _intent(lc, "nonce-b")).state == STATE.INTENT_STATE_EXPIRED
    rebuilt = await lc.staking.BuildStakeTransaction(_stake(wallet, "nonce-b", options=managed))
    assert rebuilt.transaction.intent.attempt == 2
    assert rebuilt.transaction.recent_blockhash != second.transaction.recent_blockhash
    await asyncio.sleep(0.25)
    await _submit(lc, rebuilt.transaction, wallet)
    await asyncio.sleep(0.25)
    close = await lc.staking.BuildNonceAccountTransaction(
        intents_pb2.BuildNonceAccountTransactionRequest(wallet=owner, close=True)
    )
    before = await lc.balance(owner)
    await lc.execute(close.transaction, wallet)
    assert (
        await lc.balance(owner)
        == before + close.account_lamports - close.transaction.fees.total_debit_lamports
    )
    assert await lc.balance(address) == 0
