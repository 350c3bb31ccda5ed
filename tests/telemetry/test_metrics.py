"""/metrics after a mix of calls: exact counts by label, scraped over HTTP."""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import grpc
import pytest
from agentstaking.v1 import staking_pb2, types_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import Settings
from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from service.telemetry import Metrics, MetricsListener
from tests._grpc_auth import keyed_channel
from tests._wait import until
from tests.conftest import FakeClock

from .conftest import HEALTH, SOL, STAKING, Observed, parse_scrape, start_observed

UNARY = "unary"


@pytest.fixture
async def limited(localnet: LocalnetServer, tmp_path: Path) -> AsyncIterator[Observed]:
    """A fresh server allowing two builds per wallet."""
    async for item in start_observed(
        localnet, tmp_path, ratelimit_wallet_per_minute=2, ratelimit_wallet_burst=2
    ):
        yield item


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_counters_and_histograms_after_a_mix_of_calls(limited: Observed) -> None:
    service = limited
    wallet = await service.funded_wallet()
    info = staking_pb2.GetNetworkInfoRequest()
    assert await _code(service.staking.GetNetworkInfo(info)) == grpc.StatusCode.OK
    assert await _code(service.staking.GetNetworkInfo(info)) == grpc.StatusCode.OK
    async with grpc.aio.insecure_channel(service.address) as anonymous:
        stub = type(service.staking)(anonymous)
        assert await _code(stub.GetNetworkInfo(info)) == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(anonymous)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == 1
    async with keyed_channel(service.address, "not-a-key") as bad:
        stub = type(service.staking)(bad)
        assert await _code(stub.GetNetworkInfo(info)) == grpc.StatusCode.UNAUTHENTICATED

    def build(amount: int) -> object:
        return service.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(wallet.pubkey()), amount_lamports=amount
            )
        )

    built = await build(2 * SOL)  # type: ignore[misc]
    fee = built.transaction.fees.service_fee_lamports
    assert fee == 2 * SOL * 25 // 10_000
    assert await _code(build(1)) == grpc.StatusCode.INVALID_ARGUMENT  # below the minimum
    assert await _code(build(2 * SOL)) == grpc.StatusCode.RESOURCE_EXHAUSTED  # third per wallet

    scrape = await service.scrape()
    network = {"grpc_type": UNARY, "grpc_service": STAKING, "grpc_method": "GetNetworkInfo"}
    stake = {"grpc_type": UNARY, "grpc_service": STAKING, "grpc_method": "BuildStakeTransaction"}
    check = {"grpc_type": UNARY, "grpc_service": HEALTH, "grpc_method": "Check"}
    assert scrape.value("grpc_server_started_total", **network) == 4
    assert scrape.value("grpc_server_started_total", **stake) == 3
    assert scrape.value("grpc_server_started_total", **check) == 1
    assert scrape.matching("grpc_server_handled_total", **network) == {
        frozenset({**network, "grpc_code": "OK"}.items()): 2,
        frozenset({**network, "grpc_code": "Unauthenticated"}.items()): 2,
    }
    assert scrape.matching("grpc_server_handled_total", **stake) == {
        frozenset({**stake, "grpc_code": "OK"}.items()): 1,
        frozenset({**stake, "grpc_code": "InvalidArgument"}.items()): 1,
        frozenset({**stake, "grpc_code": "ResourceExhausted"}.items()): 1,
    }
    assert scrape.value("grpc_server_handled_total", **check, grpc_code="OK") == 1
    # Every request was received; only the answered ones sent a message back.
    assert scrape.value("grpc_server_msg_received_total", **network) == 4
    assert scrape.value("grpc_server_msg_sent_total", **network) == 2
    assert scrape.value("grpc_server_msg_received_total", **stake) == 3
    assert scrape.value("grpc_server_msg_sent_total", **stake) == 1
    assert scrape.value("grpc_server_handling_seconds_count", **network) == 4
    assert scrape.value("grpc_server_handling_seconds_count", **stake) == 3
    assert scrape.value("grpc_server_handling_seconds_bucket", **stake, le="+Inf") == 3
    # Methods never called exist at zero (as go-grpc-prometheus preregisters them).
    assert (
        scrape.value(
            "grpc_server_started_total",
            grpc_type="server_stream",
            grpc_service=STAKING,
            grpc_method="WatchTransaction",
        )
        == 0
    )

    # Domain: the refused build never reached the builder.
    built_total = scrape.matching("agent_staking_transactions_built_total")
    assert {labels: count for labels, count in built_total.items() if count} == {
        frozenset({"kind": "stake", "outcome": "ok"}.items()): 1,
        frozenset({"kind": "stake", "outcome": "BELOW_MINIMUM_DELEGATION"}.items()): 1,
    }
    # Every other Build*Transaction kind exists at zero.
    for kind in (
        *("unstake", "withdraw", "merge", "liquidstake", "liquidunstake"),
        *("split", "movestake", "authorize", "setlockup", "redelegate"),
    ):
        assert built_total[frozenset({"kind": kind, "outcome": "ok"}.items())] == 0
    assert scrape.value("agent_staking_build_duration_seconds_count", kind="stake") == 2
    assert scrape.value("agent_staking_service_fees_quoted_lamports_total", kind="stake") == fee
    assert scrape.value("agent_staking_service_fee_quotes_total", kind="stake") == 1
    assert scrape.matching("agent_staking_auth_failures_total") == {
        frozenset({"reason": "API_KEY_MISSING"}.items()): 1,
        frozenset({"reason": "API_KEY_MALFORMED"}.items()): 1,
    }
    assert scrape.matching("agent_staking_ratelimit_rejections_total") == {
        frozenset({"dimension": "wallet", "rpc_class": "builds"}.items()): 1
    }
    # Read from the components' stats() at scrape time.
    assert scrape.value("agent_staking_solana_endpoint_healthy", endpoint="rpc0") == 1
    assert scrape.matching("agent_staking_solana_endpoint_breaker_state", endpoint="rpc0") == {
        frozenset({"endpoint": "rpc0", "state": "closed"}.items()): 1,
        frozenset({"endpoint": "rpc0", "state": "open"}.items()): 0,
        frozenset({"endpoint": "rpc0", "state": "half_open"}.items()): 0,
    }
    assert scrape.value("agent_staking_solana_healthy_endpoints") == 1
    assert scrape.value("agent_staking_solana_failovers_total", endpoint="rpc0") == 0
    assert scrape.value("agent_staking_chain_healthy") == 1
    assert 0 <= scrape.value("agent_staking_blockhash_age_seconds") < 10
    assert scrape.value("agent_staking_relay_transactions_total", event="submitted") == 0
    assert scrape.value("agent_staking_relay_time_to_confirm_seconds_count") == 0
    assert scrape.value("agent_staking_ratelimit_backend_up", backend="memory") == 1
    # Allowed: 2 network infos, 2 builds, and the 2 failed authentications charged to
    # the peer's budget (still within it).
    assert scrape.value("agent_staking_ratelimit_allowed_total") == 6
    assert scrape.value("process_cpu_seconds_total") > 0
    assert list(scrape.matching("python_info").values()) == [1]


