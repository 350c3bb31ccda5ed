"""Webhook URLs cannot reach the service's own network: checked when a webhook is made
or changed, and again at connect time on the address actually connected to (a name
that resolved to a public address at creation and to a private one later, DNS
rebinding, is still refused)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentstaking.v1 import events_pb2, events_pb2_grpc
from aiohttp.abc import AbstractResolver, ResolveResult
from google.protobuf import field_mask_pb2
from solders.keypair import Keypair

from service.api import event_json
from service.config import Settings
from service.events import (
    AddressPolicy,
    Deliverer,
    DeliveryConfig,
    EventStore,
    EventType,
    InvalidWebhookUrlError,
    NewEvent,
    Webhook,
    WebhookState,
    WebhookTestPayload,
    WebhookUrlForbiddenError,
    forbidden_reason,
)
from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from service.store import Database, open_database
from tests._grpc_auth import keyed_channel
from tests._wait import until
from tests.api._helpers import rich_details

from .conftest import Receiver

FORBIDDEN = [
    "127.0.0.1",
    "127.255.0.9",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.10",
    "169.254.169.254",
    "169.254.10.10",
    "fd00:ec2::254",
    "fe80::1",
    "fc00::1",
    "100.64.0.1",
    "100.100.100.200",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "192.0.2.1",
    "240.0.0.1",
]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address), allow_private=False) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address), allow_private=False) is None


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "fd00:ec2::254", "224.0.0.1", "0.0.0.0", "::ffff:169.254.169.254"],
)
def test_metadata_multicast_and_unspecified_stay_refused_when_private_is_allowed(
    address: str,
) -> None:
    assert forbidden_reason(ipaddress.ip_address(address), allow_private=True) is not None
    assert forbidden_reason(ipaddress.ip_address("10.0.0.7"), allow_private=True) is None


def _resolving(*addresses: str) -> Any:
    async def resolve(host: str, port: int) -> Sequence[str]:
        return addresses

    return resolve


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("https://127.0.0.1/hook", WebhookUrlForbiddenError),
        ("https://[::1]:8443/hook", WebhookUrlForbiddenError),
        ("https://169.254.169.254/latest/meta-data/", WebhookUrlForbiddenError),
        ("https://10.0.0.5/hook", WebhookUrlForbiddenError),
        ("http://93.184.216.34/hook", WebhookUrlForbiddenError),  # http: public is not enough
        ("https://user:password@93.184.216.34/hook", InvalidWebhookUrlError),
        ("ftp://93.184.216.34/hook", InvalidWebhookUrlError),
        ("not a url", InvalidWebhookUrlError),
        ("https:///hook", InvalidWebhookUrlError),
        ("https://93.184.216.34:99999/hook", InvalidWebhookUrlError),
        ("https://" + "a" * 2100 + ".example/", InvalidWebhookUrlError),
        ("", InvalidWebhookUrlError),
    ],
)
async def test_url_checks(url: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        await AddressPolicy().check_url(url, resolve=_resolving("93.184.216.34"))


async def test_a_name_is_refused_if_any_of_its_addresses_is() -> None:
    policy = AddressPolicy()
    url = "https://hooks.example/in"
    assert await policy.check_url(url, resolve=_resolving("93.184.216.34")) == url
    with pytest.raises(WebhookUrlForbiddenError, match="a private address"):
        await policy.check_url(url, resolve=_resolving("93.184.216.34", "10.0.0.1"))
    with pytest.raises(InvalidWebhookUrlError, match="does not resolve"):
        await policy.check_url(url, resolve=_resolving())
    # Allowed privately (tests, private deployments): loopback and http pass.
    private = AddressPolicy(allow_private=True)
    assert await private.check_url("http://127.0.0.1:1/x", resolve=_resolving()) is not None


def test_the_connect_time_factory_refuses_before_connecting() -> None:
    policy = AddressPolicy()
    info = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))
    with pytest.raises(OSError, match=r"refused to connect to 127\.0\.0\.1"):
        policy.socket_factory(info)
    sock = AddressPolicy(allow_private=True).socket_factory(info)
    sock.close()


# --- through the API ------------------------------------------------------------------


@pytest.fixture(scope="module")
async def strict(
    localnet: LocalnetServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[events_pb2_grpc.EventServiceAsyncStub]:
    """A server as deployed: webhooks only to public https endpoints."""
    tmp = tmp_path_factory.mktemp("strict")
    server = AgentStakingServer(
        Settings(
            listen="127.0.0.1:0",
            rpc_urls=[localnet.url],
            service_fee_bps=0,
            metrics_listen="off",
            data_dir=tmp,
            database_url=f"sqlite:///{tmp / 'keys.db'}",
        )
    )
    await server.start()
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="agent", scopes=["staking"])
    async with keyed_channel(f"127.0.0.1:{server.port}", secret) as channel:
        yield events_pb2_grpc.EventServiceStub(channel)
    await server.stop(0)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "WEBHOOK_URL_FORBIDDEN"),
        ("https://localhost:8443/hook", "WEBHOOK_URL_FORBIDDEN"),
        ("https://169.254.169.254/latest/meta-data/iam/", "WEBHOOK_URL_FORBIDDEN"),
        ("https://[fd00:ec2::254]/", "WEBHOOK_URL_FORBIDDEN"),
        ("https://192.168.0.1/", "WEBHOOK_URL_FORBIDDEN"),
        ("http://93.184.216.34/hook", "WEBHOOK_URL_FORBIDDEN"),
        ("https://u:p@93.184.216.34/", "INVALID_WEBHOOK_URL"),
        ("gopher://93.184.216.34/", "INVALID_WEBHOOK_URL"),
    ],
)
async def test_an_ssrf_url_is_refused(
    strict: events_pb2_grpc.EventServiceAsyncStub, url: str, reason: str
) -> None:
    wallet = str(Keypair().pubkey())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await strict.CreateWebhook(
            events_pb2.CreateWebhookRequest(webhook=events_pb2.Webhook(url=url, wallets=[wallet]))
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = rich_details(raised.value)
    assert details["ErrorInfo"].reason == reason
    assert details["BadRequest"].field_violations[0].field == "webhook.url"


async def test_a_public_url_is_accepted_and_cannot_be_changed_to_a_private_one(
    strict: events_pb2_grpc.EventServiceAsyncStub,
) -> None:
    created = await strict.CreateWebhook(
        events_pb2.CreateWebhookRequest(
            webhook=events_pb2.Webhook(
                url="https://93.184.216.34/hook", wallets=[str(Keypair().pubkey())]
            )
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await strict.UpdateWebhook(
            events_pb2.UpdateWebhookRequest(
                webhook=events_pb2.Webhook(name=created.webhook.name, url="https://10.0.0.1/hook"),
                update_mask=field_mask_pb2.FieldMask(paths=["url"]),
            )
        )
    assert rich_details(raised.value)["ErrorInfo"].reason == "WEBHOOK_URL_FORBIDDEN"
    await strict.DeleteWebhook(events_pb2.DeleteWebhookRequest(name=created.webhook.name))


# --- at connect time -------------------------------------------------------------------


class Rebinding(AbstractResolver):
    """A DNS answer that changed since the webhook was checked: now loopback."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    opened = await open_database(f"sqlite:///{tmp_path / 'events.db'}")
    yield opened
    await opened.close()


