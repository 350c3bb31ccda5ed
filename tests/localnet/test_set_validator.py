"""localnet_setValidator: a validator stops or resumes voting, or changes its commission,
and getVoteAccounts says so (a localnet of its own: the session's keeps its validators)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from service.localnet import LocalnetConfig, LocalnetServer

from .conftest import RawRpc


@pytest.fixture
async def raw_own() -> AsyncIterator[RawRpc]:
    server = LocalnetServer(LocalnetConfig(slot_duration=0.1, validators=3))
    await server.start()
    async with aiohttp.ClientSession() as session:
        yield RawRpc(session, server.url)
    await server.stop()


def _by_vote(answer: Any) -> dict[str, tuple[bool, int]]:
    found = {}
    for delinquent, group in ((False, answer["current"]), (True, answer["delinquent"])):
        for entry in group:
            found[entry["votePubkey"]] = (delinquent, entry["commission"])
    return found


async def test_a_validator_turns_delinquent_recovers_and_changes_commission(
    raw_own: RawRpc,
) -> None:
    info = await raw_own.result("localnet_info")
    vote = info["validators"][0]["votePubkey"]
    commission = info["validators"][0]["commission"]
    assert _by_vote(await raw_own.result("getVoteAccounts"))[vote] == (False, commission)

    answer = await raw_own.result("localnet_setValidator", vote, {"delinquent": True})
    assert answer == {"votePubkey": vote, "delinquent": True, "commission": commission}
    assert _by_vote(await raw_own.result("getVoteAccounts"))[vote] == (True, commission)

    await raw_own.result("localnet_setValidator", vote, {"delinquent": False, "commission": 42})
    assert _by_vote(await raw_own.result("getVoteAccounts"))[vote] == (False, 42)
    info = await raw_own.result("localnet_info")
    assert info["validators"][0]["commission"] == 42


@pytest.mark.parametrize(
    "params",
    [
        ["11111111111111111111111111111111", {"delinquent": True}],
        ["not-a-key"],
        [None, {}],
    ],
)
async def test_bad_validator_changes_are_invalid_params(raw_own: RawRpc, params: list[Any]) -> None:
    answer = await raw_own.call("localnet_setValidator", *params)
    assert answer["error"]["code"] == -32602, answer


async def test_commission_above_100_is_refused(raw_own: RawRpc) -> None:
    vote = (await raw_own.result("localnet_info"))["validators"][1]["votePubkey"]
    answer = await raw_own.call("localnet_setValidator", vote, {"commission": 101})
    assert answer["error"]["code"] == -32602
    answer = await raw_own.call("localnet_setValidator", vote, {"delinquent": "yes"})
    assert answer["error"]["code"] == -32602
