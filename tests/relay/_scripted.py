"""A scripted JSON-RPC endpoint for driving the `Relay` by hand (no localnet)."""

from __future__ import annotations

from typing import Any

from solders.hash import Hash
from solders.keypair import Keypair

from ._helpers import transfer

GENESIS = "GenesisHash111111111111111111111111111111111"


class ScriptedRpc:
    """Answers what the relay asks from `statuses` and `height`; records sends."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, Any] | None] = {}
        self.height = 1_000
        self.blockhash_valid = True
        self.sent: list[dict[str, Any]] = []

    async def call(self, method: str, params: list[Any], *, timeout: float | None = None) -> Any:
        if method == "getGenesisHash":
            return GENESIS
        if method == "isBlockhashValid":
            return {"context": {"slot": self.height}, "value": self.blockhash_valid}
        if method == "getBlockHeight":
            return self.height
        if method == "sendTransaction":
            self.sent.append(params[1])
            return "signature"
        if method == "getSignatureStatuses":
            return {
                "context": {"slot": self.height},
                "value": [self.statuses.get(s) for s in params[0]],
            }
        if method == "getTransaction":
            return None
        raise AssertionError(f"unexpected {method}")

    async def close(self) -> None:
        pass


def chain_status(state: str, err: Any = None, slot: int = 990) -> dict[str, Any]:
    """A getSignatureStatuses entry in `state`."""
    return {
        "slot": slot,
        "confirmations": None if state == "finalized" else 1,
        "err": err,
        "confirmationStatus": state,
    }


def wire(note: str = "") -> bytes:
    """A signed transfer with a blockhash of its own (never on any chain)."""
    return bytes(transfer(Keypair(), Hash.new_unique(), note=note))
