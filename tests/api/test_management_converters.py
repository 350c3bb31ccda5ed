"""Proto <-> domain conversions of the stake management RPCs, without a server."""

from __future__ import annotations

from typing import Any

import pytest
from agentstaking.v1 import stake_management_pb2 as sm
from agentstaking.v1 import types_pb2
from solders.hash import Hash
from solders.keypair import Keypair

from service.api._management_converters import (
    authorize_request_to_domain,
    authorize_response_to_proto,
    move_request_to_domain,
    redelegate_request_to_domain,
    redelegate_response_to_proto,
    set_lockup_request_to_domain,
    set_lockup_response_to_proto,
    split_request_to_domain,
    split_response_to_proto,
)
from service.chain import (
    BuiltAuthorize,
    BuiltRedelegate,
    BuiltSetLockup,
    BuiltSplit,
    ChainSnapshot,
)
from service.core import (
    Authorized,
    Delegation,
    FetchedStakeAccount,
    Lockup,
    Meta,
    StakeAccount,
    StakeAuthorize,
    StakeHistoryEntry,
    StakeStateKind,
)
from service.core.errors import InvalidArgumentError
from service.core.plans import (
    AuthorizeContext,
    AuthorizeRequest,
    MoveType,
    RecentBlockhash,
    RedelegateContext,
    RedelegateRequest,
    RedelegateStrategy,
    SetLockupContext,
    SetLockupRequest,
    SplitContext,
    SplitRequest,
    build_authorize_transaction,
    build_redelegate_transaction,
    build_set_lockup_transaction,
    build_split_transaction,
)

SOL = 10**9
RENT = 2_282_880
WALLET = Keypair().pubkey()
VOTER = Keypair().pubkey()
LIFETIME = RecentBlockhash(blockhash=Hash.default(), last_valid_block_height=9)
# Stake delegated in epoch 0 is fully active from epoch 1 on.
HISTORY = {e: StakeHistoryEntry(effective=10**18, activating=10**12 * (e == 0)) for e in range(10)}


def _account(stake: int = 3 * SOL, lockup: Lockup | None = None) -> FetchedStakeAccount:
    return FetchedStakeAccount(
        address=Keypair().pubkey(),
        lamports=RENT + stake,
        account=StakeAccount(
            state=StakeStateKind.STAKE,
            meta=Meta(
                rent_exempt_reserve=RENT,
                authorized=Authorized(staker=WALLET, withdrawer=WALLET),
                lockup=lockup or Lockup(),
            ),
            delegation=Delegation(voter=VOTER, stake=stake, activation_epoch=0),
        ),
    )


def _snapshot() -> ChainSnapshot:
    return ChainSnapshot(
        blockhash=str(Hash.default()),
        last_valid_block_height=9,
        block_height=1,
        slot=432_000 * 10 + 100,
        epoch=10,
        slot_index=100,
        slots_in_epoch=432_000,
        slot_seconds=0.4,
        stake_rent_exempt_reserve=RENT,
        minimum_delegation=SOL,
        fetched_at=1_000.0,
    )


@pytest.mark.parametrize(
    ("convert", "request_", "field"),
    [
        (move_request_to_domain, sm.BuildMoveStakeTransactionRequest(move_type=9), "move_type"),  # type: ignore[arg-type]
        (
            authorize_request_to_domain,
            sm.BuildAuthorizeTransactionRequest(authority_type=9),  # type: ignore[arg-type]
            "authority_type",
        ),
        (
            redelegate_request_to_domain,
            sm.BuildRedelegateTransactionRequest(strategy=9),  # type: ignore[arg-type]
            "strategy",
        ),
    ],
)
def test_unknown_enum_values_are_field_errors(convert: Any, request_: Any, field: str) -> None:
    # Carried to the build, which names them with every other invalid field.
    (error,) = convert(request_).options.invalid
    assert isinstance(error, InvalidArgumentError) and error.field == field


def test_request_defaults() -> None:
    assert move_request_to_domain(sm.BuildMoveStakeTransactionRequest()).move_type is (
        MoveType.STAKE
    )
    lamports = move_request_to_domain(
        sm.BuildMoveStakeTransactionRequest(move_type=sm.MOVE_TYPE_LAMPORTS)
    )
    assert lamports.move_type is MoveType.LAMPORTS
    assert authorize_request_to_domain(sm.BuildAuthorizeTransactionRequest()).authority_type is None
    withdrawer = authorize_request_to_domain(
        sm.BuildAuthorizeTransactionRequest(authority_type=sm.STAKE_AUTHORITY_TYPE_WITHDRAWER)
    )
    assert withdrawer.authority_type is StakeAuthorize.WITHDRAWER and not withdrawer.unchecked
    for value, strategy in (
        (sm.REDELEGATE_STRATEGY_UNSPECIFIED, RedelegateStrategy.AUTO),
        (sm.REDELEGATE_STRATEGY_NEW_ACCOUNT, RedelegateStrategy.NEW_ACCOUNT),
        (sm.REDELEGATE_STRATEGY_REUSE_ACCOUNT, RedelegateStrategy.REUSE_ACCOUNT),
    ):
        converted = redelegate_request_to_domain(
            sm.BuildRedelegateTransactionRequest(strategy=value)
        )
        assert converted.strategy is strategy
    split = split_request_to_domain(
        sm.BuildSplitTransactionRequest(
            wallet="w",
            stake_account="s",
            amount_lamports=5,
            request_id="r",
            options=types_pb2.TransactionOptions(simulate=True),
        )
    )
    assert (split.wallet, split.stake_account, split.amount_lamports, split.request_id) == (
        "w",
        "s",
        5,
        "r",
    )
    assert split.options.simulate


