"""The receipt payload as a pure function of the message bytes and plain values."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from solders.hash import Hash
from solders.pubkey import Pubkey

from service.core import (
    DurableNonce,
    PreparedStakeTransaction,
    RecentBlockhash,
    SeedPurpose,
    ServiceFee,
    StakeContext,
    StakeRequest,
    TransactionOptions,
    TransactionVersion,
    build_stake_transaction,
    seed_from_request_id,
    stake_account_address,
)
from service.core.receipts import (
    RECEIPT_TYPE,
    Change,
    InstructionAmount,
    LamportMovement,
    ReceiptFees,
    ReceiptPayload,
    changes_between,
    format_issue_time,
    instruction_amounts,
    key_id_for,
    parse_receipt_payload,
    receipt_payload,
    signature_valid,
)
from tests.core.test_plan_stake import BLOCKHASH, FEE_WALLET, RENT, SOL, VOTE, WALLET

SEED = seed_from_request_id(purpose=SeedPurpose.STAKE, wallet=WALLET, request_id="order-1")
NONCE_ACCOUNT = Pubkey.from_string("7Np41oeYqPefeNQEHSv1UDhYrehxin3NStELsSKCT4K2")
NONCE = Hash(bytes(range(100, 132)))
SIGNING = SigningKey(bytes(range(50, 82)))
KEY_ID = key_id_for(bytes(SIGNING.verify_key))


def _plan(
    *,
    lifetime: RecentBlockhash | DurableNonce | None = None,
    amount: int = 2 * SOL,
    **options: object,
) -> PreparedStakeTransaction:
    return build_stake_transaction(
        StakeRequest(
            wallet=WALLET,
            vote_account=VOTE,
            amount_lamports=amount,
            seed=SEED,
            service_fee=ServiceFee(bps=10, recipient=FEE_WALLET),
            options=TransactionOptions(**options),  # type: ignore[arg-type]
        ),
        StakeContext(
            lifetime=lifetime
            or RecentBlockhash(blockhash=BLOCKHASH, last_valid_block_height=1_234),
            rent_exempt_reserve_lamports=RENT,
            minimum_delegation_lamports=SOL,
            epoch=7,
        ),
    )


def _stake(
    *,
    lifetime: RecentBlockhash | DurableNonce | None = None,
    amount: int = 2 * SOL,
    **options: object,
) -> tuple[bytes, ReceiptFees, int]:
    p = _plan(lifetime=lifetime, amount=amount, **options).prepared
    fees = ReceiptFees(
        service_fee_lamports=p.fees.service_fee_lamports,
        service_fee_bps=p.fees.service_fee_bps,
        fee_recipient=str(p.fees.fee_recipient or ""),
        network_fee_lamports=p.fees.network_fee_lamports,
        priority_fee_lamports=p.fees.priority_fee_lamports,
        rent_exempt_reserve_lamports=p.fees.rent_exempt_reserve_lamports,
        total_debit_lamports=p.fees.total_debit_lamports,
    )
    return p.message, fees, p.last_valid_block_height


def _payload(
    message: bytes,
    fees: ReceiptFees,
    lvbh: int,
    instructions: tuple[InstructionAmount, ...] | None = None,
    **changes: object,
) -> ReceiptPayload:
    base = receipt_payload(
        message=message,
        instructions=instructions,
        fees=fees,
        last_valid_block_height=lvbh,
        kind="BuildStakeTransaction",
        request_id="order-1",
        attempt=1,
        api_key_id="k1",
        cluster="GENESIS",
        key_id=KEY_ID,
        issue_time_millis=1_893_456_000_123,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_payload_states_what_the_message_does() -> None:
    message, fees, lvbh = _stake()
    payload = _payload(message, fees, lvbh)
    assert payload.message_sha256 == hashlib.sha256(message).hexdigest()
    assert payload.wallet == str(WALLET) and payload.required_signers == (str(WALLET),)
    assert (payload.recent_blockhash, payload.nonce_account) == (str(BLOCKHASH), "")
    assert payload.last_valid_block_height == 1_234
    assert payload.transaction_version == "v0"
    assert payload.issue_time == "2030-01-01T00:00:00.123Z"
    stake = stake_account_address(base=WALLET, seed=SEED)
    assert str(stake) in payload.writable_accounts and str(VOTE) not in payload.writable_accounts
    moves = [(m.type, m.source, m.destination, m.lamports) for m in payload.lamport_movements]
    assert moves == [
        ("CreateAccountWithSeed", str(WALLET), str(stake), 2 * SOL + RENT),
        ("Transfer", str(WALLET), str(FEE_WALLET), 2_000_000),
    ]
    assert [m.instruction for m in payload.lamport_movements] == [1, 4]


def test_the_builds_own_decoding_gives_the_same_payload() -> None:
    """A build hands its instruction summaries to the receipt (no second decoding):
    they state the same movements as the message bytes."""
    plan = _plan()
    message, fees, lvbh = _stake()
    decoded = _payload(message, fees, lvbh)
    given = _payload(message, fees, lvbh, instruction_amounts(plan.prepared.instructions))
    assert given == decoded and len(given.lamport_movements) == 2


def test_canonical_form_is_sorted_compact_ascii_strings_only() -> None:
    message, fees, lvbh = _stake(memo="caf\u00e9 \u2603")
    text = _payload(message, fees, lvbh, request_id="r\u00e9sum\u00e9").canonical()
    assert text.isascii() and "\\u00e9" in text and not any(c.isspace() for c in text)
    value = json.loads(text)
    assert json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True) == text
    assert value["type"] == RECEIPT_TYPE and value["version"] == "1"
    assert value["request_id"] == "r\u00e9sum\u00e9"

    def leaves(node: object) -> list[object]:
        if isinstance(node, dict):
            return [leaf for child in node.values() for leaf in leaves(child)]
        if isinstance(node, list):
            return [leaf for child in node for leaf in leaves(child)]
        return [node]

    assert all(isinstance(leaf, str) for leaf in leaves(value))
    assert value["fees"]["total_debit_lamports"] == str(fees.total_debit_lamports)


# Any text (control characters, quotes, backslashes, non-ASCII) and any integer, each
# field's from its type: the canonical writer must escape and order exactly as the
# JSON encoder.
_PAYLOAD = st.builds(
    ReceiptPayload,
    fees=st.builds(ReceiptFees),
    lamport_movements=st.lists(st.builds(LamportMovement), max_size=3).map(tuple),
)


@given(_PAYLOAD)
def test_the_canonical_text_is_the_json_encoders_of_the_payload(payload: ReceiptPayload) -> None:
    assert payload.canonical() == json.dumps(
        payload.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )


def test_parse_is_the_inverse_of_the_canonical_form() -> None:
    message, fees, lvbh = _stake(version=TransactionVersion.LEGACY)
    payload = _payload(message, fees, lvbh)
    assert payload.transaction_version == "legacy"
    assert parse_receipt_payload(payload.canonical()) == payload
    with pytest.raises(ValueError, match=re.escape("not a agentstaking.v1.Receipt")):
        parse_receipt_payload('{"type": "other"}')
    broken = json.loads(payload.canonical())
    broken["attempt"] = 1  # a number, not a decimal string
    with pytest.raises(ValueError, match="malformed"):
        parse_receipt_payload(json.dumps(broken))


def test_durable_nonce_names_the_nonce_account() -> None:
    message, fees, lvbh = _stake(
        lifetime=DurableNonce(nonce_account=NONCE_ACCOUNT, nonce_authority=WALLET, nonce=NONCE)
    )
    payload = _payload(message, fees, lvbh)
    assert (payload.recent_blockhash, payload.nonce_account) == (str(NONCE), str(NONCE_ACCOUNT))
    assert payload.last_valid_block_height == 0


def test_signature_verifies_with_libsodium_and_tampering_fails() -> None:
    """Signed with PyNaCl here; checked by the core (solders) and by libsodium."""
    message, fees, lvbh = _stake()
    text = _payload(message, fees, lvbh).canonical()
    signature = SIGNING.sign(text.encode()).signature
    public = bytes(SIGNING.verify_key)
    assert signature_valid(payload=text, signature=signature, public_key=public)
    VerifyKey(public).verify(text.encode(), signature)
    tampered = text.replace(str(fees.total_debit_lamports), str(fees.total_debit_lamports - 1))
    assert tampered != text
    assert not signature_valid(payload=tampered, signature=signature, public_key=public)
    with pytest.raises(BadSignatureError):
        VerifyKey(public).verify(tampered.encode(), signature)
    other = bytes(SigningKey(bytes(32)).verify_key)
    assert not signature_valid(payload=text, signature=signature, public_key=other)
    assert not signature_valid(payload=text + "\u00e9", signature=signature, public_key=public)
    assert not signature_valid(payload=text, signature=signature[:63], public_key=public)


def test_key_id_names_the_public_key() -> None:
    assert KEY_ID.startswith("rk_") and len(KEY_ID) == 19
    assert key_id_for(bytes(SIGNING.verify_key)) == KEY_ID
    with pytest.raises(ValueError):
        key_id_for(b"short")


def test_a_rebuild_with_the_same_world_changes_nothing_but_the_lifetime() -> None:
    message, fees, lvbh = _stake()
    first = _payload(message, fees, lvbh)
    again, fees2, lvbh2 = _stake(
        lifetime=RecentBlockhash(blockhash=Hash(bytes(range(2, 34))), last_valid_block_height=9_999)
    )
    second = _payload(again, fees2, lvbh2, attempt=2)
    assert second.message_sha256 != first.message_sha256
    assert changes_between(first, second) == ()


def test_changes_name_fees_amounts_and_balance() -> None:
    message, fees, lvbh = _stake()
    first = _payload(message, fees, lvbh)
    more, fees2, lvbh2 = _stake(amount=3 * SOL, compute_unit_price_micro_lamports=1_000)
    second = _payload(more, fees2, lvbh2)
    found = {
        c.field: c
        for c in changes_between(
            first, second, previous_wallet_balance=10 * SOL, current_wallet_balance=4 * SOL
        )
    }
    assert set(found) == {
        "fees.service_fee_lamports",
        "fees.priority_fee_lamports",
        "fees.total_debit_lamports",
        "lamport_movements",
        "wallet_balance_lamports",
    }
    assert found["wallet_balance_lamports"] == Change(
        field="wallet_balance_lamports", previous=str(10 * SOL), current=str(4 * SOL)
    )
    assert found["fees.total_debit_lamports"].description == (
        f"fees.total_debit_lamports: {fees.total_debit_lamports} -> {fees2.total_debit_lamports}"
    )
    # Unknown balance on either side: nothing said about it.
    assert "wallet_balance_lamports" not in {
        c.field for c in changes_between(first, second, current_wallet_balance=1)
    }


@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_issue_time_is_rfc3339_milliseconds(millis: int) -> None:
    text = format_issue_time(millis)
    assert text.endswith("Z") and len(text) == 24 and text[19] == "."
    assert int(text[20:23]) == millis % 1000
