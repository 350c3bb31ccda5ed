"""An intent's transaction through the relay while the cluster does not get it (sends
swallowed by the proxy): SUBMITTED with its signature as soon as the relay accepts it,
EXPIRED once the relay gives up on it, then rebuilt and landed."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from agentstaking.v1 import intents_pb2, receipts_pb2, staking_pb2, types_pb2
from solders.keypair import Keypair

from tests.api._helpers import sign

from ._helpers import submit
from .conftest import SOL, HeldService
from .test_held_back import BEYOND_WINDOW

STATE = receipts_pb2.IntentState


async def _intent(held: HeldService, request_id: str) -> intents_pb2.Intent:
    answer = await held.staking.GetIntent(intents_pb2.GetIntentRequest(request_id=request_id))
    return answer.intent


async def test_submitted_then_expired_then_rebuilt_and_landed(
    held: HeldService, held_wallet: Keypair
) -> None:
    chain = held.chain
    request = staking_pb2.BuildStakeTransactionRequest(
        wallet=str(held_wallet.pubkey()), amount_lamports=2 * SOL, request_id="held-intent"
    )
    built = await held.staking.BuildStakeTransaction(request)
    chain.proxy.swallow_sends = True
    try:
        sent = await submit(held.staking, sign(built.transaction, held_wallet))
        assert sent.status.state == types_pb2.TRANSACTION_STATE_SENT
        intent = await _intent(held, "held-intent")
        assert (intent.state, intent.signature) == (STATE.INTENT_STATE_SUBMITTED, sent.signature)
        assert intent.attempts[0].signature == sent.signature
        # In flight: the same request gets the same transaction, never a second one.
        assert await held.staking.BuildStakeTransaction(request) == built
        await chain.advance_slots(BEYOND_WINDOW)
        # The relay gives up on it once the finalized height passed its bound.
        for _ in range(200):
            expired = await _intent(held, "held-intent")
            if expired.state != STATE.INTENT_STATE_SUBMITTED:
                break
            await asyncio.sleep(0.05)
        assert expired.state == STATE.INTENT_STATE_EXPIRED
    finally:
        chain.proxy.swallow_sends = False

    # The server's cached blockhash catches up with the new blocks.
    for _ in range(200):
        info = await held.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
        if info.block_height > built.transaction.last_valid_block_height:
            break
        await asyncio.sleep(0.05)
    rebuilt = await held.staking.BuildStakeTransaction(request)
    assert rebuilt.transaction.intent.attempt == 2
    assert rebuilt.transaction.intent.previous_state == STATE.INTENT_STATE_EXPIRED
    landed = await submit(
        held.staking,
        sign(rebuilt.transaction, held_wallet),
        commitment=types_pb2.COMMITMENT_CONFIRMED,
    )
    assert landed.status.state == types_pb2.TRANSACTION_STATE_CONFIRMED
    with pytest.raises(grpc.aio.AioRpcError) as refusal:
        await held.staking.BuildStakeTransaction(request)
    assert refusal.value.code() == grpc.StatusCode.ALREADY_EXISTS
    final = await _intent(held, "held-intent")
    assert (final.state, final.signature) == (STATE.INTENT_STATE_LANDED, landed.signature)
    assert [a.state for a in final.attempts] == [
        STATE.INTENT_STATE_EXPIRED,
        STATE.INTENT_STATE_LANDED,
    ]
