"""Rate limits as agents see them: real servers, real stubs, the session localnet, Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentstaking.v1 import keys_pb2, staking_pb2, staking_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from service.keys import KeyPolicy, RateLimit
from tests.api._helpers import rich_details

from .conftest import REDIS_URL, SOL, RedisProcess, Running, StartServer, redis_namespace

NETWORK = staking_pb2.GetNetworkInfoRequest()
GRPCURL = Path(sys.executable).parent / "grpcurl"


def _headers(metadata: Any) -> dict[str, str]:
    return {k: v for k, v in (metadata or ()) if k.startswith("x-ratelimit-")}


async def _build(
    stub: staking_pb2_grpc.StakingServiceAsyncStub, wallet: str
) -> tuple[grpc.StatusCode, dict[str, str], grpc.aio.AioRpcError | None]:
    """Build for `wallet`: the code, the x-ratelimit-* metadata, the error if any."""
    call = stub.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(wallet=wallet, amount_lamports=SOL), timeout=10
    )
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), _headers(error.trailing_metadata()), error
    # With the status, as for refused calls: a unary call sends no initial metadata.
    assert _headers(await call.initial_metadata()) == {}
    return grpc.StatusCode.OK, _headers(await call.trailing_metadata()), None


def _wallet() -> str:
    return str(Keypair().pubkey())


def _retry_delay(error: grpc.aio.AioRpcError) -> float:
    return float(rich_details(error)["RetryInfo"].retry_delay.ToNanoseconds()) / 1e9


def _key_id(secret: str) -> str:
    return secret.split("_")[1]


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Settings of the memory limiter or of a Redis one (a namespace of the shared Redis)."""
    if request.param == "memory":
        yield {}
        return
    async with redis_namespace() as prefix:
        yield {"redis_url": REDIS_URL, "redis_key_prefix": prefix}


async def test_wallet_limit_tells_the_client_when_to_retry_and_waiting_is_enough(
    start_server: StartServer, backend: dict[str, Any]
) -> None:
    # Two builds at once per wallet, then one per second.
    running = await start_server(
        ratelimit_wallet_per_minute=60, ratelimit_wallet_burst=2, **backend
    )
    stub, wallet = running.staking(), _wallet()

    code, headers, _ = await _build(stub, wallet)
    assert code == grpc.StatusCode.OK
    # The wallet bucket is the most constraining one (the key has 1000 at once).
    assert headers == {
        "x-ratelimit-limit": "2",
        "x-ratelimit-remaining": "1",
        "x-ratelimit-reset": "1",
    }
    code, headers, _ = await _build(stub, wallet)
    assert (code, headers["x-ratelimit-remaining"]) == (grpc.StatusCode.OK, "0")
    assert headers["x-ratelimit-reset"] == "2"  # seconds until full, rounded up

    code, headers, error = await _build(stub, wallet)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and error is not None
    assert headers == {
        "x-ratelimit-limit": "2",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "2",
    }
    details = rich_details(error)
    info = details["ErrorInfo"]
    assert info.reason == "RATE_LIMITED" and info.domain == "agentstaking.v1"
    assert (info.metadata["dimension"], info.metadata["subject"]) == ("wallet", wallet)
    assert info.metadata["rpc_class"] == "builds"
    violation = details["QuotaFailure"].violations[0]
    assert violation.subject == f"wallet:{wallet}"
    delay = _retry_delay(error)
    assert 0 < delay <= 1.0

    # Another API key does not reset the wallet's limit; another wallet is not limited.
    other_key = running.staking(await running.new_key())
    code, _, error = await _build(other_key, wallet)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and error is not None
    assert rich_details(error)["QuotaFailure"].violations[0].subject == f"wallet:{wallet}"
    assert (await _build(stub, _wallet()))[0] == grpc.StatusCode.OK

    # A client that waits the delay it was told succeeds.
    code, _, error = await _build(stub, wallet)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and error is not None
    await asyncio.sleep(_retry_delay(error))
    code, headers, _ = await _build(stub, wallet)
    assert code == grpc.StatusCode.OK and headers["x-ratelimit-remaining"] == "0"


def _signed_transfer(payer: Keypair, lamports: int) -> bytes:
    ix = transfer(
        TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(), lamports=lamports)
    )
    message = MessageV0.try_compile(payer.pubkey(), [ix], [], Hash.default())
    return bytes(VersionedTransaction(message, [payer]))


