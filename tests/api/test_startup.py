"""Start-up with a dependency down: the server listens (health NOT_SERVING, calls
UNAVAILABLE with RetryInfo), retries with one log line per attempt, becomes ready when
the dependency answers, and gives up at the configured time with one line, exit 1,
never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from agentstaking.v1 import staking_pb2, staking_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service._startup import StartupError
from service.config import Settings
from service.keys import KeyManager, open_store
from service.localnet import LocalnetServer
from service.server import KEY_SERVICE, STAKING_SERVICE, AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._process import ServerProcess, free_port, serve_env, server_process
from tests._proxy import RpcProxy, TcpProxy
from tests._wait import until

from ._helpers import rich_details

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAITING = "does not answer"


async def _health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5, wait_for_ready=True
        )
    return int(reply.status)


async def _health_is(address: str, service: str, status: int) -> bool:
    return await _health(address, service) == status


def _env(
    database_url: str, localnet: LocalnetServer, tmp_path: Path, **extra: str
) -> dict[str, str]:
    return serve_env(
        database_url, localnet.url, tmp_path, AGENT_STAKING_STARTUP_RETRY_MAX_SECONDS="0.3", **extra
    )


def _in_process(rpc: RpcProxy, tmp_path: Path, **extra: object) -> Settings:
    """An in-process server on SQLite and one Solana endpoint, with short waits."""
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "rpc_urls": [rpc.url],
        "service_fee_bps": 0,
        "metrics_listen": "off",
        "data_dir": tmp_path,
        "database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "startup_retry_max_seconds": 0.2,
        "rpc_timeout_seconds": 0.3,
    }
    return Settings(**{**values, **extra})  # type: ignore[arg-type]


def _attempt_lines(server: ServerProcess) -> list[dict[str, object]]:
    return [
        r
        for r in server.records()
        if r.get("logger") == "service.startup" and WAITING in str(r.get("message"))
    ]


async def test_start_with_postgres_down_waits_not_serving_then_serves(
    localnet: LocalnetServer, postgres_url: str, tmp_path: Path
) -> None:
    manager = KeyManager(await open_store(postgres_url))
    _, secret = await manager.create(display_name="agent", scopes=["staking"])
    await manager.stop()
    proxy = TcpProxy.for_url(postgres_url)
    await proxy.start()
    await proxy.refuse()  # PostgreSQL "down": its address refuses connections
    env = _env(proxy.url_through(postgres_url), localnet, tmp_path)
    try:
        async with server_process(env) as server:
            await server.wait_for_line(WAITING)
            # Listening, alive, not ready.
            assert await _health(server.address) == NOT_SERVING
            assert await _health(server.address, KEY_SERVICE) == NOT_SERVING
            assert await _health(server.address, STAKING_SERVICE) == NOT_SERVING
            assert await _health(server.address, "grpc.health.v1.Health") == SERVING
            async with keyed_channel(server.address, secret) as channel:
                stub = staking_pb2_grpc.StakingServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest(), timeout=5)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                details = rich_details(caught.value)
                assert details["ErrorInfo"].reason == "KEY_STORE_UNAVAILABLE"
                assert details["RetryInfo"].retry_delay.ToNanoseconds() > 0

                while len(_attempt_lines(server)) < 3:
                    await server.wait_for_line(WAITING)
                    await asyncio.sleep(0.1)
                await proxy.restore()
                announced = json.loads(await server.wait_for_line('{"listening"'))
                assert announced["listening"] == server.address
                assert await _health(server.address) == SERVING
                assert await _health(server.address, KEY_SERVICE) == SERVING
                info = await stub.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest(), timeout=5)
                assert info.minimum_delegation_lamports > 0
            assert await server.stop() == 0

        attempts = _attempt_lines(server)
        # One line per attempt, each saying what, why, and when it gives up.
        numbers = [int(str(r["message"]).split("attempt ")[1].split(",")[0]) for r in attempts]
        assert numbers == list(range(1, len(numbers) + 1))
        assert all("the database postgresql://127.0.0.1:" in str(r["message"]) for r in attempts)
        assert all("giving up in" in str(r["message"]) for r in attempts)
        assert any("answers (attempt" in str(r.get("message")) for r in server.records())
        assert "Traceback" not in "\n".join(server.lines) + server.stderr.decode()
    finally:
        await proxy.stop()


async def test_start_gives_up_at_the_configured_time_with_one_line(
    localnet: LocalnetServer, tmp_path: Path
) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    env = _env(dead, localnet, tmp_path, AGENT_STAKING_STARTUP_TIMEOUT_SECONDS="1.5")
    async with server_process(env) as server:
        code = await server.exited(timeout=30)
    assert code == 1
    stderr = server.stderr.decode().strip().splitlines()
    assert len(stderr) == 1, stderr
    assert stderr[0].startswith("agent-staking: gave up after ")
    assert f"the database {dead.replace('postgres@', '')}" in stderr[0]
    assert "does not answer" in stderr[0]
    assert len(_attempt_lines(server)) >= 2
    assert "Traceback" not in "\n".join(server.lines)


@pytest.mark.parametrize("dependency", ["Solana RPC", "Redis"])
async def test_solana_and_fail_closed_redis_are_waited_for_too(
    localnet: LocalnetServer, tmp_path: Path, dependency: str, caplog: pytest.LogCaptureFixture
) -> None:
    rpc = RpcProxy(localnet.url)
    await rpc.start()
    settings = _in_process(
        rpc,
        tmp_path,
        startup_timeout_seconds=2.0,
        redis_url=f"redis://127.0.0.1:{free_port()}/0" if dependency == "Redis" else "",
        ratelimit_fail_closed=dependency == "Redis",
    )
    if dependency == "Solana RPC":
        await rpc.kill()
    server = AgentStakingServer(settings)
    try:
        with pytest.raises(StartupError) as caught:
            await server.start()
        assert dependency in str(caught.value) and "does not answer" in str(caught.value)
        assert len([r for r in caplog.records if WAITING in r.getMessage()]) >= 2
    finally:
        await server.stop(0)
        await rpc.stop()


async def test_solana_coming_back_during_start_up_lets_it_finish(
    localnet: LocalnetServer, tmp_path: Path
) -> None:
    rpc = RpcProxy(localnet.url)
    await rpc.start()
    await rpc.kill()
    settings = _in_process(rpc, tmp_path, rpc_breaker_cooldown_seconds=0.2)
    server = AgentStakingServer(settings)
    starting = asyncio.create_task(server.start())
    try:
        await until(lambda: server.port != 0 and server.keys is not None)
        address = f"127.0.0.1:{server.port}"
        # The database answered: key management is ready; staking is not.
        await until(lambda: _health_is(address, KEY_SERVICE, SERVING))
        assert await _health(address, STAKING_SERVICE) == NOT_SERVING
        assert not starting.done()
        await rpc.revive()
        await asyncio.wait_for(starting, 30)
        assert await _health(address, STAKING_SERVICE) == SERVING
    finally:
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await server.stop(0)
        await rpc.stop()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # A check across settings: pydantic's own text would quote all of them.
        (
            {
                "AGENT_STAKING_WEBHOOK_LEASE_SECONDS": "1",
                "AGENT_STAKING_REDIS_URL": "redis://:RSECRET7@127.0.0.1:1/0",
                "AGENT_STAKING_DATABASE_URL": "postgresql://u:PSECRET8@127.0.0.1:1/x",
            },
            "webhook_lease_seconds must exceed webhook_timeout_seconds",
        ),
        (
            {
                "AGENT_STAKING_RATELIMIT_WALLET_BURST": "-1",
                "AGENT_STAKING_REDIS_URL": "redis://:RSECRET7@127.0.0.1:1/0",
            },
            "ratelimit_wallet_burst (AGENT_STAKING_RATELIMIT_WALLET_BURST)",
        ),
        # Not JSON where a list or map is: the settings library's own parse error.
        (
            {"AGENT_STAKING_TRACING_HEADERS": "authorization=Bearer SECRET9,x"},
            "tracing_headers (AGENT_STAKING_TRACING_HEADERS): not valid JSON",
        ),
    ],
)
def test_invalid_settings_are_one_line_naming_them_and_no_value(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--listen", "127.0.0.1:0"],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("agent-staking: invalid settings: ")
    assert named in done.stderr
    assert "SECRET" not in done.stderr + done.stdout


async def test_a_refused_solana_endpoint_is_asked_again_not_waited_out(
    localnet: LocalnetServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused connection answers at once: start-up retries with its backoff and
    gives up at its own time, not after one attempt's full RPC timeout."""
    rpc = RpcProxy(localnet.url)
    await rpc.start()
    await rpc.kill()
    settings = _in_process(rpc, tmp_path, startup_timeout_seconds=2.0, rpc_timeout_seconds=30.0)
    server = AgentStakingServer(settings)
    try:
        with pytest.raises(StartupError) as caught:
            await asyncio.wait_for(server.start(), 20)
        assert "connection refused" in str(caught.value)
        assert len([r for r in caplog.records if WAITING in r.getMessage()]) >= 2
    finally:
        await server.stop(0)
        await rpc.stop()
