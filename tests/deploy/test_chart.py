"""The Helm chart, rendered by the real helm: lint, schema validation of every object
for every Kubernetes version the chart claims, and what operators rely on (probes,
drain timing, secrets, security context, scale-out guards)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.deploy._tools import (
    CHART,
    FEE_WALLET,
    NAMESPACE,
    PROMETHEUS_OPERATOR_APIS,
    RELEASE,
    REPO,
    Manifest,
    Rendered,
    claimed_minor_versions,
    container_port,
    helm,
    pod_specs,
    render,
    render_error,
    settings_from_env,
    template_args,
    validate_custom_resources,
)

STAKING_SERVICE = "agentstaking.v1.StakingService"
KEY_SERVICE = "agentstaking.v1.KeyService"
CUSTOM_RESOURCES = {"ServiceMonitor", "PrometheusRule"}


def _server(rendered: Rendered) -> Manifest:
    containers = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["agent-staking"]
    container: Manifest = containers[0]
    return container


def _settings(rendered: Rendered) -> dict[str, str]:
    """The server's ConfigMap (the one its envFrom names)."""
    (source,) = _server(rendered)["envFrom"]
    name = source["configMapRef"]["name"]
    (configmap,) = [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"] == name]
    data: dict[str, str] = configmap["data"]
    return data


# -- lint and schemas --------------------------------------------------------------


@pytest.mark.parametrize("production", [False, True], ids=["default", "production"])
def test_helm_lint_strict(production: bool) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if production:
        args += ["--values", str(CHART / "values-production.yaml")]
        args += ["--set", f"solana.feeRecipient={FEE_WALLET}"]
    result = helm(*args)
    assert "0 chart(s) failed" in result.stdout


def test_claimed_versions() -> None:
    # Native gRPC probes are GA from 1.27: the chart must not claim less.
    versions = claimed_minor_versions()
    assert versions[0] == 27 and len(versions) >= 9, versions
    error = render_error(kube_version="1.26.0")
    assert "kubeVersion" in error or "incompatible" in error


@pytest.mark.parametrize("minor", claimed_minor_versions(), ids=lambda m: f"1.{m}")
@pytest.mark.parametrize("production", [False, True], ids=["default", "production"])
def test_every_object_validates(minor: int, production: bool) -> None:
    """Every rendered object against the Kubernetes schemas of that version (strict: an
    unknown field fails too); the prometheus-operator objects against their CRDs."""
    version = f"1.{minor}.0"
    rendered = render(
        production=production,
        kube_version=version,
        api_versions=PROMETHEUS_OPERATOR_APIS if production else (),
    )
    builtin = [o for o in rendered.objects if o["kind"] not in CUSTOM_RESOURCES]
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc}")
    custom = [o for o in rendered.objects if o["kind"] in CUSTOM_RESOURCES]
    assert {o["kind"] for o in custom} == (CUSTOM_RESOURCES if production else set())
    if custom:
        assert validate_custom_resources(custom) == {
            f"{o['kind']}/{o['metadata']['name']}": None for o in custom
        }


