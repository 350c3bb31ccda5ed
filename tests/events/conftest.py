"""A real server with fast event settings on a localnet of its own, and a real webhook
receiver (aiohttp's web server on an ephemeral port) whose behaviour a test steers.

Its own localnet: these tests move epochs and make validators delinquent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import grpc
import pytest
from agentstaking.v1 import events_pb2, events_pb2_grpc, staking_pb2, staking_pb2_grpc, types_pb2
from aiohttp import web
from google.protobuf import json_format
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from standardwebhooks import Webhook as StandardWebhook

from service.config import Settings
from service.keys import KeyPolicy
from service.localnet import LocalnetConfig, LocalnetServer
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._wait import until
from tests.api._helpers import sign
from tests.conftest import FakeClock
from tests.liquid._sdk import JS, _node

SOL = 1_000_000_000
# Short enough for tests, long enough to tell the attempts apart: 7 attempts in ~6 s.
RETRY_SCHEDULE = [0.2, 0.4, 0.8, 1.6, 1.6, 1.6]
TIMEOUT = 1.0


@dataclass
class Request:
    """One request the receiver got, and how it answered."""

    headers: dict[str, str]
    body: bytes
    status: int
    time: float
    late: bool = False
    """Answered after the service stopped waiting (``slow``): not received, for it."""

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    """A webhook endpoint. ``mode``: ``ok`` (204), ``error`` (500), ``slow`` (answers
    204 after ``slow_seconds``: later than the service waits), ``gone`` (410);
    :meth:`refuse` stops listening (connections refused) until :meth:`accept`."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.slow_seconds = TIMEOUT * 2
        self.delay = 0.0
        """Seconds every answer takes (well within the timeout)."""
        self.retry_after = ""
        """The ``Retry-After`` header of the failed answers ("": none)."""
        self.requests: list[Request] = []
        self.port = 0
        self._arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._site: web.TCPSite | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        mode = self.mode
        status = {"ok": 204, "error": 500, "slow": 204, "gone": 410}[mode]
        self.requests.append(
            Request(
                headers=dict(request.headers),
                body=body,
                status=status,
                time=time.time(),
                late=mode == "slow",
            )
        )
        self._arrived.set()
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        elif self.delay:
            await asyncio.sleep(self.delay)
        headers = {"retry-after": self.retry_after} if self.retry_after and status >= 300 else {}
        return web.Response(status=status, headers=headers)

    async def start(self) -> None:
        await self._runner.setup()
        await self.accept()

    async def accept(self) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def stop(self) -> None:
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def by_id(self) -> dict[str, list[Request]]:
        """The requests per webhook-id (event id), in order."""
        found: dict[str, list[Request]] = {}
        for request in self.requests:
            found.setdefault(request.headers["webhook-id"], []).append(request)
        return found

    def events(self, *, event_type: str | None = None) -> list[dict[str, Any]]:
        """The bodies of the requests answered 204 in time, oldest first."""
        found = [r.event for r in self.requests if r.status == 204 and not r.late]
        return [e for e in found if event_type is None or e["type"] == event_type]

    async def wait_for(
        self, check: Callable[[], bool], *, timeout: float = 30.0, what: str = "the deliveries"
    ) -> None:
        await until(check, timeout=timeout, what=what)


def verified(request: Request, secret: str) -> events_pb2.Event:
    """The event of a delivery, after the Standard Webhooks reference library
    (``standardwebhooks``) verified its signature with the webhook's secret."""
    payload = StandardWebhook(secret).verify(request.body, request.headers)
    event = json_format.ParseDict(payload, events_pb2.Event())
    assert request.headers["webhook-id"] == event.event_id
    return event


