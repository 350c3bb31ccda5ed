"""Concurrent reads of the batched methods go out as one JSON-RPC batch: each caller
gets its own answer, error or timeout; a failed batch fails each of its callers; an
endpoint that refuses batches is asked one call at a time. Through a counting proxy
in front of the session's localnet."""

from __future__ import annotations

import asyncio
import time

import pytest
from solders.keypair import Keypair

from service.chain import EndpointFailure, HttpSolanaRpc, RpcError
from service.chain._rpc import MAX_BATCH
from service.localnet import LocalnetServer
from tests._proxy import RpcProxy
from tests._wait import until

from .conftest import MakeProxies, MakeRpc

FEES = "getRecentPrioritizationFees"


def _fees_params() -> list[object]:
    return [[str(Keypair().pubkey()), str(Keypair().pubkey())]]


async def _fees(rpc: HttpSolanaRpc, count: int, *, timeout: float | None = None) -> list[object]:
    calls = (rpc.call(FEES, _fees_params(), timeout=timeout) for _ in range(count))
    answers: list[object] = await asyncio.gather(*calls, return_exceptions=True)
    return answers


async def test_each_caller_of_a_batch_gets_its_own_answer(
    proxy: RpcProxy, localnet: LocalnetServer
) -> None:
    # getBalance batched here so that every answer differs.
    client = HttpSolanaRpc(proxy.url, batched_methods=frozenset({"getBalance"}))
    try:
        wallets = [Keypair().pubkey() for _ in range(10)]
        for i, wallet in enumerate(wallets):
            localnet.chain.airdrop(wallet, 1_000_000 + i)
        answers = await asyncio.gather(
            *(client.call("getBalance", [str(w), {"commitment": "processed"}]) for w in wallets)
        )
    finally:
        await client.close()
    assert [answer["value"] for answer in answers] == [1_000_000 + i for i in range(10)]
    assert proxy.batch_sizes == [10]
    assert proxy.requests == 1


async def test_only_the_batched_methods_are_batched_and_a_lone_call_goes_alone(
    proxy: RpcProxy, rpc: HttpSolanaRpc
) -> None:
    answers = await asyncio.gather(
        *(rpc.call(FEES, _fees_params()) for _ in range(5)),
        *(rpc.call("getSlot", []) for _ in range(3)),
    )
    assert all(isinstance(answer, list) for answer in answers[:5])
    assert all(isinstance(answer, int) for answer in answers[5:])
    assert proxy.batch_sizes == [5]
    assert proxy.requests == 4  # one batch, three single getSlot requests
    assert isinstance(await rpc.call(FEES, _fees_params()), list)
    assert proxy.batch_sizes == [5] and proxy.requests == 5


async def test_batches_hold_at_most_max_batch_calls(proxy: RpcProxy, rpc: HttpSolanaRpc) -> None:
    answers = await _fees(rpc, 2 * MAX_BATCH + 6)
    assert all(isinstance(answer, list) for answer in answers)
    assert sorted(proxy.batch_sizes) == [6, MAX_BATCH, MAX_BATCH]


async def test_an_error_in_a_batch_is_its_callers_alone(
    proxy: RpcProxy, rpc: HttpSolanaRpc
) -> None:
    answers = await asyncio.gather(
        rpc.call(FEES, _fees_params()),
        rpc.call(FEES, [["not an address"]]),
        rpc.call(FEES, _fees_params()),
        return_exceptions=True,
    )
    assert proxy.batch_sizes == [3]
    assert isinstance(answers[0], list) and isinstance(answers[2], list)
    assert isinstance(answers[1], RpcError) and answers[1].code == -32602


@pytest.mark.parametrize(
    ("fault", "failure"), [("status", "HTTP 502"), ("drop", None), ("method_errors", None)]
)
async def test_a_failed_batch_fails_each_of_its_callers(
    proxy: RpcProxy, rpc: HttpSolanaRpc, fault: str, failure: str | None
) -> None:
    if fault == "status":
        proxy.faults.status = 502
    elif fault == "drop":
        proxy.faults.drop = True
    else:
        proxy.faults.method_errors[FEES] = -32005
    answers = await _fees(rpc, 4, timeout=5.0)
    assert proxy.batch_sizes == [4]
    if fault == "method_errors":  # the node answered each item with an error
        assert all(isinstance(a, RpcError) and a.code == -32005 for a in answers)
        return
    assert all(isinstance(answer, EndpointFailure) for answer in answers)
    failures = {answer.failure for answer in answers if isinstance(answer, EndpointFailure)}
    assert len(failures) == 1 and (failure is None or failures == {failure})
    # Each caller its own error object (a shared one would gather every traceback).
    assert len({id(answer) for answer in answers}) == 4


