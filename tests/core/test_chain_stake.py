"""The stake plan executed on the real runtime (LiteSVM, in process).

Each transaction is signed the way an agent would: sign the returned message
bytes, put the signature into the returned wire transaction, send it. Assertions
are on on-chain state and exact lamport movements.
"""

from __future__ import annotations

import itertools

import pytest
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from service.core import (
    DurableNonce,
    InvalidNonceAccountError,
    Lockup,
    PreparedStakeTransaction,
    RecentBlockhash,
    SeedPurpose,
    ServiceFee,
    StakeContext,
    StakeRequest,
    StakeStateKind,
    TransactionOptions,
    TransactionVersion,
    VoteAccountNotFoundError,
    build_stake_transaction,
    check_vote_account,
    decode_stake_account,
    seed_from_entropy,
    seed_from_request_id,
    stake_deactivate,
)
from service.core.programs import STAKE_ACCOUNT_SIZE, STAKE_PROGRAM, SYSTEM_PROGRAM, U64_MAX
from tests.core._chain import (
    balance,
    create_nonce_account,
    failed,
    funded_keypair,
    ok,
    send,
    sign_prepared,
    stored_nonce,
)

SOL = 10**9
MINIMUM_DELEGATION = SOL  # the runtime's value; GetMinimumDelegation test below


def _context(svm: LiteSVM, lifetime: RecentBlockhash | DurableNonce | None = None) -> StakeContext:
    return StakeContext(
        lifetime=lifetime
        or RecentBlockhash(blockhash=svm.latest_blockhash(), last_valid_block_height=300),
        rent_exempt_reserve_lamports=svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE),
        minimum_delegation_lamports=MINIMUM_DELEGATION,
        epoch=svm.get_clock().epoch,
    )


def _execute(
    svm: LiteSVM,
    plan: PreparedStakeTransaction,
    signers: list[Keypair],
    fee_recipient: Pubkey | None,
) -> int:
    """Send the plan; check the wallet debit and fee receipt; return compute units."""
    payer = plan.prepared.required_signers[0]
    before = balance(svm, payer)
    recipient_before = balance(svm, fee_recipient) if fee_recipient else 0
    meta = ok(svm.send_transaction(sign_prepared(plan.prepared, signers)))
    fees = plan.prepared.fees
    assert before - balance(svm, payer) == fees.total_debit_lamports
    assert meta.fee() == fees.network_fee_lamports + fees.priority_fee_lamports
    if fee_recipient is not None:
        assert balance(svm, fee_recipient) - recipient_before == fees.service_fee_lamports
    assert meta.compute_units_consumed() <= plan.prepared.compute_unit_limit
    return meta.compute_units_consumed()


def _assert_delegated(
    svm: LiteSVM,
    plan: PreparedStakeTransaction,
    wallet: Pubkey,
    vote: Pubkey,
    staker: Pubkey | None = None,
) -> None:
    address = Pubkey.create_with_seed(wallet, plan.seed, STAKE_PROGRAM)
    assert address == plan.stake_account
    account = svm.get_account(address)
    assert account is not None and account.owner == STAKE_PROGRAM
    rent = svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE)
    assert account.lamports == plan.stake_lamports + rent
    state = decode_stake_account(bytes(account.data))
    assert state.state is StakeStateKind.STAKE
    assert state.delegation is not None and state.meta is not None
    assert state.delegation.voter == vote
    assert state.delegation.stake == plan.stake_lamports
    assert state.delegation.activation_epoch == svm.get_clock().epoch
    assert state.delegation.deactivation_epoch == U64_MAX
    assert state.meta.authorized.withdrawer == wallet
    assert state.meta.authorized.staker == (staker or wallet)


VARIANTS = list(
    itertools.product(
        [TransactionVersion.V0, TransactionVersion.LEGACY],
        [False, True],  # durable nonce
        [False, True],  # memo + priority fee
        [0, 10],  # service fee bps
    )
)


