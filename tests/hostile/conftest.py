"""One real `agent-staking serve` process per module of the hostile suite."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ._server import ServeProcess


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """The service on its embedded default, rate limits per key and wallet off (the
    suites send more calls than an agent would), its output kept. Whatever the module
    sent it, the server must have logged no traceback and no error."""
    process = ServeProcess(
        tmp_path_factory.mktemp("serve"),
        env={
            "AGENT_STAKING_RATELIMIT_KEY_PER_MINUTE": "0",
            "AGENT_STAKING_RATELIMIT_WALLET_PER_MINUTE": "0",
        },
    ).start()
    yield process
    assert process.stop() == 0, process.output.decode(errors="replace")[-4000:]
    assert_no_errors_logged(process)


def assert_no_errors_logged(process: ServeProcess) -> None:
    for record in process.log_records():
        text = json.dumps(record)
        assert "Traceback" not in text, text[:2000]
        assert record.get("level") not in ("ERROR", "CRITICAL"), text[:2000]
