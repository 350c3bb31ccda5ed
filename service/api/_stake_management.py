"""The stake management RPCs of StakingService (split, move, authorize, set lockup,
redelegate): convert, delegate to the chain shell, convert back."""

from __future__ import annotations

import time

import grpc
from agentstaking.v1 import stake_management_pb2 as pb

from service.chain import StakeManagement

from ._errors import handle_errors
from ._intents import BuildGate, build_rpc
from ._management_converters import (
    authorize_request_to_domain,
    authorize_response_to_proto,
    move_request_to_domain,
    move_response_to_proto,
    redelegate_request_to_domain,
    redelegate_response_to_proto,
    set_lockup_request_to_domain,
    set_lockup_response_to_proto,
    split_request_to_domain,
    split_response_to_proto,
)
from ._principal import current_caller_policy

Context = grpc.aio.ServicerContext


class StakeManagementServicer:
    """BuildSplitTransaction, BuildMoveStakeTransaction, BuildAuthorizeTransaction,
    BuildSetLockupTransaction, BuildRedelegateTransaction (mixed into the
    StakingService servicer)."""

    _management: StakeManagement | None = None
    build_gate: BuildGate

    def _builds(self) -> StakeManagement:
        if self._management is None:  # the server always assembles it
            raise RuntimeError("the StakingService servicer was built without stake management")
        return self._management

    @handle_errors
    @build_rpc
    async def BuildSplitTransaction(
        self,
        request: pb.BuildSplitTransactionRequest,
        context: Context[
            pb.BuildSplitTransactionRequest,
            pb.BuildSplitTransactionResponse,
        ],
    ) -> pb.BuildSplitTransactionResponse:
        built = await self._builds().build_split(
            split_request_to_domain(request), current_caller_policy()
        )
        return split_response_to_proto(built)

    @handle_errors
    @build_rpc
    async def BuildMoveStakeTransaction(
        self,
        request: pb.BuildMoveStakeTransactionRequest,
        context: Context[
            pb.BuildMoveStakeTransactionRequest,
            pb.BuildMoveStakeTransactionResponse,
        ],
    ) -> pb.BuildMoveStakeTransactionResponse:
        built = await self._builds().build_move(
            move_request_to_domain(request), current_caller_policy()
        )
        return move_response_to_proto(built)

    @handle_errors
    @build_rpc
    async def BuildAuthorizeTransaction(
        self,
        request: pb.BuildAuthorizeTransactionRequest,
        context: Context[
            pb.BuildAuthorizeTransactionRequest,
            pb.BuildAuthorizeTransactionResponse,
        ],
    ) -> pb.BuildAuthorizeTransactionResponse:
        built = await self._builds().build_authorize(
            authorize_request_to_domain(request), current_caller_policy()
        )
        return authorize_response_to_proto(built)

    @handle_errors
    @build_rpc
    async def BuildSetLockupTransaction(
        self,
        request: pb.BuildSetLockupTransactionRequest,
        context: Context[
            pb.BuildSetLockupTransactionRequest,
            pb.BuildSetLockupTransactionResponse,
        ],
    ) -> pb.BuildSetLockupTransactionResponse:
        built = await self._builds().build_set_lockup(
            set_lockup_request_to_domain(request), current_caller_policy()
        )
        return set_lockup_response_to_proto(built)

    @handle_errors
    @build_rpc
    async def BuildRedelegateTransaction(
        self,
        request: pb.BuildRedelegateTransactionRequest,
        context: Context[
            pb.BuildRedelegateTransactionRequest,
            pb.BuildRedelegateTransactionResponse,
        ],
    ) -> pb.BuildRedelegateTransactionResponse:
        built = await self._builds().build_redelegate(
            redelegate_request_to_domain(request), current_caller_policy()
        )
        return redelegate_response_to_proto(
            built, now_unix=time.time(), now_monotonic=time.monotonic()
        )
