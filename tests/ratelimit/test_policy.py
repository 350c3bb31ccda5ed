"""Which buckets a call is charged to, and what the answer says: no server needed."""

from __future__ import annotations

import pytest
from agentstaking.v1 import staking_pb2
from google.rpc import code_pb2, error_details_pb2
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from service.api import status_for
from service.config import Settings
from service.interceptors import peer_address, wallet_of
from service.ratelimit import (
    Decision,
    Dimension,
    Limit,
    MemoryBackend,
    RateLimitPolicy,
    RpcClass,
    Subject,
    Tier,
    Verdict,
    classify,
    open_limiter,
)

POLICY = RateLimitPolicy(key=Tier(600, 100), wallet=Tier(10, 10), peer=Tier(60, 30))


@pytest.mark.parametrize(
    ("method", "admin", "expected"),
    [
        ("BuildStakeTransaction", False, RpcClass.BUILDS),
        ("BuildUnstakeTransaction", False, RpcClass.BUILDS),
        ("BuildWithdrawTransaction", False, RpcClass.BUILDS),
        ("BuildMergeTransaction", False, RpcClass.BUILDS),
        ("SubmitTransaction", False, RpcClass.SUBMITS),
        ("GetTransactionStatus", False, RpcClass.READS),
        ("WatchTransaction", False, RpcClass.READS),
        ("ListStakeAccounts", False, RpcClass.READS),
        ("ListValidators", False, RpcClass.READS),
        ("GetNetworkInfo", False, RpcClass.READS),
        ("ServerReflectionInfo", False, RpcClass.READS),
        ("WatchEvents", False, RpcClass.READS),
        ("ListWebhookDeliveries", False, RpcClass.READS),
        ("CreateWebhook", False, RpcClass.SUBMITS),
        ("UpdateWebhook", False, RpcClass.SUBMITS),
        ("RotateWebhookSecret", False, RpcClass.SUBMITS),
        ("SendTestEvent", False, RpcClass.SUBMITS),
        ("CreateApiKey", True, RpcClass.ADMIN),
        ("GetApiKey", True, RpcClass.ADMIN),
    ],
)
def test_rpc_classes(method: str, admin: bool, expected: RpcClass) -> None:
    assert classify(method, admin=admin) is expected


def test_class_factors_scale_rate_and_burst() -> None:
    builds = POLICY.limit(Dimension.WALLET, RpcClass.BUILDS)
    reads = POLICY.limit(Dimension.WALLET, RpcClass.READS)
    admin = POLICY.limit(Dimension.KEY, RpcClass.ADMIN)
    assert builds == Limit(per_minute=10, burst=10)
    assert reads == Limit(per_minute=30, burst=30)  # the predecessor's reads at 3x
    assert admin == Limit(per_minute=60, burst=10)
    failures = POLICY.limit(Dimension.PEER, RpcClass.AUTH_FAILURES)
    assert failures == Limit(per_minute=60, burst=30)  # never scaled


def test_a_key_policy_overrides_either_number_and_zero_means_the_default() -> None:
    both = POLICY.limit(Dimension.KEY, RpcClass.BUILDS, per_minute=30, burst=5)
    assert both == Limit(per_minute=30, burst=5)
    rate_only = POLICY.limit(Dimension.KEY, RpcClass.BUILDS, per_minute=30)
    assert rate_only == Limit(per_minute=30, burst=100)
    assert POLICY.limit(Dimension.KEY, RpcClass.BUILDS) == Limit(per_minute=600, burst=100)


def test_a_zero_rate_turns_a_dimension_off_and_a_zero_burst_follows_the_rate() -> None:
    policy = RateLimitPolicy(key=Tier(0, 0), wallet=Tier(20, 0), peer=Tier(60, 30))
    assert policy.limit(Dimension.KEY, RpcClass.BUILDS) is None
    assert policy.limit(Dimension.KEY, RpcClass.BUILDS, per_minute=5) == Limit(
        per_minute=5, burst=5
    )
    assert policy.limit(Dimension.WALLET, RpcClass.BUILDS) == Limit(per_minute=20, burst=20)
    with pytest.raises(ValueError):
        Tier(-1, 0)


