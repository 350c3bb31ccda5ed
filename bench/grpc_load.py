"""A multi-process grpc.aio load generator with a ghz-compatible JSON report.

Unary calls of one method, with pre-serialised request bytes (``--data-file``: one
base64 request per line, or the empty request), from ``--processes`` client
processes (spawned interpreters), each with its own TCP connections
(``--connections`` in all; channels do not share a subchannel pool) so that
``SO_REUSEPORT`` spreads them over the server's workers. Every response's status is
checked: anything but OK is counted in ``statusCodeDistribution`` and
``errorDistribution``.

Modes:

- saturation (``--concurrency C``): C calls in flight all the time (closed loop);
- fixed rate (``--rate R``): calls start on a fixed schedule (open loop) whatever
  the answers do; a latency is measured from the scheduled start, so a stalled
  server is not hidden (no coordinated omission). ``--concurrency`` then caps the
  calls in flight (a call due while the cap is reached waits, and its wait counts).

With ``--unique`` every request of the data file is sent at most once (distinct
signed transactions, say): the run ends early when they run out.

The report follows ghz's JSON (durations in nanoseconds): ``count``, ``total``,
``average``, ``fastest``, ``slowest``, ``rps``, ``latencyDistribution`` (p10 .. p99),
``statusCodeDistribution``, ``errorDistribution``; plus ``server`` (CPU seconds of
``--server-pid`` processes during the run and their peak RSS), ``client`` and
``machine``.

Run: ``python -m bench.grpc_load --target 127.0.0.1:50051 --method
/grpc.health.v1.Health/Check --duration 10 --concurrency 64``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bench.localnet_send import _process_cpu_seconds, machine

PERCENTAGES = (10, 25, 50, 75, 90, 95, 99)


@dataclass
class LoadSpec:
    target: str
    method: str
    requests: list[bytes]
    metadata: list[tuple[str, str]] = field(default_factory=list)
    duration: float = 10.0
    warmup: float = 1.0
    concurrency: int = 64
    rate: float | None = None
    processes: int = 1
    connections: int = 0
    """0: 4 per client process."""
    unique: bool = False
    timeout: float = 10.0


@dataclass
class _Part:
    """What one client process measured (latencies in ns)."""

    latencies: list[int]
    statuses: Counter[str]
    errors: Counter[str]
    seconds: float
    cpu_seconds: float


def _client_process(spec: LoadSpec, index: int) -> _Part:
    return asyncio.run(_client(spec, index))


async def _client(spec: LoadSpec, index: int) -> _Part:
    connections = max(1, (spec.connections or 4 * spec.processes) // spec.processes)
    channels = [
        grpc.aio.insecure_channel(
            spec.target,
            options=[
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ],
        )
        for _ in range(connections)
    ]
    await asyncio.gather(*(c.channel_ready() for c in channels))
    calls: list[Any] = [c.unary_unary(spec.method) for c in channels]  # bytes in, bytes out
    metadata = tuple(spec.metadata)
    requests = spec.requests[index :: spec.processes] if spec.unique else spec.requests
    next_request = 0
    latencies: list[int] = []
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    recording = False

    def take() -> bytes | None:
        nonlocal next_request
        if spec.unique and next_request >= len(requests):
            return None
        request = requests[next_request % len(requests)]
        next_request += 1
        return request

    async def one(call: Any, request: bytes, started: int) -> None:
        try:
            await call(request, metadata=metadata, timeout=spec.timeout)
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            if recording:
                errors[f"rpc error: code = {code} desc = {exc.details()}"] += 1
        if recording:
            latencies.append(time.perf_counter_ns() - started)
            statuses[code] += 1

    per_process = max(1, spec.concurrency // spec.processes)
    loop_end = time.monotonic() + spec.warmup + spec.duration
    cpu_start = 0.0
    run_start = 0.0

    async def start_recording() -> None:
        nonlocal recording, cpu_start, run_start
        await asyncio.sleep(spec.warmup)
        recording = True
        cpu_start = time.process_time()
        run_start = time.monotonic()

    recorder = asyncio.create_task(start_recording())
    if spec.rate is None:

        async def worker(slot: int) -> None:
            call = calls[slot % len(calls)]
            while time.monotonic() < loop_end:
                request = take()
                if request is None:
                    return
                await one(call, request, time.perf_counter_ns())

        await asyncio.gather(*(worker(slot) for slot in range(per_process)))
    else:
        interval_ns = int(1e9 * spec.processes / spec.rate)
        slots = asyncio.Semaphore(per_process)
        tasks: set[asyncio.Task[None]] = set()
        start_ns = time.perf_counter_ns() + index * interval_ns // spec.processes
        n = 0

        async def scheduled(call: Any, request: bytes, due: int) -> None:
            async with slots:
                await one(call, request, due)

        while time.monotonic() < loop_end:
            due = start_ns + n * interval_ns
            delay = due - time.perf_counter_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            request = take()
            if request is None:
                break
            task = asyncio.create_task(scheduled(calls[n % len(calls)], request, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.gather(*tasks)
    await recorder
    seconds = time.monotonic() - run_start
    cpu = time.process_time() - cpu_start
    for channel in channels:
        await channel.close()
    return _Part(latencies, statuses, errors, seconds, cpu)


def _peak_rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def scrape_metrics(url: str, timeout: float = 10.0) -> list[Sample]:
    """Every sample of a Prometheus text exposition (``GET url``)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def handled_by_code(samples: Sequence[Sample], method: str) -> dict[str, int]:
    """``grpc_server_handled_total`` of `method` (``/package.Service/Method``) by
    ``grpc_code``, summed over ``grpc_type`` (and over workers: counters are merged)."""
    service, _, name = method.lstrip("/").rpartition("/")
    codes: Counter[str] = Counter()
    for sample in samples:
        labels = sample.labels
        if (
            sample.name == "grpc_server_handled_total"
            and labels.get("grpc_service") == service
            and labels.get("grpc_method") == name
        ):
            codes[labels.get("grpc_code", "")] += int(sample.value)
    return dict(codes)


