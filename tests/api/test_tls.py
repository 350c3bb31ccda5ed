"""TLS and mutual TLS, end to end: a Python client and grpcurl, certificates replaced
while the server runs, /metrics over TLS, a warning for plaintext off loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from agentstaking.v1 import staking_pb2, staking_pb2_grpc
from cryptography import x509

from service.config import Settings
from service.localnet import LocalnetServer
from service.server import AgentStakingServer, warn_plaintext
from service.tls import CHECK_INTERVAL, CertificateFiles
from tests._pki import CertificateAuthority, Issued

GRPCURL = Path(sys.executable).parent / "grpcurl"


@dataclass
class Pki:
    server_ca: CertificateAuthority
    client_ca: CertificateAuthority
    server: Issued
    client: Issued
    stranger: Issued
    """A client certificate from a CA the server does not trust."""
    cert: Path
    key: Path
    """Where the server reads its certificate (replaced in place by the reload test)."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    server_ca = CertificateAuthority(directory, "server CA")
    client_ca = CertificateAuthority(directory, "client CA")
    server = server_ca.issue("localhost")
    cert, key = directory / "live-cert.pem", directory / "live-key.pem"
    shutil.copy(server.cert, cert)
    shutil.copy(server.key, key)
    return Pki(
        server_ca=server_ca,
        client_ca=client_ca,
        server=server,
        client=client_ca.issue("agent-1", client=True),
        stranger=CertificateAuthority(directory, "stranger CA").issue("mallory", client=True),
        cert=cert,
        key=key,
    )


@dataclass
class TlsService:
    server: AgentStakingServer
    key: str

    @property
    def address(self) -> str:
        return f"localhost:{self.server.port}"


async def _start(
    localnet: LocalnetServer, directory: Path, pki: Pki, *, mutual: bool
) -> TlsService:
    server = AgentStakingServer(
        Settings(
            listen="127.0.0.1:0",
            rpc_urls=[localnet.url],
            service_fee_bps=0,
            metrics_listen="127.0.0.1:0",
            tls_cert_file=pki.cert,
            tls_key_file=pki.key,
            tls_client_ca_file=pki.client_ca.cert if mutual else None,
            shutdown_grace_seconds=1,
            data_dir=directory,
            database_url=f"sqlite:///{directory / 'keys.db'}",
        )
    )
    await server.start()
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="tls agent", scopes=["staking"])
    return TlsService(server=server, key=secret)


@pytest.fixture(scope="module")
async def tls(
    localnet: LocalnetServer, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TlsService]:
    service = await _start(localnet, tmp_path_factory.mktemp("tls"), pki, mutual=False)
    yield service
    await service.server.stop(0)


@pytest.fixture(scope="module")
async def mtls(
    localnet: LocalnetServer, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TlsService]:
    service = await _start(localnet, tmp_path_factory.mktemp("mtls"), pki, mutual=True)
    yield service
    await service.server.stop(0)


def _credentials(pki: Pki, client: Issued | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.server_ca.cert.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )


async def _network_info(
    address: str, credentials: grpc.ChannelCredentials, key: str
) -> staking_pb2.GetNetworkInfoResponse:
    # A channel of its own: a new connection, so a new handshake.
    async with grpc.aio.secure_channel(
        address, credentials, options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        reply: staking_pb2.GetNetworkInfoResponse = await staking_pb2_grpc.StakingServiceStub(
            channel
        ).GetNetworkInfo(
            staking_pb2.GetNetworkInfoRequest(),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=10,
        )
        return reply


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), "-max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_python_client_over_tls(tls: TlsService, pki: Pki) -> None:
    reply = await _network_info(tls.address, _credentials(pki), tls.key)
    assert reply.minimum_delegation_lamports > 0


