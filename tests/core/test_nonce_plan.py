"""The managed nonce account plan, as data and executed on LiteSVM: created by the
wallet alone, usable as a durable nonce, closed back into the wallet."""

from __future__ import annotations

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.core import DurableNonce, RecentBlockhash, TransactionOptions
from service.core.errors import InsufficientFundsError, InvalidArgumentError
from service.core.fees import ServiceFee
from service.core.plans import (
    MANAGED_NONCE_SEED,
    ManagedNonceExistsError,
    ManagedNonceMissingError,
    NonceAccountContext,
    NonceAccountRequest,
    build_nonce_account_transaction,
    managed_nonce_address,
    prepare_transaction,
)
from service.core.plans._nonce import MEASURED_NONCE_CLOSE_CU, MEASURED_NONCE_CREATE_CU
from service.core.programs import NONCE_ACCOUNT_SIZE, SYSTEM_PROGRAM
from tests.core._chain import balance, funded_keypair, new_svm, ok, sign_prepared, stored_nonce

SOL = 10**9
WALLET = Keypair.from_seed(bytes(range(32))).pubkey()
BLOCKHASH = RecentBlockhash(blockhash=Hash(bytes(range(1, 33))), last_valid_block_height=99)


def _context(**changes: object) -> NonceAccountContext:
    values: dict[str, object] = {
        "lifetime": BLOCKHASH,
        "rent_exempt_lamports": 1_447_680,
        "account_lamports": None,
    }
    values.update(changes)
    return NonceAccountContext(**values)  # type: ignore[arg-type]


def test_address_is_derived_from_the_wallet() -> None:
    address = managed_nonce_address(WALLET)
    assert address == Pubkey.create_with_seed(WALLET, MANAGED_NONCE_SEED, SYSTEM_PROGRAM)
    assert address != managed_nonce_address(Keypair().pubkey())


def test_create_and_close_shapes() -> None:
    create = build_nonce_account_transaction(NonceAccountRequest(wallet=WALLET), _context())
    p = create.prepared
    assert [f"{s.program}.{s.type}" for s in p.instructions] == [
        "ComputeBudget.SetComputeUnitLimit",
        "System.CreateAccountWithSeed",
        "System.InitializeNonceAccount",
    ]
    assert p.required_signers == (WALLET,)
    assert p.instructions[1].param("space") == NONCE_ACCOUNT_SIZE
    assert create.account_lamports == p.fees.rent_exempt_reserve_lamports == 1_447_680
    assert p.fees.total_debit_lamports == 1_447_680 + p.fees.network_fee_lamports
    assert p.fees.service_fee_lamports == 0
    close = build_nonce_account_transaction(
        NonceAccountRequest(wallet=WALLET, close=True), _context(account_lamports=1_500_000)
    )
    assert [s.type for s in close.prepared.instructions][1:] == ["WithdrawNonceAccount"]
    assert close.account_lamports == close.prepared.instructions[1].param("lamports") == 1_500_000
    assert close.prepared.fees.total_debit_lamports == close.prepared.fees.network_fee_lamports


def test_refusals() -> None:
    with pytest.raises(ManagedNonceExistsError):
        build_nonce_account_transaction(
            NonceAccountRequest(wallet=WALLET), _context(account_lamports=1)
        )
    with pytest.raises(ManagedNonceMissingError) as missing:
        build_nonce_account_transaction(NonceAccountRequest(wallet=WALLET, close=True), _context())
    assert missing.value.metadata["nonce_account"] == str(managed_nonce_address(WALLET))
    nonce = DurableNonce(
        nonce_account=Keypair().pubkey(), nonce_authority=WALLET, nonce=Hash.default()
    )
    with pytest.raises(InvalidArgumentError):
        build_nonce_account_transaction(
            NonceAccountRequest(wallet=WALLET), _context(lifetime=nonce)
        )
    with pytest.raises(InsufficientFundsError):
        build_nonce_account_transaction(
            NonceAccountRequest(wallet=WALLET), _context(wallet_balance_lamports=1_000)
        )


def test_lifecycle_on_the_runtime() -> None:
    """Create with the wallet's signature alone, build against it as a durable nonce
    (which advances it), then close it: the rent comes back. Compute units as measured."""
    svm = new_svm()
    wallet = funded_keypair(svm)
    owner = wallet.pubkey()
    rent = svm.minimum_balance_for_rent_exemption(NONCE_ACCOUNT_SIZE)

    def lifetime() -> RecentBlockhash:
        return RecentBlockhash(blockhash=svm.latest_blockhash(), last_valid_block_height=1)

    def run(prepared: object) -> int:
        meta = ok(svm.send_transaction(sign_prepared(prepared, [wallet])))  # type: ignore[arg-type]
        svm.expire_blockhash()
        return meta.compute_units_consumed()

    budget = prepare_transaction(
        payer=owner,
        body=[],
        options=TransactionOptions(),
        lifetime=lifetime(),
        default_compute_unit_limit=1_000,
        body_debit_lamports=0,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
    )
    base = run(budget)
    create = build_nonce_account_transaction(
        NonceAccountRequest(wallet=owner),
        _context(lifetime=lifetime(), rent_exempt_lamports=rent),
    )
    used = run(create.prepared) - base
    assert abs(used - MEASURED_NONCE_CREATE_CU) <= MEASURED_NONCE_CREATE_CU * 3 // 100, used
    address = create.nonce_account
    assert balance(svm, address) == rent
    first = stored_nonce(svm, address)
    # A transaction built on the managed nonce lands and advances it.
    advanced = prepare_transaction(
        payer=owner,
        body=[],
        options=TransactionOptions(),
        lifetime=DurableNonce(nonce_account=address, nonce_authority=owner, nonce=first),
        default_compute_unit_limit=1_000,
        body_debit_lamports=0,
        service_fee=ServiceFee(),
        service_fee_lamports=0,
    )
    run(advanced)
    assert stored_nonce(svm, address) != first
    before = balance(svm, owner)
    close = build_nonce_account_transaction(
        NonceAccountRequest(wallet=owner, close=True),
        _context(lifetime=lifetime(), rent_exempt_lamports=rent, account_lamports=rent),
    )
    used = run(close.prepared) - base
    assert abs(used - MEASURED_NONCE_CLOSE_CU) <= MEASURED_NONCE_CLOSE_CU * 3 // 100, used
    assert svm.get_account(address) is None or balance(svm, address) == 0
    assert balance(svm, owner) == before + rent - close.prepared.fees.total_debit_lamports
