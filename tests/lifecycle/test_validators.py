"""ListValidators ranks the localnet's validators with reasons; filters and pagination
work; GetNetworkInfo describes the epoch and the caller's fee policy."""

from __future__ import annotations

import time

import grpc
import pytest
from agentstaking.v1 import staking_pb2, staking_pb2_grpc

from service.keys import KeyPolicy
from tests._grpc_auth import keyed_channel
from tests.api._helpers import rich_details

from .conftest import FEE_BPS, SOL, Lifecycle


async def _all(
    lc: Lifecycle, *, max_commission_percent: int | None = None, include_delinquent: bool = False
) -> list[staking_pb2.Validator]:
    response = await lc.staking.ListValidators(
        staking_pb2.ListValidatorsRequest(
            max_commission_percent=max_commission_percent, include_delinquent=include_delinquent
        )
    )
    assert not response.next_page_token
    assert response.total_size == len(response.validators)
    return list(response.validators)


async def test_validators_are_ranked_with_reasons(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    chain = lc.localnet.chain
    everyone = await _all(lc, include_delinquent=True)
    assert len(everyone) == len(chain.validators)
    assert [v.rank for v in everyone] == list(range(1, len(everyone) + 1))
    scores = [v.score for v in everyone]
    assert scores == sorted(scores, reverse=True)
    # The localnet's last genesis validator stopped voting: delinquent, ranked last.
    *voting, last = everyone
    assert last.delinquent and last.score == 0
    assert last.vote_account == str(chain.validators[-1].vote_account)
    assert any(reason.startswith("delinquent") for reason in last.reasons)
    assert not any(v.delinquent for v in voting)
    by_vote = {str(v.vote_account): v for v in chain.validators}
    total_stake = sum(v.activated_stake_lamports for v in everyone)
    for validator in everyone:
        genesis = by_vote[validator.vote_account]
        assert validator.commission_percent == genesis.commission
        assert validator.node_pubkey == str(genesis.identity)
        assert 0 <= validator.score <= 1
        assert validator.activated_stake_lamports > 0 and validator.last_vote > 0
        assert validator.epoch_credits > 0 or validator.delinquent
        reasons = " | ".join(validator.reasons)
        assert f"commission {validator.commission_percent}%" in reasons
        assert "vote credits" in reasons and "superminority" in reasons
        # The commission part of the score is exact: 0.4 * (1 - commission).
        assert f"+{0.4 * (1 - validator.commission_percent / 100):.3f}" in reasons
        assert validator.featured == (validator.vote_account == lc.featured)
        assert ("featured by the operator" in reasons) == validator.featured
    # The superminority: the fewest largest validators holding over a third of the stake.
    largest = sorted(everyone, key=lambda v: -v.activated_stake_lamports)
    held, members = 0, set()
    for validator in largest:
        if 3 * held > total_stake:
            break
        members.add(validator.vote_account)
        held += validator.activated_stake_lamports
    for validator in everyone:
        inside = any(r.startswith("in the superminority") for r in validator.reasons)
        assert inside == (validator.vote_account in members)
    # Without the filter, delinquent validators are left out.
    assert [v.vote_account for v in await _all(lc)] == [v.vote_account for v in voting]


async def test_filters_and_pages(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    everyone = await _all(lc, include_delinquent=True)
    cheap = await _all(lc, max_commission_percent=5, include_delinquent=True)
    assert cheap and all(v.commission_percent <= 5 for v in cheap)
    assert [v.vote_account for v in cheap] == [
        v.vote_account for v in everyone if v.commission_percent <= 5
    ]
    assert [v.rank for v in cheap] == list(range(1, len(cheap) + 1))
    free = await _all(lc, max_commission_percent=0)
    assert [v.vote_account for v in free] == [
        v.vote_account for v in cheap if v.commission_percent == 0
    ]

    seen: list[staking_pb2.Validator] = []
    token = ""
    while True:
        page = await lc.staking.ListValidators(
            staking_pb2.ListValidatorsRequest(
                page_size=2, page_token=token, include_delinquent=True
            )
        )
        assert len(page.validators) <= 2 and page.total_size == len(everyone)
        seen.extend(page.validators)
        token = page.next_page_token
        if not token:
            break
    assert [v.vote_account for v in seen] == [v.vote_account for v in everyone]
    assert [v.rank for v in seen] == [v.rank for v in everyone]

    # A token only continues the request it came from.
    first = await lc.staking.ListValidators(
        staking_pb2.ListValidatorsRequest(page_size=1, include_delinquent=True)
    )
    for request in (
        staking_pb2.ListValidatorsRequest(page_token=first.next_page_token),
        staking_pb2.ListValidatorsRequest(page_token="not-a-token", include_delinquent=True),
        staking_pb2.ListValidatorsRequest(page_size=-1),
        staking_pb2.ListValidatorsRequest(max_commission_percent=101),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await lc.staking.ListValidators(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rich_details(caught.value)["BadRequest"].field_violations


async def test_default_validator_is_the_best_one_the_key_allows(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    ranked = await _all(lc)
    info = await lc.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    assert info.default_vote_account == ranked[0].vote_account
    # A key restricted to the second-best validator gets that one by default.
    assert lc.server.keys is not None
    _, secret = await lc.server.keys.create(
        display_name="restricted",
        scopes=["staking"],
        policy=KeyPolicy(allowed_vote_accounts=(ranked[1].vote_account,), service_fee_bps=7),
    )
    channel = keyed_channel(f"127.0.0.1:{lc.server.port}", secret)
    try:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        info = await stub.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
        assert info.default_vote_account == ranked[1].vote_account
        assert info.fee_policy.service_fee_bps == 7
        wallet = await lc.wallet(5)
        built = await stub.BuildStakeTransaction(
            staking_pb2.BuildStakeTransactionRequest(
                wallet=str(wallet.pubkey()), amount_lamports=SOL
            )
        )
        assert built.vote_account == ranked[1].vote_account
        assert built.transaction.fees.service_fee_bps == 7
    finally:
        await channel.close()


async def test_network_info(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    info = await lc.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    assert info.epoch == await lc.epoch()
    assert 0 <= info.slot_index < info.slots_in_epoch == 432_000
    assert info.epoch_progress == pytest.approx(info.slot_index / info.slots_in_epoch)
    assert info.minimum_delegation_lamports == SOL
    assert info.stake_rent_exempt_reserve_lamports == 2_282_880
    assert info.fee_policy.service_fee_bps == FEE_BPS
    assert info.fee_policy.fee_recipient == str(lc.fee_wallet.pubkey())
    left = info.epoch_time_remaining.seconds + info.epoch_time_remaining.nanos / 1e9
    slot = info.slot_duration.seconds + info.slot_duration.nanos / 1e9
    assert left == pytest.approx((info.slots_in_epoch - info.slot_index) * slot, rel=0.05)
    assert info.epoch_end_time.seconds == pytest.approx(time.time() + left, abs=5)
    assert not info.epoch_rewards_active
