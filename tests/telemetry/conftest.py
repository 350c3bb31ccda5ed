"""A real server whose spans, metrics and logs the tests can read."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import grpc
import pytest
from agentstaking.v1 import keys_pb2_grpc, staking_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair

from service.config import Settings
from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from service.telemetry import JsonFormatter, LogHandler, Metrics, Telemetry, tracer_provider
from tests._grpc_auth import keyed_channel

T = TypeVar("T")

SOL = 1_000_000_000
FEE_BPS = 25
STAKING = "agentstaking.v1.StakingService"
KEYS = "agentstaking.v1.KeyService"
HEALTH = "grpc.health.v1.Health"


async def settled(check: Callable[[], T], timeout: float = 10.0) -> T:
    """``check()`` once it stops failing.

    A client has its answer before the server's interceptors are done with the call
    (the observers finish after the answer has gone; an abort sends the status at
    once): spans, access lines and counters of a call land a moment after the client
    sees it end.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, KeyError, ValueError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.01)


def all_handled(scrape: Scrape) -> Scrape:
    """``scrape`` if every call started has been handled (else AssertionError)."""
    started = sum(scrape.matching("grpc_server_started_total").values())
    handled = sum(scrape.matching("grpc_server_handled_total").values())
    assert started == handled, (started, handled)
    return scrape


@dataclass
class Scrape:
    """One /metrics answer: sample values by (name, labels), and every family name."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    names: set[str]
    labels: dict[str, set[str]]
    text: str

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def get(self, name: str, **labels: str) -> float:
        """Like :meth:`value`, 0 for a series that does not exist."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def matching(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        """Samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return {
            key: value
            for (sample, key), value in self.samples.items()
            if sample == name and wanted <= key
        }


def parse_scrape(text: str) -> Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        for sample in family.samples:
            names.add(sample.name)
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
            labels.setdefault(sample.name, set()).update(sample.labels)
    return Scrape(samples=samples, names=names, labels=labels, text=text)


@dataclass
class Observed:
    server: AgentStakingServer
    spans: InMemorySpanExporter
    metrics: Metrics
    staking: staking_pb2_grpc.StakingServiceAsyncStub
    keys: keys_pb2_grpc.KeyServiceAsyncStub
    channel: grpc.aio.Channel
    """Calls carry the staking key."""
    rpc: AsyncClient
    staking_secret: str
    admin_secret: str
    vote_account: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def scrape(self) -> Scrape:
        """/metrics over HTTP, once every call started has been handled."""
        listener = self.server.metrics_listener
        assert listener is not None
        deadline = time.monotonic() + 10
        while True:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{listener.port}/metrics") as response,
            ):
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                scrape = parse_scrape(await response.text())
            try:
                return all_handled(scrape)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.01)

    def finished_spans(self) -> tuple[ReadableSpan, ...]:
        return self.spans.get_finished_spans()

    async def funded_wallet(self, sol: int = 20) -> Keypair:
        wallet = Keypair()
        await self.rpc.request_airdrop(wallet.pubkey(), sol * SOL)
        return wallet


async def start_observed(
    localnet: LocalnetServer, data_dir: Path, **settings: Any
) -> AsyncIterator[Observed]:
    rpc = AsyncClient(localnet.url, commitment=Confirmed)
    fee_wallet = Keypair()
    await rpc.request_airdrop(fee_wallet.pubkey(), SOL)
    vote_account = str(localnet.chain.validators[0].vote_account)
    spans = InMemorySpanExporter()
    metrics = Metrics()
    telemetry = Telemetry(
        provider=tracer_provider(processors=(SimpleSpanProcessor(spans),)), metrics=metrics
    )
    server = AgentStakingServer(
        Settings(
            listen="127.0.0.1:0",
            metrics_listen="127.0.0.1:0",
            rpc_urls=[localnet.url],
            service_fee_bps=FEE_BPS,
            fee_recipient=str(fee_wallet.pubkey()),
            default_vote_account=vote_account,
            blockhash_refresh_seconds=0.5,
            shutdown_grace_seconds=1,
            data_dir=data_dir,
            database_url=f"sqlite:///{data_dir / 'keys.db'}",
            **settings,
        ),
        telemetry=telemetry,
    )
    await server.start()
    assert server.keys is not None
    _, staking_secret = await server.keys.create(display_name="agent", scopes=["staking"])
    _, admin_secret = await server.keys.create(display_name="operator", scopes=["admin"])
    address = f"127.0.0.1:{server.port}"
    channel = keyed_channel(address, staking_secret)
    admin_channel = keyed_channel(address, admin_secret)
    try:
        yield Observed(
            server=server,
            spans=spans,
            metrics=metrics,
            staking=staking_pb2_grpc.StakingServiceStub(channel),
            keys=keys_pb2_grpc.KeyServiceStub(admin_channel),
            channel=channel,
            rpc=rpc,
            staking_secret=staking_secret,
            admin_secret=admin_secret,
            vote_account=vote_account,
        )
    finally:
        await channel.close()
        await admin_channel.close()
        await server.stop(0)
        telemetry.shutdown()
        await rpc.close()


@pytest.fixture
async def observed(localnet: LocalnetServer, tmp_path: Path) -> AsyncIterator[Observed]:
    """A fresh server (its counters start at zero)."""
    async for item in start_observed(localnet, tmp_path):
        yield item


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record of the process, as the service writes them (JSON lines)."""
    stream = io.StringIO()
    handler = LogHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
