"""Traces link the call that produced an event to each of its deliveries: a delivery is
a span of its own trace, linked to the producing call's span, and its traceparent
travels to the receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentstaking.v1 import events_pb2, events_pb2_grpc, staking_pb2, staking_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.server import AgentStakingServer
from service.telemetry import Telemetry, tracer_provider
from tests._grpc_auth import keyed_channel
from tests._wait import until

from .conftest import EventsHarness, Receiver, event_settings, transfer_from

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def traced(
    harness: EventsHarness, tmp_path: Path
) -> AsyncIterator[tuple[AgentStakingServer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(provider=tracer_provider(processors=(SimpleSpanProcessor(exporter),)))
    server = AgentStakingServer(event_settings(harness.localnet.url, tmp_path), telemetry=telemetry)
    await server.start()
    yield server, exporter
    await server.stop(0)


def _links_to(span: ReadableSpan, trace_id: str) -> bool:
    return any(f"{link.context.trace_id:032x}" == trace_id for link in span.links)


def _deliveries(exporter: InMemorySpanExporter, event_type: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.name == "webhook.deliver"
        and (s.attributes or {}).get("agent_staking.event_type") == event_type
    ]


async def test_deliveries_link_to_the_call_that_produced_their_event(
    harness: EventsHarness,
    receiver: Receiver,
    traced: tuple[AgentStakingServer, InMemorySpanExporter],
) -> None:
    server, exporter = traced
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="agent", scopes=["staking"])
    wallet = await harness.wallet()
    address = str(wallet.pubkey())
    async with keyed_channel(f"127.0.0.1:{server.port}", secret) as channel:
        events = events_pb2_grpc.EventServiceStub(channel)
        staking = staking_pb2_grpc.StakingServiceStub(channel)
        created = await events.CreateWebhook(
            events_pb2.CreateWebhookRequest(
                webhook=events_pb2.Webhook(
                    url=receiver.url, wallets=[address], event_types=["transaction.confirmed"]
                )
            )
        )
        caller_trace = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),)
        await staking.SubmitTransaction(
            staking_pb2.SubmitTransactionRequest(
                transaction=bytes(await transfer_from(harness.rpc, wallet))
            ),
            metadata=caller_trace,
        )
        test_trace = "0af7651916cd43dd8448eb211c80319c"
        await events.SendTestEvent(
            events_pb2.SendTestEventRequest(name=created.webhook.name),
            metadata=(("traceparent", f"00-{test_trace}-b7ad6b7169203331-01"),),
        )
        await until(
            lambda: (
                bool(_deliveries(exporter, "transaction.confirmed"))
                and bool(_deliveries(exporter, "webhook.test"))
            ),
            what="both deliveries traced",
        )
    [confirmed] = _deliveries(exporter, "transaction.confirmed")
    [tested] = _deliveries(exporter, "webhook.test")
    assert _links_to(confirmed, TRACE_ID)
    assert _links_to(tested, test_trace)
    # A trace of its own, which the receiver continues.
    assert f"{confirmed.context.trace_id:032x}" != TRACE_ID
    sent = {r.headers["traceparent"].split("-")[1] for r in receiver.requests}
    assert f"{confirmed.context.trace_id:032x}" in sent
    assert f"{tested.context.trace_id:032x}" in sent
