"""The alert rules as the chart installs them (the rendered PrometheusRule), checked and
unit-tested with promtool: every alert fires on a synthetic series."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._tools import CHART, Rendered, promtool_path

UNIT_TESTS = CHART / "files" / "alerts.test.yml"


@pytest.fixture
def rules_file(production_render: Rendered, tmp_path: Path) -> Path:
    """The rendered PrometheusRule's rules as a Prometheus rules file."""
    rule = production_render.one("PrometheusRule")
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool_path()), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _alerts(rules: dict[str, Any]) -> set[tuple[str, str]]:
    """(alert name, severity) of every alerting rule."""
    return {
        (r["alert"], r["labels"]["severity"])
        for group in rules["groups"]
        for r in group["rules"]
        if "alert" in r
    }


def test_promtool_check_rules(rules_file: Path) -> None:
    result = _promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_on_the_rendered_rules(rules_file: Path, tmp_path: Path) -> None:
    """files/alerts.test.yml, run against the rules as rendered (not the source file)."""
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    for test in tests["tests"]:
        for series in test.get("input_series", []):
            # promtool's "0x12" (0, twelve times) unquoted is YAML's hexadecimal 18.
            assert isinstance(series["values"], str), (test["name"], series)
    tests["rule_files"] = [str(rules_file)]
    path = tmp_path / "alerts.test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = _promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_in_a_unit_test(rules_file: Path) -> None:
    """Every rule, by name and severity (one alert may have a warning and a critical
    rule, e.g. the certificate's expiry), is seen firing by a unit test."""
    alerts = _alerts(yaml.safe_load(rules_file.read_text()))
    assert alerts, "no alert rules rendered"
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    fired = {
        (case["alertname"], alert["exp_labels"]["severity"])
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        for alert in case.get("exp_alerts") or []
    }
    assert alerts - fired == set(), "alerts no unit test sees firing"


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail."""
    path = tmp_path / "broken.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up ==="}]}]})
    )
    assert _promtool("check", "rules", str(path)).returncode != 0


def test_transport_and_admission_alerts(rules_file: Path) -> None:
    """The certificate's expiry (a warning at 14 days, a page at 3), sustained overload
    refusals and requests that never arrive are alerted on."""
    assert _alerts(yaml.safe_load(rules_file.read_text())) >= {
        ("AgentStakingTLSCertificateExpiring", "warning"),
        ("AgentStakingTLSCertificateExpiring", "critical"),
        ("AgentStakingOverloaded", "warning"),
        ("AgentStakingRequestTimeouts", "warning"),
    }
