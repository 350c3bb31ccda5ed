"""`agent-staking mcp --tls-ca FILE`: the adapter's TLS client side.

The service end is a grpc.aio server with `grpc.ssl_server_credentials` (certificates
made here with `cryptography`) that forwards every call, metadata and trailers
included, to the gRPC suite's real server.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ._flow import structured, tool_error
from .conftest import Service, stdio_session


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


def _forward(backend: grpc.aio.Channel, method: str, streaming: bool) -> Any:
    """A handler that passes the call on unchanged (bytes in, bytes out)."""
    identity: Callable[[bytes], bytes] = lambda raw: raw  # noqa: E731

    def outgoing(context: grpc.aio.ServicerContext[Any, Any]) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in context.invocation_metadata() or () if not k.startswith(":")]

    async def abort(
        context: grpc.aio.ServicerContext[Any, Any], error: grpc.aio.AioRpcError
    ) -> None:
        await context.abort(
            error.code(),
            error.details() or "",
            trailing_metadata=tuple(error.trailing_metadata() or ()),
        )

    if streaming:

        async def stream(
            request: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            call = backend.unary_stream(method, identity, identity)(
                request, metadata=outgoing(context)
            )
            try:
                async for item in call:
                    yield item
            except grpc.aio.AioRpcError as error:
                await abort(context, error)

        return grpc.unary_stream_rpc_method_handler(stream, identity, identity)

    async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            answer: bytes = await backend.unary_unary(method, identity, identity)(
                request, metadata=outgoing(context)
            )
        except grpc.aio.AioRpcError as error:
            await abort(context, error)
            raise
        return answer

    return grpc.unary_unary_rpc_method_handler(unary, identity, identity)


class _Forwarder(grpc.GenericRpcHandler):
    def __init__(self, backend: grpc.aio.Channel) -> None:
        self.backend = backend

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method: str = details.method
        return _forward(self.backend, method, streaming=method.endswith("/WatchTransaction"))


@pytest.fixture(scope="module")
async def tls_target(service: Service, pki: dict[str, Any]) -> AsyncIterator[str]:
    """HOST:PORT of a TLS gRPC server in front of the real service."""
    backend = grpc.aio.insecure_channel(service.address)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_Forwarder(backend)])
    credentials = grpc.ssl_server_credentials([(pki["key"], pki["chain"])])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)
    await backend.close()


async def test_tls_with_the_services_ca(
    service: Service, tls_target: str, pki: dict[str, Path]
) -> None:
    async with stdio_session(
        tls_target, "--tls-ca", str(pki["ca"]), api_key=service.staking_secret
    ) as session:
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
    service: Service, tls_target: str, pki: dict[str, Path], ca: str | None
) -> None:
    """Plaintext against the TLS port, or a CA that did not sign the server's
    certificate: the call fails as UNAVAILABLE, nothing is sent in clear."""
    args = ("--tls-ca", str(pki[ca])) if ca is not None else ()
    async with stdio_session(tls_target, *args, api_key=service.staking_secret) as session:
        error = tool_error(await session.call_tool("get_network_info", {}))
        assert error["code"] == "UNAVAILABLE"
