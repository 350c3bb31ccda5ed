"""Key ids and secrets: ``ask_<key_id>_<secret>``.

- ``key_id``: 16 characters of lowercase Crockford base32, no ``_``. The first 9 encode
  the creation time in milliseconds, so key-id order (the list order) is creation
  order; the last 7 are random.
- ``secret``: 32 random bytes (256 bits), base64url without padding (43 characters,
  which may contain ``_`` and ``-``: parsing splits at the first two ``_`` only).

Only SHA-256 of the secret text (the 43 characters) is ever stored. Hashing the
text, not the decoded bytes, means no other spelling of the same bytes (base64's
spare low bits) can pass for the secret, and the hot path decodes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from service.keys._errors import API_KEY_MALFORMED, AuthenticationError

TOKEN_PREFIX: Final = "ask"
KEY_ID_LENGTH: Final = 16
SECRET_BYTES: Final = 32
_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"
_TIME_CHARS: Final = 9  # 45 bits of milliseconds: until the year 3084
_KEY_ID_RE: Final = re.compile(r"[0-9a-hjkmnp-tv-z]{16}")
_SECRET_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_TOKEN_LENGTH: Final = len(TOKEN_PREFIX) + 1 + KEY_ID_LENGTH + 1 + 43


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A well-formed token: its key id and the digest of its secret (hashable)."""

    key_id: str
    secret_digest: bytes


def is_key_id(value: str) -> bool:
    """Whether ``value`` has the shape of a key id."""
    return _KEY_ID_RE.fullmatch(value) is not None


def new_key_id(now: datetime) -> str:
    """A fresh key id: creation time (ms) then random characters."""
    millis = max(0, int(now.timestamp() * 1000)) % (32**_TIME_CHARS)
    head = "".join(_ALPHABET[(millis >> (5 * i)) & 31] for i in reversed(range(_TIME_CHARS)))
    tail = "".join(secrets.choice(_ALPHABET) for _ in range(KEY_ID_LENGTH - _TIME_CHARS))
    return head + tail


def new_secret(key_id: str) -> tuple[str, bytes]:
    """A fresh secret for ``key_id``: (the token to hand out once, the digest to store)."""
    encoded = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=")
    return f"{TOKEN_PREFIX}_{key_id}_{encoded.decode('ascii')}", hashlib.sha256(encoded).digest()


def _malformed() -> AuthenticationError:
    # The message never echoes the input: it may be a real secret pasted wrongly.
    return AuthenticationError(
        "the API key is not of the form ask_<key_id>_<secret>", reason=API_KEY_MALFORMED
    )


def parse_token(token: object) -> ParsedToken:
    """Parse a presented credential.

    Raises:
        AuthenticationError: ``API_KEY_MALFORMED`` for anything that is not a
            well-formed token (whatever the input: no other exception escapes).
    """
    if not isinstance(token, str) or len(token) != _TOKEN_LENGTH:
        raise _malformed()
    parts = token.split("_", 2)
    if (
        len(parts) != 3
        or parts[0] != TOKEN_PREFIX
        or not _KEY_ID_RE.fullmatch(parts[1])
        or not _SECRET_RE.fullmatch(parts[2])
    ):
        raise _malformed()
    return ParsedToken(
        key_id=parts[1], secret_digest=hashlib.sha256(parts[2].encode("ascii")).digest()
    )
