"""The container recipe: the Dockerfile parses (with Docker's own parser, the `dockerfile`
package), is hardened, and what it does works.

No Docker engine here, so the second test replays the recipe on this machine: the
build context is what .dockerignore lets through, the build stage's COPY and RUN
make the wheels, the runtime stage's pip steps install them into a fresh virtualenv
without installers (the image removes its own), then the image's ENTRYPOINT runs with the
image's environment and must report SERVING, pass the chart's `helm test` script and
exit 0 on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dockerfile  # type: ignore[import-not-found]
import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests._pki import CertificateAuthority
from tests.deploy._tools import CHART, REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SMOKE_TEST = CHART / "files" / "smoke_test.py"
GRPCURL = Path(sys.executable).parent / "grpcurl"
# Runtime-stage commands that administer the image (users, directories) and need root
# in the image; the parse test checks their outcome (USER, VOLUME).
IMAGE_ADMIN_COMMANDS = {"groupadd", "useradd", "mkdir", "chown"}


@dataclass
class Stage:
    name: str
    commands: list[Any] = field(default_factory=list)

    def of(self, cmd: str) -> list[Any]:
        return [c for c in self.commands if c.cmd.upper() == cmd]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for command in self.of("ENV"):
            pairs = command.value
            values.update(zip(pairs[::2], pairs[1::2], strict=True))
        return values


def stages() -> list[Stage]:
    result: list[Stage] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd.upper() == "FROM":
            value = command.value
            result.append(Stage(value[2] if len(value) == 3 else str(len(result))))
        elif result:
            result[-1].commands.append(command)
    return result


def shell_steps(command: Any) -> list[str]:
    """A RUN command's `&&`-joined steps."""
    (script,) = command.value
    return [step.strip() for step in script.split("&&")]


def documented_commands() -> list[list[str]]:
    """The commands the Dockerfile's header comment shows (indented lines, joined over
    backslash continuations), split as a shell would split them."""
    commands: list[list[str]] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:]
        if not text.startswith("   "):
            continue
        current += text.strip()
        if current.endswith("\\"):
            current = current[:-1]
            continue
        commands.append(shlex.split(current))
        current = ""
    return commands


def documented_runs() -> tuple[list[str], list[str]]:
    """The documented `docker run` commands: plaintext, then with TLS files mounted."""
    runs = [c for c in documented_commands() if c[:2] == ["docker", "run"]]
    plain = [c for c in runs if "-v" not in c]
    tls = [c for c in runs if "-v" in c]
    assert len(plain) == 1 and len(tls) == 1, runs
    return plain[0], tls[0]


def flag_values(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command[:-1]) if word == flag]


