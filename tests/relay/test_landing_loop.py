"""The landing loop's decisions where the localnet cannot show them (forks, busy, restarts).

The localnet never forks and answers every status at once, so these drive the
`Relay` against a scripted JSON-RPC endpoint and run its ticks by hand.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from solders.hash import Hash
from solders.keypair import Keypair

from service.chain import Relay, RelayBusyError, RelayConfig
from service.core.txstatus import Commitment, TxState

from ._helpers import transfer

GENESIS = "GenesisHash111111111111111111111111111111111"


class ScriptedRpc:
    """Answers what the relay asks from `statuses` and `height`; records sends."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, Any] | None] = {}
        self.height = 1_000
        self.sent: list[dict[str, Any]] = []

    async def call(self, method: str, params: list[Any], *, timeout: float | None = None) -> Any:
        if method == "getGenesisHash":
            return GENESIS
        if method == "isBlockhashValid":
            return {"context": {"slot": self.height}, "value": True}
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


def _status(state: str, err: Any = None, slot: int = 990) -> dict[str, Any]:
    return {
        "slot": slot,
        "confirmations": None if state == "finalized" else 1,
        "err": err,
        "confirmationStatus": state,
    }


def _wire(note: str = "") -> bytes:
    return bytes(transfer(Keypair(), Hash.new_unique(), note=note))


async def test_a_block_dropped_by_a_fork_is_sent_again() -> None:
    rpc = ScriptedRpc()
    relay = Relay(rpc, RelayConfig(rebroadcast_interval=0.001))
    outcome = await relay.submit(_wire(), skip_preflight=True)
    signature = outcome.status.signature
    assert outcome.status.state is TxState.SENT
    assert outcome.status.last_valid_block_height == 1_150
    assert rpc.sent == [{"encoding": "base64", "maxRetries": 0, "skipPreflight": True}]

    rpc.statuses[signature] = _status("processed")
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
    signature = (await relay.submit(_wire(), skip_preflight=True)).status.signature
    failure = {"InstructionError": [0, {"Custom": 1}]}

    rpc.statuses[signature] = _status("processed", failure)
    await asyncio.sleep(0.002)
    await relay._tick()
    assert (await relay.status(signature)).state is TxState.SENT
    assert len(rpc.sent) == 1  # it landed (and failed): not rebroadcast

    rpc.statuses[signature] = _status("confirmed", failure)
    await relay._tick()
    status = await relay.status(signature)
    assert status.state is TxState.FAILED and status.error is not None
    assert status.error.program_error == "ResultWithNegativeLamports"
    stats = relay.stats()
    assert stats.pending == 0 and stats.retained == 1 and stats.counters["failed"] == 1


async def test_expiry_waits_for_the_finalized_height_to_pass_the_bound() -> None:
    rpc = ScriptedRpc()
    relay = Relay(rpc)
    signature = (await relay.submit(_wire(), skip_preflight=True)).status.signature
    rpc.height = 1_150  # the bound itself: it could still land in this block
    await relay._tick()
    assert (await relay.status(signature)).state is TxState.SENT
    rpc.height = 1_151
    await relay._tick()
    assert (await relay.status(signature)).state is TxState.EXPIRED


async def test_watchers_see_every_step_of_a_jump() -> None:
    rpc = ScriptedRpc()
    relay = Relay(rpc)
    signature = (await relay.submit(_wire(), skip_preflight=True)).status.signature
    seen: list[TxState] = []

    async def watch() -> None:
        async for status in relay.watch(signature):
            seen.append(status.state)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    rpc.statuses[signature] = _status("finalized")
    await relay._tick()
    await asyncio.wait_for(watcher, 1)
    assert seen == [TxState.SENT, TxState.PROCESSED, TxState.CONFIRMED, TxState.FINALIZED]
    assert relay.watcher_count() == 0
    ttc = relay.stats()
    assert ttc.time_to_confirm_count == 1
    assert ttc.time_to_confirm_buckets[-1] == (float("inf"), 1)


async def test_at_most_max_pending_in_flight() -> None:
    relay = Relay(ScriptedRpc(), RelayConfig(max_pending=1))
    await relay.submit(_wire("one"), skip_preflight=True)
    with pytest.raises(RelayBusyError) as caught:
        await relay.submit(_wire("two"), skip_preflight=True)
    assert caught.value.reason == "RELAY_BUSY"
    assert relay.stats().rejections == {"RELAY_BUSY": 1}


async def test_outcomes_are_forgotten_after_the_retention_bound() -> None:
    rpc = ScriptedRpc()
    relay = Relay(rpc, RelayConfig(max_retained=2))
    for note in ("a", "b", "c"):
        signature = (await relay.submit(_wire(note), skip_preflight=True)).status.signature
        rpc.statuses[signature] = _status("finalized")
    await relay._tick()
    assert relay.stats().retained == 2


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"version": 99, "pending": []}),
        json.dumps({"version": 1, "genesis_hash": "another cluster", "pending": [{"x": 1}]}),
    ],
    ids=["garbage", "unknown version", "other cluster"],
)
async def test_unusable_state_files_are_ignored(tmp_path: Path, content: str) -> None:
    path = tmp_path / "relay-pending.json"
    path.write_text(content)
    relay = Relay(ScriptedRpc(), RelayConfig(state_file=path))
    await relay.start()
    try:
        assert relay.stats().pending == 0 and not path.exists()
    finally:
        await relay.stop()
    assert not path.exists()  # nothing in flight: nothing saved


async def test_state_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "relay-pending.json"
    first = Relay(ScriptedRpc(), RelayConfig(state_file=path))
    await first.start()
    signature = (await first.submit(_wire(), skip_preflight=True)).status.signature
    await first.stop()
    assert json.loads(path.read_text())["genesis_hash"] == GENESIS

    rpc = ScriptedRpc()
    second = Relay(rpc, RelayConfig(state_file=path, poll_interval=0.01))
    await second.start()
    try:
        status = await second.status(signature)
        assert status.state is TxState.SENT and status.send_count == 1
        assert status.last_valid_block_height == 1_150
        rpc.statuses[signature] = _status("finalized")
        final = await asyncio.wait_for(second.wait(signature, Commitment.FINALIZED), 2)
        assert final.state is TxState.FINALIZED
    finally:
        await second.stop()


async def test_saved_transactions_from_another_chain_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "relay-pending.json"
    items = [
        {
            "signature": "x",
            "transaction": base64.b64encode(_wire(note)).decode(),
            "state": "SENT",
            "last_valid_block_height": bound,
            "create_time": 1.0,
            "send_count": 1,
        }
        for note, bound in (("ours", 1_100), ("another chain", 5_000))
    ]
    path.write_text(json.dumps({"version": 1, "genesis_hash": GENESIS, "pending": items}))
    relay = Relay(ScriptedRpc(), RelayConfig(state_file=path))
    await relay.start()
    try:
        stats = relay.stats()
        assert stats.pending == 1 and stats.counters["restored"] == 1
    finally:
        await relay.stop()
