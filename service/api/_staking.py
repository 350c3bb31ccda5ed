"""StakingService: convert, delegate to the chain shell, convert back."""

from __future__ import annotations

import time

import grpc
from agentstaking.v1 import staking_pb2, staking_pb2_grpc

from service.chain import StakingOperations

from ._converters import (
    epoch_end_unix,
    network_info_to_proto,
    stake_request_to_domain,
    stake_response_to_proto,
)
from ._errors import handle_errors

Context = grpc.aio.ServicerContext


class StakingServicer(staking_pb2_grpc.StakingServiceServicer):
    """The RPCs implemented so far; the rest answer UNIMPLEMENTED (generated base)."""

    def __init__(self, operations: StakingOperations) -> None:
        self._operations = operations

    @handle_errors
    async def BuildStakeTransaction(
        self,
        request: staking_pb2.BuildStakeTransactionRequest,
        context: Context[
            staking_pb2.BuildStakeTransactionRequest, staking_pb2.BuildStakeTransactionResponse
        ],
    ) -> staking_pb2.BuildStakeTransactionResponse:
        built = await self._operations.build_stake(stake_request_to_domain(request))
        info = self._operations.network_info()
        return stake_response_to_proto(
            built,
            epoch_end_unix=epoch_end_unix(
                info, now_unix=time.time(), now_monotonic=time.monotonic()
            ),
        )

    @handle_errors
    async def GetNetworkInfo(
        self,
        request: staking_pb2.GetNetworkInfoRequest,
        context: Context[staking_pb2.GetNetworkInfoRequest, staking_pb2.GetNetworkInfoResponse],
    ) -> staking_pb2.GetNetworkInfoResponse:
        return network_info_to_proto(
            self._operations.network_info(), now_unix=time.time(), now_monotonic=time.monotonic()
        )
