"""The fault proxy itself: each fault looks to a client like the failure it emulates."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.chain import EndpointFailure, HttpSolanaRpc, RpcError
from tests._proxy import RpcProxy


@pytest.fixture
async def client(proxy: RpcProxy) -> AsyncIterator[HttpSolanaRpc]:
    rpc = HttpSolanaRpc(proxy.url, pool_size=2, timeout=2.0)
    yield rpc
    await rpc.close()


@pytest.mark.parametrize(
    ("fault", "value", "failure", "sent"),
    [
        ("refuse", True, "HTTP 503", True),
        ("status", 502, "HTTP 502", True),
        ("drop", True, "disconnected", True),
        ("delay", 1.0, "timeout", True),
    ],
)
async def test_faults_become_endpoint_failures(
    proxy: RpcProxy, client: HttpSolanaRpc, fault: str, value: object, failure: str, sent: bool
) -> None:
    assert isinstance(await client.call("getSlot", []), int)
    setattr(proxy.faults, fault, value)
    with pytest.raises(EndpointFailure) as caught:
        await client.call("getSlot", [], timeout=0.3)
    assert (caught.value.failure, caught.value.request_sent) == (failure, sent)
    assert proxy.url not in str(caught.value)


async def test_rpc_error_and_stale_slot(proxy: RpcProxy, client: HttpSolanaRpc) -> None:
    proxy.faults.rpc_error = -32005
    with pytest.raises(RpcError) as caught:
        await client.call("getSlot", [])
    assert caught.value.code == -32005
    proxy.faults.rpc_error = None
    slot = await client.call("getSlot", [])
    proxy.faults.slot_lag = 1_000
    lagged = await client.call("getSlot", [])
    info = await client.call("getEpochInfo", [])
    blockhash = await client.call("getLatestBlockhash", [])
    # 100 ms slots: a few slots pass between the calls, never a thousand.
    assert lagged <= max(0, slot - 1_000 + 50)
    assert info["absoluteSlot"] <= lagged + 50
    assert blockhash["context"]["slot"] <= lagged + 50


async def test_kill_refuses_connections_and_revive_listens_on_the_same_port(
    proxy: RpcProxy, client: HttpSolanaRpc
) -> None:
    url = proxy.url
    await client.call("getSlot", [])
    await proxy.kill()
    assert proxy.killed
    failures = set()
    for _ in range(3):  # a pooled connection may first report the cut, then refusals
        with pytest.raises(EndpointFailure) as caught:
            await client.call("getSlot", [])
        failures.add((caught.value.failure, caught.value.request_sent))
    assert ("connection refused", False) in failures
    await proxy.revive()
    assert proxy.url == url and not proxy.killed
    assert isinstance(await client.call("getSlot", []), int)
