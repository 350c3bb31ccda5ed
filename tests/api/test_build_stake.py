"""BuildStakeTransaction over gRPC, signed like an agent signs, executed on the localnet."""

from __future__ import annotations

import json

import pytest
from agentstaking.v1 import staking_pb2, types_pb2
from solana.rpc.commitment import Processed
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.core.accounts import decode_stake_account
from service.core.plans import compute_units_with_margin
from service.core.programs import STAKE_PROGRAM

from ._helpers import balance, make_nonce_account, send, sign
from .conftest import FEE_BPS, SOL, Service

VERSIONS = {
    "v0": types_pb2.TRANSACTION_VERSION_V0,
    "legacy": types_pb2.TRANSACTION_VERSION_LEGACY,
}


@pytest.mark.parametrize("durable_nonce", [False, True], ids=["blockhash", "nonce"])
@pytest.mark.parametrize("version", list(VERSIONS))
async def test_stake_transaction_executes(
    service: Service, wallet: Keypair, version: str, durable_nonce: bool
) -> None:
    amount = 3 * SOL + 123_456_789
    options = types_pb2.TransactionOptions(
        version=VERSIONS[version], compute_unit_price_micro_lamports=1_000, memo="agent stake"
    )
    if durable_nonce:
        nonce = await make_nonce_account(service.rpc, wallet, wallet.pubkey())
        options.durable_nonce.nonce_account = str(nonce)
    wallet_before = await balance(service.rpc, wallet.pubkey())
    fee_before = await balance(service.rpc, service.fee_wallet.pubkey())

    response = await service.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            amount_lamports=amount,
            vote_account=service.vote_account,
            options=options,
        )
    )
    prepared = response.transaction
    assert list(prepared.required_signers) == [str(wallet.pubkey())]
    assert prepared.version == VERSIONS[version]
    if durable_nonce:
        assert prepared.last_valid_block_height == 0
        assert prepared.instructions[0].type == "AdvanceNonceAccount"
    fees = prepared.fees
    assert fees.service_fee_bps == FEE_BPS
    assert fees.service_fee_lamports == amount * FEE_BPS // 10_000
    assert fees.fee_recipient == str(service.fee_wallet.pubkey())
    assert fees.total_debit_lamports == (
        amount
        + fees.rent_exempt_reserve_lamports
        + fees.service_fee_lamports
        + fees.network_fee_lamports
        + fees.priority_fee_lamports
    )
    assert fees.priority_fee_lamports == -(-1_000 * prepared.compute_unit_limit // 1_000_000)

    await send(service.rpc, sign(prepared, wallet))

    # The stake account lives at the seed-derived address, delegated with exactly the amount.
    address = Pubkey.create_with_seed(wallet.pubkey(), response.seed, STAKE_PROGRAM)
    assert str(address) == response.stake_account
    account = (await service.rpc.get_account_info(address, Processed)).value
    assert account is not None and account.owner == STAKE_PROGRAM
    state = decode_stake_account(bytes(account.data))
    assert state.delegation is not None
    assert str(state.delegation.voter) == service.vote_account
    assert state.delegation.stake == amount
    assert account.lamports == amount + fees.rent_exempt_reserve_lamports
    # The fee wallet got exactly the service fee; the wallet paid exactly the total.
    fee_after = await balance(service.rpc, service.fee_wallet.pubkey())
    assert fee_after - fee_before == fees.service_fee_lamports
    wallet_after = await balance(service.rpc, wallet.pubkey())
    assert wallet_before - wallet_after == fees.total_debit_lamports


async def test_request_id_is_idempotent(service: Service, wallet: Keypair) -> None:
    request = staking_pb2.BuildStakeTransactionRequest(
        wallet=str(wallet.pubkey()), amount_lamports=2 * SOL, request_id="order-42"
    )
    first = await service.staking.BuildStakeTransaction(request)
    second = await service.staking.BuildStakeTransaction(request)
    assert first.seed == second.seed and first.stake_account == second.stake_account
    assert [i.data for i in first.transaction.instructions] == [
        i.data for i in second.transaction.instructions
    ]
    other = await service.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()), amount_lamports=2 * SOL
        )
    )
    assert other.stake_account != first.stake_account


