"""KeyService through gRPC on both key stores: lifecycle, persistence, replicas."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable
from datetime import UTC, timedelta
from pathlib import Path

import grpc
import pytest
from agentstaking.v1 import keys_pb2, keys_pb2_grpc, staking_pb2, staking_pb2_grpc
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from service.config import Settings
from service.keys import KeyManager, open_store
from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests.conftest import Backend, FakeClock

from ._helpers import rich_details
from .conftest import Service

NETWORK = staking_pb2.GetNetworkInfoRequest()
WALLET = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"
PAST = timestamp_pb2.Timestamp(seconds=978_307_200)  # 2001-01-01


async def _server(
    localnet: LocalnetServer, database_url: str, clock: FakeClock, *, cache_ttl: float = 5.0
) -> AgentStakingServer:
    data_dir = Path(tempfile.mkdtemp(prefix="agent-staking-"))
    server = AgentStakingServer(
        Settings(
            listen="127.0.0.1:0",
            rpc_urls=[localnet.url],
            service_fee_bps=0,
            database_url=database_url,
            data_dir=data_dir,
            key_cache_ttl_seconds=cache_ttl,
            key_usage_flush_seconds=0.2,
            shutdown_grace_seconds=1,
        ),
        clock=clock,
    )
    await server.start()
    return server


async def _admin_secret(server: AgentStakingServer) -> str:
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="operator", scopes=["admin", "staking"])
    return secret


def _code_and_reason(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), str(rich_details(error)["ErrorInfo"].reason)


async def _network_info(address: str, secret: str) -> staking_pb2.GetNetworkInfoResponse:
    async with keyed_channel(address, secret) as channel:
        return await staking_pb2_grpc.StakingServiceStub(channel).GetNetworkInfo(NETWORK)


async def _rejected(address: str, secret: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _network_info(address, secret)
    return _code_and_reason(caught.value)


async def test_full_lifecycle(
    localnet: LocalnetServer, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    server = await _server(localnet, backend.url, clock)
    address = f"127.0.0.1:{server.port}"
    try:
        async with keyed_channel(address, await _admin_secret(server)) as admin:
            keys = keys_pb2_grpc.KeyServiceStub(admin)
            created = await keys.CreateApiKey(
                keys_pb2.CreateApiKeyRequest(
                    display_name="trading agent",
                    scopes=["staking"],
                    policy=keys_pb2.KeyPolicy(max_lamports_per_transaction=5_000_000_000),
                )
            )
            key, secret = created.api_key, created.secret
            assert secret.startswith(f"ask_{key.key_id}_")
            assert key.name == f"apiKeys/{key.key_id}"
            assert key.state == keys_pb2.ApiKey.STATE_ACTIVE
            assert key.rotate_time.ToDatetime(tzinfo=UTC) == clock.now + timedelta(days=30)

            # Use it; usage is counted (batched).
            for _ in range(3):
                await _network_info(address, secret)
            for _ in range(50):
                got = (await keys.GetApiKey(keys_pb2.GetApiKeyRequest(name=key.name))).api_key
                if got.request_count == 3:
                    break
                await asyncio.sleep(0.1)
            assert got.request_count == 3 and got.HasField("last_used_time")
            assert not hasattr(got, "secret")

            # List with pagination (page size 2 over 5 keys), and the state filter.
            for index in range(3):
                await keys.CreateApiKey(
                    keys_pb2.CreateApiKeyRequest(display_name=f"bulk {index}", scopes=["staking"])
                )
            seen: list[str] = []
            token = ""
            while True:
                page = await keys.ListApiKeys(
                    keys_pb2.ListApiKeysRequest(page_size=2, page_token=token)
                )
                assert len(page.api_keys) <= 2 and page.total_size == 5
                seen.extend(k.key_id for k in page.api_keys)
                token = page.next_page_token
                if not token:
                    break
            assert len(seen) == len(set(seen)) == 5
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await keys.ListApiKeys(keys_pb2.ListApiKeysRequest(page_token="garbage!"))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            # Update with a field mask: only the named fields change.
            updated = await keys.UpdateApiKey(
                keys_pb2.UpdateApiKeyRequest(
                    api_key=keys_pb2.ApiKey(
                        name=key.name,
                        display_name="renamed",
                        policy=keys_pb2.KeyPolicy(service_fee_bps=5),
                    ),
                    update_mask=field_mask_pb2.FieldMask(
                        paths=["display_name", "policy.service_fee_bps"]
                    ),
                )
            )
            assert updated.api_key.display_name == "renamed"
            assert updated.api_key.policy.service_fee_bps == 5
            assert updated.api_key.policy.max_lamports_per_transaction == 5_000_000_000
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await keys.UpdateApiKey(
                    keys_pb2.UpdateApiKeyRequest(
                        api_key=keys_pb2.ApiKey(name=key.name),
                        update_mask=field_mask_pb2.FieldMask(paths=["request_count"]),
                    )
                )
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            # Rotate: the old secret works inside the grace period, not after it.
            rotated = await keys.RotateApiKey(
                keys_pb2.RotateApiKeyRequest(
                    name=key.name, grace_period=duration_pb2.Duration(seconds=3600)
                )
            )
            new_secret = rotated.secret
            assert new_secret != secret
            await _network_info(address, secret)
            await _network_info(address, new_secret)
            clock.advance(timedelta(hours=1, seconds=1))
            assert await _rejected(address, secret) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "API_KEY_ROTATED",
            )
            await _network_info(address, new_secret)

            # Expire: an expire_time that passes.
            expiry = timestamp_pb2.Timestamp()
            expiry.FromDatetime(clock.now + timedelta(minutes=5))
            await keys.UpdateApiKey(
                keys_pb2.UpdateApiKeyRequest(
                    api_key=keys_pb2.ApiKey(name=key.name, expire_time=expiry),
                    update_mask=field_mask_pb2.FieldMask(paths=["expire_time"]),
                )
            )
            clock.advance(timedelta(minutes=6))
            assert await _rejected(address, new_secret) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "API_KEY_EXPIRED",
            )
            expired = await keys.ListApiKeys(
                keys_pb2.ListApiKeysRequest(state=keys_pb2.ApiKey.STATE_EXPIRED)
            )
            assert [k.key_id for k in expired.api_keys] == [key.key_id]

            # Revoke: every secret of the key stops.
            other = await keys.CreateApiKey(
                keys_pb2.CreateApiKeyRequest(display_name="to revoke", scopes=["staking"])
            )
            rotated_other = await keys.RotateApiKey(
                keys_pb2.RotateApiKeyRequest(name=other.api_key.name)
            )
            revoked = await keys.RevokeApiKey(keys_pb2.RevokeApiKeyRequest(name=other.api_key.name))
            assert revoked.api_key.state == keys_pb2.ApiKey.STATE_REVOKED
            for old in (other.secret, rotated_other.secret):
                assert await _rejected(address, old) == (
                    grpc.StatusCode.UNAUTHENTICATED,
                    "API_KEY_REVOKED",
                )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await keys.RotateApiKey(keys_pb2.RotateApiKeyRequest(name=other.api_key.name))
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await keys.GetApiKey(keys_pb2.GetApiKeyRequest(name="apiKeys/nosuchkey"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await keys.GetApiKey(keys_pb2.GetApiKeyRequest(name="keys/x"))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(0)
    # Secrets never reach the logs.
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for shown in (secret, new_secret, other.secret, rotated_other.secret):
        assert shown.split("_", 2)[2] not in logged


async def test_keys_survive_a_restart_and_secrets_are_not_stored(
    localnet: LocalnetServer, backend: Backend
) -> None:
    clock = FakeClock()
    server = await _server(localnet, backend.url, clock)
    assert server.keys is not None
    key, secret = await server.keys.create(display_name="durable", scopes=["staking"])
    await _network_info(f"127.0.0.1:{server.port}", secret)
    await server.stop(0)

    restarted = await _server(localnet, backend.url, clock)
    try:
        await _network_info(f"127.0.0.1:{restarted.port}", secret)
    finally:
        await restarted.stop(0)

    secret_part = secret.split("_", 2)[2]
    dump = repr(await backend.rows())
    if backend.sqlite_path is not None:
        dump += repr(backend.sqlite_path.read_bytes())
    assert key.key_id in dump
    assert secret_part not in dump and secret not in dump


async def test_revocation_reaches_another_replica_within_the_cache_bound(
    localnet: LocalnetServer, postgres_url: str
) -> None:
    url = postgres_url
    clock = FakeClock()
    ttl = 0.5
    first = await _server(localnet, url, clock, cache_ttl=ttl)
    second = await _server(localnet, url, clock, cache_ttl=ttl)
    try:
        assert first.keys is not None
        key, secret = await first.keys.create(display_name="shared", scopes=["staking"])
        # Both replicas have verified (and cached) the key.
        await _network_info(f"127.0.0.1:{first.port}", secret)
        await _network_info(f"127.0.0.1:{second.port}", secret)
        await first.keys.revoke(key.key_id)
        revoked_at = asyncio.get_running_loop().time()
        # Immediately on the replica that revoked it.
        assert (await _rejected(f"127.0.0.1:{first.port}", secret))[1] == "API_KEY_REVOKED"
        while True:
            try:
                await _network_info(f"127.0.0.1:{second.port}", secret)
            except grpc.aio.AioRpcError as error:
                assert _code_and_reason(error)[1] == "API_KEY_REVOKED"
                break
            assert asyncio.get_running_loop().time() - revoked_at < ttl + 2.0
            await asyncio.sleep(0.05)
    finally:
        await first.stop(0)
        await second.stop(0)


async def test_store_migrations_are_idempotent(backend: Backend) -> None:
    # Opening twice (a restart, or a second replica) applies nothing twice.
    first = KeyManager(await open_store(backend.url))
    second = KeyManager(await open_store(backend.url))
    key, _ = await first.create(display_name="once", scopes=["admin"])
    assert (await second.get(key.key_id)).display_name == "once"
    await first.stop()
    await second.stop()


async def _refusal(call: Awaitable[object]) -> tuple[str, list[tuple[str, str]]]:
    """The ErrorInfo reason and the BadRequest (field, reason) pairs of an INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value
    details = rich_details(caught.value)
    violations = details["BadRequest"].field_violations
    return str(details["ErrorInfo"].reason), [(v.field, v.reason) for v in violations]


