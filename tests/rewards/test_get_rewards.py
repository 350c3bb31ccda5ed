"""GetRewards on a localnet that pays rewards: every number against the chain's own.

The stake accounts' balances were read around each epoch boundary (conftest): each
reward GetRewards reports is exactly the growth of its account across its boundary,
the commission split is what the vote accounts gained, the delinquent validator paid
nothing, rewards compound into the next epoch's stake, and a tip is reported apart
and can be withdrawn without touching the delegation.
"""

from __future__ import annotations

import base64
import math

import grpc
import pytest
from agentstaking.v1 import rewards_pb2, staking_pb2, staking_pb2_grpc
from solders.keypair import Keypair

from service.keys import KeyPolicy, RateLimit
from tests._grpc_auth import keyed_channel
from tests.api._helpers import rich_details
from tests.lifecycle.conftest import SOL, Lifecycle

from .conftest import TIP, Staked

RENT = 2_282_880
BAD = grpc.StatusCode.INVALID_ARGUMENT
SLOTS_PER_YEAR = 365.242_199 * 24.0 * 60.0 * 60.0 * 160.0 / 64.0


def _by_key(
    response: rewards_pb2.GetRewardsResponse,
) -> dict[tuple[str, int], rewards_pb2.EpochReward]:
    return {(r.stake_account, r.epoch): r for r in response.rewards}


async def _rewards(lc: Lifecycle, **fields: object) -> rewards_pb2.GetRewardsResponse:
    return await lc.staking.GetRewards(rewards_pb2.GetRewardsRequest(**fields))  # type: ignore[arg-type]


async def test_rewards_are_the_accounts_real_growth(rewards: Lifecycle, staked: Staked) -> None:
    lc, s = rewards, staked
    first, last = s.delegated_in, s.delegated_in + 2
    response = await _rewards(lc, wallet=str(s.wallet.pubkey()), start_epoch=first, end_epoch=last)
    assert (response.start_epoch, response.end_epoch) == (first, last)
    assert not response.pending_epochs
    found = _by_key(response)
    a, b, c = s.accounts["a"], s.accounts["b"], s.accounts["c"]
    # The epoch of the delegation pays nothing; the two after it pay a and b.
    assert set(found) == {(a, first + 1), (a, last), (b, first + 1), (b, last)}
    for (account, epoch), reward in found.items():
        grew = s.after[epoch][account] - s.before[epoch][account]
        assert reward.amount_lamports == grew > 0
        assert reward.post_balance_lamports == s.after[epoch][account]
        assert reward.effective_slot > 0
    assert lc.server.chain is not None
    vote_accounts = lc.server.chain.snapshot().vote_accounts
    assert found[(a, last)].commission_percent == vote_accounts[s.votes["a"]].commission == 5
    assert found[(b, last)].commission_percent == vote_accounts[s.votes["b"]].commission == 10

    # Compounding: the second reward was earned by the stake grown by the first
    # (and the tip, which is not delegated, did not earn).
    second = found[(a, last)]
    principal = second.post_balance_lamports - second.amount_lamports - RENT - TIP
    assert principal == 5 * SOL + found[(a, first + 1)].amount_lamports
    positions = await lc.positions(s.wallet)
    delegated = {p.address: p.delegated_lamports for p in positions.stake_accounts}
    assert delegated[a] == 5 * SOL + sum(r.amount_lamports for (x, _), r in found.items() if x == a)

    # Totals per account and overall; the delinquent validator's account earned nothing.
    totals = {t.stake_account: t for t in response.accounts}
    assert [t.stake_account for t in response.accounts] == sorted(s.accounts.values())
    assert totals[c].amount_lamports == 0 and totals[c].rewarded_epochs == 0
    assert list(totals[c].unrewarded_epochs) == [first, first + 1, last]
    assert list(totals[a].unrewarded_epochs) == [first] and totals[a].rewarded_epochs == 2
    assert response.total_amount_lamports == sum(r.amount_lamports for r in found.values())
    assert response.total_size == len(found) == 4

    # The implied APY of an epoch: its reward over the stake that earned it, compounded.
    epochs_per_year = SLOTS_PER_YEAR / 432_000
    reward = found[(b, last)]
    rate = reward.amount_lamports / (reward.post_balance_lamports - reward.amount_lamports - RENT)
    assert reward.implied_apy == pytest.approx((1 + rate) ** epochs_per_year - 1, rel=1e-9)
    assert 0.01 < reward.implied_apy < 0.5


