"""The README's Python example runs as written against a real server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from service.localnet import LocalnetServer

from .conftest import Service

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "stake.py"


async def test_example_stakes_with_one_signature(
    service: Service, localnet: LocalnetServer
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--grpc",
        service.address,
        "--rpc",
        localnet.url,
        "--api-key",
        service.staking_secret,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert "Stake.DelegateStake" in text
    assert f"delegated 2000000000 lamports to {service.vote_account}" in text
