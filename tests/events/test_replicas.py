"""Replicas on one PostgreSQL database: every event delivered, each attempt made by one
replica; ``kill -9`` of the replica that produces events: another takes over and the
change that happened meanwhile is not missed."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg
from agentstaking.v1 import events_pb2, events_pb2_grpc, staking_pb2, staking_pb2_grpc, types_pb2

from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._process import serve_env, server_process
from tests._wait import until
from tests.api._helpers import sign

from .conftest import EventsHarness, Receiver, event_settings, transfer_from

EVENTS = 30


async def _server(harness: EventsHarness, tmp: Path, postgres_url: str) -> AgentStakingServer:
    server = AgentStakingServer(
        event_settings(
            harness.localnet.url,
            tmp,
            database_url=postgres_url,
            webhook_max_in_flight=2,
            events_leader_lease_seconds=2.0,
        )
    )
    await server.start()
    return server


async def test_two_replicas_deliver_every_event_each_attempt_by_one_of_them(
    harness: EventsHarness, receiver: Receiver, postgres_url: str, tmp_path: Path
) -> None:
    first = await _server(harness, tmp_path / "first", postgres_url)
    second = await _server(harness, tmp_path / "second", postgres_url)
    try:
        assert first.keys is not None
        _, secret = await first.keys.create(display_name="agent", scopes=["staking"])
        channels = [keyed_channel(f"127.0.0.1:{server.port}", secret) for server in (first, second)]
        events = [events_pb2_grpc.EventServiceStub(c) for c in channels]
        staking = [staking_pb2_grpc.StakingServiceStub(c) for c in channels]
        wallet = await harness.wallet()
        address = str(wallet.pubkey())
        created = await events[0].CreateWebhook(
            events_pb2.CreateWebhookRequest(
                webhook=events_pb2.Webhook(
                    url=receiver.url,
                    wallets=[address],
                    event_types=["transaction.finalized", "api_key.rotation_due"],
                )
            )
        )
        receiver.delay = 0.05  # busy enough that both replicas take part
        sent = await asyncio.gather(
            *(
                events[i % 2].SendTestEvent(
                    events_pb2.SendTestEventRequest(name=created.webhook.name)
                )
                for i in range(EVENTS)
            )
        )
        # Relayed transactions, half through each replica: their outcomes are events too.
        signatures = []
        for i in range(4):
            answer = await staking[i % 2].SubmitTransaction(
                staking_pb2.SubmitTransactionRequest(
                    transaction=bytes(await transfer_from(harness.rpc, wallet))
                )
            )
            signatures.append(answer.signature)
        expected = {answer.event.event_id for answer in sent}
        await receiver.wait_for(
            lambda: (
                len({r.headers["webhook-id"] for r in receiver.requests})
                == EVENTS + len(signatures)
            ),
            timeout=60,
        )
        finalized = {
            e["transaction"]["signature"]
            for e in receiver.events(event_type="transaction.finalized")
        }
        assert finalized == set(signatures)
        assert expected <= {e["eventId"] for e in receiver.events()}
        # Each event arrived once (the receiver answered every request in time).
        counts = Counter(r.headers["webhook-id"] for r in receiver.requests)
        assert set(counts.values()) == {1}

        assert first.events is not None and second.events is not None
        store = first.events.store
        webhook_id = created.webhook.name.removeprefix("webhooks/")

        async def recorded() -> bool:
            found = await store.list_deliveries(webhook_id, state=None, before=None, limit=500)
            return len(found) == EVENTS + len(signatures) and all(d.attempts for d in found)

        # The receiver answers before the replica records the attempt.
        await until(recorded, what="every attempt recorded")
        deliveries = await store.list_deliveries(webhook_id, state=None, before=None, limit=500)
        replicas = Counter(d.attempts[0].replica for d in deliveries)
        assert all(len(d.attempts) == 1 and d.attempts[0].succeeded for d in deliveries)
        assert set(replicas) == {first.events.deliverer.owner, second.events.deliverer.owner}
        # One replica produces (leads) at a time.
        assert first.events.producer.leader != second.events.producer.leader
        for channel in channels:
            await channel.close()
    finally:
        await first.stop(0)
        await second.stop(0)


async def _leader(postgres_url: str) -> str | None:
    conn = await asyncpg.connect(postgres_url)
    try:
        owner: str | None = await conn.fetchval(
            "SELECT owner FROM event_leases WHERE name = 'producer' "
            "AND lease_expire_time > extract(epoch from now())"
        )
        return owner
    finally:
        await conn.close()


async def test_kill_9_of_the_producer_another_replica_takes_over_and_misses_nothing(
    harness: EventsHarness, receiver: Receiver, postgres_url: str, tmp_path: Path
) -> None:
    env = serve_env(
        postgres_url,
        harness.localnet.url,
        tmp_path / "first",
        AGENT_STAKING_WEBHOOK_ALLOW_PRIVATE="true",
        AGENT_STAKING_EVENTS_POLL_SECONDS="0.1",
        AGENT_STAKING_EVENTS_PRODUCER_INTERVAL_SECONDS="0.3",
        AGENT_STAKING_EVENTS_LEADER_LEASE_SECONDS="2",
        AGENT_STAKING_CONTEXT_REFRESH_SECONDS="0.5",
        AGENT_STAKING_STAKE_ACCOUNTS_CACHE_SECONDS="0",
    )
    second: AgentStakingServer | None = None
    async with server_process(env) as first:
        try:
            await first.wait_for_line('"listening"')
            await until(
                lambda: _leader_is_set(postgres_url), timeout=30, what="the first replica leading"
            )
            leader = await _leader(postgres_url)
            second = await _server(harness, tmp_path / "second", postgres_url)
            assert second.events is not None and second.keys is not None
            assert not second.events.producer.leader
            assert second.events.producer.owner != leader
            _, secret = await second.keys.create(display_name="agent", scopes=["staking"])
            channel = keyed_channel(f"127.0.0.1:{second.port}", secret)
            events = events_pb2_grpc.EventServiceStub(channel)
            staking = staking_pb2_grpc.StakingServiceStub(channel)
            wallet = await harness.wallet()
            address = str(wallet.pubkey())
            await events.CreateWebhook(
                events_pb2.CreateWebhookRequest(
                    webhook=events_pb2.Webhook(
                        url=receiver.url, wallets=[address], event_types=["stake.activated"]
                    )
                )
            )
            built = await staking.BuildStakeTransaction(
                staking_pb2.BuildStakeTransactionRequest(wallet=address, amount_lamports=2 * 10**9)
            )
            await staking.SubmitTransaction(
                staking_pb2.SubmitTransactionRequest(
                    transaction=bytes(sign(built.transaction, wallet)),
                    commitment=types_pb2.COMMITMENT_CONFIRMED,
                )
            )
            store = second.events.store

            async def seen_activating() -> bool:
                records = (await store.stake_records([address]))[address]
                return built.stake_account in records

            # The leader (the process) saw the new stake account activating...
            await until(seen_activating, timeout=30, what="the leader following the stake")
            assert not second.events.producer.leader
            # ... then dies without a word; the stake activates meanwhile.
            await first.kill()
            await harness.advance_epochs(1)
            await receiver.wait_for(lambda: bool(receiver.events()), timeout=30)
            [event] = receiver.events()
            assert event["type"] == "stake.activated"
            assert event["stake"]["stakeAccount"] == built.stake_account
            assert second.events.producer.leader
            assert second.events.producer.takeovers == 1
            assert await _leader(postgres_url) == second.events.producer.owner
            await channel.close()
        finally:
            if second is not None:
                await second.stop(0)


async def _leader_is_set(postgres_url: str) -> bool:
    return await _leader(postgres_url) is not None
