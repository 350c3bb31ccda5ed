"""A real agent-staking server on an ephemeral port, on the session's localnet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from agentstaking.v1 import keys_pb2_grpc, staking_pb2_grpc
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair

from service.config import Settings
from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._receipts import ReceiptCheck, published_keys

SOL = 1_000_000_000
FEE_BPS = 25


@dataclass
class Service:
    server: AgentStakingServer
    channel: grpc.aio.Channel
    """Calls carry the staking key."""
    staking: staking_pb2_grpc.StakingServiceAsyncStub
    keys: keys_pb2_grpc.KeyServiceAsyncStub
    """Calls carry the admin key."""
    rpc: AsyncClient
    fee_wallet: Keypair
    vote_account: str
    staking_secret: str
    admin_secret: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture(scope="session")
async def service(
    localnet: LocalnetServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
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
        data_dir=tmp_path_factory.mktemp("data"),
        database_url=f"sqlite:///{tmp_path_factory.mktemp('keys') / 'keys.db'}",
    )
    server = AgentStakingServer(settings)
    await server.start()
    assert server.keys is not None
    _, staking_secret = await server.keys.create(display_name="agent", scopes=["staking"])
    _, admin_secret = await server.keys.create(display_name="operator", scopes=["admin"])
    address = f"127.0.0.1:{server.port}"
    channel = keyed_channel(address, staking_secret, ReceiptCheck(published_keys(server)))
    admin_channel = keyed_channel(address, admin_secret)
    yield Service(
        server=server,
        channel=channel,
        staking=staking_pb2_grpc.StakingServiceStub(channel),
        keys=keys_pb2_grpc.KeyServiceStub(admin_channel),
        rpc=rpc,
        fee_wallet=fee_wallet,
        vote_account=vote_account,
        staking_secret=staking_secret,
        admin_secret=admin_secret,
    )
    await channel.close()
    await admin_channel.close()
    await server.stop(0)
    await rpc.close()


@pytest.fixture
async def wallet(service: Service) -> Keypair:
    """A new wallet holding 50 SOL."""
    keypair = Keypair()
    await service.rpc.request_airdrop(keypair.pubkey(), 50 * SOL)
    return keypair