def test_validators_catch_mistakes(production_render: Rendered) -> None:
    """The validation above can fail: a named port in a gRPC probe (Kubernetes wants a
    number), an unknown field, a bad scrape interval."""
    deployment = copy.deepcopy(production_render.one("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.27.0", strict=True)
    deployment = copy.deepcopy(production_render.one("Deployment"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.27.0", strict=True)
    monitor = copy.deepcopy(production_render.one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    (verdict,) = validate_custom_resources([monitor]).values()
    assert verdict is not None and "interval" in verdict


def test_values_schema_rejects_wrong_values() -> None:
    assert "replicaCount" in render_error(sets=["replicaCount=three"])
    assert "grpcPort" in render_error(sets=["server.grpcPort=70000"])
    assert "replicas" in render_error(sets=["replicas=3"])  # a typo: no such value
    assert "readiness" in render_error(sets=["probes.readiness.periodSeconds=fast"])
    # Credentials in an endpoint URL belong in solana.existingSecret.
    assert "rpcUrls" in render_error(
        set_json=['solana.rpcUrls=["https://user:password@rpc.example.com"]'],
        sets=[f"solana.feeRecipient={FEE_WALLET}"],
    )
    assert "feeRecipient" in render_error(sets=["solana.feeRecipient=not-an-address"])


# -- the server's pod ---------------------------------------------------------------


def test_probes_are_grpc_probes_on_the_health_port(any_render: Rendered) -> None:
    """The kubelet's gRPC probe speaks plaintext only, and must not queue behind a flood
    of calls: the probes ask the health port, never the gRPC port."""
    server = _server(any_render)
    grpc_port = container_port(server, "grpc")
    health_port = container_port(server, "health")
    assert health_port != grpc_port
    services = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = server[probe]
        assert set(spec) & {"httpGet", "tcpSocket", "exec"} == set(), probe
        assert spec["grpc"]["port"] == health_port, probe
        services[probe] = spec["grpc"]["service"]
    # Ready only while it can build transactions (NOT_SERVING while no Solana endpoint
    # is healthy and while draining); alive as long as the process answers: neither a
    # Solana nor a database outage (KeyService NOT_SERVING) may restart pods.
    assert services["readinessProbe"] == STAKING_SERVICE
    assert services["livenessProbe"] == "grpc.health.v1.Health"
    assert services["startupProbe"] == KEY_SERVICE
    # The settings make the server listen where the probes and the Service look.
    assert _settings(any_render)["AGENT_STAKING_LISTEN"] == f"0.0.0.0:{grpc_port}"
    assert _settings(any_render)["AGENT_STAKING_HEALTH_LISTEN"] == f"0.0.0.0:{health_port}"
    # The health port is for the kubelet only: no Service carries it.
    for service in any_render.of_kind("Service"):
        assert "health" not in {p["targetPort"] for p in service["spec"]["ports"]}
        assert health_port not in {p["port"] for p in service["spec"]["ports"]}


def test_service_ports(default_render: Rendered, production_render: Rendered) -> None:
    """Plaintext (default): gRPC as h2c, /metrics not on the Service at all (it stays in
    the pod). TLS (production): both ports say they carry TLS, so no proxy or mesh
    speaks h2c or plain HTTP to them."""

    def ports(rendered: Rendered) -> dict[str, Manifest]:
        (service,) = [
            s for s in rendered.of_kind("Service") if s["spec"].get("clusterIP") != "None"
        ]
        return {p["name"]: p for p in service["spec"]["ports"]}

    plain = ports(default_render)
    assert set(plain) == {"grpc"}
    assert plain["grpc"]["appProtocol"] == "grpc" and plain["grpc"]["targetPort"] == "grpc"
    tls = ports(production_render)
    assert set(tls) == {"grpc", "metrics"}
    assert tls["grpc"]["appProtocol"] == "https" and tls["grpc"]["targetPort"] == "grpc"
    assert tls["metrics"]["appProtocol"] == "https" and tls["metrics"]["targetPort"] == "metrics"
    (headless,) = [
        s for s in production_render.of_kind("Service") if s["spec"].get("clusterIP") == "None"
    ]
    assert [p["appProtocol"] for p in headless["spec"]["ports"]] == ["https"]


def test_service_selects_the_server(any_render: Rendered) -> None:
    (service,) = [s for s in any_render.of_kind("Service") if s["spec"].get("clusterIP") != "None"]
    pod_labels = any_render.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_drain_timing(any_render: Rendered) -> None:
    """The kubelet waits longer than the preStop delay plus the server's drain."""
    pod = any_render.one("Deployment")["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    command = _server(any_render)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    drain = float(_settings(any_render)["AGENT_STAKING_SHUTDOWN_GRACE_SECONDS"])
    assert pre_stop > 0 and drain > 0
    assert grace > pre_stop + drain, (grace, pre_stop, drain)


def test_drain_timing_is_enforced() -> None:
    error = render_error(sets=["terminationGracePeriodSeconds=14"])
    assert "terminationGracePeriodSeconds (14)" in error
    assert render(sets=["terminationGracePeriodSeconds=20"]).one("Deployment")


def test_security_context(any_render: Rendered) -> None:
    specs = pod_specs(any_render)
    assert any(name.startswith("Deployment/") for name in specs)
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] != 0, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["privileged"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name


def test_writable_paths_are_volumes(any_render: Rendered) -> None:
    """Read-only root filesystem: the data dir (SQLite, relay state) and /tmp are
    emptyDirs."""
    pod = any_render.one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in _server(any_render)["volumeMounts"]}
    data_dir = _settings(any_render)["AGENT_STAKING_DATA_DIR"]
    assert "emptyDir" in mounts[data_dir] and "emptyDir" in mounts["/tmp"]


def test_topology_spread(any_render: Rendered) -> None:
    pod = any_render.one("Deployment")["spec"]["template"]
    constraints = pod["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    for constraint in constraints:
        assert (
            constraint["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        )


def test_resources(any_render: Rendered) -> None:
    resources = _server(any_render)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_no_service_links(any_render: Rendered) -> None:
    # A Service named agent-staking would inject AGENT_STAKING_PORT=tcp://... into the
    # settings' namespace.
    assert any_render.one("Deployment")["spec"]["template"]["spec"]["enableServiceLinks"] is False


# -- secrets -------------------------------------------------------------------------

SECRET_LIKE = [
    re.compile(r"[a-z+]+://[^/\s:@]*:[^/\s@]+@"),  # a URL with user:password@
    re.compile(r"\b(postgres(ql)?|rediss?)://"),  # database and Redis URLs hold passwords
    re.compile(r"\bask_[A-Za-z0-9]+_[A-Za-z0-9_-]{20,}"),  # an API key
]


def test_secrets_are_referenced_never_inlined(production_render: Rendered) -> None:
    for configmap in production_render.of_kind("ConfigMap"):
        for key, value in configmap["data"].items():
            assert not key.endswith(("DATABASE_URL", "REDIS_URL", "RPC_URLS")), key
            for pattern in SECRET_LIKE:
                assert not pattern.search(value), (configmap["metadata"]["name"], key)
    assert production_render.of_kind("Secret") == []

    def secret_refs(container: Manifest) -> dict[str, tuple[str, str]]:
        return {
            env["name"]: (ref["name"], ref["key"])
            for env in container.get("env", [])
            if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
        }

    values = yaml.safe_load((CHART / "values-production.yaml").read_text())
    assert secret_refs(_server(production_render)) == {
        "AGENT_STAKING_DATABASE_URL": (
            values["database"]["existingSecret"],
            values["database"]["secretKey"],
        ),
        "AGENT_STAKING_REDIS_URL": (
            values["redis"]["existingSecret"],
            values["redis"]["secretKey"],
        ),
        "AGENT_STAKING_RPC_URLS": (
            values["solana"]["existingSecret"],
            values["solana"]["secretKey"],
        ),
    }
    (migration,) = production_render.one("Job")["spec"]["template"]["spec"]["containers"]
    assert secret_refs(migration) == {
        "AGENT_STAKING_DATABASE_URL": (
            values["database"]["existingSecret"],
            values["database"]["secretKey"],
        )
    }
    (smoke,) = production_render.one("Pod")["spec"]["containers"]
    assert secret_refs(smoke) == {
        "AGENT_STAKING_ADMIN_KEY": (
            values["adminKey"]["existingSecret"],
            values["adminKey"]["secretKey"],
        )
    }


@pytest.mark.parametrize(
    "setting",
    [
        "config.database_url=postgresql://app:hunter2@db:5432/keys",
        "config.redis_url=redis://:hunter2@redis:6379/0",
        "config.rpc_urls=https://rpc.example/KEY",
    ],
)
def test_secret_settings_cannot_go_into_the_configmap(setting: str) -> None:
    error = render_error(sets=[setting])
    assert "existingSecret" in error and "hunter2" not in error


def test_config_takes_only_setting_names() -> None:
    """A misspelt name fails the install: the service would ignore its variable."""
    from service.config import Settings

    schema = json.loads((CHART / "values.schema.json").read_text())
    names = schema["properties"]["config"]["propertyNames"]["enum"]
    assert names == sorted(Settings.model_fields), (
        "values.schema.json is stale: run python scripts/gen_settings_docs.py"
    )
    error = render_error(sets=["config.ratelimit_wallet_per_minut=20"])
    assert "ratelimit_wallet_per_minut" in error


def test_config_passes_settings_through() -> None:
    rendered = render(
        sets=["config.rpc_routing=latency", "config.max_message_bytes=2097152"],
        set_json=['config.ratelimit_exempt_services=["grpc.health.v1.Health"]'],
    )
    settings = _settings(rendered)
    assert settings["AGENT_STAKING_RPC_ROUTING"] == "latency"
    assert settings["AGENT_STAKING_MAX_MESSAGE_BYTES"] == "2097152"
    assert json.loads(settings["AGENT_STAKING_RATELIMIT_EXEMPT_SERVICES"]) == [
        "grpc.health.v1.Health"
    ]


@pytest.mark.parametrize("production", [False, True], ids=["default", "production"])
def test_the_service_accepts_the_settings(
    production: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap and the container's variables load as the service's Settings: every
    AGENT_STAKING_* name is a setting (unknown ones would be ignored silently), every
    value parses."""
    from service.config import ENV_PREFIX

    rendered = render(production=production, sets=["config.log_level=DEBUG"])
    placeholders = {  # what the Secrets would hold
        "AGENT_STAKING_DATABASE_URL": "postgresql://app@db:5432/keys",
        "AGENT_STAKING_REDIS_URL": "redis://redis:6379/0",
        "AGENT_STAKING_RPC_URLS": '["https://rpc.example/KEY#name=a"]',
    }
    env = dict(_settings(rendered))
    for var in _server(rendered)["env"]:
        if var["name"].startswith(ENV_PREFIX):
            env[var["name"]] = var.get("value") or placeholders[var["name"]]
    settings = settings_from_env(env, monkeypatch)
    assert settings.listen == "0.0.0.0:50051"
    assert settings.health_listen == "0.0.0.0:50052"
    assert settings.log_level == "DEBUG"
    assert settings.embedded_localnet is not production
    assert settings.tls is production  # values-production.yaml turns TLS on


# -- scale-out ------------------------------------------------------------------------


def test_default_is_a_single_embedded_replica(default_render: Rendered) -> None:
    assert default_render.one("Deployment")["spec"]["replicas"] == 1
    settings = _settings(default_render)
    assert "AGENT_STAKING_RPC_URLS" not in settings  # the embedded localnet
    assert default_render.kinds() == {"ServiceAccount", "ConfigMap", "Service", "Deployment", "Pod"}


def test_production_objects(production_render: Rendered) -> None:
    assert production_render.kinds() == {
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "Job",
        "Pod",
    }
    deployment = production_render.one("Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = production_render.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    pdb = production_render.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert production_render.one("ServiceAccount")["automountServiceAccountToken"] is False


def test_production_without_autoscaling_runs_three_replicas() -> None:
    rendered = render(production=True, sets=["autoscaling.enabled=false"])
    assert rendered.one("Deployment")["spec"]["replicas"] == 3
    assert rendered.of_kind("HorizontalPodAutoscaler") == []
    assert rendered.one("PodDisruptionBudget")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["replicaCount=3"], "embedded localnet"),
        (
            ["replicaCount=3", "solana.existingSecret=rpc", f"solana.feeRecipient={FEE_WALLET}"],
            "PostgreSQL",
        ),
        (
            [
                "replicaCount=3",
                "solana.existingSecret=rpc",
                f"solana.feeRecipient={FEE_WALLET}",
                "database.existingSecret=db",
            ],
            "receiptKeys.existingSecret",
        ),
        (["solana.existingSecret=rpc"], "solana.feeRecipient"),
    ],
)
def test_scale_out_guards(sets: list[str], message: str) -> None:
    assert message in render_error(sets=sets)


def test_receipt_keys_come_from_a_secret_every_replica_mounts(
    production_render: Rendered, default_render: Rendered
) -> None:
    """One key file for all replicas: the Secret as a directory (updates reach the pod,
    a subPath would not), read-only, readable by the server's group only."""
    values = yaml.safe_load((CHART / "values-production.yaml").read_text())
    server = _server(production_render)
    path = _settings(production_render)["AGENT_STAKING_RECEIPT_KEY_FILE"]
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == "receipt-keys"]
    assert mount["readOnly"] is True and "subPath" not in mount
    assert path == f"{mount['mountPath']}/receipt-keys.json"
    spec = production_render.one("Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "receipt-keys"]
    secret = volume["secret"]
    assert secret["secretName"] == values["receiptKeys"]["existingSecret"]
    assert secret["items"] == [
        {"key": values["receiptKeys"]["secretKey"], "path": "receipt-keys.json"}
    ]
    assert secret["defaultMode"] == 0o440
    assert spec["securityContext"]["fsGroup"] == server["securityContext"]["runAsGroup"]
    # One embedded replica generates its own in its data directory.
    assert "AGENT_STAKING_RECEIPT_KEY_FILE" not in _settings(default_render)


def test_network_policy(production_render: Rendered) -> None:
    policy = production_render.one("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}
    # Nobody is admitted to the health port: kubelet probes come from the node.
    assert set(rules) == {"grpc", "metrics"}
    namespaces = [
        expression["values"]
        for peer in rules["grpc"]
        for expression in peer.get("namespaceSelector", {}).get("matchExpressions", [])
    ]
    assert namespaces == [["agents", "ingress-nginx"]]
    # The helm test pod carries the client label the policy admits.
    smoke_labels = production_render.one("Pod")["metadata"]["labels"]
    client_selectors = [
        p["podSelector"]["matchLabels"] for p in rules["grpc"] if "podSelector" in p
    ]
    assert any(selector.items() <= smoke_labels.items() for selector in client_selectors)
    (metrics_peer,) = rules["metrics"]
    assert metrics_peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }


def test_migration_job_is_a_pre_install_hook(production_render: Rendered) -> None:
    job = production_render.one("Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["agent-staking", "keys", "migrate"]
    assert container["image"] == _server(production_render)["image"]
    # A hook runs before the chart's ConfigMap and ServiceAccount exist.
    assert "envFrom" not in container
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_no_migration_job_with_sqlite(default_render: Rendered) -> None:
    assert default_render.of_kind("Job") == []


# -- Prometheus, Grafana --------------------------------------------------------------


def test_monitoring_objects_need_their_crds() -> None:
    """ServiceMonitor and PrometheusRule only where the cluster has the CRDs."""
    without = render(production=True)
    assert without.kinds() & CUSTOM_RESOURCES == set()
    with_crds = render(production=True, api_versions=PROMETHEUS_OPERATOR_APIS)
    assert with_crds.kinds() >= CUSTOM_RESOURCES


def test_service_monitor_scrapes_the_metrics_port(production_render: Rendered) -> None:
    monitor = production_render.one("ServiceMonitor")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selected = [
        s
        for s in production_render.of_kind("Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        and any(p["name"] == "metrics" for p in s["spec"]["ports"])
    ]
    assert len(selected) == 1  # each pod scraped once (the headless Service has no metrics)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_holds_the_alert_rules(production_render: Rendered) -> None:
    rule = production_render.one("PrometheusRule")
    source = yaml.safe_load((CHART / "files" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"]


def test_dashboard_configmap(production_render: Rendered) -> None:
    configmap = production_render.one("ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = configmap["data"].values()
    assert json.loads(content) == json.loads((CHART / "files" / "dashboard.json").read_text())


# -- what an operator reads -----------------------------------------------------------


def test_notes_tell_how_to_reach_the_service() -> None:
    args: list[Any] = template_args(production=True)
    args[0] = "install"
    result = helm(*args, "--dry-run=client")
    notes = result.stdout.split("NOTES:", 1)[1]
    service = f"{RELEASE}.{NAMESPACE}.svc:50051"
    assert service in notes
    assert f"port-forward svc/{RELEASE} 50051:50051" in notes
    # Production serves TLS: grpcurl verifies the server with the CA of its Secret.
    assert "grpcurl -plaintext 127.0.0.1:50051" not in notes
    assert f"-cacert ca.crt -authority {RELEASE}.{NAMESPACE}.svc 127.0.0.1:50051 list" in notes
    assert "get secret agent-staking-tls -o jsonpath='{.data.ca\\.crt}'" in notes
    assert "grpc.health.v1.Health/Check" in notes
    # The probes' view: the plaintext health port of a pod.
    assert "grpcurl -plaintext -d" in notes and "127.0.0.1:50052" in notes
    assert f"helm test {RELEASE}" in notes
    assert "EMBEDDED LOCALNET" not in notes


def test_notes_warn_about_the_embedded_localnet() -> None:
    result = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "EMBEDDED LOCALNET" in notes
    assert "grpcurl -plaintext 127.0.0.1:50051 list" in notes
    assert "/metrics is bound to 127.0.0.1 in each pod" in notes


def test_helm_test_pod_runs_the_smoke_test(production_render: Rendered) -> None:
    """`helm test` runs files/smoke_test.py (test_dockerfile runs the same file against a
    real server) against the release's Service."""
    (container,) = production_render.one("Pod")["spec"]["containers"]
    assert production_render.one("Pod")["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = (CHART / "files" / "smoke_test.py").read_text()
    assert container["command"] == ["python", "-c", script]
    assert container["image"] == _server(production_render)["image"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AGENT_STAKING_TARGET"] == f"{RELEASE}.{NAMESPACE}.svc:50051"


def test_selectors_pick_the_server_pods_only(production_render: Rendered) -> None:
    """The Service, PDB, NetworkPolicy and ServiceMonitor select the server's pods, not the
    migration Job's or the `helm test` pod (a selected test pod would get traffic)."""
    pods = {
        f"{obj['kind']}/{obj['metadata']['name']}": (
            obj["metadata"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]
        )["labels"]
        for obj in production_render.objects
        if obj["kind"] in ("Deployment", "Job", "Pod")
    }
    assert len(pods) == 3
    selectors = [s["spec"]["selector"] for s in production_render.of_kind("Service")]
    selectors += [production_render.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]]
    selectors += [production_render.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"]]
    for selector in selectors:
        chosen = {name for name, labels in pods.items() if selector.items() <= labels.items()}
        assert chosen == {f"Deployment/{RELEASE}"}, selector


def test_app_version_is_the_package_version(default_render: Rendered) -> None:
    """The default image tag is the chart's appVersion: the release pyproject.toml builds."""
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == version
    assert _server(default_render)["image"] == f"agent-staking:{version}"
