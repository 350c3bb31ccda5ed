"""What abuse does to a real server: the figures behind docs/operators.md ("Limits that
hold under abuse"), at full size (the test suite keeps smaller versions of each true).

Each scenario starts ``agent-staking serve`` on its embedded default (a fresh data
directory, ephemeral ports), does one thing an attacker or a broken client would do,
and reports what callers, probes, memory and the logs showed. Run it in a checkout of
any version to compare (``--scenarios`` picks some; ``--json`` for the report only).

Run: ``python -m bench.hostile [--scenarios a,b] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from agentstaking.v1 import keys_pb2, keys_pb2_grpc, staking_pb2, staking_pb2_grpc, types_pb2
from google.protobuf import field_mask_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from solders.keypair import Keypair

from tests.hostile._h2client import H2Client, in_background, max_concurrent_streams
from tests.hostile._server import ServeProcess, free_port

BUILD = "/agentstaking.v1.StakingService/BuildStakeTransaction"
NETWORK_INFO = "/agentstaking.v1.StakingService/GetNetworkInfo"
HEALTH = "/grpc.health.v1.Health/Check"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def _probe(address: str, timeout: float = 1.0) -> str:
    with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return "OK"


def _probes_while(address: str, running: Callable[[], bool], every: float = 0.2) -> Counter[str]:
    found: Counter[str] = Counter()
    while running():
        found[_probe(address)] += 1
        time.sleep(every)
    return found


def _metadata(key: str) -> Any:
    return (("authorization", f"Bearer {key}"),)


def _legit_call(server: ServeProcess, timeout: float = 10.0) -> str:
    with grpc.insecure_channel(server.address, options=OWN_CONNECTION) as channel:
        try:
            staking_pb2_grpc.StakingServiceStub(channel).BuildStakeTransaction(
                staking_pb2.BuildStakeTransactionRequest(
                    wallet=str(Keypair().pubkey()), amount_lamports=2_000_000_000
                ),
                metadata=_metadata(server.keys["staking"]),
                timeout=timeout,
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return "OK"


def _handled(server: ServeProcess, method: str) -> dict[str, int]:
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    found: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "grpc_server_handled":
            for sample in family.samples:
                if sample.labels.get("grpc_method") == method:
                    found[sample.labels["grpc_code"]] += int(sample.value)
    return dict(found)


def _error_lines(server: ServeProcess) -> int:
    return sum(
        1 for line in server.output.splitlines() if b'"ERROR"' in line or b"Traceback" in line
    )


def secret_in_logs(server: ServeProcess) -> dict[str, Any]:
    """x-api-key: \\xff<a valid secret>: does the secret reach the output?"""
    key = server.keys["staking"]

    async def send() -> int | None:
        client = await H2Client.open("127.0.0.1", server.port)
        try:
            reply = await client.call(NETWORK_INFO, b"", [(b"x-api-key", b"\xff" + key.encode())])
            return reply.grpc_status
        finally:
            await client.close()

    status = asyncio.run(send())
    time.sleep(1)
    leaked = [
        line
        for line in server.output.splitlines()
        if key.encode()[-43:] in line and b"bootstrap_api_key" not in line
    ]
    return {"grpc_status": status, "lines_with_the_secret": len(leaked)}


def header_only(server: ServeProcess, connections: int = 200, streams: int = 100) -> dict[str, Any]:
    """Connections x streams that send HEADERS and never a body (no API key), held open
    for 15 s while a legitimate client builds and a probe checks health."""
    rss_before = server.rss_bytes()
    clients: list[H2Client] = []
    release = threading.Event()

    async def flood() -> None:
        for _ in range(connections):
            client = await H2Client.open("127.0.0.1", server.port)
            for _ in range(streams):
                client.start_call(BUILD)
            await client.flush()
            clients.append(client)
        await asyncio.to_thread(release.wait)
        for client in clients:
            await client.close()

    flooding = in_background(flood)
    started = time.monotonic()
    while len(clients) < connections and not flooding.done():
        time.sleep(0.1)
    sent_in = time.monotonic() - started
    other_started = time.monotonic()
    with grpc.insecure_channel(server.address, options=OWN_CONNECTION) as channel:
        staking_pb2_grpc.StakingServiceStub(channel).GetNetworkInfo(
            staking_pb2.GetNetworkInfoRequest(),
            metadata=_metadata(server.keys["staking"]),
            timeout=30,
        )
    other_seconds = time.monotonic() - other_started
    legit_started = time.monotonic()
    legit = _legit_call(server, timeout=30)
    legit_seconds = time.monotonic() - legit_started
    probe = _probe(server.address)
    rss_peak = server.rss_bytes()
    time.sleep(max(0.0, 15 - (time.monotonic() - started)))
    ended = [r for c in clients for r in c.replies.values() if r.ended.is_set()]
    statuses = Counter(str(r.grpc_status) for r in ended)
    rss_held = server.rss_bytes()
    release.set()
    flooding.result(60)
    return {
        "advertised_max_concurrent_streams": max_concurrent_streams(clients[0]),
        "streams_sent": connections * streams,
        "seconds_to_send": round(sent_in, 2),
        "legitimate_build": legit,
        "legitimate_build_seconds": round(legit_seconds, 2),
        "another_method_seconds": round(other_seconds, 2),
        "health_probe_1s": probe,
        "rss_mb_before": rss_before >> 20,
        "rss_mb_after_sending": rss_peak >> 20,
        "rss_mb_15s_in": rss_held >> 20,
        "streams_answered_within_15s": len(ended),
        "their_grpc_statuses": dict(statuses),
    }


def rapid_reset(server: ServeProcess, resets: int = 20_000) -> dict[str, Any]:
    async def flood() -> None:
        client = await H2Client.open("127.0.0.1", server.port)
        for index in range(resets):
            client.reset(client.start_call(HEALTH))
            if index % 200 == 0:
                await client.flush()
        await client.flush()
        await asyncio.sleep(2)
        await client.close()

    flooding = in_background(flood)
    probes = _probes_while(server.address, lambda: not flooding.done())
    flooding.result()
    return {"resets": resets, "health_probes_1s_timeout": dict(probes)}


def health_flood(
    server: ServeProcess, connections: int = 200, streams: int = 100
) -> dict[str, Any]:
    """Header-only streams on Health/Check; probes of the gRPC port and the health port."""
    health_port = server.announcement.get("health_port")

    async def flood() -> None:
        clients = []
        for _ in range(connections):
            client = await H2Client.open("127.0.0.1", server.port)
            for _ in range(streams):
                client.start_call(HEALTH)
            await client.flush()
            clients.append(client)
        await asyncio.sleep(8)
        for client in clients:
            await client.close()

    flooding = in_background(flood)
    grpc_port: Counter[str] = Counter()
    own_port: Counter[str] = Counter()
    while not flooding.done():
        grpc_port[_probe(server.address)] += 1
        if health_port:
            own_port[_probe(f"127.0.0.1:{health_port}")] += 1
        time.sleep(0.2)
    flooding.result()
    return {
        "probes_of_the_grpc_port": dict(grpc_port),
        "probes_of_the_health_port": dict(own_port) if health_port else "no health port",
    }


def concurrent_calls(server: ServeProcess, count: int = 3000) -> dict[str, Any]:
    before = _handled(server, "GetNetworkInfo")

    async def calls() -> Counter[str]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = staking_pb2_grpc.StakingServiceStub(channel)

            async def one() -> str:
                try:
                    await stub.GetNetworkInfo(
                        staking_pb2.GetNetworkInfoRequest(),
                        metadata=_metadata(server.keys["staking"]),
                        timeout=60,
                    )
                except grpc.aio.AioRpcError as error:
                    return error.code().name
                return "OK"

            return Counter(await asyncio.gather(*(one() for _ in range(count))))

    codes = asyncio.run(calls())
    time.sleep(2)
    after = _handled(server, "GetNetworkInfo")
    counted = sum(after.values()) - sum(before.values())
    return {"calls": count, "codes": dict(codes), "counted_in_grpc_server_handled_total": counted}


def random_bytes(server: ServeProcess, count: int = 2000) -> dict[str, Any]:
    output_before = len(server.output)
    errors_before = _error_lines(server)

    async def send() -> Counter[str]:
        client = await H2Client.open("127.0.0.1", server.port)
        codes: Counter[str] = Counter()
        try:
            for _ in range(count):
                reply = await client.call(BUILD, os.urandom(random.randint(1, 300)))
                codes[f"{reply.grpc_status} {reply.grpc_message[:40]}"] += 1
        finally:
            await client.close()
        return codes

    started = time.monotonic()
    codes = asyncio.run(send())
    seconds = time.monotonic() - started
    time.sleep(1)
    return {
        "calls": count,
        "seconds": round(seconds, 2),
        "answers": dict(codes.most_common(3)),
        "log_bytes_written": len(server.output) - output_before,
        "error_or_traceback_lines": _error_lines(server) - errors_before,
    }


def bad_values(server: ServeProcess) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with grpc.insecure_channel(server.address) as channel:
        keys = keys_pb2_grpc.KeyServiceStub(channel)
        staking = staking_pb2_grpc.StakingServiceStub(channel)
        admin = _metadata(server.keys["admin"])

        def code(call: Callable[[], Any]) -> str:
            try:
                call()
            except grpc.RpcError as error:
                trailers: list[Any] = list(error.trailing_metadata() or ())
                size = sum(len(k) + len(v) for k, v in trailers)
                return f"{error.code().name} (trailers {size} bytes)"
            return "OK"

        found["expire_time_year_10000"] = code(
            lambda: keys.CreateApiKey(
                keys_pb2.CreateApiKeyRequest(
                    display_name="x",
                    scopes=["staking"],
                    expire_time=timestamp_pb2.Timestamp(seconds=253_402_300_800),
                ),
                metadata=admin,
            )
        )
        created = keys.CreateApiKey(
            keys_pb2.CreateApiKeyRequest(display_name="y", scopes=["staking"]), metadata=admin
        ).api_key
        found["update_mask_1MB"] = code(
            lambda: keys.UpdateApiKey(
                keys_pb2.UpdateApiKeyRequest(
                    api_key=keys_pb2.ApiKey(name=created.name, display_name="n"),
                    update_mask=field_mask_pb2.FieldMask(paths=["x" * 1_000_000]),
                ),
                metadata=admin,
            )
        )
        found["compute_unit_price_2^63"] = code(
            lambda: staking.BuildStakeTransaction(
                staking_pb2.BuildStakeTransactionRequest(
                    wallet=str(Keypair().pubkey()),
                    amount_lamports=2_000_000_000,
                    options=types_pb2.TransactionOptions(compute_unit_price_micro_lamports=2**63),
                ),
                metadata=_metadata(server.keys["staking"]),
            )
        )
        found["authorization_staking_and_x_api_key_admin"] = code(
            lambda: keys.ListApiKeys(
                keys_pb2.ListApiKeysRequest(),
                metadata=(
                    ("authorization", f"Bearer {server.keys['staking']}"),
                    ("x-api-key", server.keys["admin"]),
                ),
            )
        )
        found["authorization_admin_and_x_api_key_staking"] = code(
            lambda: keys.ListApiKeys(
                keys_pb2.ListApiKeysRequest(),
                metadata=(
                    ("authorization", f"Bearer {server.keys['admin']}"),
                    ("x-api-key", server.keys["staking"]),
                ),
            )
        )
    return found


def brute_force(server: ServeProcess) -> dict[str, Any]:
    """20 failed authentications a second from this address while a valid key calls."""
    stop = False

    async def attack() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = staking_pb2_grpc.StakingServiceStub(channel)
            while not stop:
                key_id = "".join(random.choices("0123456789abcdefghjkmnpqrstvwxyz", k=16))
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.GetNetworkInfo(
                        staking_pb2.GetNetworkInfoRequest(),
                        metadata=_metadata(f"ask_{key_id}_{'A' * 43}"),
                    )
                await asyncio.sleep(0.05)

    attacking = in_background(attack)
    time.sleep(5)
    found: Counter[str] = Counter()
    with grpc.insecure_channel(server.address) as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        for _ in range(50):
            try:
                stub.GetNetworkInfo(
                    staking_pb2.GetNetworkInfoRequest(), metadata=_metadata(server.keys["staking"])
                )
                found["OK"] += 1
            except grpc.RpcError as error:
                found[error.code().name] += 1
            time.sleep(0.05)
    stop = True
    attacking.result(30)
    return {"valid_key_calls": dict(found)}


def metrics_scrapes(server: ServeProcess, scrapers: int = 8) -> dict[str, Any]:
    def latencies() -> tuple[float, float]:
        samples = []
        with grpc.insecure_channel(server.address) as channel:
            stub = staking_pb2_grpc.StakingServiceStub(channel)
            for _ in range(200):
                started = time.perf_counter()
                stub.GetNetworkInfo(
                    staking_pb2.GetNetworkInfoRequest(), metadata=_metadata(server.keys["staking"])
                )
                samples.append(time.perf_counter() - started)
        samples.sort()
        return round(samples[100] * 1000, 2), round(samples[197] * 1000, 2)

    idle = latencies()
    stop = False

    async def scrape() -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def one() -> None:
                while not stop:
                    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
                    async with session.get(url) as response:
                        await response.read()

            await asyncio.gather(*(one() for _ in range(scrapers)))

    scraping = in_background(scrape)
    time.sleep(1)
    busy = latencies()
    stop = True
    scraping.result(30)
    return {"p50_p99_ms_idle": idle, f"p50_p99_ms_with_{scrapers}_scrapers": busy}


SCENARIOS: dict[str, Callable[[ServeProcess], dict[str, Any]]] = {
    "secret_in_logs": secret_in_logs,
    "header_only": header_only,
    "rapid_reset": rapid_reset,
    "health_flood": health_flood,
    "concurrent_calls": concurrent_calls,
    "random_bytes": random_bytes,
    "bad_values": bad_values,
    "brute_force": brute_force,
    "metrics_scrapes": metrics_scrapes,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    for name in args.scenarios.split(","):
        health_port = free_port()
        server = ServeProcess(
            Path(tempfile.mkdtemp(prefix="hostile-")),
            env={
                "AGENT_STAKING_HEALTH_LISTEN": f"127.0.0.1:{health_port}",
                "AGENT_STAKING_LOG_LEVELS": '{"service.access": "WARNING"}',
            },
        ).start()
        server.announcement["health_port"] = health_port
        try:
            report[name] = SCENARIOS[name](server)
        finally:
            server.stop()
        if not args.json:
            print(name, json.dumps(report[name]), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
