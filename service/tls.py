"""TLS for the gRPC port and /metrics: certificates from files, re-read when they change.

A certificate manager (cert-manager, Vault agent, a cron job) replaces the files in
place; new connections then get the new certificate without a restart, and calls on
open connections go on. A replacement is used only once it is whole and consistent
(the chain parses, the key matches the leaf certificate, the client CA parses): a
half-written file keeps the previous certificate in use, with a warning.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
"""Seconds between two looks at the files' modification times."""


@dataclass(frozen=True, slots=True)
class Certificates:
    """One consistent set read from the files."""

    chain: bytes
    key: bytes
    client_ca: bytes | None
    not_after: datetime
    subject: str


class CertificateError(ValueError):
    """The files do not hold a usable certificate and key."""


class CertificateFiles:
    """The server's certificate, key and optional client CA, as files.

    Args:
        cert: PEM certificate chain, leaf first.
        key: PEM private key of the leaf (unencrypted).
        client_ca: PEM bundle client certificates must chain to (mutual TLS).
        clock: Monotonic seconds (how often the files are looked at).

    Raises:
        CertificateError: The files cannot be read or do not fit together.
    """

    def __init__(
        self,
        cert: Path,
        key: Path,
        client_ca: Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._refused: object = None
        self._checked = clock()
        self.current = self._read()
        self.generation = 0
        """Counts the reloads: each consumer applies a generation it has not seen."""

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def _paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self._paths():
            try:
                stat = path.stat()
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(stamps)

    def _read(self) -> Certificates:
        try:
            chain = self.cert.read_bytes()
            key = self.key.read_bytes()
            client_ca = self.client_ca.read_bytes() if self.client_ca else None
        except OSError as exc:
            raise CertificateError(f"cannot read {exc.filename}: {exc.strerror}") from None
        try:
            certificates = x509.load_pem_x509_certificates(chain)
        except ValueError:
            raise CertificateError(f"{self.cert} holds no PEM certificate") from None
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError):
            raise CertificateError(f"{self.key} holds no unencrypted PEM private key") from None
        leaf = certificates[0]
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(
            serialization.Encoding.DER, public
        ) != private.public_key().public_bytes(serialization.Encoding.DER, public):
            raise CertificateError(f"{self.key} is not the key of the certificate in {self.cert}")
        if client_ca is not None:
            try:
                x509.load_pem_x509_certificates(client_ca)
            except ValueError:
                raise CertificateError(f"{self.client_ca} holds no PEM certificate") from None
        return Certificates(
            chain=chain,
            key=key,
            client_ca=client_ca,
            not_after=leaf.not_valid_after_utc,
            subject=leaf.subject.rfc4514_string(),
        )

    def refresh(self) -> None:
        """Re-read the files if they changed into a usable set since the last look (at
        most once per :data:`CHECK_INTERVAL`): :attr:`current` and :attr:`generation`
        then move on."""
        now = self._clock()
        with self._lock:
            if now - self._checked < CHECK_INTERVAL:
                return
            self._checked = now
            stamp = self._stamps()
            if stamp == self._stamp:
                return
            try:
                fresh = self._read()
            except CertificateError as exc:
                # Perhaps caught halfway through a replacement: look again next time,
                # but say so once per set of files, not once a second.
                if stamp != self._refused:
                    self._refused = stamp
                    log.warning("TLS certificate files changed but are not usable yet: %s", exc)
                return
            self._stamp = stamp
            self.current = fresh
            self.generation += 1
        log.info(
            "TLS certificate reloaded: %s, valid until %s",
            fresh.subject,
            fresh.not_after.isoformat(),
        )

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that pick up replaced files on new connections."""

        def configuration(certificates: Certificates) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(certificates.key, certificates.chain)],
                root_certificates=certificates.client_ca,
            )

        applied = self.generation

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC core before each handshake; None keeps the current one.
            nonlocal applied
            self.refresh()
            if applied == self.generation:
                return None
            applied = self.generation
            return configuration(self.current)

        return grpc.dynamic_ssl_server_credentials(
            configuration(self.current),
            fetch,  # type: ignore[arg-type]  # gRPC takes None as "unchanged"
            require_client_authentication=self.mutual,
        )

    def ssl_context(self) -> Callable[[], ssl.SSLContext]:
        """A server context for /metrics and a function that loads replaced files into
        it (new connections then use them) and returns it."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_into(context, self.current)
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
        applied = self.generation

        def updated() -> ssl.SSLContext:
            nonlocal applied
            self.refresh()
            if applied != self.generation:
                applied = self.generation
                self._load_into(context, self.current)
            return context

        return updated

    def _load_into(self, context: ssl.SSLContext, certificates: Certificates) -> None:
        # The ssl module loads a certificate from paths only: the files were just read
        # and checked; one replaced again since then is caught by the next look.
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS certificate files changed while being loaded: %s", exc)
            return
        if certificates.client_ca is not None:
            # Added to the trusted set: a CA that is removed stays trusted until restart.
            context.load_verify_locations(cadata=certificates.client_ca.decode())
