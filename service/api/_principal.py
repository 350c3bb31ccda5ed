"""Who is calling: set by the auth interceptor, read by the servicers."""

from __future__ import annotations

from contextvars import ContextVar

from service.core.errors import DomainError, ErrorKind
from service.keys import Principal

current_principal: ContextVar[Principal | None] = ContextVar("principal", default=None)


class PermissionDeniedError(DomainError):
    """A valid key without the right to make this call."""

    kind = ErrorKind.PERMISSION_DENIED
    default_reason = "API_KEY_SCOPE_MISSING"
    default_hint = "Use a key with the needed scope, or ask an admin to grant it."
