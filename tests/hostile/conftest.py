"""One real `agent-staking serve` process per module of the hostile suite."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from ._server import ServeProcess

SUITE_ENV = {
    # The suites send more calls than an agent would.
    "AGENT_STAKING_RATELIMIT_KEY_PER_MINUTE": "0",
    "AGENT_STAKING_RATELIMIT_WALLET_PER_MINUTE": "0",
}


@contextlib.contextmanager
def serving(directory: Path, env: Mapping[str, str] | None = None) -> Iterator[ServeProcess]:
    """A serve process with ``env`` on top of the suite's; afterwards, whatever it was
    sent, it must have exited cleanly and logged no traceback and no error."""
    process = ServeProcess(directory, env={**SUITE_ENV, **(env or {})}).start()
    try:
        yield process
    finally:
        code = process.stop()
    assert code == 0, process.output.decode(errors="replace")[-4000:]
    assert_no_errors_logged(process)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """The service on its embedded default (see :func:`serving`)."""
    with serving(tmp_path_factory.mktemp("serve")) as process:
        yield process


def assert_no_errors_logged(process: ServeProcess) -> None:
    for record in process.log_records():
        text = json.dumps(record)
        assert "Traceback" not in text, text[:2000]
        assert record.get("level") not in ("ERROR", "CRITICAL"), text[:2000]
