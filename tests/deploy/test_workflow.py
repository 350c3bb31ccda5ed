"""The GitHub Actions workflow: actionlint and the workflow schema accept it, and it runs
the project's own `.ci/run` with the services and tools that script expects."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests.deploy._tools import REPO, actionlint_path, check_jsonschema

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
ACTIONLINT = Path(__file__).with_name("actionlint.mjs")


def actionlint(*files: Path) -> list[dict[str, Any]]:
    """actionlint's problems with ``files`` (none: an empty list)."""
    result = subprocess.run(
        ["node", str(ACTIONLINT), str(actionlint_path()), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    problems: list[dict[str, Any]] = json.loads(result.stdout)
    return problems


def _workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def test_actionlint_accepts_the_workflow_and_catches_mistakes(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        WORKFLOW.read_text()
        .replace("timeout-minutes:", "timeout-minute:")
        .replace("github.ref", "github.reff")
    )
    problems = actionlint(WORKFLOW, broken)
    assert [p for p in problems if p["file"] == str(WORKFLOW)] == []
    kinds = {p["kind"] for p in problems if p["file"] == str(broken)}
    assert kinds == {"syntax-check", "expression"}, problems


def test_workflow_schema() -> None:
    result = check_jsonschema("--builtin-schema", "vendor.github-workflows", str(WORKFLOW))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_ci_run() -> None:
    (job,) = _workflow()["jobs"].values()
    assert job["steps"][-1]["run"] == "bash .ci/run"
    assert (REPO / ".ci" / "run").is_file()
    # Every push to main and every pull request.
    triggers = _workflow()[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    assert _workflow()["permissions"] == {"contents": "read"}
    # CI's budget for one run of .ci/run.
    assert job["timeout-minutes"] <= 90


def test_the_workflow_gives_ci_run_what_it_expects() -> None:
    """PostgreSQL (trust, database `test`) and Redis where the suite looks, promtool and
    the clients .ci/run probes the services with, the Python and Node.js the project
    asks for."""
    (job,) = _workflow()["jobs"].values()
    postgres, redis = job["services"]["postgres"], job["services"]["redis"]
    assert postgres["env"] == {"POSTGRES_HOST_AUTH_METHOD": "trust", "POSTGRES_DB": "test"}
    assert postgres["ports"] == ["5432:5432"] and redis["ports"] == ["6379:6379"]
    ci_run = (REPO / ".ci" / "run").read_text()
    assert "127.0.0.1 -p 5432" in ci_run and "127.0.0.1 -p 6379" in ci_run
    installs = " ".join(s.get("run", "") for s in job["steps"])
    for package in ("prometheus", "redis-tools", "postgresql-client"):
        assert package in installs.split(), package
    assert "promtool" in ci_run and "pg_isready" in ci_run and "redis-cli" in ci_run
    uses = {s["uses"].split("@")[0]: s.get("with", {}) for s in job["steps"] if "uses" in s}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=" + uses["actions/setup-python"]["python-version"]
    engines = json.loads((REPO / "examples" / "typescript" / "package.json").read_text())
    node = uses["actions/setup-node"]["node-version"]
    assert engines["engines"]["node"].startswith(f">={node}.")
