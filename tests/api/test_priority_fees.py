"""Automatic priority fees over gRPC: a build priced by a priority level pays the
percentile its proto documents of the prioritization fees recently paid for the
accounts it write-locks, as the cluster reports them.

A localnet of its own, so that the blocks the fees come from are the test's: the
payments go in JSON-RPC batches, each landing in one block beside a transaction
that pays nothing and writes other accounts, so that the blocks' lowest price
(what a query without accounts answers) stays 0 while the wallet's rises.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from agentstaking.v1 import staking_pb2, staking_pb2_grpc, types_pb2
from solana.rpc.async_api import AsyncClient
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from service.config import Settings
from service.core import compute_unit_price
from service.core.plans._template import MessageTemplate, Values
from service.localnet import LocalnetConfig, LocalnetServer
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._receipts import ReceiptCheck, published_keys
from tests._wait import until

from ._helpers import send, sign, stake_checks

SOL = 1_000_000_000
LEVELS = types_pb2.PriorityLevel
# The percentile each level pays, as types.proto documents it.
PERCENTILES = {
    LEVELS.PRIORITY_LEVEL_UNSPECIFIED: 50,
    LEVELS.PRIORITY_LEVEL_LOW: 25,
    LEVELS.PRIORITY_LEVEL_MEDIUM: 50,
    LEVELS.PRIORITY_LEVEL_HIGH: 75,
    LEVELS.PRIORITY_LEVEL_VERY_HIGH: 95,
}


@dataclass
class Chain:
    """A fresh localnet, a server on it, and plain JSON-RPC to the localnet."""

    staking: staking_pb2_grpc.StakingServiceAsyncStub
    session: aiohttp.ClientSession
    url: str
    fee_wallet: Keypair

    async def rpc(self, body: Any) -> Any:
        async with self.session.post(self.url, json=body) as response:
            return await response.json()

    async def result(self, method: str, *params: Any) -> Any:
        answer = await self.rpc({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        assert "error" not in answer, answer
        return answer["result"]

    async def fees(self, *accounts: Pubkey) -> dict[int, int]:
        found = await self.result("getRecentPrioritizationFees", [str(a) for a in accounts])
        return {item["slot"]: item["prioritizationFee"] for item in found}

    async def in_one_block(self, *transactions: VersionedTransaction) -> int:
        """Send as one batch (one block) and wait until the block is confirmed (its
        fees reported); its slot."""
        return await self._batch(
            "sendTransaction",
            [[base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}] for tx in transactions],
        )

    async def fund(self, *wallets: Keypair) -> None:
        """10 SOL to each, in one block (where everything pays 0), confirmed."""
        await self._batch("requestAirdrop", [[str(key.pubkey()), 10 * SOL] for key in wallets])

    async def _batch(self, method: str, calls: list[list[Any]]) -> int:
        answers = await self.rpc(
            [
                {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
                for i, params in enumerate(calls)
            ]
        )
        assert all("error" not in a for a in answers), answers
        signatures = [a["result"] for a in answers]
        statuses = (await self.result("getSignatureStatuses", signatures))["value"]
        (slot,) = {s["slot"] for s in statuses}
        await until(lambda: self._listed(slot), timeout=30, what=f"block {slot} confirmed")
        return int(slot)

    async def _listed(self, slot: int) -> bool:
        return slot in await self.fees()

    async def transfer(self, payer: Keypair, price: int | None = None) -> VersionedTransaction:
        """0.01 SOL from ``payer`` to a new address (both write-locked), at ``price``
        micro-lamports per compute unit (None: no SetComputeUnitPrice)."""
        instructions: list[Instruction] = [] if price is None else [compute_unit_price(price)]
        instructions.append(
            transfer(
                TransferParams(
                    from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(), lamports=SOL // 100
                )
            )
        )
        latest = await self.result("getLatestBlockhash", {"commitment": "processed"})
        blockhash = Hash.from_string(latest["value"]["blockhash"])
        return VersionedTransaction(
            MessageV0.try_compile(payer.pubkey(), instructions, [], blockhash), [payer]
        )

    async def build(
        self, wallet: Keypair, level: types_pb2.PriorityLevel.ValueType
    ) -> types_pb2.PreparedTransaction:
        response = await self.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(wallet.pubkey()),
                amount_lamports=SOL,
                options=types_pb2.TransactionOptions(priority_level=level),
            )
        )
        return response.transaction


@pytest.fixture(scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chain]:
    localnet = LocalnetServer(LocalnetConfig(slot_duration=0.1))
    await localnet.start()
    fee_wallet = Keypair()
    settings = Settings(
        listen="127.0.0.1:0",
        rpc_urls=[localnet.url],
        service_fee_bps=25,
        fee_recipient=str(fee_wallet.pubkey()),
        default_vote_account=str(localnet.chain.validators[0].vote_account),
        blockhash_refresh_seconds=0.5,
        priority_fees_cache_seconds=0.2,
        # Builds of one wallet are repeated here far beyond an agent's pace.
        ratelimit_wallet_per_minute=100_000,
        ratelimit_wallet_burst=10_000,
        shutdown_grace_seconds=1,
        data_dir=tmp_path_factory.mktemp("fees-data"),
        database_url=f"sqlite:///{tmp_path_factory.mktemp('fees-keys') / 'keys.db'}",
    )
    server = AgentStakingServer(settings)
    await server.start()
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="agent", scopes=["staking"])
    channel = keyed_channel(
        f"127.0.0.1:{server.port}", secret, ReceiptCheck(published_keys(server))
    )
    async with aiohttp.ClientSession() as session:
        yield Chain(
            staking=staking_pb2_grpc.StakingServiceStub(channel),
            session=session,
            url=localnet.url,
            fee_wallet=fee_wallet,
        )
    await channel.close()
    await server.stop(0)
    await localnet.stop()


def _percentile(fees: Sequence[int], percentile: int) -> int:
    """Nearest rank, as types.proto's PriorityLevel says: the ceil(p x n / 100)-th."""
    ordered = sorted(fees)
    return ordered[-(-percentile * len(ordered) // 100) - 1]


async def test_a_priority_level_pays_its_percentile_of_the_fees_paid_for_the_same_accounts(
    chain: Chain,
) -> None:
    wallet, idle, cheap = Keypair(), Keypair(), Keypair()
    await chain.fund(wallet, idle, cheap, chain.fee_wallet)
    paid = [1_000 * i for i in range(1, 10)]
    slots = [
        await chain.in_one_block(await chain.transfer(cheap), await chain.transfer(wallet, price))
        for price in paid
    ]
    # What the cluster reports: the wallet's payments in its blocks, the blocks'
    # lowest price (the unpriced transfer beside them) 0.
    by_wallet = await chain.fees(wallet.pubkey(), chain.fee_wallet.pubkey())
    assert [by_wallet[s] for s in slots] == paid
    assert sorted(by_wallet.values()) == [0, *paid]  # and the airdrops' block
    assert {(await chain.fees())[s] for s in slots} == {0}

    # Nearest rank of [0, 1000, ..., 9000]: ranks 3, 5 (the lower middle of 10), 8, 10.
    reported = list(by_wallet.values())
    expected = {level: _percentile(reported, p) for level, p in PERCENTILES.items()}
    assert expected == {
        LEVELS.PRIORITY_LEVEL_UNSPECIFIED: 4_000,
        LEVELS.PRIORITY_LEVEL_LOW: 2_000,
        LEVELS.PRIORITY_LEVEL_MEDIUM: 4_000,
        LEVELS.PRIORITY_LEVEL_HIGH: 7_000,
        LEVELS.PRIORITY_LEVEL_VERY_HIGH: 9_000,
    }
    for level, price in [*expected.items(), (LEVELS.PRIORITY_LEVEL_NONE, 0)]:
        prepared = await chain.build(wallet, level)
        assert prepared.compute_unit_price_micro_lamports == price, LEVELS.Name(level)
        types = [i.type for i in prepared.instructions]
        assert ("SetComputeUnitPrice" in types) == (price > 0)
        assert prepared.fees.priority_fee_lamports == -(
            -price * prepared.compute_unit_limit // 1_000_000
        )
    # A wallet that paid nothing, in the same blocks: nothing to outbid.
    idle_build = await chain.build(idle, LEVELS.PRIORITY_LEVEL_VERY_HIGH)
    assert idle_build.compute_unit_price_micro_lamports == 0

    # The priced transaction is what the wallet signs, and it lands.
    prepared = await chain.build(wallet, LEVELS.PRIORITY_LEVEL_HIGH)
    async with AsyncClient(chain.url) as client:
        await send(client, sign(prepared, wallet))


async def test_the_price_follows_new_payments(chain: Chain) -> None:
    """VERY_HIGH, the 95th percentile of this localnet's dozen or so blocks, is the
    highest fee paid for the build's accounts (the fee recipient's too: the earlier
    test's stake landed at 7,000): each higher payment of the wallet prices the next
    builds once the cache time is over."""
    wallet, cheap = Keypair(), Keypair()
    await chain.fund(wallet, cheap)
    level = LEVELS.PRIORITY_LEVEL_VERY_HIGH
    for price in (20_000, 40_000):
        await chain.in_one_block(await chain.transfer(cheap), await chain.transfer(wallet, price))

        async def priced(price: int = price) -> bool:
            # An answer of the last cache time may still be in use; then the new one.
            return (await chain.build(wallet, level)).compute_unit_price_micro_lamports == price

        await until(priced, timeout=30, every=0.1, what=f"a build priced at {price}")


async def test_a_priced_build_fills_its_template_once(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accounts that price a stake come from its template without filling it: a
    build priced from recent fees fills its message once, priced."""
    wallet, cheap = Keypair(), Keypair()
    await chain.fund(wallet, cheap)
    await chain.in_one_block(await chain.transfer(cheap), await chain.transfer(wallet, 5_000))
    level = LEVELS.PRIORITY_LEVEL_VERY_HIGH
    # The shapes' templates learnt (learning fills one too).
    await chain.build(wallet, level)
    await chain.build(wallet, LEVELS.PRIORITY_LEVEL_NONE)
    prices: list[int] = []
    fill = MessageTemplate.fill

    def counted(template: MessageTemplate, values: Values) -> Any:
        price = values.get("compute_unit_price", 0)
        assert isinstance(price, int)
        prices.append(price)
        return fill(template, values)

    monkeypatch.setattr(MessageTemplate, "fill", counted)
    priced = await chain.build(wallet, level)
    assert priced.compute_unit_price_micro_lamports > 0
    assert prices == [priced.compute_unit_price_micro_lamports]
    prices.clear()
    await chain.build(wallet, LEVELS.PRIORITY_LEVEL_NONE)
    assert prices == [0]


async def test_a_priced_build_checks_its_request_with_its_price(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build priced by a level is checked to learn which accounts price it, then
    once more with the price it pays (a build that pays none is checked once:
    ``test_server.py``)."""
    wallet, cheap = Keypair(), Keypair()
    await chain.fund(wallet, cheap)
    await chain.in_one_block(await chain.transfer(cheap), await chain.transfer(wallet, 5_000))
    checked = stake_checks(monkeypatch)
    priced = await chain.build(wallet, LEVELS.PRIORITY_LEVEL_VERY_HIGH)
    assert priced.compute_unit_price_micro_lamports > 0
    assert checked == [0, priced.compute_unit_price_micro_lamports]
