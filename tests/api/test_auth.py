"""Every StakingService call needs an API key; every way of failing has its reason."""

from __future__ import annotations

import asyncio
import string
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from agentstaking.v1 import keys_pb2, keys_pb2_grpc, staking_pb2, staking_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders.keypair import Keypair

from service.keys import KeyPolicy
from service.localnet import LocalnetServer
from tests._grpc_auth import keyed_channel

from ._helpers import rich_details
from .conftest import SOL, Service

NETWORK = staking_pb2.GetNetworkInfoRequest()


async def _network_info_error(
    service: Service, metadata: tuple[tuple[str, str], ...]
) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetNetworkInfo(NETWORK, metadata=metadata)
    return caught.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    """The refusal's reason; every refusal of a key also says what to do about it."""
    info = rich_details(error)["ErrorInfo"]
    assert info.metadata["hint"], info
    return str(info.reason)


async def test_missing_and_malformed_keys(service: Service) -> None:
    cases = {
        "API_KEY_MISSING": (),
        "API_KEY_MALFORMED": (("authorization", "Bearer not-a-key"),),
        "API_KEY_MALFORMED ": (("authorization", "Basic dXNlcjpwYXNz"),),
        "API_KEY_MALFORMED  ": (("x-api-key", "ask_"),),
    }
    for reason, metadata in cases.items():
        error = await _network_info_error(service, metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert _reason(error) == reason.strip(), metadata


async def test_unknown_key(service: Service) -> None:
    real = service.staking_secret
    prefix, key_id, secret = real.split("_", 2)
    forged = f"{prefix}_{key_id}_{secret[::-1]}"  # right key id, wrong secret
    for token in (forged, f"{prefix}_{'a' * len(key_id)}_{secret}"):
        error = await _network_info_error(service, (("authorization", f"Bearer {token}"),))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _reason(error) == "API_KEY_UNKNOWN"


async def test_x_api_key_header_and_open_services(service: Service) -> None:
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        info = await stub.GetNetworkInfo(NETWORK, metadata=(("x-api-key", service.staking_secret),))
        assert info.minimum_delegation_lamports == SOL
        # Health (and reflection, see test_server) need no key.
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_revoked_expired_and_rotated_keys(service: Service) -> None:
    assert service.server.keys is not None
    keys = service.server.keys
    revoked, revoked_secret = await keys.create(display_name="gone", scopes=["staking"])
    await keys.revoke(revoked.key_id)
    error = await _network_info_error(service, (("x-api-key", revoked_secret),))
    assert (error.code(), _reason(error)) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_REVOKED")

    soon = datetime.now(UTC) + timedelta(seconds=1)
    _, expiring_secret = await keys.create(
        display_name="brief", scopes=["staking"], expire_time=soon
    )
    await asyncio.sleep(1.2)
    error = await _network_info_error(service, (("x-api-key", expiring_secret),))
    assert (error.code(), _reason(error)) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_EXPIRED")

    rotated, old_secret = await keys.create(display_name="rotating", scopes=["staking"])
    _, new_secret = await keys.rotate(rotated.key_id, grace_period=timedelta(0))
    error = await _network_info_error(service, (("x-api-key", old_secret),))
    assert (error.code(), _reason(error)) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_ROTATED")
    async with keyed_channel(service.address, new_secret) as channel:
        await staking_pb2_grpc.StakingServiceStub(channel).GetNetworkInfo(NETWORK)


async def test_scopes(service: Service) -> None:
    # An admin-only key cannot stake; a staking key cannot administer.
    assert service.server.keys is not None
    _, admin_only = await service.server.keys.create(display_name="ops", scopes=["admin"])
    async with keyed_channel(service.address, admin_only) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await staking_pb2_grpc.StakingServiceStub(channel).GetNetworkInfo(NETWORK)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(caught.value) == "API_KEY_SCOPE_MISSING"

    staking_keys = keys_pb2_grpc.KeyServiceStub(service.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await staking_keys.ListApiKeys(keys_pb2.ListApiKeysRequest())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await staking_keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(display_name="x", scopes=["admin"])
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_key_reads_and_rotates_itself_only(service: Service) -> None:
    assert service.server.keys is not None
    mine, secret = await service.server.keys.create(display_name="self", scopes=["staking"])
    other, _ = await service.server.keys.create(display_name="other", scopes=["staking"])
    async with keyed_channel(service.address, secret) as channel:
        stub = keys_pb2_grpc.KeyServiceStub(channel)
        got = await stub.GetApiKey(keys_pb2.GetApiKeyRequest(name=mine.name))
        assert got.api_key.key_id == mine.key_id
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetApiKey(keys_pb2.GetApiKeyRequest(name=other.name))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        rotated = await stub.RotateApiKey(keys_pb2.RotateApiKeyRequest(name=mine.name))
        assert rotated.secret and rotated.secret != secret
    # The old secret still works inside the default 24 h grace period.
    async with keyed_channel(service.address, secret) as channel:
        await staking_pb2_grpc.StakingServiceStub(channel).GetNetworkInfo(NETWORK)


PRINTABLE = st.text(alphabet=string.printable.strip("\t\n\r\x0b\x0c"), max_size=120)


async def test_garbage_metadata_is_only_ever_unauthenticated(service: Service) -> None:
    """Random header values never produce anything but UNAUTHENTICATED."""

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        header=st.sampled_from(["authorization", "x-api-key"]),
        value=PRINTABLE,
        prefix=st.booleans(),
    )
    def check(header: str, value: str, prefix: bool) -> None:
        if prefix:
            value = "ask_" + value
        if header == "authorization" and value.strip() and not value.startswith("Bearer"):
            value = "Bearer " + value
        with grpc.insecure_channel(service.address) as channel:
            stub = staking_pb2_grpc.StakingServiceStub(channel)
            try:
                stub.GetNetworkInfo(NETWORK, metadata=((header, value),), timeout=10)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (value, error)
            else:
                raise AssertionError(f"{value!r} was accepted")

    # The blocking client runs in a thread so the server keeps serving on this loop.
    await asyncio.to_thread(check)


async def test_policy_is_enforced(service: Service, localnet: LocalnetServer) -> None:
    assert service.server.keys is not None
    allowed_wallet = Keypair()
    await service.rpc.request_airdrop(allowed_wallet.pubkey(), 10 * SOL)
    _, secret = await service.server.keys.create(
        display_name="limited",
        scopes=["staking"],
        policy=KeyPolicy(
            max_lamports_per_transaction=2 * SOL,
            allowed_vote_accounts=(service.vote_account,),
            allowed_wallets=(str(allowed_wallet.pubkey()),),
            service_fee_bps=50,
            allowed_methods=("BuildStakeTransaction", "GetNetworkInfo"),
        ),
    )
    other_vote = str(localnet.chain.validators[1].vote_account)
    async with keyed_channel(service.address, secret) as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        wallet = str(allowed_wallet.pubkey())

        async def violation(request: staking_pb2.BuildStakeTransactionRequest) -> str:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.BuildStakeTransaction(request)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            return _reason(caught.value)

        assert (
            await violation(
                staking_pb2.BuildStakeTransactionRequest(wallet=wallet, amount_lamports=3 * SOL)
            )
            == "POLICY_MAX_LAMPORTS_EXCEEDED"
        )
        assert (
            await violation(
                staking_pb2.BuildStakeTransactionRequest(
                    wallet=str(Keypair().pubkey()), amount_lamports=SOL
                )
            )
            == "POLICY_WALLET_NOT_ALLOWED"
        )
        assert (
            await violation(
                staking_pb2.BuildStakeTransactionRequest(
                    wallet=wallet,
                    amount_lamports=SOL,
                    vote_account=other_vote,
                )
            )
            == "POLICY_VOTE_ACCOUNT_NOT_ALLOWED"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListStakeAccounts(staking_pb2.ListStakeAccountsRequest(wallet=wallet))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _reason(caught.value) == "API_KEY_METHOD_NOT_ALLOWED"

        # Within the policy: built, with the key's own fee.
        built = await stub.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(wallet=wallet, amount_lamports=2 * SOL)
        )
        assert built.transaction.fees.service_fee_bps == 50
        assert built.transaction.fees.service_fee_lamports == 2 * SOL * 50 // 10_000
        info = await stub.GetNetworkInfo(NETWORK)
        assert info.fee_policy.service_fee_bps == 50
        # allowed_methods names StakingService RPCs: the key still reads itself.
        key_id = secret.split("_")[1]
        own = await keys_pb2_grpc.KeyServiceStub(channel).GetApiKey(
            keys_pb2.GetApiKeyRequest(name=f"apiKeys/{key_id}")
        )
        assert own.api_key.policy.allowed_methods


async def test_two_keys_in_one_call_are_refused_as_ambiguous(service: Service) -> None:
    staking, admin = service.staking_secret, service.admin_secret
    ambiguous = [
        (("authorization", f"Bearer {staking}"), ("x-api-key", admin)),
        (("authorization", f"Bearer {admin}"), ("x-api-key", staking)),
        (("authorization", f"Bearer {staking}"), ("authorization", f"Bearer {admin}")),
        (("authorization", f"Bearer {staking}"), ("authorization", f"Bearer {staking}")),
        (("x-api-key", staking), ("x-api-key", admin)),
    ]
    for metadata in ambiguous:
        error = await _network_info_error(service, metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert _reason(error) == "API_KEY_AMBIGUOUS", metadata
    # The same key under both names is one key.
    async with grpc.aio.insecure_channel(service.address) as channel:
        info = await staking_pb2_grpc.StakingServiceStub(channel).GetNetworkInfo(
            NETWORK, metadata=(("authorization", f"Bearer {staking}"), ("x-api-key", staking))
        )
    assert info.minimum_delegation_lamports == SOL
