"""EXPIRED is definite: declared only once every block that could hold the transaction
is final and a search of the whole history does not find it.

These run on the `frozen` server: its localnet moves only when a test advances it,
so the processed and finalized block heights are exactly where the test puts them
(finalized = processed - 32), however slow the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agentstaking.v1 import staking_pb2, types_pb2
from solana.rpc.commitment import Finalized, Processed
from solders.keypair import Keypair

from service.localnet._chain import STATUS_CACHE_SLOTS

from ._helpers import eventually, latest_blockhash, states, submit, transfer, watch_all
from .conftest import FrozenService

# getSignatureStatuses answers a JSON-RPC error while this is set (not a failover).
INTERNAL_ERROR = -32603


async def _heights(frozen: FrozenService) -> tuple[int, int]:
    rpc = frozen.chain.rpc
    processed = (await rpc.get_block_height(Processed)).value
    finalized = (await rpc.get_block_height(Finalized)).value
    return processed, finalized


async def _landing_rounds(
    frozen: FrozenService, rounds: int, *, unless: Callable[[], bool]
) -> None:
    """Wait until the landing loop has run `rounds` whole rounds that began now or later
    (or until `unless()` holds).

    Each round reads the block height once (while a transaction has not landed); the
    (n+1)-th read from now starts a round after n rounds that all read the height
    after this call.
    """
    start = frozen.faults.methods.get("getBlockHeight", 0)
    await eventually(
        lambda: unless() or frozen.faults.methods.get("getBlockHeight", 0) > start + rounds,
        timeout=20,
    )


async def _state(frozen: FrozenService, signature: str) -> str:
    reply = await frozen.staking.GetTransactionStatus(
        staking_pb2.GetTransactionStatusRequest(signature=signature)
    )
    return states([reply.status])[0]


async def test_expiry_waits_for_the_finalized_block_height(
    frozen: FrozenService, frozen_wallet: Keypair
) -> None:
    chain = frozen.chain
    tx = transfer(frozen_wallet, await latest_blockhash(chain.rpc), note="expires when final")
    signature = str(tx.signatures[0])
    chain.proxy.swallow_sends = True
    try:
        response = await submit(frozen.staking, tx)
        assert response.status.state == types_pb2.TRANSACTION_STATE_SENT
        assert frozen.relay.stats().pending == 1
        bound = response.status.last_valid_block_height
        processed, _ = await _heights(frozen)
        watcher = asyncio.create_task(watch_all(frozen.staking, signature, timeout=30))

        # The tip passes the transaction's last valid block height; the finalized height
        # does not: a block at or below the bound (on a fork of the tip) could still hold it.
        await chain.advance_slots(bound - processed + 1)
        processed, finalized = await _heights(frozen)
        assert finalized <= bound < processed
        await _landing_rounds(frozen, 3, unless=watcher.done)
        assert not watcher.done(), f"ended early: {states(watcher.result())}"
        assert await _state(frozen, signature) == "SENT"

        # Once the finalized height passes the bound, it is EXPIRED.
        await chain.advance_slots(bound - finalized + 1)
        assert (await _heights(frozen))[1] > bound
        seen = await watcher
    finally:
        chain.proxy.swallow_sends = False
    assert states(seen) == ["SENT", "EXPIRED"]


async def test_a_landing_only_the_history_remembers_is_not_called_expired(
    frozen: FrozenService, frozen_wallet: Keypair
) -> None:
    """The transaction lands while the relay cannot read statuses; by the time it can,
    the node's recent status cache (what getSignatureStatuses searches without
    searchTransactionHistory) has forgotten it and its blockhash is long expired."""
    chain = frozen.chain
    faults = frozen.faults.faults
    tx = transfer(frozen_wallet, await latest_blockhash(chain.rpc), note="landed, then forgotten")
    signature = str(tx.signatures[0])
    expired = frozen.relay.stats().counters.get("expired", 0)
    faults.method_errors["getSignatureStatuses"] = INTERNAL_ERROR
    try:
        response = await submit(frozen.staking, tx)  # sent, and it lands
        assert response.status.state == types_pb2.TRANSACTION_STATE_SENT
        bound = response.status.last_valid_block_height
        await chain.advance_slots(STATUS_CACHE_SLOTS + 1)
        recent = await chain.rpc.get_signature_statuses([tx.signatures[0]])
        assert recent.value[0] is None
        assert (await _heights(frozen))[1] > bound
        call = frozen.staking.WatchTransaction(
            staking_pb2.WatchTransactionRequest(signature=signature), timeout=30
        )
        first = await call.read()
        assert isinstance(first, staking_pb2.WatchTransactionResponse)
    finally:
        faults.method_errors.clear()

    seen = [first.status] + [message.status async for message in call]
    # Each step it went through is reported, up to where the history found it.
    assert states(seen) == ["SENT", "PROCESSED", "CONFIRMED", "FINALIZED"]
    assert seen[-1].slot > 0
    assert frozen.relay.stats().counters.get("expired", 0) == expired
