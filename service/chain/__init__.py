"""Solana I/O: the RPC client, the cached chain context, simulation."""

from ._context import ChainContext, ChainSnapshot, VoteAccountInfo
from ._operations import (
    BalanceChange,
    BuildOptions,
    BuiltStake,
    EpochRewardsActiveError,
    FeePolicy,
    NetworkInfo,
    Simulation,
    SimulationFailedError,
    StakeParams,
    StakingOperations,
)
from ._rpc import ChainUnavailable, HttpSolanaRpc, RpcError, SolanaRpc

__all__ = [
    "BalanceChange",
    "BuildOptions",
    "BuiltStake",
    "ChainContext",
    "ChainSnapshot",
    "ChainUnavailable",
    "EpochRewardsActiveError",
    "FeePolicy",
    "HttpSolanaRpc",
    "NetworkInfo",
    "RpcError",
    "Simulation",
    "SimulationFailedError",
    "SolanaRpc",
    "StakeParams",
    "StakingOperations",
    "VoteAccountInfo",
]
