"""The rewards RPCs of StakingService: convert, delegate, convert back."""

from __future__ import annotations

import grpc
from agentstaking.v1 import rewards_pb2 as pb

from service.chain import RewardOperations
from service.core.errors import DomainError, ErrorKind

from ._errors import handle_errors
from ._principal import current_caller_policy
from ._rewards_converters import (
    estimate_request_to_domain,
    estimate_response_to_proto,
    rewards_request_to_domain,
    rewards_response_to_proto,
)

Context = grpc.aio.ServicerContext


class RewardsDisabledError(DomainError):
    """The server was assembled without reward reads."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "REWARDS_DISABLED"
    default_hint = "Read getInflationReward from a Solana RPC node yourself."


class RewardsServicer:
    """GetRewards and EstimateRewards (mixed into the StakingService servicer)."""

    _rewards: RewardOperations | None = None

    def _rewards_or_fail(self) -> RewardOperations:
        if self._rewards is None:
            raise RewardsDisabledError("this server does not report rewards")
        return self._rewards

    @handle_errors
    async def GetRewards(
        self,
        request: pb.GetRewardsRequest,
        context: Context[pb.GetRewardsRequest, pb.GetRewardsResponse],
    ) -> pb.GetRewardsResponse:
        page = await self._rewards_or_fail().get_rewards(
            rewards_request_to_domain(request), current_caller_policy()
        )
        return rewards_response_to_proto(page)

    @handle_errors
    async def EstimateRewards(
        self,
        request: pb.EstimateRewardsRequest,
        context: Context[pb.EstimateRewardsRequest, pb.EstimateRewardsResponse],
    ) -> pb.EstimateRewardsResponse:
        estimate = self._rewards_or_fail().estimate(
            estimate_request_to_domain(request), current_caller_policy()
        )
        return estimate_response_to_proto(estimate)
