"""One command for the gRPC benchmarks: every scenario, against the echo baseline.

Starts the bare echo server (``bench.echo_server``) and then ``agent-staking serve``
(embedded localnet, rate limits set far above the load, logging at ``--log-level``
INFO as configured by default, so with the access log, metrics on a free port) with
the same ``--workers``, pinned to ``--server-cpus`` cores while the load generator
(``bench.grpc_load``) runs on the others. Each scenario runs at saturation
(``--concurrency`` calls in flight) and at a fixed rate of half its saturation
throughput; the build also at a fixed 100/s. With ``--compare-workers N`` the echo
and build saturation runs are repeated with N workers. With ``--h2load`` (the
default when h2load is installed) echo, health and build also get an h2load
saturation run (``bench.h2load``, same in-flight count), cross-checked against the
service's ``grpc_server_handled_total``.

Scenarios: ``echo`` (baseline), ``health`` (grpc.health.v1 Check), ``network_info``
(GetNetworkInfo), ``build`` (BuildStakeTransaction, full stack, no simulation),
``build_new_wallets`` (the same for a wallet never seen before on every call, so
nothing cached per wallet helps), ``build_simulate`` (the same with
``options.simulate``: funded wallets),
``submit`` (SubmitTransaction of distinct signed System transfers, preflight on).

Prints a table; writes the whole report (ghz-style JSON per run) to
``bench/results/grpc-<date>.json``.

With ``--priced`` the cluster's recent prioritization fees are not zero, as on mainnet
(``bench._priced``, once the service runs): every build, priced by its default level,
then pays a price.

Run: ``python -m bench.run [--duration 5] [--workers 1] [--compare-workers 2] [--priced]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from agentstaking.v1 import staking_pb2, types_pb2
from grpc_health.v1 import health_pb2
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.transaction import VersionedTransaction

from bench._priced import pay_priority_fees
from bench.grpc_load import LoadSpec, run_load
from bench.h2load import H2LoadSpec, h2load_path, run_h2load
from bench.localnet_send import _split_cpus, machine
from service.core import system_transfer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SOL = 1_000_000_000
HIGH = "1000000000"
STAKING = "/agentstaking.v1.StakingService/"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A server subprocess pinned to `cpus`; its stdout read line by line."""

    def __init__(self, command: list[str], env: dict[str, str], cpus: Sequence[int] | None) -> None:
        preexec: Callable[[], None] | None = None
        if cpus is not None:
            pinned = set(cpus)

            def preexec() -> None:
                os.sched_setaffinity(0, pinned)

        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, preexec_fn=preexec
        )
        assert self.process.stdout is not None
        self.stdout: IO[bytes] = self.process.stdout

    def json_line(self) -> dict[str, Any]:
        line = self.stdout.readline()
        if not line:
            raise RuntimeError(f"server {self.process.args!r} exited")
        body: dict[str, Any] = json.loads(line)
        return body

    def drain(self) -> None:
        threading.Thread(target=self.stdout.read, daemon=True).start()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def start_echo(
    workers: int, cpus: Sequence[int] | None, *, wrapper: Sequence[str] = ()
) -> tuple[Server, str, list[int]]:
    """The echo baseline: its server, target and pids (parent first); ``wrapper``
    prefixes the command (a profiler)."""
    port = _free_port()
    echo = Server(
        [
            *wrapper,
            sys.executable,
            "-m",
            "bench.echo_server",
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
        ],
        dict(os.environ),
        cpus,
    )
    announced = echo.json_line()
    return echo, f"127.0.0.1:{port}", [echo.process.pid, *announced.get("workers", [])]


@dataclass
class Service:
    """``agent-staking serve`` as the benchmarks run it."""

    server: Server
    target: str
    rpc_url: str
    """The embedded localnet's JSON-RPC URL."""
    secret: str
    """The bootstrap API key named ``staking``."""
    pids: list[int]
    """The server process, then its workers (with ``--workers N > 1``)."""
    metrics: str | None
    """``host:port`` of ``/metrics``; None when off."""
    data: Path

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.data, ignore_errors=True)


@dataclass
class Localnet:
    """``agent-staking localnet`` in a process of its own."""

    server: Server
    url: str
    faucet: str


def start_localnet(cpus: Sequence[int] | None) -> Localnet:
    """A separate localnet pinned to `cpus` (the load generator's: it is not the
    service's work)."""
    port = _free_port()
    server = Server(
        [sys.executable, "-m", "service", "localnet", "--listen", f"127.0.0.1:{port}"],
        dict(os.environ),
        cpus,
    )
    announced = server.json_line()
    server.drain()
    return Localnet(server=server, url=announced["localnet"], faucet=announced["faucet"])


