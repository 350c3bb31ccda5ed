"""What relay tests do over and over: make signed transactions, submit, watch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc
from agentstaking.v1 import staking_pb2, staking_pb2_grpc, types_pb2
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Processed
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.core.encoders import memo, system_transfer


async def latest_blockhash(rpc: AsyncClient) -> Hash:
    return (await rpc.get_latest_blockhash(Processed)).value.blockhash


def signed(
    payer: Keypair,
    instructions: Sequence[Instruction],
    blockhash: Hash,
    *,
    signers: Sequence[Keypair] = (),
    legacy: bool = False,
) -> VersionedTransaction:
    """A transaction paid and signed by `payer` (plus `signers`)."""
    keys = [payer, *signers]
    if legacy:
        message: Message | MessageV0 = Message.new_with_blockhash(
            list(instructions), payer.pubkey(), blockhash
        )
    else:
        message = MessageV0.try_compile(payer.pubkey(), list(instructions), [], blockhash)
    return VersionedTransaction(message, keys)


def transfer(
    payer: Keypair,
    blockhash: Hash,
    *,
    lamports: int = 1_000_000,
    to: Pubkey | None = None,
    note: str = "",
    legacy: bool = False,
) -> VersionedTransaction:
    """A System transfer from `payer` (with an optional memo to make it unique)."""
    instructions = [
        system_transfer(
            source=payer.pubkey(), destination=to or Keypair().pubkey(), lamports=lamports
        )
    ]
    if note:
        instructions.append(memo(note))
    return signed(payer, instructions, blockhash, legacy=legacy)


async def submit(
    stub: staking_pb2_grpc.StakingServiceAsyncStub,
    tx: VersionedTransaction | bytes,
    *,
    commitment: types_pb2.Commitment.ValueType = types_pb2.COMMITMENT_UNSPECIFIED,
    skip_preflight: bool = False,
    timeout: float = 20.0,
) -> staking_pb2.SubmitTransactionResponse:
    return await stub.SubmitTransaction(
        staking_pb2.SubmitTransactionRequest(
            transaction=bytes(tx), commitment=commitment, skip_preflight=skip_preflight
        ),
        timeout=timeout,
    )


async def watch_all(
    stub: staking_pb2_grpc.StakingServiceAsyncStub,
    signature: str,
    *,
    commitment: types_pb2.Commitment.ValueType = types_pb2.COMMITMENT_UNSPECIFIED,
    timeout: float = 20.0,
) -> list[types_pb2.TransactionStatus]:
    """Every status the stream sends until it ends."""
    call = stub.WatchTransaction(
        staking_pb2.WatchTransactionRequest(signature=signature, commitment=commitment),
        timeout=timeout,
    )
    return [message.status async for message in call]


def states(statuses: Sequence[types_pb2.TransactionStatus]) -> list[str]:
    return [
        types_pb2.TransactionState.Name(s.state).removeprefix("TRANSACTION_STATE_")
        for s in statuses
    ]


async def eventually(check: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait until `check()` holds (polling), or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def code_and_reason(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    from tests.api._helpers import rich_details

    info = rich_details(error)["ErrorInfo"]
    return error.code(), info.reason
