"""PostgreSQL refused and blackholed behind a TCP proxy, under a real server.

What must hold during the outage: keys verified before keep authenticating from
the cache (for `key_outage_grace_seconds`, then no more), unknown ones and key
changes answer UNAVAILABLE with RetryInfo at once, no call waits for the caller's
deadline, health reports `agentstaking.v1.KeyService` NOT_SERVING; after it: health
SERVING again and every counted call written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from agentstaking.v1 import keys_pb2, keys_pb2_grpc, staking_pb2, staking_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import Settings
from service.localnet import LocalnetServer
from service.server import KEY_SERVICE, STAKING_SERVICE, AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._proxy import TcpProxy
from tests._wait import until

from ._helpers import rich_details

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# A deadline far above the database's own timeout: reaching it means a call hung.
DEADLINE = 10.0
CACHE_TTL = 0.2
# Far longer than one call takes on a busy machine: calls do fall inside it.
GRACE = 2.0


@dataclass
class Outage:
    server: AgentStakingServer
    proxy: TcpProxy
    address: str
    warm_secret: str
    """Used before the outage (in the cache)."""
    cold_secret: str
    """Never used before the outage."""
    admin_secret: str
    warm_key_name: str

    def staking(
        self, secret: str
    ) -> tuple[grpc.aio.Channel, staking_pb2_grpc.StakingServiceAsyncStub]:
        channel = keyed_channel(self.address, secret)
        return channel, staking_pb2_grpc.StakingServiceStub(channel)

    async def health(self, service: str) -> int:
        async with grpc.aio.insecure_channel(self.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE
            )
        return int(reply.status)

    async def until_health(self, service: str, status: int) -> None:
        async def reached() -> bool:
            return await self.health(service) == status

        await until(reached, what=f"{service} health {status}")


async def _start(
    localnet: LocalnetServer, postgres_url: str, data_dir: Path, grace: float
) -> tuple[AgentStakingServer, TcpProxy]:
    proxy = TcpProxy.for_url(postgres_url)
    await proxy.start()
    settings = Settings(
        listen="127.0.0.1:0",
        rpc_urls=[localnet.url],
        service_fee_bps=0,
        metrics_listen="off",
        shutdown_grace_seconds=1,
        data_dir=data_dir,
        database_url=proxy.url_through(postgres_url),
        database_timeout_seconds=0.5,
        database_recheck_seconds=0.2,
        key_cache_ttl_seconds=CACHE_TTL,
        key_outage_grace_seconds=grace,
        key_usage_flush_seconds=0.2,
        relay_lease_seconds=1.0,
    )
    server = AgentStakingServer(settings)
    await server.start()
    return server, proxy


@pytest.fixture(params=[60.0], ids=["grace60"])
async def outage(
    request: pytest.FixtureRequest,
    localnet: LocalnetServer,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Outage]:
    server, proxy = await _start(
        localnet, postgres_url, tmp_path_factory.mktemp("outage"), request.param
    )
    try:
        assert server.keys is not None
        warm, warm_secret = await server.keys.create(display_name="warm", scopes=["staking"])
        _, cold_secret = await server.keys.create(display_name="cold", scopes=["staking"])
        _, admin_secret = await server.keys.create(display_name="admin", scopes=["admin"])
        yield Outage(
            server=server,
            proxy=proxy,
            address=f"127.0.0.1:{server.port}",
            warm_secret=warm_secret,
            cold_secret=cold_secret,
            admin_secret=admin_secret,
            warm_key_name=warm.name,
        )
    finally:
        await proxy.restore()
        await server.stop(0)
        await proxy.stop()


async def _network_info(stub: staking_pb2_grpc.StakingServiceAsyncStub) -> None:
    await stub.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest(), timeout=DEADLINE)


async def _unavailable(call: Awaitable[object]) -> str:
    """The ErrorInfo reason of a call that must fail UNAVAILABLE with RetryInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    details = rich_details(caught.value)
    assert details["RetryInfo"].retry_delay.ToNanoseconds() > 0
    return str(details["ErrorInfo"].reason)