def start_service(
    workers: int,
    cpus: Sequence[int] | None,
    *,
    metrics: bool = True,
    module: str = "service",
    extra_env: dict[str, str] | None = None,
    localnet: Localnet | None = None,
    log_level: str = "INFO",
    wrapper: Sequence[str] = (),
) -> Service:
    """``python -m service serve --workers N`` with the embedded localnet (or
    ``localnet``, a separate one), rate limits far above any load and logging at
    ``log_level`` (INFO writes the access log), pinned to `cpus` (``module``: another
    entry point with the same command line; ``wrapper`` prefixes the command)."""
    port = _free_port()
    data = Path(tempfile.mkdtemp(prefix="agent-staking-bench-"))
    metrics_listen = f"127.0.0.1:{_free_port()}" if metrics else None
    env = {
        **os.environ,
        "AGENT_STAKING_DATA_DIR": str(data),
        "AGENT_STAKING_LOCALNET_LISTEN": f"127.0.0.1:{_free_port()}",
        "AGENT_STAKING_LOG_LEVEL": log_level,
        "AGENT_STAKING_METRICS_LISTEN": metrics_listen or "off",
        **(extra_env or {}),
    }
    if localnet is not None:
        env["AGENT_STAKING_RPC_URLS"] = json.dumps([localnet.url])
        env["AGENT_STAKING_BOOTSTRAP_KEYS"] = "true"
        # Fees go to an account that exists, as with the embedded localnet's fee wallet.
        env["AGENT_STAKING_FEE_RECIPIENT"] = localnet.faucet
    for dimension in ("KEY", "WALLET", "PEER"):
        env[f"AGENT_STAKING_RATELIMIT_{dimension}_PER_MINUTE"] = HIGH
        env[f"AGENT_STAKING_RATELIMIT_{dimension}_BURST"] = HIGH
    server = Server(
        [
            *wrapper,
            sys.executable,
            "-m",
            module,
            "serve",
            "--workers",
            str(workers),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env,
        cpus,
    )
    announced = server.json_line()
    secret = ""
    for _ in range(2):
        key = server.json_line()["bootstrap_api_key"]
        if key["display_name"] == "staking":
            secret = key["secret"]
    server.drain()
    return Service(
        server=server,
        target=f"127.0.0.1:{port}",
        rpc_url=localnet.url if localnet is not None else announced["solana_rpc"],
        secret=secret,
        pids=[server.process.pid, *announced.get("workers", [])],
        metrics=metrics_listen,
        data=data,
    )


def _rpc(url: str, method: str, *params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(
        url, body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["result"]


def _funded(url: str, count: int) -> list[Keypair]:
    wallets = [Keypair() for _ in range(count)]
    for wallet in wallets:
        _rpc(url, "requestAirdrop", str(wallet.pubkey()), 1000 * SOL)
    time.sleep(1)  # a slot or two: the airdrops are in the tip
    return wallets


def _transfers(url: str, payers: list[Keypair], count: int, offset: int) -> list[bytes]:
    blockhash = Hash.from_string(_rpc(url, "getLatestBlockhash")["value"]["blockhash"])
    requests = []
    for i in range(count):
        payer = payers[i % len(payers)]
        ix = system_transfer(
            source=payer.pubkey(),
            destination=payers[(i + 1) % len(payers)].pubkey(),
            lamports=1 + offset + i // len(payers),  # every transaction distinct
        )
        tx = VersionedTransaction(
            MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash), [payer]
        )
        requests.append(
            staking_pb2.SubmitTransactionRequest(transaction=bytes(tx)).SerializeToString()
        )
    return requests


class _TransferSource:
    """Distinct signed transfers, freshly blockhashed, never the same twice."""

    def __init__(self, url: str, payers: list[Keypair]) -> None:
        self.url = url
        self.payers = payers
        self.offset = 0

    def take(self, count: int) -> list[bytes]:
        self.offset += count
        return _transfers(self.url, self.payers, count, self.offset)


def funded_builds(url: str, count: int = 16) -> tuple[list[Keypair], list[bytes]]:
    """``count`` funded wallets and a stake build request of 2 SOL for each (encoded)."""
    wallets = _funded(url, count)
    return wallets, [
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(w.pubkey()), amount_lamports=2 * SOL
        ).SerializeToString()
        for w in wallets
    ]


def _new_wallet_builds(count: int) -> list[bytes]:
    """Stake builds of ``count`` wallets never seen before, one each."""
    return [
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(Keypair().pubkey()), amount_lamports=2 * SOL
        ).SerializeToString()
        for _ in range(count)
    ]


