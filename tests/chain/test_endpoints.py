"""Endpoint configuration: parsing, naming, redaction, settings. No sockets."""

from __future__ import annotations

import pytest

from service.chain import (
    EndpointConfig,
    FailoverPolicy,
    FailoverRpc,
    Routing,
    parse_endpoint,
    parse_endpoints,
    redact_url,
)
from service.config import Settings

SECRET_URL = "https://user:hunter2@rpc.example.com:8443/v2/SECRETKEY?api-key=TOKEN"


def test_defaults_make_the_first_url_the_primary() -> None:
    endpoints = parse_endpoints(["http://a.example:8899", "https://b.example/"])
    assert [(e.name, e.priority) for e in endpoints] == [("rpc0", 0), ("rpc1", 1)]
    assert endpoints[0].url == "http://a.example:8899"


def test_fragment_names_and_prioritises() -> None:
    endpoint = parse_endpoint(f"{SECRET_URL}#name=paid&priority=7", index=3)
    assert endpoint == EndpointConfig(name="paid", url=SECRET_URL, priority=7)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (f"{SECRET_URL}#weight=2", "unknown option 'weight'"),
        (f"{SECRET_URL}#priority=high", "priority must be an integer"),
        (f"{SECRET_URL}#name=no spaces", "endpoint name"),
        ("ftp://user:hunter2@rpc.example.com/SECRETKEY", "expected an http:// or https:// URL"),
        ("https://user:hunter2@rpc.example.com:99999/SECRETKEY", "invalid port"),
        ("not a url hunter2", "expected an http:// or https:// URL"),
    ],
)
def test_bad_endpoints_are_refused_without_echoing_secrets(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_endpoint(spec)
    for secret in ("hunter2", "SECRETKEY", "TOKEN"):
        assert secret not in str(caught.value)


def test_names_must_be_unique_and_one_endpoint_is_needed() -> None:
    with pytest.raises(ValueError, match="unique: a"):
        parse_endpoints(["http://x.example#name=a", "http://y.example#name=a"])
    with pytest.raises(ValueError, match="at least one"):
        parse_endpoints([])
    with pytest.raises(ValueError, match="at least one"):
        FailoverRpc([])


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (SECRET_URL, "https://rpc.example.com:8443/…"),
        ("http://127.0.0.1:8899", "http://127.0.0.1:8899"),
        ("http://[::1]:8899/", "http://[::1]:8899"),
        ("https://mainnet.example.com/?api-key=TOKEN", "https://mainnet.example.com/…"),
    ],
)
def test_redaction_keeps_only_scheme_host_and_port(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert parse_endpoint(url).redacted_url == redacted


@pytest.mark.parametrize(
    "kwargs",
    [
        {"probe_interval": 0},
        {"breaker_cooldown": -1},
        {"max_slot_lag": -1},
        {"failback_after": -1},
        {"breaker_failures": 0},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FailoverPolicy(**kwargs)  # type: ignore[arg-type]


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings(rpc_urls=[])
    assert (
        defaults.rpc_routing,
        defaults.rpc_probe_interval_seconds,
        defaults.rpc_max_slot_lag,
        defaults.rpc_breaker_failures,
        defaults.rpc_breaker_cooldown_seconds,
        defaults.rpc_failback_seconds,
        defaults.rpc_pool_size,
    ) == ("primary", 1.0, 50, 3, 2.0, 10.0, 5)
    monkeypatch.setenv(
        "AGENT_STAKING_RPC_URLS", '["http://a.example#name=main", "http://b.example"]'
    )
    monkeypatch.setenv("AGENT_STAKING_RPC_ROUTING", "latency")
    monkeypatch.setenv("AGENT_STAKING_RPC_MAX_SLOT_LAG", "100")
    settings = Settings()
    assert Routing(settings.rpc_routing) is Routing.LATENCY
    assert settings.rpc_max_slot_lag == 100
    assert [e.name for e in parse_endpoints(settings.rpc_urls)] == ["main", "rpc1"]
    monkeypatch.setenv("AGENT_STAKING_RPC_ROUTING", "random")
    with pytest.raises(ValueError):
        Settings()
