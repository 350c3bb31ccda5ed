"""The receipt key file: the service's Ed25519 receipt keys, as JSON.

::

    {"keys": [
      {"key_id": "rk_…", "status": "active", "public_key": "<base64, 32 bytes>",
       "private_key": "<base64 Ed25519 seed, 32 bytes>", "create_time": "…Z"},
      {"key_id": "rk_…", "status": "retired", "public_key": "…",
       "create_time": "…Z", "retire_time": "…Z"}
    ]}

Exactly one key is ``active``: it signs new receipts. A ``next`` key (at most one) is
published before it signs, so that every replica publishes it before any receipt
needs it (a rotation in two steps, for several replicas). ``retired`` keys signed
receipts before a rotation: they keep only their public key and stay published, so
those receipts stay verifiable, until an operator deletes them from the file.

The file holds private keys: it is written with mode 0600, atomically (a new file
renamed over the old one), and never logged.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from service.core.receipts import PUBLIC_KEY_BYTES, key_id_for

ALGORITHM = "ed25519"


class ReceiptKeyFileError(ValueError):
    """The receipt key file is missing, unreadable or inconsistent (the message says
    which key and why; it never quotes a private key)."""


class KeyStatus(enum.Enum):
    """What a receipt key is for."""

    ACTIVE = "active"
    """Signs new receipts (exactly one)."""
    NEXT = "next"
    """Published ahead of a rotation; signs nothing yet (at most one)."""
    RETIRED = "retired"
    """Signed receipts before a rotation; published so they stay verifiable."""


@dataclass(frozen=True, kw_only=True)
class ReceiptKey:
    """One key of the file. ``private_key`` is None for retired keys."""

    key_id: str
    public_key: bytes
    status: KeyStatus
    create_time: datetime
    retire_time: datetime | None = None
    # libsodium's: about 25 µs a receipt where OpenSSL's took 35 (about as many
    # instructions, fewer cycles); Ed25519 is deterministic, so the signatures are the
    # same bytes (a test holds them equal).
    private_key: SigningKey | None = field(default=None, repr=False, compare=False)

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data`` (64 bytes).

        Raises:
            ValueError: A retired key (its private key is gone).
        """
        if self.private_key is None:
            raise ValueError(f"receipt key {self.key_id} has no private key")
        return self.private_key.sign(data).signature


def _public_bytes(private: SigningKey) -> bytes:
    return bytes(private.verify_key)


