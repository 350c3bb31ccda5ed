"""KeyService: API keys for operators (admin scope); a key may read and rotate itself."""

from __future__ import annotations

from typing import Any

import grpc
from agentstaking.v1 import keys_pb2, keys_pb2_grpc

from service.keys import UNSET, KeyManager, Scope

from ._errors import handle_errors
from ._key_converters import (
    api_key_to_proto,
    duration_to_timedelta,
    key_id_from_name,
    merge_policy,
    policy_to_domain,
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
    def __init__(self, keys: KeyManager) -> None:
        self._keys = keys

    @handle_errors
    async def CreateApiKey(
        self, request: keys_pb2.CreateApiKeyRequest, context: Context
    ) -> keys_pb2.CreateApiKeyResponse:
        _require_admin()
        key, secret = await self._keys.create(
            display_name=request.display_name,
            scopes=list(request.scopes),
            policy=policy_to_domain(request.policy),
            expire_time=(
                timestamp_to_datetime(request.expire_time, field="expire_time")
                if request.HasField("expire_time")
                else None
            ),
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
        keys, next_token, total = await self._keys.list(
            page_size=request.page_size,
            page_token=request.page_token,
            state=state_to_domain(request.state),
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
        key_id = key_id_from_name(request.name)
        _require_admin(unless_self=key_id)
        key, secret = await self._keys.rotate(
            key_id,
            grace_period=(
                duration_to_timedelta(request.grace_period, field="grace_period")
                if request.HasField("grace_period")
                else None
            ),
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
        policy: Any = UNSET
        if "policy" in top:
            policy = policy_to_domain(source.policy)
        elif policy_fields:
            policy = merge_policy(
                (await self._keys.get(key_id)).policy, source.policy, policy_fields
            )
        expire_time: Any = UNSET
        if "expire_time" in top:
            expire_time = (
                timestamp_to_datetime(source.expire_time, field="api_key.expire_time")
                if source.HasField("expire_time")
                else None
            )
        key = await self._keys.update(
            key_id,
            display_name=source.display_name if "display_name" in top else UNSET,
            scopes=list(source.scopes) if "scopes" in top else UNSET,
            policy=policy,
            expire_time=expire_time,
        )
        return keys_pb2.UpdateApiKeyResponse(api_key=api_key_to_proto(key))
