"""Relay fixtures: a gRPC `service` on the session localnet, a "held" and a "frozen" cluster.

`service` and `wallet` are the gRPC suite's (its data directory is a temporary one,
so transactions still in flight when the session ends are saved there, where no
later run reads them back). `held` is a second real server whose only Solana
endpoint is a `SwallowingProxy` in front of a localnet of its own, with a fast
landing loop: tests there may swallow sends and move that localnet's slots forward
without disturbing anybody else's blockhashes. `frozen` is the same on a localnet
whose slots move only when a test advances them (or a transaction lands), reached
through a fault proxy (`tests._proxy.RpcProxy`) as well: block heights are then
exactly where a test puts them, however slow the machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from agentstaking.v1 import staking_pb2_grpc
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair

from service.chain import Relay
from service.config import Settings
from service.localnet import LocalnetConfig, LocalnetServer
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._proxy import RpcProxy
from tests.api.conftest import SOL, Service, service, wallet
from tests.relay._proxy import SwallowingProxy

__all__ = ["SOL", "FrozenService", "HeldChain", "HeldService", "Service", "service", "wallet"]


@dataclass
class HeldChain:
    localnet: LocalnetServer
    proxy: SwallowingProxy
    rpc: AsyncClient
    """Straight to the localnet (not through the proxy)."""

    async def advance_slots(self, slots: int) -> None:
        """Move the tip forward with the localnet's admin method."""
        body = {"jsonrpc": "2.0", "id": 1, "method": "localnet_advanceSlots", "params": [slots]}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.localnet.url, json=body) as response,
        ):
            answer = await response.json()
        assert "error" not in answer, answer


@dataclass
class HeldService:
    chain: HeldChain
    server: AgentStakingServer
    staking: staking_pb2_grpc.StakingServiceAsyncStub
    data_dir: Path
    database_url: str
    staking_secret: str

    @property
    def relay(self) -> Relay:
        assert self.server.relay is not None
        return self.server.relay


def held_settings(proxy_url: str, data_dir: Path, database_url: str) -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        rpc_urls=[proxy_url],
        service_fee_bps=0,
        blockhash_refresh_seconds=0.5,
        shutdown_grace_seconds=1,
        database_url=database_url,
        data_dir=data_dir,
        relay_poll_seconds=0.1,
        relay_rebroadcast_seconds=0.3,
    )


@contextlib.asynccontextmanager
async def _chain(config: LocalnetConfig) -> AsyncIterator[HeldChain]:
    localnet = LocalnetServer(config)
    await localnet.start()
    proxy = SwallowingProxy(localnet.url)
    await proxy.start()
    rpc = AsyncClient(localnet.url, commitment=Confirmed)
    try:
        yield HeldChain(localnet=localnet, proxy=proxy, rpc=rpc)
    finally:
        await rpc.close()
        await proxy.stop()
        await localnet.stop()


@contextlib.asynccontextmanager
async def _serving(chain: HeldChain, rpc_url: str, data_dir: Path) -> AsyncIterator[HeldService]:
    """A started server whose only Solana endpoint is `rpc_url`, with a staking key."""
    database_url = f"sqlite:///{data_dir / 'keys.db'}"
    server = AgentStakingServer(held_settings(rpc_url, data_dir, database_url))
    await server.start()
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="held-agent", scopes=["staking"])
    channel = keyed_channel(f"127.0.0.1:{server.port}", secret)
    try:
        yield HeldService(
            chain=chain,
            server=server,
            staking=staking_pb2_grpc.StakingServiceStub(channel),
            data_dir=data_dir,
            database_url=database_url,
            staking_secret=secret,
        )
    finally:
        await channel.close()
        await server.stop(0)


@pytest.fixture(scope="session")
async def held_chain() -> AsyncIterator[HeldChain]:
    async with _chain(LocalnetConfig(slot_duration=0.1)) as chain:
        yield chain


@pytest.fixture(scope="session")
async def held(
    held_chain: HeldChain, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HeldService]:
    async with _serving(held_chain, held_chain.proxy.url, tmp_path_factory.mktemp("held")) as held:
        yield held


@pytest.fixture
async def held_wallet(held_chain: HeldChain) -> Keypair:
    """A new wallet holding 10 SOL on the held localnet."""
    keypair = Keypair()
    await held_chain.rpc.request_airdrop(keypair.pubkey(), 10 * SOL)
    return keypair


@dataclass
class FrozenService(HeldService):
    faults: RpcProxy
    """Between the server and the chain's swallowing proxy."""


@pytest.fixture(scope="module")
async def frozen(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrozenService]:
    """A held server on a localnet whose slots move only when told (slot_duration 0)."""
    async with _chain(LocalnetConfig(slot_duration=0)) as chain:
        faults = RpcProxy(chain.proxy.url)
        await faults.start()
        try:
            async with _serving(chain, faults.url, tmp_path_factory.mktemp("frozen")) as held:
                yield FrozenService(**vars(held), faults=faults)
        finally:
            await faults.stop()


@pytest.fixture
async def frozen_wallet(frozen: FrozenService) -> Keypair:
    """A new wallet holding 10 SOL on the frozen localnet."""
    keypair = Keypair()
    await frozen.chain.rpc.request_airdrop(keypair.pubkey(), 10 * SOL)
    return keypair
