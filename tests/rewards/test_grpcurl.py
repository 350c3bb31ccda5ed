"""The documented grpcurl commands (docs/rewards.md), run with the real grpcurl through
reflection: the JSON an operator or an agent sees."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.lifecycle.conftest import Lifecycle

from .conftest import TIP, Staked

GRPCURL = Path(sys.executable).parent / "grpcurl"


async def _grpcurl(lc: Lifecycle, key: str, method: str, body: dict[str, Any]) -> Any:
    args = [
        str(GRPCURL),
        "-max-time",
        "20",
        "-plaintext",
        "-H",
        f"authorization: Bearer {key}",
        "-d",
        json.dumps(body),
        f"127.0.0.1:{lc.server.port}",
        f"agentstaking.v1.StakingService/{method}",
    ]
    done = await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_the_documented_commands(rewards: Lifecycle, staked: Staked) -> None:
    lc, s = rewards, staked
    assert lc.server.keys is not None
    _, key = await lc.server.keys.create(display_name="operator shell", scopes=["staking"])
    wallet = str(s.wallet.pubkey())

    answer = await _grpcurl(lc, key, "GetRewards", {"wallet": wallet})
    account = s.accounts["a"]
    mine = [r for r in answer["rewards"] if r["stakeAccount"] == account]
    assert [r["epoch"] for r in mine] == [str(s.delegated_in + 1), str(s.tipped_in)]
    assert mine[-1]["otherCreditsLamports"] == str(TIP)  # uint64 as a JSON string
    assert all(0 < r["impliedApy"] < 1 and r["commissionPercent"] == 5 for r in mine)
    assert int(answer["totalAmountLamports"]) == sum(
        int(r["amountLamports"]) for r in answer["rewards"]
    )

    named = await _grpcurl(
        lc,
        key,
        "GetRewards",
        {
            "stake_accounts": [account],
            "start_epoch": str(s.delegated_in),
            "end_epoch": str(s.tipped_in),
            "page_size": 100,
        },
    )
    assert named["rewards"] == mine

    estimate = await _grpcurl(
        lc, key, "EstimateRewards", {"amount_lamports": "10000000000", "days": 365}
    )
    assert estimate["epochs"] == int(estimate["assumptions"]["epochsPerYear"])
    assert int(estimate["projectedBalanceLamports"]) == 10_000_000_000 + int(
        estimate["projectedRewardsLamports"]
    )
    assert estimate["assumptions"]["compoundsPerEpoch"] is True

    listed = await _grpcurl(lc, key, "ListValidators", {"min_estimated_apy": 0.06})
    assert listed["validators"]
    assert all(v["estimatedApy"] >= 0.06 for v in listed["validators"])
    assert any(r.startswith("estimated APY") for r in listed["validators"][0]["reasons"])
