"""What grpcurl and Kubernetes see: reflection, health, graceful drain, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentstaking.v1 import staking_pb2, staking_pb2_grpc, types_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from solders.keypair import Keypair

from service.config import Settings
from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._proxy import RpcProxy

from ._helpers import rich_details, stake_checks
from .conftest import SOL, Service

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest, *, v1: bool
) -> reflection_pb2.ServerReflectionResponse:
    if v1:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        stream = call(iter([request]))
    else:
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([request])
        )
    async for response in stream:
        return response
    raise AssertionError("no reflection response")


@pytest.mark.parametrize("v1", [True, False], ids=["v1", "v1alpha"])
async def test_reflection_lists_and_describes(service: Service, v1: bool) -> None:
    listed = await _reflect(
        service.channel, reflection_pb2.ServerReflectionRequest(list_services=""), v1=v1
    )
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "agentstaking.v1.StakingService",
        "agentstaking.v1.KeyService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    # Whatever is listed can be described (grpcurl's `describe`), v1 included.
    for name in names:
        found = await _reflect(
            service.channel,
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=name),
            v1=v1,
        )
        assert found.HasField("file_descriptor_response"), (name, found.error_response)

    described = await _reflect(
        service.channel,
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="agentstaking.v1.StakingService"
        ),
        v1=v1,
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    staking = next(f for f in files if f.name == "agentstaking/v1/staking.proto")
    methods = {m.name for m in staking.service[0].method}
    assert {"BuildStakeTransaction", "WatchTransaction", "GetNetworkInfo"} <= methods
    # The documentation travels with the descriptors, for `describe`.
    comments = [loc.leading_comments for loc in staking.source_code_info.location]
    assert any("stake account" in c for c in comments)
    # Dependencies come along so a client can resolve every type.
    assert {"agentstaking/v1/types.proto", "google/protobuf/timestamp.proto"} <= {
        f.name for f in files
    }

    missing = await _reflect(
        service.channel,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Service"),
        v1=v1,
    )
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_health_check_and_watch(service: Service) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", "agentstaking.v1.StakingService", "agentstaking.v1.KeyService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await watch.read()
    assert isinstance(first, health_pb2.HealthCheckResponse) and first.status == SERVING
    watch.cancel()


@dataclass
class OwnServer:
    server: AgentStakingServer
    proxy: RpcProxy
    secret: str

    def channel(self) -> grpc.aio.Channel:
        return keyed_channel(f"127.0.0.1:{self.server.port}", self.secret)


@pytest.fixture
async def own_server(localnet: LocalnetServer, tmp_path: Path) -> AsyncIterator[OwnServer]:
    """A server of its own behind a fault-injecting proxy, so faults touch no other test."""
    proxy = RpcProxy(localnet.url)
    await proxy.start()
    server = AgentStakingServer(
        Settings(
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path / 'keys.db'}",
            listen="127.0.0.1:0",
            rpc_urls=[proxy.url],
            service_fee_bps=0,
            default_vote_account=str(localnet.chain.validators[0].vote_account),
            blockhash_refresh_seconds=0.2,
            rpc_timeout_seconds=1.0,
            shutdown_grace_seconds=5,
            health_listen="127.0.0.1:0",
        )
    )
    await server.start()
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="agent", scopes=["staking"])
    yield OwnServer(server=server, proxy=proxy, secret=secret)
    await server.stop(0)
    await proxy.stop()


async def test_drain_flips_health_and_lets_calls_finish(
    own_server: OwnServer,
) -> None:
    server, proxy = own_server.server, own_server.proxy
    wallet = Keypair()
    async with own_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING
        # A slow call in flight: simulation held by the proxy (within the RPC timeout).
        proxy.faults.delay_methods["simulateTransaction"] = 0.6
        staking = staking_pb2_grpc.StakingServiceStub(channel)
        in_flight = asyncio.ensure_future(
            staking.BuildStakeTransaction(
                staking_pb2.BuildStakeTransactionRequest(
                    wallet=str(wallet.pubkey()),
                    amount_lamports=SOL,
                    options=types_pb2.TransactionOptions(simulate=True),
                )
            )
        )
        await asyncio.sleep(0.3)
        stopping = asyncio.ensure_future(server.stop())
        assert (await watch.read()).status == NOT_SERVING
        # The health port, still up: readiness says draining, liveness says alive (a
        # failing liveness probe would have the pod killed before its calls finish).
        assert server.health_endpoint is not None
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.health_endpoint.port}"
        ) as probe_channel:
            probe = health_pb2_grpc.HealthStub(probe_channel)
            for name, status in (("", NOT_SERVING), ("grpc.health.v1.Health", SERVING)):
                answer = await probe.Check(health_pb2.HealthCheckRequest(service=name))
                assert answer.status == status, name
        # The call in flight completes: with its answer (an empty wallet), not a cancellation.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await in_flight
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await stopping


async def test_solana_unreachable_means_not_serving(
    own_server: OwnServer,
) -> None:
    proxy = own_server.proxy
    async with own_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        staking = staking_pb2_grpc.StakingServiceStub(channel)
        proxy.faults.refuse = True
        for _ in range(100):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
            if answer.status == NOT_SERVING:
                break
            await asyncio.sleep(0.05)
        assert answer.status == NOT_SERVING
        keys = await health.Check(
            health_pb2.HealthCheckRequest(service="agentstaking.v1.KeyService")
        )
        assert keys.status == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await staking.BuildStakeTransaction(
                staking_pb2.BuildStakeTransactionRequest(
                    wallet=str(Keypair().pubkey()), amount_lamports=SOL
                )
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        proxy.faults.refuse = False
        for _ in range(100):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
            if answer.status == SERVING:
                break
            await asyncio.sleep(0.05)
        assert answer.status == SERVING
        await staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(Keypair().pubkey()), amount_lamports=SOL
            )
        )


async def test_stop_waits_for_a_health_report_in_flight(
    own_server: OwnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A health report the chain's monitor started is finished when stop() returns:
    nothing of the server is left running once it has stopped."""
    server, proxy = own_server.server, own_server.proxy
    entered, release = asyncio.Event(), asyncio.Event()
    reported: list[str] = []
    set_status = server.health.set

    async def held_set(service: str, status: int) -> None:
        entered.set()
        await release.wait()
        await set_status(service, status)
        reported.append(service)

    monkeypatch.setattr(server.health, "set", held_set)
    proxy.faults.refuse = True  # the monitor finds Solana unreachable and reports it
    await asyncio.wait_for(entered.wait(), timeout=10)
    stopping = asyncio.ensure_future(server.stop(0))
    # Long enough for stop() to finish if it did not wait for the report (it takes a
    # fraction of this); stop() cannot finish while the report is held.
    for _ in range(20):
        if stopping.done():
            break
        await asyncio.sleep(0.05)
    assert not stopping.done()
    release.set()
    await stopping
    assert reported and reported[0] == ""