async def _new_key(service: Service) -> keys_pb2.ApiKey:
    created = await service.keys.CreateApiKey(
        keys_pb2.CreateApiKeyRequest(display_name="to update", scopes=["staking"])
    )
    return created.api_key


async def test_allowed_methods_must_be_staking_service_rpcs(service: Service) -> None:
    typo = keys_pb2.KeyPolicy(allowed_methods=["BuildStakeTransactoin"])
    assert await _refusal(
        service.keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(display_name="typo", scopes=["staking"], policy=typo)
        )
    ) == ("INVALID_KEY_POLICY", [("policy.allowed_methods", "INVALID_KEY_POLICY")])
    key = await _new_key(service)
    for mask in ("policy", "policy.allowed_methods"):
        assert await _refusal(
            service.keys.UpdateApiKey(
                keys_pb2.UpdateApiKeyRequest(
                    api_key=keys_pb2.ApiKey(name=key.name, policy=typo),
                    update_mask=field_mask_pb2.FieldMask(paths=[mask]),
                )
            )
        ) == ("INVALID_KEY_POLICY", [("api_key.policy.allowed_methods", "INVALID_KEY_POLICY")])
    # Every RPC of the service definition is a name the policy accepts.
    every = sorted(staking_pb2.DESCRIPTOR.services_by_name["StakingService"].methods_by_name)
    created = await service.keys.CreateApiKey(
        keys_pb2.CreateApiKeyRequest(
            display_name="all methods",
            scopes=["staking"],
            policy=keys_pb2.KeyPolicy(allowed_methods=every),
        )
    )
    assert sorted(created.api_key.policy.allowed_methods) == every


