"""List pagination (AIP-158): page sizes and opaque page tokens.

A token carries the list it belongs to, a fingerprint of the request's other fields
(a token is only valid with the same request) and a position: an offset in a ranking,
or the last key returned for lists ordered by key (stable when items come and go).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Final

from service.core.errors import InvalidArgumentError

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500


def page_size(value: int, *, field: str = "page_size") -> int:
    """The effective page size: 0 -> 50, above 500 -> 500.

    Raises:
        InvalidArgumentError: Negative.
    """
    if value < 0:
        raise InvalidArgumentError(
            f"{field} must not be negative, got {value}",
            field=field,
            reason="INVALID_PAGE_SIZE",
            metadata={"field": field, "value": value},
        )
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


def fingerprint(*parts: object) -> str:
    """A short digest of the request fields a token is bound to."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode()


@dataclass(frozen=True, kw_only=True)
class PageToken:
    """A decoded page token: which list, for which request, where to go on."""

    kind: str
    fingerprint: str
    position: str

    def encode(self) -> str:
        raw = json.dumps([self.kind, self.fingerprint, self.position], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(
    token: str, *, kind: str, fingerprint: str, field: str = "page_token"
) -> PageToken | None:
    """Decode and check a request's page token; None for the first page.

    Raises:
        InvalidArgumentError: Malformed, from another list, or from a request with
            other fields.
    """
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        kind_, print_, position = json.loads(base64.urlsafe_b64decode(padded.encode()))
        decoded = PageToken(kind=str(kind_), fingerprint=str(print_), position=str(position))
    except (ValueError, TypeError, RecursionError):  # RecursionError: nested past the parser
        raise _not_a_token(field) from None
    if decoded.kind != kind:
        raise InvalidArgumentError(
            "page_token belongs to another list call", field=field, reason=_TOKEN_REASON
        )
    if decoded.fingerprint != fingerprint:
        raise InvalidArgumentError(
            "page_token was returned for a request with other fields; repeat them unchanged",
            field=field,
            reason=_TOKEN_REASON,
        )
    return decoded


def page_offset(token: PageToken | None, *, field: str = "page_token") -> int:
    """The offset a token of an offset-paged list (a ranking) points at; 0 without one.

    Raises:
        InvalidArgumentError: The position is not an offset.
    """
    if token is None:
        return 0
    try:
        offset = int(token.position)
    except ValueError:
        offset = -1
    if offset < 0:
        raise _not_a_token(field)
    return offset


_TOKEN_REASON: Final = "INVALID_PAGE_TOKEN"


def _not_a_token(field: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        "page_token is not a token returned by this service", field=field, reason=_TOKEN_REASON
    )
