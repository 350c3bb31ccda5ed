"""Transactions for the localnet suites, built with the core's encoders and sent over
JSON-RPC as an agent would."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence

from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from service.core import (
    SeedPurpose,
    seed_from_entropy,
    stake_account_address,
    stake_delegate,
    stake_initialize,
    system_create_account_with_seed,
)
from service.core.programs import STAKE_ACCOUNT_SIZE, STAKE_PROGRAM

from .conftest import RawRpc


async def send(
    raw: RawRpc, payer: Keypair, instructions: Sequence[Instruction], *cosigners: Keypair
) -> str:
    """Sign with a blockhash fetched just now, send, and check that it landed."""
    latest = await raw.result("getLatestBlockhash")
    message = MessageV0.try_compile(
        payer.pubkey(), list(instructions), [], Hash.from_string(latest["value"]["blockhash"])
    )
    tx = VersionedTransaction(message, [payer, *cosigners])
    signature = await raw.result(
        "sendTransaction", base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}
    )
    assert isinstance(signature, str)
    status = (await raw.result("getSignatureStatuses", [signature]))["value"][0]
    assert status is not None and status["err"] is None, status
    return signature


async def create_stake(
    raw: RawRpc,
    payer: Keypair,
    lamports: int,
    *,
    staker: Keypair | None = None,
    withdrawer: Pubkey | None = None,
    vote: Pubkey | None = None,
) -> Pubkey:
    """create_account_with_seed (payer is the base) + Initialize [+ DelegateStake]."""
    staker = staker or payer
    seed = seed_from_entropy(
        purpose=SeedPurpose.STAKE, wallet=payer.pubkey(), entropy=secrets.token_bytes(16)
    )
    address = stake_account_address(base=payer.pubkey(), seed=seed)
    instructions = [
        system_create_account_with_seed(
            payer=payer.pubkey(),
            new_account=address,
            base=payer.pubkey(),
            seed=seed,
            lamports=lamports,
            space=STAKE_ACCOUNT_SIZE,
            owner=STAKE_PROGRAM,
        ),
        stake_initialize(
            stake_account=address,
            staker=staker.pubkey(),
            withdrawer=withdrawer or payer.pubkey(),
        ),
    ]
    if vote is not None:
        instructions.append(
            stake_delegate(stake_account=address, vote_account=vote, staker=staker.pubkey())
        )
    cosigners = [staker] if staker is not payer and vote is not None else []
    await send(raw, payer, instructions, *cosigners)
    return address
