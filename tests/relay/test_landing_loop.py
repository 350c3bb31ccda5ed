"""The landing loop's decisions where the localnet cannot show them (forks, busy, expiry).

The localnet never forks and answers every status at once, so these drive the
`Relay` against a scripted JSON-RPC endpoint and run its ticks by hand.
"""

from __future__ import annotations

import asyncio

import pytest

from service.chain import Relay, RelayBusyError, RelayConfig
from service.core.txstatus import TxState

from ._scripted import ScriptedRpc, chain_status, wire


async def test_a_block_dropped_by_a_fork_is_sent_again() -> None:
    rpc = ScriptedRpc()
    relay = Relay(rpc, RelayConfig(rebroadcast_interval=0.001))
    outcome = await relay.submit(wire(), skip_preflight=True)
    signature = outcome.status.signature
    assert outcome.status.state is TxState.SENT
    assert outcome.status.last_valid_block_height == 1_150
    assert rpc.sent == [{"encoding": "base64", "maxRetries": 0, "skipPreflight": True}]

    rpc.statuses[signature] = chain_status("processed")
    await relay._tick()
    assert (await relay.status(signature)).state is TxState.PROCESSED
    assert len(rpc.sent) == 1  # landed: no rebroadcast

    rpc.statuses[signature] = None  # the fork that held it was abandoned
    await relay._tick()
    status = await relay.status(signature)
    assert status.state is TxState.SENT and status.slot == 0
    assert relay.stats().counters["dropped"] == 1
    await asyncio.sleep(0.002)
    await relay._tick()
    assert len(rpc.sent) >= 2 and rpc.sent[-1]["skipPreflight"] is True


async def test_a_failure_is_final_only_once_its_block_is_confirmed() -> None:
    rpc = ScriptedRpc()
    relay = Relay(rpc, RelayConfig(rebroadcast_interval=0.001))
    signature = (await relay.submit(wire(), skip_preflight=True)).status.signature
    failure = {"InstructionError": [0, {"Custom": 1}]}

    rpc.statuses[signature] = chain_status("processed", failure)
    await asyncio.sleep(0.002)
    await relay._tick()
    assert (await relay.status(signature)).state is TxState.SENT
    assert len(rpc.sent) == 1  # it landed (and failed): not rebroadcast

    rpc.statuses[signature] = chain_status("confirmed", failure)
    await relay._tick()
    status = await relay.status(signature)
    assert status.state is TxState.FAILED and status.error is not None
    assert status.error.program_error == "ResultWithNegativeLamports"
    stats = relay.stats()
    assert stats.pending == 0 and stats.retained == 1 and stats.counters["failed"] == 1


async def test_expiry_waits_for_the_finalized_height_to_pass_the_bound() -> None:
    rpc = ScriptedRpc()
    relay = Relay(rpc)
    signature = (await relay.submit(wire(), skip_preflight=True)).status.signature
    rpc.height = 1_150  # the bound itself: it could still land in this block
    await relay._tick()
    assert (await relay.status(signature)).state is TxState.SENT
    rpc.height = 1_151
    await relay._tick()
    assert (await relay.status(signature)).state is TxState.EXPIRED


async def test_watchers_see_every_step_of_a_jump() -> None:
    rpc = ScriptedRpc()
    relay = Relay(rpc)
    signature = (await relay.submit(wire(), skip_preflight=True)).status.signature
    seen: list[TxState] = []

    async def watch() -> None:
        async for status in relay.watch(signature):
            seen.append(status.state)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    rpc.statuses[signature] = chain_status("finalized")
    await relay._tick()
    await asyncio.wait_for(watcher, 1)
    assert seen == [TxState.SENT, TxState.PROCESSED, TxState.CONFIRMED, TxState.FINALIZED]
    assert relay.watcher_count() == 0
    ttc = relay.stats()
    assert ttc.time_to_confirm_count == 1
    assert ttc.time_to_confirm_buckets[-1] == (float("inf"), 1)


async def test_at_most_max_pending_in_flight() -> None:
    relay = Relay(ScriptedRpc(), RelayConfig(max_pending=1))
    await relay.submit(wire("one"), skip_preflight=True)
    with pytest.raises(RelayBusyError) as caught:
        await relay.submit(wire("two"), skip_preflight=True)
    assert caught.value.reason == "RELAY_BUSY"
    assert relay.stats().rejections == {"RELAY_BUSY": 1}


async def test_outcomes_are_forgotten_after_the_retention_bound() -> None:
    rpc = ScriptedRpc()
    relay = Relay(rpc, RelayConfig(max_retained=2))
    for note in ("a", "b", "c"):
        signature = (await relay.submit(wire(note), skip_preflight=True)).status.signature
        rpc.statuses[signature] = chain_status("finalized")
    await relay._tick()
    assert relay.stats().retained == 2
