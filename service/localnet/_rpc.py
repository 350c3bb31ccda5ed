"""Solana JSON-RPC 2.0 methods over a `LocalnetChain`.

Request and response shapes, encodings and error codes follow a real Agave node
so that unmodified Solana clients work against it. Every handler runs on the
chain's worker thread and returns the JSON `result` or raises `ChainError`.

Known differences from a real node: account state is the tip's at every commitment
(only the reported slot differs); `jsonParsed` falls back to base64; no websocket
subscriptions; getSupply counts the lamports of the accounts the localnet funded (not
sysvars and program accounts) and reports nothing as non-circulating; stake accounts
are assigned to reward partitions by SHA-256 rather than SipHash-1-3 (one partition
below 4,096 stake accounts either way). Inflation rewards are paid at every epoch
boundary as the runtime pays them (``_rewards``): getInflationReward, getInflationRate
and getInflationGovernor answer as a node does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from solders.account import Account
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from service.core import InvalidStakeAccountError, StakeHistoryEntry, decode_stake_account
from service.core.programs import STAKE_ACCOUNT_SIZE, STAKE_PROGRAM

from ._chain import DELINQUENT_SLOT_DISTANCE, ChainError, LocalnetChain, Outcome, TxRecord
from ._encoding import b58decode, b58encode
from ._rewards import BlockNotAvailableError, RewardsPeriodActiveError, inflation_rewards

VERSION = {"solana-core": "3.0.0", "feature-set": 3640012085}

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
PREFLIGHT_FAILURE = -32002
SIGNATURE_VERIFICATION_FAILURE = -32003
MIN_CONTEXT_SLOT_NOT_REACHED = -32016
BLOCK_NOT_AVAILABLE = -32004
EPOCH_REWARDS_PERIOD_ACTIVE = -32019
UNSUPPORTED_TRANSACTION_VERSION = -32015

MAX_MULTIPLE_ACCOUNTS = 100
MAX_SIGNATURE_STATUSES = 256
MAX_SIGNATURES_FOR_ADDRESS = 1000
MAX_BASE58_BYTES = 128
PACKET_DATA_SIZE = 1232

Params = list[Any]
Handler = Callable[[LocalnetChain, Params], Any]

_COMMITMENTS = {
    "processed": "processed",
    "recent": "processed",
    "single": "confirmed",
    "singleGossip": "confirmed",
    "confirmed": "confirmed",
    "finalized": "finalized",
    "max": "finalized",
    "root": "finalized",
}

# Display texts of the TransactionErrors a node prints in preflight messages.
_ERROR_TEXT = {
    "AccountInUse": "Account in use",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "SignatureFailure": "Transaction did not pass signature verification",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
}


def invalid_params(message: str) -> ChainError:
    return ChainError(INVALID_PARAMS, message)


# ----- parameter parsing ---------------------------------------------------------------


def _param(params: Params, index: int, name: str) -> Any:
    if len(params) <= index:
        raise invalid_params(f"`params` should have at least {index + 1} argument(s)")
    return params[index]


def _config(params: Params, index: int) -> Mapping[str, Any]:
    if len(params) <= index or params[index] is None:
        return {}
    config = params[index]
    if not isinstance(config, dict):
        raise invalid_params("Invalid params: invalid type: expected a config object.")
    # serde reads an explicit null as an absent option; clients send both.
    return {key: value for key, value in config.items() if value is not None}


def _pubkey(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise invalid_params("Invalid params: invalid type: expected a base58 string.")
    try:
        raw = b58decode(value)
    except ValueError:
        raise invalid_params("Invalid param: Invalid") from None
    if len(raw) != 32:
        raise invalid_params("Invalid param: WrongSize")
    return Pubkey(raw)


def _signature(value: Any) -> Signature:
    if not isinstance(value, str):
        raise invalid_params("Invalid params: invalid type: expected a base58 string.")
    try:
        raw = b58decode(value)
    except ValueError:
        raise invalid_params("Invalid param: Invalid") from None
    if len(raw) != 64:
        raise invalid_params("Invalid param: WrongSize")
    return Signature.from_bytes(raw)


def _u64(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise invalid_params(f"Invalid params: invalid value for `{name}`: expected u64.")
    return value


def _commitment(chain: LocalnetChain, config: Mapping[str, Any]) -> str:
    value = config.get("commitment", "finalized")
    if value not in _COMMITMENTS:
        raise invalid_params(f"Invalid params: unknown variant `{value}`.")
    commitment = _COMMITMENTS[value]
    min_slot = config.get("minContextSlot")
    if min_slot is not None and _u64(min_slot, "minContextSlot") > chain.slot_at(commitment):
        raise ChainError(
            MIN_CONTEXT_SLOT_NOT_REACHED,
            "Minimum context slot has not been reached",
            {"contextSlot": chain.slot_at(commitment)},
        )
    return commitment


def _context(chain: LocalnetChain, commitment: str) -> dict[str, Any]:
    return {"apiVersion": VERSION["solana-core"], "slot": chain.slot_at(commitment)}


def _decode_transaction(value: Any, encoding: str) -> tuple[VersionedTransaction, bytes]:
    if not isinstance(value, str):
        raise invalid_params("Invalid params: invalid type: expected an encoded transaction.")
    try:
        if encoding == "base58":
            wire = b58decode(value)
        elif encoding == "base64":
            wire = base64.b64decode(value, validate=True)
        else:
            raise invalid_params(f"Invalid params: unknown variant `{encoding}`.")
    except (ValueError, binascii.Error):
        raise invalid_params(f"invalid transaction: failed to decode {encoding} string") from None
    if len(wire) > PACKET_DATA_SIZE:
        raise invalid_params(
            f"{encoding} encoded solana_transaction::versioned::VersionedTransaction too large:"
            f" {len(wire)} bytes (max: encoded/raw {PACKET_DATA_SIZE * 4 // 3}/{PACKET_DATA_SIZE})"
        )
    try:
        tx = VersionedTransaction.from_bytes(wire)
        tx.sanitize()
    except Exception as exc:  # solders raises its own error types for malformed bytes
        raise invalid_params(
            f"failed to deserialize solana_transaction::versioned::VersionedTransaction: {exc}"
        ) from None
    return tx, wire


def _encode_account(account: Account | None, encoding: str, data_slice: Any) -> Any:
    if account is None:
        return None
    data = bytes(account.data)
    if data_slice is not None:
        if not isinstance(data_slice, dict):
            raise invalid_params("Invalid params: invalid type for `dataSlice`.")
        offset = _u64(data_slice.get("offset", 0), "offset")
        length = _u64(data_slice.get("length", 0), "length")
        data = data[offset : offset + length]
    if encoding == "base58":
        if len(data) > MAX_BASE58_BYTES:
            raise invalid_params(
                "Encoded binary (base 58) data should be less than 128 bytes, please use Base64"
                " encoding."
            )
        encoded: Any = [b58encode(data), "base58"]
    elif encoding in ("base64", "jsonParsed"):
        # jsonParsed falls back to base64 for accounts without a parser, as a node does.
        encoded = [base64.b64encode(data).decode(), "base64"]
    else:
        raise invalid_params(f"Invalid params: unknown variant `{encoding}`.")
    return {
        "data": encoded,
        "executable": account.executable,
        "lamports": account.lamports,
        "owner": str(account.owner),
        "rentEpoch": account.rent_epoch,
        "space": len(account.data),
    }


def _account_encoding(config: Mapping[str, Any]) -> str:
    encoding = config.get("encoding", "base58")
    if encoding == "base64+zstd":
        raise invalid_params("Invalid params: base64+zstd is not supported by this node.")
    return str(encoding)


def error_message(err: Any) -> str:
    """The Display text of a TransactionError, as a node prints it."""
    if isinstance(err, str):
        return _ERROR_TEXT.get(err, err)
    if isinstance(err, dict) and "InstructionError" in err:
        index, inner = err["InstructionError"]
        if isinstance(inner, dict) and "Custom" in inner:
            text = f"custom program error: {inner['Custom']:#x}"
        else:
            text = str(inner if isinstance(inner, str) else next(iter(inner)))
        return f"Error processing Instruction {index}: {text}"
    if isinstance(err, dict) and "InsufficientFundsForRent" in err:
        index = err["InsufficientFundsForRent"]["account_index"]
        return f"Transaction results in an account ({index}) with insufficient funds for rent"
    return str(err)


def _simulation_value(outcome: Outcome, accounts: Any, replacement: Any) -> dict[str, Any]:
    return_data = None
    if outcome.return_data is not None:
        program, data = outcome.return_data
        return_data = {"programId": program, "data": [base64.b64encode(data).decode(), "base64"]}
    return {
        "err": outcome.err,
        "logs": outcome.logs,
        "accounts": accounts,
        "unitsConsumed": outcome.compute_units,
        "returnData": return_data,
        "innerInstructions": None,
        "replacementBlockhash": replacement,
        "loadedAccountsDataSize": None,
        "fee": outcome.fee if outcome.err is None else None,
        "preBalances": outcome.pre_balances or None,
        "postBalances": outcome.post_balances or None,
        "preTokenBalances": None,
        "postTokenBalances": None,
    }


def _failed_simulation(err: Any) -> Outcome:
    return Outcome(err=err, logs=[], compute_units=0, fee=0, return_data=None)


# ----- methods ---------------------------------------------------------------------------


def get_health(chain: LocalnetChain, params: Params) -> Any:
    return "ok"


def get_version(chain: LocalnetChain, params: Params) -> Any:
    return dict(VERSION)


def get_genesis_hash(chain: LocalnetChain, params: Params) -> Any:
    return str(chain.genesis_hash)


def get_slot(chain: LocalnetChain, params: Params) -> Any:
    return chain.slot_at(_commitment(chain, _config(params, 0)))


def get_block_height(chain: LocalnetChain, params: Params) -> Any:
    return chain.slot_at(_commitment(chain, _config(params, 0)))


def get_epoch_info(chain: LocalnetChain, params: Params) -> Any:
    slot = chain.slot_at(_commitment(chain, _config(params, 0)))
    epoch, slot_index = chain.schedule.get_epoch_and_slot_index(slot)
    return {
        "absoluteSlot": slot,
        "blockHeight": slot,
        "epoch": epoch,
        "slotIndex": slot_index,
        "slotsInEpoch": chain.schedule.get_slots_in_epoch(epoch),
        "transactionCount": chain.transaction_count,
    }


def get_epoch_schedule(chain: LocalnetChain, params: Params) -> Any:
    schedule = chain.schedule
    return {
        "slotsPerEpoch": schedule.slots_per_epoch,
        "leaderScheduleSlotOffset": schedule.leader_schedule_slot_offset,
        "warmup": schedule.warmup,
        "firstNormalEpoch": schedule.first_normal_epoch,
        "firstNormalSlot": schedule.first_normal_slot,
    }


def get_latest_blockhash(chain: LocalnetChain, params: Params) -> Any:
    commitment = _commitment(chain, _config(params, 0))
    blockhash, last_valid = chain.latest_blockhash(commitment)
    return {
        "context": _context(chain, commitment),
        "value": {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid},
    }


def is_blockhash_valid(chain: LocalnetChain, params: Params) -> Any:
    blockhash = _param(params, 0, "blockhash")
    if not isinstance(blockhash, str):
        raise invalid_params("Invalid params: invalid type: expected a base58 string.")
    commitment = _commitment(chain, _config(params, 1))
    return {"context": _context(chain, commitment), "value": chain.is_blockhash_valid(blockhash)}


def get_minimum_balance_for_rent_exemption(chain: LocalnetChain, params: Params) -> Any:
    size = _u64(_param(params, 0, "dataLength"), "dataLength")
    if size > 10 * 1024 * 1024:
        raise invalid_params("Invalid params: data length exceeds the maximum account size.")
    return chain.svm.minimum_balance_for_rent_exemption(size)


def get_stake_minimum_delegation(chain: LocalnetChain, params: Params) -> Any:
    commitment = _commitment(chain, _config(params, 0))
    return {"context": _context(chain, commitment), "value": chain.minimum_delegation}


def get_balance(chain: LocalnetChain, params: Params) -> Any:
    address = _pubkey(_param(params, 0, "pubkey"))
    commitment = _commitment(chain, _config(params, 1))
    return {"context": _context(chain, commitment), "value": chain.svm.get_balance(address) or 0}


def get_account_info(chain: LocalnetChain, params: Params) -> Any:
    address = _pubkey(_param(params, 0, "pubkey"))
    config = _config(params, 1)
    commitment = _commitment(chain, config)
    value = _encode_account(
        chain.svm.get_account(address), _account_encoding(config), config.get("dataSlice")
    )
    return {"context": _context(chain, commitment), "value": value}


def get_multiple_accounts(chain: LocalnetChain, params: Params) -> Any:
    addresses = _param(params, 0, "pubkeys")
    if not isinstance(addresses, list):
        raise invalid_params("Invalid params: invalid type: expected a list of pubkeys.")
    if len(addresses) > MAX_MULTIPLE_ACCOUNTS:
        raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
    keys = [_pubkey(a) for a in addresses]
    config = _config(params, 1)
    commitment = _commitment(chain, config)
    encoding = _account_encoding(config)
    values = [
        _encode_account(chain.svm.get_account(k), encoding, config.get("dataSlice")) for k in keys
    ]
    return {"context": _context(chain, commitment), "value": values}


def _size_check(size: int) -> Callable[[bytes], bool]:
    return lambda data: len(data) == size


def _memcmp_check(offset: int, wanted: bytes) -> Callable[[bytes], bool]:
    return lambda data: data[offset : offset + len(wanted)] == wanted


def _filter_matcher(filters: Any) -> Callable[[bytes], bool]:
    if filters is None:
        return lambda data: True
    if not isinstance(filters, list) or len(filters) > 4:
        raise invalid_params("Invalid params: too many filters provided; max 4")
    checks: list[Callable[[bytes], bool]] = []
    for item in filters:
        if not isinstance(item, dict) or len(item) != 1:
            raise invalid_params("Invalid params: invalid filter.")
        if "dataSize" in item:
            size = _u64(item["dataSize"], "dataSize")
            checks.append(_size_check(size))
        elif "memcmp" in item:
            memcmp = item["memcmp"]
            if not isinstance(memcmp, dict):
                raise invalid_params("Invalid params: invalid memcmp filter.")
            offset = _u64(memcmp.get("offset", 0), "offset")
            raw = memcmp.get("bytes")
            encoding = memcmp.get("encoding", "base58")
            try:
                if not isinstance(raw, str):
                    raise ValueError
                wanted = b58decode(raw) if encoding == "base58" else base64.b64decode(raw)
            except (ValueError, binascii.Error):
                raise invalid_params("Invalid params: memcmp bytes are not valid.") from None
            if len(wanted) > 128:
                raise invalid_params("Invalid params: memcmp filter bytes exceed 128.")
            checks.append(_memcmp_check(offset, wanted))
        else:
            raise invalid_params(f"Invalid params: unknown filter `{next(iter(item))}`.")
    return lambda data: all(check(data) for check in checks)


def get_program_accounts(chain: LocalnetChain, params: Params) -> Any:
    program = _pubkey(_param(params, 0, "programId"))
    config = _config(params, 1)
    commitment = _commitment(chain, config)
    encoding = _account_encoding(config)
    matches = _filter_matcher(config.get("filters"))
    value = [
        {
            "pubkey": str(address),
            "account": _encode_account(account, encoding, config.get("dataSlice")),
        }
        for address, account in chain.svm.get_program_accounts(program)
        if matches(bytes(account.data))
    ]
    value.sort(key=lambda item: item["pubkey"])
    if config.get("withContext"):
        return {"context": _context(chain, commitment), "value": value}
    return value


def get_vote_accounts(chain: LocalnetChain, params: Params) -> Any:
    config = _config(params, 0)
    commitment = _commitment(chain, config)
    slot = chain.slot_at(commitment)
    only = _pubkey(config["votePubkey"]) if config.get("votePubkey") else None
    distance = _u64(config.get("delinquentSlotDistance", DELINQUENT_SLOT_DISTANCE), "distance")
    keep_unstaked = bool(config.get("keepUnstakedDelinquents", False))
    current, delinquent = [], []
    for validator, stake, state in chain.vote_accounts():
        if only is not None and validator.vote_account != only:
            continue
        last_vote = state.last_voted_slot
        entry = {
            "votePubkey": str(validator.vote_account),
            "nodePubkey": str(state.node_pubkey),
            "activatedStake": stake,
            "epochVoteAccount": stake > 0,
            "commission": state.commission_percent,
            "inflationRewardsCommissionBps": state.inflation_rewards_commission_bps,
            "lastVote": last_vote,
            "epochCredits": [list(c) for c in state.epoch_credits[-5:]],
            "rootSlot": state.root_slot or 0,
        }
        if slot - last_vote > distance:
            if stake > 0 or keep_unstaked:
                delinquent.append(entry)
        else:
            current.append(entry)
    return {"current": current, "delinquent": delinquent}


def get_recent_prioritization_fees(chain: LocalnetChain, params: Params) -> Any:
    addresses = params[0] if params else []
    if addresses is None:
        addresses = []
    if not isinstance(addresses, list) or len(addresses) > 128:
        raise invalid_params("Too many inputs provided; max 128")
    keys = [_pubkey(a) for a in addresses]
    return [
        {"slot": slot, "prioritizationFee": fee} for slot, fee in chain.prioritization_fees(keys)
    ]


def get_inflation_reward(chain: LocalnetChain, params: Params) -> Any:
    addresses = _param(params, 0, "addresses")
    if not isinstance(addresses, list):
        raise invalid_params("Invalid params: invalid type: expected a list of pubkeys.")
    keys = [_pubkey(address) for address in addresses]
    config = _config(params, 1)
    commitment = _commitment(chain, config)
    if commitment == "processed":
        raise invalid_params("Method does not support commitment below `confirmed`")
    slot = chain.slot_at(commitment)
    epoch = config.get("epoch")
    if epoch is None:
        epoch = max(int(chain.schedule.get_epoch(slot)) - 1, 0)
    epoch = _u64(epoch, "epoch")
    # Rewards of an epoch are in the first blocks of the next one.
    first_slot = int(chain.schedule.get_first_slot_in_epoch(epoch + 1))
    try:
        found = inflation_rewards(
            chain.rewards.records.get(epoch), keys, first_slot=first_slot, slot=slot
        )
    except BlockNotAvailableError as exc:
        raise ChainError(BLOCK_NOT_AVAILABLE, str(exc)) from None
    except RewardsPeriodActiveError as exc:
        raise ChainError(
            EPOCH_REWARDS_PERIOD_ACTIVE,
            str(exc),
            {
                "currentBlockHeight": exc.block_height,
                "rewardsCompleteBlockHeight": exc.complete_block_height,
            },
        ) from None
    return [
        None
        if item is None
        else {
            "epoch": epoch,
            "effectiveSlot": item[1],
            "amount": item[0].lamports,
            "postBalance": item[0].post_balance,
            "commission": item[0].commission,
        }
        for item in found
    ]


def get_inflation_governor(chain: LocalnetChain, params: Params) -> Any:
    _commitment(chain, _config(params, 0))
    governor = chain.rewards.governor
    return {
        "initial": governor.initial,
        "terminal": governor.terminal,
        "taper": governor.taper,
        "foundation": governor.foundation,
        "foundationTerm": governor.foundation_term,
    }


def get_inflation_rate(chain: LocalnetChain, params: Params) -> Any:
    # A node answers from its finalized bank.
    rate = chain.rewards.rate(int(chain.schedule.get_epoch(chain.slot_at("finalized"))))
    return {
        "total": rate.total,
        "validator": rate.validator,
        "foundation": rate.foundation,
        "epoch": rate.epoch,
    }


def get_supply(chain: LocalnetChain, params: Params) -> Any:
    config = _config(params, 0)
    commitment = _commitment(chain, config)
    total = chain.rewards.capitalization
    # No account of the localnet is on the runtime's non-circulating lists.
    return {
        "context": _context(chain, commitment),
        "value": {
            "total": total,
            "circulating": total,
            "nonCirculating": 0,
            "nonCirculatingAccounts": [],
        },
    }


def _verify_signatures(tx: VersionedTransaction) -> None:
    if not all(tx.verify_with_results()):
        raise ChainError(
            SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure"
        )


def send_transaction(chain: LocalnetChain, params: Params) -> Any:
    config = _config(params, 1)
    tx, wire = _decode_transaction(
        _param(params, 0, "transaction"), config.get("encoding", "base58")
    )
    _verify_signatures(tx)
    signature = str(tx.signatures[0])
    skip_preflight = bool(config.get("skipPreflight", False))
    preflight_commitment = _COMMITMENTS.get(config.get("preflightCommitment", "finalized"))
    if preflight_commitment is None:
        raise invalid_params("Invalid params: unknown preflightCommitment.")
    if chain.transaction(signature) is not None:
        if skip_preflight:
            return signature  # a rebroadcast: the leader drops the duplicate
        _raise_preflight(chain, preflight_commitment, _failed_simulation("AlreadyProcessed"))
    if not chain.check_blockhash(tx):
        if skip_preflight:
            return signature  # dropped by the leader; it never lands
        _raise_preflight(chain, preflight_commitment, _failed_simulation("BlockhashNotFound"))
    if not skip_preflight:
        outcome = chain.simulate(tx)
        if outcome.err is not None:
            _raise_preflight(chain, preflight_commitment, outcome)
    chain.execute(tx, wire)
    return signature


def _raise_preflight(chain: LocalnetChain, commitment: str, outcome: Outcome) -> None:
    value = _simulation_value(outcome, None, None)
    raise ChainError(
        PREFLIGHT_FAILURE,
        f"Transaction simulation failed: {error_message(outcome.err)}",
        value,
    )


def simulate_transaction(chain: LocalnetChain, params: Params) -> Any:
    config = _config(params, 1)
    tx, _ = _decode_transaction(_param(params, 0, "transaction"), config.get("encoding", "base58"))
    commitment = _commitment(chain, config)
    sig_verify = bool(config.get("sigVerify", False))
    replace = bool(config.get("replaceRecentBlockhash", False))
    if sig_verify and replace:
        raise invalid_params("sigVerify may not be used with replaceRecentBlockhash")
    if sig_verify:
        _verify_signatures(tx)
    accounts_config = config.get("accounts")
    addresses: list[Pubkey] = []
    account_encoding = "base64"
    if accounts_config is not None:
        if not isinstance(accounts_config, dict) or not isinstance(
            accounts_config.get("addresses"), list
        ):
            raise invalid_params("Invalid params: invalid `accounts` config.")
        addresses = [_pubkey(a) for a in accounts_config["addresses"]]
        account_encoding = accounts_config.get("encoding", "base64")
        if account_encoding == "base58":
            raise invalid_params("base58 encoding not supported")
    replacement = None
    if replace:
        blockhash, last_valid = chain.latest_blockhash("processed")
        replacement = {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid}
    elif not chain.check_blockhash(tx):
        value = _simulation_value(_failed_simulation("BlockhashNotFound"), None, None)
        return {"context": _context(chain, commitment), "value": value}
    outcome = chain.simulate(tx, addresses)
    accounts = None
    if accounts_config is not None:
        accounts = [
            _encode_account(outcome.post_accounts.get(a), account_encoding, None) for a in addresses
        ]
    return {
        "context": _context(chain, commitment),
        "value": _simulation_value(outcome, accounts, replacement),
    }


def _confirmation_status(chain: LocalnetChain, record: TxRecord) -> tuple[str, int | None]:
    depth = chain.slot - record.slot
    if depth >= chain.config.finalized_depth:
        return "finalized", None
    return ("confirmed" if depth >= 1 else "processed"), depth


def get_signature_statuses(chain: LocalnetChain, params: Params) -> Any:
    signatures = _param(params, 0, "signatures")
    if not isinstance(signatures, list):
        raise invalid_params("Invalid params: invalid type: expected a list of signatures.")
    if len(signatures) > MAX_SIGNATURE_STATUSES:
        raise invalid_params(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
    search_history = bool(_config(params, 1).get("searchTransactionHistory", False))
    values: list[dict[str, Any] | None] = []
    for raw in signatures:
        record = chain.transaction(str(_signature(raw)))
        if record is None or not (search_history or chain.is_recent(record)):
            values.append(None)
            continue
        status, confirmations = _confirmation_status(chain, record)
        values.append(
            {
                "slot": record.slot,
                "confirmations": confirmations,
                "err": record.err,
                "status": {"Ok": None} if record.err is None else {"Err": record.err},
                "confirmationStatus": status,
            }
        )
    return {"context": _context(chain, "processed"), "value": values}


def get_signatures_for_address(chain: LocalnetChain, params: Params) -> Any:
    address = _pubkey(_param(params, 0, "address"))
    config = _config(params, 1)
    commitment = _commitment(chain, config)
    if commitment == "processed":
        raise invalid_params("Method does not support commitment below `confirmed`")
    limit = _u64(config.get("limit", MAX_SIGNATURES_FOR_ADDRESS), "limit")
    if not 1 <= limit <= MAX_SIGNATURES_FOR_ADDRESS:
        raise invalid_params(f"Invalid limit; max {MAX_SIGNATURES_FOR_ADDRESS}")
    before = config.get("before")
    until = config.get("until")
    records = chain.signatures_for_address(
        address,
        max_slot=chain.slot_at(commitment),
        before=str(_signature(before)) if before is not None else None,
        until=str(_signature(until)) if until is not None else None,
        limit=limit,
    )
    return [
        {
            "signature": str(record.signature),
            "slot": record.slot,
            "err": record.err,
            "memo": None,
            "blockTime": record.block_time,
            "confirmationStatus": _confirmation_status(chain, record)[0],
        }
        for record in records
    ]


def _ui_transaction(tx: VersionedTransaction) -> dict[str, Any]:
    message = tx.message
    header = message.header
    ui_message: dict[str, Any] = {
        "accountKeys": [str(k) for k in message.account_keys],
        "header": {
            "numRequiredSignatures": header.num_required_signatures,
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
        },
        "instructions": [
            {
                "programIdIndex": ix.program_id_index,
                "accounts": list(ix.accounts),
                "data": b58encode(bytes(ix.data)),
                "stackHeight": None,
            }
            for ix in message.instructions
        ],
        "recentBlockhash": str(message.recent_blockhash),
    }
    if isinstance(message, MessageV0):
        ui_message["addressTableLookups"] = [
            {
                "accountKey": str(lookup.account_key),
                "writableIndexes": list(lookup.writable_indexes),
                "readonlyIndexes": list(lookup.readonly_indexes),
            }
            for lookup in message.address_table_lookups
        ]
    return {"signatures": [str(s) for s in tx.signatures], "message": ui_message}


def get_transaction(chain: LocalnetChain, params: Params) -> Any:
    signature = str(_signature(_param(params, 0, "signature")))
    config = (
        _config(params, 1)
        if not isinstance(_param_or_none(params, 1), str)
        else {"encoding": params[1]}
    )
    commitment = _commitment(chain, config)
    if commitment == "processed":
        raise invalid_params("Method does not support commitment below `confirmed`")
    record = chain.transaction(signature)
    if record is None or record.slot > chain.slot_at(commitment) or not record.wire:
        return None
    max_version = config.get("maxSupportedTransactionVersion")
    if record.version is not None and (max_version is None or record.version > max_version):
        raise ChainError(
            UNSUPPORTED_TRANSACTION_VERSION,
            f"Transaction version ({record.version}) is not supported by the requesting client."
            " Please try the request again with the following configuration parameter:"
            ' "maxSupportedTransactionVersion": 0',
        )
    encoding = config.get("encoding", "json")
    if encoding == "base64":
        transaction: Any = [base64.b64encode(record.wire).decode(), "base64"]
    elif encoding == "base58":
        transaction = [b58encode(record.wire), "base58"]
    elif encoding in ("json", "jsonParsed"):
        transaction = _ui_transaction(VersionedTransaction.from_bytes(record.wire))
    else:
        raise invalid_params(f"Invalid params: unknown variant `{encoding}`.")
    return_data = None
    if record.return_data is not None:
        program, data = record.return_data
        return_data = {"programId": program, "data": [base64.b64encode(data).decode(), "base64"]}
    meta = {
        "err": record.err,
        "status": {"Ok": None} if record.err is None else {"Err": record.err},
        "fee": record.fee,
        "preBalances": record.pre_balances,
        "postBalances": record.post_balances,
        "innerInstructions": [],
        "logMessages": record.logs,
        "preTokenBalances": [],
        "postTokenBalances": [],
        "rewards": [],
        "loadedAddresses": {"writable": [], "readonly": []},
        "computeUnitsConsumed": record.compute_units,
    }
    if return_data is not None:
        meta["returnData"] = return_data
    result: dict[str, Any] = {
        "slot": record.slot,
        "blockTime": record.block_time,
        "meta": meta,
        "transaction": transaction,
    }
    if max_version is not None:
        result["version"] = "legacy" if record.version is None else record.version
    return result


def _param_or_none(params: Params, index: int) -> Any:
    return params[index] if len(params) > index else None


def request_airdrop(chain: LocalnetChain, params: Params) -> Any:
    address = _pubkey(_param(params, 0, "pubkey"))
    lamports = _u64(_param(params, 1, "lamports"), "lamports")
    if lamports == 0 or lamports > chain.config.airdrop_max_lamports:
        raise ChainError(
            INTERNAL_ERROR,
            f"Internal error: airdrop of {lamports} lamports is outside (0,"
            f" {chain.config.airdrop_max_lamports}]",
        )
    record = chain.airdrop(address, lamports)
    if record.err is not None:
        raise ChainError(INTERNAL_ERROR, f"Internal error: airdrop failed: {record.err}")
    return str(record.signature)


# ----- localnet administration -------------------------------------------------------------


def localnet_info(chain: LocalnetChain, params: Params) -> Any:
    """Describe the cluster: validators, faucet, epoch schedule and timing."""
    return {
        "slot": chain.slot,
        "epoch": chain.epoch,
        "slotDurationMs": int(chain.config.slot_duration * 1000),
        "slotsPerEpoch": chain.config.slots_per_epoch,
        "faucet": str(chain.faucet),
        "minimumDelegation": chain.minimum_delegation,
        "validators": [
            {
                "votePubkey": str(v.vote_account),
                "nodePubkey": str(v.identity),
                "commission": v.commission,
                "selfStakeAccount": str(v.self_stake_account),
                "activatedStake": chain.activated_stake.get(v.vote_account, 0),
                "delinquent": v.delinquent,
            }
            for v in chain.validators
        ],
    }


def localnet_advance_slots(chain: LocalnetChain, params: Params) -> Any:
    """Move the tip forward by `slots` slots (rolling epochs over on the way)."""
    chain.advance_slots(_u64(_param(params, 0, "slots"), "slots"))
    return {"slot": chain.slot, "epoch": chain.epoch}


def localnet_advance_epochs(chain: LocalnetChain, params: Params) -> Any:
    """Jump to the epoch `epochs` ahead, writing StakeHistory and paying each boundary's
    rewards on the way; the tip lands past the last distribution, finalized."""
    count = _u64(_param(params, 0, "epochs"), "epochs")
    if count > 1000:
        raise invalid_params("Invalid params: at most 1000 epochs at a time.")
    chain.advance_epochs(count)
    return {"slot": chain.slot, "epoch": chain.epoch}


def localnet_set_clock(chain: LocalnetChain, params: Params) -> Any:
    """Set the cluster's unix time at the tip (the Clock sysvar), e.g. to pass a lockup."""
    value = _param(params, 0, "unixTimestamp")
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_params("Invalid params: `unixTimestamp` must be an integer.")
    chain.set_clock(value)
    return {"slot": chain.slot, "unixTimestamp": chain.unix_time_at(chain.slot)}


