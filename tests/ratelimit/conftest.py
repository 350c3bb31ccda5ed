"""Rate-limit fixtures: the shared Redis, a Redis of one's own, fake clocks, servers.

The shared Redis (``AGENT_STAKING_TEST_REDIS``, default ``redis://127.0.0.1:6379/0``)
serves every test process: each test works under a key prefix of its own, deleted
afterwards. Tests that stop Redis start their own ``redis-server`` on a free port.
Unreachable Redis (or no ``redis-server``) skips those tests locally and fails them in
CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from agentstaking.v1 import keys_pb2_grpc, staking_pb2_grpc

from service.config import Settings
from service.keys import KeyPolicy
from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._require import unavailable

MICROS_PER_SECOND = 1_000_000
REDIS_URL = os.environ.get("AGENT_STAKING_TEST_REDIS", "redis://127.0.0.1:6379/0")
SOL = 1_000_000_000


class FakeClock:
    """Monotonic seconds that move only when told; whole microseconds, so exact."""

    def __init__(self, start_us: int = 1_000 * MICROS_PER_SECOND) -> None:
        self.us = start_us

    def __call__(self) -> float:
        return self.us / MICROS_PER_SECOND

    def advance(self, seconds: float) -> None:
        self.us += round(seconds * MICROS_PER_SECOND)


@asynccontextmanager
async def redis_namespace() -> AsyncIterator[str]:
    """A fresh key prefix on the shared Redis; its keys are deleted afterwards."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except (aioredis.RedisError, OSError) as exc:
        await client.aclose()
        unavailable(f"Redis at {REDIS_URL} is unreachable ({exc!r}); the Redis tests need it")
    prefix = f"test-ratelimit:{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A fresh key prefix on the shared Redis (see `redis_namespace`)."""
    async with redis_namespace() as prefix:
        yield prefix


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisProcess:
    """A redis-server of one test's own, which the test may stop and start again."""

    port: int = field(default_factory=_free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed; the Redis outage tests need it")
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            for _ in range(100):
                try:
                    await client.ping()
                    return
                except (aioredis.RedisError, OSError):
                    await asyncio.sleep(0.05)
            raise AssertionError(f"redis-server on port {self.port} did not start")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisProcess]:
    server = RedisProcess()
    await server.start()
    yield server
    await server.stop()


@dataclass
class Running:
    """A real server on the session localnet, with a staking key."""

    server: AgentStakingServer
    secret: str
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def staking(self, secret: str | None = None) -> staking_pb2_grpc.StakingServiceAsyncStub:
        """A stub whose calls carry `secret` (default: this server's staking key)."""
        channel = keyed_channel(self.address, secret or self.secret)
        self.channels.append(channel)
        return staking_pb2_grpc.StakingServiceStub(channel)

    def keys(self, secret: str) -> keys_pb2_grpc.KeyServiceAsyncStub:
        channel = keyed_channel(self.address, secret)
        self.channels.append(channel)
        return keys_pb2_grpc.KeyServiceStub(channel)

    async def new_key(self, policy: KeyPolicy | None = None, scopes: tuple[str, ...] = ()) -> str:
        assert self.server.keys is not None
        _, secret = await self.server.keys.create(
            display_name="agent", scopes=list(scopes or ("staking",)), policy=policy or KeyPolicy()
        )
        return secret


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_server(localnet: LocalnetServer, tmp_path: Path) -> AsyncIterator[StartServer]:
    """`await start_server(**settings)`: a server of its own (stopped afterwards)."""
    started: list[Running] = []

    async def start(**overrides: Any) -> Running:
        settings: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "rpc_urls": [localnet.url],
            "service_fee_bps": 0,
            "default_vote_account": str(localnet.chain.validators[0].vote_account),
            "database_url": f"sqlite:///{tmp_path / f'keys-{len(started)}.db'}",
            "data_dir": tmp_path / f"data-{len(started)}",
            "blockhash_refresh_seconds": 0.5,
            "shutdown_grace_seconds": 0,
            # Generous in tests, so a loaded machine is not taken for a Redis outage.
            "redis_timeout_seconds": 2.0,
        }
        server = AgentStakingServer(Settings(**(settings | overrides)))
        await server.start()
        running = Running(server=server, secret="")
        started.append(running)
        running.secret = await running.new_key()
        return running

    yield start
    for running in started:
        for channel in running.channels:
            await channel.close()
        await running.server.stop(0)
