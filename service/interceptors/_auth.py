"""Authentication: every call to our services carries an API key.

The key comes from `authorization: Bearer <key>` or `x-api-key`. Health and
reflection stay open. The verified principal travels to the servicer in a
ContextVar, set inside the handler's own task and reset when it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, Protocol

import grpc

from service.api import PermissionDeniedError, abort_with, current_principal, status_for
from service.core.errors import DomainError
from service.keys import (
    API_KEY_AMBIGUOUS,
    API_KEY_MISSING,
    AuthenticationError,
    KeyManager,
    Principal,
)
from service.telemetry import note_auth_failure, note_principal

from ._chain import Stage
from ._wrap import Context, wrap_handler

METHOD_NOT_ALLOWED = "API_KEY_METHOD_NOT_ALLOWED"


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The API key in the call's metadata, or None when there is none.

    Raises:
        AuthenticationError: ``API_KEY_AMBIGUOUS`` when the call carries more than one
            ``authorization`` header, or an ``x-api-key`` that differs from it: which
            one was meant cannot be told, and acting on either could act on the wrong
            key's authority.
    """
    authorization: list[str] = []
    api_keys: list[str] = []
    for key, value in metadata or ():
        if isinstance(value, bytes):
            continue
        if key == "authorization":
            scheme, _, credentials = value.strip().partition(" ")
            # Not a bearer token: kept as it is, and reported as malformed.
            authorization.append(credentials.strip() if scheme.lower() == "bearer" else value)
        elif key == "x-api-key":
            api_keys.append(value.strip())
    if (
        len(authorization) > 1
        or len(set(api_keys)) > 1
        or (authorization and api_keys and set(api_keys) != set(authorization))
    ):
        raise AuthenticationError(
            "the call carries more than one API key (several `authorization` headers, or "
            "`authorization` and `x-api-key` naming different keys): send exactly one",
            reason=API_KEY_AMBIGUOUS,
        )
    found = authorization or api_keys
    return found[0] if found else None


class AuthInterceptor(Stage):
    """Authenticates calls to the services in `required_scopes` (service -> scope).

    A scope of None means any valid key (the servicer decides more, e.g. a key may
    read and rotate itself); a tuple of scopes, a key with any one of them. Services
    not listed (health, reflection) are open.
    """

    def __init__(
        self,
        keys: KeyManager,
        required_scopes: Mapping[str, str | tuple[str, ...] | None],
        *,
        failures: FailedAuthLimit | None = None,
        policy_service: str = "",
    ) -> None:
        """`failures`, when given, limits failed authentications per peer;
        `policy_service` is the service whose methods a key's `allowed_methods` names
        (a key limited to some of them still reads and rotates itself, say)."""
        self._keys = keys
        self._required = dict(required_scopes)
        self._failures = failures
        self._policy_service = policy_service

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if service not in self._required:
            return handler
        required = self._required[service]
        scopes = (required,) if isinstance(required, str) else required
        keys = self._keys
        failures = self._failures
        limited = service == self._policy_service

        async def authenticate(token: str | None) -> Principal:
            if not token:
                raise AuthenticationError(
                    "this call needs an API key: `authorization: Bearer ask_...` or `x-api-key`",
                    reason=API_KEY_MISSING,
                )
            principal = await keys.authenticate(token)
            note_principal(principal.key_id)
            if scopes is not None and not any(principal.has_scope(s) for s in scopes):
                wanted = " or ".join(f"`{s}`" for s in scopes)
                raise PermissionDeniedError(
                    f"API key {principal.key_id} lacks the {wanted} scope",
                    metadata={"key_id": principal.key_id, "required_scope": "|".join(scopes)},
                )
            allowed = principal.policy.allowed_methods
            if limited and allowed and method not in allowed:
                raise PermissionDeniedError(
                    f"API key {principal.key_id} may not call {method}",
                    reason=METHOD_NOT_ALLOWED,
                    metadata={
                        "key_id": principal.key_id,
                        "method": method,
                        "policy": "allowed_methods",
                    },
                )
            keys.record_use(principal.key_id)
            return principal

        async def authenticated(request: Any, context: Context) -> Callable[[], None]:
            try:
                credential = bearer_token(context.invocation_metadata())
                if failures is not None:
                    # A peer over its failed-authentication budget is still heard with a
                    # key id known to exist: a valid key behind the same address as an
                    # attacker (one ingress, one NAT) keeps working.
                    await failures.admit(
                        context,
                        known_key=lambda: credential is not None and keys.may_be_valid(credential),
                    )
                principal = await authenticate(credential)
            except AuthenticationError as exc:
                note_auth_failure(exc.reason)
                if failures is not None:
                    await failures.failed(context, exc)
                await abort_with(context, status_for(exc))
            except DomainError as exc:
                if isinstance(exc, PermissionDeniedError):
                    note_auth_failure(exc.reason)
                await abort_with(context, status_for(exc))
            # Set in the handler's own task, reset when the servicer is done.
            token = current_principal.set(principal)
            return lambda: current_principal.reset(token)

        return wrap_handler(handler, authenticated)


class FailedAuthLimit(Protocol):
    """A per-peer budget of failed authentications (``RateLimitInterceptor``'s twin)."""

    async def admit(
        self, context: grpc.aio.ServicerContext[Any, Any], *, known_key: Callable[[], bool]
    ) -> None:
        """Abort the call, before its key is checked, while its peer is over the budget,
        unless it presents a key id known to exist (``known_key()``, asked only then)."""

    async def failed(
        self, context: grpc.aio.ServicerContext[Any, Any], error: AuthenticationError
    ) -> NoReturn:
        """Charge the failure to the call's peer and abort the call."""
        ...
