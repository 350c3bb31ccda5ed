"""The TypeScript agent (examples/typescript) stakes against a real server.

It is compiled with the strict tsc of its package-lock and run with node: it
creates its keypair, decodes a refusal's rich details, builds, signs with
@solana/kit, submits, watches and lists its positions; a second run loads the
same keypair. CI installs its node_modules (`npm ci`): missing there, the test
fails rather than skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
from pathlib import Path

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.localnet import LocalnetServer
from tests._require import unavailable

from .conftest import Service

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "typescript"


def _tools() -> tuple[str, Path]:
    node = shutil.which("node")
    tsc = EXAMPLE / "node_modules" / ".bin" / "tsc"
    if node is None or not tsc.exists():
        unavailable(
            "node or examples/typescript/node_modules is missing: "
            "run npm ci --prefix examples/typescript"
        )
    return node, tsc


async def _run(*command: str, env: dict[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=EXAMPLE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, (out + err).decode()
    return out.decode()


async def test_typescript_agent_stakes(
    service: Service, localnet: LocalnetServer, tmp_path: Path
) -> None:
    node, tsc = _tools()
    # Built where node finds the package's node_modules (dist/ is not committed).
    await _run(str(tsc), "-p", "tsconfig.json")
    build = EXAMPLE / "dist"
    keypair = tmp_path / "agent-keypair.json"
    env = {**os.environ, "MY_KEY": service.staking_secret}
    command = (
        node,
        str(build / "agent.js"),
        "--grpc",
        service.address,
        "--rpc",
        localnet.url,
        "--keypair",
        str(keypair),
        "--api-key-env",
        "MY_KEY",
    )
    first = await _run(*command, env=env)
    assert f"keypair: created {keypair}" in first
    # The refusal, decoded from google.rpc details.
    assert "refused: INVALID_ARGUMENT: amount_lamports 1000 is below" in first
    assert "refused: reason=BELOW_MINIMUM_DELEGATION domain=agentstaking.v1" in first
    assert "refused: hint: Stake at least the minimum delegation" in first
    assert "refused: field amount_lamports:" in first
    assert "Stake.DelegateStake" in first
    assert "watch: TRANSACTION_STATE_CONFIRMED" in first or "FINALIZED" in first
    result = json.loads(first.strip().splitlines()[-1])

    # The keypair file is solana-keygen's format, and the wallet the agent staked from.
    wallet = Keypair.from_bytes(bytes(json.loads(keypair.read_text())))
    assert str(wallet.pubkey()) == result["wallet"]
    account = (
        await service.rpc.get_account_info(Pubkey.from_string(result["stake_account"]))
    ).value
    assert account is not None
    data = bytes(account.data)
    assert Pubkey(data[44:76]) == wallet.pubkey()  # withdrawer: the agent's wallet
    assert str(Pubkey(data[124:156])) == service.vote_account
    assert struct.unpack_from("<Q", data, 156)[0] == 2_000_000_000
    assert f"position {result['stake_account']}: STAKE_ACCOUNT_STATE_ACTIVATING" in first

    # Run again: the same keypair is loaded, and it stakes into a second account.
    second = await _run(*command, env=env)
    assert f"keypair: loaded {keypair}" in second
    again = json.loads(second.strip().splitlines()[-1])
    assert again["wallet"] == result["wallet"]
    assert again["stake_account"] != result["stake_account"]
    other = (await service.rpc.get_account_info(Pubkey.from_string(again["stake_account"]))).value
    assert other is not None and Pubkey(bytes(other.data)[44:76]) == wallet.pubkey()
