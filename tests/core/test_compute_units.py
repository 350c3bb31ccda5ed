"""Compute units of the stake plan, measured on the runtime.

The plan's default SetComputeUnitLimit is the measured consumption plus 20%,
rounded up to a thousand (``plans._stake``). This suite re-measures every variant
and fails if any exceeds its default, or if the recorded measurements drift.
Run with ``-s`` to print the table.
"""

from __future__ import annotations

import pytest
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from service.core import (
    MAX_MEMO_BYTES,
    DurableNonce,
    RecentBlockhash,
    ServiceFee,
    StakeContext,
    StakeRequest,
    TransactionOptions,
    TransactionVersion,
    build_stake_transaction,
    default_stake_compute_unit_limit,
)
from service.core.plans import MEASURED_AUTHORIZE_CU, MEASURED_MEMO_CU, MEASURED_STAKE_CU
from service.core.programs import STAKE_ACCOUNT_SIZE
from tests.core._chain import (
    create_nonce_account,
    create_vote_account,
    funded_keypair,
    new_svm,
    ok,
    sign_prepared,
    stored_nonce,
)

SOL = 10**9


def _measure(
    svm: LiteSVM,
    vote: Pubkey,
    *,
    version: TransactionVersion,
    nonce: bool,
    price: bool,
    memo: bool,
    authorize: bool,
) -> tuple[int, int]:
    """(consumed, default limit) for one variant, on a fresh wallet."""
    wallet = funded_keypair(svm, 10 * SOL)
    lifetime: RecentBlockhash | DurableNonce = RecentBlockhash(
        blockhash=svm.latest_blockhash(), last_valid_block_height=1
    )
    if nonce:
        account = create_nonce_account(svm, wallet, wallet.pubkey())
        lifetime = DurableNonce(
            nonce_account=account, nonce_authority=wallet.pubkey(), nonce=stored_nonce(svm, account)
        )
    request = StakeRequest(
        wallet=wallet.pubkey(),
        vote_account=vote,
        amount_lamports=2 * SOL,
        seed="stake:" + "m" * 26,
        stake_authority=Keypair().pubkey() if authorize else None,
        service_fee=ServiceFee(bps=10, recipient=Keypair().pubkey()),
        options=TransactionOptions(
            version=version,
            compute_unit_price_micro_lamports=1_000 if price else 0,
            # The memo program's cost follows the byte count: use the longest memo.
            memo=("€" * (MAX_MEMO_BYTES // 3) + "~" * (MAX_MEMO_BYTES % 3)) if memo else "",
        ),
    )
    context = StakeContext(
        lifetime=lifetime,
        rent_exempt_reserve_lamports=svm.minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE),
        minimum_delegation_lamports=SOL,
    )
    plan = build_stake_transaction(request, context)
    meta = ok(svm.send_transaction(sign_prepared(plan.prepared, [wallet])))
    svm.expire_blockhash()
    return meta.compute_units_consumed(), plan.prepared.compute_unit_limit


# (version, durable nonce, priority fee, memo, separate stake authority)
Variant = tuple[TransactionVersion, bool, bool, bool, bool]
_FLAGS = (False, True)
VARIANTS: list[Variant] = [
    (version, nonce, price, memo, authorize)
    for version in TransactionVersion
    for nonce in _FLAGS
    for price in _FLAGS
    for memo in _FLAGS
    for authorize in _FLAGS
]


@pytest.fixture(scope="module")
def measurements() -> dict[Variant, tuple[int, int]]:
    svm = new_svm()
    vote = create_vote_account(svm, funded_keypair(svm, 1_000 * SOL))
    return {
        (version, nonce, price, memo, authorize): _measure(
            svm, vote, version=version, nonce=nonce, price=price, memo=memo, authorize=authorize
        )
        for version, nonce, price, memo, authorize in VARIANTS
    }


def test_every_variant_fits_its_default_limit(
    measurements: dict[Variant, tuple[int, int]],
) -> None:
    print()
    print(
        f"{'version':7} {'nonce':5} {'price':5} {'memo':5} {'auth':5} {'consumed':>8} {'limit':>7}"
    )
    for (version, *flags), (used, limit) in measurements.items():
        print(f"{version.value:7} " + " ".join(f"{f!s:5}" for f in flags) + f" {used:8} {limit:7}")
        authorize = flags[-1]
        assert limit == default_stake_compute_unit_limit(separate_stake_authority=authorize)
        assert used <= limit


def test_recorded_measurements_are_current(
    measurements: dict[Variant, tuple[int, int]],
) -> None:
    """The constants the defaults come from still describe the runtime (within 3%)."""

    def used(authorize: bool, memo: bool) -> int:
        return max(
            u for (_, _, _, m, a), (u, _) in measurements.items() if a is authorize and m is memo
        )

    base = used(authorize=False, memo=False)
    assert abs(base - MEASURED_STAKE_CU) <= MEASURED_STAKE_CU * 3 // 100
    memo = used(authorize=False, memo=True) - base
    assert abs(memo - MEASURED_MEMO_CU) <= MEASURED_MEMO_CU * 3 // 100
    authorize = used(authorize=True, memo=False) - base
    assert abs(authorize - MEASURED_AUTHORIZE_CU) <= MEASURED_AUTHORIZE_CU * 3 // 100
