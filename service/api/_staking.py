"""StakingService: convert, delegate to the chain shell, convert back."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import grpc
from agentstaking.v1 import staking_pb2, staking_pb2_grpc

from service.chain import (
    LiquidStakingOperations,
    NonceAccounts,
    Relay,
    RewardOperations,
    StakeManagement,
    StakingOperations,
)
from service.core.errors import DomainError, ErrorKind
from service.core.txstatus import Commitment

from ._converters import (
    commitment_to_domain,
    epoch_end_unix,
    merge_request_to_domain,
    merge_response_to_proto,
    network_info_to_proto,
    stake_accounts_to_proto,
    stake_request_to_domain,
    stake_response_to_proto,
    submit_response_to_proto,
    transaction_status_to_proto,
    unstake_request_to_domain,
    unstake_response_to_proto,
    validators_to_proto,
    withdraw_request_to_domain,
    withdraw_response_to_proto,
)
from ._errors import handle_errors, handle_stream_errors
from ._intent_servicer import IntentServicer
from ._intents import BuildGate, build_rpc
from ._liquid import LiquidStakingServicer
from ._principal import current_caller_policy as _caller_policy
from ._rewards import RewardsServicer
from ._stake_management import StakeManagementServicer

Context = grpc.aio.ServicerContext


class RelayDisabledError(DomainError):
    """The server was assembled without a relay."""

    kind = ErrorKind.FAILED_PRECONDITION
    default_reason = "RELAY_DISABLED"
    default_hint = "Send the signed transaction to a Solana RPC node yourself."


class StakingServicer(
    IntentServicer,
    LiquidStakingServicer,
    RewardsServicer,
    StakeManagementServicer,
    staking_pb2_grpc.StakingServiceServicer,
):
    """Every StakingService RPC: convert, make one call into chain/, convert back.
    Every Build* RPC goes through the gate (receipts, intents)."""

    def __init__(
        self,
        operations: StakingOperations,
        relay: Relay | None = None,
        liquid: LiquidStakingOperations | None = None,
        management: StakeManagement | None = None,
        rewards: RewardOperations | None = None,
        *,
        gate: BuildGate,
        nonces: NonceAccounts | None = None,
    ) -> None:
        self._operations = operations
        self._relay = relay
        self._liquid = liquid
        self._management = management
        self._rewards = rewards
        self.build_gate = gate
        self._nonces = nonces

    def _relay_or_fail(self) -> Relay:
        if self._relay is None:
            raise RelayDisabledError("this server does not relay transactions")
        return self._relay

    @handle_errors
    @build_rpc
    async def BuildStakeTransaction(
        self,
        request: staking_pb2.BuildStakeTransactionRequest,
        context: Context[
            staking_pb2.BuildStakeTransactionRequest, staking_pb2.BuildStakeTransactionResponse
        ],
    ) -> staking_pb2.BuildStakeTransactionResponse:
        policy = _caller_policy()
        built = await self._operations.build_stake(stake_request_to_domain(request), policy)
        info = self._operations.network_info(policy)
        return stake_response_to_proto(
            built,
            epoch_end_unix=epoch_end_unix(
                info, now_unix=time.time(), now_monotonic=time.monotonic()
            ),
        )

    @handle_errors
    @build_rpc
    async def BuildUnstakeTransaction(
        self,
        request: staking_pb2.BuildUnstakeTransactionRequest,
        context: Context[
            staking_pb2.BuildUnstakeTransactionRequest,
            staking_pb2.BuildUnstakeTransactionResponse,
        ],
    ) -> staking_pb2.BuildUnstakeTransactionResponse:
        built = await self._operations.build_unstake(
            unstake_request_to_domain(request), _caller_policy()
        )
        return unstake_response_to_proto(
            built, now_unix=time.time(), now_monotonic=time.monotonic()
        )

    @handle_errors
    @build_rpc
    async def BuildWithdrawTransaction(
        self,
        request: staking_pb2.BuildWithdrawTransactionRequest,
        context: Context[
            staking_pb2.BuildWithdrawTransactionRequest,
            staking_pb2.BuildWithdrawTransactionResponse,
        ],
    ) -> staking_pb2.BuildWithdrawTransactionResponse:
        built = await self._operations.build_withdraw(
            withdraw_request_to_domain(request), _caller_policy()
        )
        return withdraw_response_to_proto(built)

    @handle_errors
    @build_rpc
    async def BuildMergeTransaction(
        self,
        request: staking_pb2.BuildMergeTransactionRequest,
        context: Context[
            staking_pb2.BuildMergeTransactionRequest, staking_pb2.BuildMergeTransactionResponse
        ],
    ) -> staking_pb2.BuildMergeTransactionResponse:
        built = await self._operations.build_merge(
            merge_request_to_domain(request), _caller_policy()
        )
        return merge_response_to_proto(built)

    @handle_errors
    async def ListStakeAccounts(
        self,
        request: staking_pb2.ListStakeAccountsRequest,
        context: Context[
            staking_pb2.ListStakeAccountsRequest, staking_pb2.ListStakeAccountsResponse
        ],
    ) -> staking_pb2.ListStakeAccountsResponse:
        positions = await self._operations.list_stake_accounts(
            wallet=request.wallet,
            page_size_value=request.page_size,
            page_token=request.page_token,
            policy=_caller_policy(),
        )
        return stake_accounts_to_proto(
            positions, now_unix=time.time(), now_monotonic=time.monotonic()
        )

    @handle_errors
    async def ListValidators(
        self,
        request: staking_pb2.ListValidatorsRequest,
        context: Context[staking_pb2.ListValidatorsRequest, staking_pb2.ListValidatorsResponse],
    ) -> staking_pb2.ListValidatorsResponse:
        page = self._operations.list_validators(
            page_size_value=request.page_size,
            page_token=request.page_token,
            max_commission_percent=(
                request.max_commission_percent
                if request.HasField("max_commission_percent")
                else None
            ),
            include_delinquent=request.include_delinquent,
            min_estimated_apy=(
                request.min_estimated_apy if request.HasField("min_estimated_apy") else None
            ),
        )
        return validators_to_proto(page)

    @handle_errors
    async def GetNetworkInfo(
        self,
        request: staking_pb2.GetNetworkInfoRequest,
        context: Context[staking_pb2.GetNetworkInfoRequest, staking_pb2.GetNetworkInfoResponse],
    ) -> staking_pb2.GetNetworkInfoResponse:
        return network_info_to_proto(
            self._operations.network_info(_caller_policy()),
            now_unix=time.time(),
            now_monotonic=time.monotonic(),
            receipt_keys=self.build_gate.receipt_keys(),
        )

    @handle_errors
    async def SubmitTransaction(
        self,
        request: staking_pb2.SubmitTransactionRequest,
        context: Context[
            staking_pb2.SubmitTransactionRequest, staking_pb2.SubmitTransactionResponse
        ],
    ) -> staking_pb2.SubmitTransactionResponse:
        outcome = await self._relay_or_fail().submit(
            request.transaction,
            allowed_fee_payers=_caller_policy().allowed_wallets,
            commitment=commitment_to_domain(request.commitment),
            skip_preflight=request.skip_preflight,
            timeout=context.time_remaining(),
        )
        return submit_response_to_proto(outcome)

    @handle_errors
    async def GetTransactionStatus(
        self,
        request: staking_pb2.GetTransactionStatusRequest,
        context: Context[
            staking_pb2.GetTransactionStatusRequest, staking_pb2.GetTransactionStatusResponse
        ],
    ) -> staking_pb2.GetTransactionStatusResponse:
        status = await self._relay_or_fail().status(
            request.signature, timeout=context.time_remaining()
        )
        return staking_pb2.GetTransactionStatusResponse(status=transaction_status_to_proto(status))

    @handle_stream_errors
    async def WatchTransaction(
        self,
        request: staking_pb2.WatchTransactionRequest,
        context: Context[staking_pb2.WatchTransactionRequest, staking_pb2.WatchTransactionResponse],
    ) -> AsyncIterator[staking_pb2.WatchTransactionResponse]:
        commitment = commitment_to_domain(request.commitment) or Commitment.FINALIZED
        watch = self._relay_or_fail().watch(
            request.signature, commitment, timeout=context.time_remaining()
        )
        # Closed explicitly so the subscription ends with the call, however it ends.
        async with contextlib.aclosing(watch) as statuses:
            async for status in statuses:
                yield staking_pb2.WatchTransactionResponse(
                    status=transaction_status_to_proto(status)
                )