async def test_create_names_every_invalid_field(service: Service) -> None:
    assert await _refusal(
        service.keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(display_name="", scopes=["root"], expire_time=PAST)
        )
    ) == (
        "INVALID_FIELDS",
        [
            ("display_name", "INVALID_DISPLAY_NAME"),
            ("scopes", "INVALID_SCOPE"),
            ("expire_time", "INVALID_EXPIRE_TIME"),
        ],
    )
    assert await _refusal(
        service.keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(
                display_name="",
                scopes=["staking"],
                policy=keys_pb2.KeyPolicy(
                    allowed_wallets=["not-an-address"],
                    allowed_vote_accounts=["nor-this"],
                    allowed_methods=["NoSuchRpc"],
                ),
                expire_time=timestamp_pb2.Timestamp(seconds=2**62),
            )
        )
    ) == (
        "INVALID_FIELDS",
        [
            ("policy.allowed_methods", "INVALID_KEY_POLICY"),
            ("policy.allowed_vote_accounts[0]", "INVALID_ADDRESS"),
            ("policy.allowed_wallets[0]", "INVALID_ADDRESS"),
            ("expire_time", "INVALID_TIMESTAMP"),
            ("display_name", "INVALID_DISPLAY_NAME"),
        ],
    )


@pytest.mark.parametrize(
    ("api_key", "path", "field", "reason"),
    [
        (keys_pb2.ApiKey(display_name=""), "display_name", "display_name", "INVALID_DISPLAY_NAME"),
        (keys_pb2.ApiKey(expire_time=PAST), "expire_time", "expire_time", "INVALID_EXPIRE_TIME"),
        (keys_pb2.ApiKey(scopes=["root"]), "scopes", "scopes", "INVALID_SCOPE"),
        (
            keys_pb2.ApiKey(policy=keys_pb2.KeyPolicy(allowed_wallets=["x"])),
            "policy.allowed_wallets",
            "policy.allowed_wallets[0]",
            "INVALID_ADDRESS",
        ),
        (
            keys_pb2.ApiKey(policy=keys_pb2.KeyPolicy(service_fee_bps=10_001)),
            "policy",
            "policy.service_fee_bps",
            "INVALID_KEY_POLICY",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_update_names_fields_relative_to_the_request(
    service: Service, api_key: keys_pb2.ApiKey, path: str, field: str, reason: str
) -> None:
    key = await _new_key(service)
    api_key.name = key.name
    assert await _refusal(
        service.keys.UpdateApiKey(
            keys_pb2.UpdateApiKeyRequest(
                api_key=api_key, update_mask=field_mask_pb2.FieldMask(paths=[path])
            )
        )
    ) == (reason, [(f"api_key.{field}", reason)])


async def test_update_names_every_invalid_field_before_looking_up_the_key(
    service: Service,
) -> None:
    update = keys_pb2.UpdateApiKeyRequest(
        api_key=keys_pb2.ApiKey(
            display_name="",
            scopes=["root"],
            expire_time=PAST,
            policy=keys_pb2.KeyPolicy(
                allowed_wallets=["x"], allowed_vote_accounts=[WALLET, "y"], service_fee_bps=1
            ),
        ),
        update_mask=field_mask_pb2.FieldMask(
            paths=[
                "display_name",
                "scopes",
                "expire_time",
                "policy.allowed_wallets",
                "policy.allowed_vote_accounts",
            ]
        ),
    )
    expected = (
        "INVALID_FIELDS",
        [
            ("api_key.policy.allowed_vote_accounts[1]", "INVALID_ADDRESS"),
            ("api_key.policy.allowed_wallets[0]", "INVALID_ADDRESS"),
            ("api_key.display_name", "INVALID_DISPLAY_NAME"),
            ("api_key.scopes", "INVALID_SCOPE"),
            ("api_key.expire_time", "INVALID_EXPIRE_TIME"),
        ],
    )
    update.api_key.name = (await _new_key(service)).name
    assert await _refusal(service.keys.UpdateApiKey(update)) == expected
    # A key that does not exist: the fields are reported first (no read).
    update.api_key.name = "apiKeys/0000000000000000"
    assert await _refusal(service.keys.UpdateApiKey(update)) == expected


async def test_a_policy_field_update_keeps_the_other_fields(service: Service) -> None:
    created = await service.keys.CreateApiKey(
        keys_pb2.CreateApiKeyRequest(
            display_name="partial",
            scopes=["staking"],
            policy=keys_pb2.KeyPolicy(allowed_wallets=[WALLET], max_lamports_per_transaction=7),
        )
    )
    # Fields the mask does not select are neither validated nor applied.
    updated = await service.keys.UpdateApiKey(
        keys_pb2.UpdateApiKeyRequest(
            api_key=keys_pb2.ApiKey(
                name=created.api_key.name,
                policy=keys_pb2.KeyPolicy(
                    allowed_methods=["GetNetworkInfo"], allowed_wallets=["not-an-address"]
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["policy.allowed_methods"]),
        )
    )
    assert updated.api_key.policy == keys_pb2.KeyPolicy(
        allowed_wallets=[WALLET], max_lamports_per_transaction=7, allowed_methods=["GetNetworkInfo"]
    )


async def test_rotate_and_list_name_every_invalid_field(service: Service) -> None:
    assert await _refusal(
        service.keys.RotateApiKey(
            keys_pb2.RotateApiKeyRequest(
                name="keys/x", grace_period=duration_pb2.Duration(seconds=31 * 86_400)
            )
        )
    ) == (
        "INVALID_FIELDS",
        [("name", "INVALID_ARGUMENT"), ("grace_period", "INVALID_GRACE_PERIOD")],
    )
    assert await _refusal(
        service.keys.ListApiKeys(
            keys_pb2.ListApiKeysRequest(page_size=-1, page_token="garbage!", state=99)  # type: ignore[arg-type]
        )
    ) == (
        "INVALID_FIELDS",
        [("state", "INVALID_ARGUMENT"), ("page_size", "INVALID_PAGE_SIZE")],
    )
    assert await _refusal(
        service.keys.ListApiKeys(keys_pb2.ListApiKeysRequest(page_size=-1, page_token="garbage!"))
    ) == (
        "INVALID_FIELDS",
        [("page_size", "INVALID_PAGE_SIZE"), ("page_token", "INVALID_PAGE_TOKEN")],
    )
