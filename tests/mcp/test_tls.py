"""`agent-staking mcp --tls-ca FILE`: the adapter's TLS client side.

The service end is a real server with TLS (`tls_cert_file`, `tls_key_file`) on the
session localnet, its certificates made here with `cryptography`.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.config import Settings
from service.localnet import LocalnetServer
from service.server import AgentStakingServer

from ._flow import structured, tool_error
from .conftest import stdio_session


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CA, a server certificate it signs (localhost, 127.0.0.1), and an unrelated CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("agent-staking test CA", ca_key, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("localhost", server_key, ("agent-staking test CA", ca_key))
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _certificate("someone else's CA", other_key, None)
    (directory / "ca.pem").write_bytes(_pem(ca))
    (directory / "other-ca.pem").write_bytes(_pem(other))
    return {
        "ca": directory / "ca.pem",
        "other_ca": directory / "other-ca.pem",
        "key": server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "chain": _pem(server),
    }


@pytest.fixture(scope="module")
async def tls_service(
    localnet: LocalnetServer, pki: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, str]]:
    """A real server with TLS on the session localnet: (HOST:PORT, staking key)."""
    directory = tmp_path_factory.mktemp("tls-service")
    (directory / "cert.pem").write_bytes(pki["chain"])
    (directory / "key.pem").write_bytes(pki["key"])
    server = AgentStakingServer(
        Settings(
            listen="127.0.0.1:0",
            rpc_urls=[localnet.url],
            service_fee_bps=0,
            metrics_listen="off",
            tls_cert_file=directory / "cert.pem",
            tls_key_file=directory / "key.pem",
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
