"""The stake plan as a pure function (execution on the runtime: test_chain_stake.py)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from service.core import (
    DEFAULT_STAKE_COMPUTE_UNIT_LIMIT,
    DEFAULT_STAKE_WITH_AUTHORIZE_COMPUTE_UNIT_LIMIT,
    MAX_MEMO_BYTES,
    BelowMinimumDelegationError,
    DomainError,
    DurableNonce,
    ErrorKind,
    FieldViolationsError,
    InsufficientFundsError,
    InvalidAddressError,
    InvalidArgumentError,
    Lockup,
    MemoTooLongError,
    PriorityFeeCap,
    RecentBlockhash,
    SeedPurpose,
    ServiceFee,
    StakeContext,
    StakeRequest,
    TransactionOptions,
    TransactionTooLargeError,
    TransactionVersion,
    build_stake_transaction,
    memo,
    seed_from_request_id,
    stake_account_address,
)
from service.core.plans import prepare_transaction
from service.core.programs import MAX_TRANSACTION_SIZE, STAKE_PROGRAM

SOL = 10**9
RENT = 2_282_880
WALLET = Keypair.from_seed(bytes(range(32))).pubkey()
VOTE = Pubkey.from_string("Vote111111111111111111111111111111111111112")
FEE_WALLET = Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")
BLOCKHASH = Hash(bytes(range(1, 33)))
SEED = seed_from_request_id(purpose=SeedPurpose.STAKE, wallet=WALLET, request_id="req-1")


def _request(**changes: object) -> StakeRequest:
    base = StakeRequest(
        wallet=WALLET,
        vote_account=VOTE,
        amount_lamports=2 * SOL,
        seed=SEED,
        service_fee=ServiceFee(bps=10, recipient=FEE_WALLET),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _context(**changes: object) -> StakeContext:
    base = StakeContext(
        lifetime=RecentBlockhash(blockhash=BLOCKHASH, last_valid_block_height=1_234),
        rent_exempt_reserve_lamports=RENT,
        minimum_delegation_lamports=SOL,
        epoch=7,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _types(request: StakeRequest, context: StakeContext) -> list[str]:
    prepared = build_stake_transaction(request, context).prepared
    return [f"{s.program}.{s.type}" for s in prepared.instructions]


BODY = ["System.CreateAccountWithSeed", "Stake.Initialize", "Stake.DelegateStake"]


def test_default_plan_shape() -> None:
    plan = build_stake_transaction(_request(), _context())
    p = plan.prepared
    assert [f"{s.program}.{s.type}" for s in p.instructions] == [
        "ComputeBudget.SetComputeUnitLimit",
        *BODY,
        "System.Transfer",
    ]
    assert plan.stake_account == stake_account_address(base=WALLET, seed=SEED)
    assert plan.stake_account == Pubkey.create_with_seed(WALLET, SEED, STAKE_PROGRAM)
    assert (plan.stake_lamports, plan.stake_authority, plan.withdraw_authority) == (
        2 * SOL,
        WALLET,
        WALLET,
    )
    assert plan.activation_epoch == 7
    assert p.required_signers == (WALLET,)
    assert p.version is TransactionVersion.V0
    assert (p.recent_blockhash, p.last_valid_block_height) == (BLOCKHASH, 1_234)
    assert p.compute_unit_limit == DEFAULT_STAKE_COMPUTE_UNIT_LIMIT
    create = p.instructions[1]
    assert create.param("lamports") == 2 * SOL + RENT
    assert create.param("space") == 200
    assert create.param("owner") == str(STAKE_PROGRAM)
    assert p.instructions[-1].param("lamports") == 2_000_000


def test_fee_breakdown() -> None:
    fees = build_stake_transaction(_request(), _context()).prepared.fees
    assert fees.service_fee_lamports == 2_000_000
    assert fees.service_fee_bps == 10
    assert fees.fee_recipient == FEE_WALLET
    assert fees.network_fee_lamports == 5_000
    assert fees.priority_fee_lamports == 0
    assert fees.rent_exempt_reserve_lamports == RENT
    assert fees.total_debit_lamports == 2 * SOL + RENT + 2_000_000 + 5_000


def test_zero_bps_means_no_fee_instruction() -> None:
    request = _request(service_fee=ServiceFee())
    assert "System.Transfer" not in _types(request, _context())
    fees = build_stake_transaction(request, _context()).prepared.fees
    assert (fees.service_fee_lamports, fees.fee_recipient) == (0, None)
    # A fee that floors to zero adds no instruction either.
    tiny = _request(amount_lamports=SOL, service_fee=ServiceFee(bps=1, recipient=FEE_WALLET))
    tiny_plan = build_stake_transaction(tiny, _context(minimum_delegation_lamports=1))
    assert tiny_plan.prepared.fees.service_fee_lamports == 100_000
    small = _request(amount_lamports=9_999, service_fee=ServiceFee(bps=1, recipient=FEE_WALLET))
    assert "System.Transfer" not in _types(small, _context(minimum_delegation_lamports=1))


def test_message_and_wire_bytes_agree_for_both_versions() -> None:
    for version, cls in ((TransactionVersion.V0, MessageV0), (TransactionVersion.LEGACY, Message)):
        p = build_stake_transaction(
            _request(options=TransactionOptions(version=version)), _context()
        ).prepared
        tx = VersionedTransaction.from_bytes(p.transaction)
        assert isinstance(tx.message, cls)
        assert tx.signatures == [Signature.default()]
        assert to_bytes_versioned(tx.message) == p.message
        assert (p.message[0] == 0x80) is (version is TransactionVersion.V0)


def test_same_inputs_same_bytes_and_request_id_pins_the_address() -> None:
    a = build_stake_transaction(_request(), _context())
    b = build_stake_transaction(_request(), _context())
    assert a == b
    assert a.prepared.transaction == b.prepared.transaction
    later = build_stake_transaction(
        _request(),
        _context(lifetime=RecentBlockhash(blockhash=Hash.new_unique(), last_valid_block_height=9)),
    )
    assert later.stake_account == a.stake_account
    assert later.prepared.transaction != a.prepared.transaction


def test_compute_budget_options() -> None:
    options = TransactionOptions(
        compute_unit_price_micro_lamports=12_345, compute_unit_limit=33_333
    )
    p = build_stake_transaction(_request(options=options), _context()).prepared
    assert [s.type for s in p.instructions[:2]] == ["SetComputeUnitLimit", "SetComputeUnitPrice"]
    assert p.instructions[0].param("units") == 33_333
    assert p.fees.priority_fee_lamports == 412
    assert p.fees.total_debit_lamports == 2 * SOL + RENT + 2_000_000 + 5_000 + 412


@given(
    price=st.integers(0, 2**64 - 1),
    limit=st.integers(1, 1_400_000),
    cap=st.integers(0, 10**9),
    automatic=st.booleans(),
    by_policy=st.booleans(),
)
def test_the_priority_fee_never_exceeds_its_cap(
    price: int, limit: int, cap: int, automatic: bool, by_policy: bool
) -> None:
    """A price from recent fees is lowered to fit the cap (as high as fits); one the
    caller set is refused, naming who set the cap."""
    options = TransactionOptions(
        compute_unit_price_micro_lamports=price,
        compute_unit_limit=limit,
        priority_fee_cap=PriorityFeeCap(lamports=cap, by_policy=by_policy),
        automatic_price=automatic,
    )
    uncapped = -(-price * limit // 10**6)
    try:
        p = build_stake_transaction(_request(options=options), _context()).prepared
    except DomainError as exc:
        assert not automatic and uncapped > cap
        assert exc.reason == (
            "POLICY_MAX_PRIORITY_FEE_EXCEEDED" if by_policy else "PRIORITY_FEE_TOO_HIGH"
        )
        largest = int(exc.metadata["max_compute_unit_price_micro_lamports"])
        assert -(-largest * limit // 10**6) <= cap < -(-(largest + 1) * limit // 10**6)
        return
    assert p.fees.priority_fee_lamports <= cap
    if uncapped <= cap:
        assert p.compute_unit_price_micro_lamports == price
    else:
        assert automatic
        # As high as fits: one micro-lamport more would not.
        assert -(-(p.compute_unit_price_micro_lamports + 1) * limit // 10**6) > cap


def test_memo_comes_last_and_is_signed_by_the_wallet() -> None:
    p = build_stake_transaction(
        _request(options=TransactionOptions(memo="for agent #7")), _context()
    )
    last = p.prepared.instructions[-1]
    assert (last.program, last.param("memo")) == ("Memo", "for agent #7")
    assert [(a.address, a.is_signer) for a in last.accounts] == [(WALLET, True)]
    with pytest.raises(MemoTooLongError) as info:
        TransactionOptions(memo="é" * (MAX_MEMO_BYTES // 2 + 1))
    assert info.value.field == "options.memo"


def test_durable_nonce_comes_first_and_replaces_the_blockhash() -> None:
    nonce_account, nonce_value = Pubkey.new_unique(), Hash.new_unique()
    lifetime = DurableNonce(nonce_account=nonce_account, nonce_authority=WALLET, nonce=nonce_value)
    p = build_stake_transaction(_request(), _context(lifetime=lifetime)).prepared
    assert p.instructions[0].type == "AdvanceNonceAccount"
    assert p.instructions[0].accounts[0].address == nonce_account
    assert (p.recent_blockhash, p.last_valid_block_height) == (nonce_value, 0)
    assert p.required_signers == (WALLET,)
    assert p.durable_nonce == lifetime
    # A separate nonce authority is a second signer and a second signature fee.
    other = Keypair().pubkey()
    lifetime2 = DurableNonce(nonce_account=nonce_account, nonce_authority=other, nonce=nonce_value)
    p2 = build_stake_transaction(_request(), _context(lifetime=lifetime2)).prepared
    assert p2.required_signers == (WALLET, other)
    assert p2.fees.network_fee_lamports == 10_000


def test_separate_stake_authority_keeps_one_signer() -> None:
    authority = Pubkey.new_unique()  # may be off curve: it never signs
    plan = build_stake_transaction(_request(stake_authority=authority), _context())
    p = plan.prepared
    assert [f"{s.program}.{s.type}" for s in p.instructions][1:5] == [*BODY, "Stake.Authorize"]
    authorize = p.instructions[4]
    assert (authorize.param("new_authority"), authorize.param("role")) == (str(authority), "staker")
    assert p.required_signers == (WALLET,)
    assert plan.stake_authority == authority
    assert p.compute_unit_limit == DEFAULT_STAKE_WITH_AUTHORIZE_COMPUTE_UNIT_LIMIT


def test_lockup_goes_into_initialize() -> None:
    custodian = Pubkey.new_unique()
    lockup = Lockup(unix_timestamp=1_900_000_000, epoch=12, custodian=custodian)
    p = build_stake_transaction(_request(lockup=lockup), _context()).prepared
    init = p.instructions[2]
    assert (init.param("lockup_unix_timestamp"), init.param("lockup_epoch")) == (1_900_000_000, 12)
    assert init.param("lockup_custodian") == str(custodian)


def test_worst_case_fits_the_packet_limit() -> None:
    """Nonce with its own authority, separate stake authority, price, longest seed and
    the longest memo: the memo limit is chosen so this still fits."""
    lifetime = DurableNonce(
        nonce_account=Pubkey.new_unique(),
        nonce_authority=Keypair().pubkey(),
        nonce=Hash.new_unique(),
    )
    for version in TransactionVersion:
        options = TransactionOptions(
            version=version,
            compute_unit_price_micro_lamports=10**12,
            compute_unit_limit=1_400_000,
            memo="~" * MAX_MEMO_BYTES,
        )
        request = _request(
            stake_authority=Pubkey.new_unique(),
            options=options,
            lockup=Lockup(unix_timestamp=1, custodian=Pubkey.new_unique()),
        )
        size = len(
            build_stake_transaction(request, _context(lifetime=lifetime)).prepared.transaction
        )
        assert size <= MAX_TRANSACTION_SIZE


def test_oversized_transactions_are_refused() -> None:
    body = [memo("x" * 400) for _ in range(3)]
    with pytest.raises(TransactionTooLargeError) as info:
        prepare_transaction(
            payer=WALLET,
            body=body,
            options=TransactionOptions(),
            lifetime=RecentBlockhash(blockhash=BLOCKHASH, last_valid_block_height=1),
            default_compute_unit_limit=1_000,
            body_debit_lamports=0,
            service_fee=ServiceFee(),
            service_fee_lamports=0,
        )
    assert int(info.value.metadata["size"]) > MAX_TRANSACTION_SIZE


def test_below_minimum_delegation() -> None:
    with pytest.raises(BelowMinimumDelegationError) as info:
        build_stake_transaction(_request(amount_lamports=SOL - 1), _context())
    assert info.value.metadata["minimum_lamports"] == str(SOL)
    assert info.value.field == "amount_lamports"


def test_insufficient_funds_when_the_balance_is_known() -> None:
    total = build_stake_transaction(_request(), _context()).prepared.fees.total_debit_lamports
    build_stake_transaction(_request(), _context(wallet_balance_lamports=total))
    with pytest.raises(InsufficientFundsError) as info:
        build_stake_transaction(_request(), _context(wallet_balance_lamports=total - 1))
    assert info.value.metadata["shortfall_lamports"] == "1"
    assert info.value.kind is ErrorKind.FAILED_PRECONDITION


def test_request_validation() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        _request(vote_account=WALLET)
    assert info.value.field == "vote_account"
    with pytest.raises(InvalidArgumentError) as info:
        _request(service_fee=ServiceFee(bps=5, recipient=WALLET))
    assert info.value.field == "fee_recipient"
    off_curve = Pubkey.find_program_address([b"x"], STAKE_PROGRAM)[0]
    with pytest.raises(InvalidAddressError) as info2:
        _request(wallet=off_curve)
    assert info2.value.field == "wallet"
    with pytest.raises(FieldViolationsError) as info3:
        _request(amount_lamports=0, seed="x" * 40)
    assert [v.field for v in info3.value.violations] == ["amount_lamports", "seed"]
    assert [v.reason for v in info3.value.violations] == ["INVALID_AMOUNT", "SEED_TOO_LONG"]


def test_nonce_account_must_be_its_own_account() -> None:
    lifetime = DurableNonce(nonce_account=VOTE, nonce_authority=WALLET, nonce=Hash.new_unique())
    with pytest.raises(InvalidArgumentError) as info:
        build_stake_transaction(_request(), _context(lifetime=lifetime))
    assert info.value.field == "options.durable_nonce.nonce_account"
    with pytest.raises(InvalidAddressError):
        DurableNonce(
            nonce_account=VOTE,
            nonce_authority=Pubkey.find_program_address([b"y"], STAKE_PROGRAM)[0],
            nonce=Hash.new_unique(),
        )


@settings(max_examples=60)
@given(
    amount=st.integers(SOL, 10**18),
    bps=st.integers(0, 10_000),
    price=st.integers(0, 10**9),
    limit=st.integers(0, 1_400_000),
    legacy=st.booleans(),
)
def test_total_debit_is_the_sum_of_its_parts(
    amount: int, bps: int, price: int, limit: int, legacy: bool
) -> None:
    version = TransactionVersion.LEGACY if legacy else TransactionVersion.V0
    options = TransactionOptions(
        version=version, compute_unit_price_micro_lamports=price, compute_unit_limit=limit
    )
    request = _request(
        amount_lamports=amount,
        service_fee=ServiceFee(bps=bps, recipient=FEE_WALLET),
        options=options,
    )
    p = build_stake_transaction(request, _context()).prepared
    f = p.fees
    assert f.service_fee_lamports == amount * bps // 10_000
    assert f.priority_fee_lamports == -(-price * p.compute_unit_limit // 1_000_000)
    assert f.total_debit_lamports == (
        amount + RENT + f.service_fee_lamports + f.network_fee_lamports + f.priority_fee_lamports
    )
    lamports_moved = sum(
        int(s.param("lamports"))
        for s in p.instructions
        if s.program == "System" and s.type in ("CreateAccountWithSeed", "Transfer")
    )
    assert (
        lamports_moved + f.network_fee_lamports + f.priority_fee_lamports == f.total_debit_lamports
    )
