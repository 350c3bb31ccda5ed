from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair

from service.localnet import LocalnetServer


class RawRpc:
    """Plain JSON-RPC over HTTP, for shapes no client library checks for us."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url

    async def post(self, body: Any) -> Any:
        async with self._session.post(self._url, json=body) as response:
            return await response.json()

    async def call(self, method: str, *params: Any) -> Any:
        return await self.post(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        )

    async def result(self, method: str, *params: Any) -> Any:
        answer = await self.call(method, *params)
        assert "error" not in answer, answer
        return answer["result"]


@pytest.fixture(scope="session")
async def client(localnet: LocalnetServer) -> AsyncIterator[AsyncClient]:
    rpc = AsyncClient(localnet.url, commitment=Confirmed)
    yield rpc
    await rpc.close()


@pytest.fixture(scope="session")
async def raw(localnet: LocalnetServer) -> AsyncIterator[RawRpc]:
    async with aiohttp.ClientSession() as session:
        yield RawRpc(session, localnet.url)


@pytest.fixture
async def funded(raw: RawRpc) -> Keypair:
    """A new wallet with 100 SOL."""
    wallet = Keypair()
    await raw.result("requestAirdrop", str(wallet.pubkey()), 100 * 10**9)
    return wallet
