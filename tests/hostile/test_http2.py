"""Raw HTTP/2 against the real server: what gRPC client libraries never send.

Every bound asserted here follows from a setting of the server under test (set small
so the suite stays quick): a stream whose request never arrives ends after
``request_timeout_seconds``, no more than ``max_waiting_requests`` wait at once, a
connection that never finishes its preface is closed after
``handshake_timeout_seconds``, a client pinging too often gets GOAWAY. Meanwhile
legitimate calls and health probes on other connections are answered.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import h2.errors
import h2.exceptions
import h2.settings
import pytest
from agentstaking.v1 import staking_pb2, staking_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._h2client import H2Client, Reply, in_background, max_concurrent_streams, statuses
from ._server import ServeProcess, free_port
from .conftest import serving

BUILD = "/agentstaking.v1.StakingService/BuildStakeTransaction"
NETWORK_INFO = "/agentstaking.v1.StakingService/GetNetworkInfo"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

STREAMS_PER_CONNECTION = 64
REQUEST_TIMEOUT = 2.0
MAX_WAITING = 200
HANDSHAKE_TIMEOUT = 1.0
# Slack for a busy 2-core machine on top of a bound the server keeps: how long a
# verdict may take to reach us, not how fast the server is.
SLACK = 15.0

GRPC_STATUS_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
GRPC_STATUS_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    health_port = free_port()
    with serving(
        tmp_path_factory.mktemp("h2"),
        {
            "AGENT_STAKING_MAX_STREAMS_PER_CONNECTION": str(STREAMS_PER_CONNECTION),
            "AGENT_STAKING_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT),
            "AGENT_STAKING_MAX_WAITING_REQUESTS": str(MAX_WAITING),
            "AGENT_STAKING_HANDSHAKE_TIMEOUT_SECONDS": str(HANDSHAKE_TIMEOUT),
            "AGENT_STAKING_HEALTH_LISTEN": f"127.0.0.1:{health_port}",
        },
    ) as process:
        process.announcement["health_port"] = health_port
        yield process


def health_address(server: ServeProcess) -> str:
    return f"127.0.0.1:{server.announcement['health_port']}"


def probe(address: str, timeout: float = 5.0) -> grpc.StatusCode | None:
    """A kubelet-style probe: a new connection, one Check; None when SERVING."""
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return None


def network_info(server: ServeProcess) -> None:
    """A legitimate call on a connection of its own."""
    with grpc.insecure_channel(
        server.address, options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        reply = staking_pb2_grpc.StakingServiceStub(channel).GetNetworkInfo(
            staking_pb2.GetNetworkInfoRequest(),
            metadata=(("authorization", f"Bearer {server.keys['staking']}"),),
            timeout=SLACK,
        )
    assert reply.minimum_delegation_lamports > 0


def test_the_server_advertises_its_stream_limit(server: ServeProcess) -> None:
    async def settings() -> int | None:
        client = await H2Client.open("127.0.0.1", server.port)
        try:
            await client.call(HEALTH_CHECK, b"")
            return max_concurrent_streams(client)
        finally:
            await client.close()

    assert asyncio.run(settings()) == STREAMS_PER_CONNECTION


def test_header_only_streams_end_and_hold_no_memory(server: ServeProcess) -> None:
    connections = 30
    rss_before = server.rss_bytes()

    async def flood() -> list[Reply]:
        clients = await asyncio.gather(
            *(H2Client.open("127.0.0.1", server.port) for _ in range(connections))
        )
        for client in clients:
            for _ in range(STREAMS_PER_CONNECTION):
                client.start_call(BUILD, [("authorization", f"Bearer {server.keys['staking']}")])
            await client.flush()
        replies = [reply for client in clients for reply in client.replies.values()]
        await asyncio.wait_for(
            asyncio.gather(*(reply.ended.wait() for reply in replies)), REQUEST_TIMEOUT + SLACK
        )
        for client in clients:
            await client.close()
        return replies

    flooding = in_background(flood)
    # While the flood is on, others are served.
    network_info(server)
    assert probe(server.address, timeout=SLACK) is None
    replies = flooding.result(REQUEST_TIMEOUT + 2 * SLACK)
    counts = statuses(replies)
    # Each stream ended with a status of its own: cut to make room (at most
    # MAX_WAITING wait at once), or timed out waiting for its request.
    assert set(counts) <= {GRPC_STATUS_RESOURCE_EXHAUSTED, GRPC_STATUS_DEADLINE_EXCEEDED}, counts
    assert counts.get(GRPC_STATUS_RESOURCE_EXHAUSTED, 0) >= connections * STREAMS_PER_CONNECTION - (
        MAX_WAITING
    )
    timed_out = [r for r in replies if r.grpc_status == GRPC_STATUS_DEADLINE_EXCEEDED]
    assert all("did not arrive" in r.grpc_message for r in timed_out)
    # What the streams held is bounded by MAX_WAITING of them, whatever was sent: a
    # generous 64 KiB each.
    assert server.rss_bytes() - rss_before < MAX_WAITING * 64 * 1024 + 32 * 2**20


def test_rapid_reset_does_not_keep_probes_or_calls_waiting(server: ServeProcess) -> None:
    async def rapid_reset() -> None:
        client = await H2Client.open("127.0.0.1", server.port)
        for index in range(10_000):
            client.reset(client.start_call(HEALTH_CHECK))
            if index % 200 == 0:
                await client.flush()
        await client.flush()
        await client.close()

    flooding = in_background(rapid_reset)
    failures = []
    while not flooding.done():
        failures.append(probe(server.address))
        failures.append(probe(health_address(server)))
    flooding.result()
    network_info(server)
    assert probe(server.address) is None
    assert set(failures) <= {None}, failures


def test_a_header_only_flood_on_health_leaves_the_health_port_answering(
    server: ServeProcess,
) -> None:
    async def flood() -> None:
        clients = await asyncio.gather(
            *(H2Client.open("127.0.0.1", server.port) for _ in range(40))
        )
        for client in clients:
            for _ in range(STREAMS_PER_CONNECTION):
                client.start_call(HEALTH_CHECK)
            await client.flush()
        replies = [reply for client in clients for reply in client.replies.values()]
        await asyncio.wait_for(
            asyncio.gather(*(reply.ended.wait() for reply in replies)), REQUEST_TIMEOUT + SLACK
        )
        for client in clients:
            await client.close()

    flooding = in_background(flood)
    answers = []
    while not flooding.done():
        # The kubelet's default probe timeout is 1 s.
        answers.append(probe(health_address(server), timeout=1.0))
    flooding.result()
    assert answers and set(answers) == {None}, answers
    assert probe(server.address) is None


def test_a_connection_that_never_finishes_its_preface_is_closed(server: ServeProcess) -> None:
    for sent in (b"", b"PRI * HTTP/2.0\r\n"):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(sent)
            sock.settimeout(HANDSHAKE_TIMEOUT + SLACK)
            started = time.monotonic()
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            # Closed by the server (recv returned b""), not by our timeout.
            assert time.monotonic() - started < HANDSHAKE_TIMEOUT + SLACK
    assert probe(server.address) is None


def test_a_ping_flood_is_answered_with_goaway(server: ServeProcess) -> None:
    async def pings() -> int | None:
        client = await H2Client.open("127.0.0.1", server.port)
        try:
            for index in range(200):
                if client.goaway is not None or client.closed.is_set():
                    break
                try:
                    client.conn.ping(index.to_bytes(8, "big"))
                except h2.exceptions.ProtocolError:  # the GOAWAY arrived meanwhile
                    break
                await client.flush()
                await asyncio.sleep(0.005)
            await asyncio.wait_for(client.closed.wait(), SLACK)
            return client.goaway.error_code if client.goaway is not None else None
        finally:
            await client.close()

    assert asyncio.run(pings()) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert probe(server.address) is None


def test_a_settings_flood_leaves_other_connections_alone(server: ServeProcess) -> None:
    async def settings_flood() -> None:
        client = await H2Client.open("127.0.0.1", server.port)
        try:
            for index in range(5000):
                client.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: index})
                if index % 100 == 0:
                    await client.flush()
            await client.flush()
            await asyncio.sleep(0.5)
        finally:
            await client.close()

    flooding = in_background(settings_flood)
    network_info(server)
    flooding.result(SLACK)
    assert probe(server.address) is None


def test_metadata_over_the_limit_is_refused_and_nothing_else(server: ServeProcess) -> None:
    async def big_headers() -> Reply:
        client = await H2Client.open("127.0.0.1", server.port)
        try:
            return await client.call(
                NETWORK_INFO, b"", [("x-padding", "a" * 32 * 1024)], timeout=SLACK
            )
        finally:
            await client.close()

    reply = asyncio.run(big_headers())
    assert reply.grpc_status not in (None, 0) or reply.reset is not None, reply
    network_info(server)


def test_the_server_survived(server: ServeProcess, tmp_path: Path) -> None:
    """Whatever ran before in this module, the server serves."""
    network_info(server)