async def test_solana_requests_per_endpoint_and_method_match_the_manager(
    observed: Observed,
) -> None:
    wallet = await observed.funded_wallet()
    await observed.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            amount_lamports=2 * SOL,
            options=types_pb2.TransactionOptions(simulate=True),
        )
    )
    scrape = await observed.scrape()
    # One request per attempt, as many as the trace shows (the builder may simulate
    # more than once).
    simulations = [s for s in observed.finished_spans() if s.name == "simulateTransaction"]
    assert simulations
    labels = {"endpoint": "rpc0", "method": "simulateTransaction"}
    count = len(simulations)
    assert scrape.value("agent_staking_solana_rpc_requests_total", **labels) == count
    assert scrape.value("agent_staking_solana_rpc_duration_seconds_count", **labels) == count
    assert scrape.matching("agent_staking_solana_rpc_errors_total", **labels) == {}
    # Per-method counts add up to the manager's own per-endpoint count (read together,
    # with no await in between, so the background refresher cannot slip in). The manager
    # counts an attempt when it is sent, the metric once it has ended: a refresh still
    # on its way is in the one and not yet in the other.
    rpc = observed.server._rpc
    assert rpc is not None
    # One such request for certain, read while it waits for its answer.
    waiting = asyncio.ensure_future(rpc.call("getSlot", []))
    await until(
        lambda: waiting.done() or rpc.stats().endpoint("rpc0").in_flight > 0,
        every=0,  # on the next turn of the loop, before the answer is read
        what="the request is sent",
    )
    body, _ = observed.metrics.exposition()
    local = parse_scrape(body.decode())
    endpoint = rpc.stats().endpoint("rpc0")
    assert endpoint.in_flight > 0
    ended = endpoint.requests - endpoint.in_flight
    assert sum(local.matching("agent_staking_solana_rpc_requests_total").values()) == ended
    await waiting


