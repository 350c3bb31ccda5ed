"""The first start, as a newcomer makes it: a port already taken is one line naming the
address and the flag, nothing is started or created on the way, and the keys the
next start creates are shown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile._server import ROOT, ServeProcess


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _serve(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "AGENT_STAKING_DATA_DIR": str(data_dir),
            "AGENT_STAKING_METRICS_LISTEN": "off",
            "AGENT_STAKING_LOCALNET_LISTEN": "127.0.0.1:0",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("flags", "what", "how"),
    [
        (["--listen", "127.0.0.1:{port}"], "gRPC", "--listen or AGENT_STAKING_LISTEN"),
        (
            ["--listen", "127.0.0.1:0", "--localnet-listen", "127.0.0.1:{port}"],
            "the embedded localnet",
            "--localnet-listen or AGENT_STAKING_LOCALNET_LISTEN",
        ),
    ],
    ids=["grpc", "localnet"],
)
def test_a_taken_port_is_one_line_and_the_next_start_shows_the_keys(
    tmp_path: Path, taken: int, flags: list[str], what: str, how: str
) -> None:
    failed = _serve(tmp_path, *(flag.format(port=taken) for flag in flags))
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        f"agent-staking: cannot listen on 127.0.0.1:{taken} for {what}: address already in "
        f"use (choose another with {how})"
    ], failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    assert "bootstrap_api_key" not in failed.stdout
    # Nothing was started or created on the way: the localnet never logged, no keys.
    assert "started the embedded localnet" not in failed.stdout
    # The next start, with a free port, creates the keys and shows them.
    server = ServeProcess(tmp_path).start()
    try:
        assert set(server.keys) == {"admin", "staking"}
    finally:
        server.stop()


def test_the_localnet_command_says_which_address_is_taken(taken: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "localnet", "--listen", f"127.0.0.1:{taken}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"agent-staking: cannot listen on 127.0.0.1:{taken} for the localnet: address already "
        "in use (choose another with --listen)"
    ]


def test_the_announcement_says_where_state_lives(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "state").start()
    try:
        announcement = server.announcement
    finally:
        server.stop()
    assert announcement["data_dir"] == str((tmp_path / "state").resolve())
    assert announcement["store"] == f"sqlite:///{(tmp_path / 'state' / 'keys.db').resolve()}"
    assert json.dumps(announcement)  # one JSON object, the first line