async def test_a_failed_health_report_does_not_stop_the_shutdown_halfway(
    own_server: OwnServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server, proxy = own_server.server, own_server.proxy
    entered, release = asyncio.Event(), asyncio.Event()

    async def failing_set(service: str, status: int) -> None:
        entered.set()
        await release.wait()
        raise RuntimeError("the health servicer failed")

    monkeypatch.setattr(server.health, "set", failing_set)
    proxy.faults.refuse = True
    await asyncio.wait_for(entered.wait(), timeout=10)
    stopping = asyncio.ensure_future(server.stop(0))
    release.set()
    await stopping
    assert "a health report failed" in caplog.text
    # The rest of stop() ran: the server no longer answers.
    async with own_server.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_new_wallets_builds_share_fee_reads_while_the_endpoint_is_slow(
    own_server: OwnServer,
) -> None:
    proxy = own_server.proxy
    fees = "getRecentPrioritizationFees"
    proxy.faults.delay_methods[fees] = 0.1  # a distant endpoint (within the 1 s RPC timeout)
    async with own_server.channel() as channel:
        staking = staking_pb2_grpc.StakingServiceStub(channel)
        builds = await asyncio.gather(
            *(
                staking.BuildStakeTransaction(
                    staking_pb2.BuildStakeTransactionRequest(
                        wallet=str(Keypair().pubkey()), amount_lamports=SOL
                    ),
                    timeout=20,
                )
                for _ in range(20)
            )
        )
    assert all(build.transaction.message for build in builds)
    assert proxy.methods[fees] == 20  # one read per new wallet
    # At most the pool's 5 connections' worth went alone; the rest waited for a free
    # connection and went together.
    assert sum(proxy.batch_sizes) >= 20 - 5


async def test_a_build_its_plan_refuses_is_refused_before_its_fee_read(
    own_server: OwnServer,
) -> None:
    """A build is checked in full before it reads recent prioritization fees: an
    amount the plan refuses (its debit overflows a u64) is that refusal even while the
    endpoint fails the read, and costs no read."""
    proxy = own_server.proxy
    fees = "getRecentPrioritizationFees"
    proxy.faults.method_errors[fees] = -32005  # the node is behind
    async with own_server.channel() as channel:
        staking = staking_pb2_grpc.StakingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await staking.BuildStakeTransaction(
                staking_pb2.BuildStakeTransactionRequest(
                    wallet=str(Keypair().pubkey()), amount_lamports=2**64 - 1
                )
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "overflows a u64" in (refused.value.details() or "")
        info = rich_details(refused.value)["ErrorInfo"]
        assert (info.reason, info.metadata["field"]) == ("INVALID_AMOUNT", "amount_lamports")
        assert proxy.methods.get(fees, 0) == 0
        # The same build of a fine amount reads the fees, and fails with the read.
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await staking.BuildStakeTransaction(
                staking_pb2.BuildStakeTransactionRequest(
                    wallet=str(Keypair().pubkey()), amount_lamports=SOL
                )
            )
        assert failed.value.code() != grpc.StatusCode.INVALID_ARGUMENT
        assert proxy.methods[fees] >= 1


async def test_a_build_with_no_price_to_pay_is_checked_once(
    own_server: OwnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build priced by a level (the default) asks which accounts price it before it
    is built; where the cluster's recent fees give no price, the request checked for
    that question is the one built."""
    checked = stake_checks(monkeypatch)
    async with own_server.channel() as channel:
        staking = staking_pb2_grpc.StakingServiceStub(channel)
        built = await staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(Keypair().pubkey()), amount_lamports=SOL
            )
        )
    assert built.transaction.compute_unit_price_micro_lamports == 0
    assert own_server.proxy.methods["getRecentPrioritizationFees"] == 1
    assert checked == [0]


async def test_sigterm_lets_the_call_in_flight_complete(
    localnet: LocalnetServer, tmp_path: Path
) -> None:
    """The real CLI process: SIGTERM while a call is in flight; it completes, exit 0."""
    proxy = RpcProxy(localnet.url)
    await proxy.start()
    env = {
        **os.environ,
        "AGENT_STAKING_SERVICE_FEE_BPS": "0",
        "AGENT_STAKING_DATA_DIR": str(tmp_path),
        "AGENT_STAKING_DATABASE_URL": f"sqlite:///{tmp_path / 'keys.db'}",
        "AGENT_STAKING_BOOTSTRAP_KEYS": "true",
        "AGENT_STAKING_DEFAULT_VOTE_ACCOUNT": str(localnet.chain.validators[0].vote_account),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--rpc-url",
        proxy.url,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        address = json.loads(line)["listening"]
        # A first start on an empty store prints its bootstrap keys once.
        bootstrap = json.loads(await process.stdout.readline())["bootstrap_api_key"]
        proxy.faults.delay_methods["simulateTransaction"] = 1.0
        async with keyed_channel(address, bootstrap["secret"]) as channel:
            staking = staking_pb2_grpc.StakingServiceStub(channel)
            in_flight = asyncio.ensure_future(
                staking.BuildStakeTransaction(
                    staking_pb2.BuildStakeTransactionRequest(
                        wallet=str(Keypair().pubkey()),
                        amount_lamports=SOL,
                        options=types_pb2.TransactionOptions(simulate=True),
                    )
                )
            )
            await asyncio.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await in_flight
            # Answered by the servicer (empty wallet), not cut off by the shutdown.
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await proxy.stop()


async def test_every_method_is_served_by_the_generic_handlers(
    localnet: LocalnetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No registered methods (grpc.aio would wait on a pending request for each of them
    on every call), and every method of every service still answers: unauthenticated
    without a key, never UNIMPLEMENTED; the health port's server the same."""
    registered: list[str] = []
    monkeypatch.setattr(
        grpc.aio._server.Server,  # type: ignore[attr-defined]
        "add_registered_method_handlers",
        lambda self, service, handlers: registered.append(service),
    )
    server = AgentStakingServer(
        Settings(
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path / 'keys.db'}",
            listen="127.0.0.1:0",
            health_listen="127.0.0.1:0",
            rpc_urls=[localnet.url],
            service_fee_bps=0,
            default_vote_account=str(localnet.chain.validators[0].vote_account),
        )
    )
    await server.start()
    try:
        assert registered == []
        pool = descriptor_pool.Default()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            for name in (
                "agentstaking.v1.StakingService",
                "agentstaking.v1.KeyService",
                "agentstaking.v1.EventService",
            ):
                for method in pool.FindServiceByName(name).methods:
                    path = f"/{name}/{method.name}"
                    if method.server_streaming:
                        stream: Any = channel.unary_stream(path)
                        with pytest.raises(grpc.aio.AioRpcError) as caught:
                            await stream(b"").read()
                    else:
                        unary: Any = channel.unary_unary(path)
                        with pytest.raises(grpc.aio.AioRpcError) as caught:
                            await unary(b"")
                    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, path
            health = health_pb2_grpc.HealthStub(channel)
            assert (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING
            unknown: Any = channel.unary_unary("/agentstaking.v1.StakingService/Nope")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await unknown(b"")
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert server.health_endpoint is not None
        health_address = f"127.0.0.1:{server.health_endpoint.port}"
        async with grpc.aio.insecure_channel(health_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING
            # grpcurl finds the health service through reflection, as on the gRPC port.
            for v1 in (True, False):
                found = await _reflect(
                    channel,
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="grpc.health.v1.Health"
                    ),
                    v1=v1,
                )
                assert found.HasField("file_descriptor_response"), found.error_response
    finally:
        await server.stop(0)