@pytest.mark.parametrize(
    ("version", "use_nonce", "extras", "bps"),
    VARIANTS,
    ids=[
        f"{v.value}-{'nonce' if n else 'blockhash'}-{'memo+price' if x else 'plain'}-{b}bps"
        for v, n, x, b in VARIANTS
    ],
)
def test_stake_transaction_executes(
    svm: LiteSVM,
    wallet: Keypair,
    vote_account: Pubkey,
    fee_recipient: Pubkey,
    version: TransactionVersion,
    use_nonce: bool,
    extras: bool,
    bps: int,
) -> None:
    lifetime: RecentBlockhash | DurableNonce | None = None
    nonce_account = None
    if use_nonce:
        nonce_account = create_nonce_account(svm, wallet, wallet.pubkey())
        fetched = svm.get_account(nonce_account)
        assert fetched is not None
        # As chain/ would: read the account, check it, take its nonce as the blockhash.
        lifetime = DurableNonce.from_account(
            nonce_account=nonce_account,
            nonce_authority=wallet.pubkey(),
            data=bytes(fetched.data),
            owner=fetched.owner,
        )
        assert lifetime.nonce == stored_nonce(svm, nonce_account)
    options = TransactionOptions(
        version=version,
        memo="staked by agent 42 ✓" if extras else "",
        compute_unit_price_micro_lamports=25_000 if extras else 0,
    )
    request = StakeRequest(
        wallet=wallet.pubkey(),
        vote_account=vote_account,
        amount_lamports=3 * SOL + 123_456_789,
        seed=seed_from_request_id(
            purpose=SeedPurpose.STAKE, wallet=wallet.pubkey(), request_id=f"req-{version}-{bps}"
        ),
        service_fee=ServiceFee(bps=bps, recipient=fee_recipient if bps else None),
        options=options,
    )
    plan = build_stake_transaction(request, _context(svm, lifetime))
    assert plan.prepared.required_signers == (wallet.pubkey(),)
    _execute(svm, plan, [wallet], fee_recipient)
    _assert_delegated(svm, plan, wallet.pubkey(), vote_account)
    if bps:
        assert balance(svm, fee_recipient) == (3 * SOL + 123_456_789) * bps // 10_000
    else:
        assert svm.get_account(fee_recipient) is None
    if nonce_account is not None:
        assert isinstance(lifetime, DurableNonce)
        assert stored_nonce(svm, nonce_account) != lifetime.nonce  # the nonce was advanced


def test_separate_nonce_authority_signs_too(
    svm: LiteSVM, wallet: Keypair, vote_account: Pubkey
) -> None:
    authority = funded_keypair(svm, SOL)
    nonce_account = create_nonce_account(svm, wallet, authority.pubkey())
    lifetime = DurableNonce(
        nonce_account=nonce_account,
        nonce_authority=authority.pubkey(),
        nonce=stored_nonce(svm, nonce_account),
    )
    request = StakeRequest(
        wallet=wallet.pubkey(),
        vote_account=vote_account,
        amount_lamports=2 * SOL,
        seed=seed_from_entropy(
            purpose=SeedPurpose.STAKE, wallet=wallet.pubkey(), entropy=bytes(16)
        ),
    )
    plan = build_stake_transaction(request, _context(svm, lifetime))
    assert plan.prepared.required_signers == (wallet.pubkey(), authority.pubkey())
    authority_before = balance(svm, authority.pubkey())
    _execute(svm, plan, [wallet, authority], None)
    assert balance(svm, authority.pubkey()) == authority_before  # the wallet pays all fees
    _assert_delegated(svm, plan, wallet.pubkey(), vote_account)


def test_separate_stake_authority_with_one_signature(
    svm: LiteSVM, wallet: Keypair, vote_account: Pubkey, fee_recipient: Pubkey
) -> None:
    authority = funded_keypair(svm, SOL)
    request = StakeRequest(
        wallet=wallet.pubkey(),
        vote_account=vote_account,
        amount_lamports=2 * SOL,
        seed="stake:authority-test",
        stake_authority=authority.pubkey(),
        service_fee=ServiceFee(bps=25, recipient=fee_recipient),
    )
    plan = build_stake_transaction(request, _context(svm))
    assert plan.prepared.required_signers == (wallet.pubkey(),)
    _execute(svm, plan, [wallet], fee_recipient)
    _assert_delegated(svm, plan, wallet.pubkey(), vote_account, staker=authority.pubkey())
    # The stake role really moved: the wallet alone can no longer deactivate...
    deactivate = stake_deactivate(stake_account=plan.stake_account, staker=wallet.pubkey())
    failed(send(svm, [deactivate], [wallet]))
    # ...the stake authority can.
    deactivate = stake_deactivate(stake_account=plan.stake_account, staker=authority.pubkey())
    ok(send(svm, [deactivate], [wallet, authority]))


