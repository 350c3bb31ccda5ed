"""The lifecycle RPCs' proto <-> domain conversions, without a server."""

from __future__ import annotations

from agentstaking.v1 import staking_pb2, types_pb2
from solders.pubkey import Pubkey

from service.api._converters import (
    merge_request_to_domain,
    stake_account_to_proto,
    unstake_request_to_domain,
    validators_to_proto,
    withdraw_request_to_domain,
)
from service.chain import ChainSnapshot, ValidatorPage
from service.core import (
    Authorized,
    Delegation,
    FetchedStakeAccount,
    Lockup,
    Meta,
    RankedValidator,
    StakeAccount,
    StakeStateKind,
    view_stake_account,
)

SOL = 10**9
RENT = 2_282_880


def test_requests_to_domain() -> None:
    options = types_pb2.TransactionOptions(simulate=True, memo="m")
    unstake = unstake_request_to_domain(
        staking_pb2.BuildUnstakeTransactionRequest(
            wallet="w", amount_lamports=5, stake_account="s", vote_account="v", options=options
        )
    )
    assert (unstake.wallet, unstake.amount_lamports, unstake.stake_account) == ("w", 5, "s")
    assert unstake.vote_account == "v" and unstake.options.simulate and unstake.options.memo == "m"
    withdraw = withdraw_request_to_domain(
        staking_pb2.BuildWithdrawTransactionRequest(
            wallet="w", withdraw_all=True, destination="d", request_id="r"
        )
    )
    assert withdraw.withdraw_all and withdraw.destination == "d" and withdraw.request_id == "r"
    merge = merge_request_to_domain(
        staking_pb2.BuildMergeTransactionRequest(
            wallet="w", destination_stake_account="d", source_stake_accounts=["a", "b"]
        )
    )
    assert merge.source_stake_accounts == ("a", "b")


def _snapshot() -> ChainSnapshot:
    return ChainSnapshot(
        blockhash="11111111111111111111111111111111",
        last_valid_block_height=200,
        block_height=50,
        slot=50,
        epoch=7,
        slot_index=100,
        slots_in_epoch=1000,
        slot_seconds=0.4,
        stake_rent_exempt_reserve=RENT,
        minimum_delegation=SOL,
        fetched_at=100.0,
    )


def test_stake_account_to_proto() -> None:
    wallet, vote, custodian = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    meta = Meta(
        rent_exempt_reserve=RENT,
        authorized=Authorized(staker=wallet, withdrawer=wallet),
        lockup=Lockup(epoch=9, custodian=custodian),
    )
    activating = FetchedStakeAccount(
        address=Pubkey.new_unique(),
        lamports=RENT + SOL,
        account=StakeAccount(
            state=StakeStateKind.STAKE,
            meta=meta,
            delegation=Delegation(voter=vote, stake=SOL, activation_epoch=7),
        ),
    )
    view = view_stake_account(
        activating, wallet=wallet, epoch=7, unix_timestamp=0, history={}, rent_exempt_reserve=RENT
    )
    proto = stake_account_to_proto(
        view, snapshot=_snapshot(), now_unix=1_000.0, now_monotonic=100.0
    )
    assert proto.state == staking_pb2.STAKE_ACCOUNT_STATE_ACTIVATING
    assert proto.next_state == staking_pb2.STAKE_ACCOUNT_STATE_ACTIVE
    assert proto.next_state_change_epoch == 8
    # 900 slots of 0.4 s left in epoch 7.
    assert proto.next_state_change_time.seconds == 1_000 + 360
    assert proto.activation_epoch == 7 and not proto.HasField("deactivation_epoch")
    assert proto.lockup.epoch == 9 and proto.lockup.custodian == str(custodian)
    assert proto.lockup_in_force and proto.voter == str(vote)
    initialized = FetchedStakeAccount(
        address=Pubkey.new_unique(),
        lamports=RENT,
        account=StakeAccount(state=StakeStateKind.INITIALIZED, meta=meta),
    )
    view = view_stake_account(
        initialized, wallet=wallet, epoch=7, unix_timestamp=0, history={}, rent_exempt_reserve=RENT
    )
    proto = stake_account_to_proto(view, snapshot=_snapshot(), now_unix=0.0, now_monotonic=0.0)
    assert proto.state == staking_pb2.STAKE_ACCOUNT_STATE_INITIALIZED and proto.voter == ""
    assert not proto.HasField("activation_epoch") and not proto.HasField("next_state_change_epoch")
    assert not proto.HasField("next_state_change_time")


def test_validators_to_proto() -> None:
    ranked = RankedValidator(
        vote_account="v",
        node_pubkey="n",
        commission=5,
        activated_stake=10,
        delinquent=False,
        last_vote=3,
        root_slot=2,
        current_epoch_credits=7,
        average_epoch_credits=6,
        performance=1.0,
        stake_share=0.1,
        superminority=False,
        featured=True,
        score=0.98,
        reasons=("commission 5%",),
    )
    proto = validators_to_proto(
        ValidatorPage(validators=((3, ranked),), next_page_token="t", total_size=9)
    )
    (v,) = proto.validators
    assert (v.rank, v.score, v.commission_percent, v.epoch_credits) == (3, 0.98, 5, 7)
    assert v.featured and list(v.reasons) == ["commission 5%"]
    assert proto.next_page_token == "t" and proto.total_size == 9
