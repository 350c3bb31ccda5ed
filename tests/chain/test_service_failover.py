"""Failover as an agent sees it: a real server, real stubs, two endpoints of one localnet."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentstaking.v1 import staking_pb2, staking_pb2_grpc, types_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Processed
from solders.keypair import Keypair

from service.chain import FailoverRpc
from service.config import Settings
from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._proxy import RpcProxy
from tests.api._helpers import rich_details, sign
from tests.relay._helpers import transfer

from .conftest import MakeProxies, eventually, named

SOL = 1_000_000_000
# What unstake and withdraw builds, ListStakeAccounts and SubmitTransaction ask a node.
PER_REQUEST_METHODS = (
    "getMultipleAccounts",
    "getProgramAccounts",
    "isBlockhashValid",
    "sendTransaction",
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Service:
    server: AgentStakingServer
    staking: staking_pb2_grpc.StakingServiceAsyncStub
    health: health_pb2_grpc.HealthAsyncStub
    primary: RpcProxy
    backup: RpcProxy

    @property
    def rpc(self) -> FailoverRpc:
        rpc = self.server._rpc
        assert rpc is not None
        return rpc

    async def build(
        self, *, wallet: Keypair | None = None, **options: Any
    ) -> staking_pb2.BuildStakeTransactionResponse:
        request = staking_pb2.BuildStakeTransactionRequest(
            wallet=str((wallet or Keypair()).pubkey()),
            amount_lamports=SOL,
            options=types_pb2.TransactionOptions(**options),
        )
        return await self.staking.BuildStakeTransaction(request, timeout=10)

    async def wait_health(self, status: int, *, timeout: float = 10.0) -> float:
        started = time.monotonic()
        while True:
            answer = await self.health.Check(health_pb2.HealthCheckRequest(service=""))
            if answer.status == status:
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, f"health not {status} in {timeout} s"
            await asyncio.sleep(0.05)


StartService = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_service(
    localnet: LocalnetServer, make_proxies: MakeProxies, tmp_path: Path
) -> AsyncIterator[StartService]:
    """`await start_service(**settings)`: a server on endpoints `primary` and `backup`."""
    servers: list[AgentStakingServer] = []
    channels: list[grpc.aio.Channel] = []

    async def start(**overrides: Any) -> Service:
        primary, backup = await make_proxies(2)
        settings: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "rpc_urls": named([primary, backup], "primary", "backup"),
            "service_fee_bps": 0,
            "default_vote_account": str(localnet.chain.validators[0].vote_account),
            "database_url": f"sqlite:///{tmp_path / 'keys.db'}",
            "blockhash_refresh_seconds": 0.1,
            # The default RPC timeout: a killed endpoint fails at once (refused, reset),
            # so failing over never waits for it, while a busy machine's slow answers
            # are not taken for a dead backup.
            "rpc_probe_interval_seconds": 0.05,
            "rpc_max_slot_lag": 20,
            "rpc_breaker_cooldown_seconds": 0.3,
            "rpc_failback_seconds": 0.8,
            "shutdown_grace_seconds": 1,
        }
        server = AgentStakingServer(Settings(**(settings | overrides)))
        servers.append(server)
        await server.start()
        assert server.keys is not None
        _, secret = await server.keys.create(display_name="agent", scopes=["staking"])
        channel = keyed_channel(f"127.0.0.1:{server.port}", secret)
        channels.append(channel)
        return Service(
            server=server,
            staking=staking_pb2_grpc.StakingServiceStub(channel),
            health=health_pb2_grpc.HealthStub(channel),
            primary=primary,
            backup=backup,
        )

    yield start
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(0)


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
        f" max {ordered[-1] * 1000:.1f} ms"
    )


async def test_hundreds_of_builds_while_the_primary_dies(start_service: StartService) -> None:
    """Zero failed builds; run with -s to see the measured failover latency."""
    service = await start_service()
    total, kill_after, workers = 400, 100, 8
    jobs = iter(range(total))
    durations: list[tuple[float, float]] = []  # (start, seconds)
    failures: list[str] = []
    reached = asyncio.Event()

    async def agent() -> None:
        for _ in jobs:  # one shared queue of builds
            started = time.monotonic()
            try:
                await service.build()
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")
            durations.append((started, time.monotonic() - started))
            if len(durations) == kill_after:
                reached.set()

    agents = [asyncio.create_task(agent()) for _ in range(workers)]
    await reached.wait()
    killed_at = time.monotonic()
    await service.primary.kill()
    moved = await eventually(lambda: service.rpc.stats().preferred == "backup", what="failover")
    # The chain context keeps refreshing, now from the backup.
    chain = service.server.chain
    assert chain is not None
    await eventually(lambda: chain.snapshot().fetched_at > killed_at + moved, what="refresh")
    await asyncio.gather(*agents)

    assert failures == []
    assert len(durations) == total
    stats = service.rpc.stats()
    assert not stats.endpoint("primary").healthy
    assert stats.endpoint("backup").healthy and stats.preferred == "backup"
    assert await service.wait_health(SERVING) < 1
    penalties = [e.penalty_seconds for e in stats.recent_failovers if e.answered_by == "backup"]
    before = [d for s, d in durations if s < killed_at]
    after = [d for s, d in durations if s >= killed_at]
    assert after, "the kill came after every build"
    print(
        f"\n{total} builds, primary killed after {len(before)}: 0 failed."
        f"\n  traffic on the backup {moved * 1000:.0f} ms after the kill"
        f" (breaker open, chain context refreshing from the backup);"
        f"\n  worst extra latency of a failed-over RPC read:"
        f" {max(penalties, default=0.0) * 1000:.1f} ms ({len(penalties)} reads failed over);"
        f"\n  builds before the kill: {_ms(before)}; after: {_ms(after)}"
    )


async def _staked(service: Service, wallet: Keypair, *, deactivate: bool = False) -> str:
    """A stake account of `wallet`, built, signed and landed through the service (and
    deactivated in its activation epoch: then withdrawable at once)."""
    built = await service.build(wallet=wallet)
    await _land(service, built.transaction, wallet)
    if deactivate:
        unstake = await service.staking.BuildUnstakeTransaction(
            staking_pb2.BuildUnstakeTransactionRequest(
                wallet=str(wallet.pubkey()), stake_account=built.stake_account
            ),
            timeout=10,
        )
        await _land(service, unstake.transaction, wallet)
    return built.stake_account


async def _land(service: Service, prepared: types_pb2.PreparedTransaction, wallet: Keypair) -> None:
    await service.staking.SubmitTransaction(
        staking_pb2.SubmitTransactionRequest(
            transaction=bytes(sign(prepared, wallet)), commitment=types_pb2.COMMITMENT_CONFIRMED
        ),
        timeout=20,
    )


async def test_calls_that_read_the_chain_per_request_while_the_primary_dies(
    start_service: StartService, localnet: LocalnetServer
) -> None:
    """Unstake and withdraw builds, ListStakeAccounts and SubmitTransaction: each reads
    the chain (or sends to it) on every call. Zero failed calls; every submitted
    transaction lands."""
    # No cached stake-account lists: every ListStakeAccounts reads the chain. One wallet
    # makes hundreds of calls: no per-wallet limit.
    service = await start_service(stake_accounts_cache_seconds=0, ratelimit_wallet_per_minute=0)
    # A node's latency: calls of every kind are in flight on the primary when it dies.
    service.primary.faults.delay_methods.update(dict.fromkeys(PER_REQUEST_METHODS, 0.05))
    wallet, payer = Keypair(), Keypair()
    owner = str(wallet.pubkey())
    async with AsyncClient(localnet.url) as chain:  # the agent's own view of the chain
        for funded in (wallet, payer):
            await chain.request_airdrop(funded.pubkey(), 100 * SOL)
        active = await _staked(service, wallet)
        inactive = await _staked(service, wallet, deactivate=True)
        submitted: list[str] = []

        async def unstake() -> None:
            built = await service.staking.BuildUnstakeTransaction(
                staking_pb2.BuildUnstakeTransactionRequest(wallet=owner, stake_account=active),
                timeout=10,
            )
            assert built.deactivate_lamports == SOL

        async def withdraw() -> None:
            built = await service.staking.BuildWithdrawTransaction(
                staking_pb2.BuildWithdrawTransactionRequest(
                    wallet=owner, stake_account=inactive, withdraw_all=True
                ),
                timeout=10,
            )
            assert built.withdraw_lamports > SOL

        async def list_accounts() -> None:
            listed = await service.staking.ListStakeAccounts(
                staking_pb2.ListStakeAccountsRequest(wallet=owner), timeout=10
            )
            assert {a.address for a in listed.stake_accounts} == {active, inactive}

        async def submit() -> None:
            blockhash = (await chain.get_latest_blockhash(Processed)).value.blockhash
            tx = transfer(payer, blockhash, note=f"failover {len(submitted)}")
            submitted.append(str(tx.signatures[0]))
            await service.staking.SubmitTransaction(
                staking_pb2.SubmitTransactionRequest(transaction=bytes(tx)), timeout=10
            )

        calls = {"unstake": unstake, "withdraw": withdraw, "list": list_accounts, "submit": submit}
        kinds = list(calls)
        total, kill_after, workers = 400, 100, 8
        jobs = iter(range(total))
        done: list[tuple[str, bool]] = []  # (kind, started after the kill)
        failures: list[str] = []
        reached = asyncio.Event()
        killed = False

        async def agent() -> None:
            for job in jobs:  # one shared queue, the four kinds in turn
                kind = kinds[job % len(kinds)]
                late = killed
                try:
                    await calls[kind]()
                except grpc.aio.AioRpcError as exc:
                    failures.append(f"{kind}: {exc.code().name}: {exc.details()}")
                done.append((kind, late))
                if len(done) == kill_after:
                    reached.set()

        agents = [asyncio.create_task(agent()) for _ in range(workers)]
        await reached.wait()
        await service.primary.kill()
        killed = True
        await eventually(lambda: service.rpc.stats().preferred == "backup", what="failover")
        await asyncio.gather(*agents)

    assert failures == []
    assert len(done) == total
    after = Counter(kind for kind, late in done if late)
    assert all(after[kind] >= 25 for kind in kinds), after
    # What those calls read and sent went to the backup, those cut off by the kill too.
    for method in PER_REQUEST_METHODS:
        assert service.backup.methods.get(method, 0) > 0, method
    stats = service.rpc.stats()
    retried = {e.method for e in stats.recent_failovers if e.answered_by == "backup"}
    assert retried & set(PER_REQUEST_METHODS), retried
    # Every transaction submitted lands, those sent before the kill too.
    landed = await asyncio.gather(*(_confirmed(service, signature) for signature in submitted))
    assert set(landed) <= {
        types_pb2.TRANSACTION_STATE_CONFIRMED,
        types_pb2.TRANSACTION_STATE_FINALIZED,
    }
    print(f"\n{total} calls, primary killed after {kill_after}: 0 failed; after it {dict(after)}")


async def _confirmed(service: Service, signature: str) -> types_pb2.TransactionState.ValueType:
    """The state a watch with commitment CONFIRMED ends in."""
    call = service.staking.WatchTransaction(
        staking_pb2.WatchTransactionRequest(
            signature=signature, commitment=types_pb2.COMMITMENT_CONFIRMED
        ),
        timeout=30,
    )
    last = types_pb2.TRANSACTION_STATE_UNSPECIFIED
    async for message in call:
        last = message.status.state
    return last


async def test_all_endpoints_down_then_one_back(start_service: StartService) -> None:
    service = await start_service()
    await service.build()
    await service.primary.kill()
    await service.backup.kill()
    took = await service.wait_health(NOT_SERVING)
    keys = await service.health.Check(
        health_pb2.HealthCheckRequest(service="agentstaking.v1.KeyService")
    )
    assert keys.status == SERVING
    details = ""
    for _ in range(100):  # the reason names the endpoints' states once both breakers are open
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.build()
        assert time.monotonic() - started < 2  # fails fast: no waiting on a dead endpoint
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        details = caught.value.details() or ""
        if "all 2 Solana endpoints unhealthy" in details:
            break
        await asyncio.sleep(0.05)
    assert "primary (breaker open: " in details and ", backup (breaker open: " in details
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "SOLANA_UNAVAILABLE"

    await service.backup.revive()
    back = await service.wait_health(SERVING)
    response = await service.build()
    assert response.transaction.transaction
    assert service.rpc.stats().preferred == "backup"
    print(f"\nall down: NOT_SERVING after {took * 1000:.0f} ms; SERVING {back * 1000:.0f} ms after")


async def test_a_slow_read_fails_over_within_the_call_deadline(
    start_service: StartService,
) -> None:
    """The gRPC deadline caps each attempt, leaving time for the backup to answer."""
    service = await start_service(rpc_timeout_seconds=8.0)
    service.primary.faults.delay_methods["getMultipleAccounts"] = 6.0
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        # Without the deadline the first attempt alone could take 4 s (half of 8 s).
        await service.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(Keypair().pubkey()),
                amount_lamports=SOL,
                options=types_pb2.TransactionOptions(simulate=True),
            ),
            timeout=3.0,
        )
    # Answered (an empty wallet cannot pay), not cut off by the deadline.
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert time.monotonic() - started < 3.0
    assert service.backup.methods.get("getMultipleAccounts") == 1
    assert service.rpc.stats().endpoint("primary").healthy


async def test_a_node_that_refuses_to_simulate_is_a_failed_simulation(
    start_service: StartService,
) -> None:
    """An error object where a simulation result belongs (the node cannot even run the
    transaction) says so, with the node's code; it is not an internal error."""
    service = await start_service()
    for endpoint in (service.primary, service.backup):
        endpoint.faults.method_errors["simulateTransaction"] = -32602
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.build(simulate=True)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = rich_details(caught.value)["ErrorInfo"]
    assert info.reason == "SIMULATION_FAILED"
    assert info.metadata["rpc_error_code"] == "-32602"
    assert "refused to simulate" in (caught.value.details() or "")