async def test_commission_split_and_the_delinquent_validator(
    rewards: Lifecycle, staked: Staked
) -> None:
    lc, s = rewards, staked
    epoch = s.delegated_in + 2
    for label in ("a", "b"):
        vote = s.votes[label]
        gained = s.after[epoch][vote] - s.before[epoch][vote]
        # The node's Voting reward is what the vote account gained.
        (voting,) = await lc.call("getInflationReward", [vote], {"epoch": epoch})
        assert voting["amount"] == gained > 0
        # It is the commission of every stake delegated to it: each staker got
        # floor(r * (100 - c) / 100) of its reward r, the vote account floor(r * c / 100).
        delegated = await lc.call(
            "getProgramAccounts",
            "Stake11111111111111111111111111111111111111",
            {"encoding": "base64", "filters": [{"memcmp": {"offset": 124, "bytes": vote}}]},
        )
        addresses = [item["pubkey"] for item in delegated]
        paid = await lc.call("getInflationReward", addresses, {"epoch": epoch})
        commission = voting["commission"]
        low = high = 0
        for reward in paid:
            if reward is None:
                continue
            staker = reward["amount"]
            # The r for which floor(r * (100 - c) / 100) == staker, and its commission.
            smallest = -(-staker * 100 // (100 - commission))
            largest = ((staker + 1) * 100 - 1) // (100 - commission)
            low += smallest * commission // 100
            high += largest * commission // 100
        assert low <= gained <= high
    # The delinquent validator earned no vote credits: no reward at all.
    delinquent = s.votes["c"]
    assert s.after[epoch][delinquent] == s.before[epoch][delinquent]
    assert s.after[epoch][s.accounts["c"]] == s.before[epoch][s.accounts["c"]]
    assert await lc.call("getInflationReward", [delinquent], {"epoch": epoch}) == [None]


async def test_other_credits_are_reported_apart_and_withdrawn_without_the_stake(
    rewards: Lifecycle, staked: Staked
) -> None:
    lc, s = rewards, staked
    a = s.accounts["a"]
    response = await _rewards(
        lc, stake_accounts=[a], start_epoch=s.delegated_in + 1, end_epoch=s.tipped_in
    )
    found = _by_key(response)
    assert found[(a, s.tipped_in)].other_credits_lamports == TIP
    assert found[(a, s.tipped_in - 1)].other_credits_lamports == 0
    (totals,) = response.accounts
    assert totals.other_credits_lamports == response.total_other_credits_lamports == TIP

    # The tip is not delegated: it is withdrawable now, and taking it leaves the stake
    # active and whole.
    listed = {p.address: p for p in (await lc.positions(s.wallet)).stake_accounts}[a]
    assert listed.state == staking_pb2.STAKE_ACCOUNT_STATE_ACTIVE
    assert listed.withdrawable_lamports == listed.inactive_lamports == TIP
    # One lamport more would be delegated stake: refused.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.BuildWithdrawTransaction(
            staking_pb2.BuildWithdrawTransactionRequest(
                wallet=str(s.wallet.pubkey()), stake_account=a, amount_lamports=TIP + 1
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_details(caught.value)["ErrorInfo"].reason == "INSUFFICIENT_FUNDS"
    built = await lc.staking.BuildWithdrawTransaction(
        staking_pb2.BuildWithdrawTransactionRequest(
            wallet=str(s.wallet.pubkey()), stake_account=a, amount_lamports=TIP
        )
    )
    await lc.execute(built.transaction, s.wallet)
    after = {p.address: p for p in (await lc.positions(s.wallet)).stake_accounts}[a]
    assert after.state == staking_pb2.STAKE_ACCOUNT_STATE_ACTIVE
    assert after.delegated_lamports == listed.delegated_lamports
    assert after.balance_lamports == listed.balance_lamports - TIP
    assert after.inactive_lamports == 0


async def test_pages_and_the_default_range(rewards: Lifecycle, staked: Staked) -> None:
    lc, s = rewards, staked
    wallet = str(s.wallet.pubkey())
    whole = await _rewards(lc, wallet=wallet)
    current = await lc.epoch()
    # Default: the last 10 completed epochs (fewer exist here).
    assert whole.end_epoch == current - 1
    assert whole.start_epoch == max(current - 10, 0)
    seen: list[rewards_pb2.EpochReward] = []
    token = ""
    while True:
        page = await _rewards(lc, wallet=wallet, page_size=1, page_token=token)
        assert page.total_size == whole.total_size
        assert page.total_amount_lamports == whole.total_amount_lamports
        assert list(page.accounts) == list(whole.accounts)
        seen.extend(page.rewards)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(whole.rewards)
    assert [(r.stake_account, r.epoch) for r in seen] == sorted(
        (r.stake_account, r.epoch) for r in seen
    )
    # A token belongs to its request.
    token = (await _rewards(lc, wallet=wallet, page_size=1)).next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _rewards(
            lc, wallet=wallet, end_epoch=whole.end_epoch - 1, page_size=1, page_token=token
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "stake_accounts"),
        ({"wallet": "W", "stake_accounts": ["S"]}, "wallet"),
        ({"wallet": "not an address"}, "wallet"),
        ({"stake_accounts": ["S", "not an address"]}, "stake_accounts"),
        ({"stake_accounts": ["S", "S"]}, "stake_accounts"),
        ({"stake_accounts": ["X"] * 101}, "stake_accounts"),
        ({"wallet": "W", "end_epoch": 10_000}, "end_epoch"),
        ({"wallet": "W", "start_epoch": 2, "end_epoch": 1}, "start_epoch"),
        ({"wallet": "W", "page_size": -1}, "page_size"),
        ({"wallet": "W", "page_token": "garbage"}, "page_token"),
        (
            {"wallet": "W", "page_token": base64.b64encode(b"[" * 5000 + b"]" * 5000).decode()},
            "page_token",
        ),
    ],
)
async def test_bad_requests_name_the_field(
    rewards: Lifecycle, staked: Staked, fields: dict[str, object], field: str
) -> None:
    values: dict[str, object] = {}
    for name, value in fields.items():
        if value == "W":
            value = str(staked.wallet.pubkey())
        elif isinstance(value, list):
            value = [
                staked.accounts["a"] if v == "S" else str(Keypair().pubkey()) if v == "X" else v
                for v in value
            ]
        values[name] = value
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _rewards(rewards, **values)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = rich_details(error)
    assert [v.field for v in details["BadRequest"].field_violations] == [field]
    paging = {"page_size": "INVALID_PAGE_SIZE", "page_token": "INVALID_PAGE_TOKEN"}
    assert details["ErrorInfo"].reason == paging.get(field, details["ErrorInfo"].reason)
    assert details["ErrorInfo"].reason


