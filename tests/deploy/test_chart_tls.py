"""The chart's transport security, rendered by the real helm: TLS and mutual TLS from a
kubernetes.io/tls Secret (mounted so renewals reach the server), /metrics over https
and never in plaintext off the pod without an explicit opt-in, the ServiceMonitor's
scheme and tlsConfig, and the values that cannot work together."""

from __future__ import annotations

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy._tools import (
    NAMESPACE,
    PROMETHEUS_OPERATOR_APIS,
    RELEASE,
    Manifest,
    Rendered,
    claimed_minor_versions,
    render,
    render_error,
    secret_files,
    validate_custom_resources,
)

SERVICE_HOST = f"{RELEASE}.{NAMESPACE}.svc"
TLS_SECRET = "agent-staking-tls"  # values-production.yaml
MUTUAL = ["tls.mutual=true", "smokeTest.clientCertSecret=smoke-client"]
PROMETHEUS_CLIENT = (
    'metrics.serviceMonitor.tlsConfig={"cert": {"secret": {"name": "prom-client", '
    '"key": "tls.crt"}}, "keySecret": {"name": "prom-client", "key": "tls.key"}}'
)


def _pod(rendered: Rendered) -> Manifest:
    spec: Manifest = rendered.one("Deployment")["spec"]["template"]["spec"]
    return spec


def _server(rendered: Rendered) -> Manifest:
    containers: list[Manifest] = _pod(rendered)["containers"]
    (container,) = containers
    return container


def _settings(rendered: Rendered) -> dict[str, str]:
    data: dict[str, str] = rendered.one("ConfigMap", RELEASE)["data"]
    return data


def _files(pod: Manifest, container: Manifest) -> dict[str, tuple[str, str]]:
    """What the kubelet would put where: mounted file path -> (Secret, key)."""
    return {f.path: (f.secret, f.key) for f in secret_files(pod, container)}


def _metrics_rules(rendered: Rendered) -> list[Manifest]:
    policy = rendered.one("NetworkPolicy")
    return [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "metrics"]


# -- TLS in the pod -------------------------------------------------------------------


def test_tls_files_come_from_the_secret(production_render: Rendered) -> None:
    """The settings name files that the Secret's keys are mounted as, read-only."""
    settings = _settings(production_render)
    files = _files(_pod(production_render), _server(production_render))
    assert files[settings["AGENT_STAKING_TLS_CERT_FILE"]] == (TLS_SECRET, "tls.crt")
    assert files[settings["AGENT_STAKING_TLS_KEY_FILE"]] == (TLS_SECRET, "tls.key")
    assert "AGENT_STAKING_TLS_CLIENT_CA_FILE" not in settings  # not mutual
    (mount,) = [m for m in _server(production_render)["volumeMounts"] if m["name"] == "tls"]
    assert mount["readOnly"] is True


def test_tls_volume_follows_renewals(production_render: Rendered) -> None:
    """A renewed Secret reaches the pod only through a whole-volume mount (subPath
    mounts never update); the key is readable by the server's group, nobody else."""
    for mount in _server(production_render)["volumeMounts"]:
        assert "subPath" not in mount and "subPathExpr" not in mount, mount
    (volume,) = [v for v in _pod(production_render)["volumes"] if v["name"] == "tls"]
    assert volume["projected"]["defaultMode"] == 0o440
    assert _pod(production_render)["securityContext"]["fsGroup"] == 10001
    # Renewal is a reload, not a rollout: no checksum of the Secret on the pod.
    annotations = production_render.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {"checksum/config"}


def test_no_tls_means_no_tls_settings(default_render: Rendered) -> None:
    settings = _settings(default_render)
    assert not [name for name in settings if name.startswith("AGENT_STAKING_TLS_")]
    assert "tls" not in {v["name"] for v in _pod(default_render)["volumes"]}