async def verify_in_node(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What npm's ``standardwebhooks`` says of deliveries (``tests/js/verify_webhook.cjs``
    run by node): ``{event}`` when verified, else ``{error}``."""
    process = await asyncio.create_subprocess_exec(
        _node(),
        str(JS / "verify_webhook.cjs"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(json.dumps(checks).encode()), 60)
    assert process.returncode == 0, err.decode(errors="replace")
    answers: list[dict[str, Any]] = json.loads(out)
    return answers


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.start()
    yield found
    await found.stop()


def event_settings(rpc_url: str, tmp: Any, **overrides: Any) -> Settings:
    """A server whose events move fast: producer rounds every 0.3 s, short retries."""
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "rpc_urls": [rpc_url],
        "service_fee_bps": 0,
        "metrics_listen": "off",
        "blockhash_refresh_seconds": 0.3,
        "context_refresh_seconds": 0.5,
        "stake_accounts_cache_seconds": 0,
        "ratelimit_wallet_per_minute": 100_000,
        "ratelimit_wallet_burst": 10_000,
        "relay_poll_seconds": 0.1,
        "shutdown_grace_seconds": 1,
        "key_cache_ttl_seconds": 0.2,
        "webhook_allow_private": True,
        "webhook_timeout_seconds": TIMEOUT,
        "webhook_lease_seconds": 5.0,
        "webhook_retry_schedule_seconds": RETRY_SCHEDULE,
        "events_poll_seconds": 0.1,
        "events_producer_interval_seconds": 0.3,
        "events_leader_lease_seconds": 3.0,
        "data_dir": tmp / "data",
        "database_url": f"sqlite:///{tmp / 'state' / 'keys.db'}",
    }
    values.update(overrides)
    return Settings(**values)


async def transfer_from(
    rpc: AsyncClient, wallet: Keypair, lamports: int = 1_000_000
) -> VersionedTransaction:
    """A signed transfer of ``lamports`` from ``wallet`` to a new account."""
    latest = (await rpc.get_latest_blockhash(Confirmed)).value.blockhash
    to = Pubkey.new_unique()
    message = MessageV0.try_compile(
        wallet.pubkey(),
        [transfer(TransferParams(from_pubkey=wallet.pubkey(), to_pubkey=to, lamports=lamports))],
        [],
        Hash.from_string(str(latest)),
    )
    return VersionedTransaction(message, [wallet])


@dataclass
class Caller:
    """An API key and stubs whose calls carry it."""

    key_id: str
    secret: str
    events: events_pb2_grpc.EventServiceAsyncStub
    staking: staking_pb2_grpc.StakingServiceAsyncStub


@dataclass
class EventsHarness:
    server: AgentStakingServer
    localnet: LocalnetServer
    rpc: AsyncClient
    http: aiohttp.ClientSession
    agent: Caller
    admin: Caller
    clock: FakeClock
    """The keys' clock (rotation times, expiry): moves only when told."""
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    webhooks: list[tuple[Caller, str]] = field(default_factory=list)
    """Created by the test running: deleted when it ends (their receivers stop)."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def caller(
        self, *, policy: KeyPolicy | None = None, scopes: tuple[str, ...] = ("staking",)
    ) -> Caller:
        """A new API key and its stubs."""
        assert self.server.keys is not None
        key, secret = await self.server.keys.create(
            display_name="events test", scopes=list(scopes), policy=policy or KeyPolicy()
        )
        channel = keyed_channel(self.address, secret)
        self.channels.append(channel)
        return Caller(
            key_id=key.key_id,
            secret=secret,
            events=events_pb2_grpc.EventServiceStub(channel),
            staking=staking_pb2_grpc.StakingServiceStub(channel),
        )

    async def call(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        async with self.http.post(self.localnet.url, json=body) as response:
            answer = await response.json()
        assert "error" not in answer, answer
        return answer["result"]

    async def wallet(self, sol: int = 100) -> Keypair:
        keypair = Keypair()
        await self.call("requestAirdrop", str(keypair.pubkey()), sol * SOL)
        return keypair

    async def advance_epochs(self, count: int = 1) -> int:
        epoch = int((await self.call("localnet_advanceEpochs", count))["epoch"])
        assert self.server.chain is not None
        chain = self.server.chain
        await until(lambda: chain.stats().epoch == epoch, what=f"the service at epoch {epoch}")
        return epoch

    async def submit(
        self, caller: Caller, tx: VersionedTransaction, *, commitment: int = 0
    ) -> types_pb2.TransactionStatus:
        answer = await caller.staking.SubmitTransaction(
            staking_pb2.SubmitTransactionRequest(transaction=bytes(tx), commitment=commitment)  # type: ignore[arg-type]
        )
        return answer.status

    async def stake(
        self, caller: Caller, wallet: Keypair, lamports: int = 2 * SOL, *, vote: str = ""
    ) -> tuple[str, str]:
        """Stake through the service (build, sign, SubmitTransaction until confirmed):
        (stake account, signature)."""
        built = await caller.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(wallet.pubkey()), amount_lamports=lamports, vote_account=vote
            )
        )
        status = await self.submit(
            caller, sign(built.transaction, wallet), commitment=types_pb2.COMMITMENT_CONFIRMED
        )
        assert status.state in (
            types_pb2.TRANSACTION_STATE_CONFIRMED,
            types_pb2.TRANSACTION_STATE_FINALIZED,
        ), status
        return built.stake_account, status.signature

    async def unstake(self, caller: Caller, wallet: Keypair, stake_account: str) -> str:
        built = await caller.staking.BuildUnstakeTransaction(
            staking_pb2.BuildUnstakeTransactionRequest(
                wallet=str(wallet.pubkey()), stake_account=stake_account
            )
        )
        status = await self.submit(
            caller, sign(built.transaction, wallet), commitment=types_pb2.COMMITMENT_CONFIRMED
        )
        return status.signature

    async def transfer(self, caller: Caller, wallet: Keypair, lamports: int = 1_000_000) -> str:
        """A plain transfer relayed by the service (its outcome makes events)."""
        status = await self.submit(caller, await transfer_from(self.rpc, wallet, lamports))
        return status.signature

    async def webhook(
        self,
        caller: Caller,
        url: str,
        *,
        wallets: tuple[str, ...] = (),
        types: tuple[str, ...] = (),
    ) -> events_pb2.CreateWebhookResponse:
        created = await caller.events.CreateWebhook(
            events_pb2.CreateWebhookRequest(
                webhook=events_pb2.Webhook(url=url, wallets=wallets, event_types=types)
            )
        )
        self.webhooks.append((caller, created.webhook.name))
        return created

    async def delete_webhooks(self) -> None:
        while self.webhooks:
            _, name = self.webhooks.pop()
            with suppress(grpc.aio.AioRpcError):
                await self.admin.events.DeleteWebhook(events_pb2.DeleteWebhookRequest(name=name))

    async def deliveries(self, caller: Caller, name: str) -> list[events_pb2.WebhookDelivery]:
        answer = await caller.events.ListWebhookDeliveries(
            events_pb2.ListWebhookDeliveriesRequest(name=name, page_size=500)
        )
        return list(answer.deliveries)


@pytest.fixture(scope="package")
async def events_localnet() -> AsyncIterator[LocalnetServer]:
    server = LocalnetServer(LocalnetConfig(slot_duration=0.1, slots_per_epoch=432_000))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="package")
async def harness(
    events_localnet: LocalnetServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EventsHarness]:
    settings = event_settings(events_localnet.url, tmp_path_factory.mktemp("events"))
    clock = FakeClock(datetime.now(UTC))
    server = AgentStakingServer(settings, clock=clock)
    await server.start()
    rpc = AsyncClient(events_localnet.url, commitment=Confirmed)
    async with aiohttp.ClientSession() as http:
        found = EventsHarness(
            server=server,
            localnet=events_localnet,
            rpc=rpc,
            http=http,
            agent=None,  # type: ignore[arg-type]
            admin=None,  # type: ignore[arg-type]
            clock=clock,
        )
        found.agent = await found.caller()
        found.admin = await found.caller(scopes=("staking", "admin"))
        yield found
        for channel in found.channels:
            await channel.close()
    await server.stop(0)
    await rpc.close()


@pytest.fixture(autouse=True)
async def _delete_webhooks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """A test's webhooks go with it (their receivers stop with the test)."""
    yield
    if "harness" in request.fixturenames:
        harness: EventsHarness = request.getfixturevalue("harness")
        await harness.delete_webhooks()
