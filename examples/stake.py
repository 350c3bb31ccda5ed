"""Stake SOL through agent-staking without handing over a key.

The agent keeps its keypair; the service returns an unsigned transaction that
the agent inspects, signs locally with one signature, and submits.

    python examples/stake.py --grpc 127.0.0.1:50051 --rpc http://127.0.0.1:8899
"""

from __future__ import annotations

import argparse
import asyncio
import struct

import grpc
from agentstaking.v1 import staking_pb2, staking_pb2_grpc
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

LAMPORTS_PER_SOL = 1_000_000_000


async def main(grpc_address: str, rpc_url: str, api_key: str) -> None:
    wallet = Keypair()  # the agent's own key: it never leaves this process
    rpc = AsyncClient(rpc_url, commitment=Confirmed)
    # On the localnet the faucet funds the wallet; on a real cluster it already has SOL.
    await rpc.confirm_transaction(
        (await rpc.request_airdrop(wallet.pubkey(), 5 * LAMPORTS_PER_SOL)).value
    )

    metadata = [("authorization", f"Bearer {api_key}")] if api_key else []
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        staking = staking_pb2_grpc.StakingServiceStub(channel)
        built = await staking.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(wallet.pubkey()), amount_lamports=2 * LAMPORTS_PER_SOL
            ),
            metadata=metadata,
        )

    prepared = built.transaction
    print(f"stake account {built.stake_account} -> validator {built.vote_account}")
    for instruction in prepared.instructions:
        print(f"  {instruction.program_name}.{instruction.type}: {instruction.description}")
    print(
        f"  total debit: {prepared.fees.total_debit_lamports} lamports "
        f"(service fee {prepared.fees.service_fee_lamports})"
    )

    # Sign exactly the message bytes we were given, with our one signature.
    assert list(prepared.required_signers) == [str(wallet.pubkey())]
    unsigned = VersionedTransaction.from_bytes(prepared.transaction)
    signed = VersionedTransaction.populate(
        unsigned.message, [wallet.sign_message(prepared.message)]
    )
    signature = (await rpc.send_raw_transaction(bytes(signed))).value
    await rpc.confirm_transaction(signature, Confirmed)

    account = (await rpc.get_account_info(Pubkey.from_string(built.stake_account))).value
    assert account is not None
    data = bytes(account.data)
    voter = Pubkey(data[124:156])
    stake, activation_epoch = struct.unpack_from("<QQ", data, 156)
    print(f"delegated {stake} lamports to {voter}, activating in epoch {activation_epoch}")
    await rpc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grpc", default="127.0.0.1:50051", help="agent-staking address")
    parser.add_argument("--rpc", default="http://127.0.0.1:8899", help="Solana JSON-RPC URL")
    parser.add_argument("--api-key", default="", help="API key (ask_...)")
    args = parser.parse_args()
    asyncio.run(main(args.grpc, args.rpc, args.api_key))
