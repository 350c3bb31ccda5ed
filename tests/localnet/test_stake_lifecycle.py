"""A stake account's whole life on the localnet, over HTTP only.

Transactions are built with the core's encoders and signed here, as an agent
would; state is read back the way a client would (getAccountInfo, the StakeHistory
sysvar, getProgramAccounts, getVoteAccounts) and decoded with the core.

The session localnet is shared: other tests may hold stake too, so cluster-wide
figures are checked against a recomputation from every stake account on chain
rather than against constants.
"""

from __future__ import annotations

import base64
from typing import Any

from solana.rpc.async_api import AsyncClient
from solana.rpc.models import MemcmpOpts
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.core import (
    STAKER_OFFSET,
    VOTER_OFFSET,
    WITHDRAWER_OFFSET,
    Delegation,
    StakeAccount,
    StakeActivation,
    StakeHistoryEntry,
    StakeStateKind,
    decode_stake_account,
    decode_stake_history,
    next_stake_history_entry,
    stake_activation,
    stake_deactivate,
    stake_withdraw,
)
from service.core.programs import (
    LAMPORTS_PER_SIGNATURE,
    STAKE_ACCOUNT_SIZE,
    STAKE_PROGRAM,
    SYSVAR_STAKE_HISTORY,
    U64_MAX,
)

from ._helpers import create_stake, send
from .conftest import RawRpc

SOL = 1_000_000_000
FEE = LAMPORTS_PER_SIGNATURE  # every transaction here has one signature unless noted


# ----- helpers: everything goes through JSON-RPC -----------------------------------------


async def _stake_state(raw: RawRpc, address: Pubkey) -> tuple[int, StakeAccount]:
    account = (await raw.result("getAccountInfo", str(address), {"encoding": "base64"}))["value"]
    assert account is not None and account["owner"] == str(STAKE_PROGRAM)
    return account["lamports"], decode_stake_account(base64.b64decode(account["data"][0]))


async def _activation(raw: RawRpc, address: Pubkey) -> StakeActivation:
    answer = await raw.result("localnet_getStakeActivation", str(address))
    return StakeActivation(**answer)


async def _stake_history(raw: RawRpc) -> dict[int, StakeHistoryEntry]:
    account = await raw.result("getAccountInfo", str(SYSVAR_STAKE_HISTORY), {"encoding": "base64"})
    return decode_stake_history(base64.b64decode(account["value"]["data"][0]))


async def _program_accounts(raw: RawRpc, *filters: dict[str, Any]) -> list[dict[str, Any]]:
    config: dict[str, Any] = {"encoding": "base64"}
    if filters:
        config["filters"] = list(filters)
    accounts = await raw.result("getProgramAccounts", str(STAKE_PROGRAM), config)
    assert isinstance(accounts, list)
    return accounts


async def _delegations(raw: RawRpc, *filters: dict[str, Any]) -> dict[Pubkey, Delegation]:
    """Every delegated stake account on chain (bootstrap stake included)."""
    found: dict[Pubkey, Delegation] = {}
    for item in await _program_accounts(raw, *filters):
        state = decode_stake_account(base64.b64decode(item["account"]["data"][0]))
        if state.delegation is not None:
            found[Pubkey.from_string(item["pubkey"])] = state.delegation
    return found


async def _activated_stake(raw: RawRpc, vote: Pubkey) -> int:
    status = await raw.result("getVoteAccounts", {"votePubkey": str(vote)})
    (entry,) = status["current"] + status["delinquent"]
    stake = entry["activatedStake"]
    assert isinstance(stake, int)
    return stake


async def _epoch(raw: RawRpc) -> int:
    epoch = (await raw.result("getEpochInfo", {"commitment": "processed"}))["epoch"]
    assert isinstance(epoch, int)
    return epoch


async def _advance_epoch(raw: RawRpc) -> int:
    before = await _epoch(raw)
    answer = await raw.result("localnet_advanceEpochs", 1)
    assert answer["epoch"] == before + 1
    return before + 1


async def _balance(raw: RawRpc, address: Pubkey) -> int:
    value = (await raw.result("getBalance", str(address)))["value"]
    assert isinstance(value, int)
    return value