async def test_default_vote_account_and_separate_stake_authority(
    service: Service, wallet: Keypair
) -> None:
    authority = Keypair().pubkey()
    response = await service.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            amount_lamports=SOL,
            stake_authority=str(authority),
            options=types_pb2.TransactionOptions(priority_level=types_pb2.PRIORITY_LEVEL_NONE),
        )
    )
    assert response.vote_account == service.vote_account
    assert list(response.transaction.required_signers) == [str(wallet.pubkey())]
    await send(service.rpc, sign(response.transaction, wallet))
    account = (
        await service.rpc.get_account_info(Pubkey.from_string(response.stake_account), Processed)
    ).value
    assert account is not None
    state = decode_stake_account(bytes(account.data))
    assert state.meta is not None
    assert state.meta.authorized.staker == authority
    assert state.meta.authorized.withdrawer == wallet.pubkey()


async def test_simulation_reports_balance_changes(service: Service, wallet: Keypair) -> None:
    response = await service.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            amount_lamports=2 * SOL,
            options=types_pb2.TransactionOptions(simulate=True),
        )
    )
    simulation = response.transaction.simulation
    assert 0 < simulation.compute_units <= response.transaction.compute_unit_limit
    changes = {c.address: c for c in simulation.balance_changes}
    wallet_change = changes[str(wallet.pubkey())]
    assert -wallet_change.delta_lamports == response.transaction.fees.total_debit_lamports
    assert changes[response.stake_account].post_lamports == (
        2 * SOL + response.transaction.fees.rent_exempt_reserve_lamports
    )
    assert simulation.logs


async def test_the_simulation_is_of_the_resized_transaction(
    service: Service, wallet: Keypair
) -> None:
    """With simulate and no compute_unit_limit the limit is sized from a first
    simulation, which changes the priority fee; the simulation returned is of the
    resized bytes: the wallet's balance change is the receipt's total debit, which is
    what the signed transaction then takes."""
    price = 1_000_000  # a lamport per unit: every thousand units of limit is visible
    request = staking_pb2.BuildStakeTransactionRequest(
        wallet=str(wallet.pubkey()),
        amount_lamports=2 * SOL,
        options=types_pb2.TransactionOptions(compute_unit_price_micro_lamports=price),
    )
    measured = (await service.staking.BuildStakeTransaction(request)).transaction
    request.options.simulate = True
    response = await service.staking.BuildStakeTransaction(request)
    prepared = response.transaction
    simulation = prepared.simulation
    assert prepared.compute_unit_limit == compute_units_with_margin(simulation.compute_units)
    assert prepared.compute_unit_limit < measured.compute_unit_limit
    fees = prepared.fees
    assert fees.priority_fee_lamports == prepared.compute_unit_limit  # 1 lamport per unit
    assert fees.priority_fee_lamports < measured.fees.priority_fee_lamports

    receipt = json.loads(prepared.receipt.payload)
    changes = {c.address: c for c in simulation.balance_changes}
    wallet_change = changes[str(wallet.pubkey())]
    assert -wallet_change.delta_lamports == int(receipt["fees"]["total_debit_lamports"])
    assert -wallet_change.delta_lamports == fees.total_debit_lamports
    assert changes[str(service.fee_wallet.pubkey())].delta_lamports == fees.service_fee_lamports
    assert changes[response.stake_account].post_lamports == (
        2 * SOL + fees.rent_exempt_reserve_lamports
    )

    await send(service.rpc, sign(prepared, wallet))
    assert await balance(service.rpc, wallet.pubkey()) == wallet_change.post_lamports


async def test_network_info(service: Service) -> None:
    info = await service.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    assert info.minimum_delegation_lamports == SOL
    assert info.stake_rent_exempt_reserve_lamports == 2_282_880
    assert info.fee_policy.service_fee_bps == FEE_BPS
    assert info.fee_policy.fee_recipient == str(service.fee_wallet.pubkey())
    assert info.default_vote_account == service.vote_account
    assert info.slots_in_epoch == 432_000 and info.slot_index < info.slots_in_epoch
    assert info.genesis_hash and info.cluster_version
    assert info.epoch_time_remaining.seconds > 0
