"""Errors of the keys domain; ``service.api`` maps them to gRPC statuses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final, TypeVar

from service.core.errors import DomainError, ErrorKind, InvalidArgumentError

_Value = TypeVar("_Value")
_Fallback = TypeVar("_Fallback")

# Reasons of UNAUTHENTICATED (google.rpc.ErrorInfo.reason).
API_KEY_MISSING: Final = "API_KEY_MISSING"
"""No API key in the call's metadata (raised by the auth interceptor)."""
API_KEY_AMBIGUOUS: Final = "API_KEY_AMBIGUOUS"
"""More than one key in the call's metadata (raised by the auth interceptor)."""
API_KEY_MALFORMED: Final = "API_KEY_MALFORMED"
"""The credential is not of the form ``ask_<key_id>_<secret>``."""
API_KEY_UNKNOWN: Final = "API_KEY_UNKNOWN"
"""No key has this id, or the secret is not one of the key's: one reason for both, so
that the error does not tell a prober which key ids exist."""
API_KEY_EXPIRED: Final = "API_KEY_EXPIRED"
API_KEY_REVOKED: Final = "API_KEY_REVOKED"
API_KEY_ROTATED: Final = "API_KEY_ROTATED"
"""The secret was replaced by a rotation and its grace period is over."""

_AUTH_HINTS: Final = {
    API_KEY_MISSING: "Send the key as `authorization: Bearer <key>` or `x-api-key: <key>`.",
    API_KEY_AMBIGUOUS: "Send exactly one key: one `authorization` or `x-api-key` header.",
    API_KEY_MALFORMED: "Send the whole key exactly as issued: ask_<key_id>_<secret>.",
    API_KEY_UNKNOWN: "Check that the key is copied whole; ask an operator for a new key.",
    API_KEY_EXPIRED: "Ask an operator to extend the key's expire_time or issue a new key.",
    API_KEY_REVOKED: "The key was revoked; ask an operator for a new key.",
    API_KEY_ROTATED: "The key was rotated; use the secret returned by the rotation.",
}


class AuthenticationError(DomainError):
    """An API key credential was refused; ``reason`` tells why (one of ``API_KEY_*``)."""

    kind = ErrorKind.UNAUTHENTICATED
    default_reason = API_KEY_UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        reason: str = API_KEY_UNKNOWN,
        metadata: Mapping[str, str | int] | None = None,
    ) -> None:
        super().__init__(
            message, reason=reason, metadata=metadata, hint=_AUTH_HINTS.get(reason, "")
        )


class KeyArgumentError(InvalidArgumentError):
    """A value given to the key manager is invalid; ``field`` names the request field."""

    def __init__(self, message: str, *, field: str, reason: str) -> None:
        super().__init__(message, field=field, reason=reason, metadata={"field": field})


class KeyNotFoundError(DomainError):
    """No API key has this id."""

    kind = ErrorKind.NOT_FOUND
    default_reason = "KEY_NOT_FOUND"
    default_hint = "List the keys with ListApiKeys; names are apiKeys/{key_id}."

    def __init__(self, key_id: str | None) -> None:
        """``key_id``: None when the requested id is not even shaped like one (it is not
        echoed: it may be a whole secret pasted in the wrong place)."""
        if key_id is None:
            super().__init__("no API key has this id (key ids are 16 lowercase characters)")
        else:
            super().__init__(f"API key {key_id} was not found", metadata={"key_id": key_id})


class _KeyStateError(DomainError):
    kind = ErrorKind.FAILED_PRECONDITION
    state: ClassVar[str] = ""

    def __init__(self, key_id: str, action: str) -> None:
        super().__init__(
            f"API key {key_id} is {self.state}: it cannot be {action}",
            metadata={"key_id": key_id},
        )


class KeyRevokedError(_KeyStateError):
    """The operation needs a key that is not revoked."""

    default_reason = "KEY_REVOKED"
    default_hint = "Revoked keys are final; create a new key."
    state = "revoked"


class KeyExpiredError(_KeyStateError):
    """The operation needs a key that has not expired."""

    default_reason = "KEY_EXPIRED"
    default_hint = "Set a later expire_time with UpdateApiKey first, or create a new key."
    state = "expired"


class ConcurrentModificationError(DomainError):
    """Another change to the same key won the race; nothing was written."""

    kind = ErrorKind.ABORTED
    default_reason = "CONCURRENT_MODIFICATION"
    default_hint = "Read the key again and retry."

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"API key {key_id} was changed concurrently; retry", metadata={"key_id": key_id}
        )


class KeyStoreUnavailableError(DomainError):
    """The key database cannot be reached or failed; retrying later may help."""

    kind = ErrorKind.UNAVAILABLE
    default_reason = "KEY_STORE_UNAVAILABLE"
    default_hint = "Retry shortly."

    def __init__(self, operation: str, *, retry_after: float = 1.0) -> None:
        super().__init__(f"the API key store failed during {operation}")
        # Read by service.api when it builds google.rpc.RetryInfo: when the database
        # is probed next during an outage.
        self.retry_after = retry_after
