"""The liquid staking RPCs of StakingService: convert, delegate, convert back."""

from __future__ import annotations

import grpc
from agentstaking.v1 import liquid_staking_pb2 as pb

from service.chain import LiquidStakingOperations
from service.core.errors import DomainError, ErrorKind

from ._errors import handle_errors
from ._intents import BuildGate, build_rpc
from ._liquid_converters import (
    liquid_stake_request_to_domain,
    liquid_stake_response_to_proto,
    liquid_unstake_request_to_domain,
    liquid_unstake_response_to_proto,
    stake_pool_to_proto,
    stake_pools_to_proto,
)
from ._principal import current_caller_policy

Context = grpc.aio.ServicerContext


class LiquidStakingDisabledError(DomainError):
    """The server was assembled without stake pools."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "LIQUID_STAKING_DISABLED"
    default_hint = "This server offers no stake pool."


class LiquidStakingServicer:
    """ListStakePools, GetStakePool, BuildLiquidStakeTransaction,
    BuildLiquidUnstakeTransaction (mixed into the StakingService servicer)."""

    _liquid: LiquidStakingOperations | None = None
    build_gate: BuildGate

    def _pools(self) -> LiquidStakingOperations:
        if self._liquid is None:
            raise LiquidStakingDisabledError("this server offers no stake pool")
        return self._liquid

    @handle_errors
    async def ListStakePools(
        self,
        request: pb.ListStakePoolsRequest,
        context: Context[pb.ListStakePoolsRequest, pb.ListStakePoolsResponse],
    ) -> pb.ListStakePoolsResponse:
        page = await self._pools().list_stake_pools(
            page_size_value=request.page_size, page_token=request.page_token
        )
        return stake_pools_to_proto(page)

    @handle_errors
    async def GetStakePool(
        self,
        request: pb.GetStakePoolRequest,
        context: Context[pb.GetStakePoolRequest, pb.GetStakePoolResponse],
    ) -> pb.GetStakePoolResponse:
        info = await self._pools().get_stake_pool(request.stake_pool)
        return pb.GetStakePoolResponse(stake_pool=stake_pool_to_proto(info, validators=True))

    @handle_errors
    @build_rpc
    async def BuildLiquidStakeTransaction(
        self,
        request: pb.BuildLiquidStakeTransactionRequest,
        context: Context[
            pb.BuildLiquidStakeTransactionRequest, pb.BuildLiquidStakeTransactionResponse
        ],
    ) -> pb.BuildLiquidStakeTransactionResponse:
        built = await self._pools().build_liquid_stake(
            liquid_stake_request_to_domain(request), current_caller_policy()
        )
        return liquid_stake_response_to_proto(built)

    @handle_errors
    @build_rpc
    async def BuildLiquidUnstakeTransaction(
        self,
        request: pb.BuildLiquidUnstakeTransactionRequest,
        context: Context[
            pb.BuildLiquidUnstakeTransactionRequest, pb.BuildLiquidUnstakeTransactionResponse
        ],
    ) -> pb.BuildLiquidUnstakeTransactionResponse:
        built = await self._pools().build_liquid_unstake(
            liquid_unstake_request_to_domain(request), current_caller_policy()
        )
        return liquid_unstake_response_to_proto(built)
