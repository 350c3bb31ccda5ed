"""Transactions the cluster never gets (sends swallowed by the proxy): expiry, restart.

These run against the `held` server: its only Solana endpoint is a proxy that can
answer sendTransaction without forwarding it, in front of a localnet of its own
whose slots the tests move forward.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from agentstaking.v1 import staking_pb2, staking_pb2_grpc, types_pb2
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.keypair import Keypair

from service.chain._relay import MAX_PROCESSING_AGE
from service.core.accounts import decode_nonce_account
from service.core.encoders import memo, system_advance_nonce, system_transfer
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._wait import until
from tests.api._helpers import balance, make_nonce_account, rich_details, send

from ._helpers import eventually, latest_blockhash, signed, states, submit, transfer, watch_all
from .conftest import HeldChain, HeldService, held_settings

# Past the blockhash window, plus the finalization depth, plus margin.
BEYOND_WINDOW = MAX_PROCESSING_AGE + 32 + 20


async def _on_chain(chain: HeldChain, signature: str) -> bool:
    from solders.signature import Signature

    found = await chain.rpc.get_signature_statuses(
        [Signature.from_string(signature)], search_transaction_history=True
    )
    return found.value[0] is not None


async def test_blockhash_leaving_the_window_before_landing_is_expired_for_good(
    held: HeldService, held_wallet: Keypair
) -> None:
    chain = held.chain
    tx = transfer(held_wallet, await latest_blockhash(chain.rpc), note="held back")
    signature = str(tx.signatures[0])
    wallet_before = await balance(chain.rpc, held_wallet.pubkey())
    chain.proxy.swallow_sends = True
    try:
        response = await submit(held.staking, tx)
        assert response.status.state == types_pb2.TRANSACTION_STATE_SENT
        assert response.status.last_valid_block_height > 0
        watcher = asyncio.create_task(watch_all(held.staking, signature, timeout=30))

        # The relay keeps rebroadcasting while the blockhash is valid.
        async def rebroadcast_twice() -> bool:
            status = (
                await held.staking.GetTransactionStatus(
                    staking_pb2.GetTransactionStatusRequest(signature=signature)
                )
            ).status
            assert status.state == types_pb2.TRANSACTION_STATE_SENT
            return status.send_count >= 3

        await until(rebroadcast_twice, what="two rebroadcasts")

        await chain.advance_slots(BEYOND_WINDOW)
        seen = await watcher
    finally:
        chain.proxy.swallow_sends = False

    assert states(seen) == ["SENT", "EXPIRED"]
    assert seen[-1].slot == 0 and not seen[-1].HasField("error")
    sends = chain.proxy.calls["sendTransaction"]
    # Expired is final: the same bytes again are not sent, and cannot land anyway.
    again = await submit(held.staking, tx)
    assert again.already_submitted
    assert again.status.state == types_pb2.TRANSACTION_STATE_EXPIRED
    await chain.rpc.send_raw_transaction(bytes(tx), opts=TxOpts(skip_preflight=True))
    await chain.advance_slots(3)
    await asyncio.sleep(0.5)
    assert chain.proxy.calls["sendTransaction"] == sends
    assert not await _on_chain(chain, signature)
    assert await balance(chain.rpc, held_wallet.pubkey()) == wallet_before
    assert held.relay.watcher_count() == 0
    assert held.relay.stats().counters["expired"] >= 1


async def test_durable_nonce_transaction_expires_when_the_nonce_advances(
    held: HeldService, held_wallet: Keypair
) -> None:
    chain = held.chain
    wallet = held_wallet
    nonce = await make_nonce_account(chain.rpc, wallet, wallet.pubkey())
    account = (await chain.rpc.get_account_info(nonce, Confirmed)).value
    assert account is not None
    value = decode_nonce_account(bytes(account.data)).nonce
    advance = system_advance_nonce(nonce_account=nonce, nonce_authority=wallet.pubkey())
    pay = system_transfer(source=wallet.pubkey(), destination=Keypair().pubkey(), lamports=10**6)
    tx = signed(wallet, [advance, pay], value)
    chain.proxy.swallow_sends = True
    try:
        response = await submit(held.staking, tx)
        assert response.status.state == types_pb2.TRANSACTION_STATE_SENT
        assert response.status.last_valid_block_height == 0
        watcher = asyncio.create_task(watch_all(held.staking, response.signature, timeout=30))
        await asyncio.sleep(0.5)
        assert not watcher.done()  # no block height makes it expire
        # Another transaction uses the nonce first: ours can never land now.
        await send(chain.rpc, signed(wallet, [advance, memo("other")], value))
        seen = await watcher
    finally:
        chain.proxy.swallow_sends = False
    assert states(seen) == ["SENT", "EXPIRED"]
    assert not await _on_chain(chain, response.signature)

    # A new transaction against the old nonce value is refused up front.
    stale = signed(wallet, [advance, memo("stale")], value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(held.staking, stale)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = rich_details(caught.value)["ErrorInfo"]
    assert info.reason == "NONCE_ADVANCED"
    assert info.metadata["nonce_account"] == str(nonce)


async def test_in_flight_transactions_survive_a_graceful_restart(
    held_chain: HeldChain, held_wallet: Keypair, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("restart")
    settings = held_settings(held_chain.proxy.url, data_dir, f"sqlite:///{data_dir / 'keys.db'}")
    destination = Keypair().pubkey()
    tx = transfer(held_wallet, await latest_blockhash(held_chain.rpc), to=destination)
    signature = str(tx.signatures[0])

    first = AgentStakingServer(settings)
    await first.start()
    assert first.keys is not None
    _, secret = await first.keys.create(display_name="agent", scopes=["staking"])
    held_chain.proxy.swallow_sends = True
    try:
        channel = keyed_channel(f"127.0.0.1:{first.port}", secret)
        response = await submit(staking_pb2_grpc.StakingServiceStub(channel), tx)
        assert response.status.state == types_pb2.TRANSACTION_STATE_SENT
        await channel.close()
        await first.stop(0)
    finally:
        held_chain.proxy.swallow_sends = False
    assert first.relay is not None and first.relay.stats().counters["released"] == 1

    second = AgentStakingServer(settings)
    await second.start()
    try:
        relay = second.relay
        assert relay is not None
        # Handed back at the stop: taken over in the first round, no lease to wait for.
        await eventually(lambda: relay.stats().counters.get("taken_over", 0) == 1)
        channel = keyed_channel(f"127.0.0.1:{second.port}", secret)
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        seen = await watch_all(stub, signature)
        assert states(seen)[-1] == "FINALIZED"
        assert seen[-1].send_count >= 2  # sent before the restart, rebroadcast after
        await channel.close()
        assert await balance(held_chain.rpc, destination) == 1_000_000
    finally:
        await second.stop(0)


async def test_submit_waiting_past_its_deadline_fails_but_relaying_goes_on(
    held: HeldService, held_wallet: Keypair
) -> None:
    chain = held.chain
    tx = transfer(held_wallet, await latest_blockhash(chain.rpc), note="deadline")
    chain.proxy.swallow_sends = True
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(held.staking, tx, commitment=types_pb2.COMMITMENT_CONFIRMED, timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        status = (
            await held.staking.GetTransactionStatus(
                staking_pb2.GetTransactionStatusRequest(signature=str(tx.signatures[0]))
            )
        ).status
        assert status.state == types_pb2.TRANSACTION_STATE_SENT and status.send_count >= 1
    finally:
        chain.proxy.swallow_sends = False
    # Sends reach the cluster again: the next rebroadcast lands it.
    seen = await watch_all(
        held.staking, str(tx.signatures[0]), commitment=types_pb2.COMMITMENT_CONFIRMED
    )
    assert states(seen)[-1] == "CONFIRMED"
    await eventually(lambda: held.relay.watcher_count() == 0)
