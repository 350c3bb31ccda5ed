"""Every refusal of the stake management RPCs over gRPC, with its status, ErrorInfo
reason and details, produced from real chain state; and every key policy (wallets,
vote accounts, lamports, methods) applied to each of the new RPCs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from agentstaking.v1 import stake_management_pb2 as sm
from agentstaking.v1 import staking_pb2_grpc
from google.protobuf.message import Message
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.core.programs import STAKE_PROGRAM
from service.keys import KeyPolicy
from tests.api._helpers import rich_details

from .conftest import SOL, Lifecycle

StatusCode = grpc.StatusCode


async def _refused(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> dict[str, str]:
    """The call fails with ``code`` and ``reason``; its ErrorInfo metadata."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    info = rich_details(error)["ErrorInfo"]
    assert (error.code(), info.reason) == (code, reason), error.details()
    assert info.domain == "agentstaking.v1"
    return dict(info.metadata)


def _violations(call_error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in rich_details(call_error)["BadRequest"].field_violations]


async def test_split_refusals(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(20)
    owner = str(wallet.pubkey())
    account = await lc.stake(wallet, 5 * SOL // 2)

    def split(amount: int, stake_account: str = account) -> Awaitable[Any]:
        return lc.staking.BuildSplitTransaction(
            sm.BuildSplitTransactionRequest(
                wallet=owner, stake_account=stake_account, amount_lamports=amount
            )
        )

    low = await _refused(split(SOL // 2), StatusCode.INVALID_ARGUMENT, "BELOW_MINIMUM_DELEGATION")
    assert low["nearest_higher_lamports"] == str(SOL) and "nearest_lower_lamports" not in low
    high = await _refused(split(2 * SOL), StatusCode.INVALID_ARGUMENT, "BELOW_MINIMUM_DELEGATION")
    assert high["nearest_lower_lamports"] == str(3 * SOL // 2)
    over = await _refused(split(3 * SOL), StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_STAKE")
    assert over["available_lamports"] == str(5 * SOL // 2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await split(0)
    assert _violations(caught.value) == ["amount_lamports"]
    stranger = await lc.wallet(5)
    foreign = await lc.stake(stranger, SOL)
    metadata = await _refused(
        split(SOL, foreign), StatusCode.FAILED_PRECONDITION, "NOT_WITHDRAW_AUTHORITY"
    )
    assert metadata["withdrawer"] == str(stranger.pubkey())
    await _refused(
        split(SOL, str(Keypair().pubkey())), StatusCode.NOT_FOUND, "STAKE_ACCOUNT_NOT_FOUND"
    )
    # An address that is no stake account (the wallet itself).
    await _refused(split(SOL, owner), StatusCode.FAILED_PRECONDITION, "INVALID_STAKE_ACCOUNT")


async def test_move_refusals(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(20)
    owner = str(wallet.pubkey())
    first, second, *_ = await lc.validators()
    a = await lc.stake(wallet, 3 * SOL, vote=first)
    b = await lc.stake(wallet, 2 * SOL, vote=first)
    elsewhere = await lc.stake(wallet, 2 * SOL, vote=second)

    def move(
        source: str,
        destination: str,
        amount: int,
        move_type: sm.MoveType.ValueType = sm.MOVE_TYPE_STAKE,
    ) -> Awaitable[Any]:
        return lc.staking.BuildMoveStakeTransaction(
            sm.BuildMoveStakeTransactionRequest(
                wallet=owner,
                source_stake_account=source,
                destination_stake_account=destination,
                amount_lamports=amount,
                move_type=move_type,
            )
        )

    same = await _refused(move(a, a, SOL), StatusCode.INVALID_ARGUMENT, "SAME_STAKE_ACCOUNT")
    assert same["stake_account"] == a
    # Still activating (delegated this epoch): no move of stake yet.
    state = await _refused(move(a, b, SOL), StatusCode.FAILED_PRECONDITION, "MOVE_MISMATCH")
    assert state["mismatch"] == "state"
    await lc.advance_epochs(1)
    voter = await _refused(move(a, elsewhere, SOL), StatusCode.FAILED_PRECONDITION, "MOVE_MISMATCH")
    assert (voter["mismatch"], voter["source_voter"], voter["destination_voter"]) == (
        "voter",
        first,
        second,
    )
    below = await _refused(
        move(a, b, 5 * SOL // 2), StatusCode.INVALID_ARGUMENT, "BELOW_MINIMUM_DELEGATION"
    )
    assert (below["nearest_lower_lamports"], below["nearest_higher_lamports"]) == (
        str(2 * SOL),
        str(3 * SOL),
    )
    await _refused(move(a, b, 4 * SOL), StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_STAKE")
    free = await _refused(
        move(a, b, 1, sm.MOVE_TYPE_LAMPORTS), StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"
    )
    assert free["available_lamports"] == "0"
    # Another stake authority on one side: authorities differ.
    staker = Keypair()
    authorize = await lc.staking.BuildAuthorizeTransaction(
        sm.BuildAuthorizeTransactionRequest(
            wallet=owner,
            stake_account=b,
            new_authority=str(staker.pubkey()),
            authority_type=sm.STAKE_AUTHORITY_TYPE_STAKER,
        )
    )
    await lc.execute(authorize.transaction, wallet, staker)
    authorities = await _refused(move(a, b, SOL), StatusCode.FAILED_PRECONDITION, "MOVE_MISMATCH")
    assert authorities["mismatch"] == "authorities"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await move(a, b, SOL, move_type=sm.MoveType.ValueType(7))
    assert _violations(caught.value) == ["move_type"]


async def test_authorize_and_lockup_refusals(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(20)
    owner = str(wallet.pubkey())
    account = await lc.stake(wallet, 2 * SOL)

    def authorize(new: str, kind: sm.StakeAuthorityType.ValueType, **fields: Any) -> Awaitable[Any]:
        return lc.staking.BuildAuthorizeTransaction(
            sm.BuildAuthorizeTransactionRequest(
                wallet=owner,
                stake_account=account,
                new_authority=new,
                authority_type=kind,
                **fields,
            )
        )

    unchanged = await _refused(
        authorize(owner, sm.STAKE_AUTHORITY_TYPE_STAKER),
        StatusCode.FAILED_PRECONDITION,
        "AUTHORITY_UNCHANGED",
    )
    assert unchanged["authority_type"] == "staker"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authorize(str(Keypair().pubkey()), sm.STAKE_AUTHORITY_TYPE_UNSPECIFIED)
    assert caught.value.code() == StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["authority_type"]
    pda, _ = Pubkey.find_program_address([b"x"], STAKE_PROGRAM)
    await _refused(
        authorize(str(pda), sm.STAKE_AUTHORITY_TYPE_WITHDRAWER),
        StatusCode.INVALID_ARGUMENT,
        "INVALID_ADDRESS",
    )

    # A lockup in force: the withdrawer changes only with its custodian.
    custodian = Keypair()
    epoch = await lc.epoch()
    lockup = await lc.staking.BuildSetLockupTransaction(
        sm.BuildSetLockupTransactionRequest(
            wallet=owner,
            stake_account=account,
            lockup=sm.LockupChange(epoch=epoch + 9, custodian=str(custodian.pubkey())),
        )
    )
    await lc.execute(lockup.transaction, wallet, custodian)
    heir = str(Keypair().pubkey())
    locked = await _refused(
        authorize(heir, sm.STAKE_AUTHORITY_TYPE_WITHDRAWER),
        StatusCode.FAILED_PRECONDITION,
        "LOCKUP_IN_FORCE",
    )
    assert (locked["custodian"], locked["lockup_epoch"]) == (
        str(custodian.pubkey()),
        str(epoch + 9),
    )
    wrong = await _refused(
        authorize(heir, sm.STAKE_AUTHORITY_TYPE_WITHDRAWER, custodian=str(Keypair().pubkey())),
        StatusCode.FAILED_PRECONDITION,
        "LOCKUP_IN_FORCE",
    )
    assert wrong["custodian"] == str(custodian.pubkey())
    named = await authorize(
        heir, sm.STAKE_AUTHORITY_TYPE_WITHDRAWER, custodian=str(custodian.pubkey())
    )
    assert str(custodian.pubkey()) in named.transaction.required_signers

    def set_lockup(change: sm.LockupChange, **fields: Any) -> Awaitable[Any]:
        return lc.staking.BuildSetLockupTransaction(
            sm.BuildSetLockupTransactionRequest(
                wallet=owner, stake_account=account, lockup=change, **fields
            )
        )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_lockup(sm.LockupChange())
    assert _violations(caught.value) == ["lockup"]
    await _refused(
        set_lockup(sm.LockupChange(epoch=1)), StatusCode.FAILED_PRECONDITION, "LOCKUP_IN_FORCE"
    )
    await _refused(
        set_lockup(sm.LockupChange(epoch=epoch + 9), custodian_signs=True),
        StatusCode.FAILED_PRECONDITION,
        "LOCKUP_UNCHANGED",
    )
    await _refused(
        set_lockup(sm.LockupChange(custodian=str(pda)), custodian_signs=True),
        StatusCode.INVALID_ARGUMENT,
        "INVALID_ADDRESS",
    )


async def test_redelegate_refusals(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(4)
    owner = str(wallet.pubkey())
    first, second, *_ = await lc.validators()
    account = await lc.stake(wallet, 3 * SOL, vote=first)

    def redelegate(
        vote: str, strategy: sm.RedelegateStrategy.ValueType = sm.REDELEGATE_STRATEGY_AUTO
    ) -> Awaitable[Any]:
        return lc.staking.BuildRedelegateTransaction(
            sm.BuildRedelegateTransactionRequest(
                wallet=owner,
                stake_account=account,
                vote_account=vote,
                strategy=strategy,
            )
        )

    same = await _refused(redelegate(first), StatusCode.FAILED_PRECONDITION, "ALREADY_DELEGATED")
    assert same["vote_account"] == first
    await _refused(
        redelegate(str(Keypair().pubkey())), StatusCode.NOT_FOUND, "VOTE_ACCOUNT_NOT_FOUND"
    )
    await lc.advance_epochs(1)
    # The wallet (about 1 SOL left) cannot fund a new 3 SOL account.
    short = await _refused(
        redelegate(second, sm.REDELEGATE_STRATEGY_NEW_ACCOUNT),
        StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_FUNDS",
    )
    assert int(short["shortfall_lamports"]) > 2 * SOL
    # AUTO then takes the way that needs no funds.
    auto = await redelegate(second)
    assert (auto.strategy, auto.step) == (
        sm.REDELEGATE_STRATEGY_REUSE_ACCOUNT,
        sm.REDELEGATE_STEP_DEACTIVATE,
    )


async def test_epoch_rewards_distribution_refuses_the_new_builds(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(10)
    owner = str(wallet.pubkey())
    account = await lc.stake(wallet, 2 * SOL)

    await lc.set_epoch_rewards(True)
    try:
        for call in (
            lc.staking.BuildSplitTransaction(
                sm.BuildSplitTransactionRequest(
                    wallet=owner, stake_account=account, amount_lamports=SOL
                )
            ),
            lc.staking.BuildSetLockupTransaction(
                sm.BuildSetLockupTransactionRequest(
                    wallet=owner, stake_account=account, lockup=sm.LockupChange(epoch=1)
                )
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            details = rich_details(caught.value)
            assert details["ErrorInfo"].reason == "EPOCH_REWARDS_ACTIVE"
            assert details["RetryInfo"].retry_delay.ToNanoseconds() > 0
    finally:
        await lc.set_epoch_rewards(False)


def _requests(owner: str, account: str, other: str, vote: str) -> dict[str, Message]:
    """One request of each new RPC for ``owner``'s ``account``."""
    return {
        "BuildSplitTransaction": sm.BuildSplitTransactionRequest(
            wallet=owner, stake_account=account, amount_lamports=SOL
        ),
        "BuildMoveStakeTransaction": sm.BuildMoveStakeTransactionRequest(
            wallet=owner,
            source_stake_account=account,
            destination_stake_account=other,
            amount_lamports=SOL,
        ),
        "BuildAuthorizeTransaction": sm.BuildAuthorizeTransactionRequest(
            wallet=owner,
            stake_account=account,
            new_authority=str(Keypair().pubkey()),
            authority_type=sm.STAKE_AUTHORITY_TYPE_STAKER,
        ),
        "BuildSetLockupTransaction": sm.BuildSetLockupTransactionRequest(
            wallet=owner, stake_account=account, lockup=sm.LockupChange(epoch=1)
        ),
        "BuildRedelegateTransaction": sm.BuildRedelegateTransactionRequest(
            wallet=owner, stake_account=account, vote_account=vote
        ),
    }


def _method(
    stub: staking_pb2_grpc.StakingServiceAsyncStub, name: str
) -> Callable[[Message], Awaitable[Any]]:
    method: Callable[[Message], Awaitable[Any]] = getattr(stub, name)
    return method


async def test_key_policies_apply_to_every_new_rpc(lifecycle: Lifecycle) -> None:
    lc = lifecycle
    wallet = await lc.wallet(20)
    owner = str(wallet.pubkey())
    first, second, *_ = await lc.validators()
    account = await lc.stake(wallet, 3 * SOL, vote=first)
    other = await lc.stake(wallet, 2 * SOL, vote=first)
    await lc.advance_epochs(1)
    requests = _requests(owner, account, other, second)

    # Every new RPC builds for an unrestricted key...
    for name, request in requests.items():
        await _method(lc.staking, name)(request)

    # ...and for no wallet outside allowed_wallets.
    elsewhere = await lc.staking_with(KeyPolicy(allowed_wallets=(str(Keypair().pubkey()),)))
    for name, request in requests.items():
        metadata = await _refused(
            _method(elsewhere, name)(request),
            StatusCode.PERMISSION_DENIED,
            "POLICY_WALLET_NOT_ALLOWED",
        )
        assert metadata["wallet"] == owner, name

    # Not more lamports than max_lamports_per_transaction: the amount split or moved,
    # the stake redelegated, the balance a withdraw authority change hands over.
    capped = await lc.staking_with(KeyPolicy(max_lamports_per_transaction=SOL - 1))
    handover = sm.BuildAuthorizeTransactionRequest(
        wallet=owner,
        stake_account=account,
        new_authority=str(Keypair().pubkey()),
        authority_type=sm.STAKE_AUTHORITY_TYPE_WITHDRAWER,
    )
    for name, request in [*requests.items(), ("BuildAuthorizeTransaction", handover)]:
        if name == "BuildSetLockupTransaction" or request is requests["BuildAuthorizeTransaction"]:
            await _method(capped, name)(request)  # no lamports move
            continue
        metadata = await _refused(
            _method(capped, name)(request),
            StatusCode.PERMISSION_DENIED,
            "POLICY_MAX_LAMPORTS_EXCEEDED",
        )
        assert int(metadata["requested_lamports"]) >= SOL, name

    # Only to allowed vote accounts.
    voters = await lc.staking_with(KeyPolicy(allowed_vote_accounts=(first,)))
    metadata = await _refused(
        _method(voters, "BuildRedelegateTransaction")(requests["BuildRedelegateTransaction"]),
        StatusCode.PERMISSION_DENIED,
        "POLICY_VOTE_ACCOUNT_NOT_ALLOWED",
    )
    assert metadata["vote_account"] == second

    # A withdraw authority only to an allowed wallet.
    heir = str(Keypair().pubkey())
    wallets = await lc.staking_with(KeyPolicy(allowed_wallets=(owner, heir)))
    metadata = await _refused(
        wallets.BuildAuthorizeTransaction(handover),
        StatusCode.PERMISSION_DENIED,
        "POLICY_WITHDRAWER_NOT_ALLOWED",
    )
    assert metadata["new_withdrawer"] == handover.new_authority
    handover.new_authority = heir
    allowed = await wallets.BuildAuthorizeTransaction(handover)
    assert allowed.leaves_wallet_positions

    # Only the methods the key allows.
    split_only = await lc.staking_with(KeyPolicy(allowed_methods=("BuildSplitTransaction",)))
    for name, request in requests.items():
        if name == "BuildSplitTransaction":
            await _method(split_only, name)(request)
            continue
        metadata = await _refused(
            _method(split_only, name)(request),
            StatusCode.PERMISSION_DENIED,
            "API_KEY_METHOD_NOT_ALLOWED",
        )
        assert metadata["method"] == name
