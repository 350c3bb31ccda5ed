"""Admission, pinned down on a real grpc.aio server whose handlers wait on events (so
that being "in flight" is not left to timing): overload refusals, requests that never
arrive, the waiting bound, malformed messages, default deadlines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from service.interceptors import Admission, AdmissionLimits, InterceptorChain, RequestCheck
from tests.hostile._h2client import H2Client, grpc_frame

SERVICE = "test.Waits"
EXEMPT = "test.Exempt"


@dataclass
class Refused:
    seen: list[tuple[str, grpc.StatusCode, str]] = field(default_factory=list)

    def refused(
        self, rpc_type: str, service: str, method: str, code: grpc.StatusCode, reason: str
    ) -> None:
        self.seen.append((method, code, reason))


@dataclass
class Harness:
    port: int
    admission: Admission
    refusals: Refused
    release: asyncio.Event
    entered: asyncio.Queue[str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _handlers(harness: Callable[[], Harness]) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    async def wait(request: wrappers_pb2.StringValue, context: Any) -> wrappers_pb2.StringValue:
        harness().entered.put_nowait(request.value)
        await harness().release.wait()
        return request

    async def sleep(request: wrappers_pb2.DoubleValue, context: Any) -> wrappers_pb2.DoubleValue:
        await asyncio.sleep(request.value)
        return request

    async def stream(
        request: wrappers_pb2.StringValue, context: Any
    ) -> AsyncIterator[wrappers_pb2.StringValue]:
        harness().entered.put_nowait(request.value)
        await harness().release.wait()
        yield request

    def unary(behaviour: Any, message: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=message.FromString,
            response_serializer=message.SerializeToString,
        )

    return {
        "Wait": unary(wait, wrappers_pb2.StringValue),
        "Sleep": unary(sleep, wrappers_pb2.DoubleValue),
        "Stream": grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=wrappers_pb2.StringValue.FromString,
            response_serializer=wrappers_pb2.StringValue.SerializeToString,
        ),
    }


async def _serve(limits: AdmissionLimits) -> tuple[grpc.aio.Server, Harness]:
    refusals = Refused()
    admission = Admission(limits, refusals=refusals, exempt_services=(EXEMPT,))
    holder: list[Harness] = []
    server = grpc.aio.server(interceptors=[InterceptorChain([admission, RequestCheck()])])
    handlers = _handlers(lambda: holder[0])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(SERVICE, handlers),
            grpc.method_handlers_generic_handler(EXEMPT, handlers),
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    holder.append(Harness(port, admission, refusals, asyncio.Event(), asyncio.Queue()))
    return server, holder[0]


@pytest.fixture
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    limits = getattr(request, "param", AdmissionLimits(max_concurrent_rpcs=3))
    server, harness = await _serve(limits)
    yield harness
    harness.release.set()
    await server.stop(0)


def _call(channel: grpc.aio.Channel, method: str, service: str = SERVICE) -> Any:
    return channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )


def _details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(error)
    assert status is not None
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.BadRequest,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    return found


async def test_calls_over_the_limit_are_refused_at_once_with_retry_info(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        wait = _call(channel, "Wait")
        held = [
            asyncio.ensure_future(wait(wrappers_pb2.StringValue(value=str(i)))) for i in range(3)
        ]
        for _ in held:
            await harness.entered.get()
        assert harness.admission.unary_in_flight == 3
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await wait(wrappers_pb2.StringValue(value="one too many"), timeout=30)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        details = _details(refused.value)
        assert details["ErrorInfo"].reason == "SERVER_OVERLOADED"
        assert details["ErrorInfo"].metadata["limit"] == "max_concurrent_rpcs"
        assert details["RetryInfo"].retry_delay.ToTimedelta().total_seconds() == 1.0
        # An exempt service (health checks) is answered meanwhile.
        exempt = asyncio.ensure_future(
            _call(channel, "Wait", EXEMPT)(wrappers_pb2.StringValue(value="probe"))
        )
        assert await harness.entered.get() == "probe"
        harness.release.set()
        replies = await asyncio.gather(*held, exempt)
        assert [reply.value for reply in replies] == ["0", "1", "2", "probe"]
    assert harness.admission.unary_in_flight == 0
    assert harness.refusals.seen == [("Wait", grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded")]


@pytest.mark.parametrize("harness", [AdmissionLimits(max_concurrent_streams=1)], indirect=True)
async def test_server_streams_have_a_limit_of_their_own(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        stream: Any = channel.unary_stream(
            f"/{SERVICE}/Stream",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=wrappers_pb2.StringValue.FromString,
        )
        first = stream(wrappers_pb2.StringValue(value="watch"))
        assert await harness.entered.get() == "watch"
        second = stream(wrappers_pb2.StringValue(value="another"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in second:
                pass
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _details(refused.value)["ErrorInfo"].metadata["limit"] == "max_concurrent_streams"
        # Unary calls are not counted against the streams' limit.
        harness.release.set()
        assert (await _call(channel, "Wait")(wrappers_pb2.StringValue(value="x"))).value == "x"
        assert [reply.value async for reply in first] == ["watch"]


@pytest.mark.parametrize(
    "harness", [AdmissionLimits(request_timeout=0.5, max_waiting=2)], indirect=True
)
async def test_a_request_that_never_arrives(harness: Harness) -> None:
    client = await H2Client.open("127.0.0.1", harness.port)
    try:
        streams = [client.start_call(f"/{SERVICE}/Wait") for _ in range(3)]
        await client.flush()
        replies = [client.replies[stream] for stream in streams]
        await asyncio.wait_for(asyncio.gather(*(r.ended.wait() for r in replies)), 30)
        # The third to arrive cut the first (at most two wait); the others timed out.
        codes = [reply.grpc_status for reply in replies]
        assert codes == [
            grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
            grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
            grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
        ]
        assert "did not arrive within 0.5 s" in replies[1].grpc_message
        # A request that completes after its headers, within the timeout, is served.
        late = client.start_call(f"/{SERVICE}/Sleep")
        await client.flush()
        await asyncio.sleep(0.1)
        client.send_message(late, wrappers_pb2.DoubleValue(value=0).SerializeToString())
        await client.flush()
        await asyncio.wait_for(client.replies[late].ended.wait(), 30)
        assert client.replies[late].grpc_status == 0
    finally:
        await client.close()
    assert harness.admission.waiting == 0
    assert sorted(reason for _, _, reason in harness.refusals.seen) == [
        "request_timeout",
        "request_timeout",
        "waiting_evicted",
    ]


async def test_a_message_that_does_not_decode(harness: Harness) -> None:
    client = await H2Client.open("127.0.0.1", harness.port)
    try:
        reply = await client.call(f"/{SERVICE}/Wait", b"\x0a\x05ab", timeout=30)
    finally:
        await client.close()
    assert reply.grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "google.protobuf.StringValue" in reply.grpc_message
    assert harness.entered.empty()  # the handler never ran


async def test_a_stream_that_ends_without_a_message(harness: Harness) -> None:
    client = await H2Client.open("127.0.0.1", harness.port)
    try:
        stream = client.start_call(f"/{SERVICE}/Wait", end_stream=True)
        await client.flush()
        await asyncio.wait_for(client.replies[stream].ended.wait(), 30)
    finally:
        await client.close()
    assert client.replies[stream].grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0]


@pytest.mark.parametrize("harness", [AdmissionLimits(default_deadline=0.3)], indirect=True)
async def test_a_call_without_a_deadline_gets_the_default(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        sleep: Any = channel.unary_unary(
            f"/{SERVICE}/Sleep",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=wrappers_pb2.DoubleValue.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await sleep(wrappers_pb2.DoubleValue(value=60))
        assert expired.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "default of 0.3 s" in (expired.value.details() or "")
        # The caller's own deadline wins over the default.
        reply = await sleep(wrappers_pb2.DoubleValue(value=0.6), timeout=30)
        assert reply.value == 0.6


def test_malformed_requests_pass_through_to_the_request_check() -> None:
    """The inner stages see a MalformedRequest (so authentication and rate limits
    charge it) and RequestCheck is what refuses it."""
    from service.interceptors import MalformedRequest

    request = MalformedRequest("agentstaking.v1.X", "Error parsing message")
    violation = request.violation()
    assert violation.field == "request" and violation.reason == "MALFORMED_REQUEST"
    assert grpc_frame(b"") == b"\x00\x00\x00\x00\x00"


async def test_a_waiting_call_cut_while_its_own_timeout_expires() -> None:
    """The oldest waiting call may be timing out at the very moment another arrives:
    cutting it then must not fail the newcomer."""
    from service.interceptors._admission import _Waiting

    waiting = _Waiting(1)
    first: dict[str, asyncio.Timeout] = {}

    async def oldest() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0) as timeout:
                first["timeout"] = timeout
                waiting.enter(timeout)
                await asyncio.sleep(30)

    task = asyncio.create_task(oldest())
    await asyncio.sleep(0)  # it waits; its timeout fires on the next turn
    await asyncio.sleep(0)
    assert first["timeout"].expired()  # expiring: its task has not seen it yet
    async with asyncio.timeout(30) as newcomer:
        ticket = waiting.enter(newcomer)
        await task  # the oldest leaves as a timeout, not as cut
        assert not waiting.leave(ticket)
    assert not waiting.evicted
