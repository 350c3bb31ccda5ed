"""The grpcurl examples of docs/stake-management.md, run as written with the real
grpcurl (placeholders filled in) against a real server: each answer is read back as
the response message, signed by the wallet and the signers it lists, and executed on
the localnet."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from agentstaking.v1 import stake_management_pb2 as sm
from agentstaking.v1 import staking_pb2
from google.protobuf import json_format, message_factory
from google.protobuf.message import Message
from solders.keypair import Keypair

from tests.api.test_stake_management_docs import DOC, EXAMPLE, SERVICE

from .conftest import SOL, Lifecycle

GRPCURL = Path(sys.executable).parent / "grpcurl"


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), "-max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _call(address: str, key: str, method: str, body: str) -> Message:
    """Run grpcurl as the guide does; its JSON answer as the response message."""
    done = await asyncio.to_thread(
        _grpcurl,
        "-plaintext",
        "-H",
        f"authorization: Bearer {key}",
        "-d",
        body,
        address,
        f"agentstaking.v1.StakingService/{method}",
    )
    assert done.returncode == 0, done.stderr
    descriptor = SERVICE.methods_by_name[method].output_type
    response = message_factory.GetMessageClass(descriptor)()
    json_format.Parse(done.stdout, response)
    return response


async def test_the_guides_grpcurl_examples_build_transactions_that_execute(
    lifecycle: Lifecycle,
) -> None:
    lc = lifecycle
    assert lc.server.keys is not None
    _, key = await lc.server.keys.create(display_name="grpcurl", scopes=["staking"])
    address = f"127.0.0.1:{lc.server.port}"
    wallet = await lc.wallet(50)
    first, second, *_ = await lc.validators()
    a = await lc.stake(wallet, 6 * SOL, vote=first)
    b = await lc.stake(wallet, 2 * SOL, vote=first)
    await lc.advance_epochs(1)
    staker, custodian = Keypair(), Keypair()
    values = {
        "<your wallet address>": str(wallet.pubkey()),
        "<stake account A>": a,
        "<stake account B>": b,
        "<the new stake authority>": str(staker.pubkey()),
        "<custodian address>": str(custodian.pubkey()),
        "<vote account of the new validator>": second,
    }
    # Which account each call's "<stake account>" is, and who else signs.
    plan = {
        "BuildSplitTransaction": (a, ()),
        "BuildMoveStakeTransaction": (a, ()),
        "BuildAuthorizeTransaction": (b, (staker,)),
        "BuildSetLockupTransaction": (b, (custodian,)),
        "BuildRedelegateTransaction": (a, ()),
    }
    examples = EXAMPLE.findall(DOC)
    assert [method for _, _, method in examples] == list(plan)
    responses: dict[str, Message] = {}
    for body, target, method in examples:
        assert target == "127.0.0.1:50051"  # the default address of `agent-staking serve`
        account, cosigners = plan[method]
        for placeholder, value in {**values, "<stake account>": account}.items():
            body = body.replace(placeholder, value)
        assert "<" not in body, body
        response = await _call(address, key, method, body)
        prepared = getattr(response, "transaction")  # noqa: B009 - every build response has one
        assert prepared.simulation.compute_units > 0
        await lc.execute_as_promised(prepared, wallet, *cosigners)
        responses[method] = response

    split = responses["BuildSplitTransaction"]
    assert isinstance(split, sm.BuildSplitTransactionResponse)
    positions = {p.address: p for p in (await lc.positions(wallet)).stake_accounts}
    assert positions[split.new_stake_account].active_lamports == 2 * SOL
    assert positions[b].active_lamports == 3 * SOL  # 1 SOL moved in from A
    assert positions[b].staker == str(staker.pubkey())
    assert positions[b].lockup.custodian == str(custodian.pubkey())
    assert positions[a].state == staking_pb2.STAKE_ACCOUNT_STATE_DEACTIVATING
    redelegate = responses["BuildRedelegateTransaction"]
    assert isinstance(redelegate, sm.BuildRedelegateTransactionResponse)
    moved = positions[redelegate.new_stake_account]
    assert (moved.voter, moved.activating_lamports) == (second, 3 * SOL)
