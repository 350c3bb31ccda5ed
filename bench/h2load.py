"""Raw HTTP/2 throughput of a unary gRPC method with h2load (nghttp2-client).

One serialised request message is written as a gRPC length-prefixed frame (flag byte
0, 4-byte big-endian length, message) to a data file that h2load POSTs on every
stream, with ``content-type: application/grpc``, ``te: trailers`` and the given
metadata, over ``--connections`` connections of ``--streams`` concurrent streams
each. A C client on pre-encoded bytes: the server, not the load generator, is the
bottleneck.

h2load only sees the HTTP status (200 for every gRPC answer): ``grpc-status`` is in
the trailers. So the server's own ``grpc_server_handled_total`` of the method is
scraped from ``--metrics`` before and after the run, with the server idle, and its
difference by ``grpc_code`` is the status distribution. The warm-up is a separate
h2load run before the first scrape (rather than ``--warm-up-time``), so that the
counter difference covers the measured run alone. Without ``--metrics`` (the echo
baseline has none) the report says ``server_counted: null`` and gives the HTTP
statuses.

Latency percentiles are exact, from h2load's ``--log-file`` (one line per request:
start time, HTTP status, microseconds). The report has grpc_load's ghz-compatible
fields plus ``tool``, ``command``, h2load's own counters and the cross-check.

Run: ``python -m bench.h2load --target 127.0.0.1:50051 --method
/grpc.health.v1.Health/Check --data-hex '' --duration 10 --connections 4 --streams 32``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.grpc_load import (
    PERCENTAGES,
    _peak_rss_bytes,
    _percentile,
    handled_by_code,
    scrape_metrics,
)
from bench.localnet_send import _process_cpu_seconds, machine


@dataclass
class H2LoadSpec:
    target: str
    method: str
    request: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    duration: float = 10.0
    warmup: float = 1.0
    connections: int = 4
    streams: int = 16
    """Concurrent streams per connection."""
    threads: int = 1
    h2load: str = "h2load"
    rps: float | None = None
    """Paced: requests per second for each connection (h2load ``--rps``); None:
    saturation. h2load paces a closed loop, so a stalled server delays the next
    request instead of showing in its latency: read it with one stream per
    connection at a rate far below saturation."""


def h2load_path() -> str | None:
    """h2load on PATH, else Debian's /usr/bin/h2load; None when not installed."""
    if found := shutil.which("h2load"):
        return found
    return "/usr/bin/h2load" if os.access("/usr/bin/h2load", os.X_OK) else None


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC message as it goes on the wire."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def metrics_url(value: str) -> str:
    """``host:port`` or a URL -> the URL of ``/metrics``."""
    if "://" not in value:
        value = f"http://{value}"
    return value if value.rstrip("/").endswith("/metrics") else value.rstrip("/") + "/metrics"


def command(spec: H2LoadSpec, data: Path, duration: float, log: Path | None) -> list[str]:
    args = [
        spec.h2load,
        f"http://{spec.target}{spec.method}",
        "-d",
        str(data),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
    ]
    for key, value in spec.headers:
        args += ["-H", f"{key}: {value}"]
    args += [
        "-c",
        str(spec.connections),
        "-m",
        str(spec.streams),
        "-t",
        str(max(1, min(spec.threads, spec.connections))),
        "-D",
        f"{round(duration * 1000)}ms",  # whole units only: "2.5" is refused
    ]
    if spec.rps is not None:
        args += ["--rps", f"{spec.rps:g}"]
    if log is not None:
        args += ["--log-file", str(log)]
    return args


_UNITS = {"us": 1e3, "ms": 1e6, "s": 1e9}


def _ns(text: str) -> int:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"not an h2load duration: {text!r}")
    return int(float(match[1]) * _UNITS[match[2]])


def parse_output(text: str) -> dict[str, Any]:
    """The summary h2load prints (counts, HTTP status classes, time for request)."""
    parsed: dict[str, Any] = {}
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    if finished:
        parsed["seconds"] = float(finished[1])
        parsed["req_per_s"] = float(finished[2])
    requests = re.search(r"requests: (.*)", text)
    if requests:
        for number, label in re.findall(r"(\d+) (\w+)", requests[1]):
            parsed[label] = int(number)
    statuses = re.search(r"status codes: (.*)", text)
    if statuses:
        parsed["status_codes"] = {k: int(n) for n, k in re.findall(r"(\d+) (\dxx)", statuses[1])}
    timing = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if timing:
        parsed["time_for_request_ns"] = dict(
            zip(("min", "max", "mean", "sd"), (_ns(t) for t in timing.groups()), strict=True)
        )
    return parsed