@pytest.mark.parametrize(
    ("sets", "ca_file"),
    [
        ([], (TLS_SECRET, "ca.crt")),
        (
            ["tls.clientCASecret=agents-ca", "tls.clientCAKey=bundle.pem"],
            ("agents-ca", "bundle.pem"),
        ),
    ],
    ids=["ca.crt of the server's Secret", "a Secret of its own"],
)
def test_mutual_tls_mounts_the_client_ca(sets: list[str], ca_file: tuple[str, str]) -> None:
    rendered = render(
        production=True, sets=[*MUTUAL, "metrics.serviceMonitor.enabled=false", *sets]
    )
    settings = _settings(rendered)
    files = _files(_pod(rendered), _server(rendered))
    assert files[settings["AGENT_STAKING_TLS_CLIENT_CA_FILE"]] == ca_file
    assert files[settings["AGENT_STAKING_TLS_CERT_FILE"]] == (TLS_SECRET, "tls.crt")


@pytest.mark.parametrize(
    "minor", [claimed_minor_versions()[0], claimed_minor_versions()[-1]], ids=lambda m: f"1.{m}"
)
def test_mutual_tls_objects_validate(minor: int) -> None:
    """Mutual TLS adds volumes, mounts and a scrape client certificate: every object
    still validates, strictly, on the oldest and the newest Kubernetes claimed."""
    version = f"1.{minor}.0"
    rendered = render(
        production=True,
        sets=MUTUAL,
        set_json=[PROMETHEUS_CLIENT],
        kube_version=version,
        api_versions=PROMETHEUS_OPERATOR_APIS,
    )
    custom = [o for o in rendered.objects if o["kind"] in ("ServiceMonitor", "PrometheusRule")]
    for obj in rendered.objects:
        if obj not in custom:
            kubernetes_validate.validate(obj, version, strict=True)
    assert set(validate_custom_resources(custom).values()) == {None}


# -- /metrics -------------------------------------------------------------------------


def test_metrics_stay_in_the_pod_without_tls() -> None:
    """TLS off, no opt-in: /metrics on the pod's loopback, no port to reach it by."""
    rendered = render(sets=["networkPolicy.enabled=true"])
    assert _settings(rendered)["AGENT_STAKING_METRICS_LISTEN"] == "127.0.0.1:9464"
    assert "metrics" not in {p["name"] for p in _server(rendered)["ports"]}
    for service in rendered.of_kind("Service"):
        assert "metrics" not in {p["name"] for p in service["spec"]["ports"]}
    assert _metrics_rules(rendered) == []


