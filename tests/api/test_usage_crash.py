"""Usage counts and `kill -9`: what a crash can lose is bounded, and what was written
stays written (a real server process, killed with SIGKILL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentstaking.v1 import staking_pb2, staking_pb2_grpc

from service.keys import KeyManager, open_store
from service.localnet import LocalnetServer
from tests._grpc_auth import keyed_channel
from tests._process import serve_env, server_process
from tests._wait import until

FLUSH_CALLS = 50
CALLS = 237
CONCURRENCY = 8


async def _key(database_url: str) -> tuple[str, str]:
    manager = KeyManager(await open_store(database_url))
    try:
        key, secret = await manager.create(display_name="agent", scopes=["staking"])
    finally:
        await manager.stop()
    return key.key_id, secret


async def _recorded(database_url: str, key_id: str) -> int:
    manager = KeyManager(await open_store(database_url))
    try:
        return (await manager.get(key_id)).request_count
    finally:
        await manager.stop()


async def _until_recorded(database_url: str, key_id: str, at_least: int) -> None:
    async def written() -> bool:
        return await _recorded(database_url, key_id) >= at_least

    await until(written, timeout=15, what=f"{at_least} calls written")


async def _calls(address: str, secret: str, total: int) -> None:
    """`total` authenticated calls, `CONCURRENCY` at a time."""
    async with keyed_channel(address, secret) as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        queue = list(range(total))

        async def worker() -> None:
            while queue:
                queue.pop()
                await stub.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest(), timeout=10)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def test_kill_9_loses_fewer_counts_than_key_usage_flush_calls(
    localnet: LocalnetServer, postgres_url: str, tmp_path: Path
) -> None:
    """No time-based flush at all (an hour): only the count bound protects the counts."""
    key_id, secret = await _key(postgres_url)
    env = serve_env(
        postgres_url,
        localnet.url,
        tmp_path,
        AGENT_STAKING_KEY_USAGE_FLUSH_SECONDS="3600",
        AGENT_STAKING_KEY_USAGE_FLUSH_CALLS=str(FLUSH_CALLS),
    )
    async with server_process(env) as server:
        await server.wait_for_line('{"listening"')
        await _calls(server.address, secret, CALLS)
        # Every full batch of FLUSH_CALLS is written without waiting for the hour.
        await _until_recorded(postgres_url, key_id, CALLS - FLUSH_CALLS + 1)
        await server.kill()
    recorded = await _recorded(postgres_url, key_id)
    assert CALLS - FLUSH_CALLS < recorded <= CALLS


async def test_kill_9_keeps_every_count_written_by_the_interval_flush(
    localnet: LocalnetServer, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'state.db'}"
    key_id, secret = await _key(database_url)
    env = serve_env(
        database_url, localnet.url, tmp_path, AGENT_STAKING_KEY_USAGE_FLUSH_SECONDS="0.2"
    )
    async with server_process(env) as server:
        await server.wait_for_line('{"listening"')
        await _calls(server.address, secret, 40)
        # Idle for one interval: every call is written, then the crash loses none.
        await _until_recorded(database_url, key_id, 40)
        await server.kill()
    assert await _recorded(database_url, key_id) == 40