async def test_key_gauges_count_by_state_and_overdue(
    localnet: LocalnetServer, tmp_path: Path
) -> None:
    clock = FakeClock()
    server = AgentStakingServer(
        Settings(
            listen="127.0.0.1:0",
            metrics_listen="off",
            rpc_urls=[localnet.url],
            service_fee_bps=0,
            default_vote_account=str(localnet.chain.validators[0].vote_account),
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path / 'keys.db'}",
        ),
        clock=clock,
    )
    await server.start()
    try:
        keys = server.keys
        assert keys is not None and server.metrics_listener is None
        first, _ = await keys.create(display_name="a", scopes=["staking"])
        await keys.create(display_name="b", scopes=["staking"])
        third, _ = await keys.create(display_name="c", scopes=["admin"])
        await keys.revoke(third.key_id)
        clock.advance(timedelta(days=31))  # rotation is due after 30 days
        await keys.rotate(first.key_id)
        await keys.scan_overdue()
        body, _ = server.telemetry.metrics.exposition()
        scrape = parse_scrape(body.decode())
        assert scrape.matching("agent_staking_api_keys") == {
            frozenset({"state": "active"}.items()): 2,
            frozenset({"state": "expired"}.items()): 0,
            frozenset({"state": "revoked"}.items()): 1,
        }
        assert scrape.value("agent_staking_api_keys_overdue_rotation") == 1
    finally:
        await server.stop(0)


async def test_scrapes_share_renderings_off_the_serving_loop(observed: Observed) -> None:
    """Eight scrapers in a loop cost the serving loop one rendering a second: the HTTP
    side runs on a thread of its own and shares the last body between scrapes."""
    listener = observed.server.metrics_listener
    assert listener is not None
    assert any(t.name == "metrics-http" and t.is_alive() for t in threading.enumerate())
    before = listener.renders
    started = time.monotonic()
    scrapes = 0

    async def scraper() -> None:
        nonlocal scrapes
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < 2.0:
                async with session.get(f"http://127.0.0.1:{listener.port}/metrics") as response:
                    assert response.status == 200
                    await response.read()
                scrapes += 1

    await asyncio.gather(*(scraper() for _ in range(8)))
    elapsed = time.monotonic() - started
    renders = listener.renders - before
    assert scrapes > renders
    assert renders <= elapsed / 1.0 + 2, (renders, scrapes, elapsed)
    # Calls are served meanwhile and after.
    info = await observed.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    assert info.minimum_delegation_lamports > 0


async def test_admission_refusals_exist_at_zero_before_the_first(observed: Observed) -> None:
    """rate() sees the first refusal of each reason only if its series exists before."""
    from service.telemetry._metrics import REFUSAL_REASONS

    scrape = await observed.scrape()
    for reason in REFUSAL_REASONS:
        key = ("agent_staking_calls_refused_total", frozenset({("reason", reason)}))
        assert scrape.samples[key] == 0, reason


async def test_a_tls_listener_stops_its_certificate_watch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The listener over TLS re-reads its certificate every second; stopping it ends
    that watch with the rest, not as a task its closed loop drops, still pending."""
    reads = threading.Event()

    def context() -> ssl.SSLContext:
        reads.set()
        return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    listener = MetricsListener(Metrics(), tls=context)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        await listener.start("127.0.0.1", 0)
        assert reads.is_set()
        await listener.stop()
        gc.collect()
    assert not [r.getMessage() for r in caplog.records if r.name == "asyncio"]