def _p(report: dict[str, Any], percentage: int) -> float:
    for row in report["latencyDistribution"]:
        if row["percentage"] == percentage:
            return float(row["latency"]) / 1e6
    return 0.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--compare-workers", type=int, default=2, help="0: skip")
    parser.add_argument("--server-cpus", type=int, default=1, help="cores pinned to servers")
    parser.add_argument(
        "--localnet",
        choices=("embedded", "separate"),
        default="embedded",
        help="separate: the localnet in its own process, on the load generator's cores",
    )
    parser.add_argument(
        "--scenarios",
        default="echo,health,network_info,build,build_new_wallets,build_simulate,submit",
        help="comma-separated",
    )
    parser.add_argument(
        "--h2load",
        action=argparse.BooleanOptionalAction,
        default=h2load_path() is not None,
        help="also an h2load saturation run of echo, health and build (default: when "
        "h2load is installed)",
    )
    parser.add_argument(
        "--h2load-connections",
        type=int,
        default=4,
        help="h2load connections; streams per connection: --concurrency / this",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="the service's log level; INFO (the default configuration) writes the access log",
    )
    parser.add_argument(
        "--priced",
        action="store_true",
        help="a cluster whose recent prioritization fees are not zero (mainnet's case): "
        "every build pays a price",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    h2load_binary = h2load_path() if args.h2load else None
    if args.h2load and h2load_binary is None:
        raise SystemExit("--h2load: h2load not found (bench/setup.sh installs it)")
    wanted = set(args.scenarios.split(","))
    server_cpus, client_cpus = _split_cpus(args.server_cpus)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)  # the load generator's processes inherit it
    base = LoadSpec(
        target="",
        method="",
        requests=[b""],
        duration=args.duration,
        warmup=args.warmup,
        concurrency=args.concurrency,
        processes=args.processes,
    )
    runs: list[dict[str, Any]] = []

    def measure(scenario: str, workers: int, spec: LoadSpec, pids: list[int]) -> dict[str, Any]:
        report = run_load(spec, pids)
        report["tool"] = "grpc_load"
        return record(scenario, workers, report)

    def record(scenario: str, workers: int, report: dict[str, Any]) -> dict[str, Any]:
        report["scenario"] = scenario
        report["workers"] = workers
        runs.append(report)
        print(
            f"{scenario:17} w={workers} {report['tool']:9} {report['mode']:10} "
            f"{report['rps']:8.0f}/s p50 {_p(report, 50):7.2f} ms "
            f"p99 {_p(report, 99):7.2f} ms errors {_errors(report)}",
            file=sys.stderr,
            flush=True,
        )
        return report

    def raw(
        scenario: str, workers: int, spec: LoadSpec, pids: list[int], metrics: str | None
    ) -> dict[str, Any]:
        """h2load at saturation on the same target, request and in-flight count."""
        assert h2load_binary is not None
        connections = max(1, args.h2load_connections)
        h2 = H2LoadSpec(
            target=spec.target,
            method=spec.method,
            request=spec.requests[0],
            headers=list(spec.metadata),
            duration=args.duration,
            warmup=args.warmup,
            connections=connections,
            streams=max(1, args.concurrency // connections),
            threads=len(client_cpus) if client_cpus else 1,
            h2load=h2load_binary,
        )
        return record(scenario, workers, run_h2load(h2, pids, metrics))

    def paced(
        scenario: str, workers: int, spec: LoadSpec, pids: list[int], metrics: str | None
    ) -> dict[str, Any]:
        """h2load at 100/s on one stream: latency with a client that adds little."""
        assert h2load_binary is not None
        h2 = H2LoadSpec(
            target=spec.target,
            method=spec.method,
            request=spec.requests[0],
            headers=list(spec.metadata),
            duration=args.duration,
            warmup=args.warmup,
            connections=1,
            streams=1,
            h2load=h2load_binary,
            rps=100.0,
        )
        return record(scenario, workers, run_h2load(h2, pids, metrics))

    def both(
        scenario: str,
        workers: int,
        spec: LoadSpec,
        pids: list[int],
        fresh: Callable[[int], list[bytes]] | None = None,
    ) -> dict[str, Any]:
        if fresh is not None:
            spec = replace(spec, requests=fresh(40_000), unique=True)
        saturated = measure(scenario, workers, spec, pids)
        half = max(1.0, saturated["rps"] / 2)
        if fresh is not None:
            spec = replace(spec, requests=fresh(int(half * (args.duration + args.warmup)) + 100))
        measure(scenario, workers, replace(spec, rate=half, concurrency=1000), pids)
        return saturated

    worker_counts = [args.workers]
    if args.compare_workers and args.compare_workers != args.workers:
        worker_counts.append(args.compare_workers)
    for index, workers in enumerate(worker_counts):
        first = index == 0
        if "echo" in wanted:
            echo, target, pids = start_echo(workers, server_cpus)
            spec = replace(base, target=target, method="/bench.Echo/Echo", requests=[b"x" * 64])
            if first:
                both("echo", workers, spec, pids)
                # The latency floor of this machine and client, for the build at 100/s.
                measure("echo", workers, replace(spec, rate=100.0, concurrency=1000), pids)
            else:
                measure("echo", workers, spec, pids)
            if h2load_binary is not None:
                raw("echo", workers, spec, pids, None)
                if first:
                    paced("echo", workers, spec, pids, None)
            echo.stop()
        localnet = start_localnet(client_cpus) if args.localnet == "separate" else None
        service_process = start_service(
            workers, server_cpus, localnet=localnet, log_level=args.log_level
        )
        url = service_process.rpc_url
        pids = service_process.pids
        service = replace(
            base,
            target=service_process.target,
            metadata=[("authorization", f"Bearer {service_process.secret}")],
        )
        wallets, builds = funded_builds(url)
        if args.priced:
            asyncio.run(pay_priority_fees(url))
        build = replace(service, method=STAKING + "BuildStakeTransaction", requests=builds)
        if first:
            if "health" in wanted:
                health = health_pb2.HealthCheckRequest().SerializeToString()
                check = replace(service, method="/grpc.health.v1.Health/Check", requests=[health])
                both("health", workers, check, pids)
                if h2load_binary is not None:
                    raw("health", workers, check, pids, service_process.metrics)
            if "network_info" in wanted:
                info = staking_pb2.GetNetworkInfoRequest().SerializeToString()
                both(
                    "network_info",
                    workers,
                    replace(service, method=STAKING + "GetNetworkInfo", requests=[info]),
                    pids,
                )
            if "build" in wanted:
                both("build", workers, build, pids)
                measure("build", workers, replace(build, rate=100.0, concurrency=1000), pids)
                if h2load_binary is not None:
                    raw("build", workers, build, pids, service_process.metrics)
                    paced("build", workers, build, pids, service_process.metrics)
            if "build_new_wallets" in wanted:
                both("build_new_wallets", workers, build, pids, _new_wallet_builds)
            if "build_simulate" in wanted:
                simulated = [
                    staking_pb2.BuildStakeTransactionRequest(
                        wallet=str(w.pubkey()),
                        amount_lamports=2 * SOL,
                        options=types_pb2.TransactionOptions(simulate=True),
                    ).SerializeToString()
                    for w in wallets
                ]
                both("build_simulate", workers, replace(build, requests=simulated), pids)
            if "submit" in wanted:
                fresh = _TransferSource(url, wallets)
                both(
                    "submit",
                    workers,
                    replace(service, method=STAKING + "SubmitTransaction"),
                    pids,
                    fresh.take,
                )
        elif "build" in wanted:
            measure("build", workers, build, pids)
            if h2load_binary is not None:
                raw("build", workers, build, pids, service_process.metrics)
        service_process.stop()
        if localnet is not None:
            localnet.server.stop()

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.run", *(argv or sys.argv[1:])]),
        "machine": machine(server_cpus, client_cpus),
        "summary": _summary(runs, args.workers, args.compare_workers),
        "runs": runs,
    }
    out = args.out or RESULTS / f"grpc-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(_table(runs, args.workers))
    print(json.dumps(report["summary"], indent=2))
    print(f"saved {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def _find(
    runs: list[dict[str, Any]], scenario: str, workers: int, mode: str, tool: str = "grpc_load"
) -> dict[str, Any]:
    for run in runs:
        if (
            run["scenario"] == scenario
            and run["workers"] == workers
            and run["mode"] == mode
            and run.get("tool", "grpc_load") == tool
            and (mode == "saturation" or run["rate"] != 100.0)
        ):
            return run
    return {}


