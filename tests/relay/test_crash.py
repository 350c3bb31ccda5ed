"""`kill -9` of a real server process with transactions in flight: another server
(sharing the PostgreSQL database) reads their true states at once and, once the dead
owner's leases run out, takes them over and lands them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agentstaking.v1 import staking_pb2, staking_pb2_grpc, types_pb2
from solders.keypair import Keypair

from service.keys import KeyManager, open_store
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._process import server_process
from tests.api._helpers import balance

from ._helpers import latest_blockhash, states, submit, transfer, watch_all
from .conftest import HeldChain, held_settings

LEASE = 2.0
IN_FLIGHT = 5


async def _staking_key(database_url: str) -> str:
    manager = KeyManager(await open_store(database_url))
    try:
        _, secret = await manager.create(display_name="agent", scopes=["staking"])
    finally:
        await manager.stop()
    return secret


async def test_kill_9_with_transactions_in_flight_a_second_server_takes_over(
    held_chain: HeldChain, held_wallet: Keypair, postgres_url: str, tmp_path: Path
) -> None:
    secret = await _staking_key(postgres_url)
    env = {
        "AGENT_STAKING_DATABASE_URL": postgres_url,
        "AGENT_STAKING_RPC_URLS": json.dumps([held_chain.proxy.url]),
        "AGENT_STAKING_SERVICE_FEE_BPS": "0",
        "AGENT_STAKING_DATA_DIR": str(tmp_path / "first"),
        "AGENT_STAKING_RELAY_LEASE_SECONDS": str(LEASE),
        "AGENT_STAKING_RELAY_POLL_SECONDS": "0.1",
        "AGENT_STAKING_RELAY_REBROADCAST_SECONDS": "0.3",
        "AGENT_STAKING_LOG_LEVELS": '{"service.access": "WARNING"}',
    }
    destinations = [Keypair().pubkey() for _ in range(IN_FLIGHT)]
    second: AgentStakingServer | None = None
    held_chain.proxy.swallow_sends = True
    try:
        async with server_process(env) as first:
            await first.wait_for_line('"listening"')
            blockhash = await latest_blockhash(held_chain.rpc)
            txs = [transfer(held_wallet, blockhash, to=to) for to in destinations]
            channel = keyed_channel(first.address, secret)
            answers = await asyncio.gather(
                *(submit(staking_pb2_grpc.StakingServiceStub(channel), tx) for tx in txs)
            )
            assert {a.status.state for a in answers} == {types_pb2.TRANSACTION_STATE_SENT}
            await first.kill()
            await channel.close()
        signatures = [str(tx.signatures[0]) for tx in txs]

        settings = held_settings(held_chain.proxy.url, tmp_path / "second", postgres_url)
        second = AgentStakingServer(settings.model_copy(update={"relay_lease_seconds": LEASE}))
        await second.start()
        channel = keyed_channel(f"127.0.0.1:{second.port}", secret)
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        # The owner is dead and its leases still run: the record answers, never NOT_FOUND.
        for signature in signatures:
            status = (
                await stub.GetTransactionStatus(
                    staking_pb2.GetTransactionStatusRequest(signature=signature), timeout=5
                )
            ).status
            assert status.state == types_pb2.TRANSACTION_STATE_SENT, signature
            assert status.send_count >= 1 and status.last_valid_block_height > 0

        held_chain.proxy.swallow_sends = False
        finals = await asyncio.gather(*(watch_all(stub, s, timeout=30) for s in signatures))
        assert [states(seen)[-1] for seen in finals] == ["FINALIZED"] * IN_FLIGHT
        assert second.relay is not None
        assert second.relay.stats().counters["taken_over"] == IN_FLIGHT
        for to in destinations:
            assert await balance(held_chain.rpc, to) == 1_000_000
        await channel.close()
    finally:
        held_chain.proxy.swallow_sends = False
        if second is not None:
            await second.stop(0)