def test_lockup_change_presence_keeps_unset_fields_unchanged() -> None:
    nothing = set_lockup_request_to_domain(sm.BuildSetLockupTransactionRequest())
    assert (nothing.unix_timestamp, nothing.epoch, nothing.custodian) == (None, None, "")
    zero = set_lockup_request_to_domain(
        sm.BuildSetLockupTransactionRequest(lockup=sm.LockupChange(epoch=0), custodian_signs=True)
    )
    # An explicit 0 is a change (to no lockup), not an unset field.
    assert (zero.unix_timestamp, zero.epoch, zero.custodian_signs) == (None, 0, True)


def test_split_response() -> None:
    account = _account()
    plan = build_split_transaction(
        SplitRequest(
            wallet=WALLET, stake_account=account.address, amount_lamports=SOL, seed="split:c"
        ),
        SplitContext(
            lifetime=LIFETIME,
            account=account,
            epoch=10,
            history=HISTORY,
            rent_exempt_reserve_lamports=RENT,
            minimum_delegation_lamports=SOL,
        ),
    )
    response = split_response_to_proto(BuiltSplit(plan=plan, simulation=None))
    assert response.new_stake_account == str(plan.new_stake_account)
    assert (response.split_lamports, response.stake_lamports) == (SOL, SOL)
    assert (response.remaining_balance_lamports, response.remaining_stake_lamports) == (
        RENT + 2 * SOL,
        2 * SOL,
    )
    assert response.vote_account == str(VOTER) and response.seed == "split:c"
    assert response.transaction.transaction == plan.prepared.transaction
    assert not response.transaction.HasField("simulation")


def test_authorize_and_lockup_responses() -> None:
    custodian = Keypair().pubkey()
    account = _account(lockup=Lockup(epoch=20, custodian=custodian))
    heir = Keypair().pubkey()
    plan = build_authorize_transaction(
        AuthorizeRequest(
            wallet=WALLET,
            stake_account=account.address,
            new_authority=heir,
            role=StakeAuthorize.WITHDRAWER,
            custodian=custodian,
        ),
        AuthorizeContext(lifetime=LIFETIME, account=account, epoch=10, unix_timestamp=0),
    )
    response = authorize_response_to_proto(BuiltAuthorize(plan=plan, simulation=None))
    assert response.authority_type == sm.STAKE_AUTHORITY_TYPE_WITHDRAWER
    assert (response.previous_authority, response.new_authority) == (str(WALLET), str(heir))
    assert (response.staker, response.withdrawer) == (str(WALLET), str(heir))
    assert response.custodian == str(custodian) and response.checked
    assert response.leaves_wallet_positions and response.notice == plan.notice

    lockup = build_set_lockup_transaction(
        SetLockupRequest(
            wallet=WALLET, stake_account=account.address, epoch=0, custodian_signs=True
        ),
        SetLockupContext(lifetime=LIFETIME, account=account, epoch=10, unix_timestamp=0),
    )
    converted = set_lockup_response_to_proto(BuiltSetLockup(plan=lockup, simulation=None))
    assert converted.previous_lockup == types_pb2.Lockup(epoch=20, custodian=str(custodian))
    assert converted.lockup == types_pb2.Lockup(custodian=str(custodian))
    assert converted.authority == str(custodian) and converted.custodian_signs
    assert not converted.lockup_in_force


def test_redelegate_response_dates_its_epochs_from_the_snapshot() -> None:
    account = _account()
    plan = build_redelegate_transaction(
        RedelegateRequest(
            wallet=WALLET,
            stake_account=account.address,
            vote_account=Keypair().pubkey(),
            seed="stake:r",
            strategy=RedelegateStrategy.REUSE_ACCOUNT,
        ),
        RedelegateContext(
            lifetime=LIFETIME,
            account=account,
            epoch=10,
            history=HISTORY,
            rent_exempt_reserve_lamports=RENT,
            minimum_delegation_lamports=SOL,
        ),
    )
    snapshot = _snapshot()
    response = redelegate_response_to_proto(
        BuiltRedelegate(plan=plan, simulation=None, snapshot=snapshot),
        now_unix=1_700_000_000.0,
        now_monotonic=snapshot.fetched_at,
    )
    assert (response.step, response.strategy, response.transactions) == (
        sm.REDELEGATE_STEP_DEACTIVATE,
        sm.REDELEGATE_STRATEGY_REUSE_ACCOUNT,
        2,
    )
    assert (response.epoch, response.expected_active_epoch) == (10, 12)
    follow = response.follow_up
    assert (follow.method, follow.epoch, follow.stake_account) == (
        "BuildRedelegateTransaction",
        11,
        str(account.address),
    )
    # Epoch 11 starts when the rest of epoch 10 has passed; epoch 12 one epoch later.
    rest = (432_000 - 100) * 0.4
    assert follow.time.seconds == int(1_700_000_000 + rest)
    assert response.expected_active_time.seconds == int(1_700_000_000 + rest + 432_000 * 0.4)
    assert response.time_until_active.ToTimedelta().total_seconds() == pytest.approx(
        rest + 432_000 * 0.4, abs=1e-3
    )
    assert response.new_stake_account == "" and response.seed == ""
