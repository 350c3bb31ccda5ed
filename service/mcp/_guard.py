"""The adapter refuses private keys: a keypair found in tool arguments stops the call.

No tool takes a private key, but a model may paste one into a string field (a
wallet, a memo). The call is then answered with PRIVATE_KEY_REFUSED naming the
field, and the arguments go nowhere: not to the service, not to a log, not back
into the answer. A Solana keypair is recognised exactly: 64 bytes whose second
half is the Ed25519 public key of the first (base58, base64, hex, or a JSON array
of byte values as in a keypair file).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

from solders.keypair import Keypair

KEYPAIR_BYTES = 64


def private_key_paths(arguments: Any, path: str = "") -> Iterator[str]:
    """The paths (`options.memo`, `wallets[1]`) of every keypair in `arguments`."""
    if isinstance(arguments, dict):
        for name, value in arguments.items():
            yield from private_key_paths(value, f"{path}.{name}" if path else str(name))
    elif isinstance(arguments, list):
        if _is_keypair_array(arguments):
            yield path
            return
        for i, value in enumerate(arguments):
            yield from private_key_paths(value, f"{path}[{i}]")
    elif isinstance(arguments, str) and _is_keypair_text(arguments):
        yield path


def _is_keypair_array(values: list[Any]) -> bool:
    if len(values) != KEYPAIR_BYTES:
        return False
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 256 for v in values):
        return False
    return _is_keypair(bytes(values))


def _is_keypair_text(text: str) -> bool:
    text = text.strip()
    # Base58 of 64 bytes is 86-88 characters, base64 88, hex 128.
    if not 80 <= len(text) <= 130:
        return False
    try:
        Keypair.from_base58_string(text)
        return True
    except ValueError:
        pass
    for decode in (_b64, bytes.fromhex):
        try:
            raw = decode(text)
        except (ValueError, binascii.Error):
            continue
        if _is_keypair(raw):
            return True
    return False


def _b64(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not."""
    padded = text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4)
    return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)


def _is_keypair(raw: bytes) -> bool:
    if len(raw) != KEYPAIR_BYTES:
        return False
    try:
        Keypair.from_bytes(raw)
    except ValueError:
        return False
    return True
