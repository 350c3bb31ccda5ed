"""Two replicas on one PostgreSQL database and one receipt key file (a Secret): racing
calls with one request_id make one intent, the replicas answer each other's intents,
and an intent outlives a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
import pytest
from agentstaking.v1 import intents_pb2, receipts_pb2, staking_pb2, staking_pb2_grpc, types_pb2
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair

from service.config import Settings
from service.localnet import LocalnetServer
from service.receipts import KeyRing, write_key_file
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._receipts import ReceiptCheck, published_keys
from tests.api._helpers import refused_once_landed, rich_details, sign

SOL = 1_000_000_000


def _settings(
    localnet: LocalnetServer, database_url: str, keys: Path, data_dir: Path, fee: Keypair
) -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        rpc_urls=[localnet.url],
        fee_recipient=str(fee.pubkey()),
        database_url=database_url,
        receipt_key_file=keys,
        data_dir=data_dir,
        blockhash_refresh_seconds=0.2,
        ratelimit_wallet_per_minute=100_000,
        ratelimit_wallet_burst=10_000,
        shutdown_grace_seconds=1,
    )


@pytest.fixture
async def replicas(
    lifecycle_localnet: LocalnetServer, postgres_url: str, tmp_path: Path
) -> AsyncIterator[tuple[list[AgentStakingServer], Settings, AsyncClient]]:
    rpc = AsyncClient(lifecycle_localnet.url, commitment=Confirmed)
    fee = Keypair()
    await rpc.request_airdrop(fee.pubkey(), SOL)
    keys = tmp_path / "secret" / "receipt-keys.json"
    write_key_file(keys, KeyRing.generate(datetime.now(UTC)))
    servers = []
    for name in ("a", "b"):
        server = AgentStakingServer(
            _settings(lifecycle_localnet, postgres_url, keys, tmp_path / name, fee)
        )
        await server.start()
        servers.append(server)
    yield servers, servers[0].settings, rpc
    for server in servers:
        await server.stop(0)
    await rpc.close()


async def test_racing_replicas_make_one_intent_and_share_it(
    replicas: tuple[list[AgentStakingServer], Settings, AsyncClient],
    postgres_url: str,
    tmp_path: Path,
) -> None:
    servers, settings, rpc = replicas
    assert servers[0].keys is not None
    _, secret = await servers[0].keys.create(display_name="agent", scopes=["staking"])
    channels = [
        keyed_channel(f"127.0.0.1:{s.port}", secret, ReceiptCheck(published_keys(s)))
        for s in servers
    ]
    stubs = [staking_pb2_grpc.StakingServiceStub(c) for c in channels]
    wallet = Keypair()
    await rpc.request_airdrop(wallet.pubkey(), 10 * SOL)
    await asyncio.sleep(0.3)
    request = staking_pb2.BuildStakeTransactionRequest(
        wallet=str(wallet.pubkey()), amount_lamports=2 * SOL, request_id="raced"
    )
    # Four calls at once, two on each replica.
    answers = await asyncio.gather(*(stub.BuildStakeTransaction(request) for stub in stubs * 2))
    assert all(answer == answers[0] for answer in answers)
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM intents") == 1
        assert await conn.fetchval("SELECT count(*) FROM intent_attempts") == 1
    finally:
        await conn.close()
    # Both replicas publish the same keys: each one's receipts verify with the other's.
    infos = [await s.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest()) for s in stubs]
    assert infos[0].receipt_keys == infos[1].receipt_keys

    # Submitted through one replica, the intent is known landed on the other.
    submitted = await stubs[0].SubmitTransaction(
        staking_pb2.SubmitTransactionRequest(
            transaction=bytes(sign(answers[0].transaction, wallet)),
            commitment=types_pb2.COMMITMENT_CONFIRMED,
        )
    )
    # (once the relaying replica has recorded the landing, or the chain shows it)
    refusal = await refused_once_landed(lambda: stubs[1].BuildStakeTransaction(request))
    assert refusal.code() == grpc.StatusCode.ALREADY_EXISTS
    assert rich_details(refusal)["ErrorInfo"].metadata["signature"] == submitted.signature

    # A restarted replica still knows it.
    await servers[1].stop(0)
    restarted = AgentStakingServer(settings.model_copy(update={"data_dir": tmp_path / "b2"}))
    await restarted.start()
    servers[1] = restarted  # stopped by the fixture
    channel = keyed_channel(f"127.0.0.1:{restarted.port}", secret)
    channels.append(channel)
    intent = (
        await staking_pb2_grpc.StakingServiceStub(channel).GetIntent(
            intents_pb2.GetIntentRequest(request_id="raced")
        )
    ).intent
    assert (intent.state, intent.signature) == (
        receipts_pb2.INTENT_STATE_LANDED,
        submitted.signature,
    )
    for open_channel in channels:
        await open_channel.close()
