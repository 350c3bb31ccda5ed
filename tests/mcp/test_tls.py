"""`agent-staking mcp --tls-ca FILE`: the adapter's TLS client side.

The service end is a real server with TLS (`tls_cert_file`, `tls_key_file`) on the
session localnet, its certificates made here with `cryptography`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.config import Settings
from service.localnet import LocalnetServer
from service.server import AgentStakingServer
from tests._pki import CertificateAuthority

from ._flow import structured, tool_error
from .conftest import stdio_session


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate it signs (localhost, 127.0.0.1), and an unrelated CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory, "agent-staking test CA")
    server = ca.issue("localhost")
    other = CertificateAuthority(directory, "someone else's CA")
    return {"ca": ca.cert, "other_ca": other.cert, "cert": server.cert, "key": server.key}


@pytest.fixture(scope="module")
async def tls_service(
    localnet: LocalnetServer, pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, str]]:
    """A real server with TLS on the session localnet: (HOST:PORT, staking key)."""
    directory = tmp_path_factory.mktemp("tls-service")
    server = AgentStakingServer(
        Settings(
            listen="127.0.0.1:0",
            rpc_urls=[localnet.url],
            service_fee_bps=0,
            metrics_listen="off",
            tls_cert_file=pki["cert"],
            tls_key_file=pki["key"],
            shutdown_grace_seconds=1,
            data_dir=directory,
            database_url=f"sqlite:///{directory / 'keys.db'}",
        )
    )
    await server.start()
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="tls agent", scopes=["staking"])
    yield f"127.0.0.1:{server.port}", secret
    await server.stop(0)


async def test_tls_with_the_services_ca(tls_service: tuple[str, str], pki: dict[str, Path]) -> None:
    target, key = tls_service
    async with stdio_session(target, "--tls-ca", str(pki["ca"]), api_key=key) as session:
        info = structured(await session.call_tool("get_network_info", {}))
        assert int(info["minimum_delegation_lamports"]) > 0
        # Rich error details survive the TLS hop.
        error = tool_error(
            await session.call_tool(
                "build_stake_transaction", {"wallet": "not-an-address", "amount_lamports": 1}
            )
        )
        assert error["reason"] == "INVALID_ADDRESS"
        assert error["field_violations"][0]["field"] == "wallet"


@pytest.mark.parametrize("ca", [None, "other_ca"])
async def test_tls_refuses_what_it_cannot_verify(
    tls_service: tuple[str, str], pki: dict[str, Path], ca: str | None
) -> None:
    """Plaintext against the TLS port, or a CA that did not sign the server's
    certificate: the call fails as UNAVAILABLE, nothing is sent in clear."""
    args = ("--tls-ca", str(pki[ca])) if ca is not None else ()
    target, key = tls_service
    async with stdio_session(target, *args, api_key=key) as session:
        error = tool_error(await session.call_tool("get_network_info", {}))
        assert error["code"] == "UNAVAILABLE"
