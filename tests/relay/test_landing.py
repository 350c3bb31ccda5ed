"""Signed transactions relayed to the localnet: landed and watched, or failed and decoded."""

from __future__ import annotations

import grpc
import pytest
from agentstaking.v1 import staking_pb2, types_pb2
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from service.core.accounts import decode_stake_account
from service.core.encoders import memo, stake_deactivate
from service.core.programs import STAKE_PROGRAM, SYSTEM_PROGRAM
from tests.api._helpers import rich_details, send, sign

from ._helpers import latest_blockhash, signed, states, submit, transfer, watch_all
from .conftest import SOL, HeldService, Service

VERSIONS = {"v0": types_pb2.TRANSACTION_VERSION_V0, "legacy": types_pb2.TRANSACTION_VERSION_LEGACY}


async def _build_stake(
    service: Service, wallet: Keypair, amount: int, version: str = "v0"
) -> tuple[staking_pb2.BuildStakeTransactionResponse, bytes]:
    built = await service.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(wallet.pubkey()),
            amount_lamports=amount,
            vote_account=service.vote_account,
            options=types_pb2.TransactionOptions(version=VERSIONS[version]),
        )
    )
    return built, bytes(sign(built.transaction, wallet))


async def test_stake_submitted_watched_to_finalized_and_on_chain(
    held: HeldService, held_wallet: Keypair
) -> None:
    chain = held.chain
    vote_account = str(chain.localnet.chain.validators[0].vote_account)
    amount = 2 * SOL
    built = await held.staking.BuildStakeTransaction(
        staking_pb2.BuildStakeTransactionRequest(
            wallet=str(held_wallet.pubkey()), amount_lamports=amount, vote_account=vote_account
        )
    )
    wire = bytes(sign(built.transaction, held_wallet))
    signature = str(Signature.from_bytes(wire[1:65]))
    # The first send is held back until the watcher is attached, so that it sees every
    # step; the relay's next rebroadcast then lands the transaction.
    chain.proxy.swallow_sends = True
    try:
        response = await submit(held.staking, wire)
        call = held.staking.WatchTransaction(
            staking_pb2.WatchTransactionRequest(signature=signature), timeout=30
        )
        first = await call.read()
    finally:
        chain.proxy.swallow_sends = False
    assert response.signature == signature
    assert not response.already_submitted
    assert response.status.state == types_pb2.TRANSACTION_STATE_SENT
    assert response.status.send_count == 1
    assert response.status.last_valid_block_height >= built.transaction.last_valid_block_height
    assert response.status.HasField("create_time")
    assert isinstance(first, staking_pb2.WatchTransactionResponse)
    seen = [first.status] + [message.status async for message in call]
    assert states(seen) == ["SENT", "PROCESSED", "CONFIRMED", "FINALIZED"]
    final = seen[-1]
    assert final.slot > 0 and final.confirmations == 0 and final.send_count >= 2
    assert not final.HasField("error")

    # The on-chain effect: a delegated stake account holding the amount.
    stake_account = Pubkey.from_string(built.stake_account)
    account = (await chain.rpc.get_account_info(stake_account, Confirmed)).value
    assert account is not None and account.owner == STAKE_PROGRAM
    state = decode_stake_account(bytes(account.data))
    assert state.delegation is not None
    assert str(state.delegation.voter) == vote_account
    assert state.delegation.stake == amount
    # Later lookups answer from the relay's memory, the same outcome.
    looked_up = await held.staking.GetTransactionStatus(
        staking_pb2.GetTransactionStatusRequest(signature=signature)
    )
    assert looked_up.status.state == types_pb2.TRANSACTION_STATE_FINALIZED
    assert looked_up.status.slot == final.slot
    stats = held.relay.stats()
    assert stats.counters["finalized"] >= 1 and stats.time_to_confirm_count >= 1


@pytest.mark.parametrize(
    ("commitment", "expected"),
    [
        (types_pb2.COMMITMENT_PROCESSED, {"PROCESSED", "CONFIRMED", "FINALIZED"}),
        (types_pb2.COMMITMENT_CONFIRMED, {"CONFIRMED", "FINALIZED"}),
    ],
)
async def test_legacy_submit_waits_for_commitment(
    service: Service,
    wallet: Keypair,
    commitment: types_pb2.Commitment.ValueType,
    expected: set[str],
) -> None:
    _, wire = await _build_stake(service, wallet, SOL, version="legacy")
    response = await submit(service.staking, wire, commitment=commitment)
    assert states([response.status])[0] in expected
    assert response.status.slot > 0


async def _staked(service: Service, wallet: Keypair) -> Pubkey:
    built, wire = await _build_stake(service, wallet, SOL)
    await submit(service.staking, wire, commitment=types_pb2.COMMITMENT_CONFIRMED)
    return Pubkey.from_string(built.stake_account)