@pytest.mark.parametrize("fault", ["refused", "blackholed"])
async def test_an_outage_degrades_softly_and_loses_no_usage(outage: Outage, fault: str) -> None:
    server = outage.server
    assert server.keys is not None
    warm_channel, warm = outage.staking(outage.warm_secret)
    cold_channel, cold = outage.staking(outage.cold_secret)
    admin_channel = keyed_channel(outage.address, outage.admin_secret)
    admin = keys_pb2_grpc.KeyServiceStub(admin_channel)
    try:
        # The warm key is new (count 0): every call it makes is counted from here, the
        # ones whose flush is still on its way when the fault begins included.
        await _network_info(warm)
        served = 1
        await admin.ListApiKeys(keys_pb2.ListApiKeysRequest(), timeout=DEADLINE)
        assert await outage.health(KEY_SERVICE) == SERVING

        if fault == "refused":
            await outage.proxy.refuse()
        else:
            outage.proxy.blackhole()
        # Seen by the next background write (usage flush, relay leases): NOT_SERVING.
        await outage.until_health(KEY_SERVICE, NOT_SERVING)
        # Builds do not need the database: staking stays in rotation; and the process
        # is alive (liveness must not restart it and lose its cache).
        assert await outage.health(STAKING_SERVICE) == SERVING
        assert await outage.health("grpc.health.v1.Health") == SERVING

        # The warm key keeps working, past its cache TTL, from the cache.
        while server.keys.stats().stale_authentications == 0:
            await _network_info(warm)
            served += 1
            assert served < 200, "never served from an expired cache entry"
            await asyncio.sleep(0.02)
        for _ in range(5):
            await _network_info(warm)
            served += 1
        # Unknown to the cache: UNAVAILABLE (with RetryInfo), at once, not at the deadline.
        assert await _unavailable(_network_info(cold)) == "KEY_STORE_UNAVAILABLE"
        # Key changes need the database.
        for call in (
            admin.CreateApiKey(
                keys_pb2.CreateApiKeyRequest(display_name="new", scopes=["staking"]),
                timeout=DEADLINE,
            ),
            admin.RevokeApiKey(
                keys_pb2.RevokeApiKeyRequest(name=outage.warm_key_name), timeout=DEADLINE
            ),
            admin.RotateApiKey(
                keys_pb2.RotateApiKeyRequest(name=outage.warm_key_name), timeout=DEADLINE
            ),
        ):
            assert await _unavailable(call) == "KEY_STORE_UNAVAILABLE"
        assert server.keys.stats().unflushed_calls >= served - 1  # the first may be written

        await outage.proxy.restore()
        await outage.until_health(KEY_SERVICE, SERVING)
        # Every call counted is written once the database answers, once.
        await until(lambda: _count_is(admin, outage.warm_key_name, served))
        assert await outage.health(KEY_SERVICE) == SERVING
    finally:
        for channel in (warm_channel, cold_channel, admin_channel):
            await channel.close()


async def test_the_cache_serves_an_outage_for_the_configured_time_only(
    localnet: LocalnetServer, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server, proxy = await _start(localnet, postgres_url, tmp_path_factory.mktemp("g"), GRACE)
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="warm", scopes=["staking"])
    channel = keyed_channel(f"127.0.0.1:{server.port}", secret)
    stub = staking_pb2_grpc.StakingServiceStub(channel)
    try:
        started = time.monotonic()
        await _network_info(stub)  # the key is read and cached
        read_by = time.monotonic()
        await proxy.refuse()
        # The entry expires between started + TTL and read_by + TTL; it may serve the
        # outage for GRACE after that, never longer.
        served: list[float] = []  # when each call that was answered began
        while True:
            asked = time.monotonic()
            try:
                await _network_info(stub)
            except grpc.aio.AioRpcError as exc:
                refused_at = time.monotonic()
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                assert rich_details(exc)["ErrorInfo"].reason == "KEY_STORE_UNAVAILABLE"
                break
            served.append(asked)
            assert asked < read_by + CACHE_TTL + GRACE, "served after the grace"
            await asyncio.sleep(0.01)
        # Served while the grace lasted, then refused: a revocation made meanwhile
        # elsewhere cannot stay unseen longer than that.
        assert served and server.keys.stats().stale_authentications > 0
        assert refused_at >= started + CACHE_TTL + GRACE, "refused before the grace ended"
    finally:
        await channel.close()
        await proxy.restore()
        await server.stop(0)
        await proxy.stop()


async def _request_count(admin: keys_pb2_grpc.KeyServiceAsyncStub, name: str) -> int:
    reply = await admin.GetApiKey(keys_pb2.GetApiKeyRequest(name=name), timeout=DEADLINE)
    return int(reply.api_key.request_count)


async def _count_is(admin: keys_pb2_grpc.KeyServiceAsyncStub, name: str, expected: int) -> bool:
    try:
        return await _request_count(admin, name) == expected
    except grpc.aio.AioRpcError:
        return False