def localnet_set_validator(chain: LocalnetChain, params: Params) -> Any:
    """Make a validator delinquent or current again, or change its commission:
    [votePubkey, {delinquent?: bool, commission?: percent}]."""
    vote = _pubkey(_param(params, 0, "votePubkey"))
    config = _config(params, 1)
    delinquent = config.get("delinquent")
    commission = config.get("commission")
    if delinquent is not None and not isinstance(delinquent, bool):
        raise invalid_params("Invalid params: `delinquent` must be a boolean.")
    try:
        validator = chain.set_validator(
            vote,
            delinquent=delinquent,
            commission=None if commission is None else _u64(commission, "commission"),
        )
    except ValueError as exc:
        raise invalid_params(f"Invalid params: {exc}.") from None
    return {
        "votePubkey": str(validator.vote_account),
        "delinquent": validator.delinquent,
        "commission": validator.commission,
    }


def localnet_set_stake_history(chain: LocalnetChain, params: Params) -> Any:
    """Overwrite StakeHistory entries: [{epoch, effective, activating, deactivating}]."""
    entries = _param(params, 0, "entries")
    if not isinstance(entries, list):
        raise invalid_params("Invalid params: `entries` must be a list.")
    parsed: dict[int, StakeHistoryEntry] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise invalid_params("Invalid params: each entry must be an object.")
        parsed[_u64(entry.get("epoch"), "epoch")] = StakeHistoryEntry(
            effective=_u64(entry.get("effective", 0), "effective"),
            activating=_u64(entry.get("activating", 0), "activating"),
            deactivating=_u64(entry.get("deactivating", 0), "deactivating"),
        )
    try:
        chain.set_stake_history(parsed)
    except ValueError as exc:
        raise invalid_params(f"Invalid params: {exc}.") from None
    return {"entries": len(chain.history)}


