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

With ``--callgrind`` each variant's server runs under Valgrind's callgrind instead,
and the report gives the instructions it executes per call (``bench._callgrind``):
``--calls`` calls (``--call-concurrency`` at a time, one by default) after
``--warmup-calls`` uncounted ones, ``--repeats`` times (the least count is reported:
background work only adds), with the server's timers set to wait past the run. The
localnet runs in its own process, outside the count; an ``echo`` variant adds the bare
grpc.aio echo server, the floor. Unlike CPU time, an instruction count does not move
with the machine's load, so one run shows what a change does; ``--variants`` picks
some. With ``--priced`` that localnet's recent prioritization fees are
not zero, as mainnet's are (``bench._priced``): every build pays a price.

Both modes log at ``--log-level`` INFO, the default configuration: the access log on.

Prints a JSON report; writes it to ``bench/results/stages-<UTC time>.json``.

Run: ``python -m bench.stages [--duration 4]`` or ``python -m bench.stages --callgrind``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from agentstaking.v1 import staking_pb2
from grpc_health.v1 import health_pb2
from solders.keypair import Keypair

from bench import _callgrind
from bench._priced import pay_priority_fees
from bench.echo_server import METHOD as ECHO
from bench.grpc_load import LoadSpec, run_load
from bench.localnet_send import _split_cpus, machine
from bench.run import (
    RESULTS,
    ROOT,
    SOL,
    STAKING,
    Localnet,
    start_echo,
    start_localnet,
    start_service,
)

STAGES = (
    "Admission",
    "TracingInterceptor",
    "MetricsInterceptor",
    "AccessLogInterceptor",
    "AuthInterceptor",
    "RateLimitInterceptor",
    "BuildMetricsInterceptor",
    "RequestCheck",
)
AUTH = "AuthInterceptor"
ECHO_VARIANT = "echo"
# Under callgrind: the server's timers (probes, polls, the blockhash refresh: work per
# second, not per call, and a window lasts as long as the machine's load makes it)
# wait past the run. The blockhash fetched at start-up is handed out all along (nothing
# built here is sent), and Solana requests may take seconds under Valgrind on a busy
# machine.
QUIET_TIMERS = {
    f"AGENT_STAKING_{name.upper()}_SECONDS": "3600"
    for name in (
        "rpc_probe_interval",
        "database_recheck",
        "key_usage_flush",
        "key_cache_ttl",
        "relay_poll",
        "events_poll",
        "events_producer_interval",
        "context_refresh",
        "redis_recheck",
        "blockhash_refresh",
        # Each wallet's recent prioritization fees: read once, then reused, as at the
        # throughput runs' rates (under Valgrind a 2 s answer would be read again every
        # few calls of the same wallet, and counted as the call's).
        "priority_fees_cache",
    )
}
QUIET_TIMERS["AGENT_STAKING_BLOCKHASH_MIN_REMAINING_BLOCKS"] = "-1000000"
QUIET_TIMERS["AGENT_STAKING_RPC_TIMEOUT_SECONDS"] = "30"