async def test_the_keys_allowed_wallets_apply(rewards: Lifecycle, staked: Staked) -> None:
    lc, s = rewards, staked
    assert lc.server.keys is not None
    owner = str(s.wallet.pubkey())
    by_wallet = rewards_pb2.GetRewardsRequest(wallet=owner)
    by_account = rewards_pb2.GetRewardsRequest(stake_accounts=[s.accounts["a"]])
    # An address that holds no stake account of any allowed wallet.
    elsewhere = rewards_pb2.GetRewardsRequest(stake_accounts=[str(Keypair().pubkey())])
    cases = [
        (str(Keypair().pubkey()), [(by_wallet, False), (by_account, False), (elsewhere, False)]),
        (owner, [(by_wallet, True), (by_account, True), (elsewhere, False)]),
    ]
    for allowed, expected in cases:
        _, secret = await lc.server.keys.create(
            display_name="one wallet",
            scopes=["staking"],
            policy=KeyPolicy(allowed_wallets=(allowed,)),
        )
        async with keyed_channel(f"127.0.0.1:{lc.server.port}", secret) as channel:
            stub = staking_pb2_grpc.StakingServiceStub(channel)
            for request, allowed_to_read in expected:
                if allowed_to_read:
                    assert (await stub.GetRewards(request)).total_amount_lamports > 0
                    continue
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetRewards(request)
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
                info = rich_details(caught.value)["ErrorInfo"]
                assert info.reason == "POLICY_WALLET_NOT_ALLOWED"


