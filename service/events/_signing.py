"""Standard Webhooks signatures (https://www.standardwebhooks.com).

A secret is ``whsec_`` + base64 of 32 random bytes. A delivery carries
``webhook-id`` (the event id), ``webhook-timestamp`` (unix seconds of the attempt) and
``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256(secret bytes,
``{id}.{timestamp}.{body}``), space-separated when several secrets sign (during a
rotation's grace period), so receivers verify with any Standard Webhooks library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Final

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32


def new_secret() -> str:
    """A new signing secret, ``whsec_<base64>``."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("not a whsec_ secret") from None


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, ``v1,<base64>``."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signature_headers(
    signing_secrets: Sequence[str], *, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of a delivery signed by every secret given."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            sign(s, msg_id=msg_id, timestamp=timestamp, body=body) for s in signing_secrets
        ),
    }