def test_defaults_from_settings() -> None:
    settings = Settings()
    assert (settings.ratelimit_wallet_per_minute, settings.ratelimit_wallet_burst) == (10, 10)
    limiter = open_limiter(settings)
    assert isinstance(limiter.backend, MemoryBackend)
    policy = limiter.policy
    assert policy.limit(Dimension.WALLET, RpcClass.BUILDS) == Limit(per_minute=10, burst=10)
    assert policy.limit(Dimension.WALLET, RpcClass.SUBMITS) == Limit(per_minute=10, burst=10)
    assert policy.limit(Dimension.WALLET, RpcClass.READS) == Limit(per_minute=30, burst=30)
    assert policy.limit(Dimension.KEY, RpcClass.BUILDS) == Limit(per_minute=6000, burst=1000)
    assert policy.limit(Dimension.PEER, RpcClass.AUTH_FAILURES) == Limit(per_minute=600, burst=300)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_STAKING_RATELIMIT_WALLET_PER_MINUTE", "4")
    monkeypatch.setenv("AGENT_STAKING_RATELIMIT_WALLET_BURST", "2")
    monkeypatch.setenv("AGENT_STAKING_RATELIMIT_KEY_PER_MINUTE", "120")
    monkeypatch.setenv("AGENT_STAKING_RATELIMIT_PEER_BURST", "7")
    monkeypatch.setenv("AGENT_STAKING_RATELIMIT_READS_FACTOR", "2")
    policy = open_limiter(Settings()).policy
    assert policy.limit(Dimension.WALLET, RpcClass.BUILDS) == Limit(per_minute=4, burst=2)
    assert policy.limit(Dimension.WALLET, RpcClass.READS) == Limit(per_minute=8, burst=4)
    assert policy.limit(Dimension.KEY, RpcClass.BUILDS) == Limit(per_minute=120, burst=1000)
    assert policy.limit(Dimension.PEER, RpcClass.AUTH_FAILURES) == Limit(per_minute=600, burst=7)


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:54321", "127.0.0.1"),
        ("ipv4:203.0.113.7:1", "203.0.113.7"),
        ("ipv6:[::1]:54321", "::/64"),
        ("ipv6:%5B2001:db8:1:2:3:4:5:6%5D:443", "2001:db8:1:2::/64"),
        ("ipv6:[2001:db8:1:2:ffff::9]:1", "2001:db8:1:2::/64"),  # same /64: same peer
        ("ipv6:[::ffff:198.51.100.4]:80", "198.51.100.4"),
        ("unix:/run/agent.sock", "unix"),
        ("", "unknown"),
    ],
)
def test_peer_address_is_the_connection_ip_without_the_port(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def _signed_transfer(payer: Keypair, note: int) -> bytes:
    ix = transfer(
        TransferParams(from_pubkey=payer.pubkey(), to_pubkey=payer.pubkey(), lamports=note)
    )
    message = MessageV0.try_compile(payer.pubkey(), [ix], [], Hash.default())
    return bytes(VersionedTransaction(message, [payer]))


def test_the_wallet_comes_from_the_request_or_the_signed_fee_payer() -> None:
    wallet = Keypair()
    address = str(wallet.pubkey())
    build = staking_pb2.BuildStakeTransactionRequest(wallet=address, amount_lamports=1)
    assert wallet_of(build) == address
    listing = staking_pb2.ListStakeAccountsRequest(wallet=address)
    assert wallet_of(listing) == address
    submit = staking_pb2.SubmitTransactionRequest(transaction=_signed_transfer(wallet, 1))
    assert wallet_of(submit) == address
    # Malformed or absent: no wallet bucket (the servicer refuses the request itself).
    assert wallet_of(staking_pb2.BuildStakeTransactionRequest(wallet="not-base58!")) is None
    assert wallet_of(staking_pb2.BuildStakeTransactionRequest(wallet="1" * 60)) is None
    assert wallet_of(staking_pb2.SubmitTransactionRequest(transaction=b"\x01garbage")) is None
    assert wallet_of(staking_pb2.GetNetworkInfoRequest()) is None
    assert wallet_of(iter(())) is None  # a client-streaming call's request iterator
    assert str(Pubkey.from_string(address)) == address


def _decision(
    *, allowed: bool = True, remaining: int, reset: float, retry: float = 0.0
) -> Decision:
    return Decision(
        allowed=allowed, limit=10, remaining=remaining, reset_after=reset, retry_after=retry
    )


def _subject(dimension: Dimension) -> Subject:
    return Subject(
        dimension=dimension,
        identity=dimension.value,
        rpc_class=RpcClass.BUILDS,
        limit=Limit(per_minute=10, burst=10),
    )


def test_headers_describe_the_most_constraining_bucket() -> None:
    key, wallet = _subject(Dimension.KEY), _subject(Dimension.WALLET)
    served = Verdict(
        (key, wallet), (_decision(remaining=9, reset=6), _decision(remaining=3, reset=42.2))
    )
    assert served.allowed and served.binding[0] is wallet
    assert served.headers() == (
        ("x-ratelimit-limit", "10"),
        ("x-ratelimit-remaining", "3"),
        ("x-ratelimit-reset", "43"),  # whole seconds, rounded up
    )
    refused = Verdict(
        (key, wallet),
        (
            _decision(allowed=False, remaining=0, reset=60, retry=0.5),
            _decision(allowed=False, remaining=0, reset=60, retry=4.0),
        ),
    )
    assert not refused.allowed and refused.binding[0] is wallet
    assert refused.retry_after == 4.0


def test_refusal_status_has_retry_info_and_a_quota_failure_naming_the_dimension() -> None:
    wallet = _subject(Dimension.WALLET)
    verdict = Verdict((wallet,), (_decision(allowed=False, remaining=0, reset=60, retry=5.9),))
    status = status_for(verdict.error())
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    found: dict[str, object] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.QuotaFailure,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    info = found["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "RATE_LIMITED" and info.metadata["dimension"] == "wallet"
    retry = found["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToNanoseconds() == 5_900_000_000
    quota = found["QuotaFailure"]
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    violation = quota.violations[0]
    assert violation.subject == "wallet:wallet"
    assert violation.quota_id == "builds-per-wallet"
    assert dict(violation.quota_dimensions) == {"wallet": "wallet"}
    assert violation.quota_value == 10
