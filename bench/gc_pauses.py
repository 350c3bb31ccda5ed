"""The cyclic garbage collector's passes in a serving process, with the start-up heap
frozen (as ``agent-staking serve`` does) and without.

For each mode (``--modes frozen,unfrozen``) starts ``agent-staking serve`` as
``bench.run`` does (embedded localnet, rate limits far above the load, the access log
on, pinned to ``--server-cpus`` cores and the load generator to the others) through
``bench._gc_traced``, which times every collector pass in the server with
``gc.callbacks``; sends BuildStakeTransaction (16 funded wallets) at saturation for
``--duration`` seconds; stops the server and reports, per generation, the passes made
while it served: how many, their total, median and longest duration in ms. A full
pass (generation 2) walks every object the process tracks; frozen, the start-up heap
is left out of it.

Writes the report to ``bench/results/gc-<UTC time>.json``. Run: ``python -m
bench.gc_pauses [--duration 60]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.grpc_load import LoadSpec, run_load
from bench.localnet_send import _split_cpus, machine
from bench.run import RESULTS, STAKING, funded_builds, start_service

MODES = {"frozen": "1", "unfrozen": "0"}


def _summary(durations: Sequence[float]) -> dict[str, Any]:
    ms = sorted(d * 1000 for d in durations)
    return {
        "passes": len(ms),
        "total_ms": round(sum(ms), 2),
        "p50_ms": round(statistics.median(ms), 3) if ms else None,
        "max_ms": round(ms[-1], 3) if ms else None,
    }


def _measure(mode: str, args: argparse.Namespace, server_cpus: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "gc.json"
        service = start_service(
            1,
            server_cpus,
            module="bench._gc_traced",
            extra_env={"BENCH_GC_OUT": str(out), "BENCH_GC_FREEZE": MODES[mode]},
        )
        try:
            _, builds = funded_builds(service.rpc_url)
            load = run_load(
                LoadSpec(
                    target=service.target,
                    method=STAKING + "BuildStakeTransaction",
                    requests=builds,
                    metadata=[("authorization", f"Bearer {service.secret}")],
                    duration=args.duration,
                    concurrency=64,
                ),
                service.pids,
            )
        finally:
            service.stop()
        traced = json.loads(out.read_text())
    serving = {
        key.split("/")[0]: _summary(durations)
        for key, durations in sorted(traced["passes"].items())
        if key.endswith("/serving")
    }
    return {
        "mode": mode,
        "calls": load["count"],
        "rps": round(load["rps"], 1),
        "errors": {k: n for k, n in load["statusCodeDistribution"].items() if k != "OK"},
        "serving_passes_by_generation": serving,
        "tracked_objects_at_exit": traced["tracked_objects"],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per mode")
    parser.add_argument("--modes", default="frozen,unfrozen", help="comma-separated")
    parser.add_argument("--server-cpus", type=int, default=1, help="cores pinned to the server")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; known: {sorted(MODES)}")
    server_cpus, client_cpus = _split_cpus(args.server_cpus)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)  # the load generator's processes inherit it
    started = datetime.now(UTC)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.gc_pauses", *(argv or sys.argv[1:])]),
        "duration": args.duration,
        "runs": [_measure(mode, args, server_cpus) for mode in modes],
        "machine": machine(server_cpus, client_cpus),
    }
    out = args.out or RESULTS / f"gc-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=1))
    print(f"saved {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