async def _deliver_once(database: Database, receiver: Receiver, policy: AddressPolicy) -> list[Any]:
    """One test event to a webhook at ``rebind.example`` (which now resolves to the
    receiver on loopback), through a deliverer with ``policy``; its attempts."""
    store = EventStore(database)
    webhook = Webhook(
        webhook_id=f"{len(receiver.requests):021x}",
        key_id="k",
        url=f"http://rebind.example:{receiver.port}/hook",
        description="",
        event_types=(),
        wallets=(),
        all_wallets=False,
        state=WebhookState.ENABLED,
        disabled_reason="",
        create_time=0.0,
        update_time=0.0,
    )
    # Written as if the URL had passed the check when it resolved to a public address.
    assert await store.create_webhook(webhook, "whsec_" + "A" * 44, max_per_key=9, epoch=None)
    event = await store.send_test(
        webhook,
        NewEvent(
            type=EventType.WEBHOOK_TEST,
            payload=WebhookTestPayload(webhook_id=webhook.webhook_id, message="m"),
            occurred_time=0.0,
            key_id="k",
            webhook_id=webhook.webhook_id,
        ),
    )
    assert event is not None

    async def allowed(_: Webhook, __: Any) -> str | None:
        return None

    resolver = Rebinding()
    deliverer = Deliverer(
        store,
        policy=policy,
        render=event_json,
        access=allowed,
        config=DeliveryConfig(timeout=2.0, lease=5.0, poll_interval=0.05, retry_schedule=(60.0,)),
        owner="test",
        resolver=resolver,
    )
    await deliverer.start()
    try:

        async def attempted() -> bool:
            found = await store.list_deliveries(
                webhook.webhook_id, state=None, before=None, limit=1
            )
            return bool(found) and found[0].attempt_count == 1

        await until(attempted, what="one attempt")
    finally:
        await deliverer.stop()
    assert resolver.asked == ["rebind.example"]
    [delivery] = await store.list_deliveries(webhook.webhook_id, state=None, before=None, limit=1)
    return list(delivery.attempts)


async def test_dns_rebinding_to_a_private_address_is_refused_at_connect_time(
    database: Database, receiver: Receiver
) -> None:
    [attempt] = await _deliver_once(database, receiver, AddressPolicy())
    assert not attempt.succeeded and attempt.response_code == 0
    assert "forbidden address" in attempt.error
    assert receiver.requests == []


async def test_the_same_delivery_arrives_where_private_addresses_are_allowed(
    database: Database, receiver: Receiver
) -> None:
    """The check above can fail: with private delivery allowed, it connects."""
    [attempt] = await _deliver_once(database, receiver, AddressPolicy(allow_private=True))
    assert attempt.succeeded and attempt.response_code == 204
    assert len(receiver.requests) == 1
