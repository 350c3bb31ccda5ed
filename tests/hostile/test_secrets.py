"""No secret in any log, ever: a real API key sent in every header shape a broken
client or an attacker could produce (glued to bytes that are not UTF-8, under other
header names, twice, too large, as binary metadata), and in fuzzed ones; then every
byte the process wrote, stdout and stderr, is searched for it.

A second server runs with gRPC core's HTTP tracing on, which prints every header it
receives to stderr: what core writes is logged through the same redaction.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._h2client import H2Client, Header
from ._server import ServeProcess

NETWORK_INFO = "/agentstaking.v1.StakingService/GetNetworkInfo"


def shapes(key: bytes) -> list[list[Header]]:
    """Header sets, each carrying the real key somehow."""
    return [
        [(b"x-api-key", b"\xff" + key)],
        [(b"x-api-key", key + b"\xff")],
        [(b"x-api-key", b"\xc3\x28" + key + b"\xe2\x82")],
        [(b"x-api-key", b"\x00" + key)],
        [(b"authorization", b"Bearer \xff" + key)],
        [(b"authorization", key)],
        [(b"authorization", b"Basic " + key)],
        [(b"authorization", b"bearer   " + key + b"   trailing")],
        [(b"authorization", b"Bearer " + key), (b"authorization", b"Bearer " + key)],
        [(b"authorization", b"Bearer " + key), (b"x-api-key", b"ask_0000000000000000_x")],
        [(b"x-api-key", key), (b"authorization", b"Bearer \xfe" + key)],
        [(b"x-custom", key)],
        [(b"x-custom", b"word" + key)],
        [(b"user-agent", b"agent/" + key)],
        [(b"grpc-timeout", key)],
        [(b"x-api-key-bin", key)],
        [(b"x-api-key-bin", base64.b64encode(b"\xff" + key))],
        [(b"X-Api-Key", key)],
        [(b"x-api-key", key + b"\r\nx-injected: 1")],
        [(b"x-api-key", key + b"a" * 20_000)],
        [(key.lower(), b"1")],
        [(b"content-type", b"application/grpc+" + key)],
    ]


async def send(server: ServeProcess, header_sets: list[list[Header]]) -> None:
    """One stream per header set, each on a connection of its own (a header the
    server finds malformed may end the connection)."""
    for headers in header_sets:
        client = await H2Client.open("127.0.0.1", server.port)
        try:
            await client.call(NETWORK_INFO, b"", headers, timeout=15)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            await client.close()


def leaks(server: ServeProcess, secret: str) -> list[str]:
    """Lines of output holding ``secret`` (the bootstrap announcement aside)."""
    secret_part = secret.encode()[-43:]
    return [
        line.decode(errors="replace")[:300]
        for line in server.output.splitlines()
        if secret_part in line and b"bootstrap_api_key" not in line
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    process = ServeProcess(tmp_path_factory.mktemp("secrets")).start()
    yield process
    process.stop()
    # Whatever was still on its way out when the last example ran.
    assert leaks(process, process.keys["staking"]) == []


# chttp2_hpack_parser: gRPC core prints every header it receives, value included.
TRACING = {
    "plain": {},
    "core tracing headers": {"GRPC_VERBOSITY": "DEBUG", "GRPC_TRACE": "http,chttp2_hpack_parser"},
}


@pytest.mark.parametrize("tracing", TRACING)
def test_no_header_shape_puts_the_key_in_the_output(tracing: str, tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, env=TRACING[tracing]).start()
    try:
        for secret in server.keys.values():
            asyncio.run(send(server, shapes(secret.encode())))
    finally:
        server.stop()
    for secret in server.keys.values():
        assert leaks(server, secret) == []
    if TRACING[tracing]:
        # Core did print the headers it received, keys among them: the redaction, not
        # silence, kept them out.
        printed = [line for line in server.output.splitlines() if b"HDR:SVR:" in line]
        assert any(b"<redacted>" in line for line in printed), printed[:5]


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.sampled_from([b"authorization", b"x-api-key", b"x-other", b"user-agent"]),
    before=st.binary(max_size=8),
    after=st.binary(max_size=8),
    bearer=st.booleans(),
)
def test_fuzzed_headers_never_put_the_key_in_the_output(
    server: ServeProcess, name: bytes, before: bytes, after: bytes, bearer: bool
) -> None:
    key = server.keys["staking"].encode()
    value = (b"Bearer " if bearer else b"") + before + key + after
    asyncio.run(send(server, [[(name, value)]]))
    assert leaks(server, key.decode()) == []
