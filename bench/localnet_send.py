"""How many sendTransaction requests per second the localnet answers over HTTP.

Starts the localnet HTTP server in a subprocess of its own (what ``agent-staking
localnet`` runs, minus the CLI's imports; pinned to its own core when the OS
allows it), pre-signs distinct System transfers from several funded
wallets, and sends them with a fixed number of concurrent keep-alive HTTP
requests (aiohttp). Scenarios:

- ``http_get_health``: the same HTTP load against ``getHealth``, the transport
  ceiling of the same server (JSON-RPC framing, the worker-thread hop, no chain
  work);
- ``http_send_preflight`` / ``http_send_skip_preflight``: sendTransaction with and
  without the preflight simulation;
- ``direct_send_preflight`` / ``direct_send_skip_preflight``: the same request
  bodies handed straight to the JSON-RPC dispatcher of an in-process chain, one
  at a time (no HTTP, no event loop): the server's work per request.

Every sent transaction is then looked up with getSignatureStatuses, so a
scenario only counts what landed. Prints one JSON object on stdout.

Run: ``python -m bench.localnet_send [--transactions 3000] [--concurrency 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import aiohttp
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.core import system_transfer
from service.localnet import LocalnetChain, LocalnetConfig, LocalnetServer

# NOTE: the dispatcher is private to the localnet; the benchmark reaches in on
# purpose, to price the server's work without its transport.
from service.localnet._rpc import dispatch_all

SOL = 1_000_000_000
MAX_SIGNATURE_STATUSES = 256
JSON_HEADERS = {"Content-Type": "application/json"}


# ----- the machine ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine(server_cpus: Sequence[int] | None, client_cpus: Sequence[int] | None) -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "server_cpus": list(server_cpus) if server_cpus is not None else None,
        "client_cpus": list(client_cpus) if client_cpus is not None else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "solders": _version("solders"),
        "aiohttp": _version("aiohttp"),
    }


def _split_cpus(server_count: int) -> tuple[list[int] | None, list[int] | None]:
    """CPUs for the server and for this (client) process; None when not pinning."""
    if not hasattr(os, "sched_getaffinity") or server_count <= 0:
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) <= server_count:
        return None, None  # pinning would leave one side without a core
    return available[:server_count], available[server_count:]


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----- results -------------------------------------------------------------------------------


@dataclass
class Load:
    """What one scenario measured."""

    requests: int
    seconds: float
    latencies: list[float]
    errors: Counter[str]
    client_cpu_seconds: float
    server_cpu_seconds: float | None = None


def _percentile(ordered: Sequence[float], p: float) -> float:
    # Nearest rank: the smallest value with at least p% of the samples at or below it.
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def summarize(load: Load, **extra: Any) -> dict[str, Any]:
    ordered = sorted(load.latencies)
    ms = 1000.0
    result: dict[str, Any] = {
        "requests": load.requests,
        "seconds": round(load.seconds, 3),
        "requests_per_s": round(load.requests / load.seconds, 1) if load.seconds else None,
        "latency_ms": {
            "mean": round(sum(ordered) / len(ordered) * ms, 3),
            "p50": round(_percentile(ordered, 50) * ms, 3),
            "p90": round(_percentile(ordered, 90) * ms, 3),
            "p99": round(_percentile(ordered, 99) * ms, 3),
            "max": round(ordered[-1] * ms, 3),
        }
        if ordered
        else None,
        "errors": sum(load.errors.values()),
        "error_kinds": dict(load.errors.most_common(5)),
        "client_cpu_s": round(load.client_cpu_seconds, 3),
    }
    if load.server_cpu_seconds is not None:
        result["server_cpu_s"] = round(load.server_cpu_seconds, 3)
    result.update(extra)
    return result


# ----- JSON-RPC ----------------------------------------------------------------------------


def _request(method: str, *params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}


async def _call(session: aiohttp.ClientSession, url: str, method: str, *params: Any) -> Any:
    async with session.post(url, json=_request(method, *params)) as response:
        answer = await response.json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def _error_kind(answer: Any) -> str | None:
    if not isinstance(answer, dict):
        return "malformed answer"
    error = answer.get("error")
    if error is None:
        return None
    return f"{error.get('code')}: {str(error.get('message'))[:80]}"


async def http_load(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    server_pid: int,
) -> Load:
    """POST every body with `concurrency` requests in flight; time each one."""
    latencies = [0.0] * len(bodies)
    errors: Counter[str] = Counter()
    indices = iter(range(len(bodies)))

    async def worker() -> None:
        # One shared iterator: each worker takes the next body when it is free.
        for index in indices:
            started = time.perf_counter()
            try:
                async with session.post(url, data=bodies[index], headers=JSON_HEADERS) as resp:
                    raw = await resp.read()
                kind = _error_kind(json.loads(raw))
            except (aiohttp.ClientError, ValueError, TimeoutError) as exc:
                kind = type(exc).__name__
            latencies[index] = time.perf_counter() - started
            if kind is not None:
                errors[kind] += 1

    server_cpu = _process_cpu_seconds(server_pid)
    client_cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    server_used = _process_cpu_seconds(server_pid)
    return Load(
        requests=len(bodies),
        seconds=seconds,
        latencies=latencies,
        errors=errors,
        client_cpu_seconds=time.process_time() - client_cpu,
        server_cpu_seconds=None
        if server_cpu is None or server_used is None
        else server_used - server_cpu,
    )


def direct_load(chain: LocalnetChain, bodies: Sequence[bytes]) -> Load:
    """What the server does per request, minus HTTP: parse, dispatch, serialize."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    client_cpu = time.process_time()
    started = time.perf_counter()
    for body in bodies:
        begun = time.perf_counter()
        answer = dispatch_all(chain, json.loads(body))
        json.dumps(answer, separators=(",", ":"))
        latencies.append(time.perf_counter() - begun)
        kind = _error_kind(answer)
        if kind is not None:
            errors[kind] += 1
    return Load(
        requests=len(bodies),
        seconds=time.perf_counter() - started,
        latencies=latencies,
        errors=errors,
        client_cpu_seconds=time.process_time() - client_cpu,
    )


