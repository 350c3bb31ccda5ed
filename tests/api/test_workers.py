"""`agent-staking serve --workers N`: several processes share the gRPC port."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import grpc
from agentstaking.v1 import staking_pb2, staking_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.mmap_dict import MmapedDict

from service.localnet import LocalnetServer
from service.telemetry._metrics import PUBLISH_SECONDS
from tests._grpc_auth import UnaryUnaryKey
from tests._process import free_port
from tests._wait import until

ROOT = Path(__file__).resolve().parents[2]
# Channels of one process share TCP connections unless told otherwise.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def _handled_by_pid(metrics_dir: Path, method: str) -> Counter[int]:
    """Calls of `method` each worker counted, from its own prometheus_client file."""
    served: Counter[int] = Counter()
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_", 1)[1])
        values = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
        for key, value, *_ in values:
            _name, sample, labels, _help = json.loads(key)
            if sample == "grpc_server_handled_total" and labels.get("grpc_method") == method:
                served[pid] += int(value)
    return served


async def _read_json_line(stream: asyncio.StreamReader) -> dict[str, object]:
    line = await asyncio.wait_for(stream.readline(), 90)
    assert line, "the server exited before announcing itself"
    body: dict[str, object] = json.loads(line)
    return body


async def test_two_workers_share_the_port_and_drain(
    localnet: LocalnetServer, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "AGENT_STAKING_DATA_DIR": str(tmp_path / "data"),
        "AGENT_STAKING_DATABASE_URL": f"sqlite:///{tmp_path / 'keys.db'}",
        "AGENT_STAKING_BOOTSTRAP_KEYS": "true",
        "AGENT_STAKING_SERVICE_FEE_BPS": "0",
        "AGENT_STAKING_SHUTDOWN_GRACE_SECONDS": "2",
        "AGENT_STAKING_LOG_LEVELS": '{"service.access": "WARNING"}',
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "serve",
        "--workers",
        "2",
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--rpc-url",
        localnet.url,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        announcement = await _read_json_line(process.stdout)
        assert announcement["listening"] == f"127.0.0.1:{port}"
        assert announcement["embedded_localnet"] is False
        pids = announcement["workers"]
        assert isinstance(pids, list) and len(set(pids)) == 2
        secrets: dict[str, str] = {}
        for _ in range(2):
            key = (await _read_json_line(process.stdout))["bootstrap_api_key"]
            assert isinstance(key, dict)
            secrets[key["display_name"]] = key["secret"]
        # Keep reading the workers' logs so their pipe never fills.
        drain = asyncio.create_task(process.stdout.read())

        async def calls_on_new_connections(rounds: int) -> None:
            for _ in range(rounds):
                # Each channel is a new TCP connection: the kernel spreads them.
                address = f"127.0.0.1:{port}"
                async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
                    health = health_pb2_grpc.HealthStub(channel)
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                async with grpc.aio.insecure_channel(
                    address,
                    options=OWN_CONNECTION,
                    interceptors=[UnaryUnaryKey(secrets["staking"])],
                ) as channel:
                    staking = staking_pb2_grpc.StakingServiceStub(channel)
                    info = await staking.GetNetworkInfo(
                        staking_pb2.GetNetworkInfoRequest(), timeout=10
                    )
                    assert info.minimum_delegation_lamports > 0

        await asyncio.gather(*(calls_on_new_connections(8) for _ in range(4)))

        # Both workers served calls: each one's own counter file says how many.
        served = _handled_by_pid(metrics_dir, "Check")
        assert set(served) >= set(pids), served
        assert all(served[pid] > 0 for pid in pids), served
        assert sum(served.values()) == 32
        # The metrics port is shared too, and shows both processes.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
        ):
            text = await response.text()
        for pid in pids:
            assert f'process_cpu_seconds_total{{pid="{pid}"}}' in text

        async def frozen_in_every_worker() -> bool:
            # Each worker freezes what its start-up made (out of the garbage collector's
            # passes) once serving; it publishes its gauges every PUBLISH_SECONDS.
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
            ):
                text = await response.text()
            found = [
                re.search(rf'agent_staking_gc_frozen_objects{{pid="{pid}"}} (\S+)', text)
                for pid in pids
            ]
            return all(f is not None and float(f.group(1)) > 10_000 for f in found)

        await until(frozen_in_every_worker, timeout=3 * PUBLISH_SECONDS, what="frozen heaps")

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert time.monotonic() - started < 15
        await drain
        for pid in pids:
            assert not _alive(int(pid))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_need_a_concrete_port(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--workers", "2", "--listen", "127.0.0.1:0"],
        cwd=ROOT,
        env={**os.environ, "AGENT_STAKING_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "port 0 cannot be shared" in result.stderr