def _percentile(ordered: Sequence[int], p: float) -> int:
    if not ordered:
        return 0
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def run_load(spec: LoadSpec, server_pids: Sequence[int] = ()) -> dict[str, Any]:
    """Run `spec`; the report as a JSON-able dict (ghz's fields and ours)."""
    cpu_before = {pid: _process_cpu_seconds(pid) for pid in server_pids}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(spec.processes, mp_context=context) as pool:
        futures = [pool.submit(_client_process, spec, i) for i in range(spec.processes)]
        parts = [f.result() for f in futures]
    cpu_after = {pid: _process_cpu_seconds(pid) for pid in server_pids}
    latencies = sorted(x for part in parts for x in part.latencies)
    statuses: Counter[str] = sum((p.statuses for p in parts), Counter())
    errors: Counter[str] = sum((p.errors for p in parts), Counter())
    seconds = max((p.seconds for p in parts), default=0.0)
    count = len(latencies)
    server_cpu: float | None = None
    if server_pids and all(v is not None for v in (*cpu_before.values(), *cpu_after.values())):
        server_cpu = sum((cpu_after[pid] or 0.0) - (cpu_before[pid] or 0.0) for pid in server_pids)
    rss = [r for r in (_peak_rss_bytes(pid) for pid in server_pids) if r is not None]
    return {
        "name": spec.method,
        "mode": "saturation" if spec.rate is None else "fixed-rate",
        "concurrency": spec.concurrency,
        "rate": spec.rate,
        "count": count,
        "total": int(seconds * 1e9),
        "average": int(sum(latencies) / count) if count else 0,
        "fastest": latencies[0] if latencies else 0,
        "slowest": latencies[-1] if latencies else 0,
        "rps": count / seconds if seconds else 0.0,
        "latencyDistribution": [
            {"percentage": p, "latency": _percentile(latencies, p)} for p in PERCENTAGES
        ],
        "statusCodeDistribution": dict(statuses),
        "errorDistribution": dict(errors.most_common(10)),
        "server": {
            "pids": list(server_pids),
            "cpu_seconds": server_cpu,
            "peak_rss_bytes": max(rss) if rss else None,
            "peak_rss_bytes_total": sum(rss) if rss else None,
        },
        "client": {
            "processes": spec.processes,
            "connections": spec.connections or 4 * spec.processes,
            "cpu_seconds": sum(p.cpu_seconds for p in parts),
        },
        "machine": machine(None, None),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--method", required=True, help="/package.Service/Method")
    parser.add_argument(
        "--data-file", help="requests, one base64-encoded serialised message per line"
    )
    parser.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not measured")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, help="calls per second (fixed-rate mode)")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument("--connections", type=int, default=0, help="default 4 per process")
    parser.add_argument("--unique", action="store_true", help="send each request once")
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    requests = [b""]
    if args.data_file:
        with open(args.data_file, encoding="ascii") as lines:
            requests = [base64.b64decode(line) for line in lines if line.strip()]
    spec = LoadSpec(
        target=args.target,
        method=args.method,
        requests=requests,
        metadata=[tuple(m.split("=", 1)) for m in args.metadata],
        duration=args.duration,
        warmup=args.warmup,
        concurrency=args.concurrency,
        rate=args.rate,
        processes=args.processes,
        connections=args.connections,
        unique=args.unique,
    )
    print(json.dumps(run_load(spec, args.server_pid), indent=2))


if __name__ == "__main__":
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    main()
