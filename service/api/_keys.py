"""KeyService: API keys for operators (admin scope); a key may read and rotate itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from agentstaking.v1 import keys_pb2, keys_pb2_grpc

from service.core.errors import FieldErrors
from service.keys import UNSET, KeyManager, KeyPolicy, Scope, Unset

from ._errors import handle_errors
from ._key_converters import (
    api_key_to_proto,
    duration_to_timedelta,
    fields_within,
    key_id_from_name,
    policy_to_domain,
    selected_policy,
    state_to_domain,
    timestamp_to_datetime,
    update_paths,
)
from ._principal import PermissionDeniedError, required_principal

Context = grpc.aio.ServicerContext[Any, Any]


def _require_admin(*, unless_self: str | None = None) -> None:
    caller = required_principal()
    if caller.has_scope(Scope.ADMIN) or (unless_self is not None and unless_self == caller.key_id):
        return
    raise PermissionDeniedError(
        f"API key {caller.key_id} lacks the `admin` scope"
        + (" (a key may only read and rotate itself)" if unless_self is not None else ""),
        metadata={"key_id": caller.key_id, "required_scope": Scope.ADMIN.value},
    )


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    """Each call converts every request field before it reports any: one INVALID_ARGUMENT
    names them all (a conversion that fails is passed on to the manager as ``invalid``,
    which adds the violations of its own checks and raises before reading a key)."""

    def __init__(self, keys: KeyManager) -> None:
        self._keys = keys

    @handle_errors
    async def CreateApiKey(
        self, request: keys_pb2.CreateApiKeyRequest, context: Context
    ) -> keys_pb2.CreateApiKeyResponse:
        _require_admin()
        failures = FieldErrors()
        policy = failures.check(lambda: policy_to_domain(request.policy), KeyPolicy())
        expire_time = failures.check(
            lambda: (
                timestamp_to_datetime(request.expire_time, field="expire_time")
                if request.HasField("expire_time")
                else None
            )
        )
        key, secret = await self._keys.create(
            display_name=request.display_name,
            scopes=list(request.scopes),
            policy=policy,
            expire_time=expire_time,
            invalid=failures.found,
        )
        return keys_pb2.CreateApiKeyResponse(api_key=api_key_to_proto(key), secret=secret)

    @handle_errors
    async def GetApiKey(
        self, request: keys_pb2.GetApiKeyRequest, context: Context
    ) -> keys_pb2.GetApiKeyResponse:
        key_id = key_id_from_name(request.name)
        _require_admin(unless_self=key_id)
        return keys_pb2.GetApiKeyResponse(api_key=api_key_to_proto(await self._keys.get(key_id)))

    @handle_errors
    async def ListApiKeys(
        self, request: keys_pb2.ListApiKeysRequest, context: Context
    ) -> keys_pb2.ListApiKeysResponse:
        _require_admin()
        failures = FieldErrors()
        state = failures.check(lambda: state_to_domain(request.state))
        keys, next_token, total = await self._keys.list(
            page_size=request.page_size,
            # A page token is bound to its state filter: with an unknown state there is
            # nothing to compare it with.
            page_token="" if failures.found else request.page_token,
            state=state,
            invalid=failures.found,
        )
        return keys_pb2.ListApiKeysResponse(
            api_keys=[api_key_to_proto(k) for k in keys],
            next_page_token=next_token,
            total_size=total,
        )

    @handle_errors
    async def RotateApiKey(
        self, request: keys_pb2.RotateApiKeyRequest, context: Context
    ) -> keys_pb2.RotateApiKeyResponse:
        failures = FieldErrors()
        key_id = failures.check(lambda: key_id_from_name(request.name), "")
        grace_period = failures.check(
            lambda: (
                duration_to_timedelta(request.grace_period, field="grace_period")
                if request.HasField("grace_period")
                else None
            )
        )
        if key_id:
            # Without a usable name the call is refused as INVALID_ARGUMENT, before
            # anything is read.
            _require_admin(unless_self=key_id)
        key, secret = await self._keys.rotate(
            key_id, grace_period=grace_period, invalid=failures.found
        )
        return keys_pb2.RotateApiKeyResponse(api_key=api_key_to_proto(key), secret=secret)

    @handle_errors
    async def RevokeApiKey(
        self, request: keys_pb2.RevokeApiKeyRequest, context: Context
    ) -> keys_pb2.RevokeApiKeyResponse:
        _require_admin()
        key = await self._keys.revoke(key_id_from_name(request.name))
        return keys_pb2.RevokeApiKeyResponse(api_key=api_key_to_proto(key))

    @handle_errors
    async def UpdateApiKey(
        self, request: keys_pb2.UpdateApiKeyRequest, context: Context
    ) -> keys_pb2.UpdateApiKeyResponse:
        _require_admin()
        key_id = key_id_from_name(request.api_key.name, field="api_key.name")
        top, policy_fields = update_paths(request)
        source = request.api_key
        failures = FieldErrors()
        # Fields below are named relative to the ApiKey; the violations, relative to
        # the request (`api_key.display_name`).
        with fields_within("api_key"):
            policy: KeyPolicy | Unset = UNSET
            if "policy" in top or policy_fields:
                chosen = (
                    source.policy
                    if "policy" in top
                    else selected_policy(source.policy, policy_fields)
                )
                policy = failures.check(lambda: policy_to_domain(chosen), UNSET)
            expire_time: datetime | Unset | None = UNSET
            if "expire_time" in top:
                expire_time = failures.check(
                    lambda: (
                        timestamp_to_datetime(source.expire_time, field="expire_time")
                        if source.HasField("expire_time")
                        else None
                    ),
                    UNSET,
                )
            key = await self._keys.update(
                key_id,
                display_name=source.display_name if "display_name" in top else UNSET,
                scopes=list(source.scopes) if "scopes" in top else UNSET,
                policy=policy,
                policy_fields=None if "policy" in top else policy_fields,
                expire_time=expire_time,
                invalid=failures.found,
            )
        return keys_pb2.UpdateApiKeyResponse(api_key=api_key_to_proto(key))
