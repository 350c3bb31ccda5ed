"""compose.yaml without a Docker engine: valid against the Compose specification (the
schema check-jsonschema ships), every file it mounts or builds from present, ports
that agree between the services, the service's settings, the Prometheus scrape
configuration and the collector's, Prometheus's own check of its configuration with
the alert rules mounted where it looks, and the healthcheck run against a real
health port."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.config import Settings, parse_host_port
from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from tests.deploy._tools import CHART, REPO, check_jsonschema, promtool_path, settings_from_env

COMPOSE = REPO / "compose.yaml"
SERVICE = "agent-staking"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _compose()["services"]
    return services


def _env(service: str = SERVICE) -> dict[str, str]:
    env: dict[str, str] = _services()[service]["environment"]
    return env


def _port(address: str) -> int:
    return parse_host_port(address)[1]


def _binds(service: str) -> dict[str, Path]:
    """The service's bind mounts: path in the container -> file in the repository."""
    binds: dict[str, Path] = {}
    for volume in _services()[service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            binds[target] = (REPO / source).resolve()
    return binds


def _published(service: str) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port)."""
    published: dict[int, tuple[str, int]] = {}
    for port in _services()[service].get("ports", []):
        host, host_port, container = str(port).split(":")
        published[int(container)] = (host, int(host_port))
    return published


def _yaml_file(service: str, target: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(_binds(service)[target].read_text())
    return loaded


# -- the file ---------------------------------------------------------------------------


def test_compose_file_follows_the_specification(tmp_path: Path) -> None:
    result = check_jsonschema("--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: a misspelt key, a healthcheck of the wrong type.
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        COMPOSE.read_text()
        .replace("depends_on:", "depend_on:", 1)
        .replace("interval: 10s", "interval: [10s]", 1)
    )
    result = check_jsonschema("--builtin-schema", "vendor.compose-spec", str(broken))
    assert result.returncode != 0
    assert "depend_on" in result.stdout and "interval" in result.stdout


def test_the_stack_is_complete() -> None:
    images = {name: service.get("image", "") for name, service in _services().items()}
    assert set(images) == {
        SERVICE,
        "postgres",
        "redis",
        "prometheus",
        "grafana",
        "otel-collector",
        "jaeger",
    }
    assert _services()[SERVICE]["build"] == "."
    # Pinned: a stack that works today works tomorrow.
    for name, image in images.items():
        if name != SERVICE:
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image


def test_every_referenced_file_exists() -> None:
    assert (REPO / _services()[SERVICE]["build"] / "Dockerfile").is_file()
    referenced = [path for name in _services() for path in _binds(name).values()]
    assert len(referenced) == 6
    for path in referenced:
        assert path.is_file(), path
        assert path.is_relative_to(REPO), path


def test_dependencies_name_services() -> None:
    for name, service in _services().items():
        depends = service.get("depends_on", [])
        assert set(depends) <= set(_services()) - {name}, name


def test_ports_are_published_on_loopback_only() -> None:
    published = {name: _published(name) for name in _services()}
    assert any(published.values())
    for name, ports in published.items():
        for container, (host, host_port) in ports.items():
            assert host == "127.0.0.1", (name, container)
            assert host_port == container, (name, container)


# -- agent-staking --------------------------------------------------------------------


def test_the_service_accepts_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every AGENT_STAKING_* variable is a setting, and they load."""
    settings = settings_from_env(_env(), monkeypatch)
    assert settings.embedded_localnet  # the walk-through's chain
    assert settings.database_url.startswith("postgresql://")
    assert settings.tracing_exporter == "otlp-grpc"


def test_published_ports_are_the_ones_served() -> None:
    env = _env()
    assert set(_published(SERVICE)) == {
        _port(env["AGENT_STAKING_LISTEN"]),
        _port(env["AGENT_STAKING_LOCALNET_LISTEN"]),
    }
    # Listening beyond the container's loopback, or nobody could reach them.
    for name in ("LISTEN", "HEALTH_LISTEN", "METRICS_LISTEN", "LOCALNET_LISTEN"):
        assert parse_host_port(env[f"AGENT_STAKING_{name}"])[0] == "0.0.0.0", name


def test_stores_are_the_stack_s_own() -> None:
    env = _env()
    database = urlsplit(env["AGENT_STAKING_DATABASE_URL"])
    postgres = _services()["postgres"]["environment"]
    assert database.hostname == "postgres" and database.port == 5432
    assert (database.username, database.password, database.path) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        "/" + postgres["POSTGRES_DB"],
    )
    redis = urlsplit(env["AGENT_STAKING_REDIS_URL"])
    assert (redis.hostname, redis.port) == ("redis", 6379)


# -- Prometheus ---------------------------------------------------------------------------

PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"


