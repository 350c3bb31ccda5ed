"""A cluster whose recent prioritization fees are not zero, as mainnet's are: for the
benchmarks' ``--priced`` runs, where every build priced by a level (the default)
pays a price and so carries its SetComputeUnitPrice.
"""

from __future__ import annotations

import asyncio
import base64

from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.transaction import VersionedTransaction

from service.chain import HttpSolanaRpc
from service.core import compute_unit_price, system_transfer
from service.core.fees import PRIORITY_PERCENTILES, priority_fee_percentile

PRICE = 10_000
"""Micro-lamports per compute unit the landed transfers pay."""
SOL = 1_000_000_000
MAX_BLOCKS = 64


async def pay_priority_fees(url: str) -> int:
    """Land transfers paying :data:`PRICE` per compute unit, one per block, until the
    median of the fees the cluster reports is :data:`PRICE` (what a build's default
    level, medium, then pays, whatever its accounts); the number of blocks it took.

    Raises:
        RuntimeError: Not reached within :data:`MAX_BLOCKS` blocks.
    """
    rpc = HttpSolanaRpc(url)
    try:
        payer = Keypair()
        await rpc.call("requestAirdrop", [str(payer.pubkey()), SOL])
        for blocks in range(1, MAX_BLOCKS + 1):
            await _next_block(rpc)
            latest = await rpc.call("getLatestBlockhash", [{"commitment": "processed"}])
            transfer = system_transfer(
                source=payer.pubkey(), destination=Keypair().pubkey(), lamports=SOL // 1000
            )
            message = MessageV0.try_compile(
                payer.pubkey(),
                [compute_unit_price(PRICE), transfer],
                [],
                Hash.from_string(latest["value"]["blockhash"]),
            )
            wire = base64.b64encode(bytes(VersionedTransaction(message, [payer]))).decode()
            signature = await rpc.call("sendTransaction", [wire, {"encoding": "base64"}])
            await _confirmed(rpc, signature)
            reported = await rpc.call("getRecentPrioritizationFees", [[]])
            fees = [entry["prioritizationFee"] for entry in reported]
            if priority_fee_percentile(fees, PRIORITY_PERCENTILES["medium"]) == PRICE:
                return blocks
        raise RuntimeError(f"the median fee is not {PRICE} after {MAX_BLOCKS} blocks")
    finally:
        await rpc.close()


async def _next_block(rpc: HttpSolanaRpc) -> None:
    """Wait for a new slot: each transfer has a block of its own."""
    slot = await rpc.call("getSlot", [{"commitment": "processed"}])
    while True:
        await asyncio.sleep(0.05)
        if await rpc.call("getSlot", [{"commitment": "processed"}]) != slot:
            return


async def _confirmed(rpc: HttpSolanaRpc, signature: str) -> None:
    """Wait until ``signature`` is confirmed (its block's fee is reported then)."""
    while True:
        statuses = await rpc.call(
            "getSignatureStatuses", [[signature], {"searchTransactionHistory": True}]
        )
        status = statuses["value"][0]
        if status is not None and status.get("confirmationStatus") in ("confirmed", "finalized"):
            return
        await asyncio.sleep(0.05)
