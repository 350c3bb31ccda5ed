"""The localnet pays inflation rewards as the runtime does, to the lamport.

A hand-made case on a localnet of its own: stake accounts on validators with
different commissions and vote credits (one delinquent), an epoch boundary, and the
rewards recomputed here from the published formulas with nothing but what the
JSON-RPC reports (stake account bytes, vote credits, commission, supply). The
service's own port of the arithmetic (``service.core.inflation``) is not used: this
is the independent calculation it must agree with.

Formulas (docs/rewards.md cites the sources):

    year        = first slot of the paying epoch / slots per year
    total rate  = max(terminal, initial * (1 - taper)^year)
    validator   = total - total * foundation           (while year < foundation_term)
    minted      = trunc(validator * capitalization * slots_in_epoch / slots per year)
    points      = sum over the vote account's epochs of effective stake * credits
                  earned in that epoch and not yet observed by the stake
    reward      = points * minted // total points
    commission  = reward * c // 100 to the vote account, reward * (100 - c) // 100 to
                  the stake account (its lamports and its delegation)
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from service.core import decode_epoch_rewards, stake_deactivate
from service.core.programs import STAKE_PROGRAM
from service.localnet import LocalnetConfig, LocalnetServer

from ._helpers import create_stake, send
from .conftest import RawRpc

SOL = 1_000_000_000
SLOTS_PER_EPOCH = 128
EPOCH_REWARDS = "SysvarEpochRewards1111111111111111111111111"
# The genesis default schedule (solana-sdk inflation/src/lib.rs).
INITIAL, TERMINAL, TAPER, FOUNDATION, FOUNDATION_TERM = 0.08, 0.015, 0.15, 0.05, 7.0
SECONDS_PER_YEAR = 365.242_199 * 24.0 * 60.0 * 60.0
# years_as_slots(1.0, 6.25 ms ticks, 64 ticks per slot)
SLOTS_PER_YEAR = 1.0 * SECONDS_PER_YEAR * (1_000_000_000.0 / 6_250_000.0) / 64.0
U64_MAX = 2**64 - 1


@pytest.fixture(scope="module")
async def net() -> AsyncIterator[LocalnetServer]:
    """A cluster of its own: frozen wall time, so only our transactions and the
    admin calls move it."""
    server = LocalnetServer(LocalnetConfig(slot_duration=0, slots_per_epoch=SLOTS_PER_EPOCH))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def rpc(net: LocalnetServer) -> AsyncIterator[RawRpc]:
    async with aiohttp.ClientSession() as session:
        yield RawRpc(session, net.url)


@pytest.fixture(scope="module")
async def client(net: LocalnetServer) -> AsyncIterator[AsyncClient]:
    rpc = AsyncClient(net.url, commitment=Confirmed)
    yield rpc
    await rpc.close()


@dataclass(frozen=True)
class Stake:
    """A stake account as its bytes say (offsets of StakeStateV2)."""

    lamports: int
    voter: str
    stake: int
    activation_epoch: int
    deactivation_epoch: int
    credits_observed: int


def _stake(account: dict[str, Any]) -> Stake | None:
    data = base64.b64decode(account["data"][0])
    if struct.unpack_from("<I", data, 0)[0] != 2:
        return None  # not delegated
    stake, activation, deactivation = struct.unpack_from("<QQQ", data, 156)
    (credits,) = struct.unpack_from("<Q", data, 188)
    return Stake(
        lamports=account["lamports"],
        voter=str(Pubkey(data[124:156])),
        stake=stake,
        activation_epoch=activation,
        deactivation_epoch=deactivation,
        credits_observed=credits,
    )


async def _stakes(rpc: RawRpc) -> dict[str, Stake]:
    accounts = await rpc.result("getProgramAccounts", str(STAKE_PROGRAM), {"encoding": "base64"})
    found = {item["pubkey"]: _stake(item["account"]) for item in accounts}
    return {address: s for address, s in found.items() if s is not None}


async def _votes(rpc: RawRpc) -> dict[str, dict[str, Any]]:
    status = await rpc.result("getVoteAccounts", {"commitment": "processed"})
    return {v["votePubkey"]: v for v in status["current"] + status["delinquent"]}


async def _balances(rpc: RawRpc, addresses: list[str]) -> dict[str, int]:
    answer = await rpc.result("getMultipleAccounts", addresses, {"encoding": "base64"})
    return {
        a: (v or {}).get("lamports", 0) for a, v in zip(addresses, answer["value"], strict=True)
    }


def _points(stake: Stake, epoch_credits: list[list[int]], rewarded_epoch: int) -> int:
    """Effective stake x unobserved credits, over the vote account's epochs up to the
    rewarded one. Every stake here is fully effective from the epoch after its
    activation (the genesis stake dwarfs it), bootstrap stake from genesis."""
    observed = stake.credits_observed
    latest = max((c for e, c, _ in epoch_credits if e <= rewarded_epoch), default=0)
    if latest <= observed:
        return 0
    points, new_observed = 0, observed
    for epoch, final, initial in epoch_credits:
        if epoch > rewarded_epoch:
            continue
        if observed < initial:
            earned = final - initial
        elif observed < final:
            earned = final - new_observed
        else:
            earned = 0
        new_observed = max(new_observed, final)
        active = stake.activation_epoch == U64_MAX or stake.activation_epoch < epoch
        points += (stake.stake if active else 0) * earned
    return points


def _split(reward: int, commission: int) -> tuple[int, int] | None:
    """(vote account's, stake account's), None when the runtime skips the payment."""
    if commission == 0:
        return 0, reward
    if commission == 100:
        return reward, 0
    voter, staker = reward * commission // 100, reward * (100 - commission) // 100
    return None if voter == 0 or staker == 0 else (voter, staker)


@dataclass(frozen=True)
class Expected:
    minted: int
    staker: dict[str, int]
    voter: dict[str, int]


def _expected(
    stakes: dict[str, Stake],
    votes: dict[str, dict[str, Any]],
    *,
    rewarded_epoch: int,
    capitalization: int,
) -> Expected:
    year = (rewarded_epoch + 1) * SLOTS_PER_EPOCH / SLOTS_PER_YEAR
    tapered = INITIAL * (1.0 - TAPER) ** year
    total = tapered if tapered > TERMINAL else TERMINAL
    foundation = total * FOUNDATION if year < FOUNDATION_TERM else 0.0
    validator = total - foundation
    minted = int(validator * float(capitalization) * (SLOTS_PER_EPOCH / SLOTS_PER_YEAR))
    points = {
        address: _points(s, votes[s.voter]["epochCredits"], rewarded_epoch)
        for address, s in stakes.items()
        if s.voter in votes
    }
    total_points = sum(points.values())
    staker: dict[str, int] = {}
    voter: dict[str, int] = {}
    for address, p in points.items():
        reward = p * minted // total_points
        vote = stakes[address].voter
        split = _split(reward, votes[vote]["commission"]) if reward else None
        if split is not None:
            voter[vote] = voter.get(vote, 0) + split[0]
            staker[address] = split[1]
    return Expected(minted=minted, staker=staker, voter=voter)


async def _epoch_info(rpc: RawRpc) -> dict[str, int]:
    info: dict[str, int] = await rpc.result("getEpochInfo", {"commitment": "processed"})
    return info


async def test_rewards_equal_the_published_formulas_to_the_lamport(
    rpc: RawRpc, client: AsyncClient, net: LocalnetServer
) -> None:
    info = await rpc.result("localnet_info")
    validators = info["validators"]
    # Two validators with different commissions and credits, one that pays no
    # commission, and the delinquent one.
    chosen = {0: 40, 3: 25, 1: 10, len(validators) - 1: 30}
    assert validators[-1]["delinquent"]
    votes = await _votes(rpc)
    assert len({votes[validators[i]["votePubkey"]]["commission"] for i in chosen}) == len(chosen)
    wallet = Keypair()
    await rpc.result("requestAirdrop", str(wallet.pubkey()), 200 * SOL)
    mine: dict[int, str] = {}
    for index, sol in chosen.items():
        vote_key = Pubkey.from_string(validators[index]["votePubkey"])
        mine[index] = str(await create_stake(rpc, wallet, sol * SOL + 2_282_880, vote=vote_key))

    # The epoch they were delegated in pays them nothing (activation epoch).
    delegated_in = (await _epoch_info(rpc))["epoch"]
    await rpc.result("localnet_advanceEpochs", 1)
    first = await rpc.result("getInflationReward", list(mine.values()), {"epoch": delegated_in})
    assert first == [None] * len(mine)

    # The next epochs: every stake fully active. Recompute each from the chain as it
    # ended.
    for rewarded_epoch in (delegated_in + 1, delegated_in + 2):
        stakes = await _stakes(rpc)
        supply = (await rpc.result("getSupply"))["value"]["total"]
        vote_accounts = list(votes)
        before = await _balances(rpc, vote_accounts)
        await rpc.result("localnet_advanceEpochs", 1)
        votes = await _votes(rpc)
        expected = _expected(stakes, votes, rewarded_epoch=rewarded_epoch, capitalization=supply)
        after_stakes = await _stakes(rpc)
        after_votes = await _balances(rpc, vote_accounts)
        paid = sum(expected.staker.values()) + sum(expected.voter.values())
        assert 0 < paid <= expected.minted

        # Each stake account: lamports and delegation grew by exactly its part.
        for address, s in stakes.items():
            gained = expected.staker.get(address, 0)
            assert after_stakes[address].lamports == s.lamports + gained, address
            assert after_stakes[address].stake == s.stake + gained, address
        # Each vote account: exactly the commission of the stakes delegated to it.
        for vote in vote_accounts:
            assert after_votes[vote] - before[vote] == expected.voter.get(vote, 0), vote
        # Nothing else was minted.
        supply_after = (await rpc.result("getSupply"))["value"]["total"]
        assert supply_after == supply + paid

        # The node's view: getInflationReward, as solders parses it.
        first_slot = (rewarded_epoch + 1) * SLOTS_PER_EPOCH
        keys = [Pubkey.from_string(a) for a in [*mine.values(), *vote_accounts]]
        answer = (await client.get_inflation_reward(keys, epoch=rewarded_epoch)).value
        for pubkey, reward in zip(keys, answer, strict=True):
            key = str(pubkey)
            if key in mine.values():
                amount = expected.staker.get(key)
                if amount is None:
                    assert reward is None, key
                    continue
                assert reward is not None
                assert (reward.amount, reward.post_balance) == (
                    amount,
                    after_stakes[key].lamports,
                )
                assert reward.effective_slot == first_slot + 1  # the distribution block
                assert reward.commission == votes[stakes[key].voter]["commission"]
            else:
                if key not in expected.voter:
                    assert reward is None, key
                    continue
                assert reward is not None
                assert (reward.amount, reward.post_balance) == (
                    expected.voter[key],
                    after_votes[key],
                )
                assert reward.effective_slot == first_slot  # the calculation block
                assert reward.commission == votes[key]["commission"]

        # The delinquent validator earned no credits: its stakers and it get nothing.
        delinquent = validators[-1]["votePubkey"]
        assert mine[len(validators) - 1] not in expected.staker
        assert delinquent not in expected.voter
        # Commission 0 pays the vote account a Voting reward of 0.
        assert expected.voter[validators[1]["votePubkey"]] == 0
        # Different credits, different returns per staked lamport.
        rates = {i: expected.staker[mine[i]] / stakes[mine[i]].stake for i in (0, 3) if mine[i]}
        assert rates[0] != rates[3]

    # Compounding: the second epoch's reward was computed on the stake grown by the
    # first's.
    paid_1 = await rpc.result("getInflationReward", [mine[0]], {"epoch": delegated_in + 1})
    paid_2 = await rpc.result("getInflationReward", [mine[0]], {"epoch": delegated_in + 2})
    assert paid_2[0]["postBalance"] - paid_2[0]["amount"] == paid_1[0]["postBalance"]


async def test_distribution_window(rpc: RawRpc, net: LocalnetServer) -> None:
    """The calculation block pays the vote accounts and activates the EpochRewards
    sysvar (stake instructions refused); the next block pays the stake accounts."""
    wallet = Keypair()
    await rpc.result("requestAirdrop", str(wallet.pubkey()), 20 * SOL)
    vote = (await rpc.result("localnet_info"))["validators"][0]["votePubkey"]
    stake = await create_stake(rpc, wallet, 5 * SOL, vote=Pubkey.from_string(vote))
    await rpc.result("localnet_advanceEpochs", 1)  # active from the next epoch on
    info = await _epoch_info(rpc)
    rewarded = info["epoch"]
    boundary = (rewarded + 1) * SLOTS_PER_EPOCH
    before = await _balances(rpc, [str(stake), vote])
    await rpc.result("localnet_advanceSlots", boundary - info["absoluteSlot"])

    # The calculation block.
    sysvar = await rpc.result("getAccountInfo", EPOCH_REWARDS, {"encoding": "base64"})
    rewards = decode_epoch_rewards(base64.b64decode(sysvar["value"]["data"][0]))
    assert rewards.active and rewards.num_partitions == 1
    assert rewards.distribution_starting_block_height == boundary + 1
    assert 0 < rewards.distributed_rewards < rewards.total_rewards  # the votes' part
    now = await _balances(rpc, [str(stake), vote])
    assert now[str(stake)] == before[str(stake)] and now[vote] > before[vote]
    refused = await rpc.call(
        "sendTransaction",
        *await _signed_deactivate(rpc, wallet, stake),
    )
    assert refused["error"]["code"] == -32002
    assert "custom program error: 0x10" in refused["error"]["message"]  # EpochRewardsActive
    # Not even confirmed yet: the node has no rewards block for the epoch.
    answer = await rpc.call(
        "getInflationReward", [str(stake)], {"epoch": rewarded, "commitment": "confirmed"}
    )
    assert answer["error"] == {
        "code": -32004,
        "message": f"Block not available for slot {boundary}",
    }

    # The next block is the distribution block.
    await rpc.result("localnet_advanceSlots", 1)
    sysvar = await rpc.result("getAccountInfo", EPOCH_REWARDS, {"encoding": "base64"})
    rewards = decode_epoch_rewards(base64.b64decode(sysvar["value"]["data"][0]))
    assert not rewards.active and 0 < rewards.distributed_rewards <= rewards.total_rewards
    paid = (await _balances(rpc, [str(stake)]))[str(stake)] - before[str(stake)]
    assert paid > 0
    # Confirmed (one block behind): the vote rewards are visible, the stake's
    # distribution block is not yet.
    answer = await rpc.call(
        "getInflationReward", [str(stake)], {"epoch": rewarded, "commitment": "confirmed"}
    )
    assert answer["error"]["code"] == -32019
    assert answer["error"]["data"] == {
        "currentBlockHeight": boundary,
        "rewardsCompleteBlockHeight": boundary + 2,
    }
    voted = await rpc.result(
        "getInflationReward", [vote], {"epoch": rewarded, "commitment": "confirmed"}
    )
    assert voted[0]["effectiveSlot"] == boundary
    await rpc.result("localnet_advanceSlots", 1)
    confirmed = await rpc.result(
        "getInflationReward", [str(stake)], {"epoch": rewarded, "commitment": "confirmed"}
    )
    assert confirmed[0] == {
        "epoch": rewarded,
        "effectiveSlot": boundary + 1,
        "amount": paid,
        "postBalance": before[str(stake)] + paid,
        "commission": 5,
    }
    # Finalized (the default) only once the block is 32 deep.
    answer = await rpc.call("getInflationReward", [str(stake)], {"epoch": rewarded})
    assert answer["error"]["code"] == -32004
    await rpc.result("localnet_advanceSlots", 32)
    assert await rpc.result("getInflationReward", [str(stake)], {"epoch": rewarded}) == confirmed
    # Without an epoch: the last one that ended at the commitment.
    assert await rpc.result("getInflationReward", [str(stake)]) == confirmed
    # Below confirmed is refused, as by a node.
    answer = await rpc.call("getInflationReward", [str(stake)], {"commitment": "processed"})
    assert answer["error"]["code"] == -32602


async def _signed_deactivate(rpc: RawRpc, wallet: Keypair, stake: Pubkey) -> list[Any]:
    latest = await rpc.result("getLatestBlockhash", {"commitment": "processed"})
    message = MessageV0.try_compile(
        wallet.pubkey(),
        [stake_deactivate(stake_account=stake, staker=wallet.pubkey())],
        [],
        Hash.from_string(latest["value"]["blockhash"]),
    )
    tx = VersionedTransaction(message, [wallet])
    return [base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}]


async def test_inflation_rate_governor_and_supply(
    rpc: RawRpc, client: AsyncClient, net: LocalnetServer
) -> None:
    governor = (await client.get_inflation_governor()).value
    assert (governor.initial, governor.terminal, governor.taper) == (INITIAL, TERMINAL, TAPER)
    assert (governor.foundation, governor.foundation_term) == (FOUNDATION, FOUNDATION_TERM)
    rate = (await client.get_inflation_rate()).value
    finalized_epoch = (await rpc.result("getEpochInfo", {"commitment": "finalized"}))["epoch"]
    year = finalized_epoch * SLOTS_PER_EPOCH / SLOTS_PER_YEAR
    total = max(INITIAL * (1.0 - TAPER) ** year, TERMINAL)
    assert rate.epoch == finalized_epoch
    assert rate.total == total
    assert rate.foundation == total * FOUNDATION
    assert rate.validator == total - total * FOUNDATION
    supply = (await client.get_supply()).value
    assert supply.total == supply.circulating > 0
    assert supply.non_circulating == 0 and supply.non_circulating_accounts == []

    # Fees leave the supply (no collector here), the faucet's airdrops included;
    # transfers only move lamports.
    wallet = Keypair()
    before = (await rpc.result("getSupply"))["value"]["total"]
    await rpc.result("requestAirdrop", str(wallet.pubkey()), 2 * SOL)
    await send(
        rpc,
        wallet,
        [
            transfer(
                TransferParams(
                    from_pubkey=wallet.pubkey(), to_pubkey=Keypair().pubkey(), lamports=SOL
                )
            )
        ],
    )
    assert (await rpc.result("getSupply"))["value"]["total"] == before - 2 * 5_000