def test_plaintext_metrics_only_by_explicit_choice() -> None:
    rendered = render(
        sets=["metrics.allowPlaintext=true", "networkPolicy.enabled=true"],
        api_versions=PROMETHEUS_OPERATOR_APIS,
    )
    assert _settings(rendered)["AGENT_STAKING_METRICS_LISTEN"] == "0.0.0.0:9464"
    (service,) = rendered.of_kind("Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["metrics"]["appProtocol"] == "http"
    # Still only Prometheus may reach the port.
    (rule,) = _metrics_rules(rendered)
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    monitor = render(
        sets=["metrics.allowPlaintext=true", "metrics.serviceMonitor.enabled=true"],
        api_versions=PROMETHEUS_OPERATOR_APIS,
    ).one("ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "http" and "tlsConfig" not in endpoint


def test_metrics_over_https_with_tls(production_render: Rendered) -> None:
    assert _settings(production_render)["AGENT_STAKING_METRICS_LISTEN"] == "0.0.0.0:9464"
    assert "metrics" in {p["name"] for p in _server(production_render)["ports"]}
    (rule,) = _metrics_rules(production_render)
    assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }


def test_service_monitor_scrapes_over_https(production_render: Rendered) -> None:
    """Pods are scraped by address, so the scrape verifies the Service's name (what the
    certificate carries) against the CA of the server's Secret."""
    (endpoint,) = production_render.one("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {
        "serverName": SERVICE_HOST,
        "ca": {"secret": {"name": TLS_SECRET, "key": "ca.crt"}},
    }


def test_service_monitor_tls_config_is_configurable() -> None:
    rendered = render(
        production=True,
        sets=MUTUAL,
        set_json=[PROMETHEUS_CLIENT],
        api_versions=PROMETHEUS_OPERATOR_APIS,
    )
    monitor = rendered.one("ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {
        "cert": {"secret": {"name": "prom-client", "key": "tls.crt"}},
        "keySecret": {"name": "prom-client", "key": "tls.key"},
    }
    assert validate_custom_resources([monitor]) == {f"ServiceMonitor/{RELEASE}": None}


# -- values that cannot work together ---------------------------------------------------


def test_schema_refuses_tls_without_a_secret() -> None:
    assert "existingSecret" in render_error(sets=["tls.enabled=true"])
    assert "existingSecret" in render_error(sets=["tls.enabled=true", "tls.existingSecret="])
    # Mutual TLS is TLS.
    assert "enabled" in render_error(sets=["tls.mutual=true", "tls.existingSecret=x"])
    assert "existingSecret" in render_error(sets=["tls.existingSecret=Not_A_Name"])
    assert "tlsConfig" in render_error(
        set_json=['metrics.serviceMonitor.tlsConfig={"insecureSkipVerfy": true}']
    )


def test_service_monitor_needs_metrics_off_the_pod() -> None:
    error = render_error(sets=["metrics.serviceMonitor.enabled=true"])
    assert "tls.enabled" in error and "metrics.allowPlaintext" in error


def test_mutual_tls_service_monitor_needs_a_client_certificate() -> None:
    error = render_error(production=True, sets=MUTUAL)
    assert "metrics.serviceMonitor.tlsConfig" in error and "keySecret" in error


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("config.tls_cert_file=/x", "tls.existingSecret"),
        ("config.tls_key_file=/x", "tls.existingSecret"),
        ("config.tls_client_ca_file=/x", "tls.mutual"),
        ("config.health_listen=off", "server.healthPort"),
        ("config.metrics_listen=0.0.0.0:9464", "metrics.allowPlaintext"),
    ],
)
def test_transport_settings_belong_to_their_values(setting: str, value: str) -> None:
    assert value in render_error(sets=[setting])


# -- helm test ------------------------------------------------------------------------


def _smoke(rendered: Rendered) -> tuple[dict[str, str], dict[str, tuple[str, str]], Manifest]:
    pod = rendered.one("Pod")
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return env, _files(pod["spec"], container), pod["spec"]


def test_helm_test_verifies_the_server(production_render: Rendered) -> None:
    env, files, spec = _smoke(production_render)
    assert env["AGENT_STAKING_TARGET"] == f"{SERVICE_HOST}:50051"
    assert files[env["AGENT_STAKING_TARGET_CA_FILE"]] == (TLS_SECRET, "ca.crt")
    # A publicly trusted certificate has no ca.crt: the pod still starts (system roots).
    (volume,) = [v for v in spec["volumes"] if v["name"] == "ca"]
    assert volume["secret"]["optional"] is True
    assert "AGENT_STAKING_MUTUAL_TLS" not in env and "AGENT_STAKING_CLIENT_CERT_FILE" not in env


def test_helm_test_presents_a_client_certificate_under_mutual_tls() -> None:
    env, files, _ = _smoke(render(production=True, sets=MUTUAL, set_json=[PROMETHEUS_CLIENT]))
    assert env["AGENT_STAKING_MUTUAL_TLS"] == "true"
    assert files[env["AGENT_STAKING_CLIENT_CERT_FILE"]] == ("smoke-client", "tls.crt")
    assert files[env["AGENT_STAKING_CLIENT_KEY_FILE"]] == ("smoke-client", "tls.key")
    # Without one it says what is missing (files/smoke_test.py; see test_chart_live).
    env, _, _ = _smoke(
        render(
            production=True,
            sets=["tls.mutual=true", "metrics.serviceMonitor.enabled=false"],
        )
    )
    assert env["AGENT_STAKING_MUTUAL_TLS"] == "true"
    assert "AGENT_STAKING_CLIENT_CERT_FILE" not in env


def test_helm_test_in_plaintext_without_tls(default_render: Rendered) -> None:
    env, files, spec = _smoke(default_render)
    assert "AGENT_STAKING_TARGET_CA_FILE" not in env
    assert files == {} and "volumes" not in spec