def _grpcurl_sections(output: str) -> dict[str, dict[str, str]]:
    """``grpcurl -v`` output: its "Response headers" and "Response trailers" as dicts."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in output.splitlines():
        if line.startswith("Response ") and line.endswith("received:"):
            current = sections.setdefault(line.split()[1], {})
        elif not line.strip():
            current = None
        elif current is not None and ": " in line:
            key, _, value = line.partition(": ")
            current[key] = value
    return sections


async def test_grpcurl_sees_the_rate_limit_and_request_id_in_the_trailers(
    start_server: StartServer,
) -> None:
    # Two builds at once per wallet, the next one a minute later.
    running = await start_server(ratelimit_wallet_per_minute=1, ratelimit_wallet_burst=2)
    wallet = _wallet()

    async def build() -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [
                str(GRPCURL),
                "-v",
                "-plaintext",
                "-max-time",
                "20",
                "-H",
                f"authorization: Bearer {running.secret}",
                "-d",
                f'{{"wallet": "{wallet}", "amount_lamports": "{SOL}"}}',
                running.address,
                "agentstaking.v1.StakingService/BuildStakeTransaction",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    served = await build()
    assert served.returncode == 0, served.stderr
    sections = _grpcurl_sections(served.stdout)
    trailers = sections["trailers"]
    assert _headers(trailers.items()) == {
        "x-ratelimit-limit": "2",
        "x-ratelimit-remaining": "1",
        "x-ratelimit-reset": "60",
    }
    assert len(trailers["x-request-id"]) == 32
    # Nothing of ours in the headers: they went out with the status, in one send.
    assert "x-request-id" not in sections["headers"]
    await build()
    refused = await build()
    assert "ResourceExhausted" in refused.stdout + refused.stderr
    refused_trailers = _grpcurl_sections(refused.stdout + refused.stderr)["trailers"]
    assert refused_trailers["x-ratelimit-remaining"] == "0"
    assert len(refused_trailers["x-request-id"]) == 32


async def test_submits_count_against_the_fee_payer_of_the_signed_transaction(
    start_server: StartServer,
) -> None:
    running = await start_server(ratelimit_wallet_per_minute=1, ratelimit_wallet_burst=2)
    stub, payer = running.staking(), Keypair()

    async def submit(lamports: int) -> grpc.aio.AioRpcError:
        request = staking_pb2.SubmitTransactionRequest(
            transaction=_signed_transfer(payer, lamports)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # unknown blockhash: refused
            await stub.SubmitTransaction(request, timeout=10)
        return caught.value

    for lamports in (1, 2):  # different transactions, one fee payer
        assert (await submit(lamports)).code() != grpc.StatusCode.RESOURCE_EXHAUSTED
    refused = await submit(3)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = rich_details(refused)["ErrorInfo"]
    assert (info.metadata["dimension"], info.metadata["subject"]) == (
        "wallet",
        str(payer.pubkey()),
    )
    assert info.metadata["rpc_class"] == "submits"
    # Builds for that wallet have buckets of their own.
    assert (await _build(stub, str(payer.pubkey())))[0] == grpc.StatusCode.OK


async def test_api_key_limits_default_tier_key_policy_and_classes(
    start_server: StartServer,
) -> None:
    # Per key: 3 builds at once, no refill to speak of; wallets not limited here.
    running = await start_server(
        ratelimit_key_per_minute=1, ratelimit_key_burst=3, ratelimit_wallet_per_minute=0
    )
    default = running.staking()
    assert [(await _build(default, _wallet()))[0] for _ in range(3)] == [grpc.StatusCode.OK] * 3
    code, headers, error = await _build(default, _wallet())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and error is not None
    assert headers["x-ratelimit-limit"] == "3"
    info = rich_details(error)["ErrorInfo"]
    assert (info.metadata["dimension"], info.metadata["subject"]) == (
        "api_key",
        _key_id(running.secret),
    )
    # Reads have buckets of their own, three times as large.
    call = default.GetNetworkInfo(NETWORK)
    await call
    assert _headers(await call.trailing_metadata())["x-ratelimit-limit"] == "9"

    # A key's policy overrides the default, down or up.
    strict = running.staking(
        await running.new_key(KeyPolicy(rate_limit=RateLimit(requests_per_minute=1, burst=1)))
    )
    assert (await _build(strict, _wallet()))[0] == grpc.StatusCode.OK
    assert (await _build(strict, _wallet()))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    generous = running.staking(
        await running.new_key(KeyPolicy(rate_limit=RateLimit(requests_per_minute=600, burst=50)))
    )
    codes = [(await _build(generous, _wallet()))[0] for _ in range(5)]
    assert codes == [grpc.StatusCode.OK] * 5

    # KeyService is the admin class: 0.1 x the key tier, at least one call at once.
    admin = running.keys(await running.new_key(scopes=("admin",)))
    await admin.ListApiKeys(keys_pb2.ListApiKeysRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ListApiKeys(keys_pb2.ListApiKeysRequest())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rich_details(caught.value)["ErrorInfo"].metadata["rpc_class"] == "admin"


async def test_failed_authentication_is_limited_per_peer_whatever_the_headers_say(
    start_server: StartServer,
) -> None:
    # 3 failures at once per peer, then one per 2 s.
    running = await start_server(ratelimit_peer_per_minute=30, ratelimit_peer_burst=3)
    forged = f"ask_{'a' * 16}_{'b' * 43}"
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)

        async def network_info(*metadata: tuple[str, str]) -> grpc.aio.AioRpcError | None:
            try:
                await stub.GetNetworkInfo(NETWORK, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as error:
                return error
            return None

        # The open services are charged to the peer too (reads: 3 x 3 at once).
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for _ in reflection:
            break
        # A streaming response has them in its initial metadata too.
        assert _headers(await reflection.initial_metadata())["x-ratelimit-limit"] == "9"

        remaining = []
        for n in range(3):
            # Forwarding headers are never trusted: every call is the same peer.
            spoofed = (("x-forwarded-for", f"203.0.113.{n}"), ("x-real-ip", f"198.51.100.{n}"))
            error = await network_info(("x-api-key", forged), *spoofed)
            assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
            remaining.append(_headers(error.trailing_metadata())["x-ratelimit-remaining"])
        assert remaining == ["2", "1", "0"]

        # Out of budget: refused before any key is checked...
        for metadata in ((("x-api-key", forged),), ()):
            error = await network_info(*metadata)
            assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = rich_details(error)
            assert details["QuotaFailure"].violations[0].subject == "peer:127.0.0.1"
            assert details["ErrorInfo"].metadata["rpc_class"] == "auth_failures"
        # ... except a key whose id is known to exist: a valid key behind the same
        # address as the attacker keeps working.
        for _ in range(5):
            assert await network_info(("x-api-key", running.secret)) is None
        # With a wrong secret it counts as one more failure.
        wrong = running.secret[:-4] + "AAAA"
        error = await network_info(("x-api-key", wrong))
        assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Health checks are never limited.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        assert error is not None
        await asyncio.sleep(_retry_delay(error))
        assert await network_info(("x-api-key", running.secret)) is None


async def test_two_servers_sharing_redis_enforce_one_combined_limit(
    start_server: StartServer, redis_prefix: str
) -> None:
    shared = {
        "redis_url": REDIS_URL,
        "redis_key_prefix": redis_prefix,
        "ratelimit_wallet_per_minute": 1,
        "ratelimit_wallet_burst": 4,
    }
    first, second = await start_server(**shared), await start_server(**shared)
    one, two = first.staking(), second.staking()
    wallet = _wallet()
    codes = [(await _build(stub, wallet))[0] for stub in (one, two, one, two)]
    assert codes == [grpc.StatusCode.OK] * 4
    for stub in (one, two):
        code, headers, _ = await _build(stub, wallet)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and headers["x-ratelimit-limit"] == "4"


async def _until_shared(running: Running) -> None:
    """Calls until the server's limiter has gone back to Redis (bounded)."""
    assert running.server.limiter is not None
    stub = running.staking()
    for _ in range(100):
        await asyncio.sleep(0.1)
        await _build(stub, _wallet())
        if running.server.limiter.stats().shared_up:
            return
    raise AssertionError("the server never went back to Redis")


