"""Who is calling: set by the auth interceptor, read by the servicers."""

from __future__ import annotations

from contextvars import ContextVar

from service.core.errors import DomainError, ErrorKind
from service.core.policy import UNRESTRICTED, CallerPolicy
from service.keys import Principal

from ._key_converters import caller_policy

current_principal: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current_caller_policy() -> CallerPolicy:
    """The limits of the calling key (none without a principal, e.g. in-process calls)."""
    principal = current_principal.get()
    return UNRESTRICTED if principal is None else caller_policy(principal.policy)


class PermissionDeniedError(DomainError):
    """A valid key without the right to make this call."""

    kind = ErrorKind.PERMISSION_DENIED
    default_reason = "API_KEY_SCOPE_MISSING"
    default_hint = "Use a key with the needed scope, or ask an admin to grant it."


def required_principal() -> Principal:
    """The caller of a service the auth interceptor guards (always set there)."""
    principal = current_principal.get()
    if principal is None:
        raise PermissionDeniedError("no authenticated caller")
    return principal
