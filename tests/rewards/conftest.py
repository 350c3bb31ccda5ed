"""A localnet that pays inflation rewards, a server on it, and a staking history.

Its own localnet: these tests move epochs (every boundary pays rewards to every stake
account on it). The history is made once per package: a wallet stakes to two
validators with different commissions and vote credits and to the delinquent one,
three epoch boundaries pass, a tip lands in one account in between, and the balances
of every account around every boundary are kept as the chain reported them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from agentstaking.v1 import staking_pb2
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from service.localnet import LocalnetConfig, LocalnetServer
from tests.api._helpers import confirm
from tests.lifecycle.conftest import SOL, Lifecycle, open_lifecycle

TIP = 12_345_678


@pytest.fixture(scope="package")
async def rewards_localnet() -> AsyncIterator[LocalnetServer]:
    server = LocalnetServer(LocalnetConfig(slot_duration=0.1, slots_per_epoch=432_000))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="package")
async def rewards(
    rewards_localnet: LocalnetServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Lifecycle]:
    async with open_lifecycle(rewards_localnet, tmp_path_factory.mktemp("rewards")) as running:
        yield running


@dataclass(frozen=True)
class Staked:
    """What the package's staking history did, as the chain reported it.

    Attributes:
        accounts: Stake account by label: "a" (5 SOL, validator 0), "b" (3 SOL,
            validator 3), "c" (2 SOL, the delinquent validator).
        votes: Vote account by the same labels.
        delegated_in: The epoch the stakes were made in.
        before: Per rewarded epoch, balances (stake and vote accounts) just before
            its boundary.
        after: The same just after (the rewards paid).
        tipped_in: The epoch in which ``TIP`` lamports were sent to account "a".
    """

    wallet: Keypair
    accounts: dict[str, str]
    votes: dict[str, str]
    delegated_in: int
    before: dict[int, dict[str, int]]
    after: dict[int, dict[str, int]]
    tipped_in: int


async def _balances(lc: Lifecycle, addresses: list[str]) -> dict[str, int]:
    return {a: await lc.balance(a) for a in addresses}


async def tip(lc: Lifecycle, to: str, lamports: int) -> None:
    """A direct transfer into a stake account, as an MEV tip arrives."""
    tipper = await lc.wallet(1)
    latest = await lc.call("getLatestBlockhash", {"commitment": "processed"})
    message = MessageV0.try_compile(
        tipper.pubkey(),
        [
            transfer(
                TransferParams(
                    from_pubkey=tipper.pubkey(), to_pubkey=Pubkey.from_string(to), lamports=lamports
                )
            )
        ],
        [],
        Hash.from_string(latest["value"]["blockhash"]),
    )
    signature = (
        await lc.rpc.send_raw_transaction(bytes(VersionedTransaction(message, [tipper])))
    ).value
    await confirm(lc.rpc, signature)


@pytest.fixture(scope="package")
async def staked(rewards: Lifecycle) -> Staked:
    lc = rewards
    validators = lc.localnet.chain.validators
    assert validators[-1].delinquent
    votes = {
        "a": str(validators[0].vote_account),
        "b": str(validators[3].vote_account),
        "c": str(validators[-1].vote_account),
    }
    wallet = await lc.wallet(50)
    accounts: dict[str, str] = {}
    for label, sol in (("a", 5), ("b", 3), ("c", 2)):
        built = await lc.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(wallet.pubkey()), amount_lamports=sol * SOL, vote_account=votes[label]
            )
        )
        await lc.execute(built.transaction, wallet)
        accounts[label] = built.stake_account
    delegated_in = await lc.epoch()
    watched = [*accounts.values(), *votes.values()]
    before: dict[int, dict[str, int]] = {}
    after: dict[int, dict[str, int]] = {}
    tipped_in = delegated_in + 2
    for rewarded in range(delegated_in, delegated_in + 3):
        if rewarded == tipped_in:
            await tip(lc, accounts["a"], TIP)
        before[rewarded] = await _balances(lc, watched)
        await lc.advance_epochs(1)
        after[rewarded] = await _balances(lc, watched)
    return Staked(
        wallet=wallet,
        accounts=accounts,
        votes=votes,
        delegated_in=delegated_in,
        before=before,
        after=after,
        tipped_in=tipped_in,
    )