def _errors(run: dict[str, Any]) -> int:
    if run.get("tool") == "h2load":
        # HTTP-level failures and non-OK codes the server counted.
        return sum(run["errorDistribution"].values())
    return sum(n for code, n in run["statusCodeDistribution"].items() if code != "OK")


def _summary(runs: list[dict[str, Any]], workers: int, compare: int) -> dict[str, Any]:
    echo = _find(runs, "echo", workers, "saturation").get("rps", 0.0)
    build = _find(runs, "build", workers, "saturation").get("rps", 0.0)
    half = _find(runs, "build", workers, "fixed-rate")

    def at_100(scenario: str) -> dict[str, Any]:
        return next(
            (
                r
                for r in runs
                if r["scenario"] == scenario
                and r.get("rate") == 100.0
                and r["workers"] == workers
                and r.get("tool", "grpc_load") == "grpc_load"
            ),
            {},
        )

    fixed100, echo100 = at_100("build"), at_100("echo")
    summary: dict[str, Any] = {
        "build_saturation_rps": build,
        "build_to_echo": build / echo if echo else None,
        "build_p99_ms_at_half_saturation": _p(half, 99) if half else None,
        "build_p99_ms_at_100_per_s": _p(fixed100, 99) if fixed100 else None,
        "echo_p99_ms_at_100_per_s": _p(echo100, 99) if echo100 else None,
    }
    if compare:
        other = _find(runs, "build", compare, "saturation").get("rps", 0.0)
        summary[f"build_workers_{compare}_over_{workers}"] = other / build if build else None
        echo_other = _find(runs, "echo", compare, "saturation").get("rps", 0.0)
        summary[f"echo_workers_{compare}_over_{workers}"] = echo_other / echo if echo else None
    raw = [run for run in runs if run.get("tool") == "h2load"]
    if raw:
        h2_echo = _find(runs, "echo", workers, "saturation", "h2load").get("rps", 0.0)
        h2_build = _find(runs, "build", workers, "saturation", "h2load").get("rps", 0.0)
        summary["h2load_echo_saturation_rps"] = h2_echo or None
        summary["h2load_build_saturation_rps"] = h2_build or None
        summary["h2load_build_to_echo"] = h2_build / h2_echo if h2_echo and h2_build else None
        for scenario in ("build", "echo"):
            paced_run = next(
                (
                    r
                    for r in raw
                    if r["scenario"] == scenario and r["rate"] == 100.0 and r["workers"] == workers
                ),
                {},
            )
            summary[f"h2load_{scenario}_p99_ms_at_100_per_s"] = (
                _p(paced_run, 99) if paced_run else None
            )
        # Server-counted OK calls minus h2load's succeeded ones: between 0 and the
        # streams h2load abandoned at the end (it sees HTTP 200 only, not grpc-status).
        checks = {
            f"{run['scenario']}_workers_{run['workers']}"
            + ("" if run["rate"] is None else f"_at_{run['rate']:g}_per_s"): run["cross_check"]
            for run in raw
            if run.get("cross_check") is not None
        }
        summary["h2load_server_counted"] = checks
        summary["h2load_counts_match"] = (
            all(c["match"] for c in checks.values()) if checks else None
        )
    return summary


def _table(runs: list[dict[str, Any]], workers: int) -> str:
    echo = {
        tool: _find(runs, "echo", workers, "saturation", tool).get("rps", 0.0)
        for tool in ("grpc_load", "h2load")
    }
    lines = [
        "| scenario | tool | workers | mode | calls/s | p50 ms | p99 ms | errors "
        "| server CPU s | vs echo |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        tool = run.get("tool", "grpc_load")
        mode = run["mode"] if run["rate"] is None else f"fixed {run['rate']:.0f}/s"
        baseline = echo.get(tool, 0.0)
        # Against the echo baseline measured by the same tool.
        ratio = (
            f"{run['rps'] / baseline:.0%}"
            if baseline and run["mode"] == "saturation" and run["workers"] == workers
            else ""
        )
        cpu = run["server"]["cpu_seconds"]
        lines.append(
            f"| {run['scenario']} | {tool} | {run['workers']} | {mode} | {run['rps']:.0f} "
            f"| {_p(run, 50):.2f} | {_p(run, 99):.2f} | {_errors(run)} "
            f"| {'' if cpu is None else f'{cpu:.1f}'} | {ratio} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
