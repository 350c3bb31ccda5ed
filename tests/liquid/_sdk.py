"""The official JavaScript SDKs (tests/js) as an oracle: @solana/spl-stake-pool,
@solana/spl-token and @solana/web3.js, run by node on the same inputs as our code.

`.ci/run` installs them (`npm ci --prefix tests/js`). Missing, the tests that need them
are skipped locally (with the command that installs them) and fail in CI (`CI=true`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from solders.instruction import Instruction

from tests._require import unavailable

JS = Path(__file__).resolve().parents[1] / "js"
ORACLE = JS / "oracle.cjs"


def _node() -> str:
    node = shutil.which("node")
    installed = (JS / "node_modules" / "@solana" / "spl-stake-pool" / "package.json").is_file()
    if node is None or not installed:
        unavailable("the JavaScript SDK oracle is not installed: run `npm ci --prefix tests/js`")
    return node


def _answers(
    requests: list[dict[str, Any]], returncode: int | None, out: bytes, err: bytes
) -> list[Any]:
    assert returncode == 0, err.decode(errors="replace")
    answers = json.loads(out)
    assert len(answers) == len(requests)
    return list(answers)


def oracle(requests: list[dict[str, Any]]) -> list[Any]:
    """Answers of the SDK oracle, in order (``{"error": ...}`` where the SDK threw)."""
    import subprocess

    done = subprocess.run(
        [_node(), str(ORACLE)],
        input=json.dumps(requests).encode(),
        capture_output=True,
        timeout=120,
    )
    return _answers(requests, done.returncode, done.stdout, done.stderr)


async def oracle_async(requests: list[dict[str, Any]]) -> list[Any]:
    """`oracle` without blocking the event loop (for requests that call the localnet
    this process serves)."""
    process = await asyncio.create_subprocess_exec(
        _node(),
        str(ORACLE),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(json.dumps(requests).encode()), 120)
    return _answers(requests, process.returncode, out, err)


def as_json(ix: Instruction) -> dict[str, Any]:
    """An instruction in the oracle's shape."""
    return {
        "programId": str(ix.program_id),
        "keys": [[str(m.pubkey), m.is_signer, m.is_writable] for m in ix.accounts],
        "data": bytes(ix.data).hex(),
    }
