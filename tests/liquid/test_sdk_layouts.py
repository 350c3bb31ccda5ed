"""Our StakePool and ValidatorList decoders and encoders against the layouts of the
official JavaScript SDK (@solana/spl-stake-pool): random accounts encoded by the SDK
decode to the same values here, and ours decode to the same values there."""

from __future__ import annotations

import random

from service.core.stake_pools import (
    decode_stake_pool,
    decode_validator_list,
    encode_stake_pool,
    encode_validator_list,
)
from tests.liquid import _cases
from tests.liquid._sdk import oracle

CASES = 60


def test_stake_pools_encoded_by_the_sdk_decode_here() -> None:
    rng = random.Random(22)
    pools = [_cases.stake_pool(rng, sdk_encodable=True) for _ in range(CASES)]
    encoded = oracle([{"op": "encodeStakePool", "pool": _cases.stake_pool_json(p)} for p in pools])
    for pool, data in zip(pools, encoded, strict=True):
        assert isinstance(data, str), data
        # Real accounts are larger than the encoding: trailing bytes are ignored.
        assert decode_stake_pool(bytes.fromhex(data) + bytes(64)) == pool
        # What the SDK can encode, we encode to the same bytes.
        assert encode_stake_pool(pool) == bytes.fromhex(data)


def test_stake_pools_encoded_here_decode_in_the_sdk() -> None:
    rng = random.Random(23)
    pools = [_cases.stake_pool(rng) for _ in range(CASES)]
    decoded = oracle(
        [{"op": "decodeStakePool", "data": encode_stake_pool(p, size=611).hex()} for p in pools]
    )
    for pool, answer in zip(pools, decoded, strict=True):
        assert answer == _cases.stake_pool_json(pool)


def test_validator_lists_agree_both_ways() -> None:
    rng = random.Random(24)
    lists = [_cases.validator_list(rng) for _ in range(CASES)]
    answers = oracle(
        [{"op": "encodeValidatorList", "list": _cases.validator_list_json(v)} for v in lists]
        + [{"op": "decodeValidatorList", "data": encode_validator_list(v).hex()} for v in lists]
    )
    encoded, decoded = answers[:CASES], answers[CASES:]
    for validators, data, answer in zip(lists, encoded, decoded, strict=True):
        assert isinstance(data, str), data
        padded = bytes.fromhex(data).ljust(len(encode_validator_list(validators)), b"\0")
        assert decode_validator_list(padded) == validators
        assert encode_validator_list(validators) == padded
        assert answer == _cases.validator_list_json(validators)
