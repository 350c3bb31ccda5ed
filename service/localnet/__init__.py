"""A Solana JSON-RPC endpoint backed by LiteSVM: the embedded chain and the test chain."""

from ._chain import LocalnetChain, LocalnetConfig
from ._server import LocalnetServer

__all__ = ["LocalnetChain", "LocalnetConfig", "LocalnetServer"]