def new_key(*, status: KeyStatus, now: datetime) -> ReceiptKey:
    """A freshly generated key (from the operating system's randomness)."""
    private = SigningKey.generate()
    public = _public_bytes(private)
    return ReceiptKey(
        key_id=key_id_for(public),
        public_key=public,
        status=status,
        create_time=now,
        private_key=private,
    )


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise ReceiptKeyFileError(f"{what} must be an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ReceiptKeyFileError(f"{what} is not an RFC 3339 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise ReceiptKeyFileError(f"{what} has no time zone")
    return parsed


def _decode(value: Any, what: str, size: int) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise ReceiptKeyFileError(f"{what} must be {size} bytes, base64 encoded")
    return raw


@dataclass(frozen=True)
class KeyRing:
    """Every key of the file, in file order (the active one first when written)."""

    keys: tuple[ReceiptKey, ...]

    def __post_init__(self) -> None:
        active = [k for k in self.keys if k.status is KeyStatus.ACTIVE]
        if len(active) != 1:
            raise ReceiptKeyFileError(
                f"the receipt key file must have exactly one active key, not {len(active)}"
            )
        if sum(k.status is KeyStatus.NEXT for k in self.keys) > 1:
            raise ReceiptKeyFileError("the receipt key file has more than one next key")
        ids = [k.key_id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ReceiptKeyFileError("the receipt key file lists a key twice")

    @property
    def active(self) -> ReceiptKey:
        """The key that signs new receipts."""
        return next(k for k in self.keys if k.status is KeyStatus.ACTIVE)

    @classmethod
    def generate(cls, now: datetime) -> KeyRing:
        """A ring of one new active key."""
        return cls((new_key(status=KeyStatus.ACTIVE, now=now),))

    def stage(self, now: datetime) -> KeyRing:
        """Add a next key (published, not signing yet); unchanged if there is one."""
        if any(k.status is KeyStatus.NEXT for k in self.keys):
            return self
        return KeyRing((*self.keys, new_key(status=KeyStatus.NEXT, now=now)))

    def rotate(self, now: datetime) -> KeyRing:
        """The next key (staged before, else a new one) becomes active; the active one
        is retired: its private key is dropped, its public key stays published."""
        staged = self.stage(now)
        keys: list[ReceiptKey] = []
        for key in staged.keys:
            if key.status is KeyStatus.ACTIVE:
                key = replace(key, status=KeyStatus.RETIRED, retire_time=now, private_key=None)
            elif key.status is KeyStatus.NEXT:
                key = replace(key, status=KeyStatus.ACTIVE)
            keys.append(key)
        keys.sort(key=lambda k: (k.status is not KeyStatus.ACTIVE, k.status is KeyStatus.RETIRED))
        return KeyRing(tuple(keys))

    def to_json(self) -> dict[str, Any]:
        """The file's content (private keys included)."""
        entries = []
        for key in self.keys:
            entry: dict[str, Any] = {
                "key_id": key.key_id,
                "status": key.status.value,
                "public_key": base64.b64encode(key.public_key).decode(),
                "create_time": _time(key.create_time),
            }
            if key.private_key is not None:
                raw = bytes(key.private_key)  # the 32-byte seed
                entry["private_key"] = base64.b64encode(raw).decode()
            if key.retire_time is not None:
                entry["retire_time"] = _time(key.retire_time)
            entries.append(entry)
        return {"keys": entries}

    @classmethod
    def from_json(cls, value: Any) -> KeyRing:
        """Read and check a ring: key ids match their public keys, private keys match
        their public keys, active and next keys have a private key.

        Raises:
            ReceiptKeyFileError: What is wrong, naming the key.
        """
        entries = value.get("keys") if isinstance(value, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ReceiptKeyFileError('the receipt key file must be {"keys": [...]}, not empty')
        return cls(tuple(_read_key(entry, index) for index, entry in enumerate(entries)))


def _read_key(entry: Any, index: int) -> ReceiptKey:
    what = f"key {index + 1}"
    if not isinstance(entry, dict):
        raise ReceiptKeyFileError(f"{what} is not an object")
    try:
        status = KeyStatus(entry.get("status"))
    except ValueError:
        raise ReceiptKeyFileError(
            f"{what}: status must be one of {', '.join(s.value for s in KeyStatus)}"
        ) from None
    public = _decode(entry.get("public_key"), f"{what}: public_key", PUBLIC_KEY_BYTES)
    key_id = key_id_for(public)
    what = f"key {key_id}"
    if entry.get("key_id", key_id) != key_id:
        raise ReceiptKeyFileError(f"{what}: key_id {entry.get('key_id')!r} is not its key's id")
    private: SigningKey | None = None
    if "private_key" in entry:
        seed = _decode(entry["private_key"], f"{what}: private_key", 32)
        private = SigningKey(seed)
        if _public_bytes(private) != public:
            raise ReceiptKeyFileError(f"{what}: private_key does not match public_key")
    elif status is not KeyStatus.RETIRED:
        raise ReceiptKeyFileError(f"{what}: an {status.value} key needs its private_key")
    retire = entry.get("retire_time")
    return ReceiptKey(
        key_id=key_id,
        public_key=public,
        status=status,
        create_time=_parse_time(entry.get("create_time"), f"{what}: create_time"),
        retire_time=_parse_time(retire, f"{what}: retire_time") if retire is not None else None,
        private_key=private if status is not KeyStatus.RETIRED else None,
    )


def read_key_file(path: Path) -> KeyRing:
    """The ring in ``path``.

    Raises:
        ReceiptKeyFileError: Missing, unreadable, not JSON, or inconsistent.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ReceiptKeyFileError(f"receipt key file {path} does not exist") from None
    except OSError as exc:
        raise ReceiptKeyFileError(f"receipt key file {path} cannot be read: {exc}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReceiptKeyFileError(f"receipt key file {path} is not JSON: {exc}") from None
    try:
        return KeyRing.from_json(value)
    except ReceiptKeyFileError as exc:
        raise ReceiptKeyFileError(f"receipt key file {path}: {exc}") from None


def write_key_file(path: Path, ring: KeyRing, *, exclusive: bool = False) -> bool:
    """Write ``ring`` to ``path`` atomically, readable by its owner only.

    Args:
        exclusive: Only if ``path`` does not exist yet (several processes creating
            it at once: one wins, the others read it).

    Returns:
        False when ``exclusive`` and the file exists (nothing written).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(ring.to_json(), indent=2) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=".receipt-keys-", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        if exclusive:
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
        else:
            os.replace(temporary, path)
            temporary = ""
        return True
    finally:
        if temporary:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def ensure_key_file(path: Path, *, now: datetime) -> tuple[KeyRing, bool]:
    """The ring in ``path``, generated there first when the file does not exist.

    Returns:
        The ring, and whether it was created now.

    Raises:
        ReceiptKeyFileError: It exists but is unusable.
    """
    if not path.exists() and write_key_file(path, KeyRing.generate(now), exclusive=True):
        return read_key_file(path), True
    return read_key_file(path), False


def public_view(keys: Sequence[ReceiptKey]) -> list[dict[str, Any]]:
    """The published keys as JSON (what `agent-staking receipt-key` prints)."""
    return [
        {
            "key_id": key.key_id,
            "algorithm": ALGORITHM,
            "public_key": base64.b64encode(key.public_key).decode(),
            "status": key.status.value,
            "create_time": _time(key.create_time),
            **({"retire_time": _time(key.retire_time)} if key.retire_time is not None else {}),
        }
        for key in keys
    ]