async def test_a_caller_with_a_shorter_deadline_times_out_alone(
    proxy: RpcProxy, rpc: HttpSolanaRpc
) -> None:
    proxy.faults.delay_methods[FEES] = 0.5
    short = rpc.call(FEES, _fees_params(), timeout=0.1)
    patient = [rpc.call(FEES, _fees_params(), timeout=10.0) for _ in range(3)]
    answers = await asyncio.gather(short, *patient, return_exceptions=True)
    assert proxy.batch_sizes == [4]
    assert isinstance(answers[0], EndpointFailure) and answers[0].timeout
    assert all(isinstance(answer, list) for answer in answers[1:])


@pytest.mark.parametrize("refusal", [200, 400, 413])
async def test_an_endpoint_that_refuses_batches_is_asked_one_call_at_a_time(
    proxy: RpcProxy, rpc: HttpSolanaRpc, refusal: int, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.faults.batch_refusal = refusal
    first = await _fees(rpc, 4)
    assert all(isinstance(answer, list) for answer in first)
    assert rpc.batches_refused
    assert proxy.batch_sizes == [4] and proxy.methods[FEES] == 8  # refused, then 4 alone
    again = await _fees(rpc, 4)
    assert all(isinstance(answer, list) for answer in again)
    assert proxy.batch_sizes == [4] and proxy.methods[FEES] == 12
    warnings = [r for r in caplog.records if "batch" in r.getMessage()]
    assert len(warnings) == 1 and proxy.url not in warnings[0].getMessage()


async def test_closing_the_client_ends_the_calls_of_a_batch_in_flight(
    proxy: RpcProxy,
) -> None:
    client = HttpSolanaRpc(proxy.url)
    proxy.faults.delay_methods[FEES] = 30.0
    calls = asyncio.ensure_future(_fees(client, 3, timeout=30.0))
    await until(lambda: bool(proxy.batch_sizes), what="the batch at the proxy")
    started = time.monotonic()
    await client.close()
    answers = await asyncio.wait_for(calls, 10.0)
    assert time.monotonic() - started < 10.0
    assert all(
        isinstance(answer, EndpointFailure) and answer.failure == "client closed"
        for answer in answers
    )


async def test_calls_through_the_failover_manager_are_batched_too(
    make_proxies: MakeProxies, make_rpc: MakeRpc
) -> None:
    proxy, standby = await make_proxies(2)
    rpc = await make_rpc([f"{proxy.url}#name=a", f"{standby.url}#name=b"], timeout=5.0)
    answers = await asyncio.gather(*(rpc.call(FEES, _fees_params()) for _ in range(8)))
    assert all(isinstance(answer, list) for answer in answers)
    assert proxy.batch_sizes == [8] and standby.methods.get(FEES, 0) == 0


async def test_calls_made_while_the_pool_is_busy_go_together_when_a_request_comes_back(
    proxy: RpcProxy,
) -> None:
    # A slow endpoint (as a remote one is): every pooled connection holds a request.
    client = HttpSolanaRpc(proxy.url, pool_size=2)
    proxy.faults.delay_methods[FEES] = 0.3
    try:
        first = []
        for _ in range(2):
            first.append(asyncio.ensure_future(client.call(FEES, _fees_params())))
            sent = len(first)
            await until(lambda: proxy.methods.get(FEES, 0) == sent, what="a request sent")  # noqa: B023
        waiting = []
        for _ in range(10):  # one at a time, each in a turn of its own
            waiting.append(asyncio.ensure_future(client.call(FEES, _fees_params())))
            await asyncio.sleep(0)
        answers = await asyncio.gather(*first, *waiting)
    finally:
        await client.close()
    assert all(isinstance(answer, list) for answer in answers)
    # Two lone requests, then the ten as one batch once a connection was free.
    assert proxy.requests == 3 and proxy.batch_sizes == [10]


async def test_a_failed_batch_is_retried_on_the_next_endpoint_call_by_call(
    make_proxies: MakeProxies, make_rpc: MakeRpc
) -> None:
    primary, standby = await make_proxies(2)
    rpc = await make_rpc([f"{primary.url}#name=a", f"{standby.url}#name=b"], timeout=5.0)
    primary.faults.status = 502
    answers = await asyncio.gather(*(rpc.call(FEES, _fees_params()) for _ in range(8)))
    assert all(isinstance(answer, list) for answer in answers)
    assert primary.batch_sizes == [8]
    # Each call failed over on its own, and the retries, made together, went together.
    assert standby.methods[FEES] == 8 and sum(standby.batch_sizes) == 8