async def test_failing_instruction_ends_failed_with_decoded_stake_error(
    service: Service, wallet: Keypair
) -> None:
    stake_account = await _staked(service, wallet)
    deactivate = stake_deactivate(stake_account=stake_account, staker=wallet.pubkey())
    first = signed(wallet, [deactivate], await latest_blockhash(service.rpc))
    await submit(service.staking, first, commitment=types_pb2.COMMITMENT_CONFIRMED)

    # Deactivating again fails in the Stake program (instruction 1, after the memo).
    again = signed(wallet, [memo("again"), deactivate], await latest_blockhash(service.rpc))
    response = await submit(service.staking, again, skip_preflight=True)
    assert response.status.state == types_pb2.TRANSACTION_STATE_SENT
    seen = await watch_all(service.staking, response.signature)
    assert states(seen)[-1] == "FAILED"
    error = seen[-1].error
    assert error.kind == "InstructionError"
    assert error.instruction_index == 1
    assert error.program == str(STAKE_PROGRAM)
    assert error.instruction_error == "Custom"
    assert error.custom_code == 2
    assert error.program_error == "AlreadyDeactivated"
    assert error.message.startswith("instruction 1 (Stake Deactivate) failed:")
    assert any("Stake11111111111111111111111111111111111111" in line for line in error.logs)
    # The failed transaction was still processed (and paid its fee): a definite outcome.
    assert seen[-1].slot > 0


async def test_failing_instruction_with_preflight_is_refused_with_the_decoded_error(
    service: Service, wallet: Keypair
) -> None:
    stake_account = await _staked(service, wallet)
    deactivate = stake_deactivate(stake_account=stake_account, staker=wallet.pubkey())
    await submit(
        service.staking,
        signed(wallet, [deactivate], await latest_blockhash(service.rpc)),
        commitment=types_pb2.COMMITMENT_CONFIRMED,
    )
    again = signed(wallet, [memo("preflight"), deactivate], await latest_blockhash(service.rpc))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(service.staking, again)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = rich_details(caught.value)["ErrorInfo"]
    assert info.reason == "PREFLIGHT_FAILED"
    assert info.metadata["error_kind"] == "InstructionError"
    assert info.metadata["instruction_index"] == "1"
    assert info.metadata["program"] == str(STAKE_PROGRAM)
    assert info.metadata["program_error"] == "AlreadyDeactivated"
    assert info.metadata["custom_code"] == "2"
    assert "logs" in info.metadata
    # Refused by preflight: not tracked, never landed.
    with pytest.raises(grpc.aio.AioRpcError) as lookup:
        await service.staking.GetTransactionStatus(
            staking_pb2.GetTransactionStatusRequest(signature=str(again.signatures[0]))
        )
    assert lookup.value.code() == grpc.StatusCode.NOT_FOUND


async def test_overdraft_fails_in_the_system_program(service: Service, wallet: Keypair) -> None:
    overdraft = transfer(wallet, await latest_blockhash(service.rpc), lamports=1_000 * SOL)
    response = await submit(service.staking, overdraft, skip_preflight=True)
    seen = await watch_all(service.staking, response.signature)
    error = seen[-1].error
    assert states(seen)[-1] == "FAILED"
    assert (error.instruction_index, error.program, error.custom_code) == (
        0,
        str(SYSTEM_PROGRAM),
        1,
    )
    assert error.program_error == "ResultWithNegativeLamports"


async def test_status_of_a_transaction_the_relay_never_saw(
    service: Service, wallet: Keypair
) -> None:
    # Sent straight to the cluster, not through the service.
    tx = transfer(wallet, await latest_blockhash(service.rpc), note="direct")
    await send(service.rpc, tx)
    signature = str(tx.signatures[0])

    status = (
        await service.staking.GetTransactionStatus(
            staking_pb2.GetTransactionStatusRequest(signature=signature)
        )
    ).status
    assert status.state in (
        types_pb2.TRANSACTION_STATE_PROCESSED,
        types_pb2.TRANSACTION_STATE_CONFIRMED,
    )
    assert status.slot > 0 and status.send_count == 0
    assert not status.HasField("create_time")
    # It can be watched too; the relay polls it only while somebody watches.
    seen = await watch_all(service.staking, signature, commitment=types_pb2.COMMITMENT_CONFIRMED)
    assert states(seen)[-1] == "CONFIRMED"
    relay = service.server.relay
    assert relay is not None
    assert relay.stats().observed == 0 and relay.watcher_count() == 0


async def test_submitting_a_transaction_that_already_landed_elsewhere(
    service: Service, wallet: Keypair
) -> None:
    tx = transfer(wallet, await latest_blockhash(service.rpc), note="landed elsewhere")
    await send(service.rpc, tx)  # another relay, or the agent itself, got it in

    response = await submit(service.staking, tx)

    assert response.already_submitted
    assert response.status.state in (
        types_pb2.TRANSACTION_STATE_PROCESSED,
        types_pb2.TRANSACTION_STATE_CONFIRMED,
    )
    assert response.status.slot > 0 and response.status.send_count == 0