async def _assert_history_entry_is_the_banks(
    raw: RawRpc, epoch: int, ended_with: dict[Pubkey, Delegation]
) -> StakeHistoryEntry:
    """The sysvar's entry for ``epoch`` is every delegation's status at ``epoch``
    summed (what a bank records), recomputed here from the delegations on chain as
    the epoch ended (``ended_with``: read just before the roll-over; the rewards paid
    after it have grown them since).
    """
    history = await _stake_history(raw)
    assert history[epoch] == next_stake_history_entry(ended_with.values(), epoch, history)
    return history[epoch]


async def _staking_rewards(raw: RawRpc, addresses: list[Pubkey], epoch: int) -> dict[Pubkey, int]:
    """getInflationReward amounts (0 when none) of ``epoch``."""
    found = await raw.result("getInflationReward", [str(a) for a in addresses], {"epoch": epoch})
    return {a: (r or {}).get("amount", 0) for a, r in zip(addresses, found, strict=True)}


# ----- tests ---------------------------------------------------------------------------------


async def test_blockhashes_stay_usable_across_an_epoch_jump(raw: RawRpc) -> None:
    await _advance_epoch(raw)
    for commitment in ("processed", "confirmed", "finalized"):
        latest = await raw.result("getLatestBlockhash", {"commitment": commitment})
        valid = await raw.result("isBlockhashValid", latest["value"]["blockhash"])
        assert valid["value"] is True, commitment


async def test_stake_lifecycle(raw: RawRpc, funded: Keypair) -> None:
    info = await raw.result("localnet_info")
    vote = Pubkey.from_string(info["validators"][0]["votePubkey"])
    rent = await raw.result("getMinimumBalanceForRentExemption", STAKE_ACCOUNT_SIZE)
    amount = 3 * info["minimumDelegation"]
    wallet = funded.pubkey()
    start_balance = await _balance(raw, wallet)
    assert start_balance == 100 * SOL
    activated_before = await _activated_stake(raw, vote)

    # Create, initialize and delegate in one transaction: activating this epoch.
    delegated_in = await _epoch(raw)
    stake = await create_stake(raw, funded, rent + amount, vote=vote)
    assert await _balance(raw, wallet) == start_balance - rent - amount - FEE
    assert await _activation(raw, stake) == StakeActivation(activating=amount)
    lamports, state = await _stake_state(raw, stake)
    assert lamports == rent + amount
    assert state.state is StakeStateKind.STAKE and state.meta is not None
    assert state.meta.rent_exempt_reserve == rent
    assert state.staker == wallet and state.withdrawer == wallet
    mine = state.delegation
    assert mine is not None
    assert mine.voter == vote and mine.stake == amount
    assert mine.activation_epoch == delegated_in and mine.deactivation_epoch == U64_MAX
    # The client-side view from the account and the sysvar agrees with the localnet's.
    status = stake_activation(mine, delegated_in, await _stake_history(raw))
    assert status == StakeActivation(activating=amount)

    # One epoch later the cluster (millions of SOL of genesis stake, 9% per epoch)
    # has warmed it up completely.
    ended_with = await _delegations(raw)
    active_in = await _advance_epoch(raw)
    entry = await _assert_history_entry_is_the_banks(raw, delegated_in, ended_with)
    assert entry.activating >= amount
    assert entry.effective >= sum(v["activatedStake"] for v in info["validators"])
    assert await _activation(raw, stake) == StakeActivation(effective=amount)
    history = await _stake_history(raw)
    assert stake_activation(mine, active_in, history) == StakeActivation(effective=amount)

    # The validator's activated stake grew by this delegation (plus whatever other
    # tests' delegations to it did in the same epoch, recomputed from the chain).
    to_vote = await _delegations(raw, {"memcmp": {"offset": VOTER_OFFSET, "bytes": str(vote)}})
    assert to_vote[stake] == mine
    activated_after = await _activated_stake(raw, vote)
    assert activated_after == sum(
        stake_activation(d, active_in, history).effective for d in to_vote.values()
    )
    others_growth = sum(
        stake_activation(d, active_in, history).effective
        - stake_activation(ended_with[address], delegated_in, history).effective
        for address, d in to_vote.items()
        if address != stake
    )
    assert activated_after - activated_before == amount + others_growth
    # What grew the others' delegations is the reward the node reports for them;
    # the new stake earned nothing for the epoch it was delegated in.
    paid = await _staking_rewards(raw, list(to_vote), delegated_in)
    assert paid[stake] == 0
    for address, d in to_vote.items():
        assert d.stake - ended_with[address].stake == paid[address]

    # Deactivate: cooling down this epoch, inactive the next.
    await send(raw, funded, [stake_deactivate(stake_account=stake, staker=wallet)])
    assert await _activation(raw, stake) == StakeActivation(effective=amount, deactivating=amount)
    _, state = await _stake_state(raw, stake)
    assert state.delegation is not None and state.delegation.deactivation_epoch == active_in
    ended_with = await _delegations(raw)
    await _advance_epoch(raw)
    entry = await _assert_history_entry_is_the_banks(raw, active_in, ended_with)
    assert entry.deactivating >= amount
    # Cooling down, it was still effective for the epoch: it earned that epoch's
    # reward, added to its delegation, which is all inactive now.
    (reward,) = (await _staking_rewards(raw, [stake], active_in)).values()
    assert reward > 0
    lamports, state = await _stake_state(raw, stake)
    assert lamports == rent + amount + reward
    assert state.delegation is not None and state.delegation.stake == amount + reward
    assert await _activation(raw, stake) == StakeActivation()

    # Withdraw everything: the account closes and the wallet is whole but for fees,
    # plus the reward.
    await send(
        raw,
        funded,
        [
            stake_withdraw(
                stake_account=stake, destination=wallet, withdrawer=wallet, lamports=lamports
            )
        ],
    )
    assert (await raw.result("getAccountInfo", str(stake)))["value"] is None
    assert await _balance(raw, wallet) == start_balance - 3 * FEE + reward


