"""A Solana JSON-RPC endpoint backed by LiteSVM: the embedded chain and the test chain."""

from ._chain import LocalnetChain, LocalnetConfig
from ._server import LocalnetServer
from ._stake_pools import (
    LocalnetStakePool,
    give_pool_tokens,
    install_stake_pool,
    update_stake_pool,
)

__all__ = [
    "LocalnetChain",
    "LocalnetConfig",
    "LocalnetServer",
    "LocalnetStakePool",
    "give_pool_tokens",
    "install_stake_pool",
    "update_stake_pool",
]
