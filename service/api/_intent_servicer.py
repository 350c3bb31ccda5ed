"""The intent RPCs of StakingService (GetIntent, BuildNonceAccountTransaction):
convert, delegate, convert back."""

from __future__ import annotations

import grpc
from agentstaking.v1 import intents_pb2 as pb

from service.chain import NonceAccounts

from ._errors import handle_errors
from ._intent_converters import (
    intent_key,
    intent_to_proto,
    nonce_request_to_domain,
    nonce_response_to_proto,
)
from ._intents import BuildGate, build_rpc, caller_scope
from ._principal import current_caller_policy

Context = grpc.aio.ServicerContext


class IntentServicer:
    """GetIntent and BuildNonceAccountTransaction (mixed into the StakingService
    servicer)."""

    build_gate: BuildGate
    _nonces: NonceAccounts | None = None

    def _accounts(self) -> NonceAccounts:
        if self._nonces is None:  # the server always assembles it
            raise RuntimeError("the StakingService servicer was built without nonce accounts")
        return self._nonces

    @handle_errors
    async def GetIntent(
        self,
        request: pb.GetIntentRequest,
        context: Context[pb.GetIntentRequest, pb.GetIntentResponse],
    ) -> pb.GetIntentResponse:
        intent = await self.build_gate.book.get(
            intent_key(request.request_id, scope=caller_scope())
        )
        return pb.GetIntentResponse(intent=intent_to_proto(intent))

    @handle_errors
    @build_rpc
    async def BuildNonceAccountTransaction(
        self,
        request: pb.BuildNonceAccountTransactionRequest,
        context: Context[
            pb.BuildNonceAccountTransactionRequest, pb.BuildNonceAccountTransactionResponse
        ],
    ) -> pb.BuildNonceAccountTransactionResponse:
        built = await self._accounts().build(
            nonce_request_to_domain(request), current_caller_policy()
        )
        return nonce_response_to_proto(built)