# -- the build context --------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def build_context(root: Path) -> list[str]:
    """Files docker would send as the build context: .dockerignore semantics (last
    matching pattern wins; a pattern matching a directory matches what is in it)."""
    rules: list[tuple[bool, re.Pattern[str], str]] = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        text = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((keep, _pattern(text), re.split(r"[*?\[]", text)[0]))

    def excluded(path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for keep, regex, _ in rules:
            if any(regex.fullmatch(c) for c in candidates):
                verdict = not keep
        return verdict

    def may_hold_kept(directory: str) -> bool:
        return any(
            keep and (prefix == "" or prefix.startswith(directory + "/"))
            for keep, _, prefix in rules
        )

    files: list[str] = []
    for current, dirs, names in os.walk(root):
        relative = os.path.relpath(current, root)
        base = "" if relative == "." else relative + "/"
        dirs[:] = sorted(d for d in dirs if not excluded(base + d) or may_hold_kept(base + d))
        files.extend(base + n for n in sorted(names) if not excluded(base + n))
    return files


def test_dockerignore_keeps_the_context_small() -> None:
    context = build_context(REPO)
    assert "pyproject.toml" in context and "service/server.py" in context
    assert any(f.startswith("gen/agentstaking/v1/") for f in context)
    for unwanted in (".git/", ".venv/", ".tools/", "tests/", "__pycache__/", ".pyc"):
        assert not [f for f in context if unwanted in "/" + f + "/"], unwanted


# -- the recipe ---------------------------------------------------------------------


def test_dockerfile_recipe() -> None:
    build, runtime = stages()[-2:]
    assert len(stages()) >= 2, "multi-stage: build, then runtime"
    # Non-root, by number (so Kubernetes' runAsNonRoot can verify it), the chart's uid.
    (user,) = runtime.of("USER")
    uid = user.value[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    # Exec form: `agent-staking serve` is PID 1 and gets SIGTERM itself.
    (entrypoint,) = runtime.of("ENTRYPOINT")
    assert entrypoint.json and list(entrypoint.value) == ["agent-staking", "serve"]
    assert all(c.json for c in runtime.of("CMD"))
    assert [c.value for c in runtime.of("STOPSIGNAL")] in ([], [("SIGTERM",)])
    # Ports for gRPC, health and metrics: the chart's container ports, the listeners'
    # ports (on every interface: a container's loopback is unreachable from outside).
    server = values["server"]
    exposed = {int(p) for c in runtime.of("EXPOSE") for p in c.value}
    assert exposed == {server["grpcPort"], server["healthPort"], server["metricsPort"]}
    env = runtime.env()
    assert env["AGENT_STAKING_LISTEN"] == f"0.0.0.0:{server['grpcPort']}"
    assert env["AGENT_STAKING_HEALTH_LISTEN"] == f"0.0.0.0:{server['healthPort']}"
    assert env["AGENT_STAKING_METRICS_LISTEN"] == f"0.0.0.0:{server['metricsPort']}"
    # TLS comes from mounted files, never from the image: no certificate setting here.
    assert not [name for name in env if name.startswith("AGENT_STAKING_TLS_")]
    # The documented runs publish every exposed port; the TLS run mounts the files
    # read-only and points the settings into the mount.
    plain, tls = documented_runs()
    for run in (plain, tls):
        assert {int(p.split(":")[-1]) for p in flag_values(run, "-p")} == exposed
    (volume,) = flag_values(tls, "-v")
    _, mount, mode = volume.split(":")
    settings = dict(e.split("=", 1) for e in flag_values(tls, "-e"))
    assert mode == "ro"
    assert set(settings) == {"AGENT_STAKING_TLS_CERT_FILE", "AGENT_STAKING_TLS_KEY_FILE"}
    assert all(path.startswith(mount + "/") for path in settings.values())
    assert [c.value for c in runtime.of("VOLUME")] == [(env["AGENT_STAKING_DATA_DIR"],)]
    # No build tools in the final stage: nothing compiled or fetched there, wheels come
    # from the build stage, the installers are removed.
    runtime_steps = [s for c in runtime.of("RUN") for s in shell_steps(c)]
    for step in runtime_steps:
        assert not re.search(r"apt-get|apk |gcc|build-essential|pip wheel|curl|wget", step), step
    installs = [s for s in runtime_steps if s.startswith("pip install")]
    assert installs and all("--no-index" in s for s in installs)
    (uninstall,) = [s for s in runtime_steps if s.startswith("pip uninstall")]
    assert {"pip", "setuptools", "wheel"} <= set(uninstall.split())
    (mount,) = [f for c in runtime.of("RUN") for f in c.flags if f.startswith("--mount=")]
    assert f"from={build.name}" in mount
    assert not runtime.of("COPY") and not runtime.of("ADD")
    assert any("pip wheel" in s for c in build.of("RUN") for s in shell_steps(c))


# -- the recipe, replayed -------------------------------------------------------------


def _venv(path: Path) -> Path:
    """A fresh virtualenv without pip, setuptools or wheel (what the image ends with)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin"


def _run_steps(steps: list[str], *, cwd: Path, bin_dir: Path, env: dict[str, str]) -> None:
    for step in steps:
        subprocess.run(
            ["sh", "-c", step],
            cwd=cwd,
            env={**env, "PATH": f"{bin_dir}:{env['PATH']}"},
            check=True,
            timeout=600,
            capture_output=True,
        )


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AGENT_STAKING_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    path = [p for p in env.get("PATH", "").split(":") if not p.startswith(sys.prefix)]
    env["PATH"] = ":".join(path) or "/usr/bin:/bin"
    return env


def _events(process: subprocess.Popen[str]) -> queue.Queue[dict[str, Any] | None]:
    """The JSON objects the process prints on stdout, read by a thread (so the pipe never
    fills up); None when stdout closes."""
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.put(event)
        events.put(None)

    threading.Thread(target=read, daemon=True).start()
    return events


def _health(target: str, service: str) -> int:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        status: int = reply.status
        return status


def _wait_serving(target: str) -> None:
    """Until ``target`` (plaintext) reports StakingService SERVING (the localnet started)."""
    deadline = time.monotonic() + 30
    while (
        _health(target, "agentstaking.v1.StakingService") != health_pb2.HealthCheckResponse.SERVING
    ):
        assert time.monotonic() < deadline, "StakingService never SERVING"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_recipe_builds_the_wheel_and_the_entrypoint_serves(tmp_path: Path) -> None:
    build, runtime = stages()[-2:]
    env = _clean_env()

    # Build stage: COPY from the context, then its RUN steps (they make the wheels).
    ((workdir,),) = [c.value for c in build.of("WORKDIR")]
    (mount,) = [f for c in runtime.of("RUN") for f in c.flags if f.startswith("--mount=")]
    options = dict(o.split("=", 1) for o in mount.removeprefix("--mount=").split(","))
    wheels = tmp_path / "wheels"
    paths = {options["source"]: str(wheels), options["target"]: str(wheels)}
    src = tmp_path / "src"
    src.mkdir()
    context = build_context(REPO)
    for command in build.of("COPY"):
        assert not command.flags, "the replay copies from the context only"
        *sources, dest = command.value
        for source in sources:
            source = source.rstrip("/")
            matched = [f for f in context if f == source or f.startswith(source + "/")]
            assert matched, f"COPY {source}: not in the build context"
            for name in matched:
                inside = name if name == source else name[len(source) + 1 :]
                target = src / dest / (os.path.basename(name) if name == source else inside)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, target)
    build_env = {**env, **build.env()}
    # The image build starts with no pip cache; the replay may use this machine's.
    build_env.pop("PIP_NO_CACHE_DIR", None)
    build_steps = [s for c in build.of("RUN") for s in shell_steps(c)]
    for old, new in paths.items():
        build_steps = [s.replace(old, new) for s in build_steps]
    assert workdir.startswith("/")
    # `pip` is this interpreter's (it builds in isolated environments of its own).
    pip_bin = Path(sys.executable).parent
    _run_steps(build_steps, cwd=src, bin_dir=pip_bin, env=build_env)
    built = sorted(p.name for p in wheels.glob("*.whl"))
    assert any(n.startswith("agent_staking-") for n in built), built

    # Runtime stage: its pip steps aimed (PIP_PYTHON) at a fresh virtualenv that has no
    # installer of its own, as the image ends up.
    runtime_bin = _venv(tmp_path / "runtime-venv")
    pip_steps = []
    for command in runtime.of("RUN"):
        for step in shell_steps(command):
            program = step.split()[0]
            if program == "pip":
                for old, new in paths.items():
                    step = step.replace(old, new)
                pip_steps.append(step)
            else:
                assert program in IMAGE_ADMIN_COMMANDS, f"the replay does not know: {step}"
    _run_steps(
        pip_steps,
        cwd=tmp_path,
        bin_dir=pip_bin,
        env={**env, "PIP_PYTHON": str(runtime_bin / "python")},
    )
    assert (runtime_bin / "agent-staking").exists() and not (runtime_bin / "pip").exists()

    # The ENTRYPOINT with the image's environment; only addresses and the data dir are
    # moved to loopback, free ports and a temporary directory.
    (entrypoint,) = runtime.of("ENTRYPOINT")
    argv = [*entrypoint.value, *(a for c in runtime.of("CMD") for a in c.value)]
    argv[0] = str(runtime_bin / argv[0])
    image_env = {**env, **runtime.env(), "PATH": f"{runtime_bin}:{env['PATH']}"}
    smoke_env = {**env, "PATH": f"{runtime_bin}:{env['PATH']}"}

    with _serve(argv, image_env, tmp_path / "plain") as served:
        _wait_serving(served.target)
        assert _health(served.target, "") == health_pb2.HealthCheckResponse.SERVING
        # The health port tells what the gRPC port tells.
        assert _health(served.health, "agentstaking.v1.StakingService") == (
            health_pb2.HealthCheckResponse.SERVING
        )
        # The chart's `helm test` script, with the admin key, in the image's Python.
        smoke = _smoke_test(
            runtime_bin,
            {
                **smoke_env,
                "AGENT_STAKING_TARGET": served.target,
                "AGENT_STAKING_ADMIN_KEY": served.admin_key,
            },
        )
        assert "(plaintext)" in smoke
        assert "ListApiKeys with the admin key: 2 keys" in smoke

    # The header's TLS run: its -e settings, the mounted directory holding a certificate
    # for localhost, then its grpcurl line (run from the directory holding tls/).
    _, tls_run = documented_runs()
    (volume,) = flag_values(tls_run, "-v")
    host_dir, mount, _ = volume.split(":")
    workdir = tmp_path / "tls-run"
    files = workdir / host_dir.removeprefix("$PWD/")
    files.mkdir(parents=True)
    authority = CertificateAuthority(workdir, "image test CA")
    issued = authority.issue("localhost")
    shutil.copy(issued.cert, files / "tls.crt")
    shutil.copy(issued.key, files / "tls.key")
    shutil.copy(authority.cert, files / "ca.crt")
    tls_env = dict(e.split("=", 1) for e in flag_values(tls_run, "-e"))
    tls_env = {k: v.replace(mount, str(files), 1) for k, v in tls_env.items()}
    with _serve(argv, {**image_env, **tls_env}, workdir / "run") as served:
        port = served.target.rpartition(":")[2]
        # Probes still speak plaintext to the health port.
        _wait_serving(served.health)
        smoke = _smoke_test(
            runtime_bin,
            {
                **smoke_env,
                "AGENT_STAKING_TARGET": f"localhost:{port}",
                "AGENT_STAKING_ADMIN_KEY": served.admin_key,
                "AGENT_STAKING_TARGET_CA_FILE": str(files / "ca.crt"),
            },
        )
        assert "(TLS, server verified with" in smoke
        assert "ListApiKeys with the admin key: 2 keys" in smoke
        (grpcurl,) = [c for c in documented_commands() if c[0] == "grpcurl"]
        listed = subprocess.run(
            [
                str(GRPCURL),
                *(w.replace("localhost:50051", f"localhost:{port}") for w in grpcurl[1:]),
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert "agentstaking.v1.StakingService" in listed.stdout.split()


@dataclass
class Served:
    target: str
    health: str
    admin_key: str


_HEALTH_PORT = re.compile(r"^health \(grpc\.health\.v1, plaintext\) on (\S+)$")


@contextlib.contextmanager
def _serve(argv: list[str], env: dict[str, str], directory: Path) -> Iterator[Served]:
    """The entrypoint with ``env``, its listeners moved to free loopback ports and its
    state to ``directory``; stopped with SIGTERM, as the kubelet does after preStop,
    after which it must drain and exit 0 (an unhandled SIGTERM would end it with -15)."""
    data = directory / "data"
    data.mkdir(parents=True)
    serve_env = {
        **env,
        "AGENT_STAKING_LISTEN": "127.0.0.1:0",
        "AGENT_STAKING_HEALTH_LISTEN": "127.0.0.1:0",
        "AGENT_STAKING_METRICS_LISTEN": "127.0.0.1:0",
        "AGENT_STAKING_LOCALNET_LISTEN": "127.0.0.1:0",
        "AGENT_STAKING_DATA_DIR": str(data),
        "AGENT_STAKING_SHUTDOWN_GRACE_SECONDS": "2",
    }
    log = directory / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            argv, cwd=data, env=serve_env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        target, health, admin_key = "", "", ""
        events, deadline = _events(process), time.monotonic() + 90
        while not (target and health and admin_key) and time.monotonic() < deadline:
            try:
                event = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event is None:
                break
            if "listening" in event:
                target = event["listening"]
            if match := _HEALTH_PORT.match(str(event.get("message", ""))):
                health = match.group(1)
            if "admin" in event.get("bootstrap_api_key", {}).get("scopes", []):
                admin_key = event["bootstrap_api_key"]["secret"]
        assert target and health and admin_key, (
            f"no address, health port or admin key printed:\n{log.read_text()}"
        )
        yield Served(target=target, health=health, admin_key=admin_key)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _smoke_test(bin_dir: Path, env: dict[str, str]) -> str:
    """The chart's `helm test` script in the image's Python; its output."""
    smoke = subprocess.run(
        [str(bin_dir / "python"), "-c", SMOKE_TEST.read_text()],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    return smoke.stdout