# ----- transactions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    bodies: list[bytes]
    signatures: list[str]


def sign_transfers(
    wallets: Sequence[Keypair],
    receivers: Sequence[Pubkey],
    count: int,
    blockhash: Hash,
    *,
    skip_preflight: bool,
) -> Batch:
    """`count` distinct transfers (payer i % W, amount 1 + i // W) as request bodies.

    Receivers must already hold rent-exempt balances: a 1-lamport transfer to an
    empty account fails with InsufficientFundsForRent.
    """
    config: dict[str, Any] = {"encoding": "base64"}
    if skip_preflight:
        config["skipPreflight"] = True
    bodies, signatures = [], []
    for i in range(count):
        payer = wallets[i % len(wallets)]
        ix = system_transfer(
            source=payer.pubkey(),
            destination=receivers[i % len(receivers)],
            lamports=1 + i // len(wallets),
        )
        message = MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash)
        tx = VersionedTransaction(message, [payer])
        encoded = base64.b64encode(bytes(tx)).decode()
        bodies.append(json.dumps(_request("sendTransaction", encoded, config)).encode())
        signatures.append(str(tx.signatures[0]))
    return Batch(bodies=bodies, signatures=signatures)


def health_bodies(count: int) -> list[bytes]:
    body = json.dumps(_request("getHealth")).encode()
    return [body] * count


def _chunks(signatures: Sequence[str]) -> list[list[str]]:
    step = MAX_SIGNATURE_STATUSES
    return [list(signatures[i : i + step]) for i in range(0, len(signatures), step)]


def tally(statuses: Sequence[Any]) -> dict[str, int]:
    """How many getSignatureStatuses values say landed, failed on chain, or unknown."""
    landed = sum(1 for v in statuses if v is not None and v["err"] is None)
    missing = sum(1 for v in statuses if v is None)
    return {
        "landed": landed,
        "failed_on_chain": len(statuses) - landed - missing,
        "not_landed": missing,
    }


# ----- the server ----------------------------------------------------------------------------


