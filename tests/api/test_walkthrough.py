"""The README's five-minute walk-through, run as written: its shell block in bash against
a real `agent-staking serve` (addresses and the key swapped for this run's)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from tests.hostile._server import ROOT, ServeProcess

README = ROOT / "README.md"


def walkthrough() -> str:
    """The README's walk-through: the first shell block after the serve command."""
    text = README.read_text()
    section = text[text.index("## Five minutes") :]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert blocks[0].strip() == "agent-staking serve"
    return str(blocks[1])


async def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    server = await asyncio.to_thread(ServeProcess(tmp_path / "data").start)
    try:
        localnet = server.announcement["solana_rpc"]
        script = walkthrough()
        assert "export KEY=ask_..." in script
        script = script.replace("export KEY=ask_...", f"export KEY={server.keys['staking']}")
        script = script.replace("127.0.0.1:50051", server.address)
        bin_dir = Path(sys.executable).parent
        env = {
            **os.environ,
            # The commands as a newcomer types them: agent-staking, grpcurl and python
            # from the virtualenv; `localnet` commands find the embedded localnet the
            # way they do by default, through its listen address.
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "AGENT_STAKING_LOCALNET_LISTEN": localnet.removeprefix("http://"),
        }
        (tmp_path / "examples").symlink_to(ROOT / "examples")
        result = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        out = result.stdout
        # It staked, the stake became active, then everything came back.
        built = json.loads((tmp_path / "built.json").read_text())
        assert built["transaction"]["simulation"]["computeUnits"]
        assert '"state": "STAKE_ACCOUNT_STATE_ACTIVE"' in out
        wallet = Keypair.from_bytes(bytes(json.loads((tmp_path / "wallet.json").read_text())))
        wallet_address = wallet.pubkey()
        async with AsyncClient(localnet) as client:
            balance = (await client.get_balance(wallet_address)).value
            stake_accounts = (
                await client.get_program_accounts(
                    Pubkey.from_string("Stake11111111111111111111111111111111111111"),
                    encoding="base64",
                )
            ).value
        # 10 SOL in, fees and the service fee out; the 2 SOL and their rent came back.
        assert 9_990_000_000 < balance < 10_000_000_000
        assert all(bytes(wallet_address) not in bytes(a.account.data) for a in stake_accounts)
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.parametrize("command", ["airdrop", "advance-epochs"])
def test_localnet_commands_say_when_there_is_no_localnet(command: str) -> None:
    args = ["11111111111111111111111111111111", "1"] if command == "airdrop" else ["1"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "localnet",
            command,
            *args,
            "--rpc-url",
            "http://127.0.0.1:9",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "cannot reach the Solana endpoint at http://127.0.0.1:9" in result.stderr


@pytest.mark.parametrize("epochs", ["0", "-1", "1001", "one"])
def test_advance_epochs_refuses_a_count_outside_its_range(epochs: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "localnet", "advance-epochs", epochs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # argparse's usage error, before any endpoint is asked.
    assert result.returncode == 2, result
    assert "N must be a whole number from 1 to 1000" in result.stderr
