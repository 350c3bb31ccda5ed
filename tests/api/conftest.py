"""A real agent-staking server on an ephemeral port, on the session's localnet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from agentstaking.v1 import staking_pb2_grpc
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair

from service.config import Settings
from service.localnet import LocalnetServer
from service.server import AgentStakingServer

SOL = 1_000_000_000
FEE_BPS = 25


@dataclass
class Service:
    server: AgentStakingServer
    channel: grpc.aio.Channel
    staking: staking_pb2_grpc.StakingServiceAsyncStub
    rpc: AsyncClient
    fee_wallet: Keypair
    vote_account: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture(scope="session")
async def service(localnet: LocalnetServer) -> AsyncIterator[Service]:
    rpc = AsyncClient(localnet.url, commitment=Confirmed)
    fee_wallet = Keypair()
    # The fee wallet exists (rent-exempt) before any fee lands in it, as an operator's does.
    await rpc.request_airdrop(fee_wallet.pubkey(), SOL)
    vote_account = str(localnet.chain.validators[0].vote_account)
    settings = Settings(
        listen="127.0.0.1:0",
        rpc_urls=[localnet.url],
        service_fee_bps=FEE_BPS,
        fee_recipient=str(fee_wallet.pubkey()),
        default_vote_account=vote_account,
        blockhash_refresh_seconds=0.5,
        shutdown_grace_seconds=2,
    )
    server = AgentStakingServer(settings)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield Service(
        server=server,
        channel=channel,
        staking=staking_pb2_grpc.StakingServiceStub(channel),
        rpc=rpc,
        fee_wallet=fee_wallet,
        vote_account=vote_account,
    )
    await channel.close()
    await server.stop(0)
    await rpc.close()


@pytest.fixture
async def wallet(service: Service) -> Keypair:
    """A new wallet holding 50 SOL."""
    keypair = Keypair()
    await service.rpc.request_airdrop(keypair.pubkey(), 50 * SOL)
    return keypair
