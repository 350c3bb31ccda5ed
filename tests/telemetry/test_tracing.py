"""Spans of a real server, captured in memory: one server span per call, child spans
for Solana and the key store, the caller's trace continued."""

from __future__ import annotations

import os
import secrets

import grpc
import pytest
from agentstaking.v1 import staking_pb2, types_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service.ratelimit import (
    Dimension,
    Limit,
    RateLimiter,
    RateLimiterUnavailableError,
    RateLimitPolicy,
    RedisBackend,
    RpcClass,
    Subject,
    Tier,
)
from service.telemetry import tracer_provider
from tests._require import unavailable

from .conftest import SOL, STAKING, Observed, settled

REDIS_URL = os.environ.get("AGENT_STAKING_TEST_REDIS", "redis://127.0.0.1:6379/0")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def _server_span(observed: Observed, trace_id: int) -> ReadableSpan:
    """The one server span of the trace, once the server has ended it."""

    def find() -> ReadableSpan:
        (span,) = (
            span
            for span in observed.finished_spans()
            if span.kind is SpanKind.SERVER and span.context.trace_id == trace_id
        )
        return span

    return await settled(find)


def _children(observed: Observed, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        span
        for span in observed.finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


async def test_server_span_continues_the_callers_traceparent(observed: Observed) -> None:
    call = observed.staking.GetNetworkInfo(
        staking_pb2.GetNetworkInfoRequest(),
        metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),),
    )
    await call
    # The client can quote the trace id: in the trailers, with the rate-limit ones (a
    # unary call sends no initial metadata of its own: one send, with the status).
    trailers = dict(await call.trailing_metadata() or ())
    assert trailers["x-request-id"] == TRACE_ID
    assert "x-ratelimit-limit" in trailers
    assert dict(await call.initial_metadata() or ()) == {}

    span = await _server_span(observed, int(TRACE_ID, 16))
    assert span.name == f"{STAKING}/GetNetworkInfo"
    assert span.parent is not None and span.parent.span_id == int(PARENT_ID, 16)
    assert span.parent.is_remote
    attributes = dict(span.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == STAKING
    assert attributes["rpc.method"] == "GetNetworkInfo"
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["network.peer.address"] == "127.0.0.1"
    assert isinstance(attributes["network.peer.port"], int)
    assert str(attributes["agentstaking.key_id"]) in observed.staking_secret
    assert span.status.status_code is StatusCode.UNSET
    # The key was not cached yet: its lookup is a child span of the call.
    (lookup,) = (s for s in _children(observed, span) if s.name == "KeyStore.get")
    assert lookup.kind is SpanKind.CLIENT
    assert dict(lookup.attributes or {})["db.system.name"] == "sqlite"


async def test_one_span_per_call_with_fresh_trace_ids(observed: Observed) -> None:
    ids = []
    for _ in range(3):
        call = observed.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
        await call
        ids.append(dict(await call.trailing_metadata() or ())["x-request-id"])
    assert len(set(ids)) == 3
    for request_id in ids:
        assert len(request_id) == 32 and int(request_id, 16) != 0
        span = await _server_span(observed, int(request_id, 16))
        assert span.parent is None


async def test_solana_calls_are_child_spans(observed: Observed) -> None:
    wallet = await observed.funded_wallet()
    call = observed.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            amount_lamports=2 * SOL,
            options=types_pb2.TransactionOptions(simulate=True),
        )
    )
    await call
    request_id = dict(await call.trailing_metadata() or ())["x-request-id"]
    span = await _server_span(observed, int(request_id, 16))
    children = _children(observed, span)
    simulations = [s for s in children if s.name == "simulateTransaction"]
    assert simulations
    for child in simulations:
        assert child.kind is SpanKind.CLIENT
        assert child.context.trace_id == span.context.trace_id
        attributes = dict(child.attributes or {})
        assert attributes["rpc.system"] == "jsonrpc"
        assert attributes["rpc.method"] == "simulateTransaction"
        assert attributes["solana.endpoint"] == "rpc0"
        assert attributes["server.address"] == "127.0.0.1"
        assert child.status.status_code is StatusCode.UNSET
    wallet_attribute = dict(span.attributes or {})["agentstaking.wallet"]
    assert wallet_attribute == str(wallet.pubkey())


@pytest.mark.parametrize(
    ("metadata", "code", "reason"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING"),
        ((("x-api-key", "ask_nope"),), grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MALFORMED"),
    ],
)
async def test_refused_calls_are_spans_with_their_code(
    observed: Observed,
    metadata: tuple[tuple[str, str], ...],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    async with grpc.aio.insecure_channel(observed.address) as channel:
        stub = type(observed.staking)(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest(), metadata=metadata)
    error = caught.value
    assert error.code() is code
    request_id = dict(error.trailing_metadata() or ())["x-request-id"]
    span = await _server_span(observed, int(request_id, 16))
    attributes = dict(span.attributes or {})
    assert attributes["rpc.grpc.status_code"] == code.value[0]
    assert attributes["agentstaking.error.reason"] == reason
    # A caller's mistake is not a server error.
    assert span.status.status_code is StatusCode.UNSET


async def test_redis_decisions_are_child_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = tracer_provider(processors=(SimpleSpanProcessor(exporter),))
    tracer = provider.get_tracer("test")
    backend = RedisBackend.from_url(
        REDIS_URL, prefix=f"agent-staking-test:{secrets.token_hex(4)}:", timeout=2
    )
    limiter = RateLimiter(
        backend, RateLimitPolicy(key=Tier(60, 10), wallet=Tier(60, 10), peer=Tier(60, 10))
    )
    limiter.tracer = tracer
    subject = Subject(
        dimension=Dimension.KEY,
        identity="k",
        rpc_class=RpcClass.READS,
        limit=Limit(per_minute=60, burst=10),
    )
    try:
        with tracer.start_as_current_span("call") as call:
            try:
                verdict = await limiter.check([subject])
            except RateLimiterUnavailableError:
                unavailable(f"Redis at {REDIS_URL} is unreachable")
        assert verdict.allowed
        await limiter.check([subject])  # outside a call: no span of its own
    finally:
        await limiter.close()
        provider.shutdown()
    (redis,) = (s for s in exporter.get_finished_spans() if s.name == "ratelimit EVALSHA")
    assert redis.kind is SpanKind.CLIENT
    assert redis.parent is not None and redis.parent.span_id == call.get_span_context().span_id
    assert dict(redis.attributes or {})["db.system.name"] == "redis"