def test_lockup_is_recorded(svm: LiteSVM, wallet: Keypair, vote_account: Pubkey) -> None:
    custodian = Pubkey.new_unique()
    lockup = Lockup(unix_timestamp=1_800_000_000, epoch=9, custodian=custodian)
    request = StakeRequest(
        wallet=wallet.pubkey(),
        vote_account=vote_account,
        amount_lamports=SOL,
        seed="stake:lockup",
        lockup=lockup,
    )
    plan = build_stake_transaction(request, _context(svm))
    _execute(svm, plan, [wallet], None)
    account = svm.get_account(plan.stake_account)
    assert account is not None
    state = decode_stake_account(bytes(account.data))
    assert state.meta is not None and state.meta.lockup == lockup


def test_same_request_id_cannot_stake_twice(
    svm: LiteSVM, wallet: Keypair, vote_account: Pubkey
) -> None:
    def plan() -> PreparedStakeTransaction:
        seed = seed_from_request_id(
            purpose=SeedPurpose.STAKE, wallet=wallet.pubkey(), request_id="once"
        )
        request = StakeRequest(
            wallet=wallet.pubkey(), vote_account=vote_account, amount_lamports=SOL, seed=seed
        )
        return build_stake_transaction(request, _context(svm))

    first = plan()
    ok(svm.send_transaction(sign_prepared(first.prepared, [wallet])))
    svm.expire_blockhash()
    second = plan()
    assert second.stake_account == first.stake_account
    assert second.prepared.transaction != first.prepared.transaction
    failed(svm.send_transaction(sign_prepared(second.prepared, [wallet])))
    account = svm.get_account(first.stake_account)
    assert account is not None and account.lamports == SOL + 2_282_880


def test_minimum_delegation_is_enforced_by_the_runtime_too(
    svm: LiteSVM, wallet: Keypair, vote_account: Pubkey
) -> None:
    """Our check mirrors the program's: 1 lamport under the minimum fails on chain."""
    rent = svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE)
    context = StakeContext(
        lifetime=RecentBlockhash(blockhash=svm.latest_blockhash(), last_valid_block_height=1),
        rent_exempt_reserve_lamports=rent,
        minimum_delegation_lamports=0,  # bypass our own check
    )
    request = StakeRequest(
        wallet=wallet.pubkey(),
        vote_account=vote_account,
        amount_lamports=MINIMUM_DELEGATION - 1,
        seed="stake:too-small",
    )
    plan = build_stake_transaction(request, context)
    failed(svm.send_transaction(sign_prepared(plan.prepared, [wallet])))


def test_nonce_account_checks(svm: LiteSVM, wallet: Keypair, vote_account: Pubkey) -> None:
    nonce_account = create_nonce_account(svm, wallet, wallet.pubkey())
    fetched = svm.get_account(nonce_account)
    assert fetched is not None
    with pytest.raises(InvalidNonceAccountError) as info:
        DurableNonce.from_account(
            nonce_account=nonce_account,
            nonce_authority=Keypair().pubkey(),
            data=bytes(fetched.data),
        )
    assert info.value.field == "options.durable_nonce.nonce_authority"
    assert info.value.metadata["authority"] == str(wallet.pubkey())
    with pytest.raises(InvalidNonceAccountError):
        DurableNonce.from_account(
            nonce_account=nonce_account,
            nonce_authority=wallet.pubkey(),
            data=bytes(fetched.data),
            owner=STAKE_PROGRAM,
        )
    # A vote account is no nonce account.
    vote = svm.get_account(vote_account)
    assert vote is not None
    with pytest.raises(InvalidNonceAccountError):
        DurableNonce.from_account(
            nonce_account=vote_account, nonce_authority=wallet.pubkey(), data=bytes(vote.data)
        )


def test_vote_account_check(svm: LiteSVM, vote_account: Pubkey, wallet: Keypair) -> None:
    vote = svm.get_account(vote_account)
    assert vote is not None
    check_vote_account(address=vote_account, owner=vote.owner)
    with pytest.raises(VoteAccountNotFoundError) as info:
        check_vote_account(address=wallet.pubkey(), owner=SYSTEM_PROGRAM)
    assert info.value.field == "vote_account"
    with pytest.raises(VoteAccountNotFoundError):
        check_vote_account(address=Pubkey.new_unique(), owner=None)
