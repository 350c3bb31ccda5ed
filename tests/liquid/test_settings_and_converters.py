"""AGENT_STAKING_STAKE_POOLS in its forms, and the liquid staking converters (no server)."""

from __future__ import annotations

import pytest
from agentstaking.v1 import liquid_staking_pb2 as pb
from pydantic import ValidationError

from service.api._liquid_converters import (
    liquid_stake_request_to_domain,
    liquid_unstake_request_to_domain,
)
from service.config import Settings, StakePoolSetting
from service.core.errors import InvalidArgumentError
from service.core.plans import LiquidUnstakeMethod

JITO = "Jito4APyf642JPZPx3hGc6WWJ8zPKtRbRs4P815Awbb"
BLAZE = "stk9ApL5HeVAwPLr3TLhDXdZS8ptVu7zp6ov8HFDuMi"
EXPECTED = [
    StakePoolSetting(address=JITO, label="JitoSOL"),
    StakePoolSetting(address=BLAZE, label="bSOL"),
]


@pytest.mark.parametrize(
    "value",
    [
        f"JitoSOL={JITO},{BLAZE}=bSOL",
        f" JitoSOL = {JITO} , bSOL={BLAZE} ",
        f'[{{"address": "{JITO}", "label": "JitoSOL"}}, {{"address": "{BLAZE}", "label": "bSOL"}}]',
        f'{{"{JITO}": "JitoSOL", "{BLAZE}": "bSOL"}}',
    ],
)
def test_stake_pools_from_the_environment(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_STAKING_STAKE_POOLS", value)
    assert Settings().stake_pools == EXPECTED


def test_stake_pools_without_labels_and_bad_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_STAKING_STAKE_POOLS", JITO)
    assert Settings().stake_pools == [StakePoolSetting(address=JITO)]
    monkeypatch.setenv("AGENT_STAKING_STAKE_POOLS", "")
    assert Settings().stake_pools == []
    for bad in ("JitoSOL=not-an-address", f"{JITO},{JITO}", f'[{{"address": "{JITO}", "x": 1}}]'):
        monkeypatch.setenv("AGENT_STAKING_STAKE_POOLS", bad)
        with pytest.raises(ValidationError):
            Settings()


def test_request_converters_keep_unset_bounds_unset() -> None:
    request = pb.BuildLiquidStakeTransactionRequest(wallet="w", stake_pool="p", amount_lamports=5)
    assert liquid_stake_request_to_domain(request).min_pool_tokens is None
    request.min_pool_tokens = 0  # set to 0: a bound of 0, not none
    assert liquid_stake_request_to_domain(request).min_pool_tokens == 0
    unstake = pb.BuildLiquidUnstakeTransactionRequest(wallet="w", stake_pool="p", pool_tokens=7)
    params = liquid_unstake_request_to_domain(unstake)
    assert (params.method, params.min_lamports, params.pool_tokens) == (None, None, 7)
    unstake.method = pb.LIQUID_UNSTAKE_METHOD_WITHDRAW_STAKE
    unstake.min_lamports = 3
    params = liquid_unstake_request_to_domain(unstake)
    assert (params.method, params.min_lamports) == (LiquidUnstakeMethod.WITHDRAW_STAKE, 3)
    unstake.method = 99  # type: ignore[assignment]
    with pytest.raises(InvalidArgumentError):
        liquid_unstake_request_to_domain(unstake)
