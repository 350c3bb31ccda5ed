"""A real agent-staking server offering stake pools installed on a localnet of its own.

Its own localnet: the pools' validator stake accounts add stake to the localnet's
validators, which would change what other suites sharing the session localnet see.
The pools' StakePool and ValidatorList accounts are encoded by the JavaScript SDK's
layouts (the service decodes what the SDK writes). One epoch is rolled before the
pools are installed, so that a pool can be left behind at the previous epoch.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
from agentstaking.v1 import staking_pb2_grpc
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.account import Account
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.config import Settings, StakePoolSetting
from service.core import (
    Authorized,
    Delegation,
    Lockup,
    Meta,
    StakeAccount,
    StakeStateKind,
    encode_stake_account,
)
from service.core.programs import STAKE_ACCOUNT_SIZE, STAKE_PROGRAM, U64_MAX
from service.core.stake_pools import Fee, StakePool, ValidatorList
from service.localnet import (
    LocalnetChain,
    LocalnetConfig,
    LocalnetServer,
    LocalnetStakePool,
    install_stake_pool,
)
from service.server import AgentStakingServer
from tests._grpc_auth import keyed_channel
from tests._receipts import ReceiptCheck, published_keys
from tests.liquid import _cases
from tests.liquid._sdk import oracle

SOL = 1_000_000_000
FEE_BPS = 25


def sdk_encoded_pool(pool: StakePool) -> bytes:
    (data,) = oracle([{"op": "encodeStakePool", "pool": _cases.stake_pool_json(pool)}])
    assert isinstance(data, str), data
    return bytes.fromhex(data)


def sdk_encoded_list(validators: ValidatorList) -> bytes:
    (data,) = oracle(
        [{"op": "encodeValidatorList", "list": _cases.validator_list_json(validators)}]
    )
    assert isinstance(data, str), data
    return bytes.fromhex(data).ljust(16 + 73 * validators.max_validators, b"\0")


@dataclass
class Pools:
    """The server, a keyed stub, the localnet and the installed pools by name."""

    server: AgentStakingServer
    localnet: LocalnetServer
    staking: staking_pb2_grpc.StakingServiceAsyncStub
    rpc: AsyncClient
    fee_wallet: Keypair
    pools: dict[str, LocalnetStakePool]

    async def on_chain(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.localnet.call(fn, *args)

    async def wallet(self, sol: int = 100) -> Keypair:
        keypair = Keypair()
        await self.rpc.request_airdrop(keypair.pubkey(), sol * SOL)
        return keypair

    async def active_stake_account(self, owner: Pubkey, voter: Pubkey, stake: int) -> Pubkey:
        """A fully active stake account of ``owner`` (bootstrap stake, as at genesis)."""
        address = Keypair().pubkey()

        def write(chain: LocalnetChain) -> None:
            rent = chain.svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE)
            account = StakeAccount(
                state=StakeStateKind.STAKE,
                meta=Meta(
                    rent_exempt_reserve=rent,
                    authorized=Authorized(staker=owner, withdrawer=owner),
                    lockup=Lockup(),
                ),
                delegation=Delegation(
                    voter=voter, stake=stake, activation_epoch=U64_MAX, deactivation_epoch=U64_MAX
                ),
            )
            chain.svm.set_account(
                address,
                Account(
                    lamports=stake + rent,
                    data=encode_stake_account(account),
                    owner=STAKE_PROGRAM,
                    executable=False,
                ),
            )

        await self.on_chain(write)
        return address

    async def account_data(self, address: Pubkey) -> bytes | None:
        info = (await self.rpc.get_account_info(address, Confirmed)).value
        return bytes(info.data) if info is not None else None


POOLS: dict[str, dict[str, Any]] = {
    # An ordinary pool: fees on every way in and out, a large reserve.
    "open": {
        "fields": {
            "sol_deposit_fee": Fee(denominator=1000, numerator=3),
            "stake_deposit_fee": Fee(denominator=1000, numerator=1),
            "sol_withdrawal_fee": Fee(denominator=1000, numerator=2),
            "stake_withdrawal_fee": Fee(denominator=1000, numerator=1),
            "sol_referral_fee": 50,
            "stake_referral_fee": 20,
        }
    },
    # The reserve pays only small SOL withdrawals.
    "small-reserve": {"reserve_lamports": 2 * SOL},
    # SOL deposits and withdrawals need authorities' signatures.
    "restricted": {
        "fields": {
            "sol_deposit_authority": Pubkey.from_string(
                "Vote111111111111111111111111111111111111111"
            ),
            "sol_withdraw_authority": Pubkey.from_string(
                "Vote111111111111111111111111111111111111111"
            ),
        }
    },
    # Not updated since the previous epoch.
    "outdated": {},
}


@pytest.fixture(scope="package")
async def pools(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pools]:
    localnet = LocalnetServer(LocalnetConfig(slot_duration=0.1, slots_per_epoch=432_000))
    await localnet.start()
    await localnet.call(LocalnetChain.advance_epochs, 1)
    installed = {}
    for name, options in POOLS.items():
        installed[name] = await localnet.call(
            lambda chain, name=name, options=options: install_stake_pool(
                chain,
                name=name,
                encode_pool=(
                    (
                        lambda p: sdk_encoded_pool(
                            replace(p, last_update_epoch=p.last_update_epoch - 1)
                        )
                    )
                    if name == "outdated"
                    else sdk_encoded_pool
                ),
                encode_list=sdk_encoded_list,
                **options,
            )
        )
    rpc = AsyncClient(localnet.url, commitment=Confirmed)
    fee_wallet = Keypair()
    await rpc.request_airdrop(fee_wallet.pubkey(), SOL)
    settings = Settings(
        listen="127.0.0.1:0",
        rpc_urls=[localnet.url],
        service_fee_bps=FEE_BPS,
        fee_recipient=str(fee_wallet.pubkey()),
        stake_pools=[
            StakePoolSetting(address=str(pool.address), label=name)
            for name, pool in installed.items()
        ],
        blockhash_refresh_seconds=0.2,
        ratelimit_wallet_per_minute=100_000,
        ratelimit_wallet_burst=10_000,
        shutdown_grace_seconds=1,
        data_dir=tmp_path_factory.mktemp("liquid-data"),
        database_url=f"sqlite:///{tmp_path_factory.mktemp('liquid-keys') / 'keys.db'}",
    )
    server = AgentStakingServer(settings)
    await server.start()
    assert server.keys is not None
    _, secret = await server.keys.create(display_name="liquid agent", scopes=["staking"])
    channel: grpc.aio.Channel = keyed_channel(
        f"127.0.0.1:{server.port}", secret, ReceiptCheck(published_keys(server))
    )
    yield Pools(
        server=server,
        localnet=localnet,
        staking=staking_pb2_grpc.StakingServiceStub(channel),
        rpc=rpc,
        fee_wallet=fee_wallet,
        pools=installed,
    )
    await channel.close()
    await server.stop(0)
    await rpc.close()
    await localnet.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
