"""Thousands of calls at once: each is answered OK or RESOURCE_EXHAUSTED with RetryInfo
(never CANCELLED), and every one of them is counted in grpc_server_handled_total."""

from __future__ import annotations

import asyncio
import os
import urllib.request
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from agentstaking.v1 import staking_pb2, staking_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families
from solders.signature import Signature

from ._server import ServeProcess
from .conftest import serving

LIMIT = 4


def handled(server: ServeProcess, method: str) -> Counter[str]:
    """grpc_server_handled_total of ``method`` by code, as /metrics says now."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    found: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "grpc_server_handled":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["grpc_method"] == method:
                    found[sample.labels["grpc_code"]] += int(sample.value)
    return found


def _settled(server: ServeProcess, method: str, before: Counter[str], total: int) -> Counter[str]:
    # Scrapes share one rendering per second: wait for one that includes every call.
    for _ in range(30):
        after = handled(server, method)
        after.subtract(before)
        if sum(after.values()) >= total:
            return +after
        asyncio.run(asyncio.sleep(0.5))
    return +after


async def _concurrently(
    server: ServeProcess, count: int, call: str
) -> list[grpc.aio.AioRpcError | None]:
    metadata = (("authorization", f"Bearer {server.keys['staking']}"),)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)

        async def one() -> grpc.aio.AioRpcError | None:
            try:
                if call == "GetNetworkInfo":
                    await stub.GetNetworkInfo(
                        staking_pb2.GetNetworkInfoRequest(), metadata=metadata, timeout=120
                    )
                else:
                    # Each asks the chain about an unknown signature: calls overlap.
                    signature = str(Signature.from_bytes(os.urandom(64)))
                    await stub.GetTransactionStatus(
                        staking_pb2.GetTransactionStatusRequest(signature=signature),
                        metadata=metadata,
                        timeout=120,
                    )
            except grpc.aio.AioRpcError as error:
                return error
            return None

        return await asyncio.gather(*(one() for _ in range(count)))


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serving(
        tmp_path_factory.mktemp("limited"), {"AGENT_STAKING_MAX_CONCURRENT_RPCS": str(LIMIT)}
    ) as process:
        yield process


def test_three_thousand_calls_at_once_none_cancelled(served: ServeProcess) -> None:
    before = handled(served, "GetNetworkInfo")
    errors = asyncio.run(_concurrently(served, 3000, "GetNetworkInfo"))
    codes = Counter(error.code() if error else grpc.StatusCode.OK for error in errors)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    counted = _settled(served, "GetNetworkInfo", before, 3000)
    assert (
        counted
        == Counter(
            {
                "OK": codes[grpc.StatusCode.OK],
                "ResourceExhausted": codes[grpc.StatusCode.RESOURCE_EXHAUSTED],
            }
        )
        - Counter()
    ), (counted, codes)


def test_over_the_limit_calls_are_refused_with_retry_info(limited: ServeProcess) -> None:
    before = handled(limited, "GetTransactionStatus")
    errors = asyncio.run(_concurrently(limited, 400, "GetTransactionStatus"))
    # Served calls answer NOT_FOUND (the signatures are unknown); the rest were refused.
    answered = [error for error in errors if error is not None]
    assert {error.code() for error in answered} <= {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }, Counter(error.code() for error in answered)
    # Whether the limit is reached depends on how the calls overlap here; the refusal
    # itself is pinned down in tests/api/test_admission.py.
    refused = [e for e in answered if e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED]
    for error in refused:
        status = rpc_status.from_call(error)
        assert status is not None
        kinds = {}
        for detail in status.details:
            for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
                if detail.Is(kind.DESCRIPTOR):
                    message = kind()
                    detail.Unpack(message)
                    kinds[kind.DESCRIPTOR.name] = message
        assert kinds["ErrorInfo"].reason == "SERVER_OVERLOADED"
        assert kinds["ErrorInfo"].metadata["limit"] == "max_concurrent_rpcs"
        assert kinds["RetryInfo"].retry_delay.ToTimedelta().total_seconds() > 0
    counted = _settled(limited, "GetTransactionStatus", before, 400)
    assert sum(counted.values()) == 400, counted
    assert counted["ResourceExhausted"] == len(refused)