def localnet_get_stake_activation(chain: LocalnetChain, params: Params) -> Any:
    """Effective/activating/deactivating lamports of a stake account at an epoch."""
    address = _pubkey(_param(params, 0, "pubkey"))
    config = _config(params, 1)
    epoch = _u64(config.get("epoch", chain.epoch), "epoch")
    account = chain.svm.get_account(address)
    if account is None or account.owner != STAKE_PROGRAM or len(account.data) != STAKE_ACCOUNT_SIZE:
        raise invalid_params("Invalid param: not a stake account")
    try:
        delegation = decode_stake_account(bytes(account.data)).delegation
    except InvalidStakeAccountError:
        raise invalid_params("Invalid param: not a stake account") from None
    status = StakeHistoryEntry()
    if delegation is not None:
        status = chain.delegation_status(delegation, epoch)
    return {
        "effective": status.effective,
        "activating": status.activating,
        "deactivating": status.deactivating,
    }


METHODS: dict[str, Handler] = {
    "getHealth": get_health,
    "getVersion": get_version,
    "getGenesisHash": get_genesis_hash,
    "getSlot": get_slot,
    "getBlockHeight": get_block_height,
    "getEpochInfo": get_epoch_info,
    "getEpochSchedule": get_epoch_schedule,
    "getLatestBlockhash": get_latest_blockhash,
    "isBlockhashValid": is_blockhash_valid,
    "getMinimumBalanceForRentExemption": get_minimum_balance_for_rent_exemption,
    "getBalance": get_balance,
    "getAccountInfo": get_account_info,
    "getMultipleAccounts": get_multiple_accounts,
    "getProgramAccounts": get_program_accounts,
    "getVoteAccounts": get_vote_accounts,
    "getRecentPrioritizationFees": get_recent_prioritization_fees,
    "getStakeMinimumDelegation": get_stake_minimum_delegation,
    "getInflationReward": get_inflation_reward,
    "getInflationRate": get_inflation_rate,
    "getInflationGovernor": get_inflation_governor,
    "getSupply": get_supply,
    "sendTransaction": send_transaction,
    "simulateTransaction": simulate_transaction,
    "getSignatureStatuses": get_signature_statuses,
    "getSignaturesForAddress": get_signatures_for_address,
    "getTransaction": get_transaction,
    "requestAirdrop": request_airdrop,
    "localnet_info": localnet_info,
    "localnet_advanceSlots": localnet_advance_slots,
    "localnet_advanceEpochs": localnet_advance_epochs,
    "localnet_setClock": localnet_set_clock,
    "localnet_setStakeHistory": localnet_set_stake_history,
    "localnet_setValidator": localnet_set_validator,
    "localnet_getStakeActivation": localnet_get_stake_activation,
}


def dispatch(chain: LocalnetChain, request: Any) -> dict[str, Any] | None:
    """Answer one JSON-RPC request object (None for a notification)."""
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0":
        return _error(None, INVALID_REQUEST, "Invalid request")
    request_id = request.get("id")
    method = request.get("method")
    params = request.get("params", [])
    handler = METHODS.get(method) if isinstance(method, str) else None
    if handler is None:
        return _error(request_id, METHOD_NOT_FOUND, "Method not found")
    if params is None:
        params = []
    if not isinstance(params, list):
        return _error(request_id, INVALID_PARAMS, "Invalid params: expected an array.")
    try:
        result = handler(chain, params)
    except ChainError as exc:
        return _error(request_id, exc.code, exc.message, exc.data)
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": request_id}


def dispatch_all(chain: LocalnetChain, body: Any) -> Any:
    """Answer a request or a batch, after bringing the chain up to wall time."""
    chain.tick()
    if isinstance(body, list):
        if not body:
            return _error(None, INVALID_REQUEST, "Invalid request")
        return [dispatch(chain, item) for item in body]
    return dispatch(chain, body)
