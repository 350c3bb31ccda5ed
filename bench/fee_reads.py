"""What batching does to the prioritization-fee reads of new wallets' builds: reads of
``getRecentPrioritizationFees`` (two new accounts each, as a new wallet's stake build
asks) sent at ``--rate`` per second for ``--duration`` seconds through one
``HttpSolanaRpc`` (a pool of ``--pool-size`` connections) to an in-process localnet
behind a proxy that holds each request ``--latency-ms`` (as a remote endpoint's round
trip does), once with batching and once without.

Prints one JSON object per mode: reads answered per second, their latency (p50, p99,
ms), the HTTP requests the endpoint saw and the client's CPU seconds.

Run: ``python -m bench.fee_reads [--rate 500] [--duration 5] [--latency-ms 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from solders.keypair import Keypair

from service.chain import HttpSolanaRpc
from service.chain._rpc import BATCHED_METHODS
from service.localnet import LocalnetServer
from tests._proxy import RpcProxy

METHOD = "getRecentPrioritizationFees"


async def _run(
    *, batched: bool, rate: float, duration: float, latency: float, pool_size: int
) -> dict[str, Any]:
    localnet = LocalnetServer()
    await localnet.start()
    proxy = RpcProxy(localnet.url)
    await proxy.start()
    proxy.faults.delay_methods[METHOD] = latency
    rpc = HttpSolanaRpc(
        proxy.url, pool_size=pool_size, batched_methods=BATCHED_METHODS if batched else frozenset()
    )
    latencies: list[float] = []
    failures = 0

    async def read() -> None:
        nonlocal failures
        started = time.perf_counter()
        try:
            await rpc.call(METHOD, [[str(Keypair().pubkey()), str(Keypair().pubkey())]])
        except Exception:  # counted: the report says how many failed
            failures += 1
        else:
            latencies.append(time.perf_counter() - started)

    try:
        reads: list[asyncio.Task[None]] = []
        cpu, started = time.process_time(), time.perf_counter()
        for i in range(int(rate * duration)):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            reads.append(asyncio.create_task(read()))
        await asyncio.gather(*reads)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await rpc.close()
        await proxy.stop()
        await localnet.stop()
    ordered = sorted(latencies)
    return {
        "batched": batched,
        "reads": len(reads),
        "failed": failures,
        "reads_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1e3, 2) if ordered else None,
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1e3, 2) if ordered else None,
        "http_requests": proxy.requests,
        # The whole process: client, proxy and localnet (they share the one loop).
        "process_cpu_seconds": round(cpu, 2),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--pool-size", type=int, default=5)
    args = parser.parse_args(argv)
    for batched in (False, True):
        report = asyncio.run(
            _run(
                batched=batched,
                rate=args.rate,
                duration=args.duration,
                latency=args.latency_ms / 1000,
                pool_size=args.pool_size,
            )
        )
        print(json.dumps({"benchmark": "fee_reads", **vars(args), **report}))


if __name__ == "__main__":
    main()