async def test_estimated_apy_matches_what_the_chain_paid(
    rewards: Lifecycle, staked: Staked
) -> None:
    """The validators' estimate (inflation x supply / active stake x credits x (1 -
    commission)) is what an epoch actually paid a stake on them, within the drift of
    supply and stake between epochs."""
    lc, s = rewards, staked
    listed = await lc.staking.ListValidators(
        staking_pb2.ListValidatorsRequest(include_delinquent=True)
    )
    by_vote = {v.vote_account: v for v in listed.validators}
    epochs_per_year = SLOTS_PER_YEAR / 432_000
    epoch = s.delegated_in + 1
    response = await _rewards(lc, wallet=str(s.wallet.pubkey()), start_epoch=epoch, end_epoch=epoch)
    for reward in response.rewards:
        label = next(k for k, v in s.accounts.items() if v == reward.stake_account)
        validator = by_vote[s.votes[label]]
        paid_rate = reward.amount_lamports / (
            reward.post_balance_lamports - reward.amount_lamports - RENT
        )
        estimated_rate = (1 + validator.estimated_apy) ** (1 / epochs_per_year) - 1
        assert estimated_rate == pytest.approx(paid_rate, rel=0.02)
        assert any(r.startswith("estimated APY") and "commission" in r for r in validator.reasons)
    delinquent = by_vote[s.votes["c"]]
    assert delinquent.delinquent and delinquent.estimated_apy == 0
    # Commission and credits order the estimates.
    best = max(v.estimated_apy for v in listed.validators)
    assert 0.03 < best < 0.3 and not math.isnan(best)

    # The filter: only validators estimated at or above the minimum.
    threshold = sorted(v.estimated_apy for v in listed.validators if not v.delinquent)[1]
    filtered = await lc.staking.ListValidators(
        staking_pb2.ListValidatorsRequest(min_estimated_apy=threshold)
    )
    assert filtered.validators
    assert all(v.estimated_apy >= threshold for v in filtered.validators)
    assert filtered.total_size == sum(
        1 for v in listed.validators if not v.delinquent and v.estimated_apy >= threshold
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lc.staking.ListValidators(staking_pb2.ListValidatorsRequest(min_estimated_apy=-0.1))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_details(caught.value)["BadRequest"].field_violations[0].field == (
        "min_estimated_apy"
    )


async def test_estimate_rewards_projects_what_an_epoch_pays(
    rewards: Lifecycle, staked: Staked
) -> None:
    lc, s = rewards, staked
    epoch = s.delegated_in + 1
    (paid,) = (
        await _rewards(lc, stake_accounts=[s.accounts["b"]], start_epoch=epoch, end_epoch=epoch)
    ).rewards
    principal = paid.post_balance_lamports - paid.amount_lamports - RENT
    one = await lc.staking.EstimateRewards(
        rewards_pb2.EstimateRewardsRequest(
            amount_lamports=principal, vote_account=s.votes["b"], epochs=1
        )
    )
    assert one.epochs == 1 and one.vote_account == s.votes["b"]
    assert one.projected_rewards_lamports == pytest.approx(paid.amount_lamports, rel=0.02)
    assert one.projected_balance_lamports == principal + one.projected_rewards_lamports
    assumptions = one.assumptions
    assert assumptions.commission_percent == 10 and assumptions.compounds_per_epoch
    assert assumptions.slots_per_epoch == 432_000
    assert assumptions.epochs_per_year == pytest.approx(SLOTS_PER_YEAR / 432_000)
    rate = await lc.call("getInflationRate")
    assert assumptions.validator_inflation_rate == pytest.approx(rate["validator"])
    assert 0 < assumptions.credit_ratio <= 1 and 0 < assumptions.mean_credit_ratio <= 1
    assert one.estimated_apy == pytest.approx(
        (1 + assumptions.per_epoch_rate) ** assumptions.epochs_per_year - 1
    )
    assert any("compounding" in note for note in one.notes)

    # A year (the default), compounded per epoch; the default validator.
    year = await lc.staking.EstimateRewards(rewards_pb2.EstimateRewardsRequest(amount_lamports=SOL))
    info = await lc.staking.GetNetworkInfo(staking_pb2.GetNetworkInfoRequest())
    assert year.vote_account == info.default_vote_account
    assert year.epochs == int(year.assumptions.epochs_per_year)
    simple = SOL * year.assumptions.per_epoch_rate * year.epochs
    assert year.projected_rewards_lamports > simple  # compounding earns on rewards
    days = await lc.staking.EstimateRewards(
        rewards_pb2.EstimateRewardsRequest(amount_lamports=SOL, days=30)
    )
    assert days.epochs == int(30 / 365.242_199 * days.assumptions.epochs_per_year)

    # The delinquent validator: nothing.
    nothing = await lc.staking.EstimateRewards(
        rewards_pb2.EstimateRewardsRequest(amount_lamports=SOL, vote_account=s.votes["c"])
    )
    assert nothing.projected_rewards_lamports == 0 and nothing.assumptions.delinquent


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({}, BAD, "amount_lamports"),
        ({"amount_lamports": SOL, "epochs": 0}, grpc.StatusCode.INVALID_ARGUMENT, "epochs"),
        ({"amount_lamports": SOL, "days": 4000}, grpc.StatusCode.INVALID_ARGUMENT, "days"),
        (
            {"amount_lamports": SOL, "vote_account": "x"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "vote_account",
        ),
        (
            {"amount_lamports": SOL, "vote_account": "NEW"},
            grpc.StatusCode.NOT_FOUND,
            "vote_account",
        ),
    ],
)
async def test_estimate_errors(
    rewards: Lifecycle, request_fields: dict[str, object], code: grpc.StatusCode, field: str
) -> None:
    if request_fields.get("vote_account") == "NEW":
        request_fields = {**request_fields, "vote_account": str(Keypair().pubkey())}
    request = rewards_pb2.EstimateRewardsRequest(**request_fields)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rewards.staking.EstimateRewards(request)
    assert caught.value.code() == code
    details = rich_details(caught.value)
    assert [v.field for v in details["BadRequest"].field_violations] == [field]


async def test_rewards_calls_are_reads(rewards: Lifecycle, staked: Staked) -> None:
    """Rate limits count GetRewards and EstimateRewards in the "reads" class."""
    lc = rewards
    assert lc.server.keys is not None
    _, secret = await lc.server.keys.create(
        display_name="slow reader",
        scopes=["staking"],
        policy=KeyPolicy(rate_limit=RateLimit(requests_per_minute=1, burst=1)),
    )
    async with keyed_channel(f"127.0.0.1:{lc.server.port}", secret) as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        wallet = str(staked.wallet.pubkey())
        for call in (
            lambda: stub.GetRewards(rewards_pb2.GetRewardsRequest(wallet=wallet)),
            lambda: stub.EstimateRewards(rewards_pb2.EstimateRewardsRequest(amount_lamports=SOL)),
        ):
            error = None
            for _ in range(5):  # a burst of 1, times the reads factor (3)
                try:
                    await call()
                except grpc.aio.AioRpcError as caught:
                    error = caught
                    break
            assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert rich_details(error)["ErrorInfo"].metadata["rpc_class"] == "reads"
