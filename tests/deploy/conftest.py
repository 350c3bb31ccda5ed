"""Deployment tests: the Helm chart rendered by the real helm, validated offline, the
alert rules run through promtool, and the container recipe replayed."""

from __future__ import annotations

import pytest

from tests.deploy._tools import PROMETHEUS_OPERATOR_APIS, Rendered, render


@pytest.fixture(scope="session")
def default_render() -> Rendered:
    """The chart with its default values (single replica, embedded localnet)."""
    return render()


@pytest.fixture(scope="session")
def production_render() -> Rendered:
    """values-production.yaml on a cluster with the prometheus-operator CRDs."""
    return render(production=True, api_versions=PROMETHEUS_OPERATOR_APIS)


@pytest.fixture(scope="session", params=["default", "production"])
def any_render(request: pytest.FixtureRequest) -> Rendered:
    if request.param == "default":
        return render()
    return render(production=True, api_versions=PROMETHEUS_OPERATOR_APIS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: builds the wheel and a virtualenv from scratch (about a minute)"
    )