async def serve_localnet(slot_ms: int) -> None:
    """The subprocess: a LocalnetServer on an ephemeral port until SIGTERM/SIGINT.

    Prints ``{"localnet": url}`` on stdout once it listens, as the CLI does.
    """
    server = LocalnetServer(LocalnetConfig(slot_duration=slot_ms / 1000))
    await server.start("127.0.0.1", 0)
    print(json.dumps({"localnet": server.url}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def localnet_process(cpus: Sequence[int] | None, slot_ms: int) -> Any:
    """The localnet in a subprocess on an ephemeral port; yields (url, pid)."""
    command = [sys.executable, "-m", "bench.localnet_send", "--serve-localnet"]
    command += ["--slot-ms", str(slot_ms)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        if cpus is not None:
            os.sched_setaffinity(process.pid, cpus)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        if not line:
            raise RuntimeError("the localnet exited before it listened")
        yield json.loads(line)["localnet"], process.pid
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def fund(
    session: aiohttp.ClientSession, url: str, keys: Sequence[Pubkey], lamports: int
) -> None:
    for key in keys:
        await _call(session, url, "requestAirdrop", str(key), lamports)


async def latest_blockhash(session: aiohttp.ClientSession, url: str) -> Hash:
    answer = await _call(session, url, "getLatestBlockhash", {"commitment": "confirmed"})
    return Hash.from_string(answer["value"]["blockhash"])


# ----- main --------------------------------------------------------------------------------


def _direct_scenarios(args: argparse.Namespace) -> dict[str, Any]:
    chain = LocalnetChain(LocalnetConfig(slot_duration=args.slot_ms / 1000))
    wallets = [Keypair() for _ in range(args.wallets)]
    receivers = [Keypair().pubkey() for _ in range(args.wallets)]
    for key in [w.pubkey() for w in wallets] + receivers:
        chain.airdrop(key, 1_000 * SOL)
    results: dict[str, Any] = {}
    for name, skip in (("direct_send_preflight", False), ("direct_send_skip_preflight", True)):
        blockhash, _ = chain.latest_blockhash("confirmed")
        batch = sign_transfers(
            wallets, receivers, args.transactions, blockhash, skip_preflight=skip
        )
        load = direct_load(chain, batch.bodies)
        statuses = [
            value
            for chunk in _chunks(batch.signatures)
            for value in dispatch_all(chain, _request("getSignatureStatuses", chunk))["result"][
                "value"
            ]
        ]
        results[name] = summarize(load, concurrency=1, **tally(statuses))
    return results


async def _http_scenarios(
    args: argparse.Namespace, server_cpus: Sequence[int] | None
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with localnet_process(server_cpus, args.slot_ms) as (url, pid):
        connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            wallets = [Keypair() for _ in range(args.wallets)]
            receivers = [Keypair().pubkey() for _ in range(args.wallets)]
            await fund(session, url, [w.pubkey() for w in wallets] + receivers, 1_000 * SOL)
            # Warm up: open every connection and let both processes settle.
            warmup = health_bodies(args.concurrency * 10)
            await http_load(session, url, warmup, args.concurrency, pid)

            load = await http_load(
                session, url, health_bodies(args.health_requests), args.concurrency, pid
            )
            results["http_get_health"] = summarize(load, concurrency=args.concurrency)

            for name, skip in (("http_send_preflight", False), ("http_send_skip_preflight", True)):
                # A fresh blockhash per scenario: it must outlive the whole batch.
                blockhash = await latest_blockhash(session, url)
                batch = sign_transfers(
                    wallets, receivers, args.transactions, blockhash, skip_preflight=skip
                )
                load = await http_load(session, url, batch.bodies, args.concurrency, pid)
                statuses = [
                    value
                    for chunk in _chunks(batch.signatures)
                    for value in (await _call(session, url, "getSignatureStatuses", chunk))["value"]
                ]
                results[name] = summarize(load, concurrency=args.concurrency, **tally(statuses))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.localnet_send", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--transactions", type=int, default=3000, help="per send scenario")
    parser.add_argument(
        "--health-requests", type=int, default=None, help="getHealth requests (default: as many)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--wallets", type=int, default=8, help="funded payer wallets")
    parser.add_argument(
        "--slot-ms", type=int, default=400, help="localnet slot time (as a real cluster)"
    )
    parser.add_argument(
        "--server-cpus",
        type=int,
        default=1,
        help="cores reserved for the localnet process (0: no pinning)",
    )
    parser.add_argument(
        "--no-direct", action="store_true", help="skip the in-process (no HTTP) scenarios"
    )
    parser.add_argument("--serve-localnet", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve_localnet:
        asyncio.run(serve_localnet(args.slot_ms))
        return 0
    if args.health_requests is None:
        args.health_requests = args.transactions
    if args.transactions < 1 or args.concurrency < 1 or args.wallets < 1:
        raise SystemExit("--transactions, --concurrency and --wallets must be positive")
    server_cpus, client_cpus = _split_cpus(args.server_cpus)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)
    started = time.perf_counter()
    scenarios: dict[str, Any] = {}
    if not args.no_direct:
        # Before the server starts, so that nothing else competes for the CPU.
        scenarios.update(_direct_scenarios(args))
    scenarios.update(asyncio.run(_http_scenarios(args, server_cpus)))
    report = {
        "benchmark": "localnet_send",
        "machine": machine(server_cpus, client_cpus),
        "parameters": {
            "transactions": args.transactions,
            "health_requests": args.health_requests,
            "concurrency": args.concurrency,
            "wallets": args.wallets,
            "slot_ms": args.slot_ms,
            "transport": "HTTP/1.1 keep-alive, aiohttp client and server, 127.0.0.1",
        },
        "scenarios": scenarios,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
