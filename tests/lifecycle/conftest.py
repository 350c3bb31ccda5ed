"""A real agent-staking server on a localnet of its own, for the staking lifecycle.

Its own localnet: these tests move epochs, rewrite StakeHistory and switch the
epoch-rewards distribution on and off, which would change what other suites sharing
the session localnet see (activated stake per validator, for one). Its own server
(not ``tests/api``'s): the lifecycle steps build many transactions per wallet, so the
per-wallet rate limit is raised explicitly here (the default is 10 builds a minute),
ListStakeAccounts reads the chain on every call, and no default vote account is
configured (the top of the validator ranking is used).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from agentstaking.v1 import staking_pb2, staking_pb2_grpc, types_pb2
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.epoch_rewards import EpochRewards
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.config import Settings
from service.core import StakeHistoryEntry, decode_stake_history
from service.core.inflation import InflationGovernor
from service.core.programs import SYSVAR_STAKE_HISTORY
from service.keys import KeyPolicy
from service.localnet import LocalnetChain, LocalnetConfig, LocalnetServer
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._receipts import ReceiptCheck, published_keys
from tests.api._helpers import balance, confirm

SOL = 1_000_000_000
FEE_BPS = 25


@dataclass
class Lifecycle:
    """The server, a keyed stub, and the localnet's JSON-RPC (admin methods included)."""

    server: AgentStakingServer
    localnet: LocalnetServer
    staking: staking_pb2_grpc.StakingServiceAsyncStub
    rpc: AsyncClient
    http: aiohttp.ClientSession
    fee_wallet: Keypair
    featured: str
    receipts: ReceiptCheck
    """Checks every build's receipt (libsodium) and counts them by RPC."""
    overridden: dict[int, StakeHistoryEntry] = field(default_factory=dict)
    """Entries replaced by `override_stake_history`, as they were."""
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    """Channels of `staking_with`, closed with the fixture."""

    async def staking_with(self, policy: KeyPolicy) -> staking_pb2_grpc.StakingServiceAsyncStub:
        """A stub whose calls carry a new staking key with ``policy``."""
        assert self.server.keys is not None
        _, secret = await self.server.keys.create(
            display_name="restricted agent", scopes=["staking"], policy=policy
        )
        channel = keyed_channel(f"127.0.0.1:{self.server.port}", secret, self.receipts)
        self.channels.append(channel)
        return staking_pb2_grpc.StakingServiceStub(channel)

    async def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call to the localnet; fails the test on an error answer."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        async with self.http.post(self.localnet.url, json=body) as response:
            answer = await response.json()
        assert "error" not in answer, answer
        return answer["result"]

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Several JSON-RPC calls in one HTTP request; answers in order (errors kept)."""
        body = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
            for i, (method, params) in enumerate(calls)
        ]
        async with self.http.post(self.localnet.url, json=body) as response:
            answers = await response.json()
        return [a for a in sorted(answers, key=lambda a: a["id"])]

    async def epoch(self) -> int:
        info = await self.call("getEpochInfo", {"commitment": "processed"})
        return int(info["epoch"])

    async def service_sees(self, epoch: int) -> None:
        """Wait until the service's cached chain context is at ``epoch``."""
        for _ in range(200):
            info = await self.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
            if info.epoch == epoch:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the service never saw epoch {epoch}")

    async def advance_epochs(self, count: int = 1) -> int:
        answer = await self.call("localnet_advanceEpochs", count)
        epoch = int(answer["epoch"])
        await self.service_sees(epoch)
        return epoch

    async def stake_history(self) -> dict[int, StakeHistoryEntry]:
        account = await self.call(
            "getAccountInfo", str(SYSVAR_STAKE_HISTORY), {"encoding": "base64"}
        )
        return decode_stake_history(base64.b64decode(account["value"]["data"][0]))

    async def set_stake_history(self, entries: Mapping[int, StakeHistoryEntry]) -> None:
        await self.call(
            "localnet_setStakeHistory",
            [
                {
                    "epoch": epoch,
                    "effective": e.effective,
                    "activating": e.activating,
                    "deactivating": e.deactivating,
                }
                for epoch, e in entries.items()
            ],
        )

    async def override_stake_history(self, entries: Mapping[int, StakeHistoryEntry]) -> None:
        """Replace entries, remembering the bank's own for `restore_stake_history`."""
        history = await self.stake_history()
        for epoch in entries:
            self.overridden.setdefault(epoch, history[epoch])
        await self.set_stake_history(entries)

    async def restore_stake_history(self) -> None:
        """Put back what `override_stake_history` replaced: later tests expect the
        bank's own history."""
        if self.overridden:
            await self.set_stake_history(self.overridden)
            self.overridden.clear()

    async def wallet(self, sol: int = 100) -> Keypair:
        keypair = Keypair()
        await self.call("requestAirdrop", str(keypair.pubkey()), sol * SOL)
        return keypair

    async def balance(self, address: Pubkey | str) -> int:
        return await balance(self.rpc, address)

    async def execute(self, prepared: types_pb2.PreparedTransaction, *signers: Keypair) -> None:
        """Sign the returned message as an agent does, send it, wait until it lands."""
        unsigned = VersionedTransaction.from_bytes(prepared.transaction)
        by_key = {str(k.pubkey()): k for k in signers}
        signatures = [by_key[s].sign_message(prepared.message) for s in prepared.required_signers]
        signed = VersionedTransaction.populate(unsigned.message, signatures)
        signature = (await self.rpc.send_raw_transaction(bytes(signed))).value
        await confirm(self.rpc, signature)

    async def stake(
        self,
        wallet: Keypair,
        lamports: int,
        *,
        vote: str = "",
        stake_authority: str = "",
        lockup: types_pb2.Lockup | None = None,
    ) -> str:
        """Build a stake for ``wallet``, execute it, return the new stake account."""
        response = await self.staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(wallet.pubkey()),
                amount_lamports=lamports,
                vote_account=vote,
                stake_authority=stake_authority,
                lockup=lockup,
            )
        )
        await self.execute(response.transaction, wallet)
        return response.stake_account

    async def validators(self) -> list[str]:
        """The vote accounts of ListValidators, best ranked first."""
        response = await self.staking.ListValidators(staking_pb2.ListValidatorsRequest())
        return [v.vote_account for v in response.validators]

    async def set_epoch_rewards(self, active: bool) -> None:
        """Start (40 partitions, one per block) or end an epoch-rewards distribution."""

        def distribute(chain: LocalnetChain) -> None:
            chain.svm.set_epoch_rewards(
                EpochRewards(
                    distribution_starting_block_height=chain.block_height,
                    num_partitions=40 if active else 0,
                    parent_blockhash=Hash.default(),
                    total_points=1,
                    total_rewards=1,
                    distributed_rewards=0,
                    active=active,
                )
            )

        await self.localnet.call(distribute)

    async def execute_as_promised(
        self,
        prepared: types_pb2.PreparedTransaction,
        wallet: Keypair,
        *cosigners: Keypair,
        credited: int = 0,
    ) -> None:
        """Execute a build made with ``simulate``: every balance its receipt lists moves
        exactly as simulated, and the wallet pays exactly the fee breakdown's total
        debit (less what it is credited)."""
        simulation = prepared.simulation
        assert simulation.compute_units > 0 and simulation.logs
        assert simulation.compute_units <= prepared.compute_unit_limit
        changes = {c.address: c for c in simulation.balance_changes}
        wallet_address = str(wallet.pubkey())
        assert wallet_address in changes  # the fee payer always moves
        for address, change in changes.items():
            assert await self.balance(address) == change.pre_lamports, address
            assert change.delta_lamports == change.post_lamports - change.pre_lamports
        await self.execute(prepared, wallet, *cosigners)
        for address, change in changes.items():
            assert await self.balance(address) == change.post_lamports, address
        paid = changes[wallet_address].pre_lamports - changes[wallet_address].post_lamports
        assert paid == prepared.fees.total_debit_lamports - credited

    async def positions(self, wallet: Keypair | Pubkey) -> staking_pb2.ListStakeAccountsResponse:
        owner = wallet.pubkey() if isinstance(wallet, Keypair) else wallet
        return await self.staking.ListStakeAccounts(
            staking_pb2.ListStakeAccountsRequest(wallet=str(owner))
        )


