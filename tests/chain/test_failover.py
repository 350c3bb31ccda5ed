"""The failover manager against real endpoints: proxies in front of the localnet."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import pytest
from solders.keypair import Keypair

from service.chain import (
    BreakerState,
    CallDeadlineExceeded,
    ChainUnavailable,
    Routing,
    RpcError,
    call_deadline,
    rpc_deadline,
)
from service.core.errors import ErrorKind
from tests._proxy import RpcProxy

from .conftest import FAST, MakeProxies, MakeRpc, Traffic, eventually, named

ADDRESS = str(Keypair().pubkey())
# Not a transaction: any node answers it with an error, which is an answer.
GARBAGE_TX = ["AAAA", {"encoding": "base64"}]


async def test_reads_fail_over_when_the_primary_dies(
    make_proxies: MakeProxies, make_rpc: MakeRpc
) -> None:
    primary, backup = await make_proxies(2)
    rpc = await make_rpc(named([primary, backup], "primary", "backup"))
    async with Traffic(rpc) as traffic:
        await eventually(lambda: traffic.calls >= 40, what="warm-up traffic")
        assert rpc.stats().preferred == "primary"
        before = traffic.calls
        await primary.kill()
        moved = await eventually(lambda: rpc.stats().preferred == "backup", what="failover")
        await eventually(lambda: traffic.calls >= before + 100, what="traffic after the kill")
    assert traffic.failures == []
    stats = rpc.stats()
    dead = stats.endpoint("primary")
    assert dead.breaker is BreakerState.OPEN and not dead.healthy
    assert dead.failovers >= 1 and dead.errors >= 1
    assert stats.endpoint("backup").requests >= 100
    penalties = [e.penalty_seconds for e in stats.recent_failovers if e.answered_by == "backup"]
    assert penalties
    print(
        f"\nprimary killed: traffic on the backup after {moved * 1000:.0f} ms;"
        f" worst extra latency of a failed-over read {max(penalties) * 1000:.1f} ms"
    )


async def _fault(primary: RpcProxy, fault: str) -> None:
    if fault == "drop":
        primary.faults.drop = True
    elif fault == "http500":
        primary.faults.status = 500
    elif fault == "killed":
        await primary.kill()
        await asyncio.sleep(0.1)  # let the client see its pooled connection close
    else:
        primary.faults.rpc_error = {
            "node-unhealthy": -32005,
            "min-context-slot": -32016,
            "invalid-params": -32602,
        }[fault]


@pytest.mark.parametrize(
    ("method", "params", "fault", "retried"),
    [
        pytest.param("getBalance", [ADDRESS], "drop", True, id="read-dropped"),
        pytest.param("getBalance", [ADDRESS], "http500", True, id="read-5xx"),
        pytest.param("getBalance", [ADDRESS], "node-unhealthy", True, id="read-node-unhealthy"),
        pytest.param("getBalance", [ADDRESS], "min-context-slot", True, id="read-min-context"),
        pytest.param("getBalance", [ADDRESS], "invalid-params", False, id="read-rpc-error"),
        pytest.param("sendTransaction", GARBAGE_TX, "drop", True, id="send-dropped"),
        pytest.param("sendTransaction", GARBAGE_TX, "http500", True, id="send-5xx"),
        pytest.param("simulateTransaction", GARBAGE_TX, "drop", False, id="simulate-dropped"),
        pytest.param("simulateTransaction", GARBAGE_TX, "http500", False, id="simulate-5xx"),
        pytest.param("requestAirdrop", [ADDRESS, 1], "http500", False, id="airdrop-5xx"),
        pytest.param("simulateTransaction", GARBAGE_TX, "killed", True, id="simulate-unsent"),
        pytest.param("requestAirdrop", [ADDRESS, 1], "killed", True, id="airdrop-unsent"),
    ],
)
async def test_retry_policy(
    make_proxies: MakeProxies,
    make_rpc: MakeRpc,
    method: str,
    params: list[object],
    fault: str,
    retried: bool,
) -> None:
    """Reads and sendTransaction move on; anything else only when it never left."""
    primary, backup = await make_proxies(2)
    # No background probes, no breaker: only the call itself decides.
    policy = replace(FAST, probe_interval=60, breaker_failures=100)
    rpc = await make_rpc(named([primary, backup], "primary", "backup"), policy=policy)
    await _fault(primary, fault)
    try:
        await rpc.call(method, params)
    except RpcError:
        outcome = "answer"  # an error object from a node that processed the request
    except ChainUnavailable as exc:
        outcome = str(exc)
    else:
        outcome = "answer"
    stats = rpc.stats()
    if retried:
        assert outcome == "answer"
        assert backup.methods.get(method) == 1
        assert stats.endpoint("primary").failovers == 1
        assert stats.recent_failovers[-1].answered_by == "backup"
    else:
        assert backup.methods.get(method, 0) == 0
        assert stats.endpoint("primary").failovers == 0
        if fault == "invalid-params":
            assert outcome == "answer"
            assert stats.endpoint("primary").errors == 0  # an answer is not a failure
        else:
            assert f"{method}: no Solana endpoint answered: primary (" in outcome
            assert f"backup (not tried: {method} is not retried once sent)" in outcome


async def test_breaker_opens_half_opens_and_closes(
    make_proxies: MakeProxies, make_rpc: MakeRpc
) -> None:
    (proxy,) = await make_proxies(1)
    rpc = await make_rpc(named([proxy], "only"), policy=replace(FAST, breaker_cooldown=0.5))
    proxy.faults.status = 500
    await eventually(lambda: rpc.stats().endpoint("only").breaker is BreakerState.OPEN)
    assert not rpc.healthy
    # Open: calls fail at once without reaching the endpoint.
    sent = rpc.stats().endpoint("only").requests
    with pytest.raises(ChainUnavailable) as caught:
        await rpc.call("getSlot", [])
    assert str(caught.value) == (
        "Solana RPC unavailable: the only Solana endpoint is unhealthy:"
        " only (breaker open: HTTP 500)"
    )
    assert rpc.stats().endpoint("only").requests == sent
    # While the fault lasts, one trial probe per cooldown (not one per probe interval).
    probes = rpc.stats().endpoint("only").probes
    await asyncio.sleep(1.2)
    trials = rpc.stats().endpoint("only").probes - probes
    assert 1 <= trials <= 4
    assert rpc.stats().endpoint("only").breaker is not BreakerState.CLOSED
    proxy.faults.status = None
    await eventually(lambda: rpc.stats().endpoint("only").breaker is BreakerState.CLOSED)
    assert rpc.healthy and isinstance(await rpc.call("getSlot", []), int)


@pytest.mark.parametrize("routing", [Routing.PRIMARY, Routing.STICKY], ids=lambda r: r.value)
async def test_slow_primary_loses_traffic_and_recovery_follows_the_policy(
    make_proxies: MakeProxies, make_rpc: MakeRpc, routing: Routing
) -> None:
    primary, backup = await make_proxies(2)
    policy = replace(FAST, routing=routing)
    rpc = await make_rpc(named([primary, backup], "primary", "backup"), policy=policy, timeout=1.0)
    async with Traffic(rpc) as traffic:
        await eventually(lambda: traffic.calls >= 20, what="warm-up traffic")
        primary.faults.delay = 3.0  # beyond the whole 1 s budget of a call
        moved = await eventually(lambda: rpc.stats().preferred == "backup", what="failover")
        # Out of rotation: no call is sent to it any more.
        sent = rpc.stats().endpoint("primary").requests
        calls = traffic.calls
        await eventually(lambda: traffic.calls >= calls + 40, what="traffic on the backup")
        assert rpc.stats().endpoint("primary").requests == sent
        primary.faults.delay = 0
        recovered = time.monotonic()
        await eventually(lambda: rpc.stats().endpoint("primary").healthy, what="recovery")
        back = None
        if routing is Routing.PRIMARY:
            back = await eventually(lambda: rpc.stats().preferred == "primary", what="failback")
            # Traffic waits until the endpoint has stayed healthy for the failback delay.
            assert time.monotonic() - recovered >= policy.failback_after
        # Settle: whatever happens now would be flapping.
        await asyncio.sleep(policy.failback_after + 0.5)
    stats = rpc.stats()
    assert traffic.failures == []
    assert stats.endpoint("primary").healthy
    if routing is Routing.PRIMARY:
        assert (stats.preferred, stats.switches) == ("primary", 2)
    else:
        assert (stats.preferred, stats.switches) == ("backup", 1)
    print(
        f"\nslow primary ({routing.value}): traffic moved after {moved * 1000:.0f} ms"
        + (f", back after {back * 1000:.0f} ms" if back is not None else ", stayed on backup")
    )


async def test_lagging_endpoint_is_taken_out_of_rotation(
    make_proxies: MakeProxies, make_rpc: MakeRpc
) -> None:
    primary, backup = await make_proxies(2)
    rpc = await make_rpc(named([primary, backup], "primary", "backup"))
    primary.faults.slot_lag = 300  # 30 s behind on 100 ms slots; the limit is 20 slots
    await eventually(lambda: not rpc.stats().endpoint("primary").healthy, what="lag seen")
    lagging = rpc.stats().endpoint("primary")
    assert lagging.breaker is BreakerState.CLOSED  # it answers: only its view is stale
    assert lagging.state.startswith("lagging ") and lagging.slot_lag >= 250
    assert rpc.stats().preferred == "backup"
    sent = lagging.requests
    for _ in range(20):
        await rpc.call("getLatestBlockhash", [])
    assert rpc.stats().endpoint("primary").requests == sent
    primary.faults.slot_lag = 0
    await eventually(lambda: rpc.stats().preferred == "primary", what="back in rotation")


async def test_all_down_fails_fast_then_one_back_recovers(
    make_proxies: MakeProxies, make_rpc: MakeRpc
) -> None:
    primary, backup = await make_proxies(2)
    rpc = await make_rpc(named([primary, backup], "primary", "backup"))
    await primary.kill()
    await backup.kill()
    await eventually(lambda: not rpc.healthy, what="all endpoints unhealthy")
    sent = [e.requests for e in rpc.stats().endpoints]
    with pytest.raises(ChainUnavailable) as caught:
        await rpc.call("getLatestBlockhash", [])
    message = str(caught.value)
    assert message.startswith(
        "Solana RPC unavailable: all 2 Solana endpoints unhealthy: primary (breaker open: "
    )
    assert ", backup (breaker open: " in message
    assert caught.value.reason == "SOLANA_UNAVAILABLE"
    assert [e.requests for e in rpc.stats().endpoints] == sent  # failed fast: no attempt
    await backup.revive()
    await eventually(lambda: rpc.healthy, what="recovery")
    assert isinstance(await rpc.call("getSlot", []), int)
    assert rpc.stats().preferred == "backup"


async def test_latency_routing_prefers_the_faster_endpoint(
    make_proxies: MakeProxies, make_rpc: MakeRpc
) -> None:
    a, b = await make_proxies(2)
    rpc = await make_rpc(named([a, b], "a", "b"), policy=replace(FAST, routing=Routing.LATENCY))
    a.faults.delay = 0.15  # slow, yet well within the timeout: healthy
    await eventually(lambda: rpc.stats().preferred == "b", what="b preferred")
    a.faults.delay = 0
    b.faults.delay = 0.15
    await eventually(lambda: rpc.stats().preferred == "a", what="a preferred")
    assert all(e.healthy for e in rpc.stats().endpoints)
    assert isinstance(await rpc.call("getSlot", []), int)


async def test_every_attempt_fits_the_call_deadline(
    make_proxies: MakeProxies, make_rpc: MakeRpc
) -> None:
    primary, backup = await make_proxies(2)
    rpc = await make_rpc(named([primary, backup], "primary", "backup"), timeout=10.0)
    primary.faults.delay_methods["getBalance"] = 5.0
    started = time.monotonic()
    with rpc_deadline(1.0):
        assert call_deadline.get() is not None
        await rpc.call("getBalance", [ADDRESS])  # primary cut off at ~0.5 s, then backup
    assert time.monotonic() - started < 3.0  # not the 5 s the primary takes
    assert call_deadline.get() is None
    primary_stats = rpc.stats().endpoint("primary")
    # A timeout forced by the caller's short deadline does not count against the endpoint.
    assert primary_stats.errors == 1 and primary_stats.consecutive_failures == 0
    backup.faults.delay_methods["getBalance"] = 5.0
    started = time.monotonic()
    with rpc_deadline(0.5), pytest.raises(ChainUnavailable) as caught:
        await rpc.call("getBalance", [ADDRESS])
    assert time.monotonic() - started < 3.0
    assert "getBalance: no Solana endpoint answered: primary (timeout), backup (timeout)" in str(
        caught.value
    )
    # The caller's time ran out, not the endpoints' health: DEADLINE_EXCEEDED.
    assert isinstance(caught.value, CallDeadlineExceeded)
    assert caught.value.kind is ErrorKind.DEADLINE_EXCEEDED
    # When the manager's own timeout is the shorter, the endpoints did not answer.
    with rpc_deadline(5.0), pytest.raises(ChainUnavailable) as own:
        await rpc.call("getBalance", [ADDRESS], timeout=0.5)
    assert own.value.kind is ErrorKind.UNAVAILABLE


async def test_connections_are_reused_and_bounded(
    make_proxies: MakeProxies, make_rpc: MakeRpc
) -> None:
    (proxy,) = await make_proxies(1)
    rpc = await make_rpc(named([proxy], "only"), pool_size=3, timeout=20.0)
    slots = await asyncio.gather(*(rpc.call("getSlot", []) for _ in range(300)))
    assert all(isinstance(slot, int) for slot in slots)
    assert 1 <= proxy.connections_opened <= 3  # 300 concurrent calls, probes included
    opened = proxy.connections_opened
    for _ in range(50):
        await rpc.call("getSlot", [])
    assert proxy.connections_opened == opened  # kept alive and reused
    assert proxy.requests >= 350
    print(f"\npool of 3: {proxy.requests} requests over {opened} connections")


async def test_urls_with_credentials_never_show(
    make_proxies: MakeProxies, make_rpc: MakeRpc, caplog: pytest.LogCaptureFixture
) -> None:
    (proxy,) = await make_proxies(1)
    url = proxy.url.replace("http://", "http://agent:hunter2@")
    caplog.set_level(logging.DEBUG, logger="service.chain")
    # The proxy serves only "/": every request fails (HTTP 404), which logs plenty.
    rpc = await make_rpc([f"{url}/SECRETKEY?api-key=TOKEN#name=paid"])
    with pytest.raises(ChainUnavailable) as caught:
        await rpc.call("getSlot", [])
    await eventually(lambda: not rpc.healthy, what="breaker open")
    shown = [caplog.text, str(caught.value), repr(rpc.stats()), rpc.describe()]
    for secret in ("hunter2", "SECRETKEY", "TOKEN"):
        assert not any(secret in text for text in shown), secret
    assert "paid (breaker open: HTTP 404)" in repr(rpc.stats()) or "HTTP 404" in caplog.text
    assert "paid=http://127.0.0.1:" in rpc.describe()
