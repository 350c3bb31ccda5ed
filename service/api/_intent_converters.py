"""Pure proto <-> domain conversions of receipts, intents and the managed nonce."""

from __future__ import annotations

from agentstaking.v1 import intents_pb2, receipts_pb2
from google.protobuf import any_pb2

from service.chain import BuiltNonceAccount, Intent, IntentKey, IntentState, NonceAccountParams
from service.core.seeds import check_request_id
from service.receipts import KeyStatus, ReceiptKey

from ._converters import (
    _timestamp,
    options_to_domain,
    prepared_fields,
    transaction_error_to_proto,
)

_KEY_STATUSES = {
    KeyStatus.ACTIVE: receipts_pb2.RECEIPT_KEY_STATUS_ACTIVE,
    KeyStatus.NEXT: receipts_pb2.RECEIPT_KEY_STATUS_NEXT,
    KeyStatus.RETIRED: receipts_pb2.RECEIPT_KEY_STATUS_RETIRED,
}
_STATES = {
    IntentState.BUILT: receipts_pb2.INTENT_STATE_BUILT,
    IntentState.SUBMITTED: receipts_pb2.INTENT_STATE_SUBMITTED,
    IntentState.LANDED: receipts_pb2.INTENT_STATE_LANDED,
    IntentState.FAILED: receipts_pb2.INTENT_STATE_FAILED,
    IntentState.EXPIRED: receipts_pb2.INTENT_STATE_EXPIRED,
}


def intent_state_to_proto(state: IntentState) -> receipts_pb2.IntentState.ValueType:
    return _STATES[state]


def receipt_key_to_proto(key: ReceiptKey) -> receipts_pb2.ReceiptKey:
    result = receipts_pb2.ReceiptKey(
        key_id=key.key_id,
        public_key=key.public_key,
        algorithm="ed25519",
        status=_KEY_STATUSES[key.status],
        create_time=_timestamp(key.create_time.timestamp()),
    )
    if key.retire_time is not None:
        result.retire_time.CopyFrom(_timestamp(key.retire_time.timestamp()))
    return result


def intent_key(request_id: str, *, scope: str) -> IntentKey:
    """The key of GetIntent's request_id in the caller's scope.

    Raises:
        InvalidArgumentError: Empty or longer than a request_id can be.
    """
    return IntentKey(scope=scope, request_id=check_request_id(request_id, required=True))


def intent_to_proto(intent: Intent) -> intents_pb2.Intent:
    shown = intent.landed_attempt or intent.latest
    result = intents_pb2.Intent(
        request_id=intent.key.request_id,
        kind=intent.kind,
        wallet=intent.wallet,
        state=_STATES[intent.state],
        signature=intent.signature,
        attempts=[
            intents_pb2.IntentAttempt(
                attempt=a.number,
                state=_STATES[a.state],
                message_sha256=a.message_sha256,
                recent_blockhash=a.recent_blockhash,
                last_valid_block_height=a.last_valid_block_height,
                nonce_account=a.nonce_account,
                signature=a.signature,
                create_time=_timestamp(a.create_time),
            )
            for a in intent.attempts
        ],
        response=any_pb2.Any(
            type_url=f"type.googleapis.com/agentstaking.v1.{intent.kind}Response",
            value=shown.response,
        ),
        create_time=_timestamp(intent.create_time),
        update_time=_timestamp(intent.update_time),
        expire_time=_timestamp(intent.expire_time),
    )
    if intent.error is not None:
        result.error.CopyFrom(transaction_error_to_proto(intent.error))
    return result


def nonce_request_to_domain(
    request: intents_pb2.BuildNonceAccountTransactionRequest,
) -> NonceAccountParams:
    return NonceAccountParams(
        wallet=request.wallet,
        close=request.close,
        request_id=request.request_id,
        options=options_to_domain(request.options, wallet=request.wallet),
    )


def nonce_response_to_proto(
    built: BuiltNonceAccount,
) -> intents_pb2.BuildNonceAccountTransactionResponse:
    plan = built.plan
    return intents_pb2.BuildNonceAccountTransactionResponse(
        transaction=prepared_fields(plan.prepared, built.simulation),
        nonce_account=str(plan.nonce_account),
        nonce_authority=str(plan.nonce_authority),
        account_lamports=plan.account_lamports,
    )