async def test_deactivated_in_its_activation_epoch_is_withdrawable_at_once(
    raw: RawRpc, funded: Keypair
) -> None:
    info = await raw.result("localnet_info")
    vote = Pubkey.from_string(info["validators"][0]["votePubkey"])
    rent = await raw.result("getMinimumBalanceForRentExemption", STAKE_ACCOUNT_SIZE)
    amount = info["minimumDelegation"]
    wallet = funded.pubkey()
    start_balance = await _balance(raw, wallet)

    stake = await create_stake(raw, funded, rent + amount, vote=vote)
    await send(raw, funded, [stake_deactivate(stake_account=stake, staker=wallet)])
    _, state = await _stake_state(raw, stake)
    assert state.delegation is not None
    assert state.delegation.activation_epoch == state.delegation.deactivation_epoch
    # It never counted as stake: nothing effective, nothing cooling down.
    assert await _activation(raw, stake) == StakeActivation()
    await send(
        raw,
        funded,
        [
            stake_withdraw(
                stake_account=stake, destination=wallet, withdrawer=wallet, lamports=rent + amount
            )
        ],
    )
    assert (await raw.result("getAccountInfo", str(stake)))["value"] is None
    assert await _balance(raw, wallet) == start_balance - 3 * FEE


async def test_my_stake_accounts_are_found_by_withdrawer(
    raw: RawRpc, client: AsyncClient, funded: Keypair
) -> None:
    info = await raw.result("localnet_info")
    vote = Pubkey.from_string(info["validators"][1]["votePubkey"])
    rent = await raw.result("getMinimumBalanceForRentExemption", STAKE_ACCOUNT_SIZE)
    amount = info["minimumDelegation"]
    wallet = funded.pubkey()
    other = Keypair()
    await raw.result("requestAirdrop", str(other.pubkey()), 10 * SOL)

    # Two of the wallet's own (one delegated, one only initialized: the filter reads
    # the Meta both states share), and one the wallet may stake but not withdraw.
    delegated = await create_stake(raw, funded, rent + amount, vote=vote)
    initialized = await create_stake(raw, funded, rent + amount)
    not_mine = await create_stake(
        raw, other, rent + amount, staker=funded, withdrawer=other.pubkey(), vote=vote
    )
    _, state = await _stake_state(raw, not_mine)
    assert state.staker == wallet and state.withdrawer == other.pubkey()

    assert WITHDRAWER_OFFSET == 44
    by_withdrawer = await _program_accounts(
        raw,
        {"dataSize": STAKE_ACCOUNT_SIZE},
        {"memcmp": {"offset": WITHDRAWER_OFFSET, "bytes": str(wallet)}},
    )
    assert {item["pubkey"] for item in by_withdrawer} == {str(delegated), str(initialized)}
    # The staker offset (the predecessor's filter) also matches what is not ours to withdraw.
    by_staker = await _program_accounts(
        raw,
        {"dataSize": STAKE_ACCOUNT_SIZE},
        {"memcmp": {"offset": STAKER_OFFSET, "bytes": str(wallet)}},
    )
    assert {item["pubkey"] for item in by_staker} == {
        str(delegated),
        str(initialized),
        str(not_mine),
    }
    # The same query through solana-py.
    answer = await client.get_program_accounts(
        STAKE_PROGRAM,
        encoding="base64",
        filters=[STAKE_ACCOUNT_SIZE, MemcmpOpts(offset=WITHDRAWER_OFFSET, bytes=str(wallet))],
    )
    assert {item.pubkey for item in answer.value} == {delegated, initialized}

    # The staker may deactivate what it cannot withdraw. Deactivated in their
    # activation epoch, these never count as stake for the tests that follow.
    await send(
        raw,
        funded,
        [
            stake_deactivate(stake_account=delegated, staker=wallet),
            stake_deactivate(stake_account=not_mine, staker=wallet),
        ],
    )
    assert await _activation(raw, not_mine) == StakeActivation()


