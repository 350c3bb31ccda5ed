"""Many watchers come and go; nothing of them stays behind (tasks, subscriptions, the
objects each watcher holds, memory)."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import types
from collections import Counter
from pathlib import Path

import grpc
import pytest
from agentstaking.v1 import staking_pb2, types_pb2
from solders.keypair import Keypair

from service.server import WATCH_END_MARGIN_SECONDS
from tests.api._helpers import rich_details

from ._helpers import eventually, latest_blockhash, submit, transfer
from .conftest import HeldChain, HeldService, _serving

WATCHERS = 500
# Coroutines of the tasks grpc.aio runs per call: the client's status waiter, the
# server's handler and its exception guard. Other tasks of the process (refreshers,
# probes, HTTP handlers of other fixtures) come and go on their own schedule.
PER_CALL_COROUTINES = frozenset(
    {"_AioCall._handle_status_once_received", "_schedule_rpc_coro", "_handle_exceptions"}
)
# Objects each open watcher holds, counted by type: ours (the relay's subscription and
# its generator, the servicer's stream, what the interceptor keeps per call) and the
# gRPC call on either side. Nothing else in the process makes them, unlike the tuples,
# dicts and frames that other threads and background tasks allocate meanwhile.
PER_WATCHER_OBJECTS = frozenset(
    {
        "service.chain._relay._Subscriber",
        "async_generator Relay.watch",
        "async_generator StakingServicer.WatchTransaction",
        "service.interceptors._observe.ObservedContext",
        "service.telemetry._context.CallInfo",
        "grpc._cython.cygrpc._ServicerContext",
        "grpc._cython.cygrpc._AioCall",
        "grpc.aio._call.UnaryStreamCall",
    }
)


def call_tasks() -> int:
    """Tasks that exist because a gRPC call is open."""
    return sum(
        getattr(task.get_coro(), "__qualname__", "") in PER_CALL_COROUTINES
        for task in asyncio.all_tasks()
    )


def per_watcher_objects() -> Counter[str]:
    """Live objects of the PER_WATCHER_OBJECTS kinds, by kind."""
    found: Counter[str] = Counter()
    for item in gc.get_objects():
        kind = type(item)
        name = (
            f"async_generator {item.ag_code.co_qualname}"
            if isinstance(item, types.AsyncGeneratorType)
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        if name in PER_WATCHER_OBJECTS:
            found[name] += 1
    return found


async def _held_signature(held: HeldService, wallet: Keypair, note: str) -> str:
    """A transaction that stays SENT: the proxy swallows its sends."""
    tx = transfer(wallet, await latest_blockhash(held.chain.rpc), note=note)
    response = await submit(held.staking, tx)
    assert response.status.state == types_pb2.TRANSACTION_STATE_SENT
    return response.signature


async def _open(
    held: HeldService, signature: str, count: int
) -> list[
    grpc.aio.UnaryStreamCall[
        staking_pb2.WatchTransactionRequest, staking_pb2.WatchTransactionResponse
    ]
]:
    request = staking_pb2.WatchTransactionRequest(signature=signature)
    calls = [held.staking.WatchTransaction(request, timeout=60) for _ in range(count)]
    first = await asyncio.gather(*(call.read() for call in calls))
    assert all(
        isinstance(message, staking_pb2.WatchTransactionResponse)
        and message.status.state == types_pb2.TRANSACTION_STATE_SENT
        for message in first
    )
    return calls


async def _settle(held: HeldService) -> None:
    # Generous: 500 cancellations on a busy machine.
    await eventually(lambda: held.relay.watcher_count() == 0, timeout=30)
    for _ in range(5):
        await asyncio.sleep(0.05)
        gc.collect()


async def test_500_watchers_opened_and_cancelled_leave_nothing_behind(
    held: HeldService, held_wallet: Keypair
) -> None:
    held.chain.proxy.swallow_sends = True
    try:
        signature = await _held_signature(held, held_wallet, "watched by many")
        # Warm-up: gRPC and the event loop allocate some structures on first use.
        for call in await _open(held, signature, WATCHERS):
            call.cancel()
        await _settle(held)

        tasks_before, all_before = call_tasks(), len(asyncio.all_tasks())
        objects_before = per_watcher_objects()
        tracemalloc.start()
        try:
            memory_before = tracemalloc.get_traced_memory()[0]
            calls = await _open(held, signature, WATCHERS)
            assert held.relay.watcher_count() == WATCHERS
            tasks_open = call_tasks()
            memory_open = tracemalloc.get_traced_memory()[0] - memory_before
            objects_open = per_watcher_objects()
            for call in calls:
                call.cancel()
            del calls
            await _settle(held)
            growth = tracemalloc.get_traced_memory()[0] - memory_before
        finally:
            tracemalloc.stop()
        tasks_after, all_after = call_tasks(), len(asyncio.all_tasks())
        objects_after = per_watcher_objects()
    finally:
        held.chain.proxy.swallow_sends = False

    print(
        f"\n{WATCHERS} watchers: gRPC call tasks before {tasks_before}, while open "
        f"{tasks_open}, after {tasks_after} (all tasks {all_before} -> {all_after}); "
        f"traced memory while open +{memory_open / 1024:.0f} KiB, after "
        f"cancelling +{growth / 1024:.1f} KiB; per-watcher objects {sum(objects_before.values())}"
        f" -> {sum(objects_open.values())} -> {sum(objects_after.values())}"
    )
    assert tasks_open >= tasks_before + WATCHERS  # tasks per open stream
    assert tasks_after <= tasks_before
    stats = held.relay.stats()
    assert stats.watchers == 0 and stats.observed == 0
    # Every watcher held one of each kind (so the census sees them), and none is left.
    for kind in PER_WATCHER_OBJECTS:
        assert objects_open[kind] >= objects_before[kind] + WATCHERS, kind
        assert objects_after[kind] <= objects_before[kind], kind
    # What 500 open watchers hold is gone once they are cancelled (a small, fixed
    # remainder is the allocator and gRPC's caches).
    assert growth < memory_open / 10


async def test_watchers_end_at_their_deadline_and_leave_nothing_behind(
    held: HeldService, held_wallet: Keypair
) -> None:
    held.chain.proxy.swallow_sends = True
    try:
        signature = await _held_signature(held, held_wallet, "watched briefly")
        await _settle(held)
        tasks_before = call_tasks()
        request = staking_pb2.WatchTransactionRequest(signature=signature)

        async def watch_until_deadline() -> grpc.StatusCode:
            call = held.staking.WatchTransaction(request, timeout=0.5)
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(watch_until_deadline() for _ in range(50)))
    finally:
        held.chain.proxy.swallow_sends = False
    assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
    await _settle(held)
    assert call_tasks() <= tasks_before


async def test_watchers_of_an_expiring_transaction_end_with_it(
    held: HeldService, held_wallet: Keypair
) -> None:
    held.chain.proxy.swallow_sends = True
    try:
        signature = await _held_signature(held, held_wallet, "expires while watched")
        calls = await _open(held, signature, 100)
        await held.chain.advance_slots(250)
        rest = [[message.status.state async for message in call] for call in calls]
    finally:
        held.chain.proxy.swallow_sends = False
    # After the first message (SENT), each stream sends EXPIRED and ends.
    assert all(seen == [types_pb2.TRANSACTION_STATE_EXPIRED] for seen in rest)
    await _settle(held)
    assert held.relay.stats().watchers == 0


async def test_a_stopping_server_ends_its_watches_with_a_reason(
    held_chain: HeldChain, held_wallet: Keypair, tmp_path: Path
) -> None:
    """Watches still open as the shutdown grace ends are answered SERVER_SHUTTING_DOWN
    with RetryInfo (call again elsewhere), not cut off by gRPC without a word."""
    async with _serving(held_chain, held_chain.proxy.url, tmp_path) as own:
        held_chain.proxy.swallow_sends = True
        try:
            signature = await _held_signature(own, held_wallet, "watched through a stop")
            (call,) = await _open(own, signature, 1)
            await own.server.stop(WATCH_END_MARGIN_SECONDS + 0.5)
        finally:
            held_chain.proxy.swallow_sends = False
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    details = rich_details(ended.value)
    assert details["ErrorInfo"].reason == "SERVER_SHUTTING_DOWN"
    assert details["RetryInfo"].retry_delay.ToTimedelta().total_seconds() > 0
