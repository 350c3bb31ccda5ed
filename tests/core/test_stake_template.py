"""The stake plan's message templates give what its general builder gives: the same
bytes, signers, summaries and fees, and tell the accounts that price the plan without
building it, for random inputs of every shape (execution on the runtime:
test_chain_stake.py, which goes through the templates)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from service.core import (
    DomainError,
    DurableNonce,
    Lockup,
    RecentBlockhash,
    ServiceFee,
    StakeContext,
    StakeRequest,
    TransactionOptions,
    TransactionVersion,
    build_stake_transaction,
)
from service.core.plans import MAX_MEMO_BYTES, fee_market_accounts
from service.core.plans import _stake as stake_plan
from service.core.programs import (
    COMPUTE_BUDGET_PROGRAM,
    MAX_COMPUTE_UNIT_LIMIT,
    MEMO_PROGRAM,
    STAKE_CONFIG,
    STAKE_PROGRAM,
    SYSTEM_PROGRAM,
    SYSVAR_CLOCK,
    SYSVAR_RECENT_BLOCKHASHES,
    SYSVAR_RENT,
    SYSVAR_STAKE_HISTORY,
    U64_MAX,
)
from tests.core.strategies import hashes, i64s, pubkeys, seeds, u64s

SOL = 10**9
RENT = 2_282_880


def _keys(tag: str, *, signing: bool = False) -> st.SearchStrategy[Pubkey]:
    """Random keys, distinct from those of any other tag (hashed with it)."""

    def key(raw: bytes) -> Pubkey:
        digest = hashlib.sha256(tag.encode() + raw).digest()
        return Keypair.from_seed(digest).pubkey() if signing else Pubkey.from_bytes(digest)

    return st.binary(max_size=8).map(key)


# Keys the message holds anyway: an input equal to one of them changes the layout.
FIXED = [
    SYSTEM_PROGRAM,
    STAKE_PROGRAM,
    COMPUTE_BUDGET_PROGRAM,
    MEMO_PROGRAM,
    SYSVAR_CLOCK,
    SYSVAR_RENT,
    SYSVAR_STAKE_HISTORY,
    SYSVAR_RECENT_BLOCKHASHES,
    STAKE_CONFIG,
]
memos = st.text(min_size=1, max_size=60).filter(lambda t: len(t.encode()) <= MAX_MEMO_BYTES)
SHAPES = list(
    itertools.product(
        TransactionVersion,
        stake_plan._NonceSigner,
        *[(False, True)] * 5,  # priority fee, stake authority, service fee, memo, lockup
    )
)


def _outcome(build: Callable[[], Any]) -> Any:
    try:
        return build()
    except DomainError as exc:
        return type(exc), str(exc)


def _both(request: StakeRequest, context: StakeContext) -> tuple[Any, Any]:
    filled, general = (
        _outcome(lambda: build_stake_transaction(request, context)),
        _outcome(lambda: build_stake_transaction(request, context, template=False)),
    )
    _check_fee_market_accounts(request, context, general)
    return filled, general


def _check_fee_market_accounts(request: StakeRequest, context: StakeContext, built: Any) -> None:
    """The accounts that price the plan, told without building it: those of the plan
    built, None exactly where the template gives way to the general builder, or the
    build's own refusal, in its place."""
    told = _outcome(lambda: stake_plan.check_stake(request, context).fee_market_accounts())
    if isinstance(built, tuple):
        assert told == built
        return
    values = _values(request, context)
    if stake_plan._stake_template(values.pop("shape")).fill(values) is None:
        assert told is None
    else:
        assert told == fee_market_accounts(built.prepared)