async def test_redis_stopped_mid_run_fail_open_then_shared_limits_resume(
    start_server: StartServer, own_redis: RedisProcess
) -> None:
    settings = {
        "redis_url": own_redis.url,
        "redis_recheck_seconds": 0.2,
        "ratelimit_wallet_per_minute": 1,
        "ratelimit_wallet_burst": 2,
    }
    first, second = await start_server(**settings), await start_server(**settings)
    one, two = first.staking(), second.staking()
    wallet = _wallet()
    assert [(await _build(s, wallet))[0] for s in (one, two, one)] == [
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ]

    await own_redis.stop()
    # Calls keep being served; each replica limits on its own meanwhile.
    wallet = _wallet()
    codes = [(await _build(one, wallet))[0] for _ in range(3)]
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert (await _build(two, wallet))[0] == grpc.StatusCode.OK
    assert first.server.limiter is not None
    stats = first.server.limiter.stats()
    assert not stats.shared_up and stats.outages == 1 and stats.local_decisions >= 3

    await own_redis.start()
    await _until_shared(first)
    await _until_shared(second)
    wallet = _wallet()
    assert [(await _build(s, wallet))[0] for s in (one, two, one, two)] == [
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ]


async def test_redis_stopped_mid_run_fail_closed_refuses_until_it_is_back(
    start_server: StartServer, own_redis: RedisProcess
) -> None:
    running = await start_server(
        redis_url=own_redis.url, redis_recheck_seconds=0.2, ratelimit_fail_closed=True
    )
    stub = running.staking()
    assert (await _build(stub, _wallet()))[0] == grpc.StatusCode.OK
    await own_redis.stop()
    code, _, error = await _build(stub, _wallet())
    assert code == grpc.StatusCode.UNAVAILABLE and error is not None
    assert rich_details(error)["ErrorInfo"].reason == "RATE_LIMITER_UNAVAILABLE"
    assert 0 < _retry_delay(error) <= 0.2
    await own_redis.start()
    for _ in range(100):
        await asyncio.sleep(0.1)
        if (await _build(stub, _wallet()))[0] == grpc.StatusCode.OK:
            break
    else:
        raise AssertionError("calls were never served again")
