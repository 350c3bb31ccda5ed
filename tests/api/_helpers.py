"""What an agent does with a built transaction: sign it locally, send it, wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
from agentstaking.v1 import types_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Processed
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import create_nonce_account
from solders.transaction import VersionedTransaction

from service.core import StakeContext, StakeRequest
from service.core.plans import _stake as stake_plan

Message_ = TypeVar("Message_", bound=Message)


def stake_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The compute-unit price of each stake request the plan checks from now on (the
    server runs in this process)."""
    checked: list[int] = []
    check = stake_plan._stake_parts

    def counted(request: StakeRequest, context: StakeContext) -> Any:
        checked.append(request.options.compute_unit_price_micro_lamports)
        return check(request, context)

    monkeypatch.setattr(stake_plan, "_stake_parts", counted)
    return checked


def sign(prepared: types_pb2.PreparedTransaction, *signers: Keypair) -> VersionedTransaction:
    """Sign the returned message bytes with the agent's own keys, in signer order."""
    unsigned = VersionedTransaction.from_bytes(prepared.transaction)
    by_key = {str(k.pubkey()): k for k in signers}
    signatures = [by_key[s].sign_message(prepared.message) for s in prepared.required_signers]
    return VersionedTransaction.populate(unsigned.message, signatures)


async def confirm(rpc: AsyncClient, signature: Signature) -> None:
    for _ in range(300):
        status = (await rpc.get_signature_statuses([signature])).value[0]
        if status is not None:
            assert status.err is None, status.err
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{signature} did not land")


async def send(rpc: AsyncClient, tx: VersionedTransaction) -> None:
    signature = (await rpc.send_raw_transaction(bytes(tx))).value
    await confirm(rpc, signature)


async def balance(rpc: AsyncClient, key: Pubkey | str) -> int:
    address = key if isinstance(key, Pubkey) else Pubkey.from_string(key)
    return (await rpc.get_balance(address, Processed)).value


async def make_nonce_account(rpc: AsyncClient, payer: Keypair, authority: Pubkey) -> Pubkey:
    """A durable nonce account controlled by `authority`, advanced past its creation slot."""
    nonce = Keypair()
    rent = (await rpc.get_minimum_balance_for_rent_exemption(80)).value
    blockhash = (await rpc.get_latest_blockhash(Processed)).value.blockhash
    message = MessageV0.try_compile(
        payer.pubkey(),
        list(create_nonce_account(payer.pubkey(), nonce.pubkey(), authority, rent)),
        [],
        blockhash,
    )
    await send(rpc, VersionedTransaction(message, [payer, nonce]))
    # A nonce can only be advanced once the blockhash moved on: wait one slot.
    await asyncio.sleep(0.25)
    return nonce.pubkey()


def rich_details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """The google.rpc details in an error's trailers, by type."""
    status: status_pb2.Status | None = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    assert status.code == error.code().value[0]
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            error_details_pb2.QuotaFailure,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    return found


def attached(error: grpc.aio.AioRpcError, kind: type[Message_]) -> Message_:
    """The message of type ``kind`` an error carries in its details (an intent's
    original response); AssertionError when it has none."""
    status: status_pb2.Status | None = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    raise AssertionError(f"no {kind.DESCRIPTOR.full_name} in the error's details")


async def refused_once_landed(
    build: Callable[[], Awaitable[Any]], *, attempts: int = 100
) -> grpc.aio.AioRpcError:
    """Repeat a build with the request_id of a transaction just sent until the
    service refuses it: it answers with the same transaction while the landing is not
    confirmed yet, then ALREADY_EXISTS (or the error the test expects)."""
    for _ in range(attempts):
        try:
            await build()
        except grpc.aio.AioRpcError as error:
            return error
        await asyncio.sleep(0.05)
    raise AssertionError(f"still built after {attempts} tries")