def read_log(path: Path) -> tuple[list[int], int]:
    """Latencies (ns) of every request in h2load's log file, and how many failed
    (status -1: the stream was reset or its connection broke)."""
    latencies: list[int] = []
    failed = 0
    with open(path, encoding="ascii") as lines:
        for line in lines:
            columns = line.split("\t")
            if len(columns) < 3:
                continue
            latencies.append(int(columns[2]) * 1000)
            failed += columns[1] == "-1"
    return latencies, failed


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _settled(url: str, method: str, notes: list[str]) -> dict[str, int] | None:
    """The method's counters once calls cancelled or finished after the client left
    have been counted (two equal scrapes in a row); None, noted, when unreachable."""
    try:
        previous = handled_by_code(scrape_metrics(url), method)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.25)
            current = handled_by_code(scrape_metrics(url), method)
            if current == previous:
                break
            previous = current
    except (OSError, ValueError) as exc:
        notes.append(f"metrics {url} not read: {exc}")
        return None
    return previous


def shown(args: list[str]) -> str:
    """The command line for the report, credentials left out."""
    return shlex.join(
        re.sub(r"^(authorization:\s*\S+\s).*", r"\1<redacted>", arg, flags=re.IGNORECASE)
        for arg in args
    )


def _run(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shown(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def run_h2load(
    spec: H2LoadSpec, server_pids: Sequence[int] = (), metrics: str | None = None
) -> dict[str, Any]:
    """Run `spec` (warm-up, then the measured run); the report as a JSON-able dict."""
    url = metrics_url(metrics) if metrics else None
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        data = Path(tmp) / "request.grpc"
        data.write_bytes(grpc_frame(spec.request))
        log = Path(tmp) / "requests.log"
        warmup = command(spec, data, spec.warmup, None) if spec.warmup > 0 else None
        if warmup is not None:
            _run(warmup)
        before = _settled(url, spec.method, notes) if url else None
        main = command(spec, data, spec.duration, log)
        cpu_before = {pid: _process_cpu_seconds(pid) for pid in server_pids}
        client_before = _children_cpu()
        output = _run(main)
        client_cpu = _children_cpu() - client_before
        after = _settled(url, spec.method, notes) if url and before is not None else None
        cpu_after = {pid: _process_cpu_seconds(pid) for pid in server_pids}
        latencies, failed_streams = read_log(log)
    parsed = parse_output(output)
    latencies.sort()
    count = int(parsed.get("done", len(latencies)))
    # h2load's req/s is done / -D; its "finished in" also has the connects and the stop.
    seconds = spec.duration
    succeeded = int(parsed.get("succeeded", 0))
    in_flight = spec.connections * spec.streams
    # Streams h2load started but had not seen finish when its duration ended.
    unfinished = int(parsed.get("started", count)) - count
    errors: dict[str, int] = {}
    for label, what in (
        ("failed", "h2load: HTTP status not 2xx/3xx"),
        ("errored", "h2load: stream reset or connection error"),
        ("timeout", "h2load: timeout"),
    ):
        if parsed.get(label):
            errors[what] = int(parsed[label])
    server_counted: dict[str, int] | None = None
    cross_check: dict[str, Any] | None = None
    if before is not None and after is not None:
        server_counted = {
            code: n - before.get(code, 0) for code, n in after.items() if n - before.get(code, 0)
        }
        statuses = dict(server_counted)
        ok = server_counted.get("OK", 0)
        canceled = server_counted.get("Canceled", 0)
        # Each stream h2load abandoned at the end is, for the server, answered (OK),
        # cancelled when the connection closed (Canceled), or never started.
        abandoned_canceled = min(canceled, max(0, unfinished - max(0, ok - succeeded)))
        for code, n in server_counted.items():
            n -= abandoned_canceled if code == "Canceled" else 0
            if code != "OK" and n:
                errors[f"rpc error: code = {code} (server-counted)"] = n
        extra = ok - succeeded
        cross_check = {
            "h2load_succeeded": succeeded,
            "server_ok": ok,
            "difference": extra,
            "server_canceled": canceled,
            "unfinished_at_end": unfinished,
            "match": 0 <= extra <= unfinished - canceled,
        }
        notes.append(
            "statusCodeDistribution: the server's grpc_server_handled_total difference; it "
            "also has the streams h2load abandoned when its duration ended (started - done), "
            "which the server answered (OK) or saw cancelled (Canceled, not an error here)"
        )
    else:
        statuses = {f"HTTP {k}": n for k, n in parsed.get("status_codes", {}).items() if n}
        if parsed.get("errored"):
            statuses["stream error"] = int(parsed["errored"])
        notes.append(
            "no server metrics: statusCodeDistribution holds HTTP statuses; grpc-status is "
            "in the trailers, which h2load does not read, so a gRPC error counts as HTTP 200"
        )
    if len(latencies) != count:
        notes.append(f"log file has {len(latencies)} requests, h2load counted {count} done")
    server_cpu: float | None = None
    if server_pids and all(v is not None for v in (*cpu_before.values(), *cpu_after.values())):
        server_cpu = sum((cpu_after[pid] or 0.0) - (cpu_before[pid] or 0.0) for pid in server_pids)
    rss = [r for r in (_peak_rss_bytes(pid) for pid in server_pids) if r is not None]
    return {
        "name": spec.method,
        "tool": "h2load",
        "command": shown(main),
        "warmup_command": shown(warmup) if warmup is not None else None,
        "mode": "saturation" if spec.rps is None else "fixed-rate",
        "concurrency": in_flight,
        "rate": None if spec.rps is None else spec.rps * spec.connections,
        "count": count,
        "total": int(seconds * 1e9),
        "average": int(sum(latencies) / len(latencies)) if latencies else 0,
        "fastest": latencies[0] if latencies else 0,
        "slowest": latencies[-1] if latencies else 0,
        "rps": float(parsed.get("req_per_s", count / seconds if seconds else 0.0)),
        "latencyDistribution": [
            {"percentage": p, "latency": _percentile(latencies, p)} for p in PERCENTAGES
        ],
        "statusCodeDistribution": statuses,
        "errorDistribution": errors,
        "server_counted": server_counted,
        "cross_check": cross_check,
        "notes": notes,
        "h2load": {**parsed, "failed_streams_in_log": failed_streams},
        "server": {
            "pids": list(server_pids),
            "metrics": url,
            "cpu_seconds": server_cpu,
            "peak_rss_bytes": max(rss) if rss else None,
            "peak_rss_bytes_total": sum(rss) if rss else None,
        },
        "client": {
            "threads": max(1, min(spec.threads, spec.connections)),
            "connections": spec.connections,
            "streams": spec.streams,
            "cpu_seconds": client_cpu,
        },
        "machine": machine(None, None),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--method", required=True, help="/package.Service/Method")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data-hex", default="", help="the serialised request, hex")
    data.add_argument("--data-file", type=Path, help="the serialised request, raw bytes")
    parser.add_argument(
        "--header", action="append", default=[], metavar="'KEY: VALUE'", help="repeatable"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of a prior run")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16, help="per connection")
    parser.add_argument("--threads", type=int, default=1, help="h2load threads")
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    parser.add_argument("--metrics", help="the server's metrics, HOST:PORT or URL")
    parser.add_argument("--h2load", default=None, help="the h2load binary")
    parser.add_argument("--rps", type=float, default=None, help="paced: requests/s per connection")
    args = parser.parse_args(argv)
    binary = args.h2load or h2load_path()
    if binary is None:
        raise SystemExit("h2load not found: install nghttp2-client (bench/setup.sh)")
    request = args.data_file.read_bytes() if args.data_file else bytes.fromhex(args.data_hex)
    headers = []
    for header in args.header:
        key, sep, value = header.partition(":")
        if not sep:
            raise SystemExit(f"--header {header!r}: expected 'KEY: VALUE'")
        headers.append((key.strip().lower(), value.strip()))
    spec = H2LoadSpec(
        target=args.target,
        method=args.method,
        request=request,
        headers=headers,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        streams=args.streams,
        threads=args.threads,
        h2load=binary,
        rps=args.rps,
    )
    print(json.dumps(run_h2load(spec, args.server_pid, args.metrics), indent=2))


if __name__ == "__main__":
    main()
