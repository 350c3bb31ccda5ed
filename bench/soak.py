"""Soak: full-stack BuildStakeTransaction at a fixed rate for minutes, watching for leaks.

Starts ``agent-staking serve`` as ``bench.run`` does (embedded localnet, rate limits
far above the load, metrics on a free port, pinned to ``--server-cpus`` cores, the
load generator on the others), then sends BuildStakeTransaction (16 funded wallets)
at ``--rate`` calls per second for ``--duration`` seconds: one open-loop run of
``bench.grpc_load``, every response's status checked. Without ``--rate`` the rate is
half of a short saturation run measured first (a rate the server sustains on this
machine, whatever its speed).

Every ``--sample-every`` seconds it records, per server process, the resident set
size, open file descriptors and threads from ``/proc``, and from ``/metrics``
``process_resident_memory_bytes``, ``process_open_fds``,
``agent_staking_event_loop_tasks`` (per worker) and the method's
``grpc_server_handled_total``.

The verdict compares the first and the last sample taken under load after
``--warmup`` seconds: ``pass`` when no server process's RSS grew by
``--max-rss-growth`` percent (5) or more and no call failed. File descriptor,
thread and task growth are reported for reading, not judged; one more sample, once
the load has stopped, shows what is left.

Writes the report to ``bench/results/soak-<UTC time>.json`` and prints it without
the samples and the raw load report.

Run: ``python -m bench.soak [--duration 300] [--rate R] [--workers 1]
[--sample-every 5] [--warmup 30]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.grpc_load import LoadSpec, handled_by_code, run_load, scrape_metrics
from bench.localnet_send import _split_cpus, machine
from bench.run import RESULTS, ROOT, STAKING, Service, _p, funded_builds, start_service

METHOD = STAKING + "BuildStakeTransaction"
PROC_FIELDS = {"VmRSS:": "rss_bytes", "Threads:": "threads"}
GAUGES = {
    "process_resident_memory_bytes": "rss_bytes",
    "process_open_fds": "open_fds",
    "agent_staking_event_loop_tasks": "event_loop_tasks",
}


def proc_sample(pid: int) -> dict[str, int] | None:
    """RSS (bytes), threads and open file descriptors of `pid`; None once it is gone."""
    sample: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                key = line.split(None, 1)[0] if line.strip() else ""
                if key in PROC_FIELDS:
                    value = int(line.split()[1])
                    sample[PROC_FIELDS[key]] = value * 1024 if key == "VmRSS:" else value
        sample["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    return sample


def metrics_sample(url: str, default_pid: int) -> dict[str, Any]:
    """The per-process gauges by pid and the method's handled calls by code.

    With one worker the gauges carry no ``pid`` label: they are the server's."""
    samples = scrape_metrics(url)
    by_pid: dict[str, dict[str, float]] = {}
    for sample in samples:
        if sample.name in GAUGES:
            pid = sample.labels.get("pid", str(default_pid))
            by_pid.setdefault(pid, {})[GAUGES[sample.name]] = sample.value
    return {"processes": by_pid, "handled": handled_by_code(samples, METHOD)}


