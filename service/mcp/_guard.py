"""The adapter refuses private keys: a keypair found in tool arguments stops the call.

No tool takes a private key, but a model may paste one into a string field (a
wallet, a memo, an id), alone or inside a sentence. The call is then answered with
PRIVATE_KEY_REFUSED naming the field, and the arguments go nowhere: not to the
service, not to a log, not back into the answer.

A Solana keypair is recognised exactly: 64 bytes whose second half is the Ed25519
public key of the first. Every string (values and object keys, at any depth) is
searched for whole tokens that could encode 64 bytes: a base58, base64 or hex run
delimited by characters outside its alphabet (or the string's ends), and a list of
64 comma-separated integers as in a keypair file (`[239, 252, ...]`, any
whitespace). A candidate counts only when the derivation holds, so look-alikes pass:
a transaction signature is also 64 bytes in base58, and a base64 transaction may
contain runs of any length, but neither ends in the public key of its first half.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Any

from solders.keypair import Keypair

KEYPAIR_BYTES = 64

# Maximal runs of one alphabet: a token ends where its alphabet does.
_BASE58_RUN = re.compile(r"[1-9A-HJ-NP-Za-km-z]+")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]+=*")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]+")
_INTEGER_LIST = re.compile(r"\d+(?:\s*,\s*\d+)*")
# 64 bytes in base58: 87-88 characters, fewer only with leading zero bytes ("1" each).
_BASE58_LENGTHS = range(KEYPAIR_BYTES, 89)
# 64 bytes in base64: 86 characters, plus up to two "=".
_BASE64_LENGTHS = range(86, 89)
_HEX_LENGTH = 2 * KEYPAIR_BYTES


def private_key_paths(arguments: Any, path: str = "") -> Iterator[str]:
    """The paths (`options.memo`, `wallets[1]`) of every keypair in `arguments`.

    A keypair in an object's key is reported at that object's path ("" for the
    arguments as a whole).
    """
    if isinstance(arguments, dict):
        if any(isinstance(name, str) and _holds_keypair(name) for name in arguments):
            yield path
        for name, value in arguments.items():
            yield from private_key_paths(value, f"{path}.{name}" if path else str(name))
    elif isinstance(arguments, list):
        if _is_keypair_array(arguments):
            yield path
            return
        for i, value in enumerate(arguments):
            yield from private_key_paths(value, f"{path}[{i}]")
    elif isinstance(arguments, str) and _holds_keypair(arguments):
        yield path


def _is_keypair_array(values: list[Any]) -> bool:
    if len(values) != KEYPAIR_BYTES:
        return False
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 256 for v in values):
        return False
    return _is_keypair(bytes(values))


def _holds_keypair(text: str) -> bool:
    """Whether a keypair is anywhere in `text`, as a whole token."""
    return (
        any(_base58_keypair(token) for token in _tokens(_BASE58_RUN, text, _BASE58_LENGTHS))
        or any(_is_keypair(_b64(token)) for token in _tokens(_BASE64_RUN, text, _BASE64_LENGTHS))
        or any(
            _is_keypair(bytes.fromhex(token))
            for token in _tokens(_HEX_RUN, text, range(_HEX_LENGTH, _HEX_LENGTH + 1))
        )
        or any(_is_keypair(raw) for raw in _integer_lists(text))
    )


def _tokens(run: re.Pattern[str], text: str, lengths: range) -> Iterator[str]:
    for match in run.finditer(text):
        if len(match[0]) in lengths:
            yield match[0]


def _base58_keypair(token: str) -> bool:
    try:
        Keypair.from_base58_string(token)  # decodes and checks the derivation
    except ValueError:
        return False
    return True


def _integer_lists(text: str) -> Iterator[bytes]:
    """Every list of exactly 64 comma-separated byte values in `text`."""
    for match in _INTEGER_LIST.finditer(text):
        values = [v.strip() for v in match[0].split(",")]
        if len(values) == KEYPAIR_BYTES and all(len(v) <= 3 and int(v) < 256 for v in values):
            yield bytes(int(v) for v in values)


def _b64(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not; b"" when it is neither."""
    body = text.rstrip("=")
    try:
        return base64.b64decode(
            body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4), validate=True
        )
    except (ValueError, binascii.Error):
        return b""


def _is_keypair(raw: bytes) -> bool:
    if len(raw) != KEYPAIR_BYTES:
        return False
    try:
        Keypair.from_bytes(raw)  # checks that the second half derives from the first
    except ValueError:
        return False
    return True
