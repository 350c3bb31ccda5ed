"""Receipts checked as a client would: with an Ed25519 implementation of its own
(libsodium, through PyNaCl), against the keys the server publishes.

`ReceiptCheck` is a client interceptor: every Build* response that a test's stub
receives is checked, so every build any test makes proves its receipt.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from agentstaking.v1 import receipts_pb2, types_pb2
from nacl.signing import VerifyKey

BUILD_PREFIX = "/agentstaking.v1.StakingService/Build"


def verify_receipt(
    prepared: types_pb2.PreparedTransaction, keys: Iterable[receipts_pb2.ReceiptKey]
) -> dict[str, Any]:
    """The payload of a valid receipt of ``prepared``; AssertionError otherwise.

    Raises:
        nacl.exceptions.BadSignatureError: The signature does not verify.
    """
    receipt = prepared.receipt
    assert receipt.payload and receipt.signature and receipt.key_id, "no receipt"
    published = {key.key_id: key.public_key for key in keys}
    assert receipt.key_id in published, f"unpublished receipt key {receipt.key_id}"
    VerifyKey(published[receipt.key_id]).verify(receipt.payload.encode(), receipt.signature)
    payload: dict[str, Any] = json.loads(receipt.payload)
    assert payload["key_id"] == receipt.key_id
    assert payload["message_sha256"] == hashlib.sha256(prepared.message).hexdigest()
    assert payload["required_signers"] == list(prepared.required_signers)
    assert payload["wallet"] == prepared.required_signers[0]
    assert payload["recent_blockhash"] == prepared.recent_blockhash
    assert payload["last_valid_block_height"] == str(prepared.last_valid_block_height)
    fees = prepared.fees
    assert payload["fees"] == {
        "service_fee_lamports": str(fees.service_fee_lamports),
        "service_fee_bps": str(fees.service_fee_bps),
        "fee_recipient": fees.fee_recipient,
        "network_fee_lamports": str(fees.network_fee_lamports),
        "priority_fee_lamports": str(fees.priority_fee_lamports),
        "rent_exempt_reserve_lamports": str(fees.rent_exempt_reserve_lamports),
        "total_debit_lamports": str(fees.total_debit_lamports),
    }
    return payload


def published_keys(server: Any) -> Callable[[], list[receipts_pb2.ReceiptKey]]:
    """The public keys an AgentStakingServer publishes (its receipt key file's)."""

    def keys() -> list[receipts_pb2.ReceiptKey]:
        return [
            receipts_pb2.ReceiptKey(key_id=key.key_id, public_key=key.public_key)
            for key in server.receipts.published()
        ]

    return keys


class ReceiptCheck(grpc.aio.UnaryUnaryClientInterceptor):
    """Checks the receipt of every Build* response against ``keys()`` (the server's
    published keys); counts what it checked, by RPC."""

    def __init__(self, keys: Callable[[], Iterable[receipts_pb2.ReceiptKey]]) -> None:
        self._keys = keys
        self.checked: Counter[str] = Counter()

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        call = await continuation(details, request)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if not method.startswith(BUILD_PREFIX):
            return call
        try:
            response = await call
        except grpc.aio.AioRpcError:
            return call  # the test looks at the error itself
        kind = method.rsplit("/", 1)[1]
        payload = verify_receipt(response.transaction, self._keys())
        assert payload["kind"] == kind, (payload["kind"], kind)
        self.checked[kind] += 1
        return call