@st.composite
def _inputs(draw: st.DrawFn, shape: tuple[Any, ...]) -> tuple[StakeRequest, StakeContext]:
    version, nonce, priced, separate, fee, with_memo, locked = shape
    wallet = draw(_keys("wallet", signing=True))
    lockup = None
    if locked:
        lockup = draw(
            st.builds(Lockup, unix_timestamp=i64s, epoch=u64s, custodian=_keys("c")).filter(
                lambda lockup: not lockup.is_none
            )
        )
    elif draw(st.booleans()):
        lockup = Lockup(
            unix_timestamp=draw(st.integers(max_value=0, min_value=-(2**63))),
            custodian=draw(pubkeys),
        )
    lifetime: RecentBlockhash | DurableNonce = RecentBlockhash(
        blockhash=draw(hashes), last_valid_block_height=draw(u64s)
    )
    if nonce is not stake_plan._NonceSigner.NONE:
        lifetime = DurableNonce(
            nonce_account=draw(_keys("nonce")),
            nonce_authority=(
                draw(_keys("authority", signing=True))
                if nonce is stake_plan._NonceSigner.OTHER
                else wallet
            ),
            nonce=draw(hashes),
        )
    request = StakeRequest(
        wallet=wallet,
        vote_account=draw(_keys("vote")),
        amount_lamports=draw(st.integers(min_value=SOL, max_value=U64_MAX // 2)),
        seed=draw(seeds),
        stake_authority=draw(_keys("staker")) if separate else None,
        lockup=lockup,
        service_fee=(
            ServiceFee(bps=draw(st.integers(1, 10_000)), recipient=draw(_keys("fee")))
            if fee
            else ServiceFee()
        ),
        options=TransactionOptions(
            version=version,
            compute_unit_price_micro_lamports=draw(st.integers(1, 10**12)) if priced else 0,
            compute_unit_limit=draw(st.sampled_from([0, 1, 127, 128, MAX_COMPUTE_UNIT_LIMIT])),
            memo=draw(memos) if with_memo else "",
        ),
    )
    context = StakeContext(
        lifetime=lifetime,
        rent_exempt_reserve_lamports=RENT,
        minimum_delegation_lamports=SOL,
        epoch=draw(st.none() | u64s),
    )
    return request, context


@pytest.mark.parametrize(
    "shape", SHAPES, ids=lambda s: "-".join(str(getattr(v, "value", v)) for v in s)
)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_shape_fills_the_general_builders_bytes_and_summaries(
    shape: tuple[Any, ...], data: st.DataObject
) -> None:
    request, context = data.draw(_inputs(shape))
    filled, general = _both(request, context)
    assert filled == general
    if isinstance(filled, tuple):  # refused (e.g. a debit over u64): no template to check
        return
    layout = stake_plan._StakeShape(*shape)
    assert filled.prepared.transaction[1 + 64 * len(filled.prepared.required_signers) :] == (
        filled.prepared.message
    )
    # Distinct keys: the template, not the general builder, made it.
    values = _values(request, context)
    assert values.pop("shape") == layout
    assert stake_plan._stake_template(layout).fill(values) is not None


def _values(request: StakeRequest, context: StakeContext) -> dict[str, Any]:
    """What build_stake_transaction fills in (the accounts that decide the layout)."""
    values: dict[str, Any] = {}
    original = stake_plan._compile_stake

    def spy(shape: Any, given: Any) -> Any:
        values.update(given, shape=shape)
        return original(shape, given)

    stake_plan._compile_stake = spy  # type: ignore[assignment]
    try:
        build_stake_transaction(request, context, template=False)
    finally:
        stake_plan._compile_stake = original
    return values


@settings(max_examples=300, deadline=None)
@given(data=st.data(), shape=st.sampled_from(SHAPES))
def test_coinciding_accounts_take_the_general_builder(
    data: st.DataObject, shape: tuple[Any, ...]
) -> None:
    """Inputs drawn from a few keys and the message's fixed keys: coincidences change
    the layout (merged accounts), and the result is still the general builder's."""
    request, context = data.draw(_inputs(shape))
    few = st.sampled_from([*FIXED, request.wallet, Pubkey.new_unique()])
    vote = data.draw(few)
    fee = data.draw(few)
    changes: dict[str, Any] = {"vote_account": vote}
    if request.service_fee.bps:
        changes["service_fee"] = ServiceFee(bps=request.service_fee.bps, recipient=fee)
    try:
        request = StakeRequest(**{**request.__dict__, **changes})
    except DomainError:
        return
    lifetime = context.lifetime
    if isinstance(lifetime, DurableNonce):
        authority = data.draw(
            st.sampled_from([vote, fee, request.wallet, lifetime.nonce_authority])
        )
        try:
            lifetime = DurableNonce(
                nonce_account=data.draw(few),
                nonce_authority=authority,
                nonce=lifetime.nonce,
            )
        except DomainError:
            return
        context = StakeContext(**{**context.__dict__, "lifetime": lifetime})
    filled, general = _both(request, context)
    assert filled == general
