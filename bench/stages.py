"""Where a call's CPU goes: the server's CPU per call with each interceptor stage.

Starts ``agent-staking serve`` (one worker, as ``bench.run`` does, pinned to
``--server-cpus`` cores while the load generator runs on the others) once per
variant, keeping only some of its interceptor stages (``bench._staged``), and
measures calls/s at saturation and the server's CPU microseconds per call:

- ``all``: every stage, as served;
- ``auth``: authentication only (the servicer needs the caller's key);
- ``auth+<Stage>``: authentication and one more stage, for each other stage;
- ``all, separate``: every stage, each as its own grpc interceptor (grpc.aio then
  runs every ``intercept_service`` and wraps the handlers anew on each call), to
  compare with the chain the service uses.

The difference between ``auth+<Stage>`` and ``auth`` is that stage's own cost. Note
that a stage that sends initial metadata (tracing's ``x-request-id``, the rate
limiter's ``x-ratelimit-*``) carries the cost of that send when it is the only one,
which is shared when both run. Then the same for GetNetworkInfo (``auth``) and the
health Check (no stage: health is open), for the cost of the build itself.

Prints a JSON report; writes it to ``bench/results/stages-<UTC time>.json``.

Run: ``python -m bench.stages [--duration 4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentstaking.v1 import staking_pb2
from grpc_health.v1 import health_pb2
from solders.keypair import Keypair

from bench.grpc_load import LoadSpec, run_load
from bench.localnet_send import _split_cpus, machine
from bench.run import RESULTS, ROOT, SOL, STAKING, start_service

STAGES = (
    "TracingInterceptor",
    "MetricsInterceptor",
    "AccessLogInterceptor",
    "AuthInterceptor",
    "RateLimitInterceptor",
    "BuildMetricsInterceptor",
)
AUTH = "AuthInterceptor"


def _variants() -> list[tuple[str, str, str | None]]:
    """(name, method, stages kept or None for all)."""
    build = STAKING + "BuildStakeTransaction"
    variants: list[tuple[str, str, str | None]] = [
        ("build all", build, None),
        ("build all, separate", build, None),
        ("build auth", build, AUTH),
    ]
    variants += [
        (f"build auth+{stage}", build, f"{AUTH},{stage}") for stage in STAGES if stage != AUTH
    ]
    variants += [
        ("network_info auth", STAKING + "GetNetworkInfo", AUTH),
        ("health none", "/grpc.health.v1.Health/Check", ""),
    ]
    return variants


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per variant")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--server-cpus", type=int, default=1, help="cores pinned to the server")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    server_cpus, client_cpus = _split_cpus(args.server_cpus)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)  # the load generator's processes inherit it
    bodies = {
        STAKING + "BuildStakeTransaction": [
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(Keypair().pubkey()), amount_lamports=2 * SOL
            ).SerializeToString()
            for _ in range(16)
        ],
        STAKING + "GetNetworkInfo": [staking_pb2.GetNetworkInfoRequest().SerializeToString()],
        "/grpc.health.v1.Health/Check": [health_pb2.HealthCheckRequest().SerializeToString()],
    }
    rows: list[dict[str, Any]] = []
    for name, method, stages in _variants():
        service = start_service(
            1,
            server_cpus,
            metrics=False,
            module="bench._staged",
            extra_env={
                **({"BENCH_STAGES": stages} if stages is not None else {}),
                **({"BENCH_SEPARATE": "1"} if name.endswith("separate") else {}),
            },
        )
        try:
            spec = LoadSpec(
                target=service.target,
                method=method,
                requests=bodies[method],
                metadata=[("authorization", f"Bearer {service.secret}")],
                duration=args.duration,
                warmup=args.warmup,
                concurrency=args.concurrency,
            )
            report = run_load(spec, service.pids)
        finally:
            service.stop()
        calls = report["rps"] * (args.duration + args.warmup)  # CPU is counted from warm-up
        cpu = report["server"]["cpu_seconds"]
        bad = sum(n for code, n in report["statusCodeDistribution"].items() if code != "OK")
        row = {
            "variant": name,
            "stages": "all" if stages is None else stages or "none",
            "rps": round(report["rps"], 1),
            "server_cpu_us_per_call": round(cpu / calls * 1e6, 1) if cpu and calls else None,
            "errors": bad,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    base = next(r for r in rows if r["variant"] == "build auth")["server_cpu_us_per_call"]
    for row in rows:
        if row["variant"].startswith("build auth+") and base and row["server_cpu_us_per_call"]:
            row["stage_cost_us"] = round(row["server_cpu_us_per_call"] - base, 1)
    report_all = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.stages", *(argv or sys.argv[1:])]),
        "machine": machine(server_cpus, client_cpus),
        "variants": rows,
    }
    out = args.out or RESULTS / f"stages-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report_all, indent=1) + "\n")
    print(json.dumps(rows, indent=1))
    print(f"saved {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