async def test_set_stake_history_drives_warmup(raw: RawRpc, funded: Keypair) -> None:
    info = await raw.result("localnet_info")
    vote = Pubkey.from_string(info["validators"][2]["votePubkey"])
    rent = await raw.result("getMinimumBalanceForRentExemption", STAKE_ACCOUNT_SIZE)
    amount = 10 * info["minimumDelegation"]
    wallet = funded.pubkey()
    start_balance = await _balance(raw, wallet)

    stake = await create_stake(raw, funded, rent + amount, vote=vote)
    delegated_in = await _epoch(raw)
    now = await _advance_epoch(raw)
    _, state = await _stake_state(raw, stake)
    mine = state.delegation
    assert mine is not None
    original = (await _stake_history(raw))[delegated_in]
    assert await _activation(raw, stake) == StakeActivation(effective=amount)

    # Pretend four times the cluster's effective stake was warming up with it: the
    # delegation gets its pro-rata share of the 9% allowance, about 2.25% of itself.
    crowded = StakeHistoryEntry(
        effective=original.effective,
        activating=4 * original.effective,
        deactivating=original.deactivating,
    )
    await raw.result(
        "localnet_setStakeHistory",
        [
            {
                "epoch": delegated_in,
                "effective": crowded.effective,
                "activating": crowded.activating,
                "deactivating": crowded.deactivating,
            }
        ],
    )
    history = await _stake_history(raw)
    assert history[delegated_in] == crowded
    partial = stake_activation(mine, now, history)
    assert 0 < partial.effective < amount // 40 < partial.activating
    assert await _activation(raw, stake) == partial
    # Asked about the activation epoch, it is all still activating.
    answer = await raw.result("localnet_getStakeActivation", str(stake), {"epoch": delegated_in})
    assert StakeActivation(**answer) == StakeActivation(activating=amount)
    # The epoch's stakes are re-derived from the new history.
    to_vote = await _delegations(raw, {"memcmp": {"offset": VOTER_OFFSET, "bytes": str(vote)}})
    assert await _activated_stake(raw, vote) == sum(
        stake_activation(d, now, history).effective for d in to_vote.values()
    )

    # The sysvar only ever holds ended epochs; the stake program could not read more.
    refused = await raw.call("localnet_setStakeHistory", [{"epoch": now, "effective": 1}])
    assert refused["error"]["code"] == -32602
    not_stake = await raw.call("localnet_getStakeActivation", str(wallet))
    assert not_stake["error"]["code"] == -32602

    # Put the real entry back and leave nothing staked behind.
    await raw.result(
        "localnet_setStakeHistory",
        [
            {
                "epoch": delegated_in,
                "effective": original.effective,
                "activating": original.activating,
                "deactivating": original.deactivating,
            }
        ],
    )
    assert await _activation(raw, stake) == StakeActivation(effective=amount)
    await send(raw, funded, [stake_deactivate(stake_account=stake, staker=wallet)])
    await _advance_epoch(raw)
    await send(
        raw,
        funded,
        [
            stake_withdraw(
                stake_account=stake, destination=wallet, withdrawer=wallet, lamports=rent + amount
            )
        ],
    )
    assert await _balance(raw, wallet) == start_balance - 3 * FEE
