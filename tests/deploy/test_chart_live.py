"""The chart's settings on a real server: its ConfigMap loaded as the pod would load it,
its Secret volumes laid out as the kubelet would lay them out (from certificates made
here), then the kubelet's probes, Prometheus's scrape and `helm test` done as each of
them would do it. Only listen addresses (to free loopback ports) and the chain (the
test localnet) differ from the pod."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from tests._pki import CertificateAuthority
from tests.deploy._tools import (
    CHART,
    NAMESPACE,
    PROMETHEUS_OPERATOR_APIS,
    RELEASE,
    Manifest,
    Rendered,
    render,
    secret_files,
    settings_from_env,
)

SERVICE_HOST = f"{RELEASE}.{NAMESPACE}.svc"
SERVING = health_pb2.HealthCheckResponse.SERVING
SMOKE_TEST = CHART / "files" / "smoke_test.py"
MUTUAL_TLS = [
    "tls.enabled=true",
    "tls.existingSecret=server-tls",
    "tls.mutual=true",
    "tls.clientCASecret=agents-ca",
    "metrics.serviceMonitor.enabled=true",
]
PROMETHEUS_TLS = {
    "serverName": SERVICE_HOST,
    "ca": {"secret": {"name": "server-tls", "key": "ca.crt"}},
    "cert": {"secret": {"name": "prometheus-client", "key": "tls.crt"}},
    "keySecret": {"name": "prometheus-client", "key": "tls.key"},
}
PROMETHEUS_CLIENT = f"metrics.serviceMonitor.tlsConfig={json.dumps(PROMETHEUS_TLS)}"

Secrets = dict[str, dict[str, bytes]]


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    """The Secrets an operator would create: the server's kubernetes.io/tls Secret (as
    cert-manager writes it, with its issuer in ca.crt, for the Service's name), the
    agents' CA, and client certificates for `helm test` and Prometheus."""
    directory = tmp_path_factory.mktemp("pki")
    server_ca = CertificateAuthority(directory, "server CA")
    agents_ca = CertificateAuthority(directory, "agents CA")
    server = server_ca.issue("agent-staking", dns_names=(SERVICE_HOST,))

    def tls(cert: Path, key: Path, ca: Path | None = None) -> dict[str, bytes]:
        pair = {"tls.crt": cert.read_bytes(), "tls.key": key.read_bytes()}
        return pair | ({"ca.crt": ca.read_bytes()} if ca else {})

    smoke = agents_ca.issue("helm-test", client=True)
    prometheus = agents_ca.issue("prometheus", client=True)
    return {
        "server-tls": tls(server.cert, server.key, server_ca.cert),
        "agents-ca": {"ca.crt": agents_ca.cert.read_bytes()},
        "smoke-client": tls(smoke.cert, smoke.key),
        "prometheus-client": tls(prometheus.cert, prometheus.key),
    }


def kubelet_mounts(
    pod: Manifest, container: Manifest, secrets: Secrets, root: Path
) -> dict[str, Path]:
    """The container's Secret volumes written under ``root``, file by file as the
    kubelet does (a missing key fails unless the volume is optional); mount path ->
    directory."""
    mounts: dict[str, Path] = {}
    for file in secret_files(pod, container):
        directory = mounts.setdefault(file.mount, root / PurePosixPath(file.mount).name)
        directory.mkdir(parents=True, exist_ok=True)
        data = secrets[file.secret]
        if file.key not in data:
            assert file.optional, f"{file.secret} has no {file.key}"
            continue
        (directory / PurePosixPath(file.path).relative_to(file.mount)).write_bytes(data[file.key])
    return mounts


def localize(value: str, mounts: dict[str, Path]) -> str:
    """A path inside a mount -> the same file under the test's directory."""
    for mount_path, directory in mounts.items():
        if value.startswith(mount_path + "/"):
            return str(directory / PurePosixPath(value).relative_to(mount_path))
    return value


@dataclass
class Pod:
    rendered: Rendered
    server: AgentStakingServer
    admin_key: str
    mounts: dict[str, Path]

    def probe(self, name: str) -> Manifest:
        (container,) = self.rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
        probe: Manifest = container[name]
        return probe


