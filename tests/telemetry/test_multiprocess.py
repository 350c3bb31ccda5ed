"""Two worker processes writing to one PROMETHEUS_MULTIPROC_DIR, scraped as one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import parse_scrape

ROOT = Path(__file__).resolve().parents[2]

# A worker: counts one call and one Solana request per event metric, reports stats()
# snapshots of a relay and the keys; then leaves (final snapshot) or scrapes.
WORKER = textwrap.dedent(
    """
    import os, sys
    import grpc
    from service.chain import RelayStats
    from service.keys._manager import KeyStats
    from service.telemetry import CallInfo, Metrics

    role, submitted, overdue = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    metrics = Metrics()
    assert metrics.multiprocess
    call = CallInfo(
        service="agentstaking.v1.StakingService", method="GetNetworkInfo", rpc_type="unary"
    )
    metrics.call_started(call)
    call.code, call.duration = grpc.StatusCode.OK, 0.02
    metrics.call_finished(call)
    metrics.rpc_attempt("rpc0", "getSlot", 0.03, None)

    class Relay:
        def stats(self):
            return RelayStats(
                counters={"submitted": submitted},
                rejections={"BLOCKHASH_EXPIRED": 1},
                time_to_confirm_buckets=((1.0, 1), (2.0, 2), (float("inf"), 2)),
                time_to_confirm_sum=2.5,
                time_to_confirm_count=2,
                time_to_confirm_recent=(),
                pending=submitted,
                retained=0,
                observed=0,
                watchers=0,
            )

    class Keys:
        def stats(self):
            return KeyStats(
                by_state={"active": 7}, overdue=overdue, scanned=True, cached_tokens=1
            )

    metrics.watch_relay(Relay())
    metrics.watch_keys(Keys())
    print(os.getpid(), flush=True)
    if role == "leave":
        metrics.publish(live=False)  # what stop() writes last
    else:
        body, _ = metrics.exposition()
        sys.stdout.write(body.decode())
    """
)


def _worker(directory: Path, role: str, submitted: int, overdue: int) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", WORKER, role, str(submitted), str(overdue)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pid, _, body = done.stdout.partition("\n")
    return int(pid), body


@pytest.mark.timeout(60)
def test_two_processes_are_scraped_as_one(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    gone, _ = _worker(directory, "leave", submitted=4, overdue=5)
    live, body = _worker(directory, "scrape", submitted=3, overdue=1)
    scrape = parse_scrape(body)
    call = {
        "grpc_type": "unary",
        "grpc_service": "agentstaking.v1.StakingService",
        "grpc_method": "GetNetworkInfo",
    }
    # Counted per event: summed over both processes.
    assert scrape.value("grpc_server_started_total", **call) == 2
    assert scrape.value("grpc_server_handled_total", **call, grpc_code="OK") == 2
    assert scrape.value("grpc_server_handling_seconds_count", **call) == 2
    assert scrape.value("grpc_server_handling_seconds_bucket", **call, le="0.025") == 2
    solana = {"endpoint": "rpc0", "method": "getSlot"}
    assert scrape.value("agent_staking_solana_rpc_requests_total", **solana) == 2
    # Read from stats(): counters and histograms summed, the process that left included.
    assert scrape.value("agent_staking_relay_transactions_total", event="submitted") == 7
    assert scrape.value("agent_staking_relay_rejections_total", reason="BLOCKHASH_EXPIRED") == 2
    assert scrape.value("agent_staking_relay_time_to_confirm_seconds_count") == 4
    assert scrape.value("agent_staking_relay_time_to_confirm_seconds_bucket", le="1.0") == 2
    assert scrape.value("agent_staking_relay_time_to_confirm_seconds_sum") == 5.0
    # Gauges: live processes only, merged by their mode.
    assert scrape.value("agent_staking_relay_pending") == 3  # sum
    assert scrape.value("agent_staking_api_keys_overdue_rotation") == 1  # max
    assert scrape.value("agent_staking_api_keys", state="active") == 7
    # Per-process metrics carry the process's pid.
    resident = scrape.matching("process_resident_memory_bytes")
    assert [dict(labels) for labels in resident] == [{"pid": str(live)}]
    assert gone != live
