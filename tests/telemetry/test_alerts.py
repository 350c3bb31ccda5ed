"""The alert rules and the dashboard: valid for promtool, unit-tested, and naming only
metrics (and labels) the service exports."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from agentstaking.v1 import staking_pb2

from service.localnet import LocalnetServer
from tests._pki import CertificateAuthority
from tests._require import unavailable

from .conftest import Observed, Scrape, parse_scrape, start_observed

FILES = Path(__file__).resolve().parents[2] / "helm" / "agent-staking" / "files"
ALERTS = FILES / "alerts.yml"
ALERT_TESTS = FILES / "alerts.test.yml"
DASHBOARD = FILES / "dashboard.json"

# Metric names are ours, go-grpc-prometheus's or prometheus_client's process metrics.
_METRIC = re.compile(r"\b((?:grpc_server|agent_staking|process|python)_[a-zA-Z0-9_]+)\b")
_SELECTOR = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
# Added by Prometheus (job, instance), by multiprocess mode (pid), by histograms (le).
_TARGET_LABELS = {"job", "instance", "pid", "le"}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def _run(*args: str, cwd: Path = FILES) -> str:
    done = subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def _concrete(expr: str) -> str:
    """A dashboard query with its template variables filled in."""
    return expr.replace("$job", ".*")


def test_rule_file_passes_promtool_check() -> None:
    assert "SUCCESS" in _run("check", "rules", ALERTS.name)


def test_each_alert_fires_in_promtool_unit_tests() -> None:
    _run("test", "rules", ALERT_TESTS.name)
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if not case.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in _rules()}
    assert firing == alerts
    assert quiet == alerts


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": _concrete(expr)}
        for i, expr in enumerate(_dashboard_exprs())
    ]
    assert len(rules) > 30
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run("check", "rules", str(path), cwd=tmp_path)


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "agent-staking"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "job"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]


@pytest.fixture
async def limited(localnet: LocalnetServer, tmp_path: Path) -> AsyncIterator[Observed]:
    """A fresh server allowing one build per wallet."""
    async for item in start_observed(
        localnet, tmp_path, ratelimit_wallet_per_minute=1, ratelimit_wallet_burst=1
    ):
        yield item


@pytest.fixture
async def tls_scrape(localnet: LocalnetServer, tmp_path: Path) -> AsyncIterator[Scrape]:
    """/metrics (over https) of a server serving TLS: the series that exist only then."""
    authority = CertificateAuthority(tmp_path, "metrics CA")
    issued = authority.issue("localhost")
    data = tmp_path / "tls"
    data.mkdir()
    async for observed in start_observed(
        localnet, data, tls_cert_file=issued.cert, tls_key_file=issued.key
    ):
        listener = observed.server.metrics_listener
        assert listener is not None
        context = ssl.create_default_context(cafile=str(authority.cert))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://localhost:{listener.port}/metrics", ssl=context) as response,
        ):
            assert response.status == 200
            yield parse_scrape(await response.text())


async def _live_scrape(observed: Observed) -> Scrape:
    """A scrape after calls that create the labelled series (auth failure, builds, a
    rate-limit rejection)."""
    wallet = await observed.funded_wallet()
    request = staking_pb2.BuildStakeTransactionRequest(
        wallet=str(wallet.pubkey()), amount_lamports=10**9
    )
    await observed.staking.BuildStakeTransaction(request)
    with pytest.raises(grpc.aio.AioRpcError):
        await observed.staking.BuildStakeTransaction(request)
    async with grpc.aio.insecure_channel(observed.address) as anonymous:
        with pytest.raises(grpc.aio.AioRpcError):
            await type(observed.staking)(anonymous).GetNetworkInfo(
                staking_pb2.GetNetworkInfoRequest()
            )
    assert observed.server.keys is not None
    await observed.server.keys.scan_overdue()
    return await observed.scrape()


async def test_alerts_and_dashboard_name_only_exported_metrics(
    limited: Observed, tls_scrape: Scrape
) -> None:
    scrape = await _live_scrape(limited)
    # Label names: from the samples, or from the definitions of series without one yet.
    labels_of = {name: set(labels) for name, labels in limited.metrics.label_names.items()}
    for name, labels in [*scrape.labels.items(), *tls_scrape.labels.items()]:
        labels_of.setdefault(name, set()).update(labels)
    exported = scrape.names | tls_scrape.names
    sources = {f"alert {rule['alert']}": rule["expr"] for rule in _rules()}
    sources.update({f"dashboard query {i}": expr for i, expr in enumerate(_dashboard_exprs())})
    used: set[str] = set()
    for where, expr in sources.items():
        names = set(_METRIC.findall(expr))
        assert names, f"{where} names no metric"
        used |= names
        missing = names - exported
        assert not missing, f"{where} names metrics that do not exist: {sorted(missing)}"
        known_labels = set(_TARGET_LABELS)
        for name in names:
            assert name in labels_of, f"{where}: no series of {name} to learn its labels from"
            known_labels |= labels_of[name]
        for name, matchers in _SELECTOR.findall(expr):
            unknown = set(_MATCHER.findall(matchers)) - labels_of[name] - _TARGET_LABELS
            assert not unknown, f"{where}: {name} has no label {sorted(unknown)}"
        for grouping in _GROUPING.findall(expr):
            labels = {label.strip() for label in grouping.split(",") if label.strip()}
            unknown = labels - known_labels
            assert not unknown, f"{where}: no metric of it has the labels {sorted(unknown)}"
    # The signals the issue asks for are all on the dashboard or in an alert.
    for name in (
        "grpc_server_handled_total",
        "agent_staking_build_duration_seconds_bucket",
        "agent_staking_solana_healthy_endpoints",
        "agent_staking_solana_failovers_total",
        "agent_staking_api_keys_overdue_rotation",
        "agent_staking_ratelimit_rejections_total",
        "agent_staking_auth_failures_total",
        "agent_staking_blockhash_age_seconds",
        "agent_staking_relay_time_to_confirm_seconds_bucket",
        "agent_staking_tls_certificate_expiry_timestamp_seconds",
        "agent_staking_calls_refused_total",
        "agent_staking_events_produced_total",
        "agent_staking_webhook_deliveries_total",
        "agent_staking_webhook_deliveries_pending",
        "agent_staking_webhook_oldest_due_seconds",
        "agent_staking_event_producer_leader",
    ):
        assert name in used, name