async def test_plaintext_and_unknown_cas_are_refused(tls: TlsService, pki: Pki) -> None:
    async with grpc.aio.insecure_channel(tls.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            await staking_pb2_grpc.StakingServiceStub(channel).GetNetworkInfo(
                staking_pb2.GetNetworkInfoRequest(), timeout=5
            )
    assert plaintext.value.code() is grpc.StatusCode.UNAVAILABLE
    wrong_ca = grpc.ssl_channel_credentials(root_certificates=pki.client_ca.cert.read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as untrusted:
        await _network_info(tls.address, wrong_ca, tls.key)
    assert untrusted.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_grpcurl_over_tls(tls: TlsService, pki: Pki) -> None:
    listed = await asyncio.to_thread(
        _grpcurl, "-cacert", str(pki.server_ca.cert), tls.address, "list"
    )
    assert listed.returncode == 0, listed.stderr
    assert "agentstaking.v1.StakingService" in listed.stdout.split()
    called = await asyncio.to_thread(
        _grpcurl,
        "-cacert",
        str(pki.server_ca.cert),
        "-H",
        f"authorization: Bearer {tls.key}",
        tls.address,
        "agentstaking.v1.StakingService/GetNetworkInfo",
    )
    assert called.returncode == 0, called.stderr
    assert int(json.loads(called.stdout)["minimumDelegationLamports"]) > 0


async def test_mutual_tls_needs_a_client_certificate_the_server_trusts(
    mtls: TlsService, pki: Pki
) -> None:
    reply = await _network_info(mtls.address, _credentials(pki, pki.client), mtls.key)
    assert reply.minimum_delegation_lamports > 0
    for client in (None, pki.stranger):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _network_info(mtls.address, _credentials(pki, client), mtls.key)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_grpcurl_with_mutual_tls(mtls: TlsService, pki: Pki) -> None:
    base = ["-cacert", str(pki.server_ca.cert), "-H", f"authorization: Bearer {mtls.key}"]
    method = "agentstaking.v1.StakingService/GetNetworkInfo"
    without = await asyncio.to_thread(_grpcurl, *base, mtls.address, method)
    assert without.returncode != 0
    called = await asyncio.to_thread(
        _grpcurl,
        *base,
        "-cert",
        str(pki.client.cert),
        "-key",
        str(pki.client.key),
        mtls.address,
        method,
    )
    assert called.returncode == 0, called.stderr


def _presented_serial(port: int, pki: Pki) -> int:
    context = ssl.create_default_context(cafile=str(pki.server_ca.cert))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_certificates_are_reloaded_without_a_restart_or_dropped_calls(
    localnet: LocalnetServer, pki: Pki, tmp_path: Path
) -> None:
    directory = tmp_path / "reload"
    directory.mkdir()
    cert, key = directory / "cert.pem", directory / "key.pem"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    own = Pki(**{**pki.__dict__, "cert": cert, "key": key})
    service = await _start(localnet, directory, own, mutual=False)
    try:
        metrics_port = service.server.metrics_listener.port  # type: ignore[union-attr]
        assert _presented_serial(service.server.port, own) == pki.server.serial
        assert _presented_serial(metrics_port, own) == pki.server.serial
        async with grpc.aio.secure_channel(service.address, _credentials(own)) as channel:
            stub = staking_pb2_grpc.StakingServiceStub(channel)
            metadata = (("authorization", f"Bearer {service.key}"),)
            await stub.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest(), metadata=metadata)
            renewed = pki.server_ca.issue("localhost", file="renewed")
            # As a certificate manager does: the new files replace the old ones.
            shutil.copy(renewed.key, key.with_suffix(".tmp"))
            key.with_suffix(".tmp").replace(key)
            shutil.copy(renewed.cert, cert.with_suffix(".tmp"))
            cert.with_suffix(".tmp").replace(cert)
            # The files are looked at once a CHECK_INTERVAL: new handshakes switch then.
            for _ in range(50):
                if _presented_serial(service.server.port, own) == renewed.serial:
                    break
                await asyncio.sleep(CHECK_INTERVAL / 5)
            assert _presented_serial(service.server.port, own) == renewed.serial
            # The connection opened before keeps working, its calls uninterrupted.
            await stub.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest(), metadata=metadata)
            for _ in range(50):
                if _presented_serial(metrics_port, own) == renewed.serial:
                    break
                await asyncio.sleep(CHECK_INTERVAL / 5)
            assert _presented_serial(metrics_port, own) == renewed.serial
        # A half-written replacement is not used: the last good certificate stays.
        cert.write_text("-----BEGIN CERTIFICATE-----\ntruncated")
        await asyncio.sleep(CHECK_INTERVAL * 1.5)
        assert _presented_serial(service.server.port, own) == renewed.serial
        reply = await _network_info(service.address, _credentials(own), service.key)
        assert reply.minimum_delegation_lamports > 0
    finally:
        await service.server.stop(0)


async def test_metrics_over_tls(tls: TlsService, pki: Pki) -> None:
    listener = tls.server.metrics_listener
    assert listener is not None
    context = ssl.create_default_context(cafile=str(pki.server_ca.cert))
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"https://localhost:{listener.port}/metrics", ssl=context
        ) as response:
            assert response.status == 200
            body = await response.text()
        assert "agent_staking_tls_certificate_expiry_timestamp_seconds" in body
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://localhost:{listener.port}/metrics") as plain:
                await plain.read()


def test_a_missing_half_of_the_pair_is_refused(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        Settings(tls_cert_file=pki.server.cert, data_dir=tmp_path)


def test_plaintext_off_loopback_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.server"):
        warn_plaintext("127.0.0.1", "test endpoint", "a flag")
        warn_plaintext("::1", "test endpoint", "a flag")
        assert not caplog.records
        warn_plaintext("0.0.0.0", "test endpoint", "a flag")
        warn_plaintext("10.1.2.3", "test endpoint", "a flag")
    warnings = [r for r in caplog.records if "without TLS" in r.getMessage()]
    assert len(warnings) == 1
    assert "0.0.0.0" in warnings[0].getMessage()


def test_unusable_files_are_warned_about_once_per_change(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    now = [0.0]
    files = CertificateFiles(cert, key, clock=lambda: now[0])
    cert.write_text("garbage")
    with caplog.at_level(logging.WARNING, logger="service.tls"):
        for _ in range(5):  # a look every second: the same bad files, one warning
            now[0] += CHECK_INTERVAL
            files.refresh()
        cert.write_text("other garbage")
        now[0] += CHECK_INTERVAL
        files.refresh()
    warnings = [r for r in caplog.records if "not usable yet" in r.getMessage()]
    assert len(warnings) == 2
    assert files.generation == 0  # the last good certificate stays in use
    shutil.copy(pki.server.cert, cert)
    now[0] += CHECK_INTERVAL
    files.refresh()
    assert files.generation == 1