async def start_pod(
    rendered: Rendered,
    secrets: Secrets,
    root: Path,
    localnet: LocalnetServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Pod:
    deployment = rendered.one("Deployment")["spec"]["template"]["spec"]
    (container,) = deployment["containers"]
    mounts = kubelet_mounts(deployment, container, secrets, root / "volumes")
    configmap: dict[str, str] = rendered.one("ConfigMap", RELEASE)["data"]
    data = root / "data"
    data.mkdir()
    settings = settings_from_env(
        {name: localize(value, mounts) for name, value in configmap.items()},
        monkeypatch,
        {
            "listen": "127.0.0.1:0",
            "health_listen": "127.0.0.1:0",
            "metrics_listen": "127.0.0.1:0",
            "rpc_urls": [localnet.url],
            "service_fee_bps": 0,
            "data_dir": data,
            "shutdown_grace_seconds": 1,
        },
    )
    assert settings.tls and settings.tls_cert_file is not None
    server = AgentStakingServer(settings)
    await server.start()
    assert server.keys is not None
    _, admin_key = await server.keys.create(display_name="operator", scopes=["admin"])
    return Pod(rendered=rendered, server=server, admin_key=admin_key, mounts=mounts)


@pytest.fixture(scope="module")
async def pod(
    localnet: LocalnetServer, secrets: Secrets, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pod]:
    """A server with the chart's settings for mutual TLS and a ServiceMonitor."""
    rendered = render(
        sets=[*MUTUAL_TLS, "smokeTest.clientCertSecret=smoke-client"],
        set_json=[PROMETHEUS_CLIENT],
        api_versions=PROMETHEUS_OPERATOR_APIS,
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        started = await start_pod(
            rendered, secrets, tmp_path_factory.mktemp("pod"), localnet, monkeypatch
        )
    yield started
    await started.server.stop(0)


async def _check(target: str, service: str, credentials: grpc.ChannelCredentials | None) -> int:
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        status: int = reply.status
        return status


async def test_kubelet_probes_answer_on_the_health_port(pod: Pod) -> None:
    """What the kubelet does: a plaintext grpc.health.v1 Check of the probe's service on
    the probe's port. The gRPC port itself cannot answer a plaintext probe."""
    endpoint = pod.server.health_endpoint
    assert endpoint is not None
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        service = pod.probe(name)["grpc"]["service"]
        assert await _check(f"127.0.0.1:{endpoint.port}", service, None) == SERVING, name
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _check(f"127.0.0.1:{pod.server.port}", "", None)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def _run_smoke_test(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SMOKE_TEST.read_text()],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def smoke_env(
    rendered: Rendered, secrets: Secrets, root: Path, port: int, key: str
) -> dict[str, str]:
    """The `helm test` pod's environment, its files laid out, aimed at ``port``."""
    pod = rendered.one("Pod")
    (container,) = pod["spec"]["containers"]
    mounts = kubelet_mounts(pod["spec"], container, secrets, root)
    env = {e["name"]: localize(e["value"], mounts) for e in container["env"] if "value" in e}
    host, _, _ = env["AGENT_STAKING_TARGET"].rpartition(":")
    assert host == SERVICE_HOST
    # The certificate names the Service; this machine knows it as localhost.
    env["AGENT_STAKING_TARGET"] = f"localhost:{port}"
    env["AGENT_STAKING_ADMIN_KEY"] = key
    return env


async def test_helm_test_passes_over_mutual_tls(pod: Pod, secrets: Secrets, tmp_path: Path) -> None:
    env = smoke_env(pod.rendered, secrets, tmp_path, pod.server.port, pod.admin_key)
    result = await asyncio.to_thread(_run_smoke_test, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(TLS, server verified with" in result.stdout
    assert "client certificate" in result.stdout
    assert "KeyService/ListApiKeys with the admin key: 1 keys" in result.stdout


async def test_helm_test_without_a_client_certificate_says_so(
    pod: Pod, secrets: Secrets, tmp_path: Path
) -> None:
    rendered = render(
        sets=MUTUAL_TLS, set_json=[PROMETHEUS_CLIENT], api_versions=PROMETHEUS_OPERATOR_APIS
    )
    env = smoke_env(rendered, secrets, tmp_path, pod.server.port, pod.admin_key)
    result = await asyncio.to_thread(_run_smoke_test, env)
    assert result.returncode == 1
    assert "smokeTest.clientCertSecret" in result.stdout


async def test_prometheus_scrapes_as_the_service_monitor_says(
    pod: Pod, secrets: Secrets, tmp_path: Path
) -> None:
    """The ServiceMonitor's scheme and tlsConfig against the real /metrics: the scrape
    verifies the server's name and presents its client certificate; a plaintext
    scrape or one without a client certificate gets nothing."""
    listener = pod.server.metrics_listener
    assert listener is not None
    (endpoint,) = pod.rendered.one("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    tls: dict[str, Any] = endpoint["tlsConfig"]

    def secret_file(selector: dict[str, str], name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(secrets[selector["name"]][selector["key"]])
        return path

    context = ssl.create_default_context(cafile=secret_file(tls["ca"]["secret"], "ca.pem"))
    context.load_cert_chain(
        secret_file(tls["cert"]["secret"], "cert.pem"), secret_file(tls["keySecret"], "key.pem")
    )
    url = f"{endpoint['scheme']}://127.0.0.1:{listener.port}{endpoint['path']}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=context, server_hostname=tls["serverName"]) as response:
            assert response.status == 200
            body = await response.text()
        assert "agent_staking_tls_certificate_expiry_timestamp_seconds" in body
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{listener.port}/metrics") as plain:
                await plain.read()
        anonymous = ssl.create_default_context(cafile=tmp_path / "ca.pem")
        with pytest.raises(aiohttp.ClientError):
            async with session.get(url, ssl=anonymous, server_hostname=tls["serverName"]) as r:
                await r.read()