def _variants(callgrind: bool = False) -> list[tuple[str, str, str | None]]:
    """(name, method, stages kept or None for all)."""
    build = STAKING + "BuildStakeTransaction"
    variants: list[tuple[str, str, str | None]] = [(ECHO_VARIANT, ECHO, None)] if callgrind else []
    variants += [
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


def _stage_env(name: str, stages: str | None) -> dict[str, str]:
    return {
        **({"BENCH_STAGES": stages} if stages is not None else {}),
        **({"BENCH_SEPARATE": "1"} if name.endswith("separate") else {}),
    }


def _saturation(
    args: argparse.Namespace,
    name: str,
    method: str,
    stages: str | None,
    requests: list[bytes],
    server_cpus: Sequence[int] | None,
) -> dict[str, Any]:
    """Calls/s at saturation and the server's CPU per call."""
    service = start_service(
        1,
        server_cpus,
        metrics=False,
        module="bench._staged",
        extra_env=_stage_env(name, stages),
        log_level=args.log_level,
    )
    try:
        spec = LoadSpec(
            target=service.target,
            method=method,
            requests=requests,
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
    return {
        "rps": round(report["rps"], 1),
        "server_cpu_us_per_call": round(cpu / calls * 1e6, 1) if cpu and calls else None,
        "errors": bad,
    }


def _caller(
    target: str, method: str, requests: list[bytes], metadata: list[tuple[str, str]], at_once: int
) -> tuple[grpc.Channel, Callable[[int], None]]:
    """A channel and ``calls(n)``: n calls, ``at_once`` in flight; raises on a failed one."""
    channel = grpc.insecure_channel(target)
    stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
    pairs = tuple(metadata)
    sent = 0

    def calls(count: int) -> None:
        nonlocal sent
        done = 0
        while done < count:
            batch = [
                stub.future(requests[(sent + i) % len(requests)], metadata=pairs, timeout=120)
                for i in range(min(at_once, count - done))
            ]
            for future in batch:
                future.result()
            sent += len(batch)
            done += len(batch)

    return channel, calls


def _instructions(
    args: argparse.Namespace,
    name: str,
    method: str,
    stages: str | None,
    requests: list[bytes],
    server_cpus: Sequence[int] | None,
    localnet: Localnet,
) -> dict[str, Any]:
    """Instructions per call of the server under callgrind."""
    with tempfile.TemporaryDirectory(prefix="stages-callgrind-") as out:
        wrapper = _callgrind.wrapper(out)
        if name == ECHO_VARIANT:
            echo, target, pids = start_echo(1, server_cpus, wrapper=wrapper)
            stop, metadata = echo.stop, []
        else:
            service = start_service(
                1,
                server_cpus,
                metrics=False,
                module="bench._staged",
                # Dict and set orders the same in every run.
                extra_env={**_stage_env(name, stages), **QUIET_TIMERS, "PYTHONHASHSEED": "0"},
                localnet=localnet,
                log_level=args.log_level,
                wrapper=wrapper,
            )
            target, pids, stop = service.target, service.pids, service.stop
            metadata = [("authorization", f"Bearer {service.secret}")]
        try:
            channel, calls = _caller(target, method, requests, metadata, args.call_concurrency)
            with channel:
                calls(args.warmup_calls)  # caches filled, code paths taken once: not counted
                counter = _callgrind.Counter(pids[0])
                counter.instrument()
                calls(args.call_concurrency)
                counted = _callgrind.per_call(
                    counter, args.calls, lambda: calls(args.calls), args.repeats
                )
        finally:
            stop()
    return {"calls": args.calls, **counted}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per variant")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--server-cpus", type=int, default=1, help="cores pinned to the server")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="the server's log level; INFO (the default configuration) writes the access log",
    )
    parser.add_argument(
        "--variants", default=None, help="comma-separated variant names (default: all)"
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="instructions per call under Valgrind's callgrind instead of CPU time",
    )
    parser.add_argument("--calls", type=int, default=200, help="--callgrind: calls counted")
    parser.add_argument("--warmup-calls", type=int, default=100, help="--callgrind: not counted")
    parser.add_argument("--call-concurrency", type=int, default=1, help="--callgrind")
    parser.add_argument("--repeats", type=int, default=3, help="--callgrind: counted windows")
    parser.add_argument(
        "--priced",
        action="store_true",
        help="--callgrind: on a cluster whose recent prioritization fees are not zero "
        "(mainnet's case): every build pays a price",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.callgrind and _callgrind.valgrind_path() is None:
        raise SystemExit("--callgrind: valgrind and callgrind_control not found")
    if args.priced and not args.callgrind:
        raise SystemExit("--priced: with --callgrind (whose localnet runs apart)")
    variants = _variants(args.callgrind)
    if args.variants is not None:
        # A comma and a space belong to a name ("build all, separate").
        wanted = [name.strip() for name in re.split(r",(?! )", args.variants)]
        unknown = set(wanted) - {name for name, _, _ in variants}
        if unknown:
            raise SystemExit(
                f"unknown variants {sorted(unknown)}; known: {[v[0] for v in variants]}"
            )
        variants = [variant for variant in variants if variant[0] in wanted]
    server_cpus, client_cpus = _split_cpus(args.server_cpus)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)  # the load generator's processes inherit it
    bodies = {
        ECHO: [b"x" * 64],
        STAKING + "BuildStakeTransaction": [
            # The same wallets in every run: one run's counts compare with another's.
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(Keypair.from_seed(bytes([i + 1]) * 32).pubkey()),
                amount_lamports=2 * SOL,
            ).SerializeToString()
            for i in range(16)
        ],
        STAKING + "GetNetworkInfo": [staking_pb2.GetNetworkInfoRequest().SerializeToString()],
        "/grpc.health.v1.Health/Check": [health_pb2.HealthCheckRequest().SerializeToString()],
    }

    def separate_localnet() -> Localnet:
        # Under callgrind the localnet runs apart, uncounted, on the client's cores.
        started = start_localnet(client_cpus)
        if args.priced:
            asyncio.run(pay_priority_fees(started.url))
        return started

    localnet = separate_localnet() if args.callgrind else None
    rows: list[dict[str, Any]] = []
    try:
        for name, method, stages in variants:
            if localnet is not None:
                if localnet.server.process.poll() is not None:
                    log_line = (
                        f"the localnet exited ({localnet.server.process.returncode}): restarted"
                    )
                    print(log_line, file=sys.stderr, flush=True)
                    localnet = separate_localnet()
                try:
                    measured = _instructions(
                        args, name, method, stages, bodies[method], server_cpus, localnet
                    )
                except (grpc.RpcError, RuntimeError, KeyError, subprocess.TimeoutExpired) as exc:
                    # One variant's failure (a call refused, a server that did not
                    # start, callgrind_control not answering) does not cost the others
                    # of a long run.
                    measured = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            else:
                measured = _saturation(args, name, method, stages, bodies[method], server_cpus)
            row = {
                "variant": name,
                "stages": "all" if stages is None else stages or "none",
                **measured,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        if localnet is not None:
            localnet.server.stop()
    key = "instructions_per_call" if args.callgrind else "server_cpu_us_per_call"
    base = next((r.get(key) for r in rows if r["variant"] == "build auth"), None)
    for row in rows:
        if row["variant"].startswith("build auth+") and base and row.get(key):
            row["stage_cost_instructions" if args.callgrind else "stage_cost_us"] = round(
                row[key] - base, 1
            )
    report_all = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.stages", *(argv or sys.argv[1:])]),
        "machine": machine(server_cpus, client_cpus),
        "log_level": args.log_level,
        "variants": rows,
    }
    prefix = "stages-callgrind" if args.callgrind else "stages"
    out = args.out or RESULTS / f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report_all, indent=1) + "\n")
    print(json.dumps(rows, indent=1))
    print(f"saved {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
