"""The receipt keys a server signs with and publishes, re-read when their file changes.

An operator (or Kubernetes updating a mounted Secret) replaces the file; within
``check_interval`` seconds the next build signs with its active key and
GetNetworkInfo publishes its keys, without a restart. A replacement that cannot be
used (half written, inconsistent) keeps the previous keys in use, with one warning
per version of the file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from service.receipts._keyfile import (
    KeyRing,
    ReceiptKey,
    ReceiptKeyFileError,
    ensure_key_file,
    read_key_file,
)

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
"""Seconds between two looks at the file's modification time."""

_Stamp = tuple[int, int, int] | None


class ReceiptSigner:
    """The key ring of one file: the active key signs, every key is published.

    Args:
        path: The receipt key file.
        create: Generate the file when it does not exist (the embedded default in
            the data directory); else a missing file is an error.
        now: The time recorded as a generated key's creation.
        check_interval: Seconds between two looks at the file.
        clock: Monotonic seconds.

    Raises:
        ReceiptKeyFileError: The file is missing (and not to be created) or unusable.
    """

    def __init__(
        self,
        path: Path,
        *,
        create: bool,
        now: datetime,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._clock = clock
        self._interval = check_interval
        self._lock = threading.Lock()
        if create:
            self._ring, self.created = ensure_key_file(path, now=now)
        else:
            self._ring, self.created = read_key_file(path), False
        self._stamp = self._stat()
        self._checked = clock()
        self._failed_stamp: _Stamp = None

    def _stat(self) -> _Stamp:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return (found.st_mtime_ns, found.st_size, found.st_ino)

    def ring(self) -> KeyRing:
        """The current ring (re-read first when the file changed)."""
        now = self._clock()
        if now - self._checked < self._interval:
            return self._ring
        with self._lock:
            if now - self._checked < self._interval:
                return self._ring
            self._checked = now
            stamp = self._stat()
            if stamp is None or stamp == self._stamp or stamp == self._failed_stamp:
                return self._ring
            try:
                ring = read_key_file(self.path)
            except ReceiptKeyFileError as exc:
                self._failed_stamp = stamp
                log.warning("receipt keys not reloaded, the previous ones stay in use: %s", exc)
                return self._ring
            previous = self._ring.active.key_id
            self._ring, self._stamp = ring, stamp
            log.info(
                "receipt keys reloaded from %s: active %s (was %s), %d published",
                self.path,
                ring.active.key_id,
                previous,
                len(ring.keys),
            )
            return ring

    def signing_key(self) -> ReceiptKey:
        """The key that signs new receipts."""
        return self.ring().active

    def published(self) -> tuple[ReceiptKey, ...]:
        """Every key that verifies receipts (active, next and retired)."""
        return self.ring().keys