@pytest.fixture(scope="package")
async def lifecycle_localnet() -> AsyncIterator[LocalnetServer]:
    """Like the session localnet (100 ms slots), for this package alone (stopped when
    its tests are done, so nothing of it runs on in the background).

    Without inflation (the SDK's ``Inflation::new_disabled()``): these tests check
    warmup and cooldown to the lamport against stake histories they write, which
    rewards compounding into the delegations would blur (tests/rewards covers them).
    """
    server = LocalnetServer(
        LocalnetConfig(
            slot_duration=0.1,
            slots_per_epoch=432_000,
            inflation=InflationGovernor.disabled(),
        )
    )
    await server.start()
    yield server
    await server.stop()


@asynccontextmanager
async def open_lifecycle(
    localnet: LocalnetServer, data_dir: Path, **overrides: Any
) -> AsyncIterator[Lifecycle]:
    """A server on ``localnet`` with the lifecycle settings (``overrides`` on top), a
    staking key, and the clients of a `Lifecycle`; stopped on exit."""
    rpc = AsyncClient(localnet.url, commitment=Confirmed)
    fee_wallet = Keypair()
    await rpc.request_airdrop(fee_wallet.pubkey(), SOL)
    featured = str(localnet.chain.validators[2].vote_account)
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "rpc_urls": [localnet.url],
        "service_fee_bps": FEE_BPS,
        "fee_recipient": str(fee_wallet.pubkey()),
        "featured_vote_accounts": [featured],
        "stake_accounts_cache_seconds": 0,
        "blockhash_refresh_seconds": 0.2,
        # Lifecycle tests build many transactions per wallet: lift the per-wallet limit.
        "ratelimit_wallet_per_minute": 100_000,
        "ratelimit_wallet_burst": 10_000,
        "shutdown_grace_seconds": 1,
        "data_dir": data_dir,
        "database_url": f"sqlite:///{data_dir / 'keys.db'}",
    }
    server = AgentStakingServer(Settings(**{**values, **overrides}))
    await server.start()
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="lifecycle agent", scopes=["staking"])
    receipts = ReceiptCheck(published_keys(server))
    channel: grpc.aio.Channel = keyed_channel(f"127.0.0.1:{server.port}", secret, receipts)
    lifecycle: Lifecycle | None = None
    try:
        async with aiohttp.ClientSession() as http:
            lifecycle = Lifecycle(
                server=server,
                localnet=localnet,
                staking=staking_pb2_grpc.StakingServiceStub(channel),
                rpc=rpc,
                http=http,
                fee_wallet=fee_wallet,
                featured=featured,
                receipts=receipts,
            )
            yield lifecycle
    finally:
        for extra in lifecycle.channels if lifecycle is not None else []:
            await extra.close()
        await channel.close()
        await server.stop(0)
        await rpc.close()


@pytest.fixture(scope="package")
async def lifecycle(
    lifecycle_localnet: LocalnetServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Lifecycle]:
    async with open_lifecycle(
        lifecycle_localnet, tmp_path_factory.mktemp("lifecycle-data")
    ) as running:
        yield running