def test_prometheus_scrapes_the_metrics_port() -> None:
    """The job is called as the chart's ServiceMonitor calls it (job="agent-staking"),
    and its target is the service's metrics port on the stack's network."""
    config = _yaml_file("prometheus", PROMETHEUS_CONFIG)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == SERVICE]
    ((target,),) = [c["targets"] for c in job["static_configs"]]
    metrics_port = _port(_env()["AGENT_STAKING_METRICS_LISTEN"])
    assert target == f"{SERVICE}:{metrics_port}"
    assert job.get("scheme", "http") == "http"  # TLS is off in the stack
    assert "AGENT_STAKING_TLS_CERT_FILE" not in _env()


def test_prometheus_loads_the_chart_s_alert_rules(tmp_path: Path) -> None:
    """promtool checks the configuration as the container sees it: its files where the
    mounts put them, so the rule files it names must be the mounted alert rules."""
    binds = _binds("prometheus")
    assert binds[PROMETHEUS_CONFIG].name == "prometheus.yml"
    assert CHART / "files" / "alerts.yml" in binds.values()
    root = tmp_path / "container"
    for target, source in binds.items():
        (root / target.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / target.lstrip("/"))
    config = yaml.safe_load((root / PROMETHEUS_CONFIG.lstrip("/")).read_text())
    config["rule_files"] = [str(root / p.lstrip("/")) for p in config["rule_files"]]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(promtool_path()), "check", "config", str(checked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    rules = len(
        [
            r
            for g in yaml.safe_load(binds[_alerts_target()].read_text())["groups"]
            for r in g["rules"]
        ]
    )
    assert f"SUCCESS: {rules} rules found" in output


def _alerts_target() -> str:
    (target,) = [t for t, s in _binds("prometheus").items() if s == CHART / "files" / "alerts.yml"]
    return target


# -- Grafana ------------------------------------------------------------------------------


def test_grafana_provisions_the_chart_s_dashboard() -> None:
    binds = _binds("grafana")
    (provider,) = _yaml_file("grafana", "/etc/grafana/provisioning/dashboards/agent-staking.yaml")[
        "providers"
    ]
    folder = PurePosixPath(provider["options"]["path"])
    (dashboard,) = [t for t, s in binds.items() if s == CHART / "files" / "dashboard.json"]
    assert PurePosixPath(dashboard).parent == folder
    assert _env("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard
    for target in binds:
        if target.startswith("/etc/grafana/provisioning/"):
            assert target.endswith(".yaml") and PurePosixPath(target).parent.name in (
                "dashboards",
                "datasources",
            )


def test_grafana_data_sources_reach_prometheus_and_jaeger() -> None:
    sources = _yaml_file("grafana", "/etc/grafana/provisioning/datasources/agent-staking.yaml")
    by_type = {s["type"]: s for s in sources["datasources"]}
    # The dashboard's data source variable lists Prometheus data sources: the default one.
    assert by_type["prometheus"]["isDefault"] is True
    for kind, service in (("prometheus", "prometheus"), ("jaeger", "jaeger")):
        url = urlsplit(by_type[kind]["url"])
        assert url.hostname == service
        assert url.port in _published(service), kind


# -- traces -------------------------------------------------------------------------------

COLLECTOR_CONFIG = "/etc/otelcol/config.yaml"


def test_traces_reach_the_collector_and_jaeger() -> None:
    config = _yaml_file("otel-collector", COLLECTOR_CONFIG)
    assert f"--config={COLLECTOR_CONFIG}" in _services()["otel-collector"]["command"]
    endpoint = urlsplit(_env()["AGENT_STAKING_TRACING_ENDPOINT"])
    assert endpoint.hostname == "otel-collector"
    grpc_receiver = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert parse_host_port(grpc_receiver) == ("0.0.0.0", endpoint.port)
    pipeline = config["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    (exporter,) = pipeline["exporters"]
    host, port = parse_host_port(config["exporters"][exporter]["endpoint"])
    # Jaeger all-in-one takes OTLP over gRPC on 4317.
    assert (host, port) == ("jaeger", 4317) and exporter.startswith("otlp_grpc")


# -- the healthcheck, for real ----------------------------------------------------------------


@pytest.fixture
async def health_port(localnet: LocalnetServer, tmp_path: Path) -> AsyncIterator[int]:
    server = AgentStakingServer(
        Settings(
            listen="127.0.0.1:0",
            health_listen="127.0.0.1:0",
            metrics_listen="off",
            rpc_urls=[localnet.url],
            service_fee_bps=0,
            data_dir=tmp_path,
            shutdown_grace_seconds=1,
        )
    )
    await server.start()
    assert server.health_endpoint is not None
    yield server.health_endpoint.port
    await server.stop(0)


async def test_the_healthcheck_asks_the_health_port(health_port: int) -> None:
    (kind, program, flag, code) = _services()[SERVICE]["healthcheck"]["test"]
    assert (kind, program, flag) == ("CMD", "python", "-c")
    configured = _port(_env()["AGENT_STAKING_HEALTH_LISTEN"])
    address = f"127.0.0.1:{configured}"
    assert address in code
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code.replace(address, f"127.0.0.1:{health_port}")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
