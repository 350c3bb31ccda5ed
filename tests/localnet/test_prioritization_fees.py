"""getRecentPrioritizationFees answers from the compute-unit prices that landed, as a
validator's prioritization fee cache does: per confirmed block with transactions, the
block's lowest price raised to the lowest price paid by the transactions that
write-locked each account asked about.

The chain's clock stands still here: blocks end only when the test says so, so that
several transactions share a block."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import pytest
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from service.core import compute_unit_limit, compute_unit_price
from service.localnet import LocalnetChain, LocalnetConfig
from service.localnet._chain import PRIORITIZATION_FEE_BLOCKS
from service.localnet._rpc import dispatch_all

SOL = 1_000_000_000


@pytest.fixture
def chain() -> LocalnetChain:
    # Wall time never moves: a block ends at advance_slots only.
    return LocalnetChain(LocalnetConfig(slot_duration=0.4), now=lambda: 0.0)


def _call(chain: LocalnetChain, method: str, *params: Any) -> Any:
    answer = dispatch_all(
        chain, {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    )
    assert "error" not in answer, answer
    return answer["result"]


def _fees(chain: LocalnetChain, *accounts: Pubkey) -> dict[int, int]:
    result = _call(chain, "getRecentPrioritizationFees", [str(a) for a in accounts])
    return {item["slot"]: item["prioritizationFee"] for item in result}


def _pay(
    chain: LocalnetChain,
    payer: Keypair,
    to: Pubkey,
    price: int | None,
    *,
    limit: int | None = None,
    skip_preflight: bool = False,
) -> None:
    """A transfer of 0.01 SOL (payer and ``to`` write-locked) at ``price`` micro-lamports
    per compute unit (None: no SetComputeUnitPrice)."""
    instructions: list[Instruction] = []
    if limit is not None:
        instructions.append(compute_unit_limit(limit))
    if price is not None:
        instructions.append(compute_unit_price(price))
    instructions.append(
        transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=SOL // 100))
    )
    blockhash, _ = chain.latest_blockhash("processed")
    tx = VersionedTransaction(
        MessageV0.try_compile(payer.pubkey(), instructions, [], blockhash), [payer]
    )
    _call(
        chain,
        "sendTransaction",
        base64.b64encode(bytes(tx)).decode(),
        {"encoding": "base64", "skipPreflight": skip_preflight},
    )


def _funded(chain: LocalnetChain, count: int) -> Sequence[Keypair]:
    keys = [Keypair() for _ in range(count)]
    for key in keys:
        _call(chain, "requestAirdrop", str(key.pubkey()), 10 * SOL)
    chain.advance_slots(1)
    return keys


def test_a_block_reports_its_lowest_price_raised_by_the_accounts_asked_about(
    chain: LocalnetChain,
) -> None:
    a, b, c = _funded(chain, 3)
    # One block: [price, write-locked accounts] = [5: a, b], [9: b, c], [2: a, c].
    _pay(chain, a, b.pubkey(), 5)
    _pay(chain, b, c.pubkey(), 9)
    _pay(chain, a, c.pubkey(), 2)
    slot = chain.slot
    assert slot not in _fees(chain)  # the block is not confirmed yet
    chain.advance_slots(1)

    def at(*accounts: Keypair) -> int:
        return _fees(chain, *(k.pubkey() for k in accounts))[slot]

    assert at() == 2  # the lowest price in the block
    assert at(a) == 2 and at(c) == 2  # each was written at 2 too
    assert at(b) == 5  # the cheapest transaction writing b paid 5
    assert at(a, b) == 5 and at(a, b, c) == 5  # the highest over the accounts
    assert at(Keypair()) == 2  # an account nobody wrote: the block's lowest


def test_only_blocks_with_transactions_are_listed_newest_150(chain: LocalnetChain) -> None:
    (payer,) = _funded(chain, 1)
    to = Keypair().pubkey()
    _pay(chain, payer, to, 7)
    paid = chain.slot
    chain.advance_slots(5)  # empty blocks
    fees = _fees(chain, to)
    assert fees[paid] == 7
    assert not set(range(paid + 1, chain.slot + 1)) & set(fees)
    # A transfer without a price pays 0; so does a faucet's.
    _pay(chain, payer, to, None)
    unpriced = chain.slot
    chain.advance_slots(1)
    assert _fees(chain, to)[unpriced] == 0
    for _ in range(PRIORITIZATION_FEE_BLOCKS):
        _call(chain, "requestAirdrop", str(Keypair().pubkey()), SOL)
        chain.advance_slots(1)
    listed = list(_fees(chain, to))
    assert len(listed) == PRIORITIZATION_FEE_BLOCKS and paid not in listed
    assert listed == sorted(listed)  # oldest first


def test_a_zero_compute_unit_limit_says_nothing_about_the_price(chain: LocalnetChain) -> None:
    payer, cheap = _funded(chain, 2)
    to = Keypair().pubkey()
    # It fails (no compute units), still lands and pays its fee; a validator leaves
    # its price out.
    _pay(chain, payer, to, 1, limit=0, skip_preflight=True)
    _pay(chain, cheap, Keypair().pubkey(), 3)
    slot = chain.slot
    chain.advance_slots(1)
    assert _fees(chain, to)[slot] == 3


def test_too_many_accounts_are_refused(chain: LocalnetChain) -> None:
    keys = [str(Keypair().pubkey()) for _ in range(129)]
    answer = dispatch_all(
        chain,
        {"jsonrpc": "2.0", "id": 1, "method": "getRecentPrioritizationFees", "params": [keys]},
    )
    assert answer["error"]["code"] == -32602
    assert "max 128" in answer["error"]["message"]
