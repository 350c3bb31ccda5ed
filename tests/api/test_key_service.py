"""KeyService through gRPC on both key stores: lifecycle, persistence, replicas."""

from __future__ import annotations

import asyncio
import logging
import tempfile
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

NETWORK = staking_pb2.GetNetworkInfoRequest()


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