class Sampler(threading.Thread):
    """Samples /proc and /metrics every `every` seconds until stopped."""

    def __init__(self, service: Service, every: float) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.every = every
        self.samples: list[dict[str, Any]] = []
        self.start_time = time.monotonic()
        self._stop_event = threading.Event()

    def sample(self, phase: str) -> dict[str, Any]:
        service = self.service
        entry: dict[str, Any] = {
            "t": round(time.monotonic() - self.start_time, 2),
            "phase": phase,
            "proc": {str(pid): proc_sample(pid) for pid in service.pids},
        }
        if service.metrics is not None:
            try:
                entry["metrics"] = metrics_sample(
                    f"http://{service.metrics}/metrics", service.pids[0]
                )
            except OSError as exc:
                entry["metrics"] = {"error": str(exc)}
        self.samples.append(entry)
        return entry

    def run(self) -> None:
        due = self.start_time
        while True:
            entry = self.sample("load")
            rss = sum(p["rss_bytes"] for p in entry["proc"].values() if p)
            print(f"soak t={entry['t']:7.1f}s rss {rss / 2**20:7.1f} MiB", file=sys.stderr)
            due += self.every
            if self._stop_event.wait(max(0.0, due - time.monotonic())):
                return

    def finish(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample("after")  # the last call answered, the client's connections closed


def _growth(first: float | None, last: float | None) -> float | None:
    if first is None or last is None or not first:
        return None
    return round(100 * (last - first) / first, 2)


def analyse(samples: list[dict[str, Any]], roles: dict[str, str], warmup: float) -> dict[str, Any]:
    """Growth of every server process between the first and last sample taken under
    load after warm-up, and where it stood once the load had stopped."""
    window = [s for s in samples if s["phase"] == "load" and s["t"] >= warmup]
    after = next((s for s in reversed(samples) if s["phase"] == "after"), None)
    processes: dict[str, Any] = {}
    if len(window) < 2:
        return {"samples_after_warmup": len(window), "processes": processes}
    first, last = window[0], window[-1]
    for pid, role in roles.items():
        series = [s["proc"].get(pid) for s in window]
        present = [p for p in series if p]
        if not present:
            continue
        rss_first, rss_last = present[0]["rss_bytes"], present[-1]["rss_bytes"]
        rss_max = max(p["rss_bytes"] for p in present)
        tasks = [
            s.get("metrics", {}).get("processes", {}).get(pid, {}).get("event_loop_tasks")
            for s in window
        ]
        known_tasks = [t for t in tasks if t is not None]
        processes[pid] = {
            "role": role,
            "rss_first_bytes": rss_first,
            "rss_last_bytes": rss_last,
            "rss_max_bytes": rss_max,
            "rss_growth_percent": _growth(rss_first, rss_last),
            "rss_max_growth_percent": _growth(rss_first, rss_max),
            "fds_first": present[0]["fds"],
            "fds_last": present[-1]["fds"],
            "fds_max": max(p["fds"] for p in present),
            "threads_first": present[0]["threads"],
            "threads_last": present[-1]["threads"],
            "event_loop_tasks_first": known_tasks[0] if known_tasks else None,
            "event_loop_tasks_last": known_tasks[-1] if known_tasks else None,
            "event_loop_tasks_max": max(known_tasks) if known_tasks else None,
            "exited": len(present) < len(series),
            "after_load": None
            if after is None
            else {
                **(after["proc"].get(pid) or {}),
                "event_loop_tasks": after.get("metrics", {})
                .get("processes", {})
                .get(pid, {})
                .get("event_loop_tasks"),
            },
        }
    return {
        "samples_after_warmup": len(window),
        "from_t": first["t"],
        "to_t": last["t"],
        "processes": processes,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument(
        "--rate", type=float, default=None, help="calls/s (default: half of saturation)"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--log-level", default="INFO", help="the service's (INFO: with the access log)"
    )
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds not judged")
    parser.add_argument("--max-rss-growth", type=float, default=5.0, help="percent")
    parser.add_argument("--server-cpus", type=int, default=1, help="cores pinned to the server")
    parser.add_argument("--saturation-seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=1000, help="cap on calls in flight")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.warmup >= args.duration:
        raise SystemExit("--warmup must be shorter than --duration")
    server_cpus, client_cpus = _split_cpus(args.server_cpus)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)  # the load generator's processes inherit it
    started = datetime.now(UTC)
    service = start_service(args.workers, server_cpus, log_level=args.log_level)
    try:
        _, builds = funded_builds(service.rpc_url)
        spec = LoadSpec(
            target=service.target,
            method=METHOD,
            requests=builds,
            metadata=[("authorization", f"Bearer {service.secret}")],
            processes=args.processes,
        )
        rate_source: dict[str, Any] = {"given": args.rate}
        rate = args.rate
        if rate is None:
            saturation = run_load(
                replace(spec, duration=args.saturation_seconds, concurrency=64), service.pids
            )
            rate = max(1.0, round(saturation["rps"] / 2))
            rate_source = {
                "half_of_saturation_rps": saturation["rps"],
                "saturation_seconds": args.saturation_seconds,
                "saturation_errors": {
                    k: n for k, n in saturation["statusCodeDistribution"].items() if k != "OK"
                },
            }
        print(f"soak: {rate:.0f}/s for {args.duration:.0f}s", file=sys.stderr, flush=True)
        sampler = Sampler(service, args.sample_every)
        sampler.start()
        # No grpc_load warm-up: every call of the soak is recorded and checked.
        load = run_load(
            replace(
                spec,
                rate=rate,
                duration=args.duration,
                warmup=0.0,
                concurrency=args.concurrency,
            ),
            service.pids,
        )
        sampler.finish()
    finally:
        service.stop()
    roles = {
        str(pid): ("server" if args.workers == 1 else "parent") if i == 0 else "worker"
        for i, pid in enumerate(service.pids)
    }
    growth = analyse(sampler.samples, roles, args.warmup)
    errors = {k: n for k, n in load["statusCodeDistribution"].items() if k != "OK"}
    worst = max(
        (
            p["rss_growth_percent"]
            for p in growth["processes"].values()
            if p["rss_growth_percent"] is not None
        ),
        default=None,
    )
    reasons = []
    if growth["samples_after_warmup"] < 2:
        reasons.append("fewer than 2 samples after warm-up")
    if worst is not None and worst >= args.max_rss_growth:
        reasons.append(f"RSS grew {worst:.1f} % after warm-up (limit {args.max_rss_growth} %)")
    if errors or not load["count"]:
        reasons.append(f"{sum(errors.values())} error responses of {load['count']}")
    first_metrics = sampler.samples[0].get("metrics", {})
    last_metrics = sampler.samples[-1].get("metrics", {})
    server_counted = None
    if "handled" in first_metrics and "handled" in last_metrics:
        before = first_metrics["handled"]
        server_counted = {
            code: n - before.get(code, 0)
            for code, n in last_metrics["handled"].items()
            if n - before.get(code, 0)
        }
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.soak", *(argv or sys.argv[1:])]),
        "verdict": {
            "pass": not reasons,
            "reasons": reasons,
            "criteria": f"RSS growth < {args.max_rss_growth} % after warm-up (every server "
            "process, last vs first sample) and no error responses",
        },
        "workers": args.workers,
        "rate": rate,
        "rate_source": rate_source,
        "duration": args.duration,
        "warmup": args.warmup,
        "sample_every": args.sample_every,
        "calls": load["count"],
        "achieved_rps": load["rps"],
        "errors": errors,
        "errorDistribution": load["errorDistribution"],
        "server_counted": server_counted,
        "latency_ms": {f"p{p}": _p(load, p) for p in (10, 25, 50, 75, 90, 95, 99)}
        | {"max": load["slowest"] / 1e6, "mean": load["average"] / 1e6},
        "rss_growth_percent_max": worst,
        "growth": growth,
        "load": {k: v for k, v in load.items() if k != "machine"},
        "machine": machine(server_cpus, client_cpus),
        "samples": sampler.samples,
    }
    out = args.out or RESULTS / f"soak-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("samples", "load")}, indent=2))
    print(f"saved {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
